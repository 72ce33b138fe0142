"""Model files: a model saved natively and, beside it, as a netCDF model Dataset; loading either."""
from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..data.files import check_output_path, output_lock
from ..data.netcdf import FileFormatError, load_dataset, write_dataset
from .backends.base import DEFAULT_BACKEND, available_backends, get_backend
from .model import Model, model_from_dataset, model_to_dataset

__all__ = ["check_model_path", "save_model", "load_model"]


def check_model_path(path, overwrite: bool = False, backend=None, argument: str = "path") -> tuple:
    """Validate where a model will be saved, before any training is done.

    Parameters
    ----------
    path : str or path-like
        The native file; its suffix must be the backend's (``.keras`` for Keras).
    overwrite : bool
        Whether existing files may be replaced.
    backend : str or Backend, optional
        Default ``"keras"``.
    argument : str
        Name of the argument, for the error messages (e.g. ``"--out"``).

    Returns
    -------
    tuple of Path
        ``(native_path, netcdf_path)`` (the model Dataset goes beside it, suffix ``.nc``).

    Raises
    ------
    ValueError
        If ``path`` has the wrong suffix.
    FileExistsError, IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError
        As :func:`xtl.data.files.check_output_path`, for either file.
    """
    backend = get_backend(backend)
    path = Path(path)
    if path.suffix != backend.suffix:
        raise ValueError(
            f"{argument} must end with {backend.suffix!r} for the {backend.name!r} backend "
            f"(its model Dataset goes beside it, as .nc), got {str(path)!r}"
        )
    nc = path.with_suffix(".nc")
    check_output_path(path, overwrite, argument=argument)
    check_output_path(nc, overwrite, argument=argument)
    return path, nc


def save_model(model: Model, path, *, overwrite: bool = False) -> tuple:
    """Save a model natively and, beside it, as a netCDF model Dataset.

    Parameters
    ----------
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
        If ``path`` has the wrong suffix (:func:`check_model_path`).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    backend = get_backend(model.backend)
    path, nc = check_model_path(path, overwrite, backend)
    ds = model_to_dataset(model)
    with output_lock(path):  # a second writer is refused; a killed one's temp is swept
        backend.save(model, path)
        write_dataset(ds, nc, overwrite=overwrite)
    return path, nc


#: What a netCDF file that is not a model Dataset holds, by its variables.
_DATA_KINDS = ((("psi", "omega", "pi"), "an LES data file (psi, omega, pi)"),
               (("omega", "psi"), "a DNS file (omega, psi)"))


def _model_dataset(path: Path) -> xr.Dataset:
    """The model Dataset in the netCDF file ``path``; refuse a file that holds none."""
    ds = load_dataset(path)
    if "kernel" not in ds or "bias" not in ds:
        kind = next((what for names, what in _DATA_KINDS if all(v in ds for v in names)),
                    f"a netCDF file of the variables {sorted(map(str, ds.data_vars))}")
        raise FileFormatError(
            f"{path} is {kind}, not a model Dataset (needs the variables kernel, bias)")
    return ds


def _backend_of(path: Path) -> str:
    """The registered backend whose native files end like ``path`` (the default first)."""
    names = sorted(available_backends(), key=lambda n: n != DEFAULT_BACKEND)
    suffixes = {name: getattr(get_backend(name), "suffix", None) for name in names}
    for name, suffix in suffixes.items():
        if suffix == path.suffix:
            return name
    known = ", ".join(f"{s} ({n})" for n, s in suffixes.items() if s)
    raise FileFormatError(
        f"{path}: no registered backend reads {path.suffix or 'suffix-less'!r} files; a model "
        f"is a .nc model Dataset or a native file: {known}")


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

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    xtl.data.netcdf.FileFormatError
        (a ValueError) If ``path`` is a folder, or not a model file: the message
        names the file and what it is (not a zip archive, truncated, an LES data
        file, a Dataset without ``kernel``, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder, not a model file (a .nc model Dataset or "
                              "a backend's native file such as .keras)")
    if path.suffix != ".nc":
        return get_backend(backend or _backend_of(path)).load(path)
    ds = _model_dataset(path)
    try:  # model_from_dataset checks the backend and the metadata attributes
        return model_from_dataset(ds, backend=backend)
    except (KeyError, ValueError) as err:
        if isinstance(err, FileFormatError):
            raise
        raise FileFormatError(f"{path}: not a readable model Dataset ({err})") from err
