"""CF metadata and provenance of the netCDF files xtl writes.

Every file carries a CF ``history`` attribute with one line per operation,
newest first, each line ``<UTC time in ctime format>: <operation>`` — the way
NCO's operators record themselves (:func:`append_history`).
"""
from __future__ import annotations

import datetime as _dt

from .._version import __version__

__all__ = ["CF_ATTRS", "provenance_attrs", "append_history"]

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
    """Global attributes recording the conventions (``Conventions``, CF-1.8), the writer
    (``source``: xtl and its version) and ``history``, whose first line is ``entry``, the
    operation that created the data."""
    return {
        "Conventions": "CF-1.8",
        "source": f"xtl {__version__}",
        "history": _history_line(f"{entry} (xtl {__version__})"),
    }
