"""Seed-resolved transfer-learning sweeps, their baselines and their statistics.

A *sweep* re-trains every candidate layer (or pair of layers) of a base network
(BNN) on a small target set, under several seeds, and scores each re-trained
network (TLNN) on held-out target data. Each seed draws another target subset
and another shuffle; within a seed every layer is re-trained on the same
subset, so layers are compared *paired* across seeds. Beside the TLNNs a sweep
can train the baselines of Guan et al. (JCP 2022) and Subel et al. (PNAS Nexus
2023):

* ``"scratch"``: the base architecture trained from a fresh initialisation on
  the same small target subset (same stopping rule);
* ``"full_target"``: trained from a fresh initialisation on every target
  sample given (an upper bound when the target pool is not much smaller than the
  base set).

The BNN itself is scored as ``base_<metric>``.

Which layers are best is a statistical statement: :func:`best_set` keeps every
layer whose skill is not significantly below the best layer's by a one-sided
paired t-test across seeds (see its docstring).

Trainings run one after another here, or as tasks on a dask cluster (one task
per layer and seed); each worker pins its backend's threads to the threads it
was given, so that two single-threaded workers on two cores do not
oversubscribe them.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from .model import Model, model_from_dataset, model_id, model_to_dataset
from .spec import check_layers
from .backends import pin_worker_threads
from .backends.base import get_backend
from .files import save_model
from ..options import Options, check_bool, check_float, check_fraction, check_int
from .backends.loop import FitOptions
from .training import (
    check_model_data,
    check_validation,
    evaluate,
    select_samples,
    stack_samples,
    train,
    transfer,
    variable_samples,
)

__all__ = [
    "SweepOptions",
    "mean_scores",
    "layer_sweep",
    "budget_sweep",
    "best_set",
    "summarize_sweep",
    "pair_gains",
    "holm",
    "concat_budgets",
    "split_budgets",
    "seeds_of",
    "SweepTask",
    "METRICS",
    "BASELINES",
    "LOWER_IS_BETTER",
]

#: Skill metrics of every trained network on the target test set (see :func:`xtl.data.metrics.score`).
METRICS = ("cc", "cc_forward", "cc_backscatter", "backscatter_fraction", "rel_l2",
           "spectrum_error")
#: What each training records beside its skill.
RECORDS = ("final_loss", "final_val_loss", "epochs_run", "best_epoch", "stopped_early",
           "train_seconds")
#: The baselines a sweep can train (see the module docstring).
BASELINES = ("scratch", "full_target")
#: Variables of a sweep for which a lower value is better.
LOWER_IS_BETTER = ("rel_l2", "spectrum_error", "final_loss", "final_val_loss")


# ------------------------------------------------------------------------- seeds
def seeds_of(seeds) -> list:
    """The seeds of a sweep as a list of distinct ints: a count or the seeds themselves.

    One meaning everywhere (:class:`SweepOptions`, ``sweep.seeds`` of a config):
    an int ``n`` is a count, the seeds ``0 .. n-1`` (a config's count starts at
    ``experiment.seed``); a sequence is the seeds.

    Parameters
    ----------
    seeds : int or sequence of int
        How many seeds (>= 1), or the seeds (distinct ints >= 0); ``[3]`` is the
        single seed 3.

    Raises
    ------
    TypeError, ValueError
        Not an int nor a sequence of ints; a count < 1; a negative, repeated or
        no seed.
    """
    form = "a count >= 1 or a list of distinct ints >= 0 (an int n is n seeds, 0..n-1; [3] is the seed 3)"
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be {form}, got {seeds!r}")
        return list(range(int(seeds)))
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be {form}, got {seeds!r}")
    values = list(seeds)
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in values):
        raise TypeError(f"seeds must be {form}, got {seeds!r}")
    if not values or min(values) < 0 or len(set(values)) != len(values):
        raise ValueError(f"seeds must be {form}, got {seeds!r}")
    return [int(s) for s in values]


def _check_baselines(baselines) -> tuple:
    baselines = (baselines,) if isinstance(baselines, str) else tuple(baselines or ())
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"baselines must be among {BASELINES}, got {list(baselines)}")
    if len(set(baselines)) != len(baselines):
        raise ValueError(f"baselines must be distinct, got {list(baselines)}")
    return baselines


@dataclass(frozen=True)
class SweepOptions(Options):
    """How a sweep is designed and fitted (:func:`layer_sweep`, :func:`budget_sweep`).

    Parameters
    ----------
    seeds : int or sequence of int
        A count ``n`` (the seeds ``0 .. n-1``) or the seeds (:func:`seeds_of`).
        Each seed draws another subset of the target pool (the same for every
        layer of that seed) and another shuffle; baselines also get other
        initial weights. Stored as a tuple of distinct ints >= 0.
    pairs : bool
        Re-train every pair ``(a, b)``, ``a < b``, of the layers instead of
        single layers.
    n_samples, fraction : optional
        Size of the re-training subset (as in :func:`xtl.transfer`; default
        all). Unused by :func:`budget_sweep`, whose budgets are the sizes.
    baselines : sequence of str
        Baselines to train for every seed, among :data:`BASELINES`.
    metric : str
        Skill of the best set (one of :data:`METRICS`).
    alpha : float
        Significance level of the best set, in (0, 1).
    progress : bool, optional
        Progress bar over trainings; None: only on a terminal (the trainings
        themselves never show one).
    validation : float or None
        Fraction in [0, 1) of each training set held out for validation
        (:func:`xtl.nn.training.check_validation`, as in :func:`xtl.transfer`).
    renormalize : bool
        Re-train with the target data's standard deviations (as in
        :func:`xtl.transfer`; baselines always use their own).
    fit : FitOptions
        How every network is fitted (``epochs`` — the cap —, ``patience`` for
        early stopping that restores the best weights, ``batch_size``, ...);
        its ``seed`` is replaced by each task's. A ``checkpoint_dir`` gets one
        sub-folder per training, named like its model.
    """

    seeds: tuple = (0,)
    pairs: bool = False
    n_samples: int | None = None
    fraction: float | None = None
    baselines: tuple = ()
    metric: str = "cc"
    alpha: float = 0.05
    progress: bool | None = None
    validation: float | None = 0.1
    renormalize: bool = False
    fit: FitOptions = field(default_factory=FitOptions)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "seeds", tuple(seeds_of(self.seeds)))
        set_(self, "pairs", check_bool(self.pairs, "pairs"))
        set_(self, "n_samples", check_int(self.n_samples, "n_samples", minimum=1, optional=True))
        set_(self, "fraction", check_float(self.fraction, "fraction", positive=True,
                                           maximum=1.0, optional=True))
        if self.n_samples is not None and self.fraction is not None:
            raise ValueError("give n_samples or fraction, not both")
        set_(self, "baselines", _check_baselines(self.baselines))
        if self.metric not in METRICS + RECORDS:
            raise ValueError(f"metric must name a variable of a sweep, one of "
                             f"{METRICS + RECORDS}, got {self.metric!r}")
        set_(self, "alpha", check_fraction(self.alpha, "alpha"))
        set_(self, "progress", check_bool(self.progress, "progress", optional=True))
        set_(self, "validation", check_validation(self.validation))
        set_(self, "renormalize", check_bool(self.renormalize, "renormalize"))
        set_(self, "fit", FitOptions.merge(self.fit))

    @classmethod
    def merge(cls, options=None, /, **kwargs):
        """``options`` with ``kwargs`` replacing sweep options or, by name, fit options.

        A keyword that names a :class:`SweepOptions` field replaces it; one that
        names a :class:`~xtl.nn.backends.loop.FitOptions` field replaces that option of
        ``fit``. ``seed`` is refused: a sweep's seeds are ``seeds``.
        """
        if "seed" in kwargs:
            raise TypeError("a sweep got 'seed' twice: its tasks take their seed from "
                            "seeds=...")
        fit_kwargs = {k: kwargs.pop(k) for k in list(kwargs)
                      if k not in cls.names() and k in FitOptions.names()}
        merged = super().merge(options, **kwargs)
        if fit_kwargs:
            merged = super().merge(merged, fit=merged.fit.replace(**fit_kwargs))
        return merged


# ------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class SweepTask:
    """One training of a sweep.

    Attributes
    ----------
    kind : str
        ``"transfer"`` (re-train ``layers`` of the base network), ``"scratch"`` or
        ``"full_target"`` (a fresh network; see :data:`BASELINES`).
    seed : int
        Seed of the subset, the shuffle and (for baselines) the initial weights.
    layers : tuple of int
        The re-trained layers (``"transfer"`` only).
    n_samples : int
        Size of the re-training subset (unused by ``"full_target"``).
    n_pool : int
        Number of target samples the subset was drawn from.
    """

    kind: str
    seed: int
    layers: tuple = ()
    n_samples: int = 0
    n_pool: int = 0

    @property
    def data(self) -> str:
        """Key of the task's training set: ``"subset-<n>-<seed>"`` or ``"full"``."""
        return "full" if self.kind == "full_target" else _subset_key(self.n_samples, self.seed)

    @property
    def name(self) -> str:
        """File stem of the task's model and checkpoint folder."""
        if self.kind == "transfer":
            return f"tl_layer{'_'.join(map(str, self.layers))}_seed{self.seed}"
        return f"{self.kind}_seed{self.seed}"


