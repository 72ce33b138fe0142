"""The options of a run: when it steps and saves (:class:`Schedule`), what it writes
(:class:`Output`), how it executes (:class:`Execution`) and where an ensemble runs
(:class:`Cluster`), each validated once where it is made (the experiment config
parses into them too)."""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..options import Options, check_bool, check_float, check_int, check_path

__all__ = ["Schedule", "Output", "Execution", "Cluster"]

_DTYPES = ("float64", "float32")
_BACKEND_CHOICES = {"fft": ("auto", "pyfftw", "numpy"), "kernels": ("auto", "numba", "numpy")}


def _check_mapping(value, name: str, example: str):
    """``value`` as a dict (a copy) or None; a TypeError naming ``name`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict like {example} or None, got {value!r}")
    return dict(value)


def _check_member(member):
    """``member`` as a dict of coordinates with an int ``"member"`` (numbers or str), or None."""
    if member is None:
        return None
    number = member.get("member") if isinstance(member, Mapping) else None
    if not isinstance(number, numbers.Integral) or isinstance(number, bool):
        raise TypeError(f"member must be a dict of coordinates with an int 'member', e.g. "
                        f"{{'member': 0, 'seed': 1}}; got {member!r}")
    for key, value in member.items():
        if not isinstance(value, (str, numbers.Real)) or isinstance(value, bool):
            raise TypeError(f"member[{key!r}] must be a number or a str, got {value!r}")
    return dict(member)


@dataclass(frozen=True)
class Schedule(Options):
    """When a run steps, saves and checks: the time schedule of :func:`xtl.simulate`
    and :func:`xtl.ensemble`.

    Times are model times; ``save_interval``, ``spin_up`` and ``checkpoint_interval``
    must be whole multiples of the case's ``dt`` (checked where the case is known).

    Parameters
    ----------
    t_end : float
        End time (finite, >= 0, >= ``spin_up``); the last snapshot is the last save
        time not after it (``t_end = spin_up``: one snapshot, the start).
    save_interval : float
        Time between snapshots (finite, > 0).
    spin_up : float
        Time run before the first snapshot (finite, >= 0).
    checkpoint_interval : float, optional
        Time between checkpoints of a run written to a file (finite, > 0); None: a
        tenth of the run, at least one save interval.
    cfl_target : float, optional
        Choose the step after the spin-up for this CFL number (finite, > 0; needs
        ``spin_up > 0``); None keeps the case's ``dt``.
    cfl_limit : float
        Stop with a ``DivergenceError`` when the CFL number exceeds it (finite, > 0).
    check_every : int
        Steps between CFL checks (>= 1; also checked at each snapshot).
    """

    t_end: float
    save_interval: float
    spin_up: float = 0.0
    checkpoint_interval: float | None = None
    cfl_target: float | None = None
    cfl_limit: float = 2.0
    check_every: int = 20

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "t_end", check_float(self.t_end, "t_end", minimum=0.0))
        set_(self, "save_interval", check_float(self.save_interval, "save_interval",
                                                positive=True))
        set_(self, "spin_up", check_float(self.spin_up, "spin_up", minimum=0.0))
        if self.t_end < self.spin_up:
            raise ValueError(f"t_end={self.t_end} must not be smaller than spin_up={self.spin_up}")
        set_(self, "checkpoint_interval", check_float(
            self.checkpoint_interval, "checkpoint_interval", positive=True, optional=True))
        target = self.cfl_target
        if target is not None:
            if isinstance(target, bool) or not isinstance(target, numbers.Real) \
                    or not (math.isfinite(target) and target > 0):
                raise ValueError(f"cfl_target must be a number > 0 (e.g. 0.4), got {target!r}")
            if self.spin_up == 0:
                raise ValueError("cfl_target needs spin_up > 0 (the step is chosen from the "
                                 "spun-up flow)")
            set_(self, "cfl_target", float(target))
        set_(self, "cfl_limit", check_float(self.cfl_limit, "cfl_limit", positive=True))
        set_(self, "check_every", check_int(self.check_every, "check_every", minimum=1))


@dataclass(frozen=True)
class Output(Options):
    """What a run writes and where: the output of :func:`xtl.simulate` (and, without
    ``path``, ``overwrite``, ``resume``, ``dns_path``, ``attrs`` and ``member``, which
    it sets per member, of :func:`xtl.ensemble`).

    Parameters
    ----------
    path : path-like, optional
        Stream the snapshots to this netCDF file (checkpointed, resumable); None
        keeps them in memory.
    overwrite : bool
        Replace an existing ``path``.
    resume : bool
        Continue an interrupted run from its checkpoint (bit for bit).
    dtype : {"float64", "float32"}
        Storage type of the snapshots (the run itself is float64).
    les : True, int, dict or transform, optional
        Coarse-grain on the fly and store ψ̄, ω̄, Π on the LES grid (see
        :func:`xtl.simulate`); None or False stores the DNS.
    dns_every : int, optional
        With ``les`` and ``path``: also keep every ``dns_every``-th DNS snapshot (>= 1).
    dns_path : path-like, optional
        Where those go; default ``<path stem>.dns.nc``.
    attrs : dict, optional
        Extra global attributes of the output.
    member : dict, optional
        Coordinates of the run as one member of an ensemble (``{"member": int, ...}``).
    chunks : dict, optional
        Dask chunks of the returned Dataset when it is opened from files (``path``,
        or an ensemble's directory), e.g. ``{"time": 100}``.
    """

    path: str | os.PathLike | None = None
    overwrite: bool = False
    resume: bool = True
    dtype: str = "float64"
    les: object = None
    dns_every: int | None = None
    dns_path: str | os.PathLike | None = None
    attrs: Mapping | None = None
    member: Mapping | None = None
    chunks: Mapping | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        check_path(self.path, "path")
        check_path(self.dns_path, "dns_path")
        set_(self, "overwrite", check_bool(self.overwrite, "overwrite"))
        set_(self, "resume", check_bool(self.resume, "resume"))
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        set_(self, "dns_every", check_int(self.dns_every, "dns_every", minimum=1, optional=True))
        set_(self, "attrs", _check_mapping(self.attrs, "attrs", "{'closure': 'smag'}"))
        set_(self, "member", _check_member(self.member))
        set_(self, "chunks", _check_mapping(self.chunks, "chunks", "{'time': 100}"))


@dataclass(frozen=True)
class Execution(Options):
    """How a run executes, not what it computes: FFT backend, threads, kernels, progress
    bar (of :func:`xtl.simulate` and :func:`xtl.ensemble`). The numbers agree across
    choices to round-off, and bit for bit for the same choices on one machine.

    Parameters
    ----------
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend.
    threads : int
        FFTW threads of a run (>= 1).
    kernels : {"auto", "numba", "numpy"}
        A step's elementwise work: fused with numba, or numpy's.
    progress : bool, optional
        Show a progress bar; None: in a notebook or when stderr is a terminal.
    """

    fft: str = "auto"
    threads: int = 1
    kernels: str = "auto"
    progress: bool | None = None

    def __post_init__(self):
        for name, choices in _BACKEND_CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                                 f"got {value!r}")
        object.__setattr__(self, "threads", check_int(self.threads, "threads", minimum=1))
        object.__setattr__(self, "progress", check_bool(self.progress, "progress", optional=True))


@dataclass(frozen=True)
class Cluster(Options):
    """Where :func:`xtl.ensemble` runs its members (a dask.distributed cluster).

    Parameters
    ----------
    client : distributed.Client, optional
        Run on this client's cluster (left open).
    scheduler : str or cluster object, optional
        A scheduler address or an object with ``.scheduler_address``; not with ``client``.
    n_workers : int, optional
        Workers of the LocalCluster started when neither is given (>= 1).
    timeout : float, optional
        Seconds to wait for a scheduler given by address (finite, > 0; default
        ``$XTL_SCHEDULER_TIMEOUT``, else 5; see :func:`xtl.scheduler.connect`).
    """

    client: object = None
    scheduler: object = None
    n_workers: int | None = None
    timeout: float | None = None

    def __post_init__(self):
        if self.client is not None and self.scheduler is not None:
            raise ValueError("give client= or scheduler=, not both")
        object.__setattr__(self, "n_workers",
                           check_int(self.n_workers, "n_workers", minimum=1, optional=True))
        object.__setattr__(self, "timeout",
                           check_float(self.timeout, "timeout", positive=True, optional=True))
