"""Which layer(s) of a base network to re-train for a target flow, before re-training.

Several recommenders answer the same question from different evidence, and all
return one schema, so they can be measured against the same seed-resolved sweep
(:func:`compare_recommendation`, which reports the regret of the choice,
:func:`regret`; :mod:`xtl.explain.benchmark` puts them beside the constant guesses):

* ``"spectral"`` -- xtl's reading of the description of Subel et al. (PNAS Nexus
  2023; no public text states their criterion): where the flows' spectra differ, how strongly each layer's activations
  carry that difference, whether its filters act there, and how much a change
  of its kernels moves the network's output there. Every factor is measured
  from the model and the data; a fixed prior can be switched on, and is then
  reported.
* ``"gauss-newton"`` -- the held-out loss decrease of one damped Gauss–Newton
  step restricted to each layer (conjugate gradients on ``JᵀJ δ = −Jᵀr``).
* ``"probe"`` -- every candidate re-trained for a few epochs on the target set,
  its validation-loss curve extrapolated to the full budget.
* ``"gradient-norm"`` -- the relative gradient norm ``‖∇_l L‖ / ‖θ_l‖`` at the
  base weights (Auto-RGN of Lee et al., ICLR 2023): a cheap reference.
* ``"halving"`` -- successive halving over the layers (Li et al., JMLR 2018):
  every layer re-trained a few epochs, the better half trained on, until one is left.
* ``"ntk"`` -- kernel ridge regression of the residual on each layer's empirical
  tangent kernel, scored by its closed-form leave-one-out error.
* ``"prior"`` -- the layer with the lowest expected regret over stored sweeps (a
  Bayesian average): the constant a user's own history supports.

Recommenders are registered by name (:func:`register_recommender` gives the
contract); each has one frozen options dataclass (:class:`SpectralOptions`,
:class:`GaussNewtonOptions`, :class:`ProbeOptions`, :class:`GradientNormOptions`,
:class:`HalvingOptions`, :class:`NtkOptions`, :class:`PriorOptions`),
validated where it is made. :func:`recommend_layers` checks the options against
the method's class, then adds the rank, the recommendation, the method and the
time it took.

``target_ds`` is what a user has before re-training: the small target set that
transfer learning will use. Nothing about any particular flow is built in.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..nn.spec import check_layers
from ..nn.model import Model, model_id, model_to_dataset
from ..nn.backends.base import get_backend
from .activations import (
    activation_spectra,
    check_pair_datasets,
    filter_profile,
    flow_difference,
    spectral_distance,
)
from ..options import Options, check_float, check_fraction, check_int, check_path
from ..data.spectra import spectrum
from ..physics.fourier import domain_length
from ..nn.training import (check_model_data, load_normalized, sample_fields, stack_samples,
                           transfer, variable_samples)

__all__ = [
    "recommend_layers",
    "register_recommender",
    "available_recommenders",
    "recommender",
    "recommender_options",
    "recommended_layers",
    "compare_recommendation",
    "regret",
    "layer_regrets",
    "extrapolate_loss",
    "DEFAULT_METHOD",
    "STAGE_METHODS",
    "STAGE_DEFAULT",
    "SpectralOptions",
    "GaussNewtonOptions",
    "ProbeOptions",
    "GradientNormOptions",
    "HalvingOptions",
    "NtkOptions",
    "PriorOptions",
    "successive_halving",
    "kernel_ridge_loo",
    "prior_scores",
]

#: The method :func:`recommend_layers` uses by default: the prior, because no method has
#: been shown to meet the benchmark's goal (:data:`xtl.explain.benchmark.GOAL`) against
#: the constant guesses; see docs/explaining.md. It needs ``sweeps=[...]``.
DEFAULT_METHOD = "prior"

#: The recommenders a ``recommend-<target>`` stage of an experiment runs unless its
#: ``[recommend] methods`` says otherwise: those it ran before "halving", "ntk" and
#: "prior" were added, so that existing experiment folders keep their stage keys. The
#: ``[benchmark]`` stage measures the others.
STAGE_METHODS = ("gauss-newton", "gradient-norm", "probe", "spectral")

#: The default of an experiment's ``[recommend]`` table (whose choice a partial sweep adds)
#: when the stages do not run :data:`DEFAULT_METHOD`: the probe, the default before the
#: benchmark chose one, so that existing folders keep their stage keys.
STAGE_DEFAULT = "probe"

#: name -> (function, options class or None)
_RECOMMENDERS: dict = {}


# ------------------------------------------------------------------- options
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


def _check_fit_fields(options) -> None:
    """Validate, in place, the fit fields that the recommenders which train share:
    ``validation``, ``batch_size``, ``learning_rate`` and ``seed``."""
    set_ = object.__setattr__
    set_(options, "validation", check_fraction(options.validation, "validation"))
    set_(options, "batch_size", check_int(options.batch_size, "batch_size", minimum=1))
    set_(options, "learning_rate", check_float(options.learning_rate, "learning_rate",
                                               minimum=0.0))
    set_(options, "seed", check_int(options.seed, "seed", minimum=0))


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
        As in :class:`~xtl.nn.backends.loop.FitOptions`.
    learning_rate : float
        As in :class:`~xtl.nn.backends.loop.FitOptions` (finite, >= 0).
    seed : int
        As in :class:`~xtl.nn.backends.loop.FitOptions` (>= 0).
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
        _check_fit_fields(self)


@dataclass(frozen=True)
class GradientNormOptions(Options):
    """Options of the ``"gradient-norm"`` recommender
    (:func:`xtl.explain.recommend.gradient_norm_recommender`).

    ``max_samples`` and ``batch_size`` as in :class:`GaussNewtonOptions`.
    """

    max_samples: int = 64
    batch_size: int = 16

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "max_samples", check_int(self.max_samples, "max_samples", minimum=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))


@dataclass(frozen=True)
class HalvingOptions(Options):
    """Options of the ``"halving"`` recommender (:func:`xtl.explain.recommend.halving_recommender`).

    Parameters
    ----------
    epochs : int
        Epochs of the first round, for every candidate (>= 1).
    eta : int
        Each round keeps ``1/eta`` of the candidates and trains them ``eta`` times
        longer (>= 2).
    validation, batch_size, learning_rate, seed :
        As in :class:`ProbeOptions`.
    """

    epochs: int = 2
    eta: int = 2
    validation: float = 0.25
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "epochs", check_int(self.epochs, "epochs", minimum=1))
        set_(self, "eta", check_int(self.eta, "eta", minimum=2))
        _check_fit_fields(self)


@dataclass(frozen=True)
class NtkOptions(Options):
    """Options of the ``"ntk"`` recommender (:func:`xtl.explain.recommend.ntk_recommender`).

    Parameters
    ----------
    n_points : int
        Output points (sample, pixel, channel) in the kernel (>= 2; one backward pass
        each per layer).
    ridges : sequence of float
        Relative ridges ``ρ`` tried (each > 0); the one with the lowest leave-one-out
        error is used.
    max_samples : int
        Target samples the points are drawn from (evenly thinned).
    seed : int
        Seed of the points (>= 0).
    """

    n_points: int = 128
    ridges: tuple = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    max_samples: int = 48
    seed: int = 0

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "n_points", check_int(self.n_points, "n_points", minimum=2))
        if isinstance(self.ridges, (str, bytes)) or not hasattr(self.ridges, "__iter__"):
            raise TypeError(f"ridges must be a sequence of numbers > 0, got {self.ridges!r}")
        ridges = tuple(check_float(r, "ridges", positive=True) for r in self.ridges)
        if not ridges:
            raise ValueError("ridges must be a non-empty sequence of numbers > 0, got ()")
        set_(self, "ridges", ridges)
        set_(self, "max_samples", check_int(self.max_samples, "max_samples", minimum=1))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))


@dataclass(frozen=True)
class PriorOptions(Options):
    """Options of the ``"prior"`` recommender (:func:`xtl.explain.recommend.prior_recommender`).

    Parameters
    ----------
    sweeps : sequence of path
        Stored sweep files (netCDF of :func:`xtl.layer_sweep` or
        :func:`xtl.budget_sweep`) to learn from; the recommender refuses none.
    strength : float
        Pseudo-sweeps at the grand mean regret in the Bayesian average (> 0).
    metric : str
        The sweeps' skill the regret is measured in.
    """

    sweeps: tuple = ()
    strength: float = 1.0
    metric: str = "cc"

    def __post_init__(self):
        set_ = object.__setattr__
        if isinstance(self.sweeps, (str, bytes, os.PathLike)) or not hasattr(self.sweeps,
                                                                              "__iter__"):
            raise TypeError(f"sweeps must be a sequence of paths, got {self.sweeps!r}")
        set_(self, "sweeps", tuple(str(check_path(p, "sweeps")) for p in self.sweeps))
        set_(self, "strength", check_float(self.strength, "strength", positive=True))
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"metric must be the name of a sweep variable (str), got "
                            f"{self.metric!r}")


# ------------------------------------------------------------------ registry
def register_recommender(name: str, func, *, options_class=None,
                         overwrite: bool = False) -> None:
    """Register a recommender under ``name``.

    Parameters
    ----------
    func : callable
        ``func(model, base_ds, target_ds, layers, options) -> xarray.Dataset`` (with
        ``options_class``) or ``func(model, base_ds, target_ds, layers, **options)``
        (without), returning ``score`` over ``layer`` (higher = better to re-train)
        and its evidence; ``attrs["formula"]`` says how the score is made.
    options_class : type, optional
        A subclass of :class:`xtl.options.Options`: :func:`recommend_layers` folds
        the method's options into one (refusing unknown or bad ones) and passes
        it as the fifth argument. None: the options are passed as keywords,
        unchecked.
    overwrite : bool
        Replace an existing registration.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if options_class is not None and not (isinstance(options_class, type)
                                          and issubclass(options_class, Options)):
        raise TypeError(f"options_class must be a subclass of xtl.options.Options or None, "
                        f"got {options_class!r}")
    if name in _RECOMMENDERS and not overwrite:
        raise ValueError(f"a recommender {name!r} is registered already; pass overwrite=True")
    _RECOMMENDERS[name] = (func, options_class)