def _subset_key(n: int, seed: int) -> str:
    return f"subset-{n}-{seed}"


def run_task(task: SweepTask, base, data: xr.Dataset, test: xr.Dataset,
             options: SweepOptions, save_path=None) -> dict:
    """Train one task of a sweep and score it on the test set.

    Runs on a dask worker when the sweep has a client (it then pins the backend's
    threads to the worker's), else here.

    Parameters
    ----------
    base : Model or xarray.Dataset
        The base network (a model Dataset when shipped to a worker).
    data : xarray.Dataset
        The task's training set (a subset, or every target sample).
    options : SweepOptions
        Its ``fit``, ``validation`` and ``renormalize`` are passed to
        :func:`xtl.transfer` / :func:`xtl.train` (the fit's ``seed`` is the task's).
    save_path : path-like, optional
        Save the trained model there.

    Returns
    -------
    dict
        The metrics of :data:`METRICS` and the records of :data:`RECORDS`.
    """
    # before the backend starts its runtime (building the model does)
    pin_worker_threads([base.attrs["backend"] if isinstance(base, xr.Dataset) else base.backend])
    if isinstance(base, xr.Dataset):
        base = model_from_dataset(base)
    fit = options.fit.replace(seed=task.seed, progress=False)
    start = time.perf_counter()
    if task.kind == "transfer":
        model = transfer(base, data, task.layers, fit, validation=options.validation,
                         renormalize=options.renormalize)
    else:
        v = base.variables
        model = train(data, base.spec, fit, inputs=v.inputs, outputs=v.outputs, channels=v.channels,
                      backend=base.backend, validation=options.validation)
        model.provenance.update(kind=task.kind, baseline_of=model_id(base))
    if task.kind != "full_target":  # the subset's share of the pool it was drawn from
        model.provenance.update(fraction=task.n_samples / task.n_pool, subset_seed=task.seed)
    seconds = time.perf_counter() - start
    result = {k: float(v) for k, v in mean_scores(evaluate(model, test)).data_vars.items()}
    history = model.history
    result["final_loss"] = float(history["loss"].values[-1])
    result["final_val_loss"] = float(history["val_loss"].values[-1]) \
        if "val_loss" in history else math.nan
    for k in ("epochs_run", "best_epoch", "stopped_early"):  # train's epoch_records
        result[k] = float(model.provenance[k])
    result["train_seconds"] = seconds
    if save_path is not None:
        save_model(model, save_path, overwrite=True)  # re-running a sweep into a folder is expected
    return result


