"""``simulate``: the stepping loop, snapshots, streaming netCDF, checkpoint/restart."""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..cases import Case
from ..fourier import SpectralGrid
from ..io import CF_ATTRS, SnapshotStream, check_output_path, open_dataset, provenance_attrs
from .equations import (
    SolverState,
    Stepper,
    forcing_field,
    random_initial_condition,
)

__all__ = [
    "simulate",
    "DivergenceError",
    "make_stepper",
    "initial_state",
    "register_les_output",
    "dt_for_cfl",
]


class DivergenceError(RuntimeError):
    """A run blew up (NaN, or a CFL number far above 1).

    Attributes
    ----------
    time, step, cfl : float, int, float
        Where it happened and the CFL number measured there.
    snapshots : xarray.Dataset or None
        A run kept in memory (no ``path``): its snapshots before the blow-up,
        with ``attrs["complete"] = 0`` and ``attrs["blowup_time"]``.
    """

    def __init__(self, time, step, cfl, dt, limit, written=None):
        self.time, self.step, self.cfl = time, step, cfl
        self.snapshots = None
        where = f"; snapshots before it were kept in {written}" if written else ""
        super().__init__(
            f"the run diverged at t={time:.6g} (step {step}): CFL number = {cfl:.3g} "
            f"(limit {limit:g}); try a smaller dt than {dt:g}{where}"
        )


@dataclass(frozen=True)
class _Schedule:
    """Integer step counts of a run: ``spin_steps`` of ``dt_spin``, then steps of ``dt``."""

    spin_steps: int
    save_steps: int
    end_steps: int
    checkpoint_steps: int
    dt_spin: float
    dt: float

    @property
    def n_snapshots(self) -> int:
        return (self.end_steps - self.spin_steps) // self.save_steps + 1

    def is_save(self, step: int) -> bool:
        return step >= self.spin_steps and (step - self.spin_steps) % self.save_steps == 0

    def snapshot_index(self, step: int) -> int:
        return (step - self.spin_steps) // self.save_steps

    def time(self, step: int) -> float:
        """Model time of ``step``."""
        if self.dt == self.dt_spin or step <= self.spin_steps:
            return step * self.dt_spin
        return self.spin_steps * self.dt_spin + (step - self.spin_steps) * self.dt


