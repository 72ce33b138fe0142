"""netCDF input/output: CF metadata, provenance, atomic writes, snapshot streams.

Two ways to write:

* :func:`write_dataset` writes a whole Dataset atomically (temporary file in
  the same folder, then :func:`os.replace`), so a reader never sees a half
  written file and a failed write leaves the old file untouched;
* :class:`SnapshotStream` appends snapshots along an unlimited ``time``
  dimension as a run goes, into ``<path>.part``, and renames it to ``path``
  when the run completes. It uses the classic 64-bit-offset format: records
  are appended and the header is rewritten only on sync, so a killed run
  leaves a readable file that a restart can append to.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = [
    "CF_ATTRS",
    "provenance_attrs",
    "check_output_path",
    "write_dataset",
    "SnapshotStream",
]

#: CF attributes of the variables and coordinates xtl writes.
CF_ATTRS = {
    "omega": {"long_name": "relative vorticity", "units": "1"},
    "psi": {"long_name": "streamfunction", "units": "1"},
    "pi": {"long_name": "subgrid-scale vorticity forcing Pi", "units": "1"},
    "x": {"long_name": "x (eastward) coordinate on the 2pi-periodic domain", "units": "1", "axis": "X"},
    "y": {"long_name": "y (northward) coordinate on the 2pi-periodic domain", "units": "1", "axis": "Y"},
    "time": {"long_name": "model time", "units": "1", "axis": "T"},
    # ensembles (xtl.solver.ensemble): coordinates along `member`
    "member": {"long_name": "ensemble member"},
    "status": {"long_name": "status of the ensemble member (complete or failed)"},
    "error": {"long_name": "error of a failed ensemble member (empty when complete)"},
    "file": {"long_name": "netCDF file of the ensemble member"},
    "seed": {"long_name": "seed of the random initial condition"},
    "Re": {"long_name": "Reynolds number", "units": "1"},
    "kf": {"long_name": "forcing wavenumber", "units": "1"},
    "beta": {"long_name": "beta-plane parameter", "units": "1"},
    "mu": {"long_name": "linear drag coefficient", "units": "1"},
}


def provenance_attrs() -> dict:
    """Global attributes recording who wrote a file and when."""
    from . import __version__

    return {
        "Conventions": "CF-1.8",
        "source": f"xtl {__version__}",
        "history": f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')} written by xtl {__version__}",
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


def _netcdf_safe(value):
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return ""
    return value


def write_dataset(ds: xr.Dataset, path, overwrite: bool = False) -> Path:
    """Write ``ds`` to netCDF atomically (temporary file, then rename).

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or Path
    overwrite : bool
        Replace an existing file (the old one stays intact until the rename).
    """
    path = check_output_path(path, overwrite)
    ds = ds.copy()
    ds.attrs = {k: _netcdf_safe(v) for k, v in ds.attrs.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        ds.to_netcdf(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


class SnapshotStream:
    """Append ``(time, y, x)`` snapshots of several variables to a netCDF file.

    Parameters
    ----------
    path : Path
        Final path; data goes to ``<path>.part`` until :meth:`finish`.
    x, y : ndarray
        Coordinates.
    variables : sequence of str
        Names of the variables (CF attributes from :data:`CF_ATTRS`).
    attrs : dict
        Global attributes.
    dtype : str
        Storage dtype of the variables.
    append : bool
        Reopen an existing ``.part`` file (restart) instead of creating it.
    """

    def __init__(self, path, x, y, variables, attrs, dtype="float64", append=False):
        import netCDF4

        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + ".part")
        self.variables = tuple(variables)
        if append:
            self._nc = netCDF4.Dataset(self.part, "a")
            return
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
        all_attrs = {**provenance_attrs(), **attrs, "complete": 0}
        nc.setncatts({k: _netcdf_safe(v) for k, v in all_attrs.items()})
        nc.sync()
        self._nc = nc

    def write(self, index: int, time: float, fields: dict) -> None:
        """Write snapshot number ``index`` (0-based) at ``time``."""
        nc = self._nc
        nc.variables["time"][index] = time
        for name in self.variables:
            nc.variables[name][index, :, :] = fields[name]

    def set_attrs(self, attrs: dict) -> None:
        """Add or replace global attributes (e.g. what the run chose after it started)."""
        self._nc.setncatts({k: _netcdf_safe(v) for k, v in attrs.items()})

    def sync(self) -> None:
        """Flush to disk (the file is then readable up to the last write)."""
        self._nc.sync()

    def close(self) -> None:
        """Close the file, keeping it at ``<path>.part``."""
        if self._nc is not None and self._nc.isopen():
            self._nc.close()

    def finish(self, complete: bool = True) -> Path:
        """Mark the file (``complete`` = 1 or 0), close it and rename it to ``path``."""
        self._nc.setncattr("complete", int(complete))
        self.close()
        os.replace(self.part, self.path)
        return self.path