def available_recommenders() -> list:
    """Names of the registered recommenders."""
    return sorted(_RECOMMENDERS)


def _registered(name: str) -> tuple:
    """``(function, options class or None)`` registered as ``name``."""
    if name not in _RECOMMENDERS:
        raise ValueError(f"unknown method {name!r}; registered recommenders are "
                         f"{available_recommenders()}")
    return _RECOMMENDERS[name]


def recommender(name: str):
    """The function registered as ``name``.

    Raises
    ------
    ValueError
        An unknown name (the message lists the registered ones).
    """
    return _registered(name)[0]


def recommender_options(name: str):
    """The options class of the recommender registered as ``name``.

    Returns
    -------
    type or None
        The :class:`xtl.options.Options` subclass its options are checked by
        (``recommender_options("probe").names()`` lists them), or None for a
        recommender registered without one.

    Raises
    ------
    ValueError
        An unknown name (the message lists the registered ones).
    """
    return _registered(name)[1]


def _recommender(name: str, options_class):
    """Decorator: register a recommender ``f(model, base_ds, target_ds, layers,
    options=None, **kwargs)`` as ``name`` with ``options_class``, and show the class's
    fields as its keyword-only parameters.

    The function folds its keywords into ``options_class`` (which refuses any other
    name), so the signature shown is the one it honours; ``help()`` and
    :func:`inspect.signature` list the options.
    """
    def decorate(func):
        sig = inspect.signature(func)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
                   for f in dataclasses.fields(options_class)]
        func.__signature__ = sig.replace(parameters=params)
        register_recommender(name, func, options_class=options_class)
        return func
    return decorate


def _rank_desc(values, layers):
    """Ranks 1..n by decreasing value, ties (and NaN, last) broken by the shallower layer."""
    v = np.where(np.isfinite(values), values, -np.inf)
    order = np.lexsort((np.asarray(layers), -v))
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def recommend_layers(base_model: Model, base_ds, target_ds, *, method: str = DEFAULT_METHOD,
                     layers=None, top: int = 1, options=None, **kwargs) -> xr.Dataset:
    """Rank the layers of a base network by how good they are to re-train, before any TL.

    Parameters
    ----------
    base_model : Model
        The trained base network (BNN).
    base_ds : xarray.Dataset
        LES data of the base flow (``psi``, ``omega``, ``pi``); pass a subset to go
        faster (the spectral method uses its spectra).
    target_ds : xarray.Dataset
        The target data a re-training would use (the small target set), same grid.
    method : str
        A registered recommender (:func:`available_recommenders`): ``"spectral"``,
        ``"gauss-newton"``, ``"probe"``, ``"gradient-norm"``, ``"halving"``, ``"ntk"``
        or ``"prior"`` (which needs ``sweeps=[...]``, stored sweep files).
    layers : int or sequence of int, optional
        Candidate layers in 1..L (default all).
    top : int
        How many layers to recommend.
    options : Options or mapping, optional
        The method's options: an instance of its options class
        (:func:`recommender_options`, e.g. :class:`ProbeOptions`) or a mapping of
        option names (e.g. a config's ``[recommend.probe]`` table).
    **kwargs
        Single options of the method, replacing those of ``options``.

    Returns
    -------
    xarray.Dataset
        Over ``layer``: ``score`` (higher = better to re-train), ``rank`` (1 = best,
        ties to the shallower layer; read it as ``rec["rank"]``) and the method's
        evidence; ``recommended(choice)``, the ``top`` best layers; scalar
        ``seconds``, the wall time it took. ``attrs``: ``method``, ``formula``,
        ``recommended`` (a list), ``prior`` (``"none"`` unless a prior was asked
        for), the base model's id and the case names.

    Raises
    ------
    TypeError, ValueError
        Not a Model; bad Datasets; an unknown method (the message lists them); a
        layer outside 1..L; a bad ``top``; an option the method does not have (the
        message lists those it has) or a bad option value (the message names it).

    Examples
    --------
    >>> rec = xtl.recommend_layers(bnn, base_subset, target_subset, method="probe")
    >>> rec.score.to_series(), rec.attrs["recommended"]
    """
    if not isinstance(base_model, Model):
        raise TypeError(f"base_model must be an xtl Model, got {type(base_model).__name__}")
    func, options_class = _registered(method)
    check_pair_datasets(base_ds, target_ds, base_model.variables)
    check_model_data(base_model, target_ds, "target_ds")
    L = base_model.n_layers
    layers = list(check_layers(range(1, L + 1) if layers is None else layers, L))
    top = check_int(top, "top", minimum=1)
    if top > len(layers):
        raise ValueError(f"top must be an int in 1..{len(layers)} (the number of candidate "
                         f"layers); got {top}")
    start = time.perf_counter()
    if options_class is not None:  # checked by the options class
        out = func(base_model, base_ds, target_ds, layers,
                   options_class.merge(options, **kwargs))
    else:
        if options is not None:
            kwargs = {**(options.to_dict() if hasattr(options, "to_dict") else dict(options)),
                      **kwargs}
        out = func(base_model, base_ds, target_ds, layers, **kwargs)
    seconds = time.perf_counter() - start
    score = out["score"].sel(layer=layers).values.astype(float)
    ranks = _rank_desc(score, layers)
    recommended = [int(layers[i]) for i in np.argsort(ranks)[:top]]
    out["rank"] = ("layer", ranks, {"long_name": "rank of the layer by score (1 = best to "
                                    "re-train; ties to the shallower layer)", "units": "1"})
    out["recommended"] = ("choice", np.asarray(recommended, np.int64),
                          {"long_name": f"the {top} best layer(s) to re-train, best first"})
    out["seconds"] = ((), seconds, {"long_name": "wall time of the recommendation",
                                    "units": "s"})
    out = out.assign_coords(choice=np.arange(1, top + 1))
    out.attrs.update({
        "method": method, "recommended": recommended, "n_layers": int(L),
        "prior": str(out.attrs.get("prior", "none")),
        "base_model": model_id(base_model),
        "base_case": str(base_model.provenance.get("training_case", "unknown")),
        "base_data_case": str(base_ds.attrs.get("case_name", "unknown")),
        "target_case": str(target_ds.attrs.get("case_name", "unknown")),
        "n_target_samples": variable_samples(target_ds, base_model.variables),
    })
    return out