def _steps(value, dt, argument, allow_zero=True) -> int:
    """``value/dt`` as an int, or a ValueError naming ``argument``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise TypeError(f"{argument} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{argument} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    steps = round(value / dt)
    if abs(steps * dt - value) > 1e-9 * max(abs(value), dt):
        raise ValueError(f"{argument}={value} is not a multiple of dt={dt}")
    return int(steps)


def _schedule(case, t_end, save_interval, spin_up, checkpoint_interval, dt=None) -> _Schedule:
    """The run's step counts; ``dt`` (default ``case.dt``) is the step after the spin-up."""
    dt_spin = case.dt
    dt = dt_spin if dt is None else dt
    save = _steps(save_interval, dt, "save_interval", allow_zero=False)
    spin = _steps(spin_up, dt_spin, "spin_up")
    if not isinstance(t_end, (int, float)) or isinstance(t_end, bool) or not t_end >= 0:
        raise ValueError(f"t_end must be a number >= 0, got {t_end!r}")
    if t_end < spin_up:
        raise ValueError(f"t_end={t_end} must not be smaller than spin_up={spin_up}")
    # the last snapshot is the last save step not after t_end
    end = spin + int(math.floor((t_end - spin_up) / (save * dt) + 1e-9)) * save
    if checkpoint_interval is None:
        ckpt = max(save, (end // 10) or 1)
    elif dt == dt_spin:
        ckpt = _steps(checkpoint_interval, dt, "checkpoint_interval", allow_zero=False)
    else:  # a step chosen by the run: the nearest whole number of steps
        ckpt = max(1, round(checkpoint_interval / dt))
    return _Schedule(spin, save, end, ckpt, dt_spin, dt)


def dt_for_cfl(dt: float, cfl: float, target: float, save_interval: float) -> float:
    """The time step that brings a CFL number ``cfl`` (measured at ``dt``) to ``target``.

    The largest ``dt'`` not above ``dt·target/cfl`` that divides ``save_interval``
    (so snapshots stay on whole steps).

    Parameters
    ----------
    dt : float
        The step at which ``cfl`` was measured.
    cfl : float
        ``dt·(max|u| + max|v|)/dx``; ``dt`` is returned unchanged unless it is > 0.
    target : float
        The wanted CFL number.
    save_interval : float

    Returns
    -------
    float
    """
    if not cfl > 0:
        return dt
    raw = dt * target / cfl
    return save_interval / math.ceil(save_interval / raw - 1e-9)


def make_stepper(case: Case, grid: SpectralGrid, closure=None, kernels="auto") -> Stepper:
    """The :class:`Stepper` of ``case`` on ``grid`` (its forcing, β, drag, Re, dt).

    Parameters
    ----------
    case : Case
    grid : SpectralGrid
    closure : callable, optional
        ``closure(psi, omega) -> Pi``.
    kernels : {"auto", "numba", "numpy"}
        The stepper's elementwise work (see :class:`Stepper`).

    Returns
    -------
    Stepper
    """
    forcing = forcing_field(grid, case.forcing, case.kf)
    if not np.any(forcing):
        forcing = None
    return Stepper(
        grid, case.dt, nu=case.nu, mu=case.mu, beta=case.beta, forcing=forcing, closure=closure,
        kernels=kernels,
    )


def initial_state(case: Case, grid: SpectralGrid, seed=0, initial=None) -> SolverState:
    """The starting :class:`SolverState`: random (seeded) or a given vorticity.

    Parameters
    ----------
    initial : array-like or xarray.DataArray, optional
        Physical vorticity ``(y, x)`` on the grid; None for the seeded
        random-phase field of :func:`random_initial_condition`.
    """
    if initial is None:
        omega_hat = random_initial_condition(grid, seed, case.ic_peak, case.ic_energy)
    else:
        if isinstance(initial, xr.DataArray):
            missing = {"y", "x"} - set(initial.dims)
            if missing or initial.ndim != 2:
                raise ValueError(
                    f"initial must be a 2D DataArray with dims ('y', 'x'), got dims {initial.dims}"
                )
            initial = initial.transpose("y", "x").values
        initial = np.asarray(initial, dtype=float)
        if initial.shape != (grid.n, grid.n):
            raise ValueError(
                f"initial must have shape ({grid.n}, {grid.n}) (y, x), got {initial.shape}"
            )
        if not np.all(np.isfinite(initial)):
            raise ValueError("initial contains NaN or inf")
        omega_hat = grid.rfft2(initial) * grid.mask
    return SolverState(omega_hat=omega_hat, tendency_prev=None, step=0)


def _fields(grid: SpectralGrid, omega_hat: np.ndarray) -> dict:
    both = grid.irfft2(np.stack([omega_hat, grid.streamfunction(omega_hat)]))
    return {"omega": both[0], "psi": both[1]}


def _run_attrs(case, seed, initial) -> dict:
    attrs = {"title": f"xtl DNS of case {case.name!r}", **case.to_attrs()}
    attrs["seed"] = -1 if initial is not None else int(seed)
    attrs["initial_condition"] = "given" if initial is not None else "random-phase k^4 exp(-(k/kp)^2)"
    return attrs


# --------------------------------------------------------------------------- checkpoints
def _checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".ckpt.npz")


def _signature(case, seed, schedule, initial) -> str:
    """What a checkpoint must match to be resumed: the case, seed, schedule, initial field."""
    start = None
    if initial is not None:
        values = initial.values if isinstance(initial, xr.DataArray) else np.asarray(initial)
        start = hashlib.sha256(np.ascontiguousarray(values, dtype=float).tobytes()).hexdigest()
    return repr((sorted(case.to_attrs().items()), int(seed), schedule, start))


def _write_checkpoint(file: Path, state: SolverState, written: int, signature: str,
                      chosen=None) -> None:
    tmp = file.with_name(file.name + ".tmp.npz")
    prev = state.tendency_prev
    np.savez(
        tmp,
        omega_hat=state.omega_hat,
        tendency_prev=np.zeros(0, complex) if prev is None else prev,
        has_prev=prev is not None,
        step=state.step,
        written=written,
        signature=signature,
        chosen=np.array([] if chosen is None else chosen, dtype=float),
    )
    os.replace(tmp, file)


def _read_checkpoint(file: Path, signature: str):
    with np.load(file) as data:
        if str(data["signature"]) != signature:
            raise ValueError(
                f"checkpoint {str(file)!r} belongs to a run with other settings; "
                "delete it (and the .part file) or pass overwrite=True"
            )
        prev = data["tendency_prev"].copy() if bool(data["has_prev"]) else None
        state = SolverState(data["omega_hat"].copy(), prev, int(data["step"]))
        chosen = tuple(data["chosen"].tolist()) if "chosen" in data and data["chosen"].size else None
        return state, int(data["written"]), chosen


# --------------------------------------------------------------------------- output transforms
_LES_OUTPUT = []


def register_les_output(factory) -> None:
    """Register how ``simulate(les=...)`` turns options into an output transform.

    The solver does not know about coarse-graining: :mod:`xtl.coarse` registers
    its factory here when it is imported (which ``import xtl`` does).

    Parameters
    ----------
    factory : callable
        ``factory(les, case, fft=...) -> transform`` for ``les`` = True, an int or a
        dict; the transform follows the protocol described in :func:`simulate`.
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable factory(les, case, fft=...), got {factory!r}")
    _LES_OUTPUT[:] = [factory]


def _output_transform(les, case, fft):
    """None, the transform passed as ``les``, or the one the registered factory makes."""
    if les is None or les is False:
        return None
    if callable(getattr(les, "spectral", None)):
        if getattr(les, "n", case.n) != case.n:
            raise ValueError(f"les transforms a {les.n}² grid but the case's grid is {case.n}²")
        return les
    if not _LES_OUTPUT:
        raise RuntimeError("simulate(les=...) needs xtl.coarse (import xtl registers it)")
    return _LES_OUTPUT[0](les, case, fft=fft)


# --------------------------------------------------------------------------- simulate
def simulate(
    case: Case,
    t_end: float,
    save_interval: float,
    spin_up: float = 0.0,
    path=None,
    overwrite: bool = False,
    seed: int = 0,
    initial=None,
    closure=None,
    checkpoint_interval=None,
    resume: bool = True,
    dtype: str = "float64",
    cfl_limit: float = 2.0,
    check_every: int = 20,
    progress=None,
    fft: str = "auto",
    threads: int = 1,
    attrs=None,
    les=None,
    dns_every=None,
    dns_path=None,
    kernels: str = "auto",
    cfl_target=None,
    member=None,
) -> xr.Dataset:
    """Run a forced β-plane 2D turbulence simulation.

    Parameters
    ----------
    case : Case
        The flow (Re, kf, β, μ, grid, dt, forcing, ...).
    t_end : float
        End time; the last snapshot is the last save time not after it.
    save_interval : float
        Time between snapshots; a multiple of ``case.dt``.
    spin_up : float, default 0
        Time to run before the first snapshot; a multiple of ``case.dt``.
    path : str or Path, optional
        If given, snapshots are streamed to this netCDF file as the run goes
        (into ``<path>.part``, renamed to ``path`` at the end), so memory
        stays flat; checkpoints go to ``<path>.ckpt.npz``.
    overwrite : bool, default False
        Replace an existing ``path``.
    seed : int, default 0
        Seed of the random initial condition.
    initial : array-like or DataArray, optional
        Initial vorticity ``(y, x)`` instead of the random field.
    closure : callable, optional
        ``closure(psi, omega) -> Pi`` (physical ``(n, n)`` arrays); the
        equation carries ``−Π``. For the a posteriori LES.
    checkpoint_interval : float, optional
        Time between checkpoints (default: a tenth of the run, at least one
        save interval); only with ``path``.
    resume : bool, default True
        If a ``.part`` file and its checkpoint from an interrupted run with the
        same settings exist, continue from the checkpoint. The continued run is
        bit-identical to an uninterrupted one (same machine, FFT backend,
        threads and kernels: see :mod:`xtl.fourier` for how FFTW plans are shared).
    dtype : {"float64", "float32"}
        Storage type of the snapshots (the run itself is float64). With
        ``path`` the file is netCDF4, chunked by whole snapshots and
        zlib-compressed (see :mod:`xtl.io`).
    cfl_limit : float, default 2
        Stop with :class:`DivergenceError` when ``dt·(max|u|+max|v|)/dx``
        exceeds it (or is NaN). AB2 is unstable well below it.
    check_every : int, default 20
        Steps between CFL checks (also checked at each snapshot).
    progress : bool, optional
        Show a progress bar; default: in a Jupyter notebook or when stderr is
        a terminal.
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend.
    threads : int, default 1
        FFTW threads (see :class:`~xtl.fourier.SpectralGrid`); they are used even
        where ``OMP_NUM_THREADS`` is smaller (dask workers set it to 1).
    attrs : dict, optional
        Extra global attributes of the output (e.g. the closure's name).
    les : True, int, dict or transform, optional
        Coarse-grain on the fly ("write only what is needed"): instead of the
        DNS fields, store ψ̄, ω̄ and Π on the LES grid (see
        :func:`xtl.coarse.coarse_grain`; the numbers agree with coarse-graining
        the stored DNS to round-off). ``True``: the case's ``n_les`` and the
        Gaussian filter; an int: that ``n_les``; a dict with keys ``n_les``,
        ``filter`` (``"gaussian"``, ``"box"``, ``"sharp"``) and ``width``. Or an
        output transform object itself (e.g. an :class:`xtl.coarse.Coarsener`):
        anything with ``n`` (the DNS grid it takes), ``x`` (output points),
        ``names`` (output variables), ``attrs`` (global attributes), ``title``,
        ``signature`` (a string a checkpoint must match) and
        ``spectral(omega_hat) -> {name: array}``.
    dns_every : int, optional
        With ``les`` and ``path``: also keep every ``dns_every``-th snapshot
        of the DNS (``psi``, ``omega`` on the DNS grid) in ``dns_path``.
    dns_path : str or Path, optional
        Where those DNS snapshots go; default ``<path stem>.dns.nc`` next to
        ``path``. Written atomically like ``path`` (``.part``, then renamed).
    kernels : {"auto", "numba", "numpy"}
        The elementwise work of a step: fused and compiled with numba (the
        default when it imports), or numpy's; same numbers to round-off.
    cfl_target : float, optional
        Choose the time step after the spin-up from the flow: the spin-up runs at
        ``case.dt``; at its end the CFL number ``c`` is measured and the rest of
        the run uses the largest ``dt' <= case.dt·cfl_target/c`` that divides
        ``save_interval`` (:func:`dt_for_cfl`), fixed for the run (a restart
        reuses it, so it stays bit-identical). AB2 restarts with one Heun step at
        the switch. The output's attributes record ``cfl_target``,
        ``cfl_at_spin_up`` and ``dt_after_spin_up``. Needs ``spin_up > 0``.
    member : dict, optional
        Coordinates of this run as one member of an ensemble, e.g.
        ``{"member": 3, "seed": 0, "case_name": "tiny", "Re": 100.0}`` (numbers
        or strings; ``"member"``, an int, is required): the output gets a
        leading ``member`` dim of length 1 carrying them, so that member files
        combine with ``xarray.open_mfdataset(..., combine="by_coords")``.
        :func:`~xtl.solver.ensemble.ensemble` sets it.

    Returns
    -------
    xarray.Dataset
        ``omega`` and ``psi`` on ``(time, y, x)``, the case in ``attrs``
        (with ``les``: ``psi``, ``omega``, ``pi`` on the LES grid, and the
        coarse-graining in ``attrs``). With ``path``, the file opened lazily.

    Raises
    ------
    DivergenceError
        If the run blows up; the snapshots written before stay in ``path``
        (with the global attribute ``complete = 0``), or, without ``path``,
        in the error's ``snapshots``.
    """
    if not isinstance(case, Case):
        raise TypeError(f"case must be an xtl.Case, got {type(case).__name__}")
    schedule = _schedule(case, t_end, save_interval, spin_up, checkpoint_interval)
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if not (isinstance(check_every, int) and check_every >= 1):
        raise ValueError(f"check_every must be an int >= 1, got {check_every!r}")
    cfl_target = _check_cfl_target(cfl_target, schedule)
    if path is not None:
        path = check_output_path(path, overwrite)
    output = _output_transform(les, case, fft)
    dns_every, dns_path = _check_dns_every(dns_every, dns_path, path, output, overwrite)
    member = _check_member(member)
    grid = SpectralGrid(case.n, dealias=case.dealias, fft=fft, threads=threads)
    stepper = make_stepper(case, grid, closure, kernels)
    attrs = {**_run_attrs(case, seed, initial), **(attrs or {})}
    signature = _signature(case, seed, schedule, initial)
    if cfl_target is not None:
        attrs["cfl_target"] = cfl_target
        signature += repr(("cfl_target", cfl_target))
    out_x, names, dns_attrs = grid.x, ("omega", "psi"), None
    if output is not None:
        out_x, names = output.x, tuple(output.names)
        if dns_every is not None:
            dns_attrs = {**attrs, "title": f"xtl DNS of case {case.name!r} (every "
                         f"{dns_every}-th snapshot of {path.name})", "dns_every": dns_every}
            attrs["dns_file"] = dns_path.name
        attrs = {**attrs, "title": f"xtl {output.title} of case {case.name!r}", **output.attrs}
        signature += repr((output.signature, dns_every))

    les_options = None if output is None else getattr(output, "options", output.signature)
    entry = _history_entry(case, seed, initial, t_end, save_interval, spin_up, les_options,
                           cfl_target)
    state, written, stream, ckpt, dns_stream, chosen = None, 0, None, None, None, None
    if path is not None:
        ckpt = _checkpoint_path(path)
        part = path.with_name(path.name + ".part")
        dns_part = None if dns_path is None else dns_path.with_name(dns_path.name + ".part")

        def open_streams(append):
            main = SnapshotStream(path, out_x, out_x, names, attrs, dtype, append=append,
                                  history=entry, member=member)
            if dns_path is None:
                return main, None
            return main, SnapshotStream(dns_path, grid.x, grid.y, ("omega", "psi"), dns_attrs,
                                        dtype, append=append, history=entry, member=member)

        if resume and part.exists() and ckpt.exists() and (dns_part is None or dns_part.exists()):
            state, written, chosen = _read_checkpoint(ckpt, signature)
            stream, dns_stream = open_streams(append=True)
    if state is None:
        state = initial_state(case, grid, seed, initial)
        if path is not None:
            stream, dns_stream = open_streams(append=False)
            if ckpt.exists():
                ckpt.unlink()
    streams = [s for s in (stream, dns_stream) if s is not None]
    if chosen is not None:  # resumed after the step was chosen
        schedule, stepper = _switch_dt(case, t_end, save_interval, spin_up, checkpoint_interval,
                                       grid, closure, kernels, chosen[0])
        attrs.update(_chosen_attrs(chosen))

    memory = []
    from .._progress import progress_bar

    bar = progress_bar(
        progress, total=schedule.end_steps, initial=state.step, unit="step", mininterval=1.0,
        desc=f"simulate {case.name}",
    )
    try:
        while True:
            step = state.step
            if cfl_target is not None and chosen is None and step == schedule.spin_steps:
                chosen = _choose_dt(stepper, state, cfl_target, save_interval)
                schedule, stepper = _switch_dt(case, t_end, save_interval, spin_up,
                                               checkpoint_interval, grid, closure, kernels,
                                               chosen[0])
                state.tendency_prev = None  # AB2 restarts (Heun) at the new step
                attrs.update(_chosen_attrs(chosen))
                for s in streams:
                    s.set_attrs(_chosen_attrs(chosen))
                bar.total = schedule.end_steps
            if schedule.is_save(step):
                index = schedule.snapshot_index(step)
                keep_dns = dns_stream is not None and index % dns_every == 0
                dns = _fields(grid, state.omega_hat) if output is None or keep_dns else None
                fields = dns if output is None else output.spectral(state.omega_hat)
                _check_finite(fields["omega"], step, schedule, stepper, cfl_limit, streams)
                t = schedule.time(step)
                if stream is not None:
                    stream.write(index, t, fields)
                    if keep_dns:
                        dns_stream.write(index // dns_every, t, dns)
                    written = index + 1
                else:
                    memory.append((t, {k: v.astype(dtype) for k, v in fields.items()}))
            if step > 0 and stream is not None and step % schedule.checkpoint_steps == 0:
                for s in streams:
                    s.sync()
                _write_checkpoint(ckpt, state, written, signature, chosen)
            if step >= schedule.end_steps:
                break
            measure = step % check_every == 0 or schedule.is_save(step + 1)
            stepper.step(state, measure_cfl=measure)
            if measure and not stepper.last_cfl <= cfl_limit:
                _diverged(state.step - 1, schedule, stepper, cfl_limit, streams)
            bar.update(1)
    except BaseException as err:
        for s in streams:
            s.close()
        if isinstance(err, DivergenceError) and stream is None and memory:
            err.snapshots = _to_dataset(out_x, memory, attrs, names, entry, member)
            err.snapshots.attrs.update(complete=0, blowup_time=err.time)
        raise
    finally:
        bar.close()

    if stream is not None:
        for s in streams:
            s.finish(complete=True)
        if ckpt.exists():
            ckpt.unlink()
        return open_dataset(path)
    return _to_dataset(out_x, memory, attrs, names, entry, member)


def _check_cfl_target(cfl_target, schedule):
    if cfl_target is None:
        return None
    if not isinstance(cfl_target, (int, float)) or isinstance(cfl_target, bool) \
            or not (math.isfinite(cfl_target) and cfl_target > 0):
        raise ValueError(f"cfl_target must be a number > 0 (e.g. 0.4), got {cfl_target!r}")
    if schedule.spin_steps == 0:
        raise ValueError("cfl_target needs spin_up > 0 (the step is chosen from the spun-up flow)")
    return float(cfl_target)


def _choose_dt(stepper, state, cfl_target, save_interval):
    """``(dt, cfl)``: the step for ``cfl_target`` from the CFL number of ``state``."""
    cfl = stepper.cfl(state.omega_hat)
    return dt_for_cfl(stepper.dt, cfl, cfl_target, save_interval), cfl


def _chosen_attrs(chosen) -> dict:
    return {"dt_after_spin_up": float(chosen[0]), "cfl_at_spin_up": float(chosen[1])}


def _switch_dt(case, t_end, save_interval, spin_up, checkpoint_interval, grid, closure,
               kernels, dt):
    """The schedule and stepper of a run whose step after the spin-up is ``dt``."""
    schedule = _schedule(case, t_end, save_interval, spin_up, checkpoint_interval, dt=dt)
    return schedule, make_stepper(case.replace(dt=dt), grid, closure, kernels)


def _check_dns_every(dns_every, dns_path, path, output, overwrite):
    """Validate ``dns_every``/``dns_path``; return ``(dns_every, dns_path or None)``."""
    if dns_every is None:
        if dns_path is not None:
            raise ValueError("dns_path is only used with dns_every=k (keep every k-th DNS snapshot)")
        return None, None
    if not isinstance(dns_every, (int, np.integer)) or isinstance(dns_every, bool) or dns_every < 1:
        raise ValueError(f"dns_every must be an int >= 1 (keep every k-th snapshot), got {dns_every!r}")
    if output is None:
        raise ValueError(
            "dns_every only applies with les=... (the DNS is stored in full without it)"
        )
    if path is None:
        raise ValueError("dns_every needs path=... (the DNS snapshots go to a second file)")
    if dns_path is None:
        dns_path = path.with_name(path.stem + ".dns" + (path.suffix or ".nc"))
    dns_path = check_output_path(dns_path, overwrite, "dns_path")
    if dns_path.resolve() == path.resolve():
        raise ValueError(f"dns_path must differ from path, both are {str(path)!r}")
    return int(dns_every), dns_path


def _check_finite(omega, step, schedule, stepper, limit, streams):
    if not np.all(np.isfinite(omega)):
        stepper.last_cfl = float("nan")
        _diverged(step, schedule, stepper, limit, streams)


def _diverged(step, schedule, stepper, limit, streams):
    written = None
    for stream in streams:
        stream.finish(complete=False)
        if written is None:
            written = str(stream.path)
            ckpt = _checkpoint_path(stream.path)
            if ckpt.exists():
                ckpt.unlink()
    raise DivergenceError(schedule.time(step), step, stepper.last_cfl, stepper.dt, limit, written)


def _check_member(member):
    """Validate simulate's ``member`` coordinates (None, or a dict with an int ``"member"``)."""
    if member is None:
        return None
    if not isinstance(member, dict) or not isinstance(member.get("member"), (int, np.integer)) \
            or isinstance(member.get("member"), bool):
        raise TypeError(
            f"member must be a dict of coordinates with an int 'member', e.g. "
            f"{{'member': 0, 'seed': 1}}; got {member!r}"
        )
    for key, value in member.items():
        if not isinstance(value, (str, int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise TypeError(f"member[{key!r}] must be a number or a str, got {value!r}")
    return dict(member)


def _history_entry(case, seed, initial, t_end, save_interval, spin_up, les_options,
                   cfl_target=None) -> str:
    """The ``history`` line of a run: the call that made it."""
    start = "initial=<given field>" if initial is not None else f"seed={int(seed)}"
    les = "" if les_options is None else f", les={les_options!r}"
    cfl = "" if cfl_target is None else f", cfl_target={cfl_target!r}"
    return (f"xtl.simulate(case={case.name!r}, {start}, t_end={t_end!r}, "
            f"save_interval={save_interval!r}, spin_up={spin_up!r}{les}{cfl})")


def _to_dataset(x, memory, attrs, names, entry, member=None) -> xr.Dataset:
    times = np.array([t for t, _ in memory])
    coords = {
        "time": ("time", times, CF_ATTRS["time"]),
        "y": ("y", x, CF_ATTRS["y"]),
        "x": ("x", x.copy(), CF_ATTRS["x"]),
    }
    data = {
        name: (("time", "y", "x"), np.stack([f[name] for _, f in memory]), CF_ATTRS[name])
        for name in names
    }
    ds = xr.Dataset(data, coords=coords, attrs={**provenance_attrs(entry), **attrs, "complete": 1})
    if member is not None:
        ds = ds.expand_dims(member=[member["member"]]).assign_coords(
            {k: ("member", [v], CF_ATTRS.get(k, {})) for k, v in member.items() if k != "member"})
        ds["member"].attrs.update(CF_ATTRS["member"])
    return ds