def _ordered(tasks: list) -> list:
    """Longest trainings first (full-target, scratch, then shallow layers), for load balance."""
    rank = {"full_target": 0, "scratch": 1, "transfer": 2}
    return sorted(tasks, key=lambda t: (rank[t.kind], t.layers[:1] or (0,), t.seed))


def _task_options(options: SweepOptions, folder) -> SweepOptions:
    """``options`` with the fit's checkpoints in ``folder`` (a task's own sub-folder)."""
    ckpt = options.fit.checkpoint_dir
    if ckpt is None:
        return options
    return options.replace(fit=options.fit.replace(checkpoint_dir=Path(ckpt) / folder))


def _run_tasks(tasks, base, datasets, test, options: SweepOptions, *, client, save_dir,
               stem=lambda t: t.name) -> dict:
    """Run every task (here or on ``client``) → ``{task: result dict}``.

    ``stem(task)`` names the task's model file under ``save_dir`` and its
    checkpoint folder under the fit's ``checkpoint_dir``.
    """
    from .._progress import run_calls

    backend = base.attrs["backend"] if isinstance(base, xr.Dataset) else base.backend
    suffix = get_backend(backend).suffix  # the base network's backend saves them
    paths = {t: None if save_dir is None else Path(save_dir) / f"{stem(t)}{suffix}"
             for t in tasks}
    per_task = {t: _task_options(options, stem(t)) for t in tasks}
    for path in {p.parent for p in paths.values() if p is not None}:
        path.mkdir(parents=True, exist_ok=True)
    if client is not None:  # each worker gets the base network and the data sets once
        keys = sorted(datasets)
        shipped = client.scatter([model_to_dataset(base), test.load()]
                                 + [datasets[k] for k in keys], broadcast=True)
        base, test, datasets = shipped[0], shipped[1], dict(zip(keys, shipped[2:]))
    calls = {t: (t, base, datasets[t.data], test, per_task[t], paths[t]) for t in _ordered(tasks)}
    return run_calls(run_task, calls, client=client, progress=options.progress, desc="sweep",
                     unit="training")