def recommended_layers(recommendation: xr.Dataset) -> list:
    """The recommended layer numbers of a :func:`recommend_layers` result.

    Parameters
    ----------
    recommendation : xarray.Dataset
        In memory or read back from netCDF (where a one-element list attribute
        becomes a scalar).
    """
    if "recommended" not in recommendation.attrs:
        raise ValueError("recommendation has no 'recommended' attribute; is it a "
                         "recommend_layers() result?")
    return [int(v) for v in np.atleast_1d(recommendation.attrs["recommended"])]


# ------------------------------------------------------------- shared pieces
def _thinned(model: Model, ds: xr.Dataset, max_samples: int | None) -> np.ndarray:
    """Indices of at most ``max_samples`` samples of ``ds``, evenly spaced (None: all)."""
    n = variable_samples(ds, model.variables)
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_samples).round().astype(int))


def _normalized(model: Model, ds: xr.Dataset, max_samples: int | None = None) -> tuple:
    """Normalized ``(x (n, y, x, c_in), y (n, y, x, c_out))`` of ``ds`` (evenly thinned
    to ``max_samples``)."""
    variables = model.variables
    fields = sample_fields(ds, variables.names, variables.channels)
    return load_normalized(fields, model.normalization, _thinned(model, ds, max_samples),
                           variables)


def _shell_power(fields: np.ndarray, L: float) -> xr.DataArray:
    """Sample- and channel-mean power spectrum (shells ``k``) of ``(sample, y, x,
    channel)`` fields on a domain of side ``L``."""
    da = xr.DataArray(np.asarray(fields, np.float64), dims=("sample", "y", "x", "channel"))
    return spectrum(da, "power", L=L).mean(["sample", "channel"])


def _with_layer(weights: list, layer: int, pair) -> list:
    """``weights`` with layer ``layer``'s ``(kernel, bias)`` replaced by ``pair`` (float32)."""
    changed = list(weights)
    changed[layer - 1] = tuple(np.asarray(w, np.float32) for w in pair)
    return changed


def _held_out(n: int, fraction: float, purpose: str) -> int:
    """How many of ``n`` target samples ``fraction`` holds out (>= 1, leaving >= 1)."""
    n_held = max(1, int(round(fraction * n)))
    if n - n_held < 1:
        raise ValueError(f"target_ds needs at least 2 samples to hold {fraction} out{purpose}, "
                         f"got {n}")
    return n_held


# ------------------------------------------------------------------ spectral
def _overlap(profile, weight):
    """Mean of ``weight`` over shells k ≥ 1, weighted by a layer's mean filter response.

    ``O(l) = Σ_{k≥1} p_l(k)·w(k) / Σ_{k≥1} p_l(k)``, in the units of ``weight``
    (decades); NaN for a layer whose response is zero at every shell k ≥ 1.
    """
    pos = dict(k=slice(1, None))
    prof = profile.sel(**pos)
    inside = (prof * weight.sel(**pos)).sum("k")
    total = prof.sum("k")
    return inside / total.where(total > 0)


def _layer_sensitivity(backend, model, x, layer, weight, options: SpectralOptions, L):
    """``S(l)``: output power moved into the differing shells per unit relative kernel change.

    For random directions ``u`` (the same for every layer of one kernel shape) the
    kernel ``W_l`` becomes ``W_l + ε‖W_l‖ u/‖u‖``; ``S(l)`` is the mean over directions
    of ``Σ_{k≥1} w(k) P_Δy(k) / (ε² Σ_{k≥1} P_y(k))``, ``P`` the sample-mean power
    spectra of the output ``y`` and its change ``Δy`` (on the domain of side ``L``).
    """
    epsilon, seed = options.epsilon, options.seed
    weights = backend.get_weights(model)
    kernel, bias = weights[layer - 1]
    y0 = backend.predict_normalized(model, x)
    p0 = float(_shell_power(y0, L).sel(k=slice(1, None)).sum())
    w = weight.sel(k=slice(1, None))
    clone = backend.clone(model)
    norm = float(np.linalg.norm(kernel))
    values = []
    for d in range(options.n_directions):
        u = np.random.default_rng([seed, d]).standard_normal(kernel.shape)
        u *= epsilon * norm / np.linalg.norm(u)
        backend.set_weights(clone, _with_layer(weights, layer, (kernel + u, bias)))
        dp = _shell_power(backend.predict_normalized(clone, x) - y0, L).sel(k=slice(1, None))
        values.append(float((w * dp.sel(k=w["k"])).sum()) / (epsilon ** 2 * p0))
    return float(np.mean(values))


def _spectral_evidence(model: Model, base_ds, target_ds, layers, flows,
                       options: SpectralOptions) -> xr.Dataset:
    """The factors ``D``, ``O``, ``S`` of :func:`spectral_recommender` and their evidence."""
    kmax = flows.attrs["kmax"]
    act_b = activation_spectra(model, base_ds, layers, batch_size=options.batch_size, kmax=kmax)
    act_t = activation_spectra(model, target_ds, layers, batch_size=options.batch_size,
                               kmax=kmax)
    pos = dict(k=slice(1, None))
    chan_div = spectral_distance(act_t.spectrum.sel(**pos), act_b.spectrum.sel(**pos))
    profile = filter_profile(model_to_dataset(model).sel(layer=layers), base_ds.sizes["x"],
                             kmax)
    backend = get_backend(model.backend)
    x, _ = _normalized(model, target_ds, options.max_samples)
    length = domain_length(target_ds, name="target_ds")
    sens = [_layer_sensitivity(backend, model, x, k, flows.shell_weight, options, length)
            for k in layers]
    return xr.Dataset({
        "divergence": chan_div.mean("channel", skipna=True).fillna(0.0).assign_attrs(
            long_name="activation divergence D(l): mean over live channels of the spectral "
                      "distance of their outputs for target and base inputs", units="1"),
        "overlap": _overlap(profile, flows.shell_weight).fillna(0.0).assign_attrs(
            long_name="overlap O(l): shell weight w(k) averaged with the layer's mean filter "
                      "response", units="decades"),
        "sensitivity": xr.DataArray(sens, dims="layer", coords={"layer": layers}).assign_attrs(
            long_name="sensitivity S(l): output power moved into the differing shells per "
                      "unit relative kernel change", units="decades"),
        "channel_divergence": chan_div.assign_attrs(long_name="activation divergence per "
                                                    "channel", units="1"),
        "filter_profile": profile.assign_attrs(long_name="mean |W^| of the layer's kernels "
                                               "on the LES grid", units="1"),
        "activation_spectrum_base": act_b.spectrum.assign_attrs(
            long_name="power spectrum of the layer output, base inputs", units="1"),
        "activation_spectrum_target": act_t.spectrum.assign_attrs(
            long_name="power spectrum of the layer output, target inputs", units="1"),
    })


