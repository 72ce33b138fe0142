"""What an experiment's results imply: the summary numbers and the key findings.

:func:`report_summary` gathers, from the result files of :mod:`xtl.experiment.stages`,
every number the report's findings state into one labeled Dataset (written as
``results/summary.nc`` and ``results/summary.json``); :func:`key_findings` turns it into
short sentences, each carrying the numbers it states and the report section it refers
to. Nothing here is hard-coded: a finding says what the numbers say, including that a
hope of the method did not hold.

Conventions of the statements (see the report's glossary):

- TL *helped* a priori when the best single-layer TLNN's mean CC exceeds the BNN's by
  more than two standard errors over seeds; *hurt* when it is below by more than that;
  otherwise it made *no clear difference*.
- "TL changes the filters where the flows differ" *held* when the correlation r of the
  best layer's spectral change with the flows' difference is positive with permutation
  p < :data:`ALPHA`.
- A best set or a spread resting on fewer than :data:`MIN_SEEDS` seeds is flagged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .document import anchor

__all__ = ["report_summary", "key_findings", "summary_record", "Finding", "format_mean_sem", "format_value",
           "APOSTERIORI_MEASURES", "MIN_SEEDS", "ALPHA"]

#: Fewest seeds for a best set or a spread to be stated without a warning.
MIN_SEEDS = 3
#: Significance level of the statements (the sweep's best set uses its own ``alpha``).
ALPHA = 0.05
#: The a posteriori measures a finding compares (lower is better), with their names.
APOSTERIORI_MEASURES = {"spectrum_error": "energy spectrum error",
                        "pdf_distance": "PDF Hellinger distance",
                        "tail_error": "PDF tail error"}


def format_value(value: float, digits: int = 2) -> str:
    """``value`` with ``digits`` significant figures (integers as they are, a float zero as
    "0", NaN as "n/a").

    Examples
    --------
    >>> format_value(0.012345), format_value(1.0), format_value(1234.5), format_value(3)
    ('0.012', '1.0', '1200', '3')
    """
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):  # no decimals: round to the figures kept
        return str(int(round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))))
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    text = f"{round(value, decimals):.{decimals}f}"
    return text


def format_mean_sem(mean: float, sem: float) -> str:
    """``"mean ± s.e."`` with two significant figures of the s.e. and the mean rounded to
    the same decimal; the mean alone (3 significant figures) when the s.e. is 0 or NaN.

    Examples
    --------
    >>> format_mean_sem(0.79132, 0.00013), format_mean_sem(26.93, 0.1), format_mean_sem(41.0, 0.81)
    ('0.79132 ± 0.00013', '26.93 ± 0.10', '41.00 ± 0.81')
    """
    mean, sem = float(mean), float(sem)
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(sem) or sem <= 0:
        return format_value(mean, 3)
    decimals = max(0, 1 - int(math.floor(math.log10(sem))))
    sem = round(sem, decimals)
    if sem >= 10 ** (2 - decimals):  # 0.0995 rounds to 0.10: one decimal fewer
        decimals = max(0, decimals - 1)
    return f"{mean:.{decimals}f} ± {sem:.{decimals}f}"


# --------------------------------------------------------------------------- summary
def _sweep_summary(sweep: xr.Dataset) -> dict:
    """Per-target numbers of a single-layer sweep (CC over ``(layer, seed)``)."""
    layers = sweep.layer.values.astype(int)
    mean = sweep.cc_mean.values.astype(float)
    best = int(layers[np.lexsort((layers, -mean))[0]])
    sem = float(sweep.cc_sem.sel(layer=best))
    bnn = float(sweep.base_cc)
    gain = float(sweep.cc_mean.sel(layer=best)) - bnn
    margin = 2 * sem if math.isfinite(sem) else 0.0
    n_seeds = int(sweep.sizes.get("seed", 1))
    return {
        "cc_bnn": bnn, "best_layer": best, "cc_best_mean": float(sweep.cc_mean.sel(layer=best)),
        "cc_best_sem": sem, "tl_gain": gain,
        "tl_effect": 1 if gain > margin else (-1 if gain < -margin else 0),
        "n_seeds": n_seeds, "low_power": n_seeds < MIN_SEEDS,
        "shallowest_layer": int(layers.min()), "deepest_layer": int(layers.max()),
        "shallowest_best": best == int(layers.min()),
        "shallowest_in_best_set": bool(sweep.best_set.sel(layer=int(layers.min()))),
        "best_set": ",".join(str(v) for v in layers[sweep.best_set.values.astype(bool)]),
    }


def _recommendation_summary(comparison: xr.Dataset | None) -> dict:
    """The default recommendation against the sweep (NaN/-1 where none was compared)."""
    if comparison is None:
        return {"recommended_layer": -1, "hit": False, "regret": math.nan}
    regret = float(comparison["regret"]) if "regret" in comparison else math.nan
    return {"recommended_layer": int(comparison.attrs["recommended"]),
            "hit": bool(comparison["hit"]), "regret": regret}


def _change_summary(explain: xr.Dataset) -> dict:
    """Whether the best layer's spectral change follows the flows' difference."""
    r = float(explain.attrs.get("change_correlation", math.nan))
    p = float(explain.attrs.get("change_pvalue", math.nan))
    return {"change_r": r, "change_p": p, "change_held": bool(r > 0 and p < ALPHA)}


def _aposteriori_summary(post: xr.Dataset | None) -> dict:
    """Per measure: the closure closest to the filtered DNS, BNN's and TLNN's errors."""
    from .aposteriori import aposteriori_summary

    out = {"closest": [], "bnn_error": [], "tlnn_error": []}
    for measure in APOSTERIORI_MEASURES:
        if post is None or f"{measure}_mean" not in (summary := aposteriori_summary(post)):
            out["closest"].append("")
            out["bnn_error"].append(math.nan)
            out["tlnn_error"].append(math.nan)
            continue
        means = summary[f"{measure}_mean"].where(summary.n_stable > 0)
        finite = means.dropna("closure")
        out["closest"].append(str(finite.closure.values[int(np.argmin(finite.values))])
                              if finite.size else "")
        for name, closure in (("bnn_error", "BNN"), ("tlnn_error", "TLNN")):
            out[name].append(float(means.sel(closure=closure))
                             if closure in means.closure.values else math.nan)
    return out


def _per_target(flows, sweeps, explains, posts, comparisons) -> xr.Dataset:
    """The summary variables over ``target`` (and ``measure``, ``layer``)."""
    targets = list(sweeps)
    rows = [{"flows_differ": float(flows.largest_decades.sel(target=t)),
             **_sweep_summary(sweeps[t]), **_recommendation_summary(comparisons.get(t)),
             **_change_summary(explains[t])} for t in targets]
    posts_ = [_aposteriori_summary(posts.get(t)) for t in targets]
    ds = xr.Dataset({name: ("target", [row[name] for row in rows]) for name in rows[0]},
                    coords={"target": targets, "measure": list(APOSTERIORI_MEASURES)})
    for name in ("closest", "bnn_error", "tlnn_error"):
        ds[name] = (("target", "measure"), [p[name] for p in posts_])
    ds["aposteriori_measures"] = (ds.closest != "").sum("measure")
    ds["aposteriori_improved"] = ((ds.tlnn_error < ds.bnn_error) & (ds.closest != "")).sum(
        "measure")
    layers = sorted({int(l) for s in sweeps.values() for l in s.layer.values})
    grid = {v: xr.concat([sweeps[t][v].reindex(layer=layers) for t in targets], "target")
            for v in ("cc_mean", "cc_sem")}
    ds["cc_mean"] = grid["cc_mean"].drop_vars([c for c in grid["cc_mean"].coords
                                               if c != "layer"]).assign_coords(target=targets)
    ds["cc_sem"] = (("target", "layer"), grid["cc_sem"].values)
    ds["in_best_set"] = (("target", "layer"), np.stack(
        [sweeps[t].best_set.reindex(layer=layers, fill_value=False).values.astype(bool)
         for t in targets]))
    return ds


def _benchmark_summary(benchmark: xr.Dataset) -> dict:
    """Mean regret over the benchmark's cases of the default, and of what it is compared
    with: the best constant guess when the default is a method, the best method when it
    is itself a constant (the prior)."""
    mean = benchmark.regret.mean("case")
    default = str(benchmark.attrs["default"])
    default_kind = str(benchmark.kind.sel({"method": default}).values)
    rival_kind = "method" if default_kind == "constant" else "constant"
    rivals = mean.isel(method=np.flatnonzero((benchmark.kind == rival_kind).values))
    if not rivals.sizes["method"]:  # no method was scored: the best other constant
        rival_kind = "constant"
        rivals = mean.isel(method=np.flatnonzero(((benchmark.kind == "constant")
                                                   & (benchmark.method != default)).values))
    best = str(rivals.method.values[int(np.nanargmin(rivals.values))])
    return {"benchmark_default": default, "benchmark_default_kind": default_kind,
            "benchmark_default_regret": float(mean.sel({"method": default})),
            "benchmark_rival": best, "benchmark_rival_kind": rival_kind,
            "benchmark_rival_regret": float(mean.sel({"method": best})),
            "benchmark_cases": int(benchmark.sizes["case"])}


#: What each per-target summary variable holds (its ``long_name``).
_LONG_NAMES = {
    "flows_differ": "largest |log10 S_target/S_base| over shells and variables (decades)",
    "cc_bnn": "CC of the base network on held-out target data",
    "best_layer": "layer of the highest mean CC", "cc_best_mean": "mean CC of the best layer",
    "cc_best_sem": "standard error over seeds of the best layer's CC",
    "tl_gain": "cc_best_mean - cc_bnn",
    "tl_effect": "1: TL helped (gain > 2 s.e.), 0: no clear difference, -1: TL hurt",
    "n_seeds": "seeds of the sweep", "low_power": "fewer seeds than min_seeds",
    "best_set": "layers not significantly worse than the best (comma-separated)",
    "recommended_layer": "the default recommender's layer (-1: none compared)",
    "hit": "the recommended layer is in the best set",
    "regret": "(CC_best - CC_recommended) / (CC_best - CC_BNN)",
    "change_r": "correlation of the best layer's spectral change with the flows' difference",
    "change_p": "permutation p-value of change_r",
    "change_held": "change_r > 0 and change_p < alpha",
    "closest": "closure closest to the filtered DNS (lowest mean over stable runs)",
    "bnn_error": "BNN's a posteriori error, mean over stable runs",
    "tlnn_error": "TLNN's a posteriori error, mean over stable runs",
    "cc_mean": "mean CC over seeds per re-trained layer",
    "cc_sem": "standard error of cc_mean", "in_best_set": "layer in the best set",
}


def report_summary(flows: xr.Dataset, sweeps: dict, explains: dict, posts: dict,
                   comparisons: dict, benchmark: xr.Dataset | None = None) -> xr.Dataset:
    """Every number the report's key findings state, as one Dataset.

    Parameters
    ----------
    flows : xarray.Dataset
        ``results/flows.nc`` (``largest_decades`` over ``target``).
    sweeps, explains : dict
        ``{target: Dataset}`` of ``results/sweep-*.nc`` and ``results/explain-*.nc``.
    posts : dict
        ``{target: Dataset}`` of ``results/aposteriori-*.nc`` (targets without one left
        out).
    comparisons : dict
        ``{target: Dataset}`` of :func:`xtl.explain.recommend.compare_recommendation` of
        the default recommendation against the sweep (its ``regret`` used when there).
    benchmark : xarray.Dataset, optional
        ``results/recommend-benchmark.nc`` (dims ``case``, ``method``; ``regret``,
        ``kind``; attr ``default``).

    Returns
    -------
    xarray.Dataset
        Over ``target``: ``flows_differ`` (decades), ``cc_bnn``, ``best_layer``,
        ``cc_best_mean``, ``cc_best_sem``, ``tl_gain``, ``tl_effect`` (1 helped, 0 no
        clear difference, -1 hurt), ``n_seeds``, ``low_power``, ``shallowest_layer``,
        ``deepest_layer``, ``shallowest_best``, ``shallowest_in_best_set``, ``best_set``,
        ``recommended_layer`` (-1: none compared), ``hit``, ``regret``, ``change_r``,
        ``change_p``, ``change_held``; over ``(target, measure)``: ``closest`` (closure,
        "" without a posteriori runs), ``bnn_error``, ``tlnn_error``; over ``(target,
        layer)``: ``cc_mean``, ``cc_sem``, ``in_best_set``; ``aposteriori_measures`` and
        ``aposteriori_improved`` (how many measures there are, and on how many the TLNN's
        error is below the BNN's); with a benchmark, scalars
        ``benchmark_default_regret`` and ``benchmark_rival_regret``, the mean regret of
        the default and of what it is compared with (the best constant guess, or the
        best method when the default is itself a constant; names and kinds in attrs).

    Raises
    ------
    ValueError
        ``sweeps`` empty, or a target of ``sweeps`` missing from ``explains``.
    """
    if not sweeps:
        raise ValueError("sweeps is empty: give {target: sweep Dataset} for at least one target")
    missing = [t for t in sweeps if t not in explains]
    if missing:
        raise ValueError(f"explains lacks targets {missing} of sweeps; give the explain "
                         "result of every swept target")
    ds = _per_target(flows, sweeps, explains, posts, comparisons)
    for name, long_name in _LONG_NAMES.items():
        ds[name].attrs["long_name"] = long_name
    ds.attrs.update(min_seeds=MIN_SEEDS, alpha=ALPHA, metric="cc")
    if benchmark is not None:
        numbers = _benchmark_summary(benchmark)
        for name in ("benchmark_default_regret", "benchmark_rival_regret",
                     "benchmark_cases"):
            ds[name] = numbers.pop(name)
        ds.attrs.update(numbers)
    return ds


# -------------------------------------------------------------------------- findings
@dataclass(frozen=True)
class Finding:
    """One sentence of the key findings.

    Attributes
    ----------
    text : str
        The sentence (plain text; its numbers as formatted in ``numbers``).
    section : str
        The anchor of the report section it refers to.
    target : str
        The target it is about ("" for the whole experiment).
    numbers : dict
        ``{summary variable: value}`` of every number the sentence states (selected at
        ``target`` for variables over it).
    """

    text: str
    section: str
    target: str = ""
    numbers: dict = field(default_factory=dict)


def _pick(summary, target, *names) -> dict:
    return {n: summary[n].sel(target=target).item() for n in names}


def _flows_finding(summary, t) -> Finding:
    n = _pick(summary, t, "flows_differ")
    return Finding(f"The flows differ by up to {format_value(n['flows_differ'])} decades of "
                   "spectral power.", "flows", t, n)


def _apriori_finding(summary, t) -> Finding:
    n = _pick(summary, t, "cc_bnn", "cc_best_mean", "cc_best_sem", "best_layer", "n_seeds")
    best = (f"{format_mean_sem(n['cc_best_mean'], n['cc_best_sem'])} (layer "
            f"{n['best_layer']}, {n['n_seeds']} seeds)")
    verdict = {1: "TL helped a priori", 0: "TL made no clear difference a priori",
               -1: "TL hurt a priori"}[int(summary.tl_effect.sel(target=t))]
    return Finding(f"{verdict}: CC {format_value(n['cc_bnn'], 3)} for the BNN against "
                   f"{best} for the best TLNN.", "transfer", t, n)


def _aposteriori_finding(summary, t) -> Finding | None:
    """Which closure is closest to the filtered DNS on each measure, and on how many of
    them the TLNN beat the BNN (both errors stated)."""
    one = summary.sel(target=t)
    measures = [m for m in APOSTERIORI_MEASURES if str(one.closest.sel(measure=m).item())]
    if not measures:
        return None
    numbers = _pick(summary, t, "aposteriori_improved", "aposteriori_measures")
    closest, pairs = [], []
    for m in measures:
        bnn, tlnn = float(one.bnn_error.sel(measure=m)), float(one.tlnn_error.sel(measure=m))
        numbers.update({f"tlnn_error[{m}]": tlnn, f"bnn_error[{m}]": bnn})
        closest.append(f"{one.closest.sel(measure=m).item()} by {APOSTERIORI_MEASURES[m]}")
        pairs.append(f"{format_value(tlnn)} vs {format_value(bnn)}")
    return Finding(f"A posteriori, closest to the filtered DNS: {'; '.join(closest)}. TL "
                   f"improved on the BNN on {numbers['aposteriori_improved']} of "
                   f"{numbers['aposteriori_measures']} measures (TLNN vs "
                   f"BNN: {', '.join(pairs)}).", "aposteriori", t, numbers)


def _recommendation_finding(summary, t) -> Finding | None:
    n = _pick(summary, t, "recommended_layer", "regret")
    if n["recommended_layer"] < 0:
        return None
    best_set = str(summary.best_set.sel(target=t).item())
    verdict = "in the best set" if bool(summary.hit.sel(target=t)) else "outside the best set"
    regret = (f", regret {format_value(n['regret'])}" if math.isfinite(n["regret"]) else "")
    if not math.isfinite(n["regret"]):
        n.pop("regret")
    layers = "layers" if "," in best_set else "layer"
    return Finding(f"The best set is {layers} {best_set.replace(',', ', ')}; the recommended layer "
                   f"{n['recommended_layer']} is {verdict}{regret}.", "recommenders", t,
                   {**n, "best_set": best_set})


def _change_finding(summary, t) -> Finding:
    n = _pick(summary, t, "change_r", "change_p", "best_layer")
    held = bool(summary.change_held.sel(target=t))
    verdict = ("held" if held else "did not hold")
    return Finding(f"\"TL changes the filters where the flows differ\" {verdict} for layer "
                   f"{n['best_layer']}: r = {format_value(n['change_r'])}, p = "
                   f"{format_value(n['change_p'])}.", anchor(f"target {t}"), t, n)


def _shallowest_finding(summary, t) -> Finding:
    n = _pick(summary, t, "shallowest_layer", "best_layer")
    if bool(summary.shallowest_best.sel(target=t)):
        text = f"The shallowest layer ({n['shallowest_layer']}) was the best to re-train."
    else:
        where = ("in the best set" if bool(summary.shallowest_in_best_set.sel(target=t))
                 else "not in the best set")
        text = (f"The shallowest layer ({n['shallowest_layer']}) was not the best (layer "
                f"{n['best_layer']} was); it is {where}.")
    return Finding(text, "transfer", t, n)


def _low_power_finding(summary, t) -> Finding | None:
    n = _pick(summary, t, "n_seeds")
    if not bool(summary.low_power.sel(target=t)):
        return None
    return Finding(f"Warning: only {n['n_seeds']} seeds; the best set and the spreads rest "
                   f"on fewer than {MIN_SEEDS} and are tentative.", "cc-grid", t,
                   {**n, "min_seeds": MIN_SEEDS})


def _benchmark_finding(summary) -> Finding | None:
    if "benchmark_default_regret" not in summary:
        return None
    n = {v: float(summary[v]) for v in ("benchmark_default_regret", "benchmark_rival_regret")}
    n["benchmark_cases"] = int(summary.benchmark_cases)
    a = summary.attrs
    ours, theirs = n["benchmark_default_regret"], n["benchmark_rival_regret"]
    rival = "the best constant guess" if a["benchmark_rival_kind"] == "constant" \
        else "the best method"
    default = (f"the default ({a['benchmark_default']}, a constant guess)"
               if a["benchmark_default_kind"] == "constant"
               else f"the default recommender ({a['benchmark_default']})")
    if a["benchmark_rival_kind"] == "method":
        verdict = "that method beats it" if theirs < ours else "no method beats it"
    else:
        verdict = f"it {'beats' if ours < theirs else 'does not beat'} it"
    return Finding(
        f"Over {n['benchmark_cases']} benchmark cases {default} has mean regret "
        f"{format_value(n['benchmark_default_regret'])} against "
        f"{format_value(n['benchmark_rival_regret'])} for {rival} "
        f"({a['benchmark_rival']}): {verdict}.", "benchmark", "", n)


def key_findings(summary: xr.Dataset) -> list:
    """The key findings stated by :func:`report_summary`'s numbers, per target in order.

    Parameters
    ----------
    summary : xarray.Dataset
        From :func:`report_summary` (or ``results/summary.nc``).

    Returns
    -------
    list of Finding
        Per target: how much the flows differ; whether TL helped a priori; a posteriori,
        the closure closest to the filtered DNS on each measure and whether TL improved on
        the BNN; the best set and whether the recommendation hit it (with its regret);
        whether the spectral change followed the flows' difference; whether the
        shallowest layer was best; a warning with fewer than :data:`MIN_SEEDS` seeds.
        Then the benchmark's mean regrets, when there is one.
    """
    out = []
    for t in summary.target.values.tolist():
        parts = [_flows_finding(summary, t), _apriori_finding(summary, t),
                 _aposteriori_finding(summary, t), _recommendation_finding(summary, t),
                 _change_finding(summary, t), _shallowest_finding(summary, t),
                 _low_power_finding(summary, t)]
        out += [p for p in parts if p is not None]
    bench = _benchmark_finding(summary)
    return out + ([bench] if bench else [])


def _plain(value):
    """A JSON-able form of a numpy or Python scalar (NaN as None)."""
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary_record(summary: xr.Dataset, findings: list) -> dict:
    """``summary`` and its ``findings`` as one JSON-able dict (NaN as null).

    Returns
    -------
    dict
        ``{"attrs": ..., "experiment": {scalar: value}, "targets": {target: {variable:
        value, or {measure or layer: value}}}, "findings": [{"text", "section", "target",
        "numbers"}]}``.
    """
    targets = {}
    for t in summary.target.values.tolist():
        one = summary.sel(target=t)
        record = {}
        for name, da in one.data_vars.items():
            if da.ndim == 0:
                record[name] = _plain(da.values)
            elif "target" in summary[name].dims:
                dim = da.dims[0]
                record[name] = {str(k): _plain(v) for k, v in zip(da[dim].values, da.values)}
        targets[t] = {k: v for k, v in record.items() if "target" in summary[k].dims}
    scalars = {n: _plain(da.values) for n, da in summary.data_vars.items() if da.ndim == 0}
    return {"attrs": {k: _plain(v) for k, v in summary.attrs.items()}, "experiment": scalars,
            "targets": targets,
            "findings": [{"text": f.text, "section": f.section, "target": f.target,
                          "numbers": {k: _plain(v) for k, v in f.numbers.items()}}
                         for f in findings]}
