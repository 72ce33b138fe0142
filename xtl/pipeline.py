"""The end-to-end experiment behind ``xtl demo`` and ``xtl run CONFIG``.

Stages (each writes its artifacts under ``out/`` and a manifest
``out/stages/<stage>.json`` holding a hash of its inputs and config; a stage
whose hash and artifacts are unchanged is skipped, so an interrupted
experiment resumes where it stopped):

1. ``data-<flow>``: a DNS ensemble of each flow, coarse-grained on the fly to
   LES data (ψ̄, ω̄, Π) — :func:`xtl.ensemble`;
2. ``base-model``: the base network (BNN) — :func:`xtl.train`;
3. ``recommend-<target>``: the layer recommendation before any re-training —
   :func:`xtl.explain.recommend_layers`;
4. ``sweep-<target>``: every single layer re-trained on ~``fraction`` of the
   base data's size of target data, scored on held-out target data —
   :func:`xtl.layer_sweep` (the recommended layer's TLNN is one of these);
5. ``explain-<target>``: spectra of flows and Π, the kernel census, the
   most-changed kernels, activation spectra — :mod:`xtl.spectral`;
6. ``aposteriori-<target>``: LES with BNN, best TLNN and a physics baseline
   against the filtered DNS — :func:`xtl.run_les`;
7. ``report``: ``report.html`` with PNG figures beside it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .config import ExperimentConfig, load_config

__all__ = ["run_experiment", "Experiment"]

#: Fraction of each flow's snapshots (the latest times) held out for testing.
TEST_FRACTION = 0.25


def _log(message: str) -> None:
    print(f"[xtl {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
    """Number of (member, time) samples of an LES Dataset.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    int
    """
    return int(np.prod([ds.sizes[d] for d in _sample_dims(ds)]))


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
        self.stage("base-model", ["@data-" + cfg.base.name, cfg.network, cfg.training],
                   ["models/base.keras", "models/base.nc"], self._train_base)
        for target in cfg.targets:
            t = target.name
            self.stage(f"recommend-{t}", ["@base-model", f"@data-{t}"],
                       [f"results/recommend-{t}.nc"], lambda t=target: self._recommend(t))
            self.stage(f"sweep-{t}", ["@base-model", f"@data-{t}", cfg.transfer, cfg.sweep,
                                     f"@recommend-{t}"],
                       [f"results/sweep-{t}.nc"], lambda t=target: self._sweep(t))
            self.stage(f"explain-{t}", [f"@sweep-{t}"], [f"results/explain-{t}.nc"],
                       lambda t=target: self._explain(t))
            if cfg.les.get("enabled", True):
                self.stage(f"aposteriori-{t}", [f"@sweep-{t}", cfg.les],
                           [f"results/aposteriori-{t}.nc"], lambda t=target: self._aposteriori(t))
        self.stage("report", [self.keys.copy()], ["report.html"], self._report)
        return self.summary()

    def _train_base(self):
        from .backends import save_model
        from .training import train

        cfg = self.config
        data = self._base_train()
        kwargs = {"seed": cfg.seed, **cfg.training}
        model = train(data, cfg.network, progress=self.progress, **kwargs)
        save_model(model, self.model_path("base"), overwrite=True)

    def _base_train(self):
        """The base flow's training part (the test part is not used)."""
        return split_train_test(self.les_data(self.config.base))[0]

    def _target_sets(self, target):
        """(re-training pool, test set) of a target flow."""
        return split_train_test(self.les_data(target))

    def _recommend(self, target):
        from .explain import recommend_layers
        from .io import write_dataset

        base = self.load_model("base")
        base_train = self._base_train()
        pool, _ = self._target_sets(target)
        rec = recommend_layers(base, base_train, pool)
        write_dataset(rec, self.out / "results" / f"recommend-{target.name}.nc", overwrite=True)

    def _n_transfer_samples(self, pool):
        """Target samples for re-training: ``fraction`` of the base training set's size."""
        cfg = self.config.transfer
        if "n_samples" in cfg:
            return min(int(cfg["n_samples"]), n_samples(pool))
        base_train = self._base_train()
        wanted = int(round(cfg.get("fraction", 0.1) * n_samples(base_train)))
        return max(2, min(wanted, n_samples(pool)))

    def _sweep(self, target):
        from .explain import recommended_layers
        from .io import write_dataset
        from .training import layer_sweep

        cfg = self.config
        base = self.load_model("base")
        pool, test = self._target_sets(target)
        kwargs = {k: v for k, v in cfg.transfer.items() if k not in ("fraction", "n_samples", "layers")}
        kwargs.setdefault("seed", cfg.seed)
        with xr.open_dataset(self.out / "results" / f"recommend-{target.name}.nc") as rec:
            recommended = recommended_layers(rec)
        layers = cfg.sweep.get("layers")
        if not cfg.sweep.get("enabled", True):
            layers = recommended
        elif layers is not None:  # the recommended layers are always re-trained
            layers = sorted(set(int(v) for v in layers) | set(recommended))
        sweep = layer_sweep(base, pool, test, layers=layers, n_samples=self._n_transfer_samples(pool),
                            client=self.client, save_dir=self.out / "models" / f"tl-{target.name}",
                            progress=self.progress, **kwargs)
        write_dataset(sweep, self.out / "results" / f"sweep-{target.name}.nc", overwrite=True)

    def best_layer(self, target) -> int:
        """The single layer whose TLNN scored the highest CC on the target test set."""
        with xr.open_dataset(self.out / "results" / f"sweep-{target.name}.nc") as sweep:
            return int(sweep.layer[int(np.nanargmax(sweep["cc"].values))])

    def tl_model(self, target, layer):
        """The sweep's TLNN of ``target`` with ``layer`` re-trained."""
        from .backends import load_model

        return load_model(self.out / "models" / f"tl-{target.name}" / f"tl_layer{layer}.keras")

    def _explain(self, target):
        from .io import write_dataset
        from .spectral import kernel_change, spectrum
        from .training import predict

        base = self.load_model("base")
        pool, test = self._target_sets(target)
        base_train = self._base_train()
        best = self.best_layer(target)
        tl = self.tl_model(target, best)
        n_les = test.sizes["x"]
        out = xr.Dataset()
        for label, ds in (("base", base_train), ("target", pool)):
            dims = _sample_dims(ds)
            out[f"energy_{label}"] = spectrum(ds, kind="energy").mean(dims)
            out[f"enstrophy_{label}"] = spectrum(ds, kind="enstrophy").mean(dims)
        dims = _sample_dims(test)
        out["pi_truth"] = spectrum(test.pi).mean(dims)
        out["pi_bnn"] = spectrum(predict(base, test)).mean(dims)
        out["pi_tlnn"] = spectrum(predict(tl, test)).mean(dims)
        change = kernel_change(base.to_dataset(), tl.to_dataset(), n=n_les, percentile=99.0)
        change = change.isel(top=slice(0, 8))
        out = xr.merge([out, change.rename({"layer": "kernel_layer"})], compat="override")
        out.attrs.update(best_layer=best, target=target.name, n_les=n_les)
        write_dataset(out.compute(), self.out / "results" / f"explain-{target.name}.nc",
                      overwrite=True)

    def _aposteriori(self, target):
        from .io import write_dataset
        from .les import DynamicSmagorinsky, ModelClosure, Smagorinsky, les_metrics, run_les

        cfg = self.config.les
        case = target.make_case()
        _, test = self._target_sets(target)
        first = test.isel(member=0) if "member" in test.dims else test
        initial = first.omega.isel(time=0).load()
        fdns = first.load()
        t_end = float(cfg.get("t_end", 5.0))
        save = float(cfg.get("save_interval", 0.5))
        baseline = cfg.get("baseline", "dynamic-smagorinsky")
        closures = {
            "BNN": ModelClosure(self.load_model("base")),
            "TLNN": ModelClosure(self.tl_model(target, self.best_layer(target))),
            baseline: (DynamicSmagorinsky(case.n_les) if baseline == "dynamic-smagorinsky"
                       else Smagorinsky(case.n_les)),
            "no closure": None,
        }
        results = []
        for label, closure in closures.items():
            try:
                run = run_les(case, closure, initial=initial, t_end=t_end, save_interval=save,
                              progress=self.progress)
                m = les_metrics(run, fdns)
            except Exception as err:  # a diverging LES is a result, not a failure
                _log(f"a posteriori {label} on {target.name}: {err}")
                m = xr.Dataset(attrs={"stable": 0, "blowup_time": getattr(err, "time", np.nan)})
            m = m.expand_dims(closure=[label])
            for key in ("stable", "blowup_time"):
                m[key] = ("closure", [m.attrs.pop(key)])
            m.attrs.pop("closure", None)
            results.append(m)
        ds = xr.concat(results, "closure", join="outer", combine_attrs="drop_conflicts")
        write_dataset(ds, self.out / "results" / f"aposteriori-{target.name}.nc", overwrite=True)

    def _report(self):
        from .report import write_report

        write_report(self)

    def summary(self) -> dict:
        """Headline numbers: CC of BNN and TLNNs, recommended layers and their sweep rank."""
        from .explain import compare_recommendation, recommended_layers

        result = {"ran": self.ran, "skipped": self.skipped, "targets": {}}
        for target in self.config.targets:
            t = target.name
            with xr.open_dataset(self.out / "results" / f"sweep-{t}.nc") as sweep, \
                    xr.open_dataset(self.out / "results" / f"recommend-{t}.nc") as rec:
                entry = {
                    "cc_bnn": float(sweep["base_cc"]),
                    "cc_tlnn": {int(l): float(c) for l, c in
                                zip(sweep.layer.values, sweep["cc"].values)},
                    "recommended": recommended_layers(rec),
                    "rank_in_sweep": float("nan"),
                    "spearman": float("nan"),
                }
                if sweep.sizes["layer"] >= 2:  # a comparison needs a sweep of several layers
                    cmp = compare_recommendation(rec, sweep)
                    entry["rank_in_sweep"] = int(cmp["recommended_measured_rank"].values[0])
                    entry["spearman"] = float(cmp["spearman"])
            result["targets"][t] = entry
        return result


def _config_as_toml_dict(config: ExperimentConfig) -> dict:
    """The config in the TOML layout (``xtl report`` re-reads it)."""
    def flow(f):
        return {"name": f.name, "case": f.case, "members": f.members, "spin_up": f.spin_up,
                "t_end": f.t_end, "save_interval": f.save_interval, "filter": f.filter,
                **f.overrides}

    return {"experiment": {"name": config.name, "seed": config.seed}, "base": flow(config.base),
            "targets": [flow(t) for t in config.targets], "network": config.network,
            "training": config.training, "transfer": config.transfer, "sweep": config.sweep,
            "les": config.les}


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
