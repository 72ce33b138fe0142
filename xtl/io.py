"""netCDF input/output: CF metadata, provenance, history, encoding, atomic writes, snapshot streams.

Two ways to write, both producing compressed netCDF4 files (zlib, chunked;
see :data:`COMPRESSION` and :func:`chunk_shape`):

* :func:`write_dataset` writes a whole Dataset atomically (temporary file in
  the same folder, then :func:`os.replace`), so a reader never sees a half
  written file and a failed write leaves the old file untouched;
* :class:`SnapshotStream` appends snapshots along ``time`` as a run goes, into
  ``<path>.part``, a classic 64-bit-offset netCDF file: records are appended
  and the header is rewritten only on sync, so a process killed at any moment
  (even with SIGKILL) leaves a readable ``.part`` holding every snapshot up to
  the last sync, which a restart appends to. When the run ends,
  :meth:`SnapshotStream.finish` copies the ``.part`` into a fresh netCDF4 file
  (chunked, compressed) and renames that to ``path``; a kill during the copy
  leaves the ``.part`` untouched and no ``path``. Compressed HDF5 is never
  written in place while the model runs, so the crash behaviour of the classic
  format is kept.

History
-------
Every file carries a CF ``history`` attribute with one line per operation,
newest first, each line ``<UTC time in ctime format>: <operation>`` — the way
NCO's operators record themselves (:func:`append_history`).
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import xarray as xr

from ._version import __version__

__all__ = [
    "CF_ATTRS",
    "COMPRESSION",
    "provenance_attrs",
    "append_history",
    "open_dataset",
    "load_dataset",
    "netcdf_lock",
    "NetCDFLock",
    "NETCDF_IO_LOCK",
    "check_output_path",
    "chunk_shape",
    "write_dataset",
    "SnapshotStream",
]

#: CF attributes of the variables and coordinates xtl writes. Model time is
#: nondimensional: a plain dimensionless coordinate (no reference time, so no
#: ``axis = "T"`` and no calendar; see docs/conventions.md).
CF_ATTRS = {
    "omega": {"long_name": "relative vorticity", "units": "1"},
    "psi": {"long_name": "streamfunction", "units": "1"},
    "pi": {"long_name": "subgrid-scale vorticity forcing Pi", "units": "1"},
    "x": {"long_name": "x (eastward) coordinate on the 2pi-periodic domain", "units": "1", "axis": "X"},
    "y": {"long_name": "y (northward) coordinate on the 2pi-periodic domain", "units": "1", "axis": "Y"},
    "time": {"long_name": "model time (nondimensional)", "units": "1"},
    # ensembles (xtl.solver.ensemble): coordinates along `member`
    "member": {"long_name": "ensemble member number", "units": "1"},
    "status": {"long_name": "status of the ensemble member (complete or failed)"},
    "error": {"long_name": "error of a failed ensemble member (empty when complete)"},
    "file": {"long_name": "netCDF file of the ensemble member"},
    "seed": {"long_name": "seed of the random initial condition", "units": "1"},
    "case_name": {"long_name": "name of the flow case"},
    "Re": {"long_name": "Reynolds number", "units": "1"},
    "kf": {"long_name": "forcing wavenumber", "units": "1"},
    "beta": {"long_name": "beta-plane parameter", "units": "1"},
    "mu": {"long_name": "linear drag coefficient", "units": "1"},
}

# The netCDF-C and HDF5 libraries are not thread-safe, and netCDF4-python releases the GIL
# during I/O: two threads of one process in netCDF4 at once (ensembles opened from several
# threads while dask threads read other files, say) can crash the process. xarray holds
# NETCDF_LOCK around its reads, but reads a file's metadata (attributes, filters, chunking)
# while opening it without holding any lock, so an open can race another thread's read.
try:
    from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK as NETCDF_LOCK
except ImportError:  # pragma: no cover - a future xarray without it
    NETCDF_LOCK = threading.Lock()


class NetCDFLock:
    """The lock around every netCDF4 call xtl makes: re-entrant, one per process, picklable.

    xtl opens files while holding it, hands it to xarray (``lock=``) so that the
    files' data are read under it, and holds it around its direct netCDF4 calls; no
    two of those run at once in a process. The outermost hold also takes xarray's
    own :data:`NETCDF_LOCK`, so they don't run beside xarray's reads of files opened
    elsewhere either. Re-entrant, so an open inside a hold takes it again; pickled
    to a dask worker it is that process's lock.
    """

    _rlock = threading.RLock()
    _held = threading.local()

    def acquire(self, blocking=True, timeout=-1) -> bool:
        if not self._rlock.acquire(blocking, timeout):
            return False
        depth = getattr(self._held, "depth", 0)
        if depth == 0 and not NETCDF_LOCK.acquire(blocking=blocking):
            self._rlock.release()
            return False
        self._held.depth = depth + 1
        return True

    def release(self) -> None:
        self._held.depth -= 1
        if self._held.depth == 0:
            NETCDF_LOCK.release()
        self._rlock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __reduce__(self):
        return (type(self), ())


#: The process's :class:`NetCDFLock`.
NETCDF_IO_LOCK = NetCDFLock()


def netcdf_lock() -> NetCDFLock:
    """:data:`NETCDF_IO_LOCK`, to hold (``with netcdf_lock():``) around direct netCDF4 calls."""
    return NETCDF_IO_LOCK


def open_dataset(path, **kwargs) -> xr.Dataset:
    """``xarray.open_dataset(path, **kwargs)`` opened and read under :data:`NETCDF_IO_LOCK`.

    Parameters
    ----------
    path : str or Path
    **kwargs
        Passed to :func:`xarray.open_dataset` (e.g. ``chunks``).

    Returns
    -------
    xarray.Dataset
    """
    kwargs.setdefault("lock", NETCDF_IO_LOCK)
    with NETCDF_IO_LOCK:
        return xr.open_dataset(path, **kwargs)


def load_dataset(path, **kwargs) -> xr.Dataset:
    """A netCDF file read into memory and closed (through :func:`open_dataset`).

    Parameters
    ----------
    path : str or Path
    **kwargs
        Passed to :func:`xarray.open_dataset`.

    Returns
    -------
    xarray.Dataset
    """
    with open_dataset(path, **kwargs) as ds:
        return ds.load()


#: netCDF4 compression of the data variables xtl writes (lossless).
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}

#: Target size of one uncompressed chunk on disk.
CHUNK_BYTES = 4 * 2**20

_DTYPES = (None, "float32", "float64")


def _history_line(entry: str, now=None) -> str:
    """``"<UTC ctime>: entry"``, the form of one line of a CF/NCO ``history``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{now.ctime()}: {entry}"


