"""pyqg 0.7.2 in a virtualenv of its own, for benchmarks/solver.py (not run by ``make bench``).

pyqg's sdist needs Cython < 3, numpy < 2 and pyfftw installed before it builds, and one
patch (``nx/2`` → ``nx//2`` in pyqg/kernel.pyx, a float size under Cython 0.29). The
recipe below pip-installs it that way into ``pyqg-venv`` in xtl's cache folder
(``$XTL_CACHE_DIR``, else ``~/.cache/xtl``: outside the repository, so nothing scans it);
no pyqg code is kept in this repository.

Usage: python benchmarks/_pyqg.py   (builds the virtualenv if it is missing)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from xtl.physics.fourier import cache_dir

VENV = cache_dir() / "pyqg-venv"
PYTHON = VENV / "bin" / "python"
VERSION = "0.7.2"


def _run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def works() -> bool:
    """True if the virtualenv's Python imports pyqg."""
    if not PYTHON.exists():
        return False
    return subprocess.run([str(PYTHON), "-c", "import pyqg"], capture_output=True).returncode == 0


def build(log=print) -> bool:
    """Build the virtualenv with pyqg; return whether pyqg imports there (say why not)."""
    if works():
        return True
    log(f"building pyqg {VERSION} in {VENV} (once; a few minutes) ...")
    try:
        _run([sys.executable, "-m", "venv", "--clear", VENV])
        pip = [PYTHON, "-m", "pip", "--disable-pip-version-check"]
        _run(pip + ["install", "--quiet", "numpy<2", "cython<3", "pyfftw", "setuptools", "wheel",
                    "setuptools_scm"])
        env = {**os.environ, "SETUPTOOLS_SCM_PRETEND_VERSION": VERSION}
        with tempfile.TemporaryDirectory() as tmp:
            _run(pip + ["download", "--quiet", f"pyqg=={VERSION}", "--no-binary", ":all:",
                        "--no-deps", "--no-build-isolation", "-d", tmp], env=env)
            sdist = next(Path(tmp).glob("pyqg-*.tar.gz"))
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp) / f"pyqg-{VERSION}"
            kernel = source / "pyqg" / "kernel.pyx"
            kernel.write_text(kernel.read_text().replace("nx/2", "nx//2"))
            _run(pip + ["install", "--quiet", "--no-build-isolation", "--no-deps", source], env=env)
    except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
        detail = getattr(exc, "stderr", "") or ""
        log(f"could not build pyqg: {exc} {detail.strip()[-400:]}")
        return False
    ok = works()
    log("pyqg built" if ok else "pyqg was installed but does not import")
    return ok


if __name__ == "__main__":
    sys.exit(0 if build() else 1)
