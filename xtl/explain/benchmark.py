"""Every recommender and the constant guesses, measured on stored sweeps.

A recommender earns its cost only where it gives up less skill than a constant
guess would. :func:`benchmark_recommenders` puts the registered methods' recommendations beside
four constants on every case (a target's sweep, or one budget of a budget sweep):

* ``"shallowest"`` -- layer 1;
* ``"layer-2"`` -- layer 2;
* ``"deepest"`` -- the last layer;
* ``"prior"`` -- the layer with the lowest expected regret over the *other* cases'
  sweeps (:func:`xtl.explain.recommend.prior_scores`; cases of the same target, such
  as its budgets, are left out too, so the prior never sees the case it is judged on),
  plus any ``history`` of sweeps the user has run before.

Each is scored by its regret (:func:`xtl.explain.recommend.layer_regrets`: 0 = the
best layer, 1 = no better than the base network), whether it is in the sweep's best
set, Kendall's τ of its scores against the layers' mean skill, and its cost: the
samples it trained (or passed forward and backward) on, summed over epochs, over
those of a 3-seed single-layer sweep of every layer (:func:`sweep_cost`).
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .recommend import (DEFAULT_METHOD, compare_recommendation, layer_regrets, prior_scores,
                        recommended_layers)

__all__ = ["benchmark_recommenders", "constant_choice", "sweep_cost", "recommendation_cost", "CONSTANTS",
           "case_name", "summarize_benchmark", "choose_default", "GOAL"]

#: The constant guesses every benchmark shows beside the methods.
CONSTANTS = ("shallowest", "layer-2", "deepest", "prior")

#: Per-layer sample passes of the methods whose stored recommendations predate the
#: ``sample_epochs`` they now carry, from their default options: gauss-newton 6 CG
#: iterations (a JVP and a VJP each) plus the gradient and 3 trial steps on up to 48
#: samples; gradient-norm one backward pass on up to 64; spectral a forward pass of
#: up to 128 base and 128 target samples and 4 perturbed ones per layer.
_PASSES_PER_LAYER = {"gauss-newton": (16, 48), "gradient-norm": (1, 64), "spectral": (6, 128)}


def case_name(target: str, n_samples: int | None = None) -> str:
    """``"<target>"`` for a target's sweep, ``"<target>@<n_samples>"`` for a budget entry."""
    return target if n_samples is None else f"{target}@{int(n_samples)}"


def _target_of(case: str) -> str:
    return case.split("@")[0]


def sweep_cost(sweep: xr.Dataset, seeds: int = 3) -> float:
    """Sample-epochs of a ``seeds`` -seed single-layer sweep of every layer.

    ``seeds · n · Σ_l ē_l``, with ``n`` the re-training samples (``attrs["n_samples"]``)
    and ``ē_l`` the mean over seeds of the epochs layer ``l`` ran (``epochs_run``,
    early stopping included).

    Raises
    ------
    ValueError
        The sweep lacks ``epochs_run`` or ``attrs["n_samples"]``.
    """
    if "epochs_run" not in sweep or "n_samples" not in sweep.attrs:
        raise ValueError("sweep must hold 'epochs_run' over (layer, seed) and "
                         "attrs['n_samples'] (as layer_sweep writes them) to measure its cost")
    epochs = sweep["epochs_run"]
    per_layer = epochs.mean("seed") if "seed" in epochs.dims else epochs
    return float(seeds * int(sweep.attrs["n_samples"]) * per_layer.sum())


def recommendation_cost(recommendation: xr.Dataset) -> float:
    """Samples a recommendation trained or passed through the network, summed over epochs.

    Its ``sample_epochs`` where it carries them (halving, ntk, prior); for the probe,
    candidates × probe epochs × target samples; for stored gauss-newton,
    gradient-norm and spectral recommendations, which predate that field, the
    passes their default options make per layer (see ``_PASSES_PER_LAYER``),
    counting a forward pass like a forward and backward one (an upper bound).
    """
    if "sample_epochs" in recommendation:
        return float(recommendation["sample_epochs"])
    method = recommendation.attrs.get("method")
    n = int(recommendation.attrs.get("n_target_samples", 0))
    n_layers = recommendation.sizes["layer"]
    if method == "probe" and "val_loss" in recommendation:
        return float(n_layers * recommendation.sizes["epoch"] * n)
    if method in _PASSES_PER_LAYER:
        passes, max_samples = _PASSES_PER_LAYER[method]
        return float(n_layers * passes * min(n, max_samples))
    return math.nan


