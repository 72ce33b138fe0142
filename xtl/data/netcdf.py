"""netCDF files: checked opening and loading, atomic compressed writing, the process's netCDF lock.

:func:`open_dataset` and :func:`load_dataset` refuse, naming the file, what is
not what it claims: a file that is not netCDF, a truncated or corrupt one
(:func:`verify_netcdf`), one without the variables or dimensions the caller
needs, and one whose writer did not finish (``complete = 0``) unless asked
(:class:`FileFormatError`, :class:`IncompleteFileError`).

:func:`write_dataset` writes a whole Dataset as a compressed netCDF4 file
(zlib, chunked; see :data:`COMPRESSION` and :func:`chunk_shape`) atomically
(:func:`xtl.data.files.atomic_path`: a temporary file in the same folder, then
:func:`os.replace`), so a reader never sees a half written file and a failed
write leaves the old file untouched; it holds the output's lock
(:func:`xtl.data.files.output_lock`) meanwhile.

zarr stores (folders named ``*.zarr``) are read and written by the same
functions: :func:`open_dataset` opens one lazily (``chunks``) with the same
checks of its contents, and :func:`write_dataset` writes one atomically
(:func:`xtl.data.files.atomic_folder`) under the same lock. The suffix picks
the format (:func:`dataset_format`); one that names neither is refused.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import xarray as xr

from .files import atomic_folder, atomic_path, check_output_path, output_lock

__all__ = ["COMPRESSION", "FileFormatError", "IncompleteFileError", "verify_netcdf", "open_dataset",
           "load_dataset", "netcdf_lock", "NetCDFLock", "NETCDF_IO_LOCK", "chunk_shape",
           "check_storage_dtype", "netcdf_attrs", "write_dataset", "NETCDF_SUFFIXES",
           "ZARR_SUFFIX", "dataset_format", "is_zarr_store"]

#: Suffixes of the netCDF files :func:`write_dataset` writes.
NETCDF_SUFFIXES = (".nc", ".nc4", ".cdf", ".netcdf")
#: Suffix of a zarr store (a folder).
ZARR_SUFFIX = ".zarr"


def dataset_format(path, argument: str = "path") -> str:
    """``"netcdf"`` or ``"zarr"``: the format a Dataset file's suffix names.

    Raises
    ------
    ValueError
        If the suffix is neither a netCDF one (:data:`NETCDF_SUFFIXES`) nor ``.zarr``,
        naming the accepted suffixes.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ZARR_SUFFIX:
        return "zarr"
    if suffix in NETCDF_SUFFIXES:
        return "netcdf"
    accepted = ", ".join((*NETCDF_SUFFIXES, ZARR_SUFFIX))
    raise ValueError(f"{argument}={str(path)!r}: unknown suffix {suffix or '(none)'!r}; a Dataset "
                     f"file ends with one of {accepted} (netCDF4, or a zarr store for .zarr)")


def is_zarr_store(path) -> bool:
    """Whether ``path`` is a folder holding a zarr store (v2 or v3 metadata at its top)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file()
                                 for name in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata"))

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


def open_dataset(path, *, variables=None, dims=None, allow_incomplete: bool = False,
                 **kwargs) -> xr.Dataset:
    """``xarray.open_dataset(path, **kwargs)``, checked, opened and read under :data:`NETCDF_IO_LOCK`.

    Before xarray sees a local file, :func:`verify_netcdf` checks that it is a
    netCDF file readable to its end; netCDF/HDF5 errors while opening are
    re-raised naming the file. A file whose global attribute ``complete`` is 0
    (a run that did not finish: xtl writes 1 when it does) is refused unless
    ``allow_incomplete``; a file without the attribute is accepted.

    A path ending with ``.zarr`` is opened as a zarr store (:func:`xarray.open_zarr`,
    lazily: ``chunks`` default the store's), with the same checks of its contents.

    Parameters
    ----------
    variables : str or sequence of str, optional
        Variables (data or coordinates) the caller needs; a file without one is refused.
    dims : str or sequence of str, optional
        Dimensions the caller needs.
    allow_incomplete : bool, default False
        Open a file marked ``complete = 0`` (the snapshots its writer got to).
    **kwargs
        Passed to :func:`xarray.open_dataset` (e.g. ``chunks``).

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    FileFormatError
        If it is not netCDF, truncated or corrupt, or lacks ``variables``/``dims``
        (:class:`IncompleteFileError` if it is marked incomplete); a ``.zarr`` path
        that is not a zarr store.
    """
    variables, dims = _names(variables, "variables"), _names(dims, "dims")
    if isinstance(path, (str, os.PathLike)) and Path(path).suffix.lower() == ZARR_SUFFIX:
        return _checked(_open_zarr(Path(path), kwargs), path, variables, dims, allow_incomplete)
    local = isinstance(path, (str, os.PathLike)) and "://" not in str(path) \
        and kwargs.get("engine") in _NETCDF_ENGINES  # a local netCDF file
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
    return _checked(ds, path, variables, dims, allow_incomplete)


def _checked(ds, path, variables, dims, allow_incomplete) -> xr.Dataset:
    """``ds`` after :func:`_check_contents`; closed when a check fails."""
    try:
        _check_contents(ds, path, variables, dims, allow_incomplete)
    except BaseException:
        ds.close()
        raise
    return ds


def _open_zarr(path: Path, kwargs: dict) -> xr.Dataset:
    """The zarr store ``path``, opened lazily (``kwargs`` to :func:`xarray.open_zarr`)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such zarr store")
    if not is_zarr_store(path):
        what = "a file" if not path.is_dir() else "a folder without zarr metadata"
        raise FileFormatError(f"{path}: not a zarr store ({what}; a .zarr store is a folder "
                              "with zarr.json or .zgroup)")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("lock", "engine")}
    try:
        return xr.open_zarr(path, **kwargs)
    except (KeyError, ValueError, OSError) as err:
        raise FileFormatError(f"{path}: not a readable zarr store: {err}") from None


