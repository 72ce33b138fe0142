"""The solver's snapshot stream: a run's snapshots appended to a netCDF file as it goes.

:class:`SnapshotStream` appends snapshots along ``time`` into ``<path>.part``,
a classic 64-bit-offset netCDF file: records are appended and the header is
rewritten only on sync, so a process killed at any moment (even with SIGKILL)
leaves a readable ``.part`` holding every snapshot up to the last sync, which a
restart appends to. When the run ends, :meth:`SnapshotStream.finish` copies the
``.part`` into a fresh netCDF4 file (chunked, compressed) and renames that to
``path``; a kill during the copy leaves the ``.part`` untouched and no
``path``. Compressed HDF5 is never written in place while the model runs, so
the crash behaviour of the classic format is kept.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .cf import CF_ATTRS, provenance_attrs
from .netcdf import COMPRESSION, chunk_shape, netcdf_attrs, netcdf_lock

__all__ = ["SnapshotStream"]


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
        else:  # a number (checked where the member enters, xtl.solver.options.Output)
            value = np.asarray(value)
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
        Names of the variables (CF attributes from :data:`xtl.data.cf.CF_ATTRS`).
    attrs : dict
        Global attributes.
    dtype : {"float64", "float32"}
        Storage dtype of the variables (checked by :class:`xtl.solver.options.Output`).
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
        nc.setncatts(netcdf_attrs(all_attrs))
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
            self._nc.setncatts(netcdf_attrs(attrs))

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
