"""``simulate``: the stepping loop, snapshots, streaming netCDF, checkpoint/restart."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ..physics.cases import Case
from ..physics.fourier import SpectralGrid, format_bytes, machine_memory
from ..data.cf import CF_ATTRS, provenance_attrs
from ..data.stream import SnapshotStream
from ..data.files import check_output_path, output_lock
from ..data.netcdf import open_dataset
from ..data.coarse import CoarseGraining
from ..options import check_int
from .options import Execution, Output, Schedule
from .equations import (
    SolverState,
    Stepper,
    forcing_field,
    random_initial_condition,
)

__all__ = [
    "simulate",
    "output_bytes",
    "merge_options",
    "step_plan",
    "whole_steps",
    "StepPlan",
    "SIMULATE_OPTION_CLASSES",
    "DivergenceError",
    "make_stepper",
    "initial_state",
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


#: The most steps a run may take: model times t = step·dt stay exact integers of dt.
MAX_STEPS = 2**53


@dataclass(frozen=True)
class StepPlan:
    """Integer step counts of a run: ``spin_steps`` of ``dt_spin``, then steps of ``dt``.

    Made by :func:`step_plan` from a :class:`~xtl.solver.options.Schedule` and a case.
    """

    spin_steps: int
    save_steps: int
    end_steps: int
    checkpoint_steps: int
    dt_spin: float
    dt: float

    @property
    def n_snapshots(self) -> int:
        """Snapshots the run writes."""
        return (self.end_steps - self.spin_steps) // self.save_steps + 1

    def is_save(self, step: int) -> bool:
        """Whether ``step`` writes a snapshot."""
        return step >= self.spin_steps and (step - self.spin_steps) % self.save_steps == 0

    def snapshot_index(self, step: int) -> int:
        """The number of the snapshot written at ``step`` (0-based)."""
        return (step - self.spin_steps) // self.save_steps

    def time(self, step: int) -> float:
        """Model time of ``step``."""
        if self.dt == self.dt_spin or step <= self.spin_steps:
            return step * self.dt_spin
        return self.spin_steps * self.dt_spin + (step - self.spin_steps) * self.dt


def whole_steps(value: float, dt: float) -> int | None:
    """``value/dt`` when ``value`` is a whole number of steps ``dt`` (to a relative
    1e-9), else None: the rule every time of a run follows."""
    steps = round(value / dt)
    if abs(steps * dt - value) > 1e-9 * max(abs(value), dt):
        return None
    return int(steps)


def _steps(value: float, dt: float, argument: str) -> int:
    """``value/dt`` as an int, or a ValueError naming ``argument``."""
    steps = whole_steps(value, dt)
    if steps is None:
        raise ValueError(f"{argument}={value} is not a multiple of dt={dt}")
    return steps


def step_plan(case: Case, schedule: Schedule, dt: float | None = None) -> StepPlan:
    """The step counts of ``schedule`` for ``case``.

    Parameters
    ----------
    case : Case
        Its ``dt`` is the step of the spin-up.
    schedule : Schedule
        The times (validated there).
    dt : float, optional
        The step after the spin-up (default ``case.dt``; another one is chosen by a
        run with ``cfl_target``).

    Raises
    ------
    ValueError
        If ``save_interval``, ``spin_up`` or ``checkpoint_interval`` is not a whole
        multiple of the step (the message names it).
    """
    dt_spin = case.dt
    dt = dt_spin if dt is None else dt
    save = _steps(schedule.save_interval, dt, "save_interval")
    spin = _steps(schedule.spin_up, dt_spin, "spin_up")
    # the last snapshot is the last save step not after t_end
    end = spin + int(math.floor((schedule.t_end - schedule.spin_up) / (save * dt) + 1e-9)) * save
    interval = schedule.checkpoint_interval
    if interval is None:
        ckpt = max(save, (end // 10) or 1)
    elif dt == dt_spin:
        ckpt = _steps(interval, dt, "checkpoint_interval")
    else:  # a step chosen by the run: the nearest whole number of steps
        ckpt = max(1, round(interval / dt))
    return StepPlan(spin, save, end, ckpt, dt_spin, dt)


def dt_for_cfl(dt: float, cfl: float, target: float, save_interval: float) -> float:
    """The time step that brings a CFL number ``cfl`` (measured at ``dt``) to ``target``.

    The largest ``dt'`` not above ``dt·target/cfl`` that divides ``save_interval``
    (so snapshots stay on whole steps).

    Parameters
    ----------
    cfl : float
        ``dt·(max|u| + max|v|)/dx``; ``dt`` is returned unchanged unless it is > 0.
    """
    if not cfl > 0:
        return dt
    raw = dt * target / cfl
    return save_interval / math.ceil(save_interval / raw - 1e-9)


def make_stepper(case: Case, grid: SpectralGrid, closure=None, kernels="auto") -> Stepper:
    """The :class:`Stepper` of ``case`` on ``grid`` (its forcing, β, drag, Re, dt).

    Parameters
    ----------
    closure : Closure or callable, optional
        See :class:`Stepper`.
    kernels : {"auto", "numba", "numpy"}
        The stepper's elementwise work (see :class:`Stepper`).
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


