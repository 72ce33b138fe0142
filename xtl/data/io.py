"""netCDF input/output: CF metadata, provenance, history, encoding, atomic writes, snapshot streams.

Reading
-------
:func:`open_dataset` and :func:`load_dataset` refuse, naming the file, what is
not what it claims: a file that is not netCDF, a truncated or corrupt one
(:func:`verify_netcdf`), one without the variables or dimensions the caller
needs, and one whose writer did not finish (``complete = 0``) unless asked
(:class:`FileFormatError`, :class:`IncompleteFileError`).

Writing
-------
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

A writer holds the lock of its output (:func:`output_lock`, a ``flock`` on
``<path>.lock`` naming the holder's PID; :func:`write_dataset` does), so a
second writer is refused at once instead of mixing its data in; a killed writer's lock does not block, and
its temporary files are swept by the next (:func:`sweep_stale_temps`). Files
are written through :func:`atomic_path`: renamed into place when complete, with
the mode a plain ``open`` gives (``0o666`` less the umask).

History
-------
Every file carries a CF ``history`` attribute with one line per operation,
newest first, each line ``<UTC time in ctime format>: <operation>`` — the way
NCO's operators record themselves (:func:`append_history`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import re
import secrets
import socket
import stat
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from .._version import __version__

__all__ = [
    "CF_ATTRS",
    "COMPRESSION",
    "provenance_attrs",
    "append_history",
    "FileFormatError",
    "IncompleteFileError",
    "verify_netcdf",
    "open_dataset",
    "load_dataset",
    "netcdf_lock",
    "NetCDFLock",
    "NETCDF_IO_LOCK",
    "check_output_path",
    "check_output_folder",
    "chunk_shape",
    "write_dataset",
    "OutputLockedError",
    "lock_path",
    "output_lock",
    "atomic_path",
    "write_text_atomically",
    "sweep_stale_temps",
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


class FileFormatError(ValueError):
    """A file that is not what it claims: not netCDF, truncated, corrupt, or without what is needed.

    The message names the file and what is wrong with it.
    """


class IncompleteFileError(FileFormatError):
    """A file whose writer did not finish (global attribute ``complete = 0``)."""


#: The first bytes of the netCDF formats: classic (CDF-1), 64-bit offset (CDF-2), 64-bit data (CDF-5).
_CLASSIC_MAGIC = {b"CDF\x01": 1, b"CDF\x02": 2, b"CDF\x05": 5}
#: The HDF5 signature (netCDF4), at byte 0 or after a user block of 512, 1024, 2048... bytes.
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Bytes per value of the classic netCDF types (NC_BYTE ... NC_UINT64).
_NC_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 6: 8, 7: 1, 8: 2, 9: 4, 10: 8, 11: 8}
#: Engines whose files :func:`verify_netcdf` knows (None: xarray guesses, netCDF for xtl).
_NETCDF_ENGINES = (None, "netcdf4", "h5netcdf", "scipy")


def _pad4(n: int) -> int:
    return (n + 3) // 4 * 4


class _ClassicHeader:
    """Reader of the header of a classic netCDF file (the format spec's grammar, big-endian)."""

    def __init__(self, f, version: int):
        self.f, self.version = f, version

    def _bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise EOFError("the file ends inside its header")
        return data

    def uint(self, size: int) -> int:
        return int.from_bytes(self._bytes(size), "big")

    def count(self) -> int:
        """A NON_NEG: 8 bytes in CDF-5, 4 otherwise."""
        return self.uint(8 if self.version == 5 else 4)

    def skip(self, n: int) -> None:
        self.f.seek(_pad4(n), 1)

    def tagged_list(self, tag: int) -> int:
        """The length of a dim, attribute or variable list (``ABSENT`` is 0)."""
        found, n = self.uint(4), self.count()
        if found not in (0, tag) or (found == 0 and n):
            raise ValueError(f"bad list tag {found:#x} in the header (expected {tag:#x})")
        return n

    def attributes(self) -> None:
        for _ in range(self.tagged_list(0x0C)):
            self.skip(self.count())  # name
            nc_type, n = self.uint(4), self.count()
            self.skip(n * _NC_TYPE_SIZES.get(nc_type, 1))

    def read(self) -> tuple:
        """``(numrecs, dim lengths, [(dimids, bytes per value, begin), ...])``."""
        numrecs = self.count()
        dims = []
        for _ in range(self.tagged_list(0x0A)):
            self.skip(self.count())
            dims.append(self.count())
        self.attributes()
        variables = []
        for _ in range(self.tagged_list(0x0B)):
            self.skip(self.count())
            dimids = [self.count() for _ in range(self.count())]
            self.attributes()
            nc_type, _vsize = self.uint(4), self.count()
            begin = self.uint(4 if self.version == 1 else 8)
            if nc_type not in _NC_TYPE_SIZES or any(d >= len(dims) for d in dimids):
                raise ValueError(f"bad variable type {nc_type} or dimension ids {dimids} in the header")
            variables.append((dimids, _NC_TYPE_SIZES[nc_type], begin))
        return numrecs, dims, variables


def _classic_size(numrecs: int, dims: list, variables: list) -> tuple:
    """``(bytes the header describes, records, record size)`` of a classic file (netCDF-C's rule)."""
    end, rec_sizes, rec_begin = 0, [], None
    for dimids, itemsize, begin in variables:
        record = bool(dimids) and dims[dimids[0]] == 0
        size = itemsize * int(np.prod([dims[d] for d in dimids[int(record):]], dtype=np.int64))
        if record:
            rec_sizes.append(size)
            rec_begin = begin if rec_begin is None else min(rec_begin, begin)
        else:
            end = max(end, begin + _pad4(size))
    streaming = numrecs in (2**32 - 1, 2**64 - 1)
    if not rec_sizes or streaming:
        return end, 0, 0
    recsize = rec_sizes[0] if len(rec_sizes) == 1 else sum(_pad4(s) for s in rec_sizes)
    return max(end, rec_begin + numrecs * recsize), numrecs, recsize


def _check_classic(path: Path, version: int, size: int) -> None:
    """Refuse a classic netCDF file shorter than its header says (a truncated file)."""
    try:
        with open(path, "rb") as f:
            f.seek(4)
            expected, numrecs, recsize = _classic_size(*_ClassicHeader(f, version).read())
    except (EOFError, ValueError) as err:
        raise FileFormatError(f"{path}: not a readable netCDF file (truncated or corrupt?): "
                              f"{err}") from None
    if size < expected - 3:  # the last value's padding may be missing
        records = f" ({numrecs} records of {recsize} bytes)" if numrecs else ""
        raise FileFormatError(
            f"{path}: not a readable netCDF file (truncated?): it has {size} bytes, its header "
            f"describes {expected}{records}; the data past byte {size} are missing"
        )


def _hdf5_signature_at(f, size: int) -> bool:
    """True if the HDF5 signature is at byte 0, 512, 1024, 2048, ... of the file."""
    offset = 0
    while offset + 8 <= size:
        f.seek(offset)
        if f.read(8) == _HDF5_MAGIC:
            return True
        offset = 512 if offset == 0 else 2 * offset
    return False


def verify_netcdf(path) -> str:
    """Check that ``path`` is a netCDF file readable to its end, before opening it.

    A classic-format file (CDF-1, CDF-2, CDF-5) must be as long as its header
    says (records × record size after the fixed-size data): netCDF-C reads the
    missing part of a truncated file as zeros without an error. A netCDF4 file
    must carry the HDF5 signature; HDF5 checks its length when it is opened
    (see :func:`open_dataset`).

    Parameters
    ----------
    path : str or Path
        A local file.

    Returns
    -------
    str
        ``"classic"`` or ``"netcdf4"``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    FileFormatError
        If it is empty, not a netCDF file, or shorter than its header says.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise FileFormatError(f"{path}: not a netCDF file (it is empty)")
    with open(path, "rb") as f:
        head = f.read(4)
        hdf5 = head not in _CLASSIC_MAGIC and _hdf5_signature_at(f, size)
    if head in _CLASSIC_MAGIC:
        _check_classic(path, _CLASSIC_MAGIC[head], size)
        return "classic"
    if hdf5:
        return "netcdf4"
    raise FileFormatError(
        f"{path}: not a netCDF file (it starts with {head!r}; netCDF files start with b'CDF' "
        "or the HDF5 signature)"
    )


def _names(value, argument: str) -> tuple:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    names = tuple(value)
    if not all(isinstance(v, str) for v in names):
        raise TypeError(f"{argument} must be a str or a sequence of str, got {value!r}")
    return names


def _marked_incomplete(attrs: dict) -> bool:
    """True if the global attribute ``complete`` is the number 0 (xtl's mark of an unfinished run)."""
    value = np.asarray(attrs.get("complete", 1)).ravel()
    return value.size > 0 and value.dtype.kind in "iufb" and value[0] == 0


def _check_contents(ds: xr.Dataset, path, variables, dims, allow_incomplete: bool) -> None:
    """Refuse an open Dataset that lacks what the caller needs or that its writer did not finish."""
    missing_vars = [v for v in variables if v not in ds.variables]
    missing_dims = [d for d in dims if d not in ds.dims]
    if missing_vars or missing_dims:
        what = [f"variables {missing_vars}" if missing_vars else "",
                f"dimensions {missing_dims}" if missing_dims else ""]
        raise FileFormatError(
            f"{path}: lacks the {' and the '.join(w for w in what if w)} (it has the variables "
            f"{sorted(map(str, ds.variables))} and the dimensions {sorted(map(str, ds.dims))})"
        )
    if allow_incomplete or not _marked_incomplete(ds.attrs):
        return
    blowup = ds.attrs.get("blowup_time")
    when = "" if blowup is None else f", it diverged at t={float(blowup):g}"
    raise IncompleteFileError(
        f"{path}: its writer did not finish (complete = 0{when}); pass allow_incomplete=True "
        "to read what it holds"
    )


def _is_local_file(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and "://" not in str(path)


def open_dataset(path, *, variables=None, dims=None, allow_incomplete: bool = False,
                 **kwargs) -> xr.Dataset:
    """``xarray.open_dataset(path, **kwargs)``, checked, opened and read under :data:`NETCDF_IO_LOCK`.

    Before xarray sees a local file, :func:`verify_netcdf` checks that it is a
    netCDF file readable to its end; netCDF/HDF5 errors while opening are
    re-raised naming the file. A file whose global attribute ``complete`` is 0
    (a run that did not finish: xtl writes 1 when it does) is refused unless
    ``allow_incomplete``; a file without the attribute is accepted.

    Parameters
    ----------
    path : str or Path
    variables : str or sequence of str, optional
        Variables (data or coordinates) the caller needs; a file without one is refused.
    dims : str or sequence of str, optional
        Dimensions the caller needs.
    allow_incomplete : bool, default False
        Open a file marked ``complete = 0`` (the snapshots its writer got to).
    **kwargs
        Passed to :func:`xarray.open_dataset` (e.g. ``chunks``).

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    FileFormatError
        If it is not netCDF, truncated or corrupt, or lacks ``variables``/``dims``
        (:class:`IncompleteFileError` if it is marked incomplete).
    """
    variables, dims = _names(variables, "variables"), _names(dims, "dims")
    local = _is_local_file(path) and kwargs.get("engine") in _NETCDF_ENGINES
    if local and not os.path.isdir(path):
        verify_netcdf(path)
    kwargs.setdefault("lock", NETCDF_IO_LOCK)
    with NETCDF_IO_LOCK:
        try:
            ds = xr.open_dataset(path, **kwargs)
        except (FileNotFoundError, PermissionError):
            raise
        except OSError as err:
            if not local:
                raise
            raise FileFormatError(f"{path}: not a readable netCDF file (truncated or corrupt?): "
                                  f"{err}") from None
    try:
        _check_contents(ds, path, variables, dims, allow_incomplete)
    except BaseException:
        ds.close()
        raise
    return ds


def load_dataset(path, *, variables=None, dims=None, allow_incomplete: bool = False,
                 **kwargs) -> xr.Dataset:
    """A netCDF file read into memory and closed (through :func:`open_dataset`).

    Parameters
    ----------
    path : str or Path
    variables, dims : str or sequence of str, optional
        What the caller needs (see :func:`open_dataset`).
    allow_incomplete : bool, default False
        Read a file marked ``complete = 0``.
    **kwargs
        Passed to :func:`xarray.open_dataset`.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    FileNotFoundError, FileFormatError
        As :func:`open_dataset`.
    """
    with open_dataset(path, variables=variables, dims=dims, allow_incomplete=allow_incomplete,
                      **kwargs) as ds:
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
    """Validate an output file's path before any work is done.

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
    IsADirectoryError
        If ``path`` is a folder (with or without ``overwrite``: a file is needed).
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    NotADirectoryError
        If its folder is a file.
    PermissionError / FileNotFoundError
        If its folder does not exist or is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{argument}={str(path)!r} is a folder; the output is a file (e.g. "
            f"{str(path / 'out.nc')!r})"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{argument}={str(path)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    _check_parent(path, argument)
    return path


def _check_parent(path: Path, argument: str) -> None:
    """Refuse an output whose folder is missing, a file, or not writable."""
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"{argument}={str(path)!r}: {str(folder)!r} is a file, not a folder")
    if not folder.is_dir():
        raise FileNotFoundError(f"{argument}={str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{argument}={str(path)!r}: folder {str(folder)!r} is not writable")


def check_output_folder(path, argument: str = "out") -> Path:
    """Validate an output folder's path before any work is done.

    The folder may exist (its outputs are resumed or replaced by the caller) or not
    (it is made with its parents); it must not be a file, nor lie under one, and its
    nearest existing ancestor must be writable.

    Parameters
    ----------
    path : str or Path
    argument : str
        Name of the argument, for the error message.

    Returns
    -------
    Path

    Raises
    ------
    NotADirectoryError
        If ``path`` or one of its ancestors is a file.
    PermissionError
        If the folder (or where it would be made) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{argument}={str(path)!r} is a file; the output is a folder")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{argument}={str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{argument}={str(path)!r}: {str(existing)!r} is not writable")
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
    """Write ``ds`` to a netCDF4 file atomically (temporary file, then rename), under its lock.

    The file is written through :func:`atomic_path` (so it gets the mode of a
    plain ``open``: ``0o666`` less the umask) while :func:`output_lock` is
    held: a second writer of the same path is refused at once, and the
    temporary files a killed writer left beside it are removed.

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

    Raises
    ------
    OutputLockedError
        If another process or thread is writing ``path``.
    FileExistsError
        If ``path`` exists (or was written meanwhile) and ``overwrite`` is False.
    """
    path = check_output_path(path, overwrite)
    _check_dtype(dtype)
    ds = ds.copy()
    ds.attrs = {k: _netcdf_safe(v) for k, v in ds.attrs.items()}
    encoding = {}
    for name, var in ds.variables.items():
        var.encoding = {}
        encoding[name] = _variable_encoding(var, name in ds.coords, dtype, compression)
    with output_lock(path):
        check_output_path(path, overwrite)  # another writer may have written it meanwhile
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return path


class OutputLockedError(BlockingIOError):
    """An output that another process (or thread) is writing: :func:`output_lock` is held."""


#: Locks this process holds: ``{(pid, thread, lock file): depth}`` (re-entrant within a thread).
_HELD: dict = {}
_HELD_GUARD = threading.Lock()
#: The names of temporary files: ``<target>.<8 characters>.tmp[.<suffix>]`` (:func:`atomic_path`,
#: and :func:`tempfile.mkstemp` as xtl used it), ``<target>.final.tmp`` (:class:`SnapshotStream`).
_TEMP_NAME = re.compile(r"^(?P<target>.+)\.(?:[a-z0-9_]{8}|final)\.tmp(?:\.[A-Za-z0-9]+)?$")


def lock_path(path) -> Path:
    """The lock file of an output: ``<path>.lock`` beside it (a folder's beside the folder)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _held_here(lock: Path) -> bool:
    """True if a thread of this process holds ``lock``."""
    with _HELD_GUARD:
        return any(pid == os.getpid() and held == str(lock) for pid, _, held in _HELD)


def _holder(lock: Path) -> str:
    """Who holds ``lock``, from the PID and host it wrote into it."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "another process (its PID is not written yet)"
    here = "this process" if pid == str(os.getpid()) and host == socket.gethostname() else ""
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {pid}{where}" + (f" ({here})" if here else "")


def _try_flock(lock: Path, timeout: float):
    """An open descriptor of ``lock`` holding its exclusive flock, or None if another holds it."""
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        except OSError as err:  # a file system without flock (some NFS/Lustre mounts)
            os.close(fd)
            raise NotImplementedError(str(err)) from None
        try:  # the file we locked may have been removed by a holder releasing it
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _take(fd: int, key: tuple) -> bool:
    """Write this process into the lock file ``fd`` now held; True if a dead holder's was there."""
    stale = os.pread(fd, 64, 0).strip() != b""  # a holder that released removed the file
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    with _HELD_GUARD:
        _HELD[key] = 1
    return stale


def _release(fd: int, lock: Path, key: tuple) -> None:
    """Remove the lock file, then release its flock (in this order: see :func:`_try_flock`)."""
    with _HELD_GUARD:
        _HELD.pop(key, None)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    os.close(fd)


@contextlib.contextmanager
def _nested(key: tuple, lock: Path):
    with _HELD_GUARD:
        _HELD[key] += 1
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD[key] -= 1


@contextlib.contextmanager
def output_lock(path, *, timeout: float = 0.0):
    """Hold the exclusive lock of an output while writing it: a second writer is refused.

    The lock is an exclusive ``flock`` on ``<path>.lock`` (:func:`lock_path`),
    which holds the holder's PID and host so that a refused writer can name it.
    The kernel releases a flock when its process dies, however it dies, so the
    lock file of a killed process does not block the next writer: that one
    takes the lock over and removes the dead writer's temporary files of
    ``path`` (those :func:`sweep_stale_temps` removes, not ``.part`` files).
    The lock is released, and its file removed, when the block ends, even on
    an error. Re-entrant within a thread; another thread of the same process
    is refused like another process. On a file system without flock, it warns
    and writes unlocked.

    Parameters
    ----------
    path : str or Path
        The output (a file, or a folder for a whole pipeline).
    timeout : float, default 0
        Seconds to wait for another holder to finish before giving up.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputLockedError
        If another process or thread holds the lock (after ``timeout`` seconds).
    """
    target = Path(path).absolute()
    lock = lock_path(target)
    key = (os.getpid(), threading.get_ident(), str(lock))
    if key in _HELD:
        with _nested(key, lock):
            yield lock
        return
    try:
        fd = _try_flock(lock, float(timeout))
    except NotImplementedError as err:
        warnings.warn(f"{lock}: cannot lock ({err}); writing {path} unlocked", stacklevel=3)
        fd = -1
    if fd is None:
        raise OutputLockedError(f"{path} is being written by {_holder(lock)}; wait for it or stop "
                                f"it (lock file {lock})")
    if fd == -1:
        yield lock
        return
    try:
        if _take(fd, key):
            _remove_temps(target, parts=False)
        yield lock
    finally:
        _release(fd, lock, key)


def write_text_atomically(path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path` (whole, or not at all).

    Parameters
    ----------
    path : str or Path
    text : str

    Returns
    -------
    Path
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = ""):
    """A temporary path to write ``path`` through: renamed to ``path`` on success, removed on error.

    The temporary file ``<path>.<8 hex digits>.tmp<suffix>`` is created (empty)
    in the folder of ``path``, so the rename is atomic: a reader sees the old
    file or the new one, never half of one, and a failed write leaves the old
    file untouched. The new file gets the mode of a file created by a plain
    ``open``: ``0o666`` less the process's umask (group-readable with the
    usual umask 022, group-writable with 002), whatever the writer used.

    Parameters
    ----------
    path : str or Path
        The final file.
    suffix : str, optional
        End of the temporary name, for writers that pick the format from it
        (e.g. ``".keras"``, ``".png"``).

    Yields
    ------
    Path
        The temporary file, to write (writers that refuse an existing file
        should remove it first).

    Examples
    --------
    >>> with atomic_path("manifest.json") as tmp:          # doctest: +SKIP
    ...     tmp.write_text(json.dumps(manifest))
    """
    path = Path(path)
    if suffix and not re.fullmatch(r"\.[A-Za-z0-9]+", suffix):
        raise ValueError(f"suffix must be a dot and letters or digits, e.g. '.keras'; got {suffix!r}")
    while True:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _temps_by_target(path: Path, parts: bool) -> dict:
    """``{target: [its temporary files]}`` in folder ``path``, or of the one target ``path``."""
    folder, only = (path, None) if path.is_dir() else (path.parent, path.name)
    found = {}
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        target = match["target"] if match else None
        if parts and entry.name.endswith((".part", ".ckpt.npz")):
            target = entry.name.rsplit(".", 2 if entry.name.endswith(".npz") else 1)[0]
        if target is not None and only in (None, target):
            found.setdefault(folder / target, []).append(entry)
    return found


def _remove_temps(target: Path, parts: bool) -> list:
    """Remove the temporary files of ``target`` (the caller holds its lock); return them."""
    removed = []
    for temp in _temps_by_target(target, parts).get(target, []):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed.append(temp)
    return removed


def sweep_stale_temps(path, *, parts: bool = False) -> list:
    """Remove the temporary files of writers that died, never those of a live writer.

    The rule: a temporary file of an output ``<target>`` (``<target>.<8
    characters>.tmp[.<suffix>]`` of :func:`atomic_path`, ``<target>.final.tmp``
    of :class:`SnapshotStream`) is stale when ``<target>.lock`` exists and no
    process holds it: its writer took the lock (:func:`output_lock`) and died
    before releasing it, as only a killed process does. The sweep takes that
    lock while it removes the files, so no writer starts meanwhile (one that
    starts at that very moment is refused as by any holder). The next writer
    of the output sweeps them too, when it takes the lock over. A temporary
    file without a lock file is kept (a writer that does not lock may be live).

    Parameters
    ----------
    path : str or Path
        A folder (every output in it) or one output file.
    parts : bool, default False
        Also remove ``<target>.part`` and ``<target>.ckpt.npz`` of a dead
        writer: the snapshots and checkpoint of an interrupted
        :func:`xtl.simulate`, which a restart resumes from. Off by default, so
        nothing resumable is lost.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    if not path.exists() and not path.parent.is_dir():
        return []
    removed = []
    for target in sorted(_temps_by_target(path.absolute(), parts)):
        lock = lock_path(target)
        if not lock.exists() or _held_here(lock):
            continue
        try:
            fd = _try_flock(lock, 0.0)
        except NotImplementedError:
            fd = None  # no flock: no telling whether the writer is live
        if fd is None:
            continue  # a live writer
        key = (os.getpid(), threading.get_ident(), str(lock))
        try:
            _take(fd, key)
            removed += _remove_temps(target, parts)
        finally:
            _release(fd, lock, key)
    return removed


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
