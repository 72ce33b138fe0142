"""Typed options, validated once where they are made.

A function that needs many knobs takes one of these objects (plus, for
convenience, the same knobs as keyword arguments, which :meth:`Options.merge`
folds into the object); the experiment config parses straight into them, so a
value is checked in one place whichever way it arrives. Every check names the
option, the value and the expected form.

This module sits at the bottom of the data flow and imports nothing of xtl.
(The coarse-graining, :class:`xtl.data.coarse.CoarseGraining`, lives with its
work.)
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Options",
    "FitOptions",
    "check_int",
    "check_float",
    "check_bool",
]


# ------------------------------------------------------------------ validators
def check_int(value, name: str, *, minimum: int | None = None, optional: bool = False):
    """``value`` as an int, refusing bools, floats and values below ``minimum``.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message.
    minimum : int, optional
        The smallest allowed value.
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    int or None

    Raises
    ------
    TypeError
        ``value`` is not an integer (``1.5``, ``True``, ``"3"``).
    ValueError
        ``value`` is below ``minimum``.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        form = "an int" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_float(value, name: str, *, positive: bool = False, minimum: float | None = None,
                maximum: float | None = None, optional: bool = False):
    """``value`` as a finite float in the given range.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message.
    positive : bool
        Require ``value > 0``.
    minimum, maximum : float, optional
        Inclusive bounds.
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    float or None

    Raises
    ------
    TypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is NaN, infinite or out of range.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        form = "a number" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def check_bool(value, name: str, *, optional: bool = False):
    """``value`` as a bool (numpy bools too), refusing ints and strings.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message.
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    bool or None

    Raises
    ------
    TypeError
        ``value`` is not a bool.
    """
    if value is None and optional:
        return None
    if not isinstance(value, (bool, np.bool_)):
        form = "True or False" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    return bool(value)


def _check_path(value, name: str):
    """``value`` as a path-like or None; a TypeError naming ``name`` otherwise."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got {value!r}")
    return value


