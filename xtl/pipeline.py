"""The end-to-end experiment behind ``xtl demo`` and ``xtl run CONFIG``.

Stages (each writes its artifacts under ``out/`` and a manifest
``out/stages/<stage>.json`` holding a hash of its inputs and config; a stage
whose hash and artifacts are unchanged is skipped, so an interrupted
experiment resumes where it stopped):

1. ``data-<flow>``: a DNS ensemble of each flow, coarse-grained on the fly to
   LES data (ψ̄, ω̄, Π) — :func:`xtl.ensemble`;
2. ``flows``: how many decades each target's spectra are from the base's
   (:func:`xtl.explain.flow_difference`); the experiment stops here, naming the
   target, when one that is not marked ``control`` differs by less than
   ``experiment.min_decades`` at every LES shell;
3. ``base-model``: the base network (BNN) — :func:`xtl.train` — and its scores
   on held-out base data;
4. ``recommend-<target>``: every configured recommender, before any
   re-training, on the re-training subset of the first seed —
   :func:`xtl.recommend_layers`;
5. ``sweep-<target>``: every single layer re-trained under every seed on
   ~``fraction`` of the base data's size of target data, with the baselines,
   scored on held-out target data — :func:`xtl.layer_sweep`;
6. ``explain-<target>``: spectra of flows and Π, the most-changed kernels, and
   whether the best layer changed where the flows differ —
   :func:`xtl.explain.spectral_change_correlation`;
7. ``aposteriori-<target>``: LES with no closure, the physics baselines, the BNN,
   the best TLNN and the sweep's baselines from several held-out target states,
   against the filtered DNS — :func:`xtl.les.run_aposteriori`, one dask task per
   closure and initial state;
8. ``budget-<target>`` (with ``[budget]``): the sweep and the recommenders at
   other re-training set sizes — :func:`xtl.budget_sweep`;
9. ``report``: ``report.html`` with PNG figures beside it.

Sweeps run on the experiment's dask cluster (the one of the DNS ensembles), one
task per layer and seed.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .config import ExperimentConfig, load_config
from .io import load_dataset

__all__ = ["run_experiment", "Experiment", "TargetsTooClose", "check_targets_differ"]

#: Fraction of each flow's snapshots (the latest times) held out for testing.
TEST_FRACTION = 0.25


def _log(message: str) -> None:
    print(f"[xtl {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _train_and_score(train_ds, test_ds, network, kwargs, progress, fraction=None):
    """Train on ``train_ds`` (or a seeded ``fraction`` of it) and score on ``test_ds``."""
    from .training import evaluate, select_samples, stack_samples, train

    if fraction is not None:
        n = n_samples(train_ds)
        train_ds = stack_samples(train_ds, select_samples(n, None, fraction,
                                                          kwargs.get("seed", 0)))
    model = train(train_ds, network, progress=progress, **kwargs)
    scores = evaluate(model, test_ds)
    scores.attrs.update(n_train=int(n_samples(train_ds)), **{
        k: model.provenance[k] for k in ("n_samples", "n_validation", "epochs_run",
                                         "best_epoch")})
    return model, scores


class TargetsTooClose(ValueError):
    """A target differs from the base by less than ``experiment.min_decades`` at every shell."""


def check_targets_differ(flows_file, config: ExperimentConfig) -> None:
    """Stop the experiment when a target (not marked ``control``) is too close to the base.

    Parameters
    ----------
    flows_file : path-like
        ``results/flows.nc`` (:func:`xtl.explain.flow_difference` per target).
    config : ExperimentConfig

    Raises
    ------
    TargetsTooClose
        Naming every such target and its largest difference in decades per variable.
    """
    decades = load_dataset(flows_file).max_decades
    close = []
    for target in config.targets:
        if target.control:
            continue
        per_var = decades.sel(target=target.name)
        if float(per_var.max()) < config.min_decades:
            detail = ", ".join(f"{v} {float(per_var.sel(variable=v)):.2f}"
                               for v in per_var["variable"].values)
            close.append(f"target {target.name!r} differs from the base "
                         f"{config.base.name!r} by at most {float(per_var.max()):.2f} decades "
                         f"at the LES shells ({detail})")
    if close:
        raise TargetsTooClose(
            "; ".join(close) + f": less than experiment.min_decades = {config.min_decades}, "
            "so it is not a transfer-learning problem. Choose a target that differs more, or "
            "mark it `control = true` in its [[targets]] table")


def _sample_dims(ds):
    return [d for d in ("member", "time") if d in ds.dims]


def split_train_test(ds: xr.Dataset, test_fraction: float = TEST_FRACTION):
    """Split LES data along ``time``: the last ``test_fraction`` of times is the test set.

    Parameters
    ----------
    ds : xarray.Dataset
        With a ``time`` dim of at least 2 snapshots.
    test_fraction : float
        Fraction of the times held out (at least one time).

    Returns
    -------
    (xarray.Dataset, xarray.Dataset)
        The earlier times (training / re-training pool) and the later ones (test).
    """
    nt = ds.sizes["time"]
    n_test = max(1, int(round(nt * test_fraction)))
    if n_test >= nt:
        raise ValueError(f"a flow needs at least 2 snapshots to split, got {nt}")
    return ds.isel(time=slice(0, nt - n_test)), ds.isel(time=slice(nt - n_test, None))


def n_samples(ds: xr.Dataset) -> int:
    """Number of samples of an LES Dataset: the product of its leading (non-grid) dims.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    int
    """
    from .training import count_samples

    return count_samples(ds["pi"])


class Experiment:
    """Runs the stages of one experiment into ``out``; see the module docstring.

    Parameters
    ----------
    config : ExperimentConfig
    out : path-like
        Output folder (created).
    client : distributed.Client, optional
        Cluster for the DNS ensembles and the layer sweep.
    scheduler : str, optional
        Address of an existing dask scheduler (instead of ``client``).
    progress : bool, optional
        Progress bars (default: on a terminal).
    """

    def __init__(self, config: ExperimentConfig, out, client=None, scheduler=None, progress=None):
        self.config = config
        self.out = Path(out)
        self.client = client
        self.scheduler = scheduler
        self.progress = progress
        self.keys: dict = {}
        self.ran: list = []
        self.skipped: list = []
        self.timings: dict = {}
        self._data: dict = {}
        self._own_cluster = None
        for sub in ("stages", "data", "models", "results", "figures"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        config_file = self.out / "config.json"
        tmp = config_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_config_as_toml_dict(config), indent=1))
        os.replace(tmp, config_file)

    # -- stage bookkeeping ------------------------------------------------------
    def _manifest(self, stage):
        return self.out / "stages" / f"{stage}.json"

    def stage(self, name, key_parts, outputs, func):
        """Run ``func()`` unless stage ``name`` already ran with the same inputs.

        ``key_parts`` (JSON-able) and the keys of the stages it names as
        ``"@stage"`` make the hash; ``outputs`` (paths relative to ``out``) must
        all exist for a skip.
        """
        parts = [self.keys.get(p[1:], p) if isinstance(p, str) and p.startswith("@") else p
                 for p in key_parts]
        key = self.config.digest(name, *parts)
        manifest = self._manifest(name)
        if manifest.exists() and all((self.out / o).exists() for o in outputs):
            if json.loads(manifest.read_text()).get("key") == key:
                self.keys[name] = key
                self.skipped.append(name)
                _log(f"{name}: unchanged, skipped")
                return
        _log(f"{name}: running")
        start = time.perf_counter()
        func()
        self.timings[name] = time.perf_counter() - start
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "outputs": list(outputs),
                                   "seconds": self.timings[name]}))
        os.replace(tmp, manifest)
        self.keys[name] = key
        self.ran.append(name)
        _log(f"{name}: done in {self.timings[name]:.0f} s")

    # -- artifacts ---------------------------------------------------------------
    def flows(self):
        """``[(role, FlowConfig)]`` for the base and every target."""
        return [("base", self.config.base)] + [("target", t) for t in self.config.targets]

    def _ensemble_client(self):
        """The client for DNS ensembles: the given one, or one LocalCluster for all flows."""
        if self.client is not None or self.scheduler is not None or os.environ.get(
                "DASK_SCHEDULER_ADDRESS"):
            return self.client
        if self._own_cluster is None:
            from .solver.ensemble import default_n_workers, local_cluster

            self._own_cluster = local_cluster(default_n_workers())
        return self._own_cluster[1]

    def close(self):
        """Close the LocalCluster this experiment started, if any."""
        if self._own_cluster is not None:
            cluster, client = self._own_cluster
            client.close()
            cluster.close()
            self._own_cluster = None

    def les_data(self, flow) -> xr.Dataset:
        """The LES data of a flow (complete members only), run on first use."""
        if flow.name not in self._data:
            self._data[flow.name] = self._run_ensemble(flow)
        return self._data[flow.name]

    def _run_ensemble(self, flow) -> xr.Dataset:
        from .solver.ensemble import ensemble

        ds = ensemble(
            flow.make_case(), seeds=[self.config.seed + i for i in range(flow.members)],
            t_end=flow.t_end, save_interval=flow.save_interval, spin_up=flow.spin_up,
            directory=self.out / "data" / flow.name,
            les=dict(n_les=flow.make_case().n_les, filter=flow.filter),
            client=self._ensemble_client(), scheduler=self.scheduler, progress=self.progress,
        )
        ok = ds.status == "complete"
        if not bool(ok.all()):
            _log(f"{flow.name}: {int((~ok).sum())} member(s) failed: "
                 f"{sorted(set(ds.error.values[~ok.values].tolist()))}")
        ds = ds.sel(member=ok)
        ds.attrs["case_name"] = flow.name
        return ds

    def model_path(self, name):
        """Path of the saved model ``name`` (``.keras``; its ``.nc`` lies beside it)."""
        return self.out / "models" / f"{name}.keras"

    def load_model(self, name):
        """Load the saved model ``name`` (e.g. ``"base"``)."""
        from .backends import load_model

        return load_model(self.model_path(name))

    # -- stages -------------------------------------------------------------------
    def run(self):
        """Run every stage (skipping the unchanged ones); returns the results."""
        cfg = self.config
        try:
            return self._run_stages(cfg)
        finally:
            self.close()

    def _run_data_concurrently(self):
        """Run the DNS ensembles of all flows at once on one cluster (threads submit)."""
        from concurrent.futures import ThreadPoolExecutor

        flows = [f for _, f in self.flows()]
        self._ensemble_client()  # start the one cluster before the threads share it
        with ThreadPoolExecutor(len(flows)) as pool:
            list(pool.map(self.les_data, flows))

    def _run_stages(self, cfg):
        stale = [f for _, f in self.flows() if not (self.out / "data" / f.name).exists()
                 or not self._manifest(f"data-{f.name}").exists()]
        if len(stale) > 1:
            _log(f"DNS ensembles of {[f.name for f in stale]} on one dask cluster")
            self._run_data_concurrently()
        for _, flow in self.flows():
            self.stage(f"data-{flow.name}", [flow.__dict__.copy(), cfg.seed],
                       [f"data/{flow.name}"], lambda flow=flow: self.les_data(flow))
        self.stage("flows", [f"@data-{f.name}" for _, f in self.flows()],
                   ["results/flows.nc"], self._flows)
        check_targets_differ(self.out / "results" / "flows.nc", cfg)
        self.stage("base-model", ["@data-" + cfg.base.name, cfg.network, cfg.training],
                   ["models/base.keras", "models/base.nc", "results/base-scores.nc"],
                   self._train_base)
        for target in cfg.targets:
            t = target.name
            self.stage(f"recommend-{t}", ["@base-model", f"@data-{t}", cfg.transfer,
                                         cfg.seeds, cfg.recommend],
                       [self._recommend_file(t, m) for m in cfg.recommend["methods"]],
                       lambda t=target: self._recommend(t))
            self.stage(f"sweep-{t}", ["@base-model", f"@data-{t}", cfg.transfer, cfg.sweep,
                                     *self._sweep_needs_recommendation(t)],
                       [f"results/sweep-{t}.nc"], lambda t=target: self._sweep(t))
            self.stage(f"explain-{t}", [f"@sweep-{t}", "@flows"], [f"results/explain-{t}.nc"],
                       lambda t=target: self._explain(t))
            if cfg.les.get("enabled", True):
                self.stage(f"aposteriori-{t}", [f"@sweep-{t}", cfg.les],
                           [f"results/aposteriori-{t}.nc"], lambda t=target: self._aposteriori(t))
        if cfg.budget:
            t = cfg.budget["target"]
            self.stage(f"budget-{t}", [f"@sweep-{t}", cfg.budget, cfg.recommend],
                       [f"results/budget-{t}.nc"], lambda: self._budget(cfg.target(t)))
        self.stage("report", [self.keys.copy()], ["report.html"], self._report)
        return self.summary()

    # -- data -----------------------------------------------------------------
    def _flows(self):
        """How far each target's spectra are from the base's (``results/flows.nc``)."""
        from .explain import flow_difference
        from .io import write_dataset

        base = self.les_data(self.config.base)
        diffs = [flow_difference(base, self.les_data(t)) for t in self.config.targets]
        ds = xr.concat(diffs, dim="target", combine_attrs="drop_conflicts")
        ds = ds.assign_coords(target=[t.name for t in self.config.targets],
                              control=("target", [t.control for t in self.config.targets]))
        ds.attrs.update(base_case=self.config.base.name, min_decades=self.config.min_decades)
        write_dataset(ds, self.out / "results" / "flows.nc", overwrite=True)

    # -- the base network -------------------------------------------------------
    def _train_base(self):
        """The BNN, its scores on held-out base data, and (with ``learning_curve``) the
        scores of networks trained on seeded subsets of the base training set."""
        from .backends import save_model
        from .io import write_dataset

        cfg = self.config
        base_train, base_test = split_train_test(self.les_data(cfg.base))
        kwargs = {"seed": cfg.seed, **cfg.training}
        fractions = [float(f) for f in kwargs.pop("learning_curve", [])]
        model, scores = _train_and_score(base_train, base_test, cfg.network, kwargs,
                                         self.progress)
        save_model(model, self.model_path("base"), overwrite=True)
        curve = [scores]
        for fraction in fractions:
            _log(f"base-model: learning curve at {fraction:.0%} of the training set")
            curve.append(_train_and_score(base_train, base_test, cfg.network, kwargs,
                                          self.progress, fraction=fraction)[1])
        curve.sort(key=lambda d: d.attrs["n_train"])
        out = xr.concat(curve, dim="n_train", combine_attrs="drop_conflicts")
        out = out.assign_coords(n_train=[d.attrs["n_train"] for d in curve])
        out.attrs.update(n_test=n_samples(base_test), n_train_full=scores.attrs["n_train"])
        write_dataset(out, self.out / "results" / "base-scores.nc", overwrite=True)

    def _base_train(self):
        """The base flow's training part (the test part is not used)."""
        return split_train_test(self.les_data(self.config.base))[0]

    def _target_sets(self, target):
        """(re-training pool, test set) of a target flow."""
        return split_train_test(self.les_data(target))

    def _n_transfer_samples(self, pool, fraction=None):
        """Target samples for re-training: a fraction of the base training set's size.

        ``transfer.n_samples`` when given, else ``fraction`` (default
        ``transfer.fraction``, 0.1) of the base training set, capped by the pool.
        """
        cfg = self.config.transfer
        if fraction is None and "n_samples" in cfg:
            return min(int(cfg["n_samples"]), n_samples(pool))
        fraction = cfg.get("fraction", 0.1) if fraction is None else fraction
        wanted = int(round(fraction * n_samples(self._base_train())))
        return max(2, min(wanted, n_samples(pool)))

    def _transfer_kwargs(self):
        return {k: v for k, v in self.config.transfer.items()
                if k not in ("fraction", "n_samples", "layers", "seed")}

    # -- recommendations ----------------------------------------------------------
    def _recommend_file(self, target_name, method, n=None):
        suffix = "" if n is None else f"-n{n}"
        return f"results/recommend-{target_name}{suffix}-{method}.nc"

    def recommendation(self, target_name, method=None, n=None) -> xr.Dataset:
        """A saved recommendation (default method, main budget unless ``n``)."""
        method = method or self.config.recommend["default"]
        return load_dataset(self.out / self._recommend_file(target_name, method, n))

    def _recommend_at(self, target, n):
        """Every configured recommender on the first seed's re-training subset of size ``n``."""
        from .io import write_dataset
        from .recommend import recommend_layers
        from .training import select_samples, stack_samples

        cfg = self.config
        base = self.load_model("base")
        pool, _ = self._target_sets(target)
        subset = stack_samples(pool, select_samples(n_samples(pool), n, None, cfg.seeds[0]))
        subset.attrs["case_name"] = target.name
        for method in cfg.recommend["methods"]:
            options = dict(cfg.recommend["options"].get(method, {}))
            if method == "probe":  # the probe extrapolates to the sweep's epoch cap
                options.setdefault("horizon", int(cfg.transfer.get("epochs", 20)))
                options.setdefault("batch_size", int(cfg.transfer.get("batch_size", 8)))
                options.setdefault("learning_rate", float(cfg.transfer.get("learning_rate",
                                                                           1e-3)))
            rec = recommend_layers(base, self._base_train(), subset, method=method, **options)
            rec.attrs["n_samples"] = int(n)
            _log(f"recommend {target.name} (n={n}) by {method}: {rec.attrs['recommended']} "
                 f"in {float(rec.seconds):.0f} s")
            write_dataset(rec, self.out / self._recommend_file(
                target.name, method, None if n == self._main_n(target) else n), overwrite=True)

    def _main_n(self, target):
        return self._n_transfer_samples(self._target_sets(target)[0])

    def sweep_size(self, target_name: str) -> int:
        """Size of the re-training subsets of the main sweep of a target."""
        return self._main_n(self.config.target(target_name))

    def _recommend(self, target):
        self._recommend_at(target, self._main_n(target))

    def _sweep_needs_recommendation(self, target_name):
        """The sweep depends on the recommendation only when it does not sweep every layer."""
        sweep = self.config.sweep
        if sweep.get("enabled", True) and sweep.get("layers") is None:
            return []
        return [f"@recommend-{target_name}"]

    # -- sweeps ---------------------------------------------------------------------
    def _sweep_layers(self, target):
        """Every layer; or the configured ones plus the recommended; or only the recommended."""
        from .recommend import recommended_layers

        sweep = self.config.sweep
        if sweep.get("enabled", True) and sweep.get("layers") is None:
            return None
        recommended = recommended_layers(self.recommendation(target.name))
        if not sweep.get("enabled", True):
            return recommended
        return sorted(set(int(v) for v in sweep["layers"]) | set(recommended))

    def _sweep(self, target):
        from .io import write_dataset
        from .sweep import layer_sweep

        cfg = self.config
        base = self.load_model("base")
        pool, test = self._target_sets(target)
        sweep = layer_sweep(base, pool, test, layers=self._sweep_layers(target),
                            seeds=cfg.seeds, n_samples=self._main_n(target),
                            baselines=cfg.sweep.get("baselines", []),
                            alpha=cfg.sweep.get("alpha", 0.05), client=self._ensemble_client(),
                            save_dir=self.out / "models" / f"tl-{target.name}",
                            progress=self.progress, **self._transfer_kwargs())
        write_dataset(sweep, self.out / "results" / f"sweep-{target.name}.nc", overwrite=True)

    def _budget(self, target):
        """Sweeps at the other budgets of ``[budget]``, joined with the main sweep."""
        from .io import write_dataset
        from .sweep import budget_sweep, concat_budgets, split_budgets

        cfg = self.config
        base = self.load_model("base")
        pool, test = self._target_sets(target)
        main_n = self._main_n(target)
        sizes = sorted({self._n_transfer_samples(pool, f) for f in cfg.budget["fractions"]}
                       - {main_n})
        main = load_dataset(self.out / "results" / f"sweep-{target.name}.nc")
        baselines = [b for b in cfg.sweep.get("baselines", []) if b == "scratch"]
        parts = [main.sel(baseline=baselines) if "baseline" in main.dims else main]
        if sizes:
            extra = budget_sweep(base, pool, test, sizes, layers=self._sweep_layers(target),
                                 seeds=cfg.seeds, baselines=baselines,
                                 alpha=cfg.sweep.get("alpha", 0.05),
                                 client=self._ensemble_client(),
                                 save_dir=self.out / "models" / f"budget-{target.name}",
                                 progress=self.progress, **self._transfer_kwargs())
            parts += split_budgets(extra)
            for n in sizes:
                self._recommend_at(target, n)
        combined = concat_budgets(parts, n_pool=n_samples(pool))
        combined.attrs["n_base_train"] = n_samples(self._base_train())
        write_dataset(combined, self.out / "results" / f"budget-{target.name}.nc",
                      overwrite=True)

    def best_layer(self, target) -> int:
        """The single layer with the best mean CC over seeds on the target test set."""
        sweep = load_dataset(self.out / "results" / f"sweep-{target.name}.nc")
        return int(sweep.layer[int(np.nanargmax(sweep["cc_mean"].values))])

    def tl_model(self, target, layer, seed=None):
        """The sweep's TLNN of ``target`` with ``layer`` re-trained (first seed by default)."""
        from .backends import load_model

        seed = self.config.seeds[0] if seed is None else seed
        return load_model(self.out / "models" / f"tl-{target.name}"
                          / f"tl_layer{layer}_seed{seed}.keras")

    # -- explanations -----------------------------------------------------------------
    def _explain(self, target):
        from .backends import model_to_dataset
        from .explain import spectral_change_correlation
        from .io import write_dataset
        from .spectral import kernel_change, spectrum
        from .training import predict

        base = self.load_model("base")
        pool, test = self._target_sets(target)
        base_train = self._base_train()
        best = self.best_layer(target)
        tls = [self.tl_model(target, best, s) for s in self.config.seeds]
        n_les = test.sizes["x"]
        out = xr.Dataset()
        for label, ds in (("base", base_train), ("target", pool)):
            dims = _sample_dims(ds)
            out[f"energy_{label}"] = spectrum(ds, kind="energy").mean(dims)
            out[f"enstrophy_{label}"] = spectrum(ds, kind="enstrophy").mean(dims)
        dims = _sample_dims(test)
        out["pi_truth"] = spectrum(test.pi).mean(dims)
        out["pi_bnn"] = spectrum(predict(base, test)).mean(dims)
        out["pi_tlnn"] = spectrum(predict(tls[0], test)).mean(dims)
        base_ds = model_to_dataset(base)
        change = kernel_change(base_ds, tls[0].to_dataset(), n=n_les, percentile=99.0)
        change = change.isel(top=slice(0, 8))
        weight = load_dataset(self.out / "results" / "flows.nc").shell_weight.sel(
            target=target.name)
        kmax = n_les // 2 - 1  # the shells the square LES grid holds whole
        corr = spectral_change_correlation(base_ds, [m.to_dataset() for m in tls], best,
                                           weight.sel(k=slice(0, kmax)).drop_vars(
                                               ["target", "control"], errors="ignore"))
        out = xr.merge([out, change.rename({"layer": "kernel_layer"}),
                        corr.rename(k="shell").rename(
                            change_profile="change_profile", shell_weight="change_weight")],
                       compat="override")
        out.attrs.update(best_layer=best, target=target.name, n_les=n_les,
                         change_correlation=float(corr.correlation),
                         change_pvalue=float(corr.pvalue))
        write_dataset(out.compute(), self.out / "results" / f"explain-{target.name}.nc",
                      overwrite=True)

    def aposteriori_closures(self, target) -> dict:
        """``{label: closure}`` of the a posteriori stage of ``target``.

        No closure; the physics baselines of ``les.baseline``; the BNN; the best
        layer's TLNN; and the sweep's baselines it trained (``scratch``,
        ``full_target``) — the networks of the first seed.
        """
        from .backends import load_model
        from .config import LES_DEFAULTS
        from .les import DynamicSmagorinsky, ModelClosure, Smagorinsky

        cfg = self.config
        n_les = target.make_case().n_les
        baseline = cfg.les.get("baseline", LES_DEFAULTS["baseline"])
        physics = {"smagorinsky": lambda: Smagorinsky(n_les),
                   "dynamic-smagorinsky": lambda: DynamicSmagorinsky(n_les)}
        closures = {"no closure": None}
        for name in [baseline] if isinstance(baseline, str) else baseline:
            closures[name] = physics[name]()
        closures["BNN"] = ModelClosure(self.load_model("base"))
        closures["TLNN"] = ModelClosure(self.tl_model(target, self.best_layer(target)))
        folder = self.out / "models" / f"tl-{target.name}"
        for kind in cfg.sweep.get("baselines", []):
            closures[kind] = ModelClosure(load_model(folder / f"{kind}_seed{cfg.seeds[0]}.keras"))
        return closures

    def _aposteriori(self, target):
        """Every closure from ``les.initial_states`` held-out target states, against the FDNS."""
        from .config import LES_DEFAULTS
        from .io import write_dataset
        from .les import run_aposteriori, select_initial_states

        cfg = {**LES_DEFAULTS, **self.config.les}
        _, test = self._target_sets(target)
        initials = select_initial_states(test, int(cfg["initial_states"])).load()
        fdns = self.les_data(target)  # the whole flow: its climatology, tails included
        ds = run_aposteriori(target.make_case(), self.aposteriori_closures(target), initials,
                             fdns, t_end=float(cfg["t_end"]),
                             save_interval=float(cfg["save_interval"]), dt=cfg["dt"],
                             client=self._ensemble_client(), progress=self.progress)
        ds.attrs.update(target=target.name, best_layer=self.best_layer(target),
                        seed=self.config.seeds[0])
        for label in ds.closure.values:
            stable = int(ds.stable.sel(closure=label).sum())
            _log(f"a posteriori {label} on {target.name}: {stable}/{ds.sizes['initial_state']} "
                 f"runs stable")
        write_dataset(ds, self.out / "results" / f"aposteriori-{target.name}.nc", overwrite=True)

    def _report(self):
        from .report import write_report

        write_report(self)

    def summary(self) -> dict:
        """Headline numbers per target: flows, CC of BNN, TLNNs and baselines, recommendations,
        and the a posteriori runs that stayed stable per closure (stable, runs)."""
        from .recommend import compare_recommendation

        cfg = self.config
        result = {"ran": self.ran, "skipped": self.skipped, "targets": {}}
        scores = load_dataset(self.out / "results" / "base-scores.nc")
        result["base"] = {"cc": float(scores.cc.sel(n_train=scores.attrs["n_train_full"])),
                          "n_test": int(scores.attrs["n_test"]),
                          "learning_curve": {int(n): float(c) for n, c in
                                             zip(scores.n_train.values, scores.cc.values)}}
        decades = load_dataset(self.out / "results" / "flows.nc").max_decades
        for target in cfg.targets:
            t = target.name
            sweep = load_dataset(self.out / "results" / f"sweep-{t}.nc")
            entry = {
                "decades": {str(v): float(decades.sel(target=t, variable=v))
                            for v in decades["variable"].values},
                "cc_bnn": float(sweep["base_cc"]),
                "cc_tlnn": {int(l): (float(m), float(e)) for l, m, e in zip(
                    sweep.layer.values, sweep.cc_mean.values, sweep.cc_sem.values)},
                "best_set": [int(v) for v in np.atleast_1d(sweep.attrs["best_set"])],
                "epochs": {int(l): float(e) for l, e in
                           zip(sweep.layer.values, sweep.epochs_run_mean.values)},
                "baselines": {str(b): (float(m), float(e)) for b, m, e in zip(
                    sweep.baseline.values, sweep.baseline_cc_mean.values,
                    sweep.baseline_cc_sem.values)} if "baseline" in sweep.dims else {},
                "recommendations": {},
            }
            post = self.out / "results" / f"aposteriori-{t}.nc"
            if post.exists():
                stable = load_dataset(post).stable
                entry["aposteriori_stable"] = {
                    str(c): (int(stable.sel(closure=c).sum()), int(stable.sizes["initial_state"]))
                    for c in stable.closure.values}
            if sweep.sizes["layer"] >= 2:
                for method in cfg.recommend["methods"]:
                    cmp = compare_recommendation(self.recommendation(t, method), sweep)
                    entry["recommendations"][method] = {
                        "recommended": int(cmp.attrs["recommended"]),
                        "hit": bool(cmp.hit), "rank": int(cmp.recommended_rank),
                        "spearman": float(cmp.spearman), "cost_ratio": float(cmp.cost_ratio)}
            result["targets"][t] = entry
        return result


