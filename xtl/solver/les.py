r"""A posteriori LES: the solver on the LES grid with a closure for Π.

The LES equation is the DNS equation for the filtered vorticity with the
closure's Π subtracted (:mod:`xtl.physics.closures`). :func:`run_les` runs it
on the case's LES grid (:func:`les_case`); :func:`closure_fields` records a
closure's Π on the snapshots of a run; :class:`LesSchedule` is how long the
a posteriori runs (:func:`xtl.experiment.aposteriori.run_aposteriori`) last.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..options import Options, check_float
from ..physics.cases import Case
from ..physics.closures import as_closure
from ..physics.fourier import SpectralGrid
from .run import DivergenceError, simulate

__all__ = ["LesSchedule", "les_case", "run_les", "closure_fields"]


@dataclass(frozen=True)
class LesSchedule(Options):
    """How long the a posteriori LES runs: :func:`xtl.experiment.aposteriori.run_aposteriori`
    and :func:`xtl.experiment.aposteriori.aposteriori_run`.

    Parameters
    ----------
    t_end : float
        Length of each run (finite, > 0).
    save_interval : float
        Time between the snapshots the metrics use (finite, > 0).
    dt : float, optional
        LES time step (finite, > 0); None keeps the DNS's CFL number
        (:func:`les_case`).
    """

    t_end: float
    save_interval: float
    dt: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "t_end", check_float(self.t_end, "t_end", positive=True))
        set_(self, "save_interval", check_float(self.save_interval, "save_interval",
                                                positive=True))
        set_(self, "dt", check_float(self.dt, "dt", positive=True, optional=True))


def les_case(case: Case, n: int | None = None, dt: float | None = None) -> Case:
    """The LES version of a DNS case: grid ``n`` (default ``case.n_les``).

    Parameters
    ----------
    dt : float, optional
        LES time step (default ``case.dt · case.n / n``, which keeps the CFL
        number of the DNS).

    Returns
    -------
    Case
        With ``n = n_les = n`` and the name suffixed ``-les``.
    """
    n = case.n_les if n is None else n
    if dt is None:
        dt = case.dt * case.n / n
    return case.replace(name=f"{case.name}-les", n=int(n), n_les=int(n), dt=float(dt))


def _initial_field(initial, n):
    """A 2D ω̄ field on the ``n`` grid from an array, DataArray or LES Dataset."""
    if isinstance(initial, xr.Dataset):
        if "omega" not in initial:
            raise ValueError("initial Dataset must have an 'omega' variable (filtered DNS)")
        initial = initial["omega"]
    if isinstance(initial, xr.DataArray):
        extra = [d for d in initial.dims if d not in ("y", "x")]
        if extra:
            initial = initial.isel({d: 0 for d in extra})
        initial = initial.transpose("y", "x").values
    initial = np.asarray(initial, dtype=float)
    if initial.shape != (n, n):
        raise ValueError(
            f"initial must be a filtered vorticity on the LES grid ({n}, {n}), got {initial.shape}"
        )
    return initial


def run_les(case: Case, closure=None, initial=None, schedule=None, *, n: int | None = None,
            dt: float | None = None, keep_blowup: bool = False,
            **simulate_kwargs) -> xr.Dataset:
    """Run an LES of ``case`` on its LES grid with ``closure``.

    Parameters
    ----------
    case : Case
        The DNS case; the LES uses :func:`les_case` (grid ``case.n_les`` and a
        time step with the DNS's CFL number unless ``n``/``dt`` are given).
    closure : Closure or callable, optional
        A :class:`~xtl.physics.closures.Closure` or a plain
        ``closure(psi, omega) -> Pi`` on the physical grid; None runs with no
        closure. A closure made for one grid (a network's) refuses another
        before the run starts.
    initial : array, DataArray or Dataset, optional
        Filtered DNS vorticity on the LES grid (an LES Dataset's first
        snapshot is used when it has a ``time``/``member`` dim); None for the
        seeded random field.
    schedule : Schedule, optional
        The run's times (``t_end``, ``save_interval``, ...), as in
        :func:`xtl.simulate`; single times may be given as keywords instead.
    n : int, optional
        LES grid size (default ``case.n_les``).
    dt : float, optional
        LES time step (default: the DNS's CFL number, see :func:`les_case`).
    keep_blowup : bool, default False
        When the run blows up, return its snapshots before the blow-up (with
        ``attrs["complete"] = 0`` and ``attrs["blowup_time"]``) instead of
        raising :class:`~xtl.solver.run.DivergenceError`. Only for runs kept
        in memory (no ``path``; a file keeps them anyway).
    **simulate_kwargs
        Passed to :func:`xtl.simulate` (``path``, ``spin_up``, ``seed``,
        ``progress``, ``cfl_limit``, ...).

    Returns
    -------
    xarray.Dataset
        The schema of :func:`xtl.simulate`, with ``closure`` (its name) in attrs.
    """
    lcase = les_case(case, n, dt)
    name = as_closure(closure).name
    if initial is not None:
        initial = _initial_field(initial, lcase.n)
    try:
        return simulate(lcase, schedule, initial=initial, closure=closure,
                        attrs={"closure": name}, **simulate_kwargs)
    except DivergenceError as err:
        if not keep_blowup or err.snapshots is None:
            raise
        return err.snapshots


def closure_fields(closure, les_ds: xr.Dataset) -> xr.DataArray:
    """The closure's Π on every snapshot of an LES run.

    The closure reads each snapshot's spectral vorticity on a grid of the
    data's size (ψ̂ = ω̂/k²), all snapshots at once (a network runs batched).

    Parameters
    ----------
    closure : Closure, callable or None
        A closure (:func:`~xtl.physics.closures.as_closure`); None for no
        closure (Π = 0).
    les_ds : Dataset
        ``omega`` on ``(..., y, x)``.

    Returns
    -------
    xarray.DataArray
        ``pi`` like ``les_ds.omega``.
    """
    omega = les_ds.omega.transpose(..., "y", "x")
    grid = SpectralGrid(omega.sizes["x"], dealias=False)
    pi = grid.irfft2(as_closure(closure).pi_hat(grid.rfft2(omega.values), grid))
    return xr.DataArray(pi, dims=omega.dims, coords=les_ds.omega.coords, name="pi",
                        attrs={"long_name": "SGS term of the closure", "units": "1"})