def append_history(attrs: dict, entry: str, now=None) -> dict:
    """A copy of ``attrs`` with ``entry`` recorded in ``history``, NCO-style.

    Parameters
    ----------
    attrs : dict
        Global attributes (not modified).
    entry : str
        What was done, e.g. ``"xtl.coarse_grain(n_les=64, filter='gaussian')"``.
    now : datetime.datetime, optional
        The time stamp (default: now, UTC).

    Returns
    -------
    dict
        ``attrs`` with ``history`` = ``"<UTC ctime>: entry"`` followed, on the
        next lines, by the earlier history (newest line first, as NCO writes it).
    """
    if not isinstance(entry, str) or not entry or "\n" in entry:
        raise ValueError(f"entry must be a one-line non-empty string, got {entry!r}")
    old = str(attrs.get("history", "")).strip()
    line = _history_line(entry, now)
    return {**attrs, "history": line + ("\n" + old if old else "")}


def provenance_attrs(entry: str = "created") -> dict:
    """Global attributes recording the conventions, the writer and the first history line.

    Parameters
    ----------
    entry : str
        The operation that created the data (the first ``history`` line).

    Returns
    -------
    dict
        ``Conventions`` (CF-1.8), ``source`` (xtl and its version) and ``history``.
    """
    return {
        "Conventions": "CF-1.8",
        "source": f"xtl {__version__}",
        "history": _history_line(f"{entry} (xtl {__version__})"),
    }