def constant_choice(name: str, layers, prior: xr.Dataset | None = None) -> int:
    """The layer a constant guess picks among ``layers`` (-1: the prior had no evidence).

    Parameters
    ----------
    name : {"shallowest", "layer-2", "deepest", "prior"}
    layers : sequence of int
        The sweep's layers.
    prior : xarray.Dataset, optional
        :func:`~xtl.explain.recommend.prior_scores` over ``layers`` (for ``"prior"``).
    """
    layers = sorted(int(k) for k in layers)
    if name == "shallowest":
        return layers[0]
    if name == "layer-2":
        return 2 if 2 in layers else -1
    if name == "deepest":
        return layers[-1]
    if name == "prior":
        if prior is None:
            return -1
        score = prior["score"].sel(layer=layers).values
        return int(layers[int(np.lexsort((layers, -score))[0])])
    raise ValueError(f"name must be one of {list(CONSTANTS)}, got {name!r}")


def _prior_for(case, sweeps, history, metric, strength):
    """The prior of ``case``: from the sweeps of other targets and the ``history``."""
    others = [s for c, s in sweeps.items() if _target_of(c) != _target_of(case)]
    evidence = [s for s in [*others, *history]
                if np.isfinite(layer_regrets(s, metric).values).all()]
    if not evidence:
        return None
    return prior_scores(evidence, sweeps[case]["layer"].values.tolist(), strength=strength,
                        metric=metric)


def _constant_row(name, sweep, regrets, in_set, prior) -> dict:
    layer = constant_choice(name, sweep["layer"].values, prior)
    if layer < 0:
        return {"layer": -1, "hit": False, "regret": math.nan, "tau": math.nan, "cost": 0.0}
    return {"layer": layer, "hit": bool(in_set.sel(layer=layer)),
            "regret": float(regrets.sel(layer=layer)), "tau": math.nan, "cost": 0.0}


def _method_row(recommendation, sweep, metric, full_cost) -> dict:
    if recommendation is None:
        return {"layer": -1, "hit": False, "regret": math.nan, "tau": math.nan,
                "cost": math.nan}
    cmp = compare_recommendation(recommendation, sweep, metric=metric)
    return {"layer": recommended_layers(recommendation)[0], "hit": bool(cmp.hit),
            "regret": float(cmp.regret), "tau": float(cmp.tau),
            "cost": recommendation_cost(recommendation) / full_cost}


def _case_rows(case, sweeps, recommendations, methods, options) -> list:
    """One row per method, then per constant, of one case."""
    from ..nn.sweep import best_set

    metric, history, strength = options
    sweep = sweeps[case]
    regrets = layer_regrets(sweep, metric)
    in_set = best_set(sweep[metric])["in_best_set"]
    full = sweep_cost(sweep)
    rows = [_method_row(recommendations.get(case, {}).get(m), sweep, metric, full)
            for m in methods]
    prior = _prior_for(case, sweeps, history, metric, strength)
    return rows + [_constant_row(c, sweep, regrets, in_set, prior) for c in CONSTANTS]


def _per_layer(sweeps, metric) -> xr.Dataset:
    """Mean skill, best set and regret over (case, candidate): the re-trained layer,
    NaN/False where a case's network has no such layer."""
    from ..nn.sweep import best_set

    parts = []
    for case, sweep in sweeps.items():
        parts.append(xr.Dataset({
            "mean_skill": sweep[metric].mean("seed"),
            "in_best_set": best_set(sweep[metric])["in_best_set"],
            "layer_regret": layer_regrets(sweep, metric)}).expand_dims(case=[case]))
    out = xr.concat(parts, dim="case", join="outer", fill_value={"in_best_set": False})
    out["in_best_set"] = out["in_best_set"].astype(bool)
    return out.rename(layer="candidate")  # "layer" is the choice over (case, method)


