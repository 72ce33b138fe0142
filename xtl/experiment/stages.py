"""The end-to-end experiment behind ``xtl demo`` and ``xtl run CONFIG``.

Stages (each writes its artifacts under ``out/`` and a manifest
``out/stages/<stage>.json`` holding a hash of its inputs and config and the sizes
and sha256 of its artifacts' files; a stage whose hash and artifacts are unchanged
is skipped, so an interrupted experiment resumes where it stopped, and one whose
artifacts changed, vanished or cannot be read runs again):

1. ``data-<flow>``: a DNS ensemble of each flow, coarse-grained on the fly to
   LES data (ψ̄, ω̄, Π) — :func:`xtl.ensemble`; or a flow read from files
   (``path``): LES data used as they are, or DNS coarse-grained by
   :func:`xtl.coarse_grain` into ``data/<flow>/les.nc`` — :func:`flow_from_files`;
2. ``flows``: how many decades each target's spectra are from the base's
   (:func:`xtl.explain.activations.flow_difference`); the experiment stops here, naming the
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
   :func:`xtl.explain.activations.spectral_change_correlation`;
7. ``aposteriori-<target>``: LES with no closure, the physics baselines, the BNN,
   the best TLNN and the sweep's baselines from several held-out target states,
   against the filtered DNS — :func:`xtl.experiment.aposteriori.run_aposteriori`, one dask task per
   closure and initial state (not for targets read from files: they have no case to run);
8. ``budget-<target>`` (with ``[budget]``): the sweep and the recommenders at
   other re-training set sizes — :func:`xtl.budget_sweep`;
9. ``benchmark-<target>`` (with ``[benchmark]``, after ``recommend-<target>``): the
   recommenders the ``recommend-<target>`` stages do not run, at the main size and,
   for the budget's target, at every budget; ``benchmark``, after the budget sweep:
   every recommender and the constant guesses scored against the sweeps
   (``results/recommend-benchmark.nc``) — :func:`xtl.explain.benchmark.benchmark_recommenders`;
10. ``report``: ``report.html`` with PNG figures beside it, and ``results/summary.nc`` and
    ``results/summary.json``: every number its key findings state.

Sweeps run on the experiment's dask cluster (the one of the DNS ensembles), one
task per layer and seed. The folder's layout is :class:`xtl.experiment.workspace.ExperimentPaths`,
the skipping :class:`xtl.experiment.workspace.StageCache`; each stage is a function of
what it needs (the config, the paths, the flows' data, the cluster) and
:class:`Experiment` only wires them together.
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

from .config import TEST_FRACTION, ExperimentConfig, FileFlowConfig, load_config, split_sizes
from ..data.files import check_output_folder, output_lock, write_text_atomically
from ..data.netcdf import load_dataset
from .workspace import ExperimentCluster, ExperimentPaths, StageCache, log

__all__ = ["run_experiment", "Experiment", "TargetsTooClose", "check_targets_differ",
           "FlowData", "stage_inputs", "split_train_test", "n_samples", "open_flow_files",
           "flow_from_files"]


def _train_and_score(train_ds, test_ds, network, training, progress, fraction=None,
                     variables=None):
    """Train on ``train_ds`` (or a seeded ``fraction`` of it) as ``training`` (a
    :class:`~xtl.experiment.config.TrainingConfig`) says, and score on ``test_ds``;
    ``variables`` (a :class:`~xtl.experiment.config.DataConfig`) names what is mapped."""
    from ..nn.training import evaluate, select_samples, stack_samples, train

    fit = training.fit.replace(progress=progress)
    keywords = {} if variables is None else variables.train_keywords()
    channels = keywords.get("channels")
    if fraction is not None:
        n = n_samples(train_ds, channels)
        train_ds = stack_samples(train_ds, select_samples(n, None, fraction, fit.seed),
                                 None if variables is None else variables.variables())
    model = train(train_ds, network, fit, validation=training.validation, **keywords)
    scores = evaluate(model, test_ds)
    scores.attrs.update(n_train=int(n_samples(train_ds, channels)), **{
        k: model.provenance[k] for k in ("n_samples", "n_validation", "epochs_run",
                                         "best_epoch")})
    return model, scores


class TargetsTooClose(ValueError):
    """A target differs from the base by less than ``experiment.min_decades`` at every shell."""


def check_targets_differ(flows_file, config: ExperimentConfig) -> None:
    """Stop the experiment when a target (not marked ``control``) is too close to the base.

    ``flows_file`` is ``results/flows.nc`` (:func:`xtl.explain.activations.flow_difference`
    per target).

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

    ``ds`` needs at least 2 times; at least one is held out. Returns the earlier
    times (training / re-training pool) and the later ones (test), as Datasets.
    """
    n_train = split_sizes(ds.sizes["time"], test_fraction)[0]
    return ds.isel(time=slice(0, n_train)), ds.isel(time=slice(n_train, None))


def n_samples(ds: xr.Dataset, channels=None) -> int:
    """Number of samples of an LES Dataset: the product of the dims of its SGS term (``pi``,
    else its first data variable) other than ``y``, ``x`` and ``channels``."""
    from ..nn.training import count_samples

    name = "pi" if "pi" in ds else next(iter(ds.data_vars))
    return count_samples(ds[name], channels)


# ---------------------------------------------------------------------- flows from files
def open_flow_files(flow: FileFlowConfig) -> xr.Dataset:
    """The files of a flow read from files, opened lazily (dask) and combined along
    ``member``: one member per file, or a file's own ``member`` dim; numbered 0, 1, ...

    Raises
    ------
    FileNotFoundError
        No file matches the flow's ``path``.
    ValueError
        The files differ in their dims other than ``member``.
    """
    from ..data.netcdf import open_dataset

    files = flow.files()
    parts = []
    for path in files:
        ds = open_dataset(path, chunks={})
        parts.append(ds if "member" in ds.dims else ds.expand_dims("member"))
    shape = {d: n for d, n in parts[0].sizes.items() if d != "member"}
    for path, ds in zip(files, parts):
        other = {d: n for d, n in ds.sizes.items() if d != "member"}
        if other != shape:
            raise ValueError(f"flow {flow.name!r}: {str(path)!r} has the sizes {other}, "
                             f"{str(files[0])!r} has {shape}; the files of a flow must share "
                             "their dims (other than member)")
    combined = parts[0] if len(parts) == 1 else xr.concat(
        parts, dim="member", data_vars="all", coords="minimal", compat="override",
        join="override", combine_attrs="drop_conflicts")
    return combined.assign_coords(member=np.arange(combined.sizes["member"]))


def _check_snapshots(ds: xr.Dataset, flow) -> None:
    if ds.sizes.get("time", 0) < 2:
        raise ValueError(f"flow {flow.name!r} ({flow.path}): needs a 'time' dim of at least "
                         f"2 snapshots (training and test times), got the dims {dict(ds.sizes)}")


def flow_from_files(flow: FileFlowConfig, variables):
    """``(LES data, whether it was coarse-grained)`` of a flow read from files, lazily.

    Files that hold every input and output of ``variables`` (a
    :class:`~xtl.experiment.config.DataConfig`) are LES data: those variables are kept
    as they are. Files that hold its coarse-graining pair (``scalar``,
    ``streamfunction``) are DNS: :func:`xtl.coarse_grain` makes the LES data
    (``flow.n_les``, default the files' ``case_n_les``; ``flow.filter``).

    Raises
    ------
    ValueError
        The files hold neither, the coarse-graining does not give the outputs, or there
        are fewer than 2 snapshots along ``time``.
    """
    ds = open_flow_files(flow)
    names = list(variables.variable_names)
    missing = [v for v in names if v not in ds.variables]
    if not missing:
        les = ds[names]
        les.attrs = dict(ds.attrs)
        _check_snapshots(les, flow)
        return les, False
    pair = [variables.scalar, variables.streamfunction]
    lacking = [v for v in pair if v not in ds.variables]
    if lacking:
        raise ValueError(
            f"flow {flow.name!r} ({flow.path}): the files are neither LES data (they lack "
            f"{missing} of the [data] inputs and outputs {names}) nor DNS to coarse-grain "
            f"(they lack {lacking} of the pair data.scalar, data.streamfunction = {pair}); "
            f"they hold {sorted(map(str, ds.data_vars))}")
    if flow.n_les is None and "case_n_les" not in ds.attrs:
        raise ValueError(f"flow {flow.name!r} ({flow.path}): DNS files without a "
                         "'case_n_les' attribute need the LES grid: set n_les in its table")
    from ..data.coarse import coarse_grain

    les = coarse_grain(ds, flow.n_les, flow.filter, **variables.coarse_keywords())
    missing = [v for v in names if v not in les.variables]
    if missing:
        raise ValueError(f"flow {flow.name!r}: coarse-graining {pair} gives "
                         f"{sorted(map(str, les.data_vars))}, not the [data] variables "
                         f"{missing}; name its outputs in [data]")
    _check_snapshots(les, flow)
    return les[names].assign_attrs(les.attrs), True


# ---------------------------------------------------------------------- data
class FlowData:
    """The LES data of the experiment's flows, each run (or re-opened) on first use;
    ``cluster`` runs the DNS ensembles."""

    def __init__(self, config: ExperimentConfig, paths: ExperimentPaths,
                 cluster: ExperimentCluster, progress=None):
        self.config = config
        self.paths = paths
        self.cluster = cluster
        self.progress = progress
        self._data: dict = {}

    def les(self, flow) -> xr.Dataset:
        """The LES data of ``flow`` (complete members only)."""
        if flow.name not in self._data:
            read = isinstance(flow, FileFlowConfig)
            self._data[flow.name] = self._read_files(flow) if read else self._run_ensemble(flow)
        return self._data[flow.name]

    def _read_files(self, flow) -> xr.Dataset:
        """The LES data of a flow read from files (:func:`flow_from_files`); DNS is
        coarse-grained once into ``data/<flow>/les.nc``, kept while the files and
        ``[data]`` are unchanged. ``data/<flow>/sources.json`` lists the files."""
        from ..data.netcdf import open_dataset, write_dataset
        from .workspace import stage_key

        folder = self.paths.data(flow.name)
        folder.mkdir(parents=True, exist_ok=True)
        fingerprint = flow.fingerprint()
        digest = stage_key(flow.name, [fingerprint, flow.__dict__, self.config.data.to_table()])
        write_text_atomically(folder / "sources.json", json.dumps(
            {"path": flow.path, "files": fingerprint, "digest": digest}, indent=1))
        les_file = folder / "les.nc"
        if les_file.exists():
            with open_dataset(les_file) as cached:
                current = cached.attrs.get("source_digest") == digest
            if current:
                return open_dataset(les_file, chunks={})
        ds, coarse = flow_from_files(flow, self.config.data)
        if coarse:
            write_dataset(ds.assign_attrs(source_digest=digest), les_file, overwrite=True)
            ds = open_dataset(les_file, chunks={})
        elif les_file.exists():
            les_file.unlink()
        ds.attrs["case_name"] = flow.name
        return ds

    def _run_ensemble(self, flow) -> xr.Dataset:
        from ..solver.ensemble import ensemble

        case = flow.make_case()
        ds = ensemble(
            case, seeds=[self.config.seed + i for i in range(flow.members)],
            t_end=flow.t_end, save_interval=flow.save_interval, spin_up=flow.spin_up,
            directory=self.paths.data(flow.name),
            les=flow.coarse_graining(),
            client=self.cluster.client, scheduler=self.cluster.scheduler,
            progress=self.progress,
        )
        ok = ds.status == "complete"
        if not bool(ok.all()):
            log(f"{flow.name}: {int((~ok).sum())} member(s) failed: "
                f"{sorted(set(ds.error.values[~ok.values].tolist()))}")
        ds = ds.sel(member=ok)
        ds.attrs["case_name"] = flow.name
        return ds

    def run_concurrently(self, flows) -> None:
        """Run the DNS ensembles of ``flows`` at once on one cluster (threads submit)."""
        from concurrent.futures import ThreadPoolExecutor

        flows = list(flows)
        _ = self.cluster.client  # start the one cluster before the threads share it
        with ThreadPoolExecutor(len(flows)) as pool:
            list(pool.map(self.les, flows))

    def base_train(self) -> xr.Dataset:
        """The base flow's training part (the test part is not used)."""
        return split_train_test(self.les(self.config.base))[0]

    def target_sets(self, target) -> tuple:
        """(re-training pool, test set) of a target flow."""
        return split_train_test(self.les(target))

    def n_transfer(self, target, fraction=None) -> int:
        """Target samples for re-training: a fraction of the base training set's size.

        ``transfer.n_samples`` when given (and no ``fraction``), else ``fraction``
        (default ``transfer.fraction``) of the base training set, capped by the pool.
        """
        transfer, channels = self.config.transfer, self.config.data.channels
        pool = n_samples(self.target_sets(target)[0], channels)
        if fraction is None and transfer.n_samples is not None:
            return min(transfer.n_samples, pool)
        fraction = transfer.fraction if fraction is None else fraction
        wanted = int(round(fraction * n_samples(self.base_train(), channels)))
        return max(2, min(wanted, pool))


# ---------------------------------------------------------------------- stages
def stage_inputs(config: ExperimentConfig) -> dict:
    """What each stage's key hashes, by stage name (``"@stage"``: that stage's key).

    The tables a stage reads are hashed as written (:meth:`ExperimentConfig.table`),
    so a stage reruns when what was written changes, not when a default is spelt
    out; the report's key (all the others) is added when it runs. Returns
    ``{stage: [input, ...]}`` in the order the stages run.
    """
    variables = [] if config.data.is_default else [config.data.to_table()]
    inputs = {f"data-{f.name}": [f.__dict__.copy(), config.seed] for f in config.flows}
    for f in config.flows:
        if isinstance(f, FileFlowConfig):  # the files read: editing one re-runs the stage
            inputs[f"data-{f.name}"] += [f.fingerprint(), *variables]
    inputs["flows"] = [f"@data-{f.name}" for f in config.flows]
    inputs["base-model"] = [f"@data-{config.base.name}", config.network,
                            config.table("training"), *variables]
    transfer, recommend = config.table("transfer"), config.recommend.stage_table()
    for target in config.targets:
        t = target.name
        inputs[f"recommend-{t}"] = ["@base-model", f"@data-{t}", transfer, config.seeds,
                                    recommend]
        needs = [] if config.sweep.sweeps_every_layer() else [f"@recommend-{t}"]
        single = {k: v for k, v in config.table("sweep").items() if k != "pairs"}
        inputs[f"sweep-{t}"] = ["@base-model", f"@data-{t}", transfer, single, *needs]
        if config.sweep.pairs_of(t):
            inputs[f"pairs-{t}"] = ["@base-model", f"@data-{t}", transfer,
                                    config.table("sweep"), *needs]
        inputs[f"explain-{t}"] = [f"@sweep-{t}", "@flows"]
        if config.runs_aposteriori(target):
            inputs[f"aposteriori-{t}"] = [f"@sweep-{t}", config.table("les")]
    if config.budget.enabled:
        t = config.budget.target
        inputs[f"budget-{t}"] = [f"@sweep-{t}", config.budget.to_table(), recommend]
    if config.benchmark.enabled:
        extra = config.recommend.stage_table(benchmark_methods(config))
        budget = config.budget.to_table() if config.budget.enabled else {}
        for target in config.targets:
            t = target.name
            inputs[f"benchmark-{t}"] = [
                "@base-model", f"@data-{t}", transfer, config.seeds, extra,
                *([budget] if config.budget.enabled and config.budget.target == t else [])]
        done = [k for k in inputs if k.split("-")[0] in ("recommend", "sweep", "budget",
                                                         "benchmark")]
        inputs["benchmark"] = [*(f"@{k}" for k in done), config.benchmark.to_table()]
    return inputs


def _load_model(path):
    from ..nn.files import load_model

    return load_model(path)


def write_flows(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData) -> None:
    """How far each target's spectra are from the base's (``results/flows.nc``)."""
    from ..explain.activations import flow_difference
    from ..data.netcdf import write_dataset

    base = data.les(config.base)
    variables = {} if config.data.is_default else {"variables": config.data.variables()}
    diffs = [flow_difference(base, data.les(t), **variables) for t in config.targets]
    ds = xr.concat(diffs, dim="target", combine_attrs="drop_conflicts")
    ds = ds.assign_coords(target=[t.name for t in config.targets],
                          control=("target", [t.control for t in config.targets]))
    ds.attrs.update(base_case=config.base.name, min_decades=config.min_decades)
    write_dataset(ds, paths.flows, overwrite=True)


def train_base(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
               progress=None) -> None:
    """The BNN, its scores on held-out base data, and (with ``learning_curve``) the
    scores of networks trained on seeded subsets of the base training set."""
    from ..nn.files import save_model
    from ..data.netcdf import write_dataset

    base_train, base_test = split_train_test(data.les(config.base))
    model, scores = _train_and_score(base_train, base_test, config.network, config.training,
                                     progress, variables=config.data)
    save_model(model, paths.model("base"), overwrite=True)
    curve = [scores]
    for fraction in config.training.learning_curve:
        log(f"base-model: learning curve at {fraction:.0%} of the training set")
        curve.append(_train_and_score(base_train, base_test, config.network, config.training,
                                      progress, fraction=fraction, variables=config.data)[1])
    curve.sort(key=lambda d: d.attrs["n_train"])
    out = xr.concat(curve, dim="n_train", combine_attrs="drop_conflicts")
    out = out.assign_coords(n_train=[d.attrs["n_train"] for d in curve])
    out.attrs.update(n_test=n_samples(base_test, config.data.channels),
                     n_train_full=scores.attrs["n_train"])
    write_dataset(out, paths.base_scores, overwrite=True)


def recommender_options(config: ExperimentConfig, method: str) -> dict:
    """Options of a recommender: the configured ones; the probe and successive halving
    train with the sweep's batch size and learning rate unless given, and the probe
    extrapolates to the sweep's epoch cap."""
    options = config.recommend.method_options(method)
    fit = config.transfer.fit
    if method == "probe":
        options.setdefault("horizon", fit.epochs)
    if method in ("probe", "halving"):
        options.setdefault("batch_size", fit.batch_size)
        options.setdefault("learning_rate", fit.learning_rate)
    return options


def recommend_at(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData, target,
                 n: int, methods=None) -> None:
    """Every configured recommender (or ``methods``) on the first seed's re-training subset
    of size ``n``."""
    from ..data.netcdf import write_dataset
    from ..explain.recommend import recommend_layers
    from ..nn.training import select_samples, stack_samples

    base = _load_model(paths.model("base"))
    pool, _ = data.target_sets(target)
    data_vars = config.data.variables()
    subset = stack_samples(pool, select_samples(n_samples(pool, data_vars.channels), n, None,
                                                 config.seeds[0]), data_vars)
    subset.attrs["case_name"] = target.name
    main = n == data.n_transfer(target)
    for method in config.recommend.methods if methods is None else methods:
        rec = recommend_layers(base, data.base_train(), subset, method=method,
                               **recommender_options(config, method))
        rec.attrs["n_samples"] = int(n)
        log(f"recommend {target.name} (n={n}) by {method}: {rec.attrs['recommended']} "
            f"in {float(rec.seconds):.0f} s")
        write_dataset(rec, paths.recommendation(target.name, method, None if main else n),
                      overwrite=True)


def load_recommendation(config: ExperimentConfig, paths: ExperimentPaths, target_name: str,
                        method=None, n=None) -> xr.Dataset:
    """A saved recommendation (default method, main budget unless ``n``)."""
    method = method or config.recommend.default
    return load_dataset(paths.recommendation(target_name, method, n))


def sweep_layers(config: ExperimentConfig, paths: ExperimentPaths, target_name: str):
    """Every layer (None); or the configured ones plus the recommended; or only the
    recommended (``sweep.enabled = false``)."""
    from ..explain.recommend import recommended_layers

    sweep = config.sweep
    if sweep.sweeps_every_layer():
        return None
    recommended = recommended_layers(load_recommendation(config, paths, target_name))
    if not sweep.enabled:
        return tuple(recommended)
    return tuple(sorted(set(sweep.layers) | set(recommended)))


def run_sweep(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
              cluster: ExperimentCluster, target, progress=None) -> None:
    """The layer sweep of ``target`` with the baselines (``results/sweep-<target>.nc``)."""
    from ..data.netcdf import write_dataset
    from ..nn.sweep import layer_sweep

    pool, test = data.target_sets(target)
    options = config.sweep.options.replace(n_samples=data.n_transfer(target), progress=progress)
    sweep = layer_sweep(_load_model(paths.model("base")), pool, test,
                        layers=sweep_layers(config, paths, target.name), options=options,
                        client=cluster.client, save_dir=paths.sweep_models(target.name))
    write_dataset(sweep, paths.sweep(target.name), overwrite=True)


def run_pairs(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
              cluster: ExperimentCluster, target, progress=None) -> None:
    """Every pair of the swept layers of ``target``, under the sweep's seeds and subsets
    (``results/pairs-<target>.nc``; no baselines, the models are not kept)."""
    from ..data.netcdf import write_dataset
    from ..nn.sweep import layer_sweep

    pool, test = data.target_sets(target)
    options = config.sweep.options.replace(n_samples=data.n_transfer(target), pairs=True,
                                           baselines=(), progress=progress)
    pairs = layer_sweep(_load_model(paths.model("base")), pool, test,
                        layers=sweep_layers(config, paths, target.name), options=options,
                        client=cluster.client)
    write_dataset(pairs, paths.pairs(target.name), overwrite=True)


def run_budget(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
               cluster: ExperimentCluster, target, progress=None) -> None:
    """Sweeps at the other budgets of ``[budget]``, joined with the main sweep."""
    from ..data.netcdf import write_dataset
    from ..nn.sweep import budget_sweep, concat_budgets, split_budgets

    pool, test = data.target_sets(target)
    main_n = data.n_transfer(target)
    sizes = sorted({data.n_transfer(target, f) for f in config.budget.fractions} - {main_n})
    main = load_dataset(paths.sweep(target.name))
    baselines = [b for b in config.sweep.options.baselines if b == "scratch"]
    parts = [main.sel(baseline=baselines) if "baseline" in main.dims else main]
    if sizes:
        options = config.sweep.options.replace(baselines=baselines, progress=progress)
        extra = budget_sweep(_load_model(paths.model("base")), pool, test, sizes,
                             layers=sweep_layers(config, paths, target.name), options=options,
                             client=cluster.client, save_dir=paths.budget_models(target.name))
        parts += split_budgets(extra)
        for n in sizes:
            recommend_at(config, paths, data, target, n)
    channels = config.data.channels
    combined = concat_budgets(parts, n_pool=n_samples(pool, channels))
    combined.attrs["n_base_train"] = n_samples(data.base_train(), channels)
    write_dataset(combined, paths.budget(target.name), overwrite=True)


def benchmark_cases(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData) -> dict:
    """``{case: (target, n_samples, sweep)}``: every target's single-layer sweep of two or
    more layers, then the budget sweep's other budgets as ``"<target>@<n>"``."""
    from ..explain.benchmark import case_name
    from ..nn.sweep import split_budgets

    cases = {}
    for target in config.targets:
        sweep = load_dataset(paths.sweep(target.name))
        if sweep.sizes["layer"] >= 2:
            cases[target.name] = (target, data.n_transfer(target), sweep)
    if config.budget.enabled:
        target = config.target(config.budget.target)
        for sweep in split_budgets(load_dataset(paths.budget(target.name))):
            n = int(sweep.attrs["n_samples"])
            if n != data.n_transfer(target) and sweep.sizes["layer"] >= 2:
                cases[case_name(target.name, n)] = (target, n, sweep)
    return cases


def benchmark_methods(config: ExperimentConfig) -> list:
    """The ``[benchmark]`` methods the ``recommend-<target>`` stages do not run."""
    return [m for m in config.benchmark.methods if m not in config.recommend.methods]


def benchmark_sizes(config: ExperimentConfig, data: FlowData, target) -> list:
    """Re-training set sizes the benchmark scores on ``target``: the main sweep's, then
    the budget sweep's others."""
    main = data.n_transfer(target)
    if not (config.budget.enabled and config.budget.target == target.name):
        return [main]
    return [main] + sorted({data.n_transfer(target, f) for f in config.budget.fractions}
                           - {main})


def benchmark_recommendations(config: ExperimentConfig, paths: ExperimentPaths,
                              data: FlowData, target) -> list:
    """Paths of the recommendations ``benchmark-<target>`` writes."""
    main = data.n_transfer(target)
    return [paths.recommendation(target.name, m, None if n == main else n)
            for n in benchmark_sizes(config, data, target) for m in benchmark_methods(config)]


def run_benchmark_recommenders(config: ExperimentConfig, paths: ExperimentPaths,
                               data: FlowData, target) -> None:
    """The ``[benchmark]`` methods the ``recommend-<target>`` stage did not run, at every
    size the benchmark scores (before any sweep: they need none)."""
    for n in benchmark_sizes(config, data, target):
        recommend_at(config, paths, data, target, n, benchmark_methods(config))


def run_benchmark(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData) -> None:
    """Every ``[benchmark]`` method and the constant guesses scored against the sweeps
    on every case (``results/recommend-benchmark.nc``)."""
    from ..data.netcdf import write_dataset
    from ..explain.benchmark import benchmark_recommenders
    from ..explain.recommend import DEFAULT_METHOD

    scored = list(config.benchmark.methods)
    sweeps, recommendations = {}, {}
    for case, (target, n, sweep) in benchmark_cases(config, paths, data).items():
        main = n == data.n_transfer(target)
        sweeps[case] = sweep
        recommendations[case] = {m: load_recommendation(config, paths, target.name, m,
                                                        None if main else n) for m in scored}
    history = [load_dataset(p) for p in config.benchmark.history]
    bench = benchmark_recommenders(sweeps, recommendations, history=history,
                      strength=config.benchmark.strength, default=DEFAULT_METHOD)
    log(f"benchmark of {scored} and the constant guesses on {list(sweeps)}")
    write_dataset(bench, paths.benchmark, overwrite=True)


def best_layer(paths: ExperimentPaths, target_name: str) -> int:
    """The single layer with the best mean CC over seeds on the target test set."""
    sweep = load_dataset(paths.sweep(target_name))
    return int(sweep.layer[int(np.nanargmax(sweep["cc_mean"].values))])


def _spectra(data: FlowData, target, models) -> xr.Dataset:
    """Mean spectra of the base and target flows, and of Π and its predictions: energy,
    enstrophy and Π's power for (ψ̄, ω̄) → Π; else the power of every input and output
    variable per level (:func:`_variable_spectra`)."""
    from ..data.spectra import spectrum
    from ..nn.spec import Variables
    from ..nn.training import predict

    if models["base"].variables != Variables():
        return _variable_spectra(data, target, models)
    pool, test = data.target_sets(target)
    out = xr.Dataset()
    for label, ds in (("base", data.base_train()), ("target", pool)):
        dims = _sample_dims(ds)
        out[f"energy_{label}"] = spectrum(ds, kind="energy").mean(dims)
        out[f"enstrophy_{label}"] = spectrum(ds, kind="enstrophy").mean(dims)
    dims = _sample_dims(test)
    out["pi_truth"] = spectrum(test.pi).mean(dims)
    out["pi_bnn"] = spectrum(predict(models["base"], test)).mean(dims)
    out["pi_tlnn"] = spectrum(predict(models["tl"][0], test)).mean(dims)
    return out


def _variable_spectra(data: FlowData, target, models) -> xr.Dataset:
    """``flow_spectrum_base``/``_target`` of the inputs and ``output_truth``/``_bnn``/
    ``_tlnn`` of the outputs, over ``(variable, k)`` and ``(output, k)`` (one label per
    level)."""
    from ..explain.activations import mean_spectra
    from ..nn.training import predict

    variables = models["base"].variables
    dim = variables.channels
    pool, test = data.target_sets(target)
    out = xr.Dataset()
    for label, ds in (("base", data.base_train()), ("target", pool)):
        out[f"flow_spectrum_{label}"] = mean_spectra(ds, variables.inputs, dim)
    for label, ds in (("truth", test), ("bnn", predict(models["base"], test)),
                      ("tlnn", predict(models["tl"][0], test))):
        ds = ds if isinstance(ds, xr.Dataset) else ds.to_dataset()
        out[f"output_{label}"] = mean_spectra(ds, variables.outputs, dim).rename(
            variable="output")
    return out


def explain_target(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
                   target) -> None:
    """Spectra of flows and Π, the most-changed kernels, and whether the best layer
    changed where the flows differ (``results/explain-<target>.nc``)."""
    from ..nn.model import model_to_dataset
    from ..explain.activations import spectral_change_correlation
    from ..data.netcdf import write_dataset
    from ..explain.kernels import kernel_change

    base = _load_model(paths.model("base"))
    best = best_layer(paths, target.name)
    tls = [_load_model(paths.tl_model(target.name, best, s)) for s in config.seeds]
    out = _spectra(data, target, {"base": base, "tl": tls})
    n_les = data.target_sets(target)[1].sizes["x"]
    base_ds = model_to_dataset(base)
    change = kernel_change(base_ds, tls[0].to_dataset(), pad_to=n_les, percentile=99.0)
    change = change.isel(top=slice(0, 8))
    weight = load_dataset(paths.flows).shell_weight.sel(target=target.name)
    kmax = n_les // 2 - 1  # the shells the square LES grid holds whole
    corr = spectral_change_correlation(base_ds, [m.to_dataset() for m in tls], best,
                                       weight.sel(k=slice(0, kmax)).drop_vars(
                                           ["target", "control"], errors="ignore"))
    out = xr.merge([out, change.rename({"layer": "kernel_layer"}),
                    corr.rename(k="shell", shell_weight="change_weight")],
                   compat="override")
    out.attrs.update(best_layer=best, target=target.name, n_les=n_les,
                     change_correlation=float(corr.correlation),
                     change_pvalue=float(corr.pvalue))
    write_dataset(out.compute(), paths.explain(target.name), overwrite=True)


def aposteriori_closures(config: ExperimentConfig, paths: ExperimentPaths, target) -> dict:
    """``{label: closure}`` of the a posteriori stage of ``target``.

    No closure; the physics baselines of ``les.baseline``; the BNN; the best
    layer's TLNN; and the sweep's baselines it trained (``scratch``,
    ``full_target``) — the networks of the first seed.
    """
    from ..nn.closure import ModelClosure
    from ..physics.closures import get_closure

    seed = config.seeds[0]
    closures = {"no closure": None}
    for name in config.les.baseline:
        closures[name] = get_closure(name)
    closures["BNN"] = ModelClosure(_load_model(paths.model("base")))
    closures["TLNN"] = ModelClosure(_load_model(
        paths.tl_model(target.name, best_layer(paths, target.name), seed)))
    for kind in config.sweep.options.baselines:
        closures[kind] = ModelClosure(_load_model(paths.sweep_model(target.name, kind, seed)))
    return closures


def run_aposteriori_stage(config: ExperimentConfig, paths: ExperimentPaths, data: FlowData,
                          cluster: ExperimentCluster, target, progress=None) -> None:
    """Every closure from ``les.initial_states`` held-out target states, against the FDNS."""
    from ..data.netcdf import write_dataset
    from .aposteriori import run_aposteriori, select_initial_states

    les = config.les
    _, test = data.target_sets(target)
    initials = select_initial_states(test, les.initial_states).load()
    fdns = data.les(target)  # the whole flow: its climatology, tails included
    ds = run_aposteriori(target.make_case(), aposteriori_closures(config, paths, target),
                         initials, fdns, les.schedule, client=cluster.client,
                         progress=progress)
    ds.attrs.update(target=target.name, best_layer=best_layer(paths, target.name),
                    seed=config.seeds[0])
    for label in ds.closure.values:
        stable = int(ds.stable.sel(closure=label).sum())
        log(f"a posteriori {label} on {target.name}: {stable}/{ds.sizes['initial_state']} "
            f"runs stable")
    write_dataset(ds, paths.aposteriori(target.name), overwrite=True)


# ---------------------------------------------------------------------- summary
def _target_summary(config: ExperimentConfig, paths: ExperimentPaths, target_name: str,
                    decades) -> dict:
    """Headline numbers of one target (see :func:`summarize`)."""
    from ..explain.recommend import compare_recommendation

    t = target_name
    sweep = load_dataset(paths.sweep(t))
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
    if paths.aposteriori(t).exists():
        stable = load_dataset(paths.aposteriori(t)).stable
        entry["aposteriori_stable"] = {
            str(c): (int(stable.sel(closure=c).sum()), int(stable.sizes["initial_state"]))
            for c in stable.closure.values}
    if sweep.sizes["layer"] >= 2:
        for method in config.recommend.methods:
            cmp = compare_recommendation(load_recommendation(config, paths, t, method), sweep)
            entry["recommendations"][method] = {
                "recommended": int(cmp.attrs["recommended"]),
                "hit": bool(cmp.hit), "rank": int(cmp.recommended_rank),
                "spearman": float(cmp.spearman), "tau": float(cmp.tau),
                "regret": float(cmp.regret), "cost_ratio": float(cmp.cost_ratio)}
    return entry


def summarize(config: ExperimentConfig, paths: ExperimentPaths, ran=(), skipped=()) -> dict:
    """Headline numbers per target: flows, CC of BNN, TLNNs and baselines, recommendations,
    and the a posteriori runs that stayed stable per closure (stable, runs); ``ran`` and
    ``skipped`` are the names of the stages run and skipped.
    """
    result = {"ran": ran, "skipped": skipped, "targets": {}}
    scores = load_dataset(paths.base_scores)
    cc = scores.cc.mean([d for d in scores.cc.dims if d != "n_train"])  # over levels
    result["base"] = {"cc": float(cc.sel(n_train=scores.attrs["n_train_full"])),
                      "n_test": int(scores.attrs["n_test"]),
                      "learning_curve": {int(n): float(c) for n, c in
                                         zip(cc.n_train.values, cc.values)}}
    decades = load_dataset(paths.flows).max_decades
    for target in config.targets:
        result["targets"][target.name] = _target_summary(config, paths, target.name, decades)
    return result


# ---------------------------------------------------------------------- the experiment
class Experiment:
    """Runs the stages of one experiment into ``out``; see the module docstring.

    A context manager: on exit (an error included) it closes the LocalCluster it
    started, if any.

    Parameters
    ----------
    out : path-like
        Output folder (created with its missing parents, with ``config.json``). It is locked until
        :meth:`close`: a second experiment in the same folder is refused with
        :class:`xtl.data.files.OutputLockedError` (naming this process).
    client : distributed.Client, optional
        Cluster for the DNS ensembles and the layer sweep.
    scheduler : str, optional
        Address of an existing dask scheduler (instead of ``client``).
    progress : bool, optional
        Progress bars (default: on a terminal).
    """

    def __init__(self, config: ExperimentConfig, out, client=None, scheduler=None, progress=None):
        self.config = config
        self._out = check_output_folder(out, "out")
        self.paths = ExperimentPaths(out)
        self.progress = progress
        self.cluster = ExperimentCluster(client, scheduler)
        self.cache = StageCache(self.paths)
        self.data = FlowData(config, self.paths, self.cluster, progress)
        self._lock = contextlib.ExitStack()  # one experiment in a folder at a time
        self.paths.root.parent.mkdir(parents=True, exist_ok=True)  # the lock lies beside root
        self._lock.enter_context(output_lock(self.paths.root))
        try:
            self.paths.make_folders()
            write_text_atomically(self.paths.config,
                                  json.dumps(config.tables(), indent=1, default=str))
        except BaseException:
            self._lock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def out(self) -> Path:
        """The output folder, as given (``paths.root`` is its absolute form)."""
        return self._out

    @property
    def skipped(self) -> list:
        """Stages skipped (unchanged) so far."""
        return self.cache.skipped

    def stage(self, name, key_parts, outputs, func):
        """Run ``func()`` unless stage ``name`` already ran with the same inputs
        (see :meth:`xtl.experiment.workspace.StageCache.run`; ``outputs`` relative to ``out``)."""
        return self.cache.run(name, key_parts, outputs, func)

    def close(self):
        """Close the LocalCluster this experiment started, if any, and free the folder."""
        try:
            self.cluster.close()
        finally:
            self._lock.close()

    # -- what the report reads -------------------------------------------------------
    def load_model(self, name):
        """Load the saved model ``name`` (e.g. ``"base"``)."""
        return _load_model(self.paths.model(name))

    def recommendation(self, target_name, method=None, n=None) -> xr.Dataset:
        """A saved recommendation (default method, main budget unless ``n``)."""
        return load_recommendation(self.config, self.paths, target_name, method, n)

    def sweep_size(self, target_name: str) -> int:
        """Size of the re-training subsets of the main sweep of a target."""
        return self.data.n_transfer(self.config.target(target_name))

    def summary(self) -> dict:
        """:func:`summarize` of this experiment's results and stages."""
        return summarize(self.config, self.paths, self.cache.ran, self.cache.skipped)

    # -- the stages -------------------------------------------------------------------
    def run(self):
        """Run every stage (skipping the unchanged ones); returns :meth:`summary`."""
        with self.cluster:
            inputs = stage_inputs(self.config)
            self._data_stages(inputs)
            check_targets_differ(self.paths.flows, self.config)
            self._model_stages(inputs)
            summary = self.paths.result("summary")
            self.stage("report", [dict(self.cache.keys)],
                       [self.paths.report, summary, summary.with_suffix(".json")], self._report)
            return self.summary()

    def _data_stages(self, inputs):
        """The flows' data (run at once on one cluster when several are due), and how
        far the targets are from the base."""
        cfg, paths, data = self.config, self.paths, self.data
        stale = [f for f in cfg.flows if not paths.data(f.name).exists()
                 or not self.cache.has_run(f"data-{f.name}")]
        stale = [f for f in stale if not isinstance(f, FileFlowConfig)]  # simulated ones
        if len(stale) > 1:
            log(f"DNS ensembles of {[f.name for f in stale]} on one dask cluster")
            data.run_concurrently(stale)
        for flow in cfg.flows:
            name = f"data-{flow.name}"
            self.stage(name, inputs[name], [paths.data(flow.name)],
                       lambda flow=flow: data.les(flow))
        self.stage("flows", inputs["flows"], [paths.flows],
                   lambda: write_flows(cfg, paths, data))

    def _model_stages(self, inputs):
        """The base network, then per target the recommendations, the sweep, its
        explanation and the a posteriori runs; then the budget sweep."""
        cfg, paths, data, cluster, progress = (self.config, self.paths, self.data,
                                               self.cluster, self.progress)
        self.stage("base-model", inputs["base-model"],
                   [paths.model("base"), paths.model_dataset("base"), paths.base_scores],
                   lambda: train_base(cfg, paths, data, progress))
        for target in cfg.targets:
            t = target.name
            self.stage(f"recommend-{t}", inputs[f"recommend-{t}"],
                       [paths.recommendation(t, m) for m in cfg.recommend.methods],
                       lambda target=target: recommend_at(cfg, paths, data, target,
                                                          data.n_transfer(target)))
            if cfg.benchmark.enabled:
                self.stage(f"benchmark-{t}", inputs[f"benchmark-{t}"],
                           benchmark_recommendations(cfg, paths, data, target),
                           lambda target=target: run_benchmark_recommenders(cfg, paths, data,
                                                                            target))
            self.stage(f"sweep-{t}", inputs[f"sweep-{t}"], [paths.sweep(t)],
                       lambda target=target: run_sweep(cfg, paths, data, cluster, target,
                                                       progress))
            if f"pairs-{t}" in inputs:
                self.stage(f"pairs-{t}", inputs[f"pairs-{t}"], [paths.pairs(t)],
                           lambda target=target: run_pairs(cfg, paths, data, cluster, target,
                                                           progress))
            self.stage(f"explain-{t}", inputs[f"explain-{t}"], [paths.explain(t)],
                       lambda target=target: explain_target(cfg, paths, data, target))
            if f"aposteriori-{t}" in inputs:
                self.stage(f"aposteriori-{t}", inputs[f"aposteriori-{t}"],
                           [paths.aposteriori(t)],
                           lambda target=target: run_aposteriori_stage(
                               cfg, paths, data, cluster, target, progress))
        if cfg.budget.enabled:
            target = cfg.target(cfg.budget.target)
            self.stage(f"budget-{target.name}", inputs[f"budget-{target.name}"],
                       [paths.budget(target.name)],
                       lambda: run_budget(cfg, paths, data, cluster, target, progress))
        if cfg.benchmark.enabled:
            self.stage("benchmark", inputs["benchmark"], [paths.benchmark],
                       lambda: run_benchmark(cfg, paths, data))

    def _report(self):
        from .report import write_report

        write_report(self)


def run_experiment(config=None, out="xtl-demo", client=None, scheduler=None, progress=None):
    """Run (or resume) an experiment; see :mod:`xtl.experiment.stages`.

    Parameters
    ----------
    config : path, dict, ExperimentConfig or None
        A TOML file, a mapping, a parsed config, or None for the embedded demo.
    out : path-like
        Output folder.
    client, scheduler : optional
        A dask Client or a scheduler address for the ensembles and the sweep.

    Returns
    -------
    dict
        :meth:`Experiment.summary` plus the output folder and wall time.
    """
    start = time.perf_counter()
    if not isinstance(config, ExperimentConfig):
        config = load_config(config)
    with Experiment(config, out, client=client, scheduler=scheduler,
                    progress=progress) as experiment:
        summary = experiment.run()
    summary["out"] = str(experiment.out)
    summary["wall_seconds"] = time.perf_counter() - start
    return summary