@_recommender("spectral", SpectralOptions)
def spectral_recommender(model: Model, base_ds, target_ds, layers, options=None,
                         **kwargs) -> xr.Dataset:
    """xtl's reading of the description of Subel et al. (2023), every factor measured.

    ``score(l) = D(l) · O(l) · S(l)`` (times ``R(l)`` with ``prior="reach"``):

    * ``D(l)``, the divergence: the mean over the layer's live channels of the
      spectral distance (:func:`xtl.explain.activations.spectral_distance`, shells ``k ≥ 1``)
      between the sample-mean power spectra of the channel's output for target and
      for base inputs: how strongly the layer's features carry the flows' difference;
    * ``O(l)``, the overlap: the mean over shells of the flows' shell weight ``w(k)``
      (:func:`xtl.explain.activations.flow_difference`), weighted by the layer's mean filter
      response ``|Ŵ|`` on the LES grid: whether its filters act where the flows differ;
    * ``S(l)``, the sensitivity: the output power a random relative change of the
      layer's kernels moves into the shells where the flows differ (weighted by
      ``w``), measured on target inputs: how much re-training the layer can change
      the output there;
    * ``R(l) = (L − l + 1)/L``, the reach, only with ``prior="reach"`` (a fixed prior
      favouring shallow layers; off by default).

    Parameters
    ----------
    model, base_ds, target_ds, layers :
        As in :func:`recommend_layers`.
    options : SpectralOptions or mapping, optional
        The options, their meaning and defaults: :class:`SpectralOptions`.
    **kwargs
        Single options, replacing those of ``options``.

    Returns
    -------
    xarray.Dataset
        ``score``, ``divergence``, ``overlap``, ``sensitivity`` (and ``reach``) over
        ``layer``; ``channel_divergence``, ``filter_profile``,
        ``activation_spectrum_base``/``_target``; the flow comparison of
        :func:`xtl.explain.activations.flow_difference` (``log_ratio``, ``shell_weight``, ...).

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option).
    """
    opts = SpectralOptions.merge(options, **kwargs)
    variables = model.variables
    base_ds = stack_samples(base_ds, _thinned(model, base_ds, opts.max_samples), variables)
    target_ds = stack_samples(target_ds, _thinned(model, target_ds, opts.max_samples),
                              variables)
    flows = flow_difference(base_ds, target_ds, kmax=opts.kmax, threshold=opts.threshold,
                            variables=variables)
    out = _spectral_evidence(model, base_ds, target_ds, layers, flows, opts)
    score = out.divergence * out.overlap * out.sensitivity
    formula = "score = D * O * S"
    if opts.prior == "reach":
        L = model.n_layers
        layer = xr.DataArray(np.asarray(layers), dims="layer", coords={"layer": layers})
        out["reach"] = ((L - layer + 1) / L).astype(float).assign_attrs(
            long_name="reach prior R(l) = (L - l + 1)/L", units="1")
        score = score * out["reach"]
        formula += " * R"
    out["score"] = score.assign_attrs(long_name="spectral score " + formula.split("= ")[1],
                                      units="1")
    out = xr.merge([out, flows], combine_attrs="override")
    out.attrs = {"formula": formula + " (see xtl.explain.recommend.spectral_recommender)",
                 "prior": opts.prior or "none", "threshold": opts.threshold,
                 "kmax": int(flows.attrs["kmax"])}
    return out


# -------------------------------------------------------------- gauss-newton
def _flat(pair) -> np.ndarray:
    return np.concatenate([np.ravel(pair[0]), np.ravel(pair[1])]).astype(np.float64)


def _unflat(v, shapes) -> tuple:
    k = int(np.prod(shapes[0]))
    return v[:k].reshape(shapes[0]), v[k:].reshape(shapes[1])


def _conjugate_gradient(apply, rhs, iterations: int) -> np.ndarray:
    """``iterations`` steps of CG on ``apply(v) = rhs`` from 0 (stops early at convergence)."""
    v = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rr = float(r @ r)
    for _ in range(iterations):
        if rr <= 1e-30 * max(1.0, float(rhs @ rhs)):
            break
        ap = apply(p)
        pap = float(p @ ap)
        if pap <= 0:
            break
        alpha = rr / pap
        v += alpha * p
        r -= alpha * ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return v


def _loss(backend, model, x, y) -> float:
    return float(np.mean((backend.predict_normalized(model, x) - y) ** 2))


def _gauss_newton_layer(backend, model, clone, fit, held, layer,
                        options: GaussNewtonOptions) -> dict:
    """Held-out relative loss decrease of one Gauss–Newton step on ``layer``.

    ``fit`` and ``held`` are ``(x, y)`` pairs; ``clone`` a copy of ``model`` whose
    weights are overwritten.
    """
    (xf, yf), (xh, yh) = fit, held
    batch_size, damping = options.batch_size, options.damping
    weights = backend.get_weights(model)
    shapes = (weights[layer - 1][0].shape, weights[layer - 1][1].shape)
    n = yf.size
    residual = backend.predict_normalized(model, xf, batch_size=batch_size) - yf
    grad = _flat(backend.vjp(model, xf, layer, residual, batch_size=batch_size)) * (2.0 / n)

    def gn(v):
        jv = backend.jvp(model, xf, layer, _unflat(v, shapes), batch_size=batch_size)
        return _flat(backend.vjp(model, xf, layer, jv, batch_size=batch_size)) * (2.0 / n) \
            + damping * v

    delta = _conjugate_gradient(gn, -grad, options.iterations)
    fit_before, held_before = float(np.mean(residual ** 2)), _loss(backend, model, xh, yh)
    def step(alpha):
        moved = (w + s for w, s in zip(weights[layer - 1], _unflat(alpha * delta, shapes)))
        backend.set_weights(clone, _with_layer(weights, layer, moved))

    best = (fit_before, 0.0)
    for alpha in options.steps:
        step(alpha)
        best = min(best, (_loss(backend, clone, xf, yf), alpha))
    step(best[1])
    held_after = _loss(backend, clone, xh, yh)
    return {"fit_loss_before": fit_before, "fit_loss_after": best[0], "step": best[1],
            "held_loss_before": held_before, "held_loss_after": held_after,
            "gradient_norm": float(np.linalg.norm(grad)),
            "score": (held_before - held_after) / held_before if held_before > 0 else 0.0}


@_recommender("gauss-newton", GaussNewtonOptions)
def gauss_newton_recommender(model: Model, base_ds, target_ds, layers, options=None,
                             **kwargs) -> xr.Dataset:
    """Held-out loss decrease of one Gauss–Newton step restricted to each layer.

    On the target set (its last ``held_out`` part held out), with the MSE loss
    ``L = mean(r²)``, ``r`` the residual of the base network's normalized output:
    the step ``δ`` solves ``(JᵀJ·2/N + λ) δ = −∇L`` by ``iterations`` conjugate-gradient
    steps (``J`` the Jacobian of the output with respect to the layer's weights, applied
    matrix-free by the backend's ``jvp``/``vjp``); the step length is the best of
    ``steps`` on the fitted part. ``score(l) = (L_held(θ) − L_held(θ + αδ)) / L_held(θ)``,
    the fraction of the held-out loss that one second-order step on layer ``l``
    removes. The step is invariant to the scale of the weights, the fit and the
    score are on different samples, and the score cannot exceed 1, so a layer's size
    alone does not decide.

    Parameters as in :func:`spectral_recommender` (``base_ds`` is not used), the
    options being those of :class:`GaussNewtonOptions`.

    Returns
    -------
    xarray.Dataset
        ``score`` and the evidence over ``layer``: ``fit_loss_before``/``_after``,
        ``held_loss_before``/``_after``, ``step``, ``gradient_norm``.

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option); a target set too small to hold part of it out.
    """
    opts = GaussNewtonOptions.merge(options, **kwargs)
    backend = get_backend(model.backend)
    x, y = _normalized(model, target_ds, opts.max_samples)
    n_held = _held_out(len(x), opts.held_out, "")
    fit, held = (x[:-n_held], y[:-n_held]), (x[-n_held:], y[-n_held:])
    clone = backend.clone(model)
    rows = [_gauss_newton_layer(backend, model, clone, fit, held, k, opts) for k in layers]
    out = xr.Dataset({key: ("layer", np.array([r[key] for r in rows], float))
                      for key in rows[0]}, coords={"layer": layers})
    out["score"].attrs = {"long_name": "held-out relative loss decrease of one Gauss-Newton "
                                       "step on the layer", "units": "1"}
    out.attrs = {"formula": "score = (L_held(theta) - L_held(theta + a delta)) / "
                            "L_held(theta), delta = CG solution of (J^T J 2/N + damping) "
                            "delta = -grad L on the fitted part",
                 "iterations": opts.iterations, "held_out": opts.held_out,
                 "damping": opts.damping}
    return out