# --------------------------------------------------------------------- options
class Options:
    """Shared behaviour of the options dataclasses: merge keyword arguments."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def merge(cls, options=None, /, **kwargs):
        """``options`` (or the defaults) with ``kwargs`` replacing single options.

        Parameters
        ----------
        options : Options, mapping or None
            The starting options: an instance, a mapping of option names, or
            None for the defaults.
        **kwargs
            Single options to replace.

        Returns
        -------
        Options
            A new, validated instance.

        Raises
        ------
        TypeError
            ``options`` is of another type, or a keyword is not an option
            (the message lists the valid names).
        """
        if options is None:
            base = {}
        elif isinstance(options, cls):
            if not kwargs:
                return options
            base = options.to_dict()
        elif isinstance(options, Mapping):
            base = dict(options)
        else:
            raise TypeError(f"options must be a {cls.__name__}, a dict or None, "
                            f"got {type(options).__name__}")
        unknown = sorted(set(base) - set(cls.names())) + sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown {cls.__name__} option(s) {unknown}; "
                            f"valid: {', '.join(cls.names())}")
        return cls(**{**base, **kwargs})

    def replace(self, **kwargs):
        """A copy with some options replaced (validated again)."""
        return type(self).merge(self, **kwargs)

    def to_dict(self) -> dict:
        """The options as a plain dict (for provenance and configs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class FitOptions(Options):
    """How a network is fitted: by :func:`xtl.train`, :func:`xtl.transfer`,
    :func:`xtl.layer_sweep` and a backend's ``fit``.

    Parameters
    ----------
    epochs : int
        Epochs to run at most (a resumed fit continues up to it).
    batch_size : int
        Samples per gradient step.
    learning_rate : float
        Adam's learning rate (finite, >= 0; 0 leaves the weights as they are).
    seed : int
        Seeds the initial weights (``train``), the target subset
        (``transfer``) and the per-epoch shuffling; >= 0.
    patience : int, optional
        Early stopping after ``patience`` epochs without improvement of the
        validation loss (the training loss without validation data), then the
        best weights are restored. None: no early stopping.
    deterministic : bool
        Deterministic ops where the backend offers them (TensorFlow's are
        process-wide and disable XLA auto-jit).
    in_memory : bool, optional
        Hold the data in memory (True) or stream them from dask chunks
        (False); None decides from the data size and ``memory_limit``.
    memory_limit : float, optional
        Bytes of float32 data that may be held in memory (default 2 GiB).
    block : int
        Samples per streamed block.
    progress : bool, optional
        Progress bar; None shows it in a Jupyter notebook or on a terminal.
    checkpoint_dir : path-like, optional
        Checkpoint after every epoch there; a re-run with the same options
        resumes an interrupted fit to the same result. A checkpoint of a
        different fit raises a ValueError instead of being resumed.
    callbacks : sequence, optional
        Backend-native callbacks (Keras callbacks for ``"keras"``).
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    patience: int | None = None
    deterministic: bool = True
    in_memory: bool | None = None
    memory_limit: float | None = None
    block: int = 256
    progress: bool | None = None
    checkpoint_dir: str | os.PathLike | None = None
    callbacks: tuple = field(default=())

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "epochs", check_int(self.epochs, "epochs", minimum=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        set_(self, "learning_rate", check_float(self.learning_rate, "learning_rate",
                                                minimum=0.0))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))
        set_(self, "patience", check_int(self.patience, "patience", minimum=1, optional=True))
        set_(self, "deterministic", check_bool(self.deterministic, "deterministic"))
        set_(self, "in_memory", check_bool(self.in_memory, "in_memory", optional=True))
        set_(self, "memory_limit", check_float(self.memory_limit, "memory_limit",
                                               positive=True, optional=True))
        set_(self, "block", check_int(self.block, "block", minimum=1))
        set_(self, "progress", check_bool(self.progress, "progress", optional=True))
        _check_path(self.checkpoint_dir, "checkpoint_dir")
        callbacks = self.callbacks
        if callbacks is None:
            callbacks = ()
        if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"callbacks must be a sequence of callbacks, got {callbacks!r}")
        set_(self, "callbacks", tuple(callbacks))


# -- solver
_DTYPES = ("float64", "float32")
_BACKEND_CHOICES = {"fft": ("auto", "pyfftw", "numpy"), "kernels": ("auto", "numba", "numpy")}


def _check_mapping(value, name: str, example: str):
    """``value`` as a dict (a copy) or None; a TypeError naming ``name`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict like {example} or None, got {value!r}")
    return dict(value)


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
        _check_path(self.path, "path")
        _check_path(self.dns_path, "dns_path")
        set_(self, "overwrite", check_bool(self.overwrite, "overwrite"))
        set_(self, "resume", check_bool(self.resume, "resume"))
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.dns_every is not None and (isinstance(self.dns_every, bool) or not isinstance(
                self.dns_every, numbers.Integral) or self.dns_every < 1):
            raise ValueError(f"dns_every must be an int >= 1 (keep every k-th snapshot), "
                             f"got {self.dns_every!r}")
        if self.dns_every is not None:
            set_(self, "dns_every", int(self.dns_every))
        set_(self, "attrs", _check_mapping(self.attrs, "attrs", "{'closure': 'smag'}"))
        if self.member is not None and not isinstance(self.member, Mapping):
            raise TypeError(f"member must be a dict of coordinates with an int 'member', e.g. "
                            f"{{'member': 0, 'seed': 1}}; got {self.member!r}")
        if self.chunks is not None and not isinstance(self.chunks, Mapping):
            raise TypeError(f"chunks must be a dict like {{'time': 100}}, got {self.chunks!r}")


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
        if self.n_workers is not None:
            object.__setattr__(self, "n_workers",
                               check_int(self.n_workers, "n_workers", minimum=1))
        object.__setattr__(self, "timeout",
                           check_float(self.timeout, "timeout", positive=True, optional=True))


__all__ += ["Schedule", "Output", "Execution", "Cluster"]


# -- recommenders
# The options of the layer recommenders of :mod:`xtl.explain.recommend` (one class a
# method); ``[recommend.<method>]`` tables of an experiment config hold them.
__all__ += ["SpectralOptions", "GaussNewtonOptions", "ProbeOptions", "GradientNormOptions",
            "check_fraction"]


def check_fraction(value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1 (a fraction, a significance level).

    Raises
    ------
    TypeError, ValueError
        Not a number, or not in (0, 1).
    """
    value = check_float(value, name)
    if not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return value


@dataclass(frozen=True)
class SpectralOptions(Options):
    """Options of the ``"spectral"`` recommender (:func:`xtl.explain.recommend.spectral_recommender`).

    Parameters
    ----------
    kmax : int, optional
        Last shell compared (as in :func:`xtl.explain.activations.flow_difference`; None:
        the whole shells of the grid).
    threshold : float
        Decades above which a shell is labelled as differing (> 0).
    batch_size : int
        Samples per forward pass.
    max_samples : int
        Samples used of each Dataset (evenly thinned).
    n_directions : int
        Random kernel directions per layer for the sensitivity ``S``.
    epsilon : float
        Relative size of the kernel change for ``S`` (> 0).
    seed : int
        Seed of the directions (>= 0).
    prior : {None, "reach"}
        Multiply the score by the reach prior ``R``.
    """

    kmax: int | None = None
    threshold: float = 0.3
    batch_size: int = 32
    max_samples: int = 128
    n_directions: int = 4
    epsilon: float = 1e-2
    seed: int = 0
    prior: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "kmax", check_int(self.kmax, "kmax", minimum=1, optional=True))
        set_(self, "threshold", check_float(self.threshold, "threshold", positive=True))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        set_(self, "max_samples", check_int(self.max_samples, "max_samples", minimum=1))
        set_(self, "n_directions", check_int(self.n_directions, "n_directions", minimum=1))
        set_(self, "epsilon", check_float(self.epsilon, "epsilon", positive=True))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))
        if self.prior not in (None, "reach"):
            raise ValueError(f"prior must be None or 'reach', got {self.prior!r}")


@dataclass(frozen=True)
class GaussNewtonOptions(Options):
    """Options of the ``"gauss-newton"`` recommender
    (:func:`xtl.explain.recommend.gauss_newton_recommender`).

    Parameters
    ----------
    iterations : int
        Conjugate-gradient steps (an implicit regularisation).
    held_out : float
        Fraction of the target set held out for the score, in (0, 1).
    damping : float
        Levenberg–Marquardt damping ``λ`` (>= 0).
    steps : sequence of float
        Step lengths tried on the fitted part (at least one, each > 0).
    max_samples : int
        Target samples used (evenly thinned).
    batch_size : int
        Samples per forward or backward pass.
    """

    iterations: int = 6
    held_out: float = 0.25
    damping: float = 0.0
    steps: tuple = (1.0, 0.5, 0.25)
    max_samples: int = 48
    batch_size: int = 16

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "iterations", check_int(self.iterations, "iterations", minimum=1))
        set_(self, "held_out", check_fraction(self.held_out, "held_out"))
        set_(self, "damping", check_float(self.damping, "damping", minimum=0.0))
        if isinstance(self.steps, (str, bytes)) or not hasattr(self.steps, "__iter__"):
            raise TypeError(f"steps must be a sequence of numbers > 0, got {self.steps!r}")
        steps = tuple(check_float(s, "steps", positive=True) for s in self.steps)
        if not steps:
            raise ValueError("steps must be a non-empty sequence of numbers > 0, got ()")
        set_(self, "steps", steps)
        set_(self, "max_samples", check_int(self.max_samples, "max_samples", minimum=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))


@dataclass(frozen=True)
class ProbeOptions(Options):
    """Options of the ``"probe"`` recommender (:func:`xtl.explain.recommend.probe_recommender`).

    Parameters
    ----------
    epochs : int
        Probe epochs per layer.
    horizon : int
        The full budget, in epochs, to extrapolate to (the sweep's cap).
    validation : float
        Held-out fraction of the target set, in (0, 1).
    batch_size : int
        As in :class:`FitOptions`.
    learning_rate : float
        As in :class:`FitOptions` (finite, >= 0).
    seed : int
        As in :class:`FitOptions` (>= 0).
    """

    epochs: int = 5
    horizon: int = 100
    validation: float = 0.25
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "epochs", check_int(self.epochs, "epochs", minimum=1))
        set_(self, "horizon", check_int(self.horizon, "horizon", minimum=1))
        set_(self, "validation", check_fraction(self.validation, "validation"))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        set_(self, "learning_rate", check_float(self.learning_rate, "learning_rate",
                                                minimum=0.0))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))


@dataclass(frozen=True)
class GradientNormOptions(Options):
    """Options of the ``"gradient-norm"`` recommender
    (:func:`xtl.explain.recommend.gradient_norm_recommender`).

    Parameters
    ----------
    max_samples : int
        Target samples used (evenly thinned).
    batch_size : int
        Samples per forward or backward pass.
    """

    max_samples: int = 64
    batch_size: int = 16

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "max_samples", check_int(self.max_samples, "max_samples", minimum=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