# --------------------------------------------------------------------------- options
#: The options objects of :func:`simulate`, in the order of its parameters.
SIMULATE_OPTION_CLASSES = (Schedule, Output, Execution)


def merge_options(objects: dict, kwargs: dict, caller: str) -> tuple:
    """Options objects with single options given as keywords folded in.

    Parameters
    ----------
    objects : dict
        ``{OptionsClass: instance, mapping or None}``; every keyword goes to the
        class that has an option of its name.
    kwargs : dict
        Single options, e.g. ``{"t_end": 1.0, "path": "run.nc"}``.
    caller : str
        The function's name, for the message.

    Returns
    -------
    tuple
        One validated instance per class, in the order of ``objects``.

    Raises
    ------
    TypeError
        A keyword is no option of these classes (the message lists the valid ones).
    """
    groups = {cls: {} for cls in objects}
    for key, value in kwargs.items():
        owner = next((cls for cls in objects if key in cls.names()), None)
        if owner is None:
            valid = ", ".join(name for cls in objects for name in cls.names())
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}; "
                            f"its options are {valid}")
        groups[owner][key] = value
    return tuple(cls.merge(obj, **groups[cls]) for cls, obj in objects.items())


# --------------------------------------------------------------------------- simulate
def simulate(case: Case, schedule: Schedule | None = None, output: Output | None = None,
             execution: Execution | None = None, *, seed: int = 0, initial=None, closure=None,
             **kwargs) -> xr.Dataset:
    """Run a forced β-plane 2D turbulence simulation.

    The options come as objects (:class:`~xtl.solver.options.Schedule`,
    :class:`~xtl.solver.options.Output`, :class:`~xtl.solver.options.Execution`), as single
    keywords (``simulate(case, t_end=10.0, save_interval=0.5, path="run.nc")``), or
    both (keywords replace the objects' values); each is validated there, and a
    keyword that is no option raises a TypeError listing the valid ones.

    Parameters
    ----------
    case : Case
        The flow (Re, kf, β, μ, grid, dt, forcing, ...).
    schedule : Schedule or dict
        ``t_end`` (the last snapshot is the last save time not after it),
        ``save_interval``, ``spin_up`` (time before the first snapshot), each
        a multiple of ``case.dt``; ``checkpoint_interval`` (only with ``path``;
        default a tenth of the run, at least one save interval);
        ``cfl_limit`` (default 2: stop with :class:`DivergenceError` when
        ``dt·(max|u|+max|v|)/dx`` exceeds it or is NaN; AB2 is unstable well
        below it), checked every ``check_every`` steps (default 20) and at each
        snapshot; ``cfl_target``: choose the step after the spin-up from the flow.
        The spin-up runs at ``case.dt``; at its end the CFL number ``c`` is
        measured and the rest of the run uses the largest
        ``dt' <= case.dt·cfl_target/c`` that divides ``save_interval``
        (:func:`dt_for_cfl`), fixed for the run (a restart reuses it, so it stays
        bit-identical). AB2 restarts with one Heun step at the switch. The
        output's attributes record ``cfl_target``, ``cfl_at_spin_up`` and
        ``dt_after_spin_up``. Needs ``spin_up > 0``.
    output : Output or dict, optional
        ``path``: stream the snapshots to this netCDF file as the run goes (into
        ``<path>.part``, renamed to ``path`` at the end), so memory stays flat;
        checkpoints go to ``<path>.ckpt.npz``. ``overwrite``: replace an
        existing ``path``. ``resume`` (default True): if a ``.part`` file and its
        checkpoint from an interrupted run with the same settings exist,
        continue from the checkpoint, bit-identical to an uninterrupted run
        (same machine, FFT backend, threads and kernels: see :mod:`xtl.physics.fourier`).
        ``dtype`` (``"float64"`` or ``"float32"``): storage type of the
        snapshots (the run itself is float64); with ``path`` the file is
        netCDF4, chunked by whole snapshots and zlib-compressed (see
        :mod:`xtl.data.stream`). ``attrs``: extra global attributes. ``les``: coarse-grain
        on the fly, storing ψ̄, ω̄ and Π on the LES grid instead of the DNS (see
        :func:`xtl.data.coarse.coarse_grain`; the numbers agree with coarse-graining
        the stored DNS to round-off): ``True`` for the case's ``n_les`` and the
        Gaussian filter, an int for that ``n_les``, a dict with keys ``n_les``,
        ``filter`` (``"gaussian"``, ``"box"``, ``"sharp"``) and ``width``, or a
        :class:`~xtl.data.coarse.CoarseGraining`.
        ``dns_every``: with ``les`` and ``path``, also keep every k-th DNS
        snapshot in ``dns_path`` (default ``<path stem>.dns.nc``, written
        atomically too). ``member``: coordinates of this run as one member of an
        ensemble, e.g. ``{"member": 3, "seed": 0, "case_name": "tiny"}`` (an int
        ``"member"`` required): the output gets a leading ``member`` dim of
        length 1 carrying them (:func:`~xtl.solver.ensemble.ensemble` sets it).
        ``chunks``: dask chunks of the returned Dataset.
    execution : Execution or dict, optional
        ``fft`` (``"auto"``, ``"pyfftw"``, ``"numpy"``), ``threads`` (FFTW
        threads, used even where ``OMP_NUM_THREADS`` is smaller), ``kernels``
        (``"auto"``, ``"numba"``: fused and compiled, ``"numpy"``; same numbers
        to round-off) and ``progress`` (a progress bar; default in a notebook or
        when stderr is a terminal).
    seed : int, default 0
        Seed of the random initial condition (>= 0).
    initial : array-like or DataArray, optional
        Initial vorticity ``(y, x)`` instead of the random field.
    closure : Closure or callable, optional
        A :class:`~xtl.physics.closures.Closure`, which reads Π̂ from the
        spectral state (``closure.pi_hat(omega_hat, grid)``), or a plain
        ``closure(psi, omega) -> Pi`` on physical ``(n, n)`` arrays (wrapped by
        :func:`~xtl.physics.closures.as_closure`); the equation carries ``−Π``.
        For the a posteriori LES (:func:`xtl.run_les`).
    **kwargs
        Single options of ``schedule``, ``output`` or ``execution``.

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
    TypeError, ValueError
        For bad options (the message names the option), before anything runs.
    """
    if not isinstance(case, Case):
        raise TypeError(f"case must be an xtl.Case, got {type(case).__name__}")
    schedule, output, execution = merge_options(
        dict(zip(SIMULATE_OPTION_CLASSES, (schedule, output, execution))), kwargs, "simulate")
    run = _Run(case, schedule, output, execution, seed=check_int(seed, "seed", minimum=0),
               initial=initial, closure=closure)
    with contextlib.ExitStack() as locks:  # a second writer of the files is refused
        for path in (run.path, run.dns_path):
            if path is not None:
                locks.enter_context(output_lock(path))
        return _run_to_the_end(run, execution.progress)


