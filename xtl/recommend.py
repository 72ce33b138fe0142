"""Which layer(s) of a base network to re-train for a target flow, before re-training.

Several recommenders answer the same question from different evidence, and all
return one schema, so they can be measured against the same seed-resolved sweep
(:func:`compare_recommendation`):

* ``"spectral"`` -- the physics-guided framework of Subel et al. (PNAS Nexus
  2023): where the flows' spectra differ, how strongly each layer's activations
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

Recommenders are registered by name (:func:`register_recommender`). Each is a
function ``f(model, base_ds, target_ds, layers, **options) -> xarray.Dataset``
returning ``score(layer)`` (higher is better) and the evidence behind it, with
the formula in ``attrs["formula"]``; :func:`recommend_layers` adds the rank, the
recommendation, the method and the time it took.

``target_ds`` is what a user has before re-training: the small target set that
transfer learning will use. Nothing about any particular flow is built in.
"""
from __future__ import annotations

import math
import numbers
import time

import numpy as np
import xarray as xr

from .backends import INPUTS, OUTPUT, Model, check_layers, get_backend, model_id, \
    model_to_dataset
from .backends.base import stack_inputs
from .explain import (
    activation_spectra,
    check_pair_datasets,
    filter_profile,
    flow_difference,
    spectral_distance,
)
from .spectral import spectrum
from .training import check_les_dataset, count_samples, sample_fields, transfer

__all__ = [
    "recommend_layers",
    "register_recommender",
    "available_recommenders",
    "recommender",
    "recommended_layers",
    "compare_recommendation",
    "extrapolate_loss",
    "DEFAULT_METHOD",
]

#: The method :func:`recommend_layers` uses by default (the best one in the study of
#: ``examples/study.toml``; see docs/explaining.md).
DEFAULT_METHOD = "probe"

_RECOMMENDERS: dict = {}


# ------------------------------------------------------------------ registry
def register_recommender(name: str, func, *, overwrite: bool = False) -> None:
    """Register a recommender under ``name``.

    Parameters
    ----------
    name : str
    func : callable
        ``func(model, base_ds, target_ds, layers, **options) -> xarray.Dataset`` with
        ``score`` over ``layer`` (higher = better to re-train) and its evidence;
        ``attrs["formula"]`` says how the score is made.
    overwrite : bool
        Replace an existing registration.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if not callable(func):
        raise TypeError(f"func must be callable, got {type(func).__name__}")
    if name in _RECOMMENDERS and not overwrite:
        raise ValueError(f"a recommender {name!r} is registered already; pass overwrite=True")
    _RECOMMENDERS[name] = func


def available_recommenders() -> list:
    """Names of the registered recommenders."""
    return sorted(_RECOMMENDERS)


def recommender(name: str):
    """The function registered as ``name``.

    Raises
    ------
    ValueError
        An unknown name (the message lists the registered ones).
    """
    if name not in _RECOMMENDERS:
        raise ValueError(f"unknown method {name!r}; registered recommenders are "
                         f"{available_recommenders()}")
    return _RECOMMENDERS[name]


def _rank_desc(values, layers):
    """Ranks 1..n by decreasing value, ties (and NaN, last) broken by the shallower layer."""
    v = np.where(np.isfinite(values), values, -np.inf)
    order = np.lexsort((np.asarray(layers), -v))
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def _check_int(value, name, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
    return int(value)


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def recommend_layers(base_model: Model, base_ds, target_ds, *, method: str = DEFAULT_METHOD,
                     layers=None, top: int = 1, **options) -> xr.Dataset:
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
        ``"gauss-newton"``, ``"probe"`` or ``"gradient-norm"``.
    layers : int or sequence of int, optional
        Candidate layers in 1..L (default all).
    top : int
        How many layers to recommend.
    **options
        Passed to the method (see each ``*_recommender`` function).

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
        layer outside 1..L; a bad ``top``.

    Examples
    --------
    >>> rec = xtl.recommend_layers(bnn, base_subset, target_subset, method="probe")
    >>> rec.score.to_series(), rec.attrs["recommended"]
    """
    if not isinstance(base_model, Model):
        raise TypeError(f"base_model must be an xtl Model, got {type(base_model).__name__}")
    func = recommender(method)
    check_pair_datasets(base_ds, target_ds)
    L = base_model.n_layers
    layers = list(check_layers(range(1, L + 1) if layers is None else layers, L))
    top = _check_int(top, "top")
    if top > len(layers):
        raise ValueError(f"top must be an int in 1..{len(layers)} (the number of candidate "
                         f"layers); got {top}")
    start = time.perf_counter()
    out = func(base_model, base_ds, target_ds, layers, **options)
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
        "n_target_samples": count_samples(target_ds[INPUTS[0]]),
    })
    return out