def _config_as_toml_dict(config: ExperimentConfig) -> dict:
    """The config in the TOML layout (``xtl report`` re-reads it)."""
    def flow(f):
        return {"name": f.name, "case": f.case, "members": f.members, "spin_up": f.spin_up,
                "t_end": f.t_end, "save_interval": f.save_interval, "filter": f.filter,
                "control": f.control, **f.overrides}

    recommend = {"methods": config.recommend["methods"], "default": config.recommend["default"],
                 **config.recommend["options"]}
    out = {"experiment": {"name": config.name, "seed": config.seed,
                          "min_decades": config.min_decades},
           "base": flow(config.base), "targets": [flow(t) for t in config.targets],
           "network": config.network, "training": config.training, "transfer": config.transfer,
           "sweep": config.sweep, "les": config.les, "recommend": recommend}
    if config.budget:
        out["budget"] = config.budget
    return out


def run_experiment(config=None, out="xtl-demo", client=None, scheduler=None, progress=None):
    """Run (or resume) an experiment; see :mod:`xtl.pipeline`.

    Parameters
    ----------
    config : path, dict, ExperimentConfig or None
        A TOML file, a mapping, a parsed config, or None for the embedded demo.
    out : path-like
        Output folder.
    client, scheduler : optional
        A dask Client or a scheduler address for the ensembles and the sweep.
    progress : bool, optional

    Returns
    -------
    dict
        :meth:`Experiment.summary` plus the output folder and wall time.
    """
    start = time.perf_counter()
    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    experiment = Experiment(config, out, client=client, scheduler=scheduler, progress=progress)
    summary = experiment.run()
    summary["out"] = str(experiment.out)
    summary["wall_seconds"] = time.perf_counter() - start
    return summary
