"""The package version, read from the installed distribution's metadata.

``pyproject.toml`` is the only place the version is written; this module never
imports the :mod:`xtl` package facade, so any module may import it.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xtl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
