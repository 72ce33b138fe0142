"""Model backends: a registry of implementations of :class:`~xtl.backends.base.Backend`.

The built-in ``"keras"`` backend (Keras 3 on TensorFlow) is registered by
name and imported only when first used, so ``import xtl`` does not import
TensorFlow. Other packages add backends through the ``xtl.backends``
entry-point group::

    [project.entry-points."xtl.backends"]
    mybackend = "mypackage.backend:MyBackend"

or at run time with :func:`register_backend`.
"""
from __future__ import annotations

import importlib
import threading
from importlib import metadata
from pathlib import Path

from ..io import check_output_path, load_dataset, write_dataset
from .base import (
    INPUTS,
    OUTPUT,
    Backend,
    Model,
    NetworkSpec,
    check_layers,
    model_from_dataset,
    model_id,
    model_to_dataset,
)

__all__ = [
    "Backend",
    "Model",
    "NetworkSpec",
    "INPUTS",
    "OUTPUT",
    "get_backend",
    "pin_worker_threads",
    "register_backend",
    "available_backends",
    "model_to_dataset",
    "model_from_dataset",
    "model_id",
    "save_model",
    "load_model",
    "check_layers",
]

ENTRY_POINT_GROUP = "xtl.backends"
DEFAULT_BACKEND = "keras"

#: name -> Backend instance, Backend class, or "module:attr" string (resolved lazily).
_REGISTRY: dict = {"keras": "xtl.backends.keras:KerasBackend"}
_INSTANCES: dict = {}
_LOCK = threading.Lock()


def _entry_points() -> dict:
    """``{name: "module:attr"}`` of the installed ``xtl.backends`` entry points."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list:
    """Names of the registered and installed backends.

    Returns
    -------
    list of str
        Sorted names usable with :func:`get_backend`.
    """
    return sorted(set(_REGISTRY) | set(_entry_points()))


def register_backend(name: str, backend, *, overwrite: bool = False) -> None:
    """Register a backend under ``name``.

    Parameters
    ----------
    name : str
        Name to look it up by (``get_backend(name)``, ``train(..., backend=name)``).
    backend : Backend instance, class, or str
        A :class:`Backend` instance, a subclass (instantiated without arguments
        on first use), or a ``"module:attr"`` path to either, imported and
        checked on first use.
    overwrite : bool
        Replace an existing registration of ``name`` (default: raise).

    Raises
    ------
    ValueError
        If ``name`` is taken and ``overwrite`` is false, or is not a non-empty str.
    TypeError
        If ``backend`` is none of the above.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not (isinstance(backend, (str, Backend))
            or (isinstance(backend, type) and issubclass(backend, Backend))):
        raise TypeError(
            "backend must be an xtl.backends.Backend instance, a Backend subclass or a "
            f"'module:attr' string naming one; got {backend!r}"
        )
    missing = sorted(getattr(backend, "__abstractmethods__", ())) if isinstance(backend, type) \
        else []
    if missing:
        raise TypeError(f"backend {backend.__name__} does not implement the abstract "
                        f"Backend methods {missing}")
    with _LOCK:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"a backend named {name!r} is registered; pass overwrite=True")
        _REGISTRY[name] = backend
        _INSTANCES.pop(name, None)


def _resolve(obj):
    """Turn a registry entry into a Backend instance."""
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Backend):
        raise TypeError(f"backend {obj!r} is not an xtl.backends.Backend (subclass "
                        "xtl.backends.Backend and implement its abstract methods)")
    return obj


def _worker_threads():
    """Threads of the dask worker process running this code; None elsewhere.

    None too for a worker thread inside the client's own process (a
    ``LocalCluster(processes=False)``): that process's thread pools are the user's.
    """
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return None
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def pin_worker_threads(names) -> None:
    """Pin the named backends' thread pools to the threads of the dask worker process
    running this code (nothing elsewhere), before their runtimes start.

    Parameters
    ----------
    names : iterable of str
        Backend names.
    """
    threads = _worker_threads()
    if threads is not None:
        for name in names:
            get_backend(name).set_threads(threads)


def get_backend(name=None) -> Backend:
    """Return the backend registered as ``name``.

    Parameters
    ----------
    name : str or Backend, optional
        A registered or entry-point name; default ``"keras"``. A Backend
        instance is returned as is.

    Returns
    -------
    Backend

    Raises
    ------
    ValueError
        If no backend has that name (the message lists the available ones).
    """
    if name is None:
        name = DEFAULT_BACKEND
    if not isinstance(name, str):
        if isinstance(name, Backend):
            return name
        raise TypeError(f"backend must be a backend name (str), got {type(name).__name__}")
    with _LOCK:
        if name in _INSTANCES:
            return _INSTANCES[name]
        entry = _REGISTRY.get(name)
        if entry is None:
            entry = _entry_points().get(name)
        if entry is None:
            raise ValueError(
                f"unknown backend {name!r}; available: {', '.join(available_backends())}. "
                "Register one with xtl.register_backend(name, backend) or the "
                f"'{ENTRY_POINT_GROUP}' entry-point group."
            )
        instance = _resolve(entry)
        _INSTANCES[name] = instance
        return instance


def _netcdf_path(path: Path) -> Path:
    return path.with_suffix(".nc")


def save_model(model: Model, path, *, overwrite: bool = False) -> tuple:
    """Save a model natively and, beside it, as a netCDF model Dataset.

    Parameters
    ----------
    model : Model
    path : str or path-like
        Native file name; its suffix must be the backend's (``.keras`` for
        Keras). The Dataset goes to the same name with suffix ``.nc``.
    overwrite : bool
        Replace existing files. Default False: raise if either file exists
        (checked before anything is written).

    Returns
    -------
    tuple of Path
        ``(native_path, netcdf_path)``. Both are written atomically.

    Raises
    ------
    FileExistsError
        If ``path`` or its ``.nc`` exists and ``overwrite`` is False.
    ValueError
        If ``path`` has the wrong suffix.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    backend = get_backend(model.backend)
    path = Path(path)
    if path.suffix != backend.suffix:
        raise ValueError(
            f"path must end with {backend.suffix!r} for the {backend.name!r} backend, got {path}"
        )
    nc = _netcdf_path(path)
    check_output_path(path, overwrite, argument="path")
    check_output_path(nc, overwrite, argument="path")
    ds = model_to_dataset(model)
    backend.save(model, path)
    write_dataset(ds, nc, overwrite=overwrite)
    return path, nc


def load_model(path, *, backend: str | None = None) -> Model:
    """Load a model from a native file or a netCDF model Dataset.

    Parameters
    ----------
    path : str or path-like
        A ``.nc`` file (written by :func:`save_model` or ``model_to_dataset(...)
        .to_netcdf``) or a backend-native file (``.keras``).
    backend : str, optional
        Backend to load with; default from the file (``.nc``: its ``backend``
        attribute; otherwise the backend whose suffix matches).

    Returns
    -------
    Model
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist")
    if path.suffix == ".nc":
        return model_from_dataset(load_dataset(path), backend=backend)
    if backend is None:
        names = available_backends()
        for name in sorted(names, key=lambda n: n != DEFAULT_BACKEND):  # default first
            b = get_backend(name)
            if getattr(b, "suffix", None) == path.suffix:
                backend = name
                break
        else:
            raise ValueError(f"no registered backend reads {path.suffix!r} files (path={path})")
    return get_backend(backend).load(path)