def benchmark_recommenders(sweeps, recommendations, *, metric: str = "cc", history=(),
              strength: float = 1.0, default: str = DEFAULT_METHOD) -> xr.Dataset:
    """Every method and every constant guess on every case, scored against its sweep.

    Parameters
    ----------
    sweeps : mapping
        ``{case: single-layer sweep}`` (:func:`xtl.layer_sweep` results with
        ``metric`` over ``(layer, seed)``); name budget entries ``"<target>@<n>"``
        (:func:`case_name`) so the prior leaves a target's other budgets out.
    recommendations : mapping
        ``{case: {method: recommend_layers result}}``; a method missing on a case
        gets ``layer`` -1 and NaN scores there.
    metric : str
        The sweeps' skill (default ``"cc"``).
    history : sequence of xarray.Dataset
        Sweeps run before, added to the prior's evidence on every case.
    strength : float
        The prior's pseudo-sweeps (:func:`~xtl.explain.recommend.prior_scores`).
    default : str
        The method named the default in ``attrs["default"]``.

    Returns
    -------
    xarray.Dataset
        Over ``(case, method)``: ``layer`` (the choice; -1 = none), ``hit``
        (in the best set), ``regret``, ``tau`` (NaN for constants) and ``cost`` (over
        a 3-seed single-layer sweep of every layer; 0 for constants); ``method`` has
        coordinate ``kind`` ("method" or "constant"). Over ``case``: ``n_seeds`` and
        ``best_set`` (like ``"2,3"``). Over ``(case, candidate)`` (``candidate`` the
        re-trained layer; NaN or False beyond a case's depth): ``mean_skill``,
        ``in_best_set`` and ``layer_regret``. ``attrs``: ``default``, ``metric``.

    Raises
    ------
    TypeError, ValueError
        No sweeps; a sweep without seeds; the errors of
        :func:`~xtl.explain.recommend.compare_recommendation`.
    """
    if not hasattr(sweeps, "items") or not sweeps:
        raise TypeError(f"sweeps must be a non-empty mapping {{case: sweep}}, got {sweeps!r}")
    for case, sweep in sweeps.items():
        if "seed" not in sweep[metric].dims:
            raise ValueError(f"sweeps[{case!r}][{metric!r}] must be over (layer, seed), got "
                             f"{sweep[metric].dims}")
    methods = sorted({m for recs in recommendations.values() for m in recs} - set(CONSTANTS))
    cases = list(sweeps)
    rows = [_case_rows(c, sweeps, recommendations, methods, (metric, list(history), strength))
            for c in cases]
    names = methods + list(CONSTANTS)
    dims = ("case", "method")
    out = xr.Dataset(
        {key: (dims, np.array([[r[key] for r in case_rows] for case_rows in rows]))
         for key in ("layer", "hit", "regret", "tau", "cost")},
        coords={"case": cases, "method": names,
                "kind": ("method", ["method"] * len(methods) + ["constant"] * len(CONSTANTS))})
    out["layer"] = out["layer"].astype(np.int64)
    out["hit"] = out["hit"].astype(bool)
    out["n_seeds"] = ("case", np.array([sweeps[c].sizes["seed"] for c in cases], np.int64))
    out["best_set"] = ("case", np.array([",".join(str(int(k)) for k in layers) for layers in (
        _best_layers(sweeps[c], metric) for c in cases)], dtype=str))
    out = out.merge(_per_layer(sweeps, metric))
    _describe(out, metric)
    out.attrs = {"default": default, "metric": metric, "prior_strength": float(strength)}
    return out


def _best_layers(sweep, metric) -> list:
    from ..nn.sweep import best_set

    mask = best_set(sweep[metric])["in_best_set"]
    return mask["layer"].values[mask.values].tolist()