def check_output_path(path, overwrite: bool, argument: str = "path") -> Path:
    """Validate an output path before any work is done.

    Parameters
    ----------
    path : str or Path
    overwrite : bool
        Whether an existing file may be replaced.
    argument : str
        Name of the argument, for the error message.

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    PermissionError / FileNotFoundError
        If its folder does not exist or is not writable.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{argument}={str(path)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{argument}={str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{argument}={str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def _check_dtype(dtype, allow_none=True) -> None:
    allowed = _DTYPES if allow_none else _DTYPES[1:]
    if dtype not in allowed:
        raise ValueError(f"dtype must be one of {list(allowed)} (storage type), got {dtype!r}")


def chunk_shape(shape, itemsize: int, target: int = CHUNK_BYTES) -> tuple:
    """On-disk chunk shape of an array: trailing dims whole, about ``target`` bytes.

    Dims are taken whole from the last one backwards while the chunk stays
    within ``target`` bytes; the first dim that does not fit is cut to fit
    (at least 1), and the dims before it get 1. For ``(time, y, x)`` fields
    this gives chunks of whole snapshots, several per chunk when they are small.

    Parameters
    ----------
    shape : tuple of int
        Array shape (all sizes >= 1).
    itemsize : int
        Bytes per element.
    target : int
        Chunk size in bytes.

    Returns
    -------
    tuple of int
    """
    chunks, size = [], int(itemsize)
    for n in reversed(tuple(int(s) for s in shape)):
        if size * n <= target:
            chunks.append(n)
            size *= n
        else:
            chunks.append(max(1, min(n, target // size)))
            size = target + 1  # everything before gets 1
    return tuple(reversed(chunks))


def _netcdf_safe(value):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return ""
    return value


def _variable_encoding(var: xr.Variable, is_coord: bool, dtype, compression: bool) -> dict:
    """netCDF4 encoding of one variable: char arrays for strings, chunks and zlib for arrays."""
    kind = var.dtype.kind
    if kind in "USO":
        return {"dtype": "S1"}  # CF char arrays (classic-model strings), not HDF5 vlen strings
    enc = {}
    if is_coord:
        enc["_FillValue"] = None
    if dtype is not None and kind == "f" and not is_coord:
        enc["dtype"] = np.dtype(dtype)
    if compression and var.ndim >= 1 and all(s > 0 for s in var.shape) and kind in "fiub":
        itemsize = np.dtype(enc.get("dtype", var.dtype)).itemsize
        enc.update(COMPRESSION, chunksizes=chunk_shape(var.shape, itemsize))
    return enc


def write_dataset(ds: xr.Dataset, path, overwrite: bool = False, *, dtype=None,
                  compression: bool = True) -> Path:
    """Write ``ds`` to a netCDF4 file atomically (temporary file, then rename).

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or Path
    overwrite : bool
        Replace an existing file (the old one stays intact until the rename).
    dtype : {None, "float32", "float64"}
        Storage type of the floating-point data variables (coordinates keep
        theirs); None keeps each variable's own.
    compression : bool, default True
        Chunk and zlib-compress the arrays (:data:`COMPRESSION`,
        :func:`chunk_shape`); False writes them contiguous and uncompressed.

    Returns
    -------
    Path
    """
    path = check_output_path(path, overwrite)
    _check_dtype(dtype)
    ds = ds.copy()
    ds.attrs = {k: _netcdf_safe(v) for k, v in ds.attrs.items()}
    encoding = {}
    for name, var in ds.variables.items():
        var.encoding = {}
        encoding[name] = _variable_encoding(var, name in ds.coords, dtype, compression)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _member_variables(nc, member: dict) -> list:
    """Create the ``member`` dim (length 1) and its coordinates; return the auxiliary names."""
    import netCDF4

    nc.createDimension("member", 1)
    aux = []
    for name, value in member.items():
        attrs = CF_ATTRS.get(name, {"long_name": name})
        if isinstance(value, str):
            data = np.array([value], dtype=f"S{max(1, len(value.encode()))}")
            nc.createDimension(f"{name}_strlen", data.dtype.itemsize)
            var = nc.createVariable(name, "S1", ("member", f"{name}_strlen"))
            var.setncatts({**attrs, "_Encoding": "utf-8"})
            var[:] = netCDF4.stringtochar(np.array([value.encode()], dtype=data.dtype))
        else:
            value = np.asarray(value)
            if value.dtype.kind not in "fiu" or value.ndim:
                raise TypeError(f"member coordinate {name!r} must be a number or a str, got {value!r}")
            var = nc.createVariable(name, value.dtype, ("member",))
            var.setncatts(attrs)
            var[:] = value
        if name != "member":
            aux.append(name)
    return aux


def _copy_records(src, dst, name, lead, t0, t1) -> None:
    """Copy records ``t0:t1`` of variable ``name`` (one block of :func:`_transcode`)."""
    dst.variables[name][lead + (slice(t0, t1),)] = src.variables[name][t0:t1]


def _transcode(part: Path, target: Path, attrs: dict, member, variables) -> None:
    """Copy the classic ``part`` file into a fresh chunked, compressed netCDF4 ``target``."""
    import netCDF4

    with netCDF4.Dataset(part) as src, netCDF4.Dataset(target, "w", format="NETCDF4") as dst:
        src.set_auto_maskandscale(False)
        dst.set_auto_maskandscale(False)
        nt = len(src.dimensions["time"])
        aux, lead = [], ()
        if member is not None:
            aux, lead = _member_variables(dst, member), (0,)
        for name, dim in src.dimensions.items():
            dst.createDimension(name, None if dim.isunlimited() and nt == 0 else len(dim))
        for name in ("x", "y", "time"):
            var = dst.createVariable(name, src.variables[name].dtype, (name,))
            var.setncatts(src.variables[name].__dict__)
            var[:] = src.variables[name][:]
        block = 1
        for name in variables:
            s = src.variables[name]
            dims = (("member",) if member is not None else ()) + s.dimensions
            shape = ((1,) if member is not None else ()) + (max(nt, 1),) + s.shape[1:]
            chunks = chunk_shape(shape, s.dtype.itemsize)
            var = dst.createVariable(name, s.dtype, dims, chunksizes=chunks, **COMPRESSION)
            var.setncatts({**s.__dict__, **({"coordinates": " ".join(aux)} if aux else {})})
            block = chunks[-3]
        dst.setncatts(attrs)
        for t0 in range(0, nt, block):
            for name in variables:
                _copy_records(src, dst, name, lead, t0, min(nt, t0 + block))


class SnapshotStream:
    """Append ``(time, y, x)`` snapshots of several variables to a netCDF file.

    Parameters
    ----------
    path : Path
        Final path; data goes to ``<path>.part`` (classic netCDF, appended
        record by record) until :meth:`finish` writes ``path``.
    coords : (ndarray, ndarray)
        The coordinates ``(x, y)``.
    variables : sequence of str
        Names of the variables (CF attributes from :data:`CF_ATTRS`).
    attrs : dict
        Global attributes.
    dtype : {"float64", "float32"}
        Storage dtype of the variables.
    append : bool
        Reopen an existing ``.part`` file (restart) instead of creating it.
    history : str
        The operation that creates the data (the first ``history`` line).
    member : dict, optional
        Coordinates of this run as one member of an ensemble
        (``{"member": int, "seed": int, "case_name": str, ...}``): the final
        file gets a leading ``member`` dim of length 1 carrying them, so that
        member files combine by coordinates (``xarray.open_mfdataset``).
    """

    def __init__(self, path, coords, variables, attrs, *, dtype="float64", append=False,
                 history="created", member=None):
        import netCDF4

        _check_dtype(dtype, allow_none=False)
        x, y = coords
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.variables = tuple(variables)
        self.member = None if member is None else dict(member)
        with netcdf_lock():
            self._nc = self._open(netCDF4, x, y, attrs, dtype, append, history)

    def _open(self, netCDF4, x, y, attrs, dtype, append, history):
        if append:
            return netCDF4.Dataset(self.part, "a")
        nc = netCDF4.Dataset(self.part, "w", format="NETCDF3_64BIT_OFFSET")
        nc.createDimension("time", None)
        nc.createDimension("y", len(y))
        nc.createDimension("x", len(x))
        for name, values, dims in (("x", x, ("x",)), ("y", y, ("y",)), ("time", None, ("time",))):
            var = nc.createVariable(name, "f8", dims)
            var.setncatts(CF_ATTRS[name])
            if values is not None:
                var[:] = values
        for name in self.variables:
            var = nc.createVariable(name, dtype, ("time", "y", "x"))
            var.setncatts(CF_ATTRS.get(name, {"long_name": name, "units": "1"}))
        all_attrs = {**provenance_attrs(history), **attrs, "complete": 0}
        nc.setncatts({k: _netcdf_safe(v) for k, v in all_attrs.items()})
        nc.sync()
        return nc

    def write(self, index: int, time: float, fields: dict) -> None:
        """Write snapshot number ``index`` (0-based) at ``time``."""
        nc = self._nc
        with netcdf_lock():
            nc.variables["time"][index] = time
            for name in self.variables:
                nc.variables[name][index, :, :] = fields[name]

    def set_attrs(self, attrs: dict) -> None:
        """Add or replace global attributes (e.g. what the run chose after it started)."""
        with netcdf_lock():
            self._nc.setncatts({k: _netcdf_safe(v) for k, v in attrs.items()})

    def sync(self) -> None:
        """Flush to disk (the file is then readable up to the last write)."""
        with netcdf_lock():
            self._nc.sync()

    def close(self) -> None:
        """Close the file, keeping it at ``<path>.part``."""
        with netcdf_lock():
            if self._nc is not None and self._nc.isopen():
                self._nc.close()

    def finish(self, complete: bool = True) -> Path:
        """Write ``path``: the ``.part`` as chunked, compressed netCDF4 with ``complete`` set.

        The copy goes to ``<path>.final.tmp`` and is renamed to ``path``; the
        ``.part`` is removed only after that, so an interruption at any point
        leaves either the ``.part`` (resumable) or the finished file.
        """
        with netcdf_lock():
            attrs = {k: self._nc.getncattr(k) for k in self._nc.ncattrs()}
        attrs["complete"] = int(complete)
        self.close()
        tmp = self.path.with_name(self.path.name + ".final.tmp")
        try:
            with netcdf_lock():
                _transcode(self.part, tmp, attrs, self.member, self.variables)
            os.replace(tmp, self.path)
        except BaseException:
            if tmp.exists():
                tmp.unlink()
            raise
        self.part.unlink()
        return self.path