# --------------------------------------------------------------------- probe
def extrapolate_loss(curve, horizon: int, rates=None) -> dict:
    """Extrapolate a loss curve ``L(e)``, ``e = 1..E``, to epoch ``horizon``.

    Fits ``L(e) = L∞ + A rᵉ`` with ``A ≥ 0`` and ``r`` in ``rates`` (linear least
    squares for ``L∞, A`` at each ``r``; the best fit wins) and predicts
    ``min(L(horizon), min observed)``. A curve that does not decay (no fit with
    ``A ≥ 0``) or has fewer than 3 points predicts its minimum.

    Parameters
    ----------
    curve : sequence of float
        Loss after each epoch.
    horizon : int
        The epoch to predict (≥ ``len(curve)``).
    rates : sequence of float, optional
        Candidate decay factors in (0, 1) (default 0.05, 0.06, ..., 0.99).

    Returns
    -------
    dict
        ``loss`` (the prediction), ``asymptote`` (``L∞``), ``amplitude`` (``A``),
        ``rate`` (``r``); NaN parameters when no fit was made.
    """
    curve = np.asarray(curve, dtype=np.float64)
    if curve.ndim != 1 or not len(curve) or not np.isfinite(curve).all():
        raise ValueError("curve must be a non-empty 1-D sequence of finite losses")
    horizon = check_int(horizon, "horizon", minimum=1)
    observed = float(curve.min())
    none = {"loss": observed, "asymptote": math.nan, "amplitude": math.nan, "rate": math.nan}
    if len(curve) < 3:
        return none
    rates = np.round(np.arange(0.05, 0.995, 0.01), 2) if rates is None else np.asarray(rates)
    epochs = np.arange(1, len(curve) + 1)
    best = None
    for r in rates:
        design = np.column_stack([np.ones(len(epochs)), r ** epochs])
        (asymptote, amplitude), *_ = np.linalg.lstsq(design, curve, rcond=None)
        if amplitude < 0:
            continue
        sse = float(np.sum((design @ [asymptote, amplitude] - curve) ** 2))
        if best is None or sse < best[0]:
            best = (sse, asymptote, amplitude, r)
    if best is None:
        return none
    _, asymptote, amplitude, r = best
    predicted = asymptote + amplitude * r ** max(horizon, len(curve))
    return {"loss": float(min(predicted, observed)), "asymptote": float(asymptote),
            "amplitude": float(amplitude), "rate": float(r)}


@_recommender("probe", ProbeOptions)
def probe_recommender(model: Model, base_ds, target_ds, layers, options=None,
                      **kwargs) -> xr.Dataset:
    """Re-train every candidate for a few epochs and extrapolate its validation loss.

    Each layer is re-trained alone (:func:`xtl.transfer`, one seed) for ``epochs``
    epochs on the target set, its last ``validation`` part held out; the
    validation-loss curve is extrapolated to ``horizon`` epochs
    (:func:`extrapolate_loss`). ``score(l) = 1 − L_pred(l) / L_0``, the fraction of the
    base network's validation loss ``L_0`` that re-training ``l`` is predicted to
    remove.

    Parameters as in :func:`spectral_recommender` (``base_ds`` is not used), the
    options being those of :class:`ProbeOptions`.

    Returns
    -------
    xarray.Dataset
        ``score``, ``predicted_loss``, ``probe_loss`` (the last probe epoch's),
        ``asymptote``, ``rate`` over ``layer``; ``val_loss(layer, epoch)``; scalar
        ``base_val_loss``.

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option); a target set too small to hold part of it out.
    """
    opts = ProbeOptions.merge(options, **kwargs)
    epochs, horizon = opts.epochs, opts.horizon
    check_model_data(model, target_ds, "target_ds")
    n = variable_samples(target_ds, model.variables)
    n_val = _held_out(n, opts.validation, " for validation")
    fit_part = stack_samples(target_ds, np.arange(n - n_val), model.variables)
    val_part = stack_samples(target_ds, np.arange(n - n_val, n), model.variables)
    x, y = _normalized(model, val_part)
    backend = get_backend(model.backend)
    base_loss = _loss(backend, model, x, y)
    curves, fits = [], []
    for k in layers:
        tl = transfer(model, fit_part, [k], validation=val_part, epochs=epochs,
                      batch_size=opts.batch_size, learning_rate=opts.learning_rate,
                      seed=opts.seed, progress=False)
        curve = tl.history["val_loss"].values
        curves.append(curve)
        fits.append(extrapolate_loss(curve, horizon))
    predicted = np.array([f["loss"] for f in fits])
    out = xr.Dataset(
        {"score": ("layer", 1 - predicted / base_loss,
                   {"long_name": "predicted fraction of the base network's validation loss "
                                 "removed by re-training the layer", "units": "1"}),
         "predicted_loss": ("layer", predicted, {"long_name": f"validation loss "
                                                 f"extrapolated to epoch {horizon}"}),
         "probe_loss": ("layer", np.array([c[-1] for c in curves]),
                        {"long_name": f"validation loss after {epochs} probe epochs"}),
         "asymptote": ("layer", np.array([f["asymptote"] for f in fits])),
         "rate": ("layer", np.array([f["rate"] for f in fits])),
         "val_loss": (("layer", "epoch"), np.array(curves),
                      {"long_name": "validation loss of the probe"}),
         "base_val_loss": ((), base_loss, {"long_name": "validation loss of the base "
                                           "network"})},
        coords={"layer": layers, "epoch": np.arange(1, epochs + 1)})
    out.attrs = {"formula": f"score = 1 - L_pred/L_0, L_pred the validation loss of a "
                            f"{epochs}-epoch re-training extrapolated to epoch {horizon} "
                            "(L = L_inf + A r^e)", "epochs": epochs, "horizon": horizon}
    return out


# ------------------------------------------------------------- gradient norm
@_recommender("gradient-norm", GradientNormOptions)
def gradient_norm_recommender(model: Model, base_ds, target_ds, layers, options=None,
                              **kwargs) -> xr.Dataset:
    """Relative gradient norm at the base weights (Auto-RGN, Lee et al., ICLR 2023).

    ``score(l) = ‖∇_{θ_l} L‖ / ‖θ_l‖`` with ``L`` the MSE of the base network on the
    target set. A reference: it needs one backward pass, and nothing corrects for
    how much of the gradient a re-training can turn into a lower loss.

    Parameters as in :func:`spectral_recommender` (``base_ds`` is not used), the
    options being those of :class:`GradientNormOptions`.

    Returns
    -------
    xarray.Dataset
        ``score``, ``gradient_norm`` and ``weight_norm`` over ``layer``.

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option).
    """
    opts = GradientNormOptions.merge(options, **kwargs)
    batch_size = opts.batch_size
    backend = get_backend(model.backend)
    x, y = _normalized(model, target_ds, opts.max_samples)
    residual = backend.predict_normalized(model, x, batch_size=batch_size) - y
    weights = backend.get_weights(model)
    grads = [np.linalg.norm(_flat(backend.vjp(model, x, k, residual, batch_size=batch_size)))
             * 2.0 / y.size for k in layers]
    norms = [np.linalg.norm(_flat(weights[k - 1])) for k in layers]
    out = xr.Dataset({"gradient_norm": ("layer", np.array(grads)),
                      "weight_norm": ("layer", np.array(norms))}, coords={"layer": layers})
    out["score"] = (out.gradient_norm / out.weight_norm).assign_attrs(
        long_name="relative gradient norm |grad_l L| / |theta_l|", units="1")
    out.attrs = {"formula": "score = |grad_l L| / |theta_l| at the base weights"}
    return out


# ------------------------------------------------------------- halving
def successive_halving(train_more, layers, epochs: int, eta: int) -> dict:
    """Successive halving over candidate layers, given a way to train each one further.

    Every candidate is trained ``epochs`` epochs; the ``1/eta`` of them with the lowest
    validation loss so far (ties to the shallower layer) go on, each round ``eta``
    times longer than the last, until one is left.

    Parameters
    ----------
    train_more : callable
        ``train_more(layer, n)`` trains ``layer`` ``n`` epochs further and returns the
        ``n`` validation losses of those epochs.
    layers : sequence of int
        The candidates (at least one).
    epochs : int
        Epochs of the first round (>= 1).
    eta : int
        The factor by which each round cuts the candidates and stretches the epochs (>= 2).

    Returns
    -------
    dict
        ``best_loss`` ({layer: lowest validation loss seen}), ``epochs`` ({layer:
        epochs trained}), ``rounds`` ({layer: rounds survived}), ``winner`` and
        ``layer_epochs`` (the total epochs trained, the method's cost).
    """
    epochs, eta = check_int(epochs, "epochs", minimum=1), check_int(eta, "eta", minimum=2)
    survivors = [int(k) for k in layers]
    if not survivors:
        raise ValueError("layers must hold at least one candidate layer, got []")
    best = dict.fromkeys(survivors, math.inf)
    trained, rounds = dict.fromkeys(survivors, 0), dict.fromkeys(survivors, 0)
    budget = epochs
    while True:
        for k in survivors:
            losses = np.asarray(train_more(k, budget), dtype=np.float64)
            best[k] = min(best[k], float(np.min(losses)))
            trained[k] += budget
            rounds[k] += 1
        if len(survivors) == 1:
            break
        survivors = sorted(survivors, key=lambda k: (best[k], k))[:math.ceil(len(survivors) / eta)]
        if len(survivors) == 1:
            break
        budget *= eta
    return {"best_loss": best, "epochs": trained, "rounds": rounds, "winner": survivors[0],
            "layer_epochs": int(sum(trained.values()))}