def recommended_layers(recommendation: xr.Dataset) -> list:
    """The recommended layer numbers of a :func:`recommend_layers` result.

    Parameters
    ----------
    recommendation : xarray.Dataset
        In memory or read back from netCDF (where a one-element list attribute
        becomes a scalar).

    Returns
    -------
    list of int
    """
    if "recommended" not in recommendation.attrs:
        raise ValueError("recommendation has no 'recommended' attribute; is it a "
                         "recommend_layers() result?")
    return [int(v) for v in np.atleast_1d(recommendation.attrs["recommended"])]


# ------------------------------------------------------------- shared pieces
def _normalized(model: Model, ds: xr.Dataset, max_samples: int | None = None) -> tuple:
    """Normalized ``(x (n, y, x, 2), y (n, y, x))`` of ``ds`` (evenly thinned to ``max_samples``)."""
    import dask

    fields = sample_fields(ds)
    n = count_samples(ds[OUTPUT])
    idx = np.arange(n) if max_samples is None or n <= max_samples else \
        np.unique(np.linspace(0, n - 1, max_samples).round().astype(int))
    psi, omega, pi = (np.asarray(a, np.float32) for a in dask.compute(
        *[fields[v][idx] for v in ("psi", "omega", "pi")]))
    x = stack_inputs(psi, omega, model.normalization)
    return x, pi / np.float32(model.normalization[OUTPUT])


def _shell_power(fields: np.ndarray) -> xr.DataArray:
    """Sample-mean power spectrum (shells ``k``) of ``(sample, y, x)`` fields."""
    da = xr.DataArray(np.asarray(fields, np.float64), dims=("sample", "y", "x"))
    return spectrum(da, "power").mean("sample")


def _thin(ds: xr.Dataset, max_samples: int) -> xr.Dataset:
    """At most ``max_samples`` samples of ``ds``, evenly spaced, on a ``sample`` dim."""
    from .training import stack_samples

    n = count_samples(ds[OUTPUT])
    idx = np.arange(n) if n <= max_samples else \
        np.unique(np.linspace(0, n - 1, max_samples).round().astype(int))
    return stack_samples(ds, idx)


# ------------------------------------------------------------------ spectral
def _overlap(profile, weight):
    """``O(l) = Σ_{k≥1} p_l(k)·w(k) / Σ_{k≥1} p_l(k)`` (decades); NaN for a zero response."""
    pos = dict(k=slice(1, None))
    prof = profile.sel(**pos)
    inside = (prof * weight.sel(**pos)).sum("k")
    total = prof.sum("k")
    return inside / total.where(total > 0)


def _layer_sensitivity(backend, model, x, layer, weight, *, n_directions, epsilon, seed):
    """``S(l)``: output power moved into the differing shells per unit relative kernel change.

    For random directions ``u`` (the same for every layer of one kernel shape) the
    kernel ``W_l`` becomes ``W_l + ε‖W_l‖ u/‖u‖``; ``S(l)`` is the mean over directions
    of ``Σ_{k≥1} w(k) P_Δy(k) / (ε² Σ_{k≥1} P_y(k))``, ``P`` the sample-mean power
    spectra of the output ``y`` and its change ``Δy``.
    """
    weights = backend.get_weights(model)
    kernel, bias = weights[layer - 1]
    y0 = backend.predict_normalized(model, x)
    p0 = float(_shell_power(y0).sel(k=slice(1, None)).sum())
    w = weight.sel(k=slice(1, None))
    clone = backend.clone(model)
    norm = float(np.linalg.norm(kernel))
    values = []
    for d in range(n_directions):
        u = np.random.default_rng([seed, d]).standard_normal(kernel.shape)
        u *= epsilon * norm / np.linalg.norm(u)
        changed = list(weights)
        changed[layer - 1] = ((kernel + u).astype(np.float32), bias)
        backend.set_weights(clone, changed)
        dp = _shell_power(backend.predict_normalized(clone, x) - y0).sel(k=slice(1, None))
        values.append(float((w * dp.sel(k=w["k"])).sum()) / (epsilon ** 2 * p0))
    return float(np.mean(values))