# ------------------------------------------------------------------- statistics
def _higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER and not metric.endswith(tuple(LOWER_IS_BETTER))


def _paired_pvalue(diff: np.ndarray) -> np.ndarray:
    """One-sided paired t-test per row of ``diff`` (variants × seeds, n >= 2 seeds), H1:
    the row's mean difference is > 0: Student's t survival function of
    mean / (std / √n) with n − 1 degrees of freedom; for a constant difference 0 when it
    is > 0, else 1."""
    from scipy.stats import t as student_t

    diff = np.asarray(diff, dtype=np.float64)
    n = diff.shape[1]
    d_mean, d_std = diff.mean(axis=1), diff.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = student_t.sf(d_mean / (d_std / math.sqrt(n)), n - 1)
    return np.where(d_std == 0, (d_mean <= 0).astype(np.float64), p)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values of a family of tests.

    The k-th smallest of m p-values is multiplied by m − k + 1 and the running
    maximum taken (capped at 1): rejecting where the adjusted value is below α keeps
    the chance of any false rejection in the family at most α, whatever the tests'
    dependence.

    Parameters
    ----------
    pvalues : array-like
        The family's p-values (any shape); NaNs are not tests and are not counted.

    Returns
    -------
    numpy.ndarray
        The adjusted p-values, in the input's shape and order (NaN where it was NaN).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    out = np.full(flat.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(flat))
    order = finite[np.argsort(flat[finite], kind="stable")]
    m = len(order)
    out[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * flat[order]), 1.0)
    return out.reshape(p.shape)