@_recommender("halving", HalvingOptions)
def halving_recommender(model: Model, base_ds, target_ds, layers, options=None,
                        **kwargs) -> xr.Dataset:
    """Successive halving over the candidate layers (Li et al., JMLR 2018): training decides.

    Every candidate is re-trained alone (:func:`xtl.transfer`, one seed) for
    ``epochs`` epochs on the target set, its last ``validation`` part held out; the
    ``1/eta`` with the lowest validation loss go on for ``eta`` times as many epochs,
    continuing from their weights (a fresh optimizer each round), until one is
    left (:func:`successive_halving`). ``score(l) = 1 − L_min(l) / L_0``, with
    ``L_min(l)`` the lowest validation loss layer ``l`` reached and ``L_0`` the base
    network's: a layer dropped earlier has a higher ``L_min`` than every survivor, so
    the scores order the layers as the rounds did. With ``n`` candidates the cost is
    about ``epochs · n · log_eta(n)`` layer-epochs (6 layers, 2 epochs, eta 2: 40).

    Parameters as in :func:`spectral_recommender` (``base_ds`` is not used), the
    options being those of :class:`HalvingOptions`.

    Returns
    -------
    xarray.Dataset
        ``score``, ``best_val_loss``, ``epochs_trained``, ``rounds`` over ``layer``;
        scalars ``base_val_loss`` and ``sample_epochs`` (samples × epochs trained and
        validated: the cost).

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option); a target set too small to hold part of it out.
    """
    opts = HalvingOptions.merge(options, **kwargs)
    check_model_data(model, target_ds, "target_ds")
    n = variable_samples(target_ds, model.variables)
    n_val = _held_out(n, opts.validation, " for validation")
    fit_part = stack_samples(target_ds, np.arange(n - n_val), model.variables)
    val_part = stack_samples(target_ds, np.arange(n - n_val, n), model.variables)
    base_loss = _loss(get_backend(model.backend), model, *_normalized(model, val_part))
    current = {int(k): model for k in layers}

    def train_more(layer, epochs):
        current[layer] = transfer(current[layer], fit_part, [layer], validation=val_part,
                                  epochs=epochs, batch_size=opts.batch_size,
                                  learning_rate=opts.learning_rate, seed=opts.seed,
                                  progress=False)
        return current[layer].history["val_loss"].values

    run = successive_halving(train_more, layers, opts.epochs, opts.eta)
    best = np.array([run["best_loss"][int(k)] for k in layers])
    out = xr.Dataset(
        {"score": ("layer", 1 - best / base_loss, {
            "long_name": "fraction of the base network's validation loss removed by the "
                         "layer's re-training within successive halving", "units": "1"}),
         "best_val_loss": ("layer", best, {"long_name": "lowest validation loss reached"}),
         "epochs_trained": ("layer", np.array([run["epochs"][int(k)] for k in layers])),
         "rounds": ("layer", np.array([run["rounds"][int(k)] for k in layers])),
         "base_val_loss": ((), base_loss),
         "sample_epochs": ((), float(run["layer_epochs"] * n), {
             "long_name": "samples trained and validated on, summed over epochs"})},
        coords={"layer": layers})
    out.attrs = {"formula": f"score = 1 - L_min/L_0 within successive halving ({opts.epochs} "
                            f"epochs, then x{opts.eta} per round, 1/{opts.eta} kept)",
                 "epochs": opts.epochs, "eta": opts.eta, "winner": run["winner"]}
    return out


# ---------------------------------------------------------------- ntk
def kernel_ridge_loo(kernel, residual, ridge: float) -> float:
    """Mean squared leave-one-out error of kernel ridge regression, in closed form.

    With ``G = K + λI`` and ``α = G⁻¹ r``, the error at point ``i`` of the fit on every
    other point is ``α_i / (G⁻¹)_ii`` (no refits).

    Parameters
    ----------
    kernel : array_like
        ``K``, symmetric positive semi-definite, ``(n, n)``.
    residual : array_like
        ``r``, the targets, ``(n,)``.
    ridge : float
        ``λ`` (> 0).

    Returns
    -------
    float
        ``mean_i (α_i / (G⁻¹)_ii)²``.
    """
    K = np.asarray(kernel, dtype=np.float64)
    r = np.asarray(residual, dtype=np.float64)
    if K.ndim != 2 or K.shape != (len(r), len(r)):
        raise ValueError(f"kernel must be (n, n) with n = len(residual) = {len(r)}, "
                         f"got {K.shape}")
    ridge = check_float(ridge, "ridge", positive=True)
    inverse = np.linalg.inv(K + ridge * np.eye(len(r)))
    return float(np.mean((inverse @ r / np.diag(inverse)) ** 2))


def _tangent_kernel(backend, model, x, points, layer) -> np.ndarray:
    """The empirical tangent kernel ``J Jᵀ`` of ``layer`` 's weights at output ``points``
    ``(sample, y, x, channel)`` (one backward pass per point)."""
    rows = []
    for s, i, j, c in points:
        cotangent = np.zeros((1,) + x.shape[1:3] + (model.spec.output_channels,), np.float32)
        cotangent[0, i, j, c] = 1.0
        rows.append(_flat(backend.vjp(model, x[s:s + 1], layer, cotangent)))
    jacobian = np.array(rows)
    return jacobian @ jacobian.T


@_recommender("ntk", NtkOptions)
def ntk_recommender(model: Model, base_ds, target_ds, layers, options=None,
                    **kwargs) -> xr.Dataset:
    """Linearized re-training of each layer, scored out of sample (empirical-NTK ridge).

    At ``n_points`` output points drawn from the target set (sample, pixel, channel)
    the residual ``r = y − f(x)`` of the base network is regressed on the empirical
    tangent kernel of the layer's weights, ``K_l = J_l J_lᵀ`` (``J_l`` the Jacobian
    of those outputs with respect to the layer's kernel and bias): kernel ridge
    regression with ``λ = ρ · mean(diag K_l)``, ``ρ`` the one of ``ridges`` with the
    lowest leave-one-out error. ``score(l) = 1 − LOO_l / mean(r²)``, the fraction of
    the base network's error at unseen points that re-training ``l`` in its
    linearized (kernel) regime removes (Malladi et al., ICML 2023); the
    leave-one-out error is :func:`kernel_ridge_loo`, exact without refits. The
    relative ridge makes the score independent of the weights' scale.

    Parameters as in :func:`spectral_recommender` (``base_ds`` is not used), the
    options being those of :class:`NtkOptions`.

    Returns
    -------
    xarray.Dataset
        ``score``, ``loo_error``, ``ridge`` (the ``ρ`` chosen) and ``kernel_trace``
        over ``layer``; scalars ``residual_power`` (``mean(r²)``) and
        ``sample_epochs`` (backward passes of one sample, over the layers: the cost).

    Raises
    ------
    TypeError, ValueError
        An unknown option (the message lists the valid names) or a bad value (the
        message names the option).
    """
    opts = NtkOptions.merge(options, **kwargs)
    backend = get_backend(model.backend)
    x, y = _normalized(model, target_ds, opts.max_samples)
    rng = np.random.default_rng(opts.seed)
    flat = rng.choice(y.size, size=min(opts.n_points, y.size), replace=False)
    points = np.stack(np.unravel_index(flat, y.shape), axis=1)
    residual = (y - backend.predict_normalized(model, x)).reshape(-1)[flat].astype(np.float64)
    power = float(np.mean(residual ** 2))
    rows = []
    for k in layers:
        K = _tangent_kernel(backend, model, x, points, k)
        scale = float(np.mean(np.diag(K))) or 1.0
        loo = [kernel_ridge_loo(K, residual, rho * scale) for rho in opts.ridges]
        i = int(np.argmin(loo))
        rows.append((loo[i], opts.ridges[i], float(np.trace(K))))
    loo, ridge, trace = (np.array(v) for v in zip(*rows))
    out = xr.Dataset(
        {"score": ("layer", 1 - loo / power, {
            "long_name": "fraction of the base network's error at held-out points removed "
                         "by linearized re-training of the layer", "units": "1"}),
         "loo_error": ("layer", loo), "ridge": ("layer", ridge), "kernel_trace": ("layer", trace),
         "residual_power": ((), power),
         "sample_epochs": ((), float(len(points) * len(layers)))},
        coords={"layer": layers})
    out.attrs = {"formula": "score = 1 - LOO/mean(r^2), LOO the leave-one-out error of kernel "
                            "ridge regression of the residual on the layer's empirical tangent "
                            "kernel J J^T", "n_points": len(points)}
    return out