def _run_to_the_end(run, progress) -> xr.Dataset:
    """Start (or resume) ``run``, step it to its end with a progress bar, finish it."""
    from .._progress import progress_bar

    state = run.start()
    bar = progress_bar(progress, total=run.plan.end_steps, initial=state.step,
                       unit="step", mininterval=1.0, desc=f"simulate {run.case.name}")
    try:
        run.advance(state, bar)
    except BaseException as err:
        run.abort(err)
        raise
    finally:
        bar.close()
    return run.finish()


class _Run:
    """One :func:`simulate` call: its grid, stepper, step plan, attributes and streams."""

    def __init__(self, case, schedule, output, execution, *, seed, initial, closure):
        self.case, self.schedule, self.output, self.execution = case, schedule, output, execution
        self.seed, self.initial, self.closure = seed, initial, closure
        self.plan = step_plan(case, schedule)
        self.path = None if output.path is None else check_output_path(output.path,
                                                                         output.overwrite)
        self.les = None
        if output.les is not None and output.les is not False:
            self.les = CoarseGraining.from_les(output.les).for_case(case)
        self.dns_every, self.dns_path = _check_dns_every(output, self.path, self.les)
        self.grid = SpectralGrid(case.n, dealias=case.dealias, fft=execution.fft,
                                 threads=execution.threads)
        self.stepper = None  # made by start(), at the step of a resumed run
        self.chosen, self.memory, self.written = None, [], 0
        self.stream = self.dns_stream = None
        self.ckpt = None if self.path is None else _checkpoint_path(self.path)
        self._describe()
        self._check_room()

    def _check_room(self) -> None:
        """Refuse, before any step, a run whose steps or snapshots cannot fit: more
        steps than model time resolves, or snapshots beyond this machine's memory (kept
        in memory) or the free space of the output's folder (written to ``path``)."""
        plan = self.plan
        if plan.end_steps > MAX_STEPS:
            raise ValueError(f"t_end={self.schedule.t_end} is {plan.end_steps:.3g} steps of "
                             f"dt={plan.dt}; a run takes at most 2**53 steps")
        n, count = len(self.x), plan.n_snapshots
        itemsize = 4 if self.path is not None and self.output.dtype == "float32" else 8
        need = output_bytes(count, len(self.names), n, itemsize, on_disk=self.path is not None)
        if self.dns_every is not None:  # the second file, of every dns_every-th DNS snapshot
            need += output_bytes(-(-count // self.dns_every), 2, self.grid.n, itemsize,
                                 on_disk=True)
        copies = ""
        if self.path is None:
            room, where = machine_memory(), "this machine has"
        else:
            room = shutil.disk_usage(self.path.parent).free
            where = f"{str(self.path.parent)!r} has free"
            copies = " (the .part file and its finished copy, at once)"
        if room is not None and need > room:
            raise ValueError(
                f"the run's {count} snapshots of {', '.join(self.names)} on a {n}² grid need "
                f"≈ {format_bytes(need)}{copies}; {where} {format_bytes(room)} (save less "
                f"often, end earlier{'' if self.path is not None else ', or write them to path=...'})")

    # -- what the run writes -------------------------------------------------------
    def _describe(self):
        """The output's variables, x, attributes, history line and checkpoint signature."""
        case, seed, initial, les = self.case, self.seed, self.initial, self.les
        attrs = {**_run_attrs(case, seed, initial), **(self.output.attrs or {})}
        signature = _signature(case, seed, self.plan, initial)
        target = self.schedule.cfl_target
        if target is not None:
            attrs["cfl_target"] = target
            signature += repr(("cfl_target", target))
        self.x, self.names, self.dns_attrs = self.grid.x, ("omega", "psi"), None
        if les is not None:
            self.x, self.names = les.x, les.variables
            if self.dns_every is not None:
                self.dns_attrs = {**attrs, "title": f"xtl DNS of case {case.name!r} (every "
                                  f"{self.dns_every}-th snapshot of {self.path.name})",
                                  "dns_every": self.dns_every}
                attrs["dns_file"] = self.dns_path.name
            attrs = {**attrs, "title": "xtl LES training data (coarse-grained on the fly) of "
                                       f"case {case.name!r}", **les.attrs(case.n, case.dealias)}
            signature += repr((les.signature, self.dns_every))
        self.attrs, self.signature = attrs, signature
        self.entry = _history_entry(case, seed, initial, self.schedule,
                                    None if les is None else les.to_dict())

    @property
    def streams(self) -> list:
        return [s for s in (self.stream, self.dns_stream) if s is not None]

    def _open_streams(self, append: bool) -> None:
        dtype, entry, member = self.output.dtype, self.entry, self.output.member
        self.stream = SnapshotStream(self.path, (self.x, self.x), self.names, self.attrs,
                                     dtype=dtype, append=append, history=entry, member=member)
        if self.dns_path is not None:
            self.dns_stream = SnapshotStream(
                self.dns_path, (self.grid.x, self.grid.y), ("omega", "psi"), self.dns_attrs,
                dtype=dtype, append=append, history=entry, member=member)

    def _resumable(self) -> bool:
        """An interrupted run of these settings left its ``.part`` files and checkpoint."""
        parts = [p.with_name(p.name + ".part") for p in (self.path, self.dns_path) if p]
        return self.output.resume and self.ckpt.exists() and all(p.exists() for p in parts)

    # -- the run -------------------------------------------------------------------
    def start(self) -> SolverState:
        """The state to step from: resumed from a checkpoint, or the initial one."""
        state = None
        if self.path is not None and self._resumable():
            state, self.written, self.chosen = _read_checkpoint(self.ckpt, self.signature)
        self._use_dt(None if self.chosen is None else self.chosen[0])
        if self.chosen is not None:
            self.attrs.update(_chosen_attrs(self.chosen))
        if state is not None:
            self._open_streams(append=True)
            return state
        state = initial_state(self.case, self.grid, self.seed, self.initial)
        if self.path is not None:
            self._open_streams(append=False)
            self.ckpt.unlink(missing_ok=True)
        return state

    def _use_dt(self, dt) -> None:
        """The plan and stepper of step ``dt`` after the spin-up (None: ``case.dt``)."""
        case = self.case if dt is None else self.case.replace(dt=dt)
        if dt is not None:
            self.plan = step_plan(self.case, self.schedule, dt=dt)
        self.stepper = make_stepper(case, self.grid, self.closure, self.execution.kernels)

    def advance(self, state: SolverState, bar) -> None:
        """Step ``state`` to the end, saving snapshots and checkpoints on the way."""
        check_every, cfl_limit = self.schedule.check_every, self.schedule.cfl_limit
        while True:
            step = state.step
            if self.chosen is None and self.schedule.cfl_target is not None \
                    and step == self.plan.spin_steps:
                self._choose_dt(state, bar)
            if self.plan.is_save(step):
                self._save(state)
            if step > 0 and self.stream is not None and step % self.plan.checkpoint_steps == 0:
                self._checkpoint(state)
            if step >= self.plan.end_steps:
                return
            measure = step % check_every == 0 or self.plan.is_save(step + 1)
            self.stepper.step(state, measure_cfl=measure)
            if measure and not self.stepper.last_cfl <= cfl_limit:
                self._diverged(state.step - 1)
            bar.update(1)

    def _choose_dt(self, state, bar) -> None:
        """At the end of the spin-up: the step for ``cfl_target``, fixed for the rest."""
        cfl = self.stepper.cfl(state.omega_hat)
        dt = dt_for_cfl(self.stepper.dt, cfl, self.schedule.cfl_target,
                        self.schedule.save_interval)
        self.chosen = (dt, cfl)
        self._use_dt(dt)
        state.tendency_prev = None  # AB2 restarts (Heun) at the new step
        self.attrs.update(_chosen_attrs(self.chosen))
        for s in self.streams:
            s.set_attrs(_chosen_attrs(self.chosen))
        bar.total = self.plan.end_steps

    def _save(self, state) -> None:
        """Write (or keep in memory) the snapshot of ``state``."""
        plan, step, les = self.plan, state.step, self.les
        index = plan.snapshot_index(step)
        keep_dns = self.dns_stream is not None and index % self.dns_every == 0
        dns = _fields(self.grid, state.omega_hat) if les is None or keep_dns else None
        fields = dns if les is None else les.spectral(state.omega_hat, dealias=self.case.dealias,
                                                      fft=self.execution.fft)
        if not np.all(np.isfinite(fields["omega"])):
            self.stepper.last_cfl = float("nan")
            self._diverged(step)
        t = plan.time(step)
        if self.stream is None:
            self.memory.append((t, {k: v.astype(self.output.dtype) for k, v in fields.items()}))
            return
        self.stream.write(index, t, fields)
        if keep_dns:
            self.dns_stream.write(index // self.dns_every, t, dns)
        self.written = index + 1

    def _checkpoint(self, state) -> None:
        for s in self.streams:
            s.sync()
        _write_checkpoint(self.ckpt, state, self.written, self.signature, self.chosen)

    def _diverged(self, step):
        """Close the files as incomplete and raise :class:`DivergenceError`."""
        for stream in self.streams:
            stream.finish(complete=False)
        written = None
        if self.stream is not None:  # the first stream, which the checkpoint belongs to
            written = str(self.path)
            self.ckpt.unlink(missing_ok=True)
        stepper = self.stepper
        raise DivergenceError(self.plan.time(step), step, stepper.last_cfl, stepper.dt,
                              self.schedule.cfl_limit, written)

    def abort(self, err: BaseException) -> None:
        """After ``err``: close the files (kept for a resume); a diverged in-memory run
        keeps its snapshots in the error."""
        for s in self.streams:
            s.close()
        if isinstance(err, DivergenceError) and self.stream is None and self.memory:
            err.snapshots = self._dataset()
            err.snapshots.attrs.update(complete=0, blowup_time=err.time)

    def _dataset(self) -> xr.Dataset:
        return _to_dataset(self.x, self.memory, self.attrs, self.names, self.entry,
                           self.output.member)

    def finish(self) -> xr.Dataset:
        """The finished files, opened lazily, or the snapshots kept in memory."""
        chunks = self.output.chunks
        if self.stream is None:
            ds = self._dataset()
            return ds if chunks is None else ds.chunk(chunks)
        for s in self.streams:
            s.finish(complete=True)
        self.ckpt.unlink(missing_ok=True)
        return open_dataset(self.path, chunks=chunks)


def _chosen_attrs(chosen) -> dict:
    return {"dt_after_spin_up": float(chosen[0]), "cfl_at_spin_up": float(chosen[1])}


def output_bytes(snapshots: int, variables: int, n: int, itemsize: int, *,
                 on_disk: bool = True) -> int:
    """The most bytes that ``snapshots`` snapshots of ``variables`` fields on an ``n × n``
    grid (``itemsize`` bytes a value) occupy at once while a run stores them.

    On disk a run writes every snapshot to ``<path>.part`` and, at the end, transcodes
    it to ``<path>.final.tmp`` beside it before the ``.part`` is removed: two copies at
    once (the compressed copy is counted at full size, its worst case). In memory
    (``on_disk`` False) there is one copy.

    Returns
    -------
    int
        Bytes.
    """
    copies = 2 if on_disk else 1
    return copies * snapshots * variables * n * n * itemsize


def _check_dns_every(output, path, les):
    """Check ``output.dns_every``/``dns_path`` against the run; ``(dns_every, dns_path)``
    (both None without ``dns_every``)."""
    dns_every, dns_path = output.dns_every, output.dns_path
    if dns_every is None:
        if dns_path is not None:
            raise ValueError("dns_path is only used with dns_every=k (keep every k-th DNS snapshot)")
        return None, None
    if les is None:
        raise ValueError(
            "dns_every only applies with les=... (the DNS is stored in full without it)"
        )
    if path is None:
        raise ValueError("dns_every needs path=... (the DNS snapshots go to a second file)")
    if dns_path is None:
        dns_path = path.with_name(path.stem + ".dns" + (path.suffix or ".nc"))
    dns_path = check_output_path(dns_path, output.overwrite, "dns_path")
    if dns_path.resolve() == path.resolve():
        raise ValueError(f"dns_path must differ from path, both are {str(path)!r}")
    return dns_every, dns_path


def _history_entry(case, seed, initial, schedule, les_options) -> str:
    """The ``history`` line of a run: the call that made it."""
    start = "initial=<given field>" if initial is not None else f"seed={int(seed)}"
    les = "" if les_options is None else f", les={les_options!r}"
    target = schedule.cfl_target
    cfl = "" if target is None else f", cfl_target={target!r}"
    return (f"xtl.simulate(case={case.name!r}, {start}, t_end={schedule.t_end!r}, "
            f"save_interval={schedule.save_interval!r}, spin_up={schedule.spin_up!r}{les}{cfl})")


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