def _describe(out: xr.Dataset, metric: str) -> None:
    """Units and long names of a benchmark's variables (in place)."""
    out["layer"].attrs = {"long_name": "the layer chosen (-1: none)"}
    out["hit"].attrs = {"long_name": "the choice is in the sweep's best set"}
    out["regret"].attrs = {"long_name": f"share of the best layer's gain in {metric} over "
                                        "the base network given up", "units": "1"}
    out["tau"].attrs = {"long_name": f"Kendall's tau of the scores against mean {metric}"}
    out["cost"].attrs = {"long_name": "sample-epochs over those of a 3-seed single-layer "
                                      "sweep of every layer", "units": "1"}
    out["n_seeds"].attrs = {"long_name": "seeds per layer in the sweep"}
    out["best_set"].attrs = {"long_name": "layers not significantly worse than the best"}


#: What a default recommender must achieve on a family of cases: mean regret at most
#: ``max_regret`` and at most ``margin`` above the best constant guess's, its choice
#: among the two best layers in every case, and a cost of at most ``max_cost`` of a
#: 3-seed single-layer sweep of every layer.
GOAL = {"max_regret": 0.10, "margin": 0.02, "max_cost": 0.10}


def summarize_benchmark(bench: xr.Dataset, cases=None) -> xr.Dataset:
    """Per method, over ``cases`` (default all): regret, hits, ranks, cost, and the goal.

    Returns
    -------
    xarray.Dataset
        Over ``method``: ``mean_regret`` (NaN-skipping), ``max_regret``, ``hits``
        (count), ``top2`` (the choice is among the two best layers by mean skill in
        every case), ``mean_cost``, ``max_cost`` and ``meets_goal`` (:data:`GOAL`;
        a constant meets it by its regret and ranks alone); scalars ``n_cases`` and
        ``best_constant_regret`` (the lowest mean regret of a constant guess).
    """
    b = bench if cases is None else bench.sel(case=list(cases))
    rank = _measured_rank(b, b.attrs.get("metric", "cc"))
    out = xr.Dataset({
        "mean_regret": b.regret.mean("case", skipna=True),
        "max_regret": b.regret.max("case", skipna=True),
        "hits": b.hit.sum("case"),
        "top2": (rank <= 2).all("case"),
        "mean_cost": b.cost.mean("case", skipna=True),
        "max_cost": b.cost.max("case", skipna=True),
        "n_cases": ((), b.sizes["case"])}, coords={"kind": b["kind"]})
    constant = out.mean_regret.where(out.kind == "constant")
    out["best_constant_regret"] = constant.min(skipna=True)
    out["meets_goal"] = ((out.mean_regret <= GOAL["max_regret"])
                         & (out.mean_regret <= out.best_constant_regret + GOAL["margin"])
                         & out.top2 & (out.max_cost <= GOAL["max_cost"]))
    return out


def choose_default(summary: xr.Dataset) -> str:
    """The method (not a constant) that meets the goal with the lowest mean regret, ties
    to the cheaper; ``"prior"`` when none does.

    Parameters
    ----------
    summary : xarray.Dataset
        :func:`summarize_benchmark` of the cases the default is chosen on.
    """
    ok = summary.where((summary.kind == "method") & summary.meets_goal, drop=True)
    if not ok.sizes["method"]:
        return "prior"
    order = np.lexsort((ok.mean_cost.values, ok.mean_regret.values))
    return str(ok.method.values[order[0]])


def _measured_rank(b: xr.Dataset, metric: str) -> xr.DataArray:
    """Rank (1 = best mean skill) of each (case, method)'s choice; a large rank for none."""
    from scipy.stats import rankdata

    from ..nn.sweep import LOWER_IS_BETTER

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    ranks = np.full(b["layer"].shape, 99, dtype=np.int64)
    for i, case in enumerate(b.case.values):
        valid = b.mean_skill.sel(case=case).dropna("candidate")
        order = dict(zip(valid.candidate.values.tolist(),
                         rankdata(-sign * valid.values, method="min").tolist()))
        for j, layer in enumerate(b["layer"].sel(case=case).values.tolist()):
            ranks[i, j] = int(order.get(layer, ranks[i, j]))
    return xr.DataArray(ranks, dims=("case", "method"),
                        coords={"case": b.case, "method": b.method})
