"""The a posteriori study: many closures from many initial states against the filtered DNS.

:func:`run_aposteriori` runs every closure (:mod:`xtl.physics.closures`, the
networks' :class:`xtl.nn.closure.ModelClosure`) from every initial state
(:func:`select_initial_states`) as one task each, here or on a dask client,
and compares each run with the filtered DNS (:func:`xtl.les_metrics`);
:func:`aposteriori_summary` gives their means and spreads.

It sits above the networks (not in :mod:`xtl.solver`) because a task pins a
network closure's backend threads on its worker first
(:func:`xtl.nn.backends.pin_worker_threads`).
"""
from __future__ import annotations

import math
import time

import numpy as np
import xarray as xr

from .._progress import run_calls
from ..data.metrics import les_metrics
from ..nn.backends import pin_worker_threads
from ..physics.cases import Case
from ..physics.closures import as_closure
from ..solver.les import LesSchedule, closure_fields, run_les

__all__ = [
    "select_initial_states",
    "aposteriori_run",
    "run_aposteriori",
    "aposteriori_summary",
    "large_eddy_turnover_time",
]


def select_initial_states(ds: xr.Dataset, count: int) -> xr.DataArray:
    """``count`` filtered vorticity fields spread evenly over the samples of LES data.

    Parameters
    ----------
    ds : Dataset
        LES data with ``omega`` on ``(member, time, y, x)`` or ``(time, y, x)``
        (e.g. a flow's held-out test times).
    count : int
        How many (>= 1, at most the number of samples).

    Returns
    -------
    xarray.DataArray
        ``omega`` on ``(initial_state, y, x)`` with the samples' ``time`` (and
        ``member``) along ``initial_state``.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    lead = [d for d in ("member", "time") if d in ds.omega.dims]
    sizes = [ds.sizes[d] for d in lead]
    total = int(np.prod(sizes))
    if count > total:
        raise ValueError(f"count={count} initial states asked for, but the data hold {total} "
                         f"samples ({dict(zip(lead, sizes))})")
    flat = np.round(np.linspace(0, total - 1, count)).astype(int)
    picks = np.unravel_index(flat, sizes)
    omega = ds.omega.transpose(*lead, "y", "x")
    values = np.stack([omega[tuple(int(i[j]) for i in picks)].values for j in range(count)])
    coords = {"initial_state": np.arange(count), "y": ds.y, "x": ds.x}
    coords.update({d: ("initial_state", ds[d].values[i]) for d, i in zip(lead, picks)})
    return xr.DataArray(values, dims=("initial_state", "y", "x"), coords=coords, name="omega",
                        attrs=ds.omega.attrs)


def aposteriori_run(case: Case, closure, initial, fdns: xr.Dataset,
                    schedule: LesSchedule | None = None, **schedule_kwargs) -> xr.Dataset:
    """One a posteriori run and its :func:`les_metrics` (a blow-up is a result).

    Runs on a dask worker in :func:`run_aposteriori` (it then pins a network
    closure's backend to the worker's threads first).

    Parameters
    ----------
    case : Case
        The DNS case of the flow.
    closure : Closure, callable or None
        As in :func:`xtl.run_les`.
    initial : array or DataArray
        Filtered vorticity on the LES grid.
    fdns : Dataset
        The filtered DNS to compare with (with ``pi`` for the energy transfer).
    schedule : xtl.solver.les.LesSchedule or dict, optional
        ``t_end``, ``save_interval`` and ``dt`` of the run.
    **schedule_kwargs
        Single schedule options (``t_end=``, ``save_interval=``, ``dt=``),
        merged into ``schedule`` (:meth:`xtl.options.Options.merge`).

    Returns
    -------
    xarray.Dataset
        :func:`les_metrics` with ``stable``, ``blowup_time`` and ``wall_seconds``
        as variables.
    """
    schedule = LesSchedule.merge(schedule, **schedule_kwargs)
    pin_worker_threads(as_closure(closure).backends())
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up overflows on its way
        run = run_les(case, closure, initial=initial, t_end=schedule.t_end,
                      save_interval=schedule.save_interval, dt=schedule.dt, keep_blowup=True,
                      progress=False)
    seconds = time.perf_counter() - start
    run["pi"] = closure_fields(closure, run)
    metrics = les_metrics(run, fdns)
    for key in ("stable", "blowup_time"):
        metrics[key] = xr.DataArray(metrics.attrs.pop(key))
    metrics["stable"].attrs.update(long_name="1: the run did not blow up", units="1")
    metrics["blowup_time"].attrs.update(long_name="time of the blow-up (NaN: stable)",
                                        units="1")
    metrics["wall_seconds"] = xr.DataArray(seconds, attrs={"long_name": "wall time of the LES run",
                                                           "units": "s"})
    return metrics


def run_aposteriori(case: Case, closures: dict, initials: xr.DataArray, fdns: xr.Dataset,
                    schedule: LesSchedule | None = None, *, client=None, progress=None,
                    **schedule_kwargs) -> xr.Dataset:
    """LES with every closure from every initial state, against the filtered DNS.

    One task per (closure, initial state), on ``client`` when given (network
    closures first: they take longest), else one after the other here. A run
    that blows up is recorded as unstable with its blow-up time; the other runs
    are kept.

    Parameters
    ----------
    case : Case
        The DNS case of the flow (the LES runs on its ``n_les`` grid).
    closures : dict
        ``{label: closure}``; a closure is a callable, a :class:`Closure` or
        None (no closure). Closures are pickled to the workers.
    initials : xarray.DataArray
        ``omega`` on ``(initial_state, y, x)`` (:func:`select_initial_states`).
    fdns : Dataset
        The filtered DNS (``psi``, ``omega``, ``pi``; any leading dims).
    schedule : xtl.solver.les.LesSchedule or dict, optional
        ``t_end`` and ``save_interval`` of each run (finite, > 0) and the LES
        time step ``dt`` (default None: the DNS's CFL number, :func:`les_case`).
    **schedule_kwargs
        Single schedule options, merged into ``schedule``:
        ``run_aposteriori(..., t_end=5.0, save_interval=0.5, dt=None)`` works
        as before.

    Returns
    -------
    xarray.Dataset
        :func:`les_metrics` over ``(closure, initial_state)`` (the filtered DNS's
        variables without these dims; runs that blew up padded with NaN in
        ``time``), ``stable``, ``blowup_time`` and ``wall_seconds`` per run;
        attrs ``t_end``, ``save_interval``, ``dt`` (NaN: the default),
        ``turnover_time`` of the filtered DNS (:func:`large_eddy_turnover_time`)
        and ``turnovers``, how many of them a run lasts.

    Raises
    ------
    ValueError
        No closures, ``initials`` without ``initial_state``, or a schedule
        option out of range.
    TypeError
        An unknown schedule option.
    """
    schedule = LesSchedule.merge(schedule, **schedule_kwargs)
    if not closures:
        raise ValueError("closures must name at least one closure, {label: closure}")
    if "initial_state" not in initials.dims:
        raise ValueError(f"initials must have an 'initial_state' dim (select_initial_states), "
                         f"got dims {initials.dims}")
    labels = list(closures)
    order = sorted(range(len(labels)),  # network closures (with backends) first
                   key=lambda i: not as_closure(closures[labels[i]]).backends())
    fields = [initials.isel(initial_state=j).transpose("y", "x").values
              for j in range(initials.sizes["initial_state"])]
    jobs = {(labels[i], j): (case, closures[labels[i]], field)
            for i in order for j, field in enumerate(fields)}
    fdns = fdns[[v for v in ("psi", "omega", "pi") if v in fdns]].load()
    results = _run_jobs(jobs, fdns, schedule, client, progress)
    out = _combine_runs(results, labels, initials, schedule.to_dict())
    turnover = large_eddy_turnover_time(case, float(out.mean_energy_fdns))
    out.attrs.update(turnover_time=turnover, turnovers=schedule.t_end / turnover)
    return out


def _run_jobs(jobs: dict, fdns: xr.Dataset, schedule: LesSchedule, client, progress) -> dict:
    """``{key: aposteriori_run(case, closure, field, fdns, schedule)}`` for ``jobs``
    ``{key: (case, closure, field)}``: here one after the other, or on ``client`` as
    tasks prioritized in the order of ``jobs`` (the filtered DNS scattered once)."""
    shared = fdns if client is None else client.scatter(fdns, broadcast=True)
    calls = {key: (*job, shared, schedule) for key, job in jobs.items()}
    return run_calls(aposteriori_run, calls, client=client, progress=progress,
                     desc="a posteriori", unit="run")


def large_eddy_turnover_time(case: Case, energy: float) -> float:
    """``(2π/kf) / u_rms``, with ``u_rms = √⟨u² + v²⟩ = √(2E)``: the forcing scale's turnover.

    Parameters
    ----------
    case : Case
        Its forcing wavenumber ``kf`` sets the large-eddy scale.
    energy : float
        Mean kinetic energy E = ½⟨u² + v²⟩ of the flow (> 0).

    Raises
    ------
    ValueError
        ``energy`` is not finite and > 0.
    """
    if not (np.isfinite(energy) and energy > 0):
        raise ValueError(f"energy must be a finite number > 0, got {energy!r}")
    return 2 * math.pi / case.kf / math.sqrt(2 * energy)


def _combine_runs(results: dict, labels: list, initials: xr.DataArray, kwargs: dict):
    first = results[labels[0], 0]
    fdns_vars = [v for v in first.data_vars if v.endswith("_fdns")]
    rows = [[results[label, j].drop_vars(fdns_vars) for j in range(initials.sizes["initial_state"])]
            for label in labels]
    out = xr.combine_nested(rows, concat_dim=["closure", "initial_state"], join="outer",
                            combine_attrs="drop_conflicts")
    out = out.assign_coords(closure=labels, initial_state=initials.initial_state.values)
    out = out.transpose("closure", "initial_state", ...)
    extra = {c: initials[c] for c in initials.coords if c not in ("initial_state", "y", "x")
             and initials[c].dims == ("initial_state",)}
    out = out.assign_coords({f"initial_{c}": ("initial_state", v.values) for c, v in extra.items()})
    for v in fdns_vars:
        out[v] = first[v]
    out.attrs.pop("closure", None)
    out.attrs.update({k: (np.nan if v is None else v) for k, v in kwargs.items()})
    return out


def aposteriori_summary(ds: xr.Dataset) -> xr.Dataset:
    """Means and spreads over initial states of :func:`run_aposteriori`'s metrics.

    Statistics of a closure are taken over its stable runs, or over all its
    runs (up to their blow-ups) when none was stable.

    Returns
    -------
    xarray.Dataset
        Over ``closure``: ``n_runs``, ``n_stable``, ``first_blowup`` (earliest
        blow-up time, NaN if none), and for every metric ``<name>_mean`` and
        ``<name>_std`` (the sample standard deviation over the initial states
        used; NaN for one) — scalars, spectra, PDFs and tails alike.
    """
    if "initial_state" not in ds.dims or "stable" not in ds:
        raise ValueError("ds must be run_aposteriori's output (dims closure, initial_state)")
    stable = ds.stable.astype(bool)
    use = stable | ~stable.any("initial_state")
    out = xr.Dataset(coords={"closure": ds.closure})
    out["n_runs"] = ds.stable.count("initial_state")
    out["n_stable"] = stable.sum("initial_state")
    out["first_blowup"] = ds.blowup_time.min("initial_state")
    skip = {"stable", "blowup_time", "kinetic_energy", "enstrophy"}
    for name, da in ds.data_vars.items():
        if name in skip or "initial_state" not in da.dims:
            continue
        picked = da.where(use)
        out[f"{name}_mean"] = picked.mean("initial_state")
        out[f"{name}_std"] = picked.std("initial_state", ddof=1)
    return out