def spectral_recommender(model: Model, base_ds, target_ds, layers, *, kmax: int | None = None,
                         threshold: float = 0.3, batch_size: int = 32, max_samples: int = 128,
                         n_directions: int = 4, epsilon: float = 1e-2, seed: int = 0,
                         prior: str | None = None) -> xr.Dataset:
    """The spectral framework of Subel et al. (2023), every factor measured.

    ``score(l) = D(l) · O(l) · S(l)`` (times ``R(l)`` with ``prior="reach"``):

    * ``D(l)``, the divergence: the mean over the layer's live channels of the
      spectral distance (:func:`xtl.explain.spectral_distance`, shells ``k ≥ 1``)
      between the sample-mean power spectra of the channel's output for target and
      for base inputs: how strongly the layer's features carry the flows' difference;
    * ``O(l)``, the overlap: the mean over shells of the flows' shell weight ``w(k)``
      (:func:`xtl.explain.flow_difference`), weighted by the layer's mean filter
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
    kmax, threshold :
        As in :func:`xtl.explain.flow_difference`.
    batch_size : int
        Samples per forward pass.
    max_samples : int
        Samples used of each Dataset (evenly thinned).
    n_directions : int
        Random kernel directions per layer for ``S``.
    epsilon : float
        Relative size of the kernel change for ``S``.
    seed : int
        Seed of the directions.
    prior : {None, "reach"}
        Multiply by the reach prior ``R``.

    Returns
    -------
    xarray.Dataset
        ``score``, ``divergence``, ``overlap``, ``sensitivity`` (and ``reach``) over
        ``layer``; ``channel_divergence``, ``filter_profile``,
        ``activation_spectrum_base``/``_target``; the flow comparison of
        :func:`xtl.explain.flow_difference` (``log_ratio``, ``shell_weight``, ...).
    """
    if prior not in (None, "reach"):
        raise ValueError(f"prior must be None or 'reach', got {prior!r}")
    max_samples = _check_int(max_samples, "max_samples")
    n_directions = _check_int(n_directions, "n_directions")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon > 0:
        raise ValueError(f"epsilon must be a number > 0, got {epsilon!r}")
    base_ds, target_ds = _thin(base_ds, max_samples), _thin(target_ds, max_samples)
    flows = flow_difference(base_ds, target_ds, kmax=kmax, threshold=threshold)
    kmax = flows.attrs["kmax"]
    act_b = activation_spectra(model, base_ds, layers, batch_size=batch_size, kmax=kmax)
    act_t = activation_spectra(model, target_ds, layers, batch_size=batch_size, kmax=kmax)
    pos = dict(k=slice(1, None))
    chan_div = spectral_distance(act_t.spectrum.sel(**pos), act_b.spectrum.sel(**pos))
    divergence = chan_div.mean("channel", skipna=True).fillna(0.0)
    grid = base_ds.sizes["x"]
    profile = filter_profile(model_to_dataset(model).sel(layer=layers), grid, kmax)
    overlap = _overlap(profile, flows.shell_weight).fillna(0.0)
    backend = get_backend(model.backend)
    x, _ = _normalized(model, target_ds, max_samples)
    sens = [_layer_sensitivity(backend, model, x, k, flows.shell_weight,
                               n_directions=n_directions, epsilon=float(epsilon), seed=seed)
            for k in layers]
    layer = xr.DataArray(np.asarray(layers), dims="layer", coords={"layer": layers})
    sensitivity = xr.DataArray(sens, dims="layer", coords={"layer": layers})
    score = divergence * overlap * sensitivity
    formula = "score = D * O * S"
    out = xr.Dataset({
        "divergence": divergence.assign_attrs(
            long_name="activation divergence D(l): mean over live channels of the spectral "
                      "distance of their outputs for target and base inputs", units="1"),
        "overlap": overlap.assign_attrs(
            long_name="overlap O(l): shell weight w(k) averaged with the layer's mean filter "
                      "response", units="decades"),
        "sensitivity": sensitivity.assign_attrs(
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
    if prior == "reach":
        L = model.n_layers
        out["reach"] = ((L - layer + 1) / L).astype(float).assign_attrs(
            long_name="reach prior R(l) = (L - l + 1)/L", units="1")
        score = score * out["reach"]
        formula += " * R"
    out["score"] = score.assign_attrs(long_name="spectral score " + formula.split("= ")[1],
                                      units="1")
    out = xr.merge([out, flows], combine_attrs="override")
    out.attrs = {"formula": formula + " (see xtl.recommend.spectral_recommender)",
                 "prior": prior or "none", "threshold": float(threshold), "kmax": int(kmax)}
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


def _gauss_newton_layer(backend, model, clone, fit, held, layer, *, iterations, damping,
                        steps, batch_size):
    """Held-out relative loss decrease of one Gauss–Newton step on ``layer``."""
    (xf, yf), (xh, yh) = fit, held
    weights = backend.get_weights(model)
    shapes = (weights[layer - 1][0].shape, weights[layer - 1][1].shape)
    n = yf.size
    residual = backend.predict_normalized(model, xf, batch_size=batch_size) - yf
    grad = _flat(backend.vjp(model, xf, layer, residual, batch_size=batch_size)) * (2.0 / n)

    def gn(v):
        jv = backend.jvp(model, xf, layer, _unflat(v, shapes), batch_size=batch_size)
        return _flat(backend.vjp(model, xf, layer, jv, batch_size=batch_size)) * (2.0 / n) \
            + damping * v

    delta = _conjugate_gradient(gn, -grad, iterations)
    fit_before, held_before = float(np.mean(residual ** 2)), _loss(backend, model, xh, yh)
    best = (fit_before, 0.0)
    for alpha in steps:
        step = _unflat(alpha * delta, shapes)
        changed = list(weights)
        changed[layer - 1] = tuple((w + s).astype(np.float32)
                                   for w, s in zip(weights[layer - 1], step))
        backend.set_weights(clone, changed)
        best = min(best, (_loss(backend, clone, xf, yf), alpha))
    changed = list(weights)
    changed[layer - 1] = tuple((w + s).astype(np.float32) for w, s in
                               zip(weights[layer - 1], _unflat(best[1] * delta, shapes)))
    backend.set_weights(clone, changed)
    held_after = _loss(backend, clone, xh, yh)
    return {"fit_loss_before": fit_before, "fit_loss_after": best[0], "step": best[1],
            "held_loss_before": held_before, "held_loss_after": held_after,
            "gradient_norm": float(np.linalg.norm(grad)),
            "score": (held_before - held_after) / held_before if held_before > 0 else 0.0}


def _split_held_out(x, y, held_out):
    n_held = max(1, int(round(held_out * len(x))))
    if len(x) - n_held < 1:
        raise ValueError(f"target_ds needs at least 2 samples to hold {held_out} out, "
                         f"got {len(x)}")
    return (x[:-n_held], y[:-n_held]), (x[-n_held:], y[-n_held:])


def gauss_newton_recommender(model: Model, base_ds, target_ds, layers, *,
                             iterations: int = 6, held_out: float = 0.25,
                             damping: float = 0.0, steps=(1.0, 0.5, 0.25),
                             max_samples: int = 48, batch_size: int = 16) -> xr.Dataset:
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

    Parameters
    ----------
    model, base_ds, target_ds, layers :
        As in :func:`recommend_layers` (``base_ds`` is not used).
    iterations : int
        Conjugate-gradient steps (an implicit regularisation).
    held_out : float
        Fraction of the target set held out for the score.
    damping : float
        Levenberg–Marquardt damping ``λ`` (≥ 0).
    steps : sequence of float
        Step lengths tried on the fitted part.
    max_samples : int
        Target samples used (evenly thinned).
    batch_size : int

    Returns
    -------
    xarray.Dataset
        ``score`` and the evidence over ``layer``: ``fit_loss_before``/``_after``,
        ``held_loss_before``/``_after``, ``step``, ``gradient_norm``.
    """
    iterations = _check_int(iterations, "iterations")
    held_out = _check_fraction(held_out, "held_out")
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real) or damping < 0:
        raise ValueError(f"damping must be a number >= 0, got {damping!r}")
    backend = get_backend(model.backend)
    x, y = _normalized(model, target_ds, _check_int(max_samples, "max_samples"))
    fit, held = _split_held_out(x, y, held_out)
    clone = backend.clone(model)
    rows = [_gauss_newton_layer(backend, model, clone, fit, held, k, iterations=iterations,
                                damping=float(damping), steps=tuple(steps),
                                batch_size=batch_size) for k in layers]
    out = xr.Dataset({key: ("layer", np.array([r[key] for r in rows], float))
                      for key in rows[0]}, coords={"layer": layers})
    out["score"].attrs = {"long_name": "held-out relative loss decrease of one Gauss-Newton "
                                       "step on the layer", "units": "1"}
    out.attrs = {"formula": "score = (L_held(theta) - L_held(theta + a delta)) / "
                            "L_held(theta), delta = CG solution of (J^T J 2/N + damping) "
                            "delta = -grad L on the fitted part",
                 "iterations": iterations, "held_out": held_out, "damping": float(damping)}
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
    horizon = _check_int(horizon, "horizon")
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


def probe_recommender(model: Model, base_ds, target_ds, layers, *, epochs: int = 5,
                      horizon: int = 100, validation: float = 0.25, batch_size: int = 8,
                      learning_rate: float = 1e-3, seed: int = 0) -> xr.Dataset:
    """Re-train every candidate for a few epochs and extrapolate its validation loss.

    Each layer is re-trained alone (:func:`xtl.transfer`, one seed) for ``epochs``
    epochs on the target set, its last ``validation`` part held out; the
    validation-loss curve is extrapolated to ``horizon`` epochs
    (:func:`extrapolate_loss`). ``score(l) = 1 − L_pred(l) / L_0``, the fraction of the
    base network's validation loss ``L_0`` that re-training ``l`` is predicted to
    remove.

    Parameters
    ----------
    model, base_ds, target_ds, layers :
        As in :func:`recommend_layers` (``base_ds`` is not used).
    epochs : int
        Probe epochs per layer.
    horizon : int
        The full budget, in epochs, to extrapolate to (the sweep's cap).
    validation : float
        Held-out fraction of the target set.
    batch_size, learning_rate, seed :
        As in :func:`xtl.transfer`.

    Returns
    -------
    xarray.Dataset
        ``score``, ``predicted_loss``, ``probe_loss`` (the last probe epoch's),
        ``asymptote``, ``rate`` over ``layer``; ``val_loss(layer, epoch)``; scalar
        ``base_val_loss``.
    """
    epochs = _check_int(epochs, "epochs")
    horizon = _check_int(horizon, "horizon")
    validation = _check_fraction(validation, "validation")
    from .training import stack_samples

    check_les_dataset(target_ds, "target_ds")
    n = count_samples(target_ds[OUTPUT])
    n_val = max(1, int(round(validation * n)))
    if n - n_val < 1:
        raise ValueError(f"target_ds needs at least 2 samples to hold {validation} out for "
                         f"validation, got {n}")
    fit_part = stack_samples(target_ds, np.arange(n - n_val))
    val_part = stack_samples(target_ds, np.arange(n - n_val, n))
    x, y = _normalized(model, val_part)
    backend = get_backend(model.backend)
    base_loss = _loss(backend, model, x, y)
    curves, fits = [], []
    for k in layers:
        tl = transfer(model, fit_part, [k], validation=val_part, epochs=epochs,
                      batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                      progress=False)
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
def gradient_norm_recommender(model: Model, base_ds, target_ds, layers, *,
                              max_samples: int = 64, batch_size: int = 16) -> xr.Dataset:
    """Relative gradient norm at the base weights (Auto-RGN, Lee et al., ICLR 2023).

    ``score(l) = ‖∇_{θ_l} L‖ / ‖θ_l‖`` with ``L`` the MSE of the base network on the
    target set. A reference: it needs one backward pass, and nothing corrects for
    how much of the gradient a re-training can turn into a lower loss.

    Parameters
    ----------
    model, base_ds, target_ds, layers :
        As in :func:`recommend_layers` (``base_ds`` is not used).
    max_samples : int
        Target samples used (evenly thinned).
    batch_size : int

    Returns
    -------
    xarray.Dataset
        ``score``, ``gradient_norm`` and ``weight_norm`` over ``layer``.
    """
    backend = get_backend(model.backend)
    x, y = _normalized(model, target_ds, _check_int(max_samples, "max_samples"))
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


register_recommender("spectral", spectral_recommender)
register_recommender("gauss-newton", gauss_newton_recommender)
register_recommender("probe", probe_recommender)
register_recommender("gradient-norm", gradient_norm_recommender)


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
    from .sweep import LOWER_IS_BETTER, best_set

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
        :func:`xtl.sweep.best_set`; only the best layer for a single-seed sweep);
        scalars ``hit`` (the top recommendation is in the best set),
        ``recommended_rank`` (its measured rank), ``spearman`` and
        ``spearman_pvalue`` (score against skill, +1 = perfect order),
        ``best_measured_layer`` and ``cost_ratio`` (the recommendation's seconds over
        the summed training seconds of the sweep's single-layer re-trainings; NaN
        when either is unknown). ``attrs`` repeat the scalars and the method.

    Raises
    ------
    TypeError, ValueError
        Not Datasets; a pair sweep; ``metric`` missing; fewer than 2 common layers;
        a recommended layer that the sweep did not re-train.
    """
    from scipy.stats import rankdata

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
    mean, in_set, higher = _sweep_skill(sweep.sel(layer=common), metric)
    value = mean.values.astype(float)
    if not np.isfinite(value).all():
        raise ValueError(f"sweep[{metric!r}] holds NaN or inf")
    skill = value if higher else -value
    score = recommendation["score"].sel(layer=common).values.astype(float)
    measured = rankdata(-skill, method="min").astype(np.int64)
    best = int(common[np.lexsort((common, -skill))[0]])
    in_set = (common == best) if in_set is None else in_set.values.astype(bool)
    pos = {int(x): i for i, x in enumerate(common)}
    top = recommended[0]
    rho, pvalue = _spearman(score, skill)
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
            "hit": ((), bool(in_set[pos[top]]), {"long_name": "the top recommendation is in "
                                                 "the sweep's best set"}),
            "recommended_rank": ((), int(measured[pos[top]]), {
                "long_name": "measured rank of the top recommendation"}),
            "spearman": ((), rho, {"long_name": f"Spearman correlation of score and "
                                   f"{'' if higher else 'minus '}mean {metric}"}),
            "spearman_pvalue": ((), pvalue, {"long_name": "two-sided p-value of spearman"}),
            "best_measured_layer": ((), best, {"long_name": f"best mean {metric}"}),
            "cost_ratio": ((), cost, {"long_name": "recommendation time / summed sweep "
                                      "training time", "units": "1"}),
        },
        coords={"layer": common},
    )
    out.attrs = {"metric": metric, "method": recommendation.attrs.get("method", "unknown"),
                 "recommended": top, "hit": int(in_set[pos[top]]),
                 "recommended_rank": int(measured[pos[top]]), "spearman": rho,
                 "best_measured_layer": best, "cost_ratio": cost}
    return out