# --------------------------------------------------------------- prior
def prior_scores(sweeps, layers, *, strength: float = 1.0, metric: str = "cc") -> xr.Dataset:
    """The layers' regrets over stored sweeps, averaged toward their grand mean.

    For each layer ``l`` with regrets ``ρ_l,i`` (:func:`layer_regrets`) in the ``n_l``
    sweeps that re-trained it and have a regret, and ``ρ̄`` the mean regret of every
    layer in every sweep: ``ρ̂_l = (Σ_i ρ_l,i + s ρ̄) / (n_l + s)`` (a Bayesian average,
    ``s`` pseudo-sweeps at the grand mean), ``score(l) = −ρ̂_l``. A layer no sweep
    re-trained gets ``ρ̄``.

    Parameters
    ----------
    sweeps : sequence of xarray.Dataset
        Single-layer sweeps (:func:`xtl.layer_sweep`), of any network depth.
    layers : sequence of int
        The candidate layers.
    strength : float
        ``s`` (> 0).
    metric : str
        The sweeps' skill (default ``"cc"``).

    Returns
    -------
    xarray.Dataset
        ``score``, ``expected_regret`` (``ρ̂``), ``mean_regret`` and ``n_sweeps`` over
        ``layer``; scalar ``grand_mean_regret``.

    Raises
    ------
    ValueError
        No sweep with a regret (every one lacks a layer better than its base network).
    """
    strength = check_float(strength, "strength", positive=True)
    regrets = [layer_regrets(s, metric) for s in sweeps]
    regrets = [r for r in regrets if np.isfinite(r.values).all()]
    if not regrets:
        raise ValueError("sweeps must hold at least one sweep in which some layer beats the "
                         f"base network (a regret to learn from); got {len(sweeps)} without")
    grand = float(np.mean(np.concatenate([r.values for r in regrets])))
    total = np.array([sum(float(r.sel(layer=k)) for r in regrets if k in r.layer) for k in layers])
    count = np.array([sum(k in r.layer for r in regrets) for k in layers])
    expected = (total + strength * grand) / (count + strength)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return xr.Dataset(
        {"score": ("layer", -expected, {"long_name": "minus the expected regret", "units": "1"}),
         "expected_regret": ("layer", expected), "mean_regret": ("layer", mean),
         "n_sweeps": ("layer", count), "grand_mean_regret": ((), grand)},
        coords={"layer": list(layers)},
        attrs={"formula": f"score = -(sum of regrets + s * grand mean) / (n + s), s = {strength}"})


def _stored_sweeps(paths) -> list:
    """The single-layer sweeps stored at ``paths`` (a budget sweep gives one per budget)."""
    from ..data.netcdf import load_dataset
    from ..nn.sweep import split_budgets

    sweeps = []
    for path in paths:
        ds = load_dataset(path)
        sweeps += split_budgets(ds) if "budget" in ds.dims else [ds]
    return sweeps


@_recommender("prior", PriorOptions)
def prior_recommender(model: Model, base_ds, target_ds, layers, options=None,
                      **kwargs) -> xr.Dataset:
    """The constant learned from stored sweeps: the layer with the lowest expected regret.

    Reads the single-layer sweeps named by ``sweeps`` (netCDF files of
    :func:`xtl.layer_sweep` or :func:`xtl.budget_sweep`, one sweep per budget) and
    scores the layers by :func:`prior_scores`. Neither the model's weights nor the
    data are used: a user's own history is the evidence, and the recommendation
    costs nothing.

    Parameters as in :func:`spectral_recommender`, the options being those of
    :class:`PriorOptions`.

    Returns
    -------
    xarray.Dataset
        As :func:`prior_scores`, with scalar ``sample_epochs`` (0).

    Raises
    ------
    ValueError
        No ``sweeps`` given (the prior has nothing to learn from), or none with a regret.
    """
    opts = PriorOptions.merge(options, **kwargs)
    if not opts.sweeps:
        raise ValueError("sweeps must name at least one stored sweep file (the prior learns "
                         "which layer to re-train from them), got (); e.g. "
                         "sweeps=['study/results/sweep-kf8.nc']")
    out = prior_scores(_stored_sweeps(opts.sweeps), layers, strength=opts.strength,
                       metric=opts.metric)
    out["sample_epochs"] = ((), 0.0)
    out.attrs["sweeps"] = [str(p) for p in opts.sweeps]
    return out


# --------------------------------------------------------------- comparison
def _spearman(a, b):
    """Spearman rank correlation and its p-value (NaN when either input is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def _sweep_skill(sweep: xr.Dataset, metric: str) -> tuple:
    """``(mean skill over layer, best-set mask or None, higher_is_better)`` of a sweep."""
    from ..nn.sweep import LOWER_IS_BETTER, best_set

    if metric not in sweep.data_vars:
        have = sorted(v for v in sweep.data_vars if "layer" in sweep[v].dims)
        raise ValueError(f"metric must name a variable of sweep over 'layer'; got {metric!r}, "
                         f"sweep has {have}")
    da = sweep[metric]
    higher = metric not in LOWER_IS_BETTER
    if da.dims == ("layer", "seed"):
        stats = best_set(da)
        return da.mean("seed"), stats["in_best_set"], higher
    if da.dims == ("layer",):
        return da, None, higher
    raise ValueError(f"sweep[{metric!r}] must be over ('layer', 'seed') or ('layer',), got "
                     f"{da.dims} (select one budget of a budget sweep first)")


def _comparable_layers(recommendation, sweep) -> tuple:
    """``(common layers, recommended layers)`` of a recommendation and a single-layer sweep.

    Raises
    ------
    TypeError, ValueError
        As :func:`compare_recommendation` does for its inputs.
    """
    if not isinstance(recommendation, xr.Dataset) or "score" not in recommendation \
            or "layer" not in recommendation.dims:
        raise TypeError("recommendation must be the Dataset of recommend_layers, with "
                        "'score' over 'layer'")
    if not isinstance(sweep, xr.Dataset):
        raise TypeError(f"sweep must be the Dataset of layer_sweep, got {type(sweep).__name__}")
    if "layer" not in sweep.dims:
        raise ValueError("sweep must be a single-layer sweep over 'layer' (layer_sweep with "
                         f"pairs=False); its dims are {dict(sweep.sizes)}")
    common = np.intersect1d(recommendation["layer"].values, sweep["layer"].values)
    if len(common) < 2:
        raise ValueError(
            "recommendation and sweep must share at least 2 layers to compare rankings; "
            f"recommendation has {recommendation['layer'].values.tolist()}, sweep has "
            f"{sweep['layer'].values.tolist()}")
    recommended = [int(x) for x in np.atleast_1d(
        recommendation["recommended"].values if "recommended" in recommendation
        else recommendation.attrs.get("recommended", []))]
    if not recommended:
        raise ValueError("recommendation holds no 'recommended' layer")
    missing = [x for x in recommended if x not in common]
    if missing:
        raise ValueError(f"sweep did not re-train the recommended layer(s) {missing}; it has "
                         f"{sweep['layer'].values.tolist()}")
    return common, recommended


def _bnn_skill(sweep: xr.Dataset, metric: str) -> float:
    """The base network's ``metric`` on the sweep's test data (``base_<metric>``).

    Raises
    ------
    ValueError
        The sweep does not hold ``base_<metric>``.
    """
    name = f"base_{metric}"
    if name not in sweep:
        raise ValueError(f"sweep must hold {name!r}, the base network's {metric} on the "
                         "sweep's test data (layer_sweep stores it), to measure regret; it "
                         f"has {sorted(v for v in sweep.data_vars if v.startswith('base_'))}")
    return float(sweep[name])


def _regret_of(skill, bnn_skill: float) -> np.ndarray:
    """Regret of every entry of ``skill`` (higher = better) against its best and the BNN."""
    skill = np.asarray(skill, dtype=np.float64)
    best = float(np.max(skill))
    if not best > bnn_skill:
        return np.full(skill.shape, math.nan)
    return np.clip((best - skill) / (best - bnn_skill), 0.0, 1.0)


def layer_regrets(sweep: xr.Dataset, metric: str = "cc") -> xr.DataArray:
    """The regret of re-training each layer of a single-layer sweep.

    ``regret(l) = (m_best − m_l) / (m_best − m_BNN)`` with ``m_l`` the mean of
    ``metric`` over the seeds of layer ``l`` (signs flipped for a lower-is-better
    metric), ``m_best`` the best layer's and ``m_BNN`` the base network's
    (``base_<metric>``), capped to ``[0, 1]``: 0 is the best layer, 1 no better than
    not re-training. All NaN when no layer beats the base network (nothing to lose).

    Parameters
    ----------
    sweep : xarray.Dataset
        From :func:`xtl.layer_sweep` (``pairs=False``): ``metric`` over
        ``(layer, seed)`` or ``(layer,)`` and ``base_<metric>``.
    metric : str
        The sweep's skill (default ``"cc"``).

    Returns
    -------
    xarray.DataArray
        Over ``layer``, in ``[0, 1]`` (or all NaN).

    Raises
    ------
    TypeError, ValueError
        Not a single-layer sweep; ``metric`` or ``base_<metric>`` missing.
    """
    if not isinstance(sweep, xr.Dataset) or "layer" not in sweep.dims:
        raise TypeError("sweep must be the Dataset of layer_sweep (pairs=False), over 'layer'")
    mean, _, higher = _sweep_skill(sweep, metric)
    sign = 1.0 if higher else -1.0
    values = _regret_of(sign * mean.values, sign * _bnn_skill(sweep, metric))
    return xr.DataArray(values, dims="layer", coords={"layer": sweep["layer"].values},
                        name="regret", attrs={
                            "long_name": f"share of the best layer's gain in {metric} over "
                                         "the base network given up", "units": "1"})


def regret(sweep: xr.Dataset, layer: int, metric: str = "cc") -> float:
    """The regret of re-training ``layer``, measured on a single-layer sweep.

    ``(m_best − m_layer) / (m_best − m_BNN)``, means over seeds, capped to
    ``[0, 1]``; NaN when no layer beats the base network (see
    :func:`layer_regrets`).

    Parameters
    ----------
    sweep : xarray.Dataset
        From :func:`xtl.layer_sweep` (``pairs=False``).
    layer : int
        A layer the sweep re-trained.
    metric : str
        The sweep's skill (default ``"cc"``).

    Raises
    ------
    ValueError
        A layer the sweep did not re-train (the message lists those it did); the
        errors of :func:`layer_regrets`.
    """
    regrets = layer_regrets(sweep, metric)
    have = regrets["layer"].values.tolist()
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or layer not in have:
        raise ValueError(f"layer must be a layer the sweep re-trained, one of {have}; "
                         f"got {layer!r}")
    return float(regrets.sel(layer=layer))


def _kendall(a, b) -> float:
    """Kendall's tau-b of ``a`` against ``b`` (NaN when either is constant)."""
    from scipy.stats import kendalltau

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0 or not np.isfinite(a).all():
        return float("nan")
    return float(kendalltau(a, b).statistic)