def best_set(values: xr.DataArray, *, dim: str = "seed", alpha: float = 0.05,
             higher_is_better: bool | None = None) -> xr.Dataset:
    """The variants not significantly worse than the best one, by a paired test across seeds.

    The best variant has the best mean over ``dim``. For every other variant the
    paired differences ``d_s = best_s − value_s`` (``value_s − best_s`` when lower
    is better) over the seeds ``s`` are tested with a one-sided paired t-test,
    H0: mean ``d`` = 0 against mean ``d`` > 0. A variant whose p-value is below
    ``alpha`` is significantly worse; the others form the best set. No correction
    for multiple comparisons is made, so the set errs on the small side. Special
    cases: with one seed no test is possible (p-values NaN; the set holds the best
    variant alone); differences that are all 0 give p = 1, all equal and non-zero
    give p = 0.

    Parameters
    ----------
    values : xarray.DataArray
        Skill over ``(variant, dim)``: the variant dim is the other dim (``layer``
        or ``pair``). NaN seeds are not allowed.
    dim : str
        The paired dim (the seeds).
    alpha : float
        Significance level in (0, 1).
    higher_is_better : bool, optional
        Default: True unless the values' name is in :data:`LOWER_IS_BETTER`.

    Returns
    -------
    xarray.Dataset
        Over the variant dim: ``mean``, ``sem`` (standard error of the mean,
        ``std(ddof=1)/sqrt(n)``; NaN for one seed), ``pvalue`` (NaN for the best
        itself) and ``in_best_set`` (bool); scalar ``best`` (the best variant's
        label). ``attrs["test"]`` states the test.

    Raises
    ------
    TypeError, ValueError
        Not a 2-D DataArray with ``dim``; NaN; ``alpha`` outside (0, 1).
    """
    if not isinstance(values, xr.DataArray) or values.ndim != 2 or dim not in values.dims:
        raise TypeError(f"values must be a 2-D xarray.DataArray over (variant, {dim!r}), got "
                        f"{getattr(values, 'dims', type(values).__name__)}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if not np.isfinite(values.values).all():
        raise ValueError("values hold NaN or inf; every variant needs every seed")
    variant = [d for d in values.dims if d != dim][0]
    higher = _higher_is_better(str(values.name)) if higher_is_better is None \
        else bool(higher_is_better)
    v = values.transpose(variant, dim).values.astype(np.float64)
    n = v.shape[1]
    mean = v.mean(axis=1)
    sem = v.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.full(len(mean), np.nan)
    signed = v if higher else -v
    best = int(np.argmax(signed.mean(axis=1)))
    diff = signed[best][None, :] - signed
    pvalue = np.full(len(mean), np.nan)
    if n > 1:
        pvalue = _paired_pvalue(diff)  # H1: worse than the best
        pvalue[best] = np.nan
    keep = pvalue >= alpha
    keep[best] = True
    labels = values[variant].values
    test = (f"one-sided paired t-test across {n} {dim}(s) of each {variant} against the best "
            f"(H1: worse), alpha={alpha}, no multiple-comparison correction"
            + ("; a single seed: no test, the best alone" if n < 2 else ""))
    return xr.Dataset(
        {"mean": (variant, mean), "sem": (variant, sem), "pvalue": (variant, pvalue),
         "in_best_set": (variant, keep), "best": ((), labels[best])},
        coords={variant: labels}, attrs={"test": test, "alpha": float(alpha),
                                         "higher_is_better": int(higher)})


def summarize_sweep(sweep: xr.Dataset, *, metric: str = "cc", alpha: float = 0.05) -> xr.Dataset:
    """Add seed means, standard errors and the best set to a sweep Dataset.

    Parameters
    ----------
    sweep : xarray.Dataset
        A sweep over ``(layer | pair, seed)`` (and ``(baseline, seed)``).
    metric : str
        The skill that decides the best set (default ``"cc"``).
    alpha : float
        Significance level of :func:`best_set`.

    Returns
    -------
    xarray.Dataset
        ``sweep`` plus ``<var>_mean`` and ``<var>_sem`` for every metric and record
        over the variants (``baseline_<var>_mean`` ... over ``baseline``),
        ``best_set`` and ``pvalue_vs_best`` over the variants, and attrs
        ``best`` (the best variant), ``best_set`` (a list) and ``best_set_test``.
    """
    variant = "pair" if "pair" in sweep.dims else "layer"
    out = sweep.copy()
    for name in list(sweep.data_vars):
        da = sweep[name]
        if "seed" not in da.dims or name.endswith(("_mean", "_sem")) or name == "subset":
            continue
        n = da.sizes["seed"]
        out[f"{name}_mean"] = da.mean("seed").assign_attrs(da.attrs)
        out[f"{name}_sem"] = (da.std("seed", ddof=1) / math.sqrt(n) if n > 1
                              else da.isel(seed=0) * np.nan).assign_attrs(
            long_name=f"standard error of the mean of {name} over seeds")
    if metric not in sweep or sweep[metric].dims != (variant, "seed"):
        raise ValueError(f"metric must name a variable of sweep over ({variant!r}, 'seed'), "
                         f"got {metric!r}")
    stats = best_set(sweep[metric], alpha=alpha)
    out["best_set"] = stats["in_best_set"].assign_attrs(
        long_name=f"not significantly worse than the best {variant} by {metric}",
        description=stats.attrs["test"])
    out["pvalue_vs_best"] = stats["pvalue"].assign_attrs(
        long_name=f"p-value that the {variant} is worse than the best by {metric}",
        units="1")
    members = stats[variant].values[stats["in_best_set"].values]
    out.attrs.update(best=stats["best"].item(), best_set=members.tolist(),
                     best_set_test=stats.attrs["test"], best_set_metric=metric,
                     alpha=float(alpha))
    return out


def pair_gains(pairs: xr.Dataset, single: xr.Dataset, *, metric: str = "cc") -> xr.Dataset:
    """How much each pair of layers beats the best single layer, paired across seeds.

    Parameters
    ----------
    pairs : xarray.Dataset
        A sweep with ``pairs=True`` (over ``(pair, seed)``).
    single : xarray.Dataset
        The single-layer sweep of the same base, target, subsets and seeds.
    metric : str
        The skill compared (default ``"cc"``; for :data:`LOWER_IS_BETTER` a gain is
        a decrease).

    Returns
    -------
    xarray.Dataset
        Over ``pair``: ``gain`` (mean over seeds of the pair's skill minus the best
        single layer's, signed so that > 0 is better), ``gain_sem`` (its standard
        error; NaN for one seed), ``pvalue`` (one-sided paired t-test, H1: the
        pair is better; NaN for one seed; 0 or 1 for constant differences) and
        ``pvalue_holm`` (the same, Holm-adjusted over the pairs: :func:`holm`; with
        55 pairs, uncorrected p < 0.05 would flag about 3 pairs by chance alone),
        sorted by ``gain``, best first; attrs ``best_single`` (the layer), ``metric``.

    Raises
    ------
    ValueError
        ``pairs`` is not a pair sweep, ``single`` not a layer sweep, or they differ
        in seeds or subsets (their seeds are not paired).
    """
    if "pair" not in pairs.dims or "layer" not in single.dims:
        raise ValueError("pairs must be a sweep over 'pair' (pairs=True) and single one over "
                         f"'layer'; got dims {dict(pairs.sizes)} and {dict(single.sizes)}")
    if pairs.seed.values.tolist() != single.seed.values.tolist() or \
            not np.array_equal(pairs.subset.values, single.subset.values):
        raise ValueError("pairs and single must share their seeds and subsets (the same "
                         "sweep design): their seeds are compared pairwise")
    sign = 1.0 if _higher_is_better(metric) else -1.0
    best = single[metric].mean("seed").argmax("layer") if sign > 0 else \
        single[metric].mean("seed").argmin("layer")
    best_layer = int(single.layer[int(best)])
    diff = sign * (pairs[metric] - single[metric].sel(layer=best_layer, drop=True))
    n = diff.sizes["seed"]
    gain = diff.mean("seed")
    sem = diff.std("seed", ddof=1) / math.sqrt(n) if n > 1 else gain * np.nan
    p = _paired_pvalue(diff.transpose("pair", "seed").values) if n > 1 \
        else np.full(gain.shape, np.nan)
    out = xr.Dataset({"gain": gain, "gain_sem": sem, "pvalue": ("pair", p),
                      "pvalue_holm": ("pair", holm(p))})
    out = out.isel(pair=np.argsort(-gain.values, kind="stable"))
    out.attrs.update(best_single=best_layer, metric=metric)
    return out


# ---------------------------------------------------------------------- sweeps
def mean_scores(scores: xr.Dataset) -> xr.Dataset:
    """Scores (:func:`xtl.evaluate`) as scalars: a model with several outputs or a
    channel dim is scored by the mean over them (the per-output scores stay
    available from :func:`xtl.evaluate`)."""
    return scores.mean(keep_attrs=True) if scores.dims else scores


def _plan(base, target_train, combos, options: SweepOptions, sizes) -> tuple:
    """The tasks of a sweep and the training sets they name (subsets drawn per seed)."""
    n_total = variable_samples(target_train, base.variables)
    seeds, baselines = options.seeds, options.baselines
    tasks, datasets, subsets = [], {}, {}
    for n in sizes:
        for s in seeds:
            key = _subset_key(n, s)
            subsets[key] = select_samples(n_total, n, None, s)
            datasets[key] = stack_samples(target_train, subsets[key], base.variables)
            tasks += [SweepTask("transfer", s, tuple(c), n, n_total) for c in combos]
            if "scratch" in baselines:
                tasks.append(SweepTask("scratch", s, (), n, n_total))
    if "full_target" in baselines:
        datasets["full"] = stack_samples(target_train, np.arange(n_total), base.variables)
        tasks += [SweepTask("full_target", s, (), n_total, n_total) for s in seeds]
    return tasks, datasets, subsets


def _grid(values: dict, rows: list, seeds: list) -> np.ndarray:
    return np.array([[values[(r, s)] for s in seeds] for r in rows], dtype=np.float64)


def _assemble(results: dict, combos, options: SweepOptions, n: int, subsets) -> xr.Dataset:
    """One sweep's results as a Dataset over (layer | pair, seed) and (baseline, seed)."""
    seeds, baselines, pairs = list(options.seeds), options.baselines, options.pairs
    key = {t: r for t, r in results.items() if t.kind == "full_target" or t.n_samples == n}
    tl = {(t.layers, t.seed): r for t, r in key.items() if t.kind == "transfer"}
    names = METRICS + RECORDS
    variant = "pair" if pairs else "layer"
    data = {m: ((variant, "seed"), _grid({k: r[m] for k, r in tl.items()}, combos, seeds))
            for m in names}
    if pairs:
        coords = {"pair": [f"{a}+{b}" for a, b in combos],
                  "layer_a": ("pair", [a for a, _ in combos]),
                  "layer_b": ("pair", [b for _, b in combos])}
    else:
        coords = {"layer": [c[0] for c in combos]}
    coords["seed"] = seeds
    if baselines:
        bl = {(t.kind, t.seed): r for t, r in key.items() if t.kind != "transfer"}
        coords["baseline"] = list(baselines)
        data.update({f"baseline_{m}": (("baseline", "seed"),
                                       _grid({k: r[m] for k, r in bl.items()},
                                             list(baselines), seeds)) for m in names})
    draws = np.array([subsets[_subset_key(n, s)] for s in seeds])
    data["subset"] = (("seed", "draw"), draws)
    return xr.Dataset(data, coords=coords)


_LONG_NAMES = {
    "cc": "correlation coefficient of predicted and true Pi on the target test set",
    "epochs_run": "epochs trained (the cap, or fewer when early stopping stopped it)",
    "best_epoch": "epoch whose weights were kept (lowest validation loss)",
    "stopped_early": "1 if early stopping ended the training before the epoch cap",
    "train_seconds": "wall time of the training",
    "subset": "indices of the target samples the seed drew (stacked member-major, then time)",
}


def _finish(out: xr.Dataset, base, target_train, target_test, options: SweepOptions,
            n: int) -> xr.Dataset:
    base_scores = mean_scores(evaluate(base, target_test))
    for k, v in base_scores.data_vars.items():
        out[f"base_{k}"] = v
        if k in out:
            out[k].attrs.update(v.attrs)
    for k, text in _LONG_NAMES.items():
        if k in out:
            out[k].attrs["long_name"] = text
    out.attrs.update({
        "base_model": model_id(base),
        "base_case": base.provenance.get("training_case", "unknown"),
        "target_case": str(target_train.attrs.get("case_name", "unknown")),
        "test_case": str(target_test.attrs.get("case_name", "unknown")),
        "n_samples": int(n),
        "n_target": variable_samples(target_train, base.variables),
        "seeds": list(options.seeds),
        "epochs": options.fit.epochs,
        "patience": -1 if options.fit.patience is None else options.fit.patience,
    })
    return out


def _prepare_sweep(base, target_train, target_test, layers, options: SweepOptions) -> list:
    """The layers (or pairs) a sweep re-trains, after checking its inputs."""
    if not isinstance(base, Model):
        raise TypeError(f"base must be an xtl Model, got {type(base).__name__}")
    layers = check_layers(range(1, base.n_layers + 1) if layers is None else layers,
                          base.n_layers)
    check_model_data(base, target_train, "target_train")
    check_model_data(base, target_test, "target_test")
    combos = list(itertools.combinations(layers, 2 if options.pairs else 1))
    if not combos:
        raise ValueError("pairs=True needs at least two layers")
    return combos


def layer_sweep(base: Model, target_train, target_test, layers=None,
                options: SweepOptions | None = None, *, client=None, save_dir=None,
                **kwargs) -> xr.Dataset:
    """Re-train each layer (or pair of layers) of ``base`` under several seeds and score it.

    Parameters
    ----------
    base : Model
        The base network (BNN).
    target_train : xarray.Dataset
        Target-flow LES data to draw the re-training subsets from.
    target_test : xarray.Dataset
        Target-flow LES data to score on (held out).
    layers : sequence of int, optional
        Layers to sweep (default all 1..L).
    options : SweepOptions, optional
        See :class:`SweepOptions`.
    client : distributed.Client, optional
        Run one task per (layer, seed) and per (baseline, seed) on this cluster;
        default: one after another here.
    save_dir : path-like, optional
        Save every trained model there (``tl_layer<k>_seed<s>.keras`` and its
        ``.nc``; ``scratch_seed<s>``, ``full_target_seed<s>``), replacing files.
        On a cluster it must be reachable from the workers.
    **kwargs
        Single sweep options (``seeds=[0, 1]``, ``fraction=0.1``) or fit options
        (``epochs=200``, ``patience=10``) by name, replacing those of ``options``.

    Returns
    -------
    xarray.Dataset
        Over ``(layer, seed)`` (or ``(pair, seed)`` with coordinates ``layer_a``,
        ``layer_b``): the metrics of :data:`METRICS` and the records of
        :data:`RECORDS`; over ``(baseline, seed)`` the same as ``baseline_<name>``;
        ``subset(seed, draw)``, the drawn sample indices; the BNN's scores as
        ``base_<metric>`` scalars; the summary of :func:`summarize_sweep`.

    Examples
    --------
    >>> sweep = xtl.layer_sweep(bnn, pool, test, seeds=[0, 1, 2], fraction=0.1,
    ...                         baselines=["scratch"], epochs=200, patience=10)
    >>> sweep.cc_mean.to_series(), sweep.attrs["best_set"]
    """
    options = SweepOptions.merge(options, **kwargs)
    combos = _prepare_sweep(base, target_train, target_test, layers, options)
    n = len(select_samples(variable_samples(target_train, base.variables), options.n_samples,
                           options.fraction))
    tasks, datasets, subsets = _plan(base, target_train, combos, options, [n])
    results = _run_tasks(tasks, base, datasets, target_test, options, client=client,
                         save_dir=save_dir)
    out = _assemble(results, combos, options, n, subsets)
    out = _finish(out, base, target_train, target_test, options, n)
    out.attrs["pairs"] = int(options.pairs)
    return summarize_sweep(out, metric=options.metric, alpha=options.alpha)


def _check_budgets(budgets, n_total: int) -> list:
    try:
        values = list(budgets)
    except TypeError:
        raise TypeError(f"budgets must be a sequence of sample counts, got {budgets!r}") from None
    if not values or any(isinstance(b, bool) or not isinstance(b, (int, np.integer))
                         or not 1 <= b <= n_total for b in values):
        raise ValueError(f"budgets must be sample counts in 1..{n_total} (the samples of "
                         f"target_train), got {budgets!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"budgets must be distinct, got {budgets!r}")
    return sorted(int(b) for b in values)


def budget_sweep(base: Model, target_train, target_test, budgets, layers=None,
                 options: SweepOptions | None = None, *, client=None, save_dir=None,
                 **kwargs) -> xr.Dataset:
    """Single-layer sweeps at several re-training set sizes, run as one pool of tasks.

    Parameters
    ----------
    base, target_train, target_test, layers, client :
        As in :func:`layer_sweep`.
    budgets : sequence of int
        Re-training set sizes (samples of ``target_train``), distinct, each ≥ 1.
    options : SweepOptions, optional
        As in :func:`layer_sweep` (``pairs``, ``n_samples`` and ``fraction``
        unused); ``"scratch"`` is trained at every budget, ``"full_target"``
        once per seed (repeated along ``budget``).
    save_dir : path-like, optional
        Models go to ``<save_dir>/n<budget>/`` (full-target ones to ``<save_dir>``).
    **kwargs
        Single sweep or fit options by name, as in :func:`layer_sweep`.

    Returns
    -------
    xarray.Dataset
        The sweeps of :func:`layer_sweep` concatenated along ``budget`` (the set
        sizes, ascending; coordinate ``fraction`` of ``target_train``), each
        summarized on its own (``best_set(budget, layer)``), plus
        ``best_layer(budget)``. ``subset`` is padded with -1.
    """
    options = SweepOptions.merge(options, **kwargs).replace(pairs=False)
    combos = _prepare_sweep(base, target_train, target_test, layers, options)
    n_total = variable_samples(target_train, base.variables)
    sizes = _check_budgets(budgets, n_total)
    tasks, datasets, subsets = _plan(base, target_train, combos, options, sizes)
    results = _run_tasks(tasks, base, datasets, target_test, options, client=client,
                         save_dir=save_dir,
                         stem=lambda t: t.name if t.kind == "full_target"
                         else f"n{t.n_samples}/{t.name}")
    sweeps = []
    for n in sizes:
        out = _assemble(results, combos, options, n, subsets)
        out = _finish(out, base, target_train, target_test, options, n)
        sweeps.append(summarize_sweep(out, metric=options.metric, alpha=options.alpha))
    return concat_budgets(sweeps, n_pool=n_total)


def split_budgets(budget: xr.Dataset) -> list:
    """The single-budget sweeps of :func:`budget_sweep` or :func:`concat_budgets` (its inverse).

    Returns
    -------
    list of xarray.Dataset
        One sweep per budget, ascending, with ``attrs["n_samples"]`` and ``attrs["best"]``
        and ``subset`` trimmed to the budget.
    """
    out = []
    for n in budget.budget.values:
        one = budget.sel(budget=n).drop_vars(["budget", "fraction", "best_layer"])
        one = one.isel(draw=slice(0, int(n)))
        one.attrs.update(n_samples=int(n), best=int(budget.best_layer.sel(budget=n)))
        out.append(one)
    return out


def concat_budgets(sweeps, *, n_pool: int) -> xr.Dataset:
    """Join single-budget sweeps along a ``budget`` dim (ascending).

    Parameters
    ----------
    sweeps : sequence of xarray.Dataset
        Summarized single-layer sweeps (:func:`layer_sweep`) over the same layers,
        seeds and baselines, each with ``attrs["n_samples"]`` (its budget) and
        ``attrs["best"]``.
    n_pool : int
        Size of the pool the subsets were drawn from (for the ``fraction`` coordinate).

    Returns
    -------
    xarray.Dataset
        Over ``budget``: every variable; ``subset`` padded with -1; ``best_layer(budget)``.
    """
    sweeps = sorted(sweeps, key=lambda s: int(s.attrs["n_samples"]))
    sizes = [int(s.attrs["n_samples"]) for s in sweeps]
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"sweeps must have distinct budgets, got {sizes}")
    longest = max(s.sizes["draw"] for s in sweeps)
    padded = [s.drop_vars("subset").assign(
        subset=s.subset.pad(draw=(0, longest - s.sizes["draw"]), constant_values=-1))
        for s in sweeps]
    out = xr.concat(padded, dim="budget", data_vars="all", coords="different",
                    compat="equals", combine_attrs="drop_conflicts")
    out = out.assign_coords(budget=sizes, fraction=("budget", [n / n_pool for n in sizes]))
    metric = sweeps[0].attrs.get("best_set_metric", "cc")
    out["best_layer"] = ("budget", np.array([s.attrs["best"] for s in sweeps], np.int64),
                         {"long_name": f"layer with the best mean {metric} at each budget"})
    for key in ("best", "best_set", "n_samples"):
        out.attrs.pop(key, None)
    return out