def load_dataset(path, *, variables=None, dims=None, allow_incomplete: bool = False,
                 **kwargs) -> xr.Dataset:
    """A netCDF file (or zarr store) read into memory and closed: :func:`open_dataset` (the same
    parameters, checks and errors), then ``load()``.

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


def check_storage_dtype(dtype, allow_none: bool = True) -> None:
    """Refuse a storage dtype other than "float32", "float64" (or None, keep each variable's)."""
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


def netcdf_attrs(attrs: dict) -> dict:
    """Global attributes netCDF can store: bools as 0 or 1, None as ``""``, the rest as is."""
    return {k: int(v) if isinstance(v, (bool, np.bool_)) else "" if v is None else v
            for k, v in attrs.items()}


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


def _zarr_variable(var: xr.Variable, is_coord: bool, dtype, compression: bool):
    """``(variable, encoding)`` of one variable in a zarr store: the storage dtype, and
    chunks of :func:`chunk_shape` (a dask array rechunked to them) when ``compression``."""
    if dtype is not None and var.dtype.kind == "f" and not is_coord:
        var = var.astype(dtype)
    if not compression or var.ndim == 0 or var.dtype.kind not in "fiub" or 0 in var.shape:
        return var, {}
    chunks = chunk_shape(var.shape, var.dtype.itemsize)
    if var.chunks is not None:
        var = var.chunk(dict(zip(var.dims, chunks)))
    return var, {"chunks": chunks}


def _write_zarr(ds: xr.Dataset, tmp: Path, dtype, compression: bool) -> None:
    """``ds`` as a zarr store in the (empty) folder ``tmp``, consolidated metadata."""
    encoding = {}
    for name in list(ds.variables):
        var, encoding[name] = _zarr_variable(ds.variables[name], name in ds.coords, dtype,
                                             compression)
        if name not in ds.indexes:
            ds[name] = var
    for name in ds.variables:
        ds.variables[name].encoding = {}
    ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=True, zarr_format=2)


def write_dataset(ds: xr.Dataset, path, overwrite: bool = False, *, dtype=None,
                  compression: bool = True) -> Path:
    """Write ``ds`` to a netCDF4 file or a zarr store atomically (temporary, then rename),
    under its lock.

    The suffix of ``path`` picks the format (:func:`dataset_format`): a netCDF one
    (:data:`NETCDF_SUFFIXES`, e.g. ``.nc``) writes a netCDF4 file, ``.zarr`` a zarr
    store (a folder; zarr format 2, consolidated metadata, readable by
    :func:`xarray.open_zarr`). A file is written through
    :func:`xtl.data.files.atomic_path` (so it gets the mode of a plain ``open``:
    ``0o666`` less the umask), a store through :func:`xtl.data.files.atomic_folder`,
    while :func:`~xtl.data.files.output_lock` is held: a second writer of the same
    path is refused at once, and the temporaries a killed writer left beside it are
    removed.

    Parameters
    ----------
    overwrite : bool
        Replace an existing file (the old one stays intact until the rename).
    dtype : {None, "float32", "float64"}
        Storage type of the floating-point data variables (coordinates keep
        theirs); None keeps each variable's own.
    compression : bool, default True
        Chunk and compress the arrays (netCDF4: :data:`COMPRESSION`; zarr: its
        default compressor; chunks of :func:`chunk_shape`); False writes netCDF4
        arrays contiguous and uncompressed, zarr arrays in the chunks they have.

    Raises
    ------
    ValueError
        If the suffix of ``path`` is neither netCDF nor ``.zarr`` (naming the accepted ones).
    OutputLockedError
        If another process or thread is writing ``path``.
    FileExistsError
        If ``path`` exists (or was written meanwhile) and ``overwrite`` is False.
    """
    fmt = dataset_format(path)
    path = check_output_path(path, overwrite)
    check_storage_dtype(dtype)
    ds = ds.copy()
    ds.attrs = netcdf_attrs(ds.attrs)
    if fmt == "zarr":
        with output_lock(path):
            check_output_path(path, overwrite)
            with atomic_folder(path) as tmp:
                _write_zarr(ds, tmp, dtype, compression)
        return path
    encoding = {}
    for name, var in ds.variables.items():
        var.encoding = {}
        encoding[name] = _variable_encoding(var, name in ds.coords, dtype, compression)
    with output_lock(path):
        check_output_path(path, overwrite)  # another writer may have written it meanwhile
        with atomic_path(path) as tmp:
            ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding)
    return path