def compare_recommendation(recommendation, sweep, *, metric: str = "cc") -> xr.Dataset:
    """How well a recommendation predicted a measured single-layer sweep.

    Parameters
    ----------
    recommendation : xarray.Dataset
        From :func:`recommend_layers`.
    sweep : xarray.Dataset
        From :func:`xtl.layer_sweep` (``pairs=False``): ``metric`` over
        ``(layer, seed)`` (or over ``layer`` alone, a single run per layer).
    metric : str
        The sweep's skill (default ``"cc"``; lower is better for ``rel_l2``,
        ``spectrum_error`` and the losses).

    Returns
    -------
    xarray.Dataset
        Over the ``layer`` s both hold: ``score``, ``mean_skill`` (the metric's mean
        over seeds), ``predicted_rank`` and ``measured_rank`` (by mean skill, 1 =
        best, ties share the best rank), ``in_best_set`` (the sweep's best set by
        :func:`xtl.nn.sweep.best_set`; only the best layer for a single-seed sweep);
        scalars ``hit`` (the top recommendation is in the best set),
        ``recommended_rank`` (its measured rank), ``spearman`` and
        ``spearman_pvalue`` (score against skill, +1 = perfect order), ``tau``
        (Kendall's τ-b of score against mean skill; NaN when either is constant),
        ``regret`` (of the top recommendation, :func:`layer_regrets`: 0 = the best
        layer, 1 = no better than the base network; NaN when no layer beats it),
        ``best_measured_layer`` and ``cost_ratio`` (the recommendation's seconds over
        the summed training seconds of the sweep's single-layer re-trainings; NaN
        when either is unknown). ``attrs`` repeat the scalars and the method.

    Raises
    ------
    TypeError, ValueError
        Not Datasets; a pair sweep; ``metric`` or ``base_<metric>`` missing; fewer
        than 2 common layers; a recommended layer that the sweep did not re-train.
    """
    from scipy.stats import rankdata

    common, recommended = _comparable_layers(recommendation, sweep)
    mean, in_set, higher = _sweep_skill(sweep.sel(layer=common), metric)
    value = mean.values.astype(float)
    if not np.isfinite(value).all():
        raise ValueError(f"sweep[{metric!r}] holds NaN or inf")
    skill = value if higher else -value
    score = recommendation["score"].sel(layer=common).values.astype(float)
    measured = rankdata(-skill, method="min").astype(np.int64)
    best = int(common[np.lexsort((common, -skill))[0]])
    in_set = (common == best) if in_set is None else in_set.values.astype(bool)
    top = recommended[0]
    i_top = int(np.flatnonzero(common == top)[0])
    hit, top_rank = bool(in_set[i_top]), int(measured[i_top])
    rho, pvalue = _spearman(score, skill)
    tau = _kendall(score, skill)
    top_regret = float(layer_regrets(sweep.sel(layer=common), metric).values[i_top])
    seconds = float(recommendation["seconds"]) if "seconds" in recommendation else math.nan
    trainings = float(sweep["train_seconds"].sum()) if "train_seconds" in sweep else math.nan
    cost = seconds / trainings if trainings > 0 else math.nan
    out = xr.Dataset(
        {
            "score": ("layer", score, {"long_name": "recommendation score", "units": "1"}),
            "mean_skill": ("layer", value, {"long_name": f"mean {metric} over seeds"}),
            "predicted_rank": ("layer", _rank_desc(score, common),
                               {"long_name": "rank by score (1 = recommended first)"}),
            "measured_rank": ("layer", measured, {
                "long_name": f"rank by mean {metric} ({'higher' if higher else 'lower'} is "
                             "better; 1 = best, ties share the best rank)"}),
            "in_best_set": ("layer", in_set, {"long_name": "not significantly worse than the "
                                              "best layer"}),
            "hit": ((), hit, {"long_name": "the top recommendation is in "
                                                 "the sweep's best set"}),
            "recommended_rank": ((), top_rank, {
                "long_name": "measured rank of the top recommendation"}),
            "spearman": ((), rho, {"long_name": f"Spearman correlation of score and "
                                   f"{'' if higher else 'minus '}mean {metric}"}),
            "spearman_pvalue": ((), pvalue, {"long_name": "two-sided p-value of spearman"}),
            "tau": ((), tau, {"long_name": f"Kendall's tau-b of score and "
                              f"{'' if higher else 'minus '}mean {metric}", "units": "1"}),
            "regret": ((), top_regret, {
                "long_name": "share of the best layer's gain over the base network given "
                             "up by the top recommendation", "units": "1"}),
            "best_measured_layer": ((), best, {"long_name": f"best mean {metric}"}),
            "cost_ratio": ((), cost, {"long_name": "recommendation time / summed sweep "
                                      "training time", "units": "1"}),
        },
        coords={"layer": common},
    )
    out.attrs = {"metric": metric, "method": recommendation.attrs.get("method", "unknown"),
                 "recommended": top, "hit": int(hit), "recommended_rank": top_rank,
                 "spearman": rho, "tau": tau, "regret": top_regret,
                 "best_measured_layer": best, "cost_ratio": cost}
    return out
