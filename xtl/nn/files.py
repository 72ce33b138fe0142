"""Model files: a model saved natively and, beside it, as a model Dataset (netCDF or zarr);
loading any of them."""
from __future__ import annotations

from pathlib import Path

import xarray as xr

from ..data.files import check_output_path, output_lock
from ..data.netcdf import NETCDF_SUFFIXES, ZARR_SUFFIX, FileFormatError, load_dataset, write_dataset
from .backends.base import DEFAULT_BACKEND, available_backends, get_backend
from .model import Model, model_from_dataset, model_to_dataset

__all__ = ["check_model_path", "save_model", "load_model"]


#: Suffixes of a model Dataset file: netCDF, or a zarr store.
DATASET_SUFFIXES = (".nc", ZARR_SUFFIX)


def _model_paths(path: Path, backend, argument: str) -> tuple:
    """``(native, dataset)`` of a model path: the one it names, the other beside it."""
    suffix = path.suffix.lower()
    if suffix == backend.suffix:
        return path, path.with_suffix(".nc")
    if suffix in DATASET_SUFFIXES:
        return path.with_suffix(backend.suffix), path
    raise ValueError(
        f"{argument} must end with {backend.suffix!r} (the {backend.name!r} backend's file; "
        f"its model Dataset goes beside it, as .nc) or with one of {list(DATASET_SUFFIXES)} "
        f"(the model Dataset, netCDF or zarr; the {backend.suffix} goes beside it), got "
        f"{str(path)!r}")


def check_model_path(path, overwrite: bool = False, backend=None, argument: str = "path") -> tuple:
    """Validate where a model will be saved, before any training is done.

    Parameters
    ----------
    path : str or path-like
        The native file (the backend's suffix, ``.keras`` for Keras; the model
        Dataset goes beside it as ``.nc``), or the model Dataset (``.nc``, or
        ``.zarr`` for a zarr store; the native file goes beside it).
    overwrite : bool
        Whether existing files may be replaced.
    backend : str or Backend, optional
        Default ``"keras"``.
    argument : str
        Name of the argument, for the error messages (e.g. ``"--out"``).

    Returns
    -------
    tuple of Path
        ``(native_path, dataset_path)``.

    Raises
    ------
    ValueError
        If ``path`` has another suffix (the message names the accepted ones).
    FileExistsError, IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError
        As :func:`xtl.data.files.check_output_path`, for either file.
    """
    backend = get_backend(backend)
    native, dataset = _model_paths(Path(path), backend, argument)
    check_output_path(native, overwrite, argument=argument)
    check_output_path(dataset, overwrite, argument=argument)
    return native, dataset


def save_model(model: Model, path, *, overwrite: bool = False) -> tuple:
    """Save a model natively and, beside it, as a model Dataset (netCDF or zarr).

    Parameters
    ----------
    path : str or path-like
        Native file name, its suffix the backend's (``.keras`` for Keras): the
        Dataset goes to the same name with suffix ``.nc``. Or the Dataset's name,
        ``.nc`` (netCDF4) or ``.zarr`` (a zarr store): the native file goes beside it.
    overwrite : bool
        Replace existing files. Default False: raise if either file exists
        (checked before anything is written).

    Returns
    -------
    tuple of Path
        ``(native_path, dataset_path)``. Both are written atomically.

    Raises
    ------
    FileExistsError
        If either file exists and ``overwrite`` is False.
    ValueError
        If ``path`` has another suffix (:func:`check_model_path`).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    backend = get_backend(model.backend)
    path, dataset = check_model_path(path, overwrite, backend)
    ds = model_to_dataset(model)
    with output_lock(path):  # a second writer is refused; a killed one's temp is swept
        backend.save(model, path)
        write_dataset(ds, dataset, overwrite=overwrite)
    return path, dataset


#: What a netCDF file that is not a model Dataset holds, by its variables.
_DATA_KINDS = ((("psi", "omega", "pi"), "an LES data file (psi, omega, pi)"),
               (("omega", "psi"), "a DNS file (omega, psi)"))


def _model_dataset(path: Path) -> xr.Dataset:
    """The model Dataset in the netCDF file (or zarr store) ``path``; refuse one that holds none."""
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
        f"is a .nc or .zarr model Dataset or a native file: {known}")


def load_model(path, *, backend: str | None = None) -> Model:
    """Load a model from a native file or a model Dataset (netCDF or zarr).

    Parameters
    ----------
    path : str or path-like
        A ``.nc`` file or a ``.zarr`` store (written by :func:`save_model`,
        ``model_to_dataset(...).to_netcdf`` or ``.to_zarr``) or a backend-native
        file (``.keras``).
    backend : str, optional
        Backend to load with; default from the file (a model Dataset: its
        ``backend`` attribute; otherwise the backend whose suffix matches).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    xtl.data.netcdf.FileFormatError
        (a ValueError) If ``path`` is a folder (other than a zarr store), or not a model file: the message
        names the file and what it is (not a zip archive, truncated, an LES data
        file, a Dataset without ``kernel``, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist")
    dataset = path.suffix.lower() in (*NETCDF_SUFFIXES, ZARR_SUFFIX)
    if path.is_dir() and path.suffix.lower() != ZARR_SUFFIX:
        raise FileFormatError(f"{path} is a folder, not a model file (a .nc or .zarr model "
                              "Dataset or a backend's native file such as .keras)")
    if not dataset:
        return get_backend(backend or _backend_of(path)).load(path)
    ds = _model_dataset(path)
    try:  # model_from_dataset checks the backend and the metadata attributes
        return model_from_dataset(ds, backend=backend)
    except (KeyError, ValueError) as err:
        if isinstance(err, FileFormatError):
            raise
        raise FileFormatError(f"{path}: not a readable model Dataset ({err})") from err
