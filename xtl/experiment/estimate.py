"""What an experiment will cost, before it runs: ``xtl run --dry-run CONFIG``.

Rates are measured here, on this machine, with the experiment's own grids and
network (a few solver steps at each DNS and LES grid, two short trainings on
random fields of the LES grid's size); the counts come from the config. Every
training is counted at its epoch cap, so the estimate is an upper bound where
early stopping ends trainings sooner. Stages that run on the dask cluster (DNS
ensembles, sweeps) are divided by its workers, assuming they are kept busy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .config import TEST_FRACTION, ExperimentConfig, FileFlowConfig, n_snapshots

__all__ = ["measure_rates", "estimate_experiment", "format_estimate", "StageEstimate",
           "retrain_seconds"]


@dataclass(frozen=True)
class StageEstimate:
    """The estimated cost of one stage (kind) of an experiment.

    Attributes
    ----------
    stage : str
        The stage's name (``sweep-<target>``).
    work : str
        What is counted, in words.
    seconds : float
        Estimated wall time on this machine.
    """

    stage: str
    work: str
    seconds: float


def _dns_step_seconds(case, n_les, closure=None) -> float:
    """Seconds per solver step at ``case`` (with on-the-fly coarse-graining to ``n_les``,
    or with a ``closure``)."""
    from ..solver import simulate

    def run(steps):
        start = time.perf_counter()
        simulate(case, t_end=steps * case.dt, save_interval=steps * case.dt,
                 les=None if n_les is None else dict(n_les=n_les), closure=closure,
                 progress=False)
        return time.perf_counter() - start

    few, more = 4, 24
    base = run(few)  # plans and caches on the first call
    base = run(few)
    while True:  # more steps until they take a measurable time past the set-up
        extra = run(more) - base
        if extra > 0.25 or more >= 4096:
            return max(extra / (more - few), 1e-9)
        more *= 4


def _random_les(n: int, samples: int) -> xr.Dataset:
    rng = np.random.default_rng(0)
    dims = ("sample", "y", "x")
    return xr.Dataset({v: (dims, rng.standard_normal((samples, n, n)).astype(np.float32))
                       for v in ("psi", "omega", "pi")})


def _epoch_seconds_per_sample(network: dict, n_les: int) -> tuple:
    """Seconds per sample and epoch of a full training and of re-training the first
    layer (the whole network's passes) and the last (on the cached prefix: its own
    passes only); the second epoch's (the first traces); and the trained model."""
    from ..nn.training import train, transfer

    samples = 16
    data = _random_les(n_les, samples)
    kwargs = dict(epochs=2, batch_size=8, validation=None, progress=False)
    model = train(data, network, **kwargs)
    full = float(model.history.epoch_time.values[-1]) / samples
    per_layer = [float(transfer(model, data, [layer], **kwargs).history.epoch_time.values[-1])
                 / samples for layer in (1, model.n_layers)]
    return {"full": full, "first": per_layer[0], "last": per_layer[1]}, model


def measure_rates(config: ExperimentConfig) -> dict:
    """Measure the rates the estimate needs, here.

    Returns
    -------
    dict
        ``dns_step[flow]`` (seconds per step), ``les_step`` and ``les_physics_step``
        (seconds per LES step at the base's LES grid with a network closure and with
        dynamic Smagorinsky, the dearer physics closure), ``train_sample_epoch``
        and ``transfer_sample_epoch`` (seconds per sample and epoch), ``workers``.
    """
    from ..nn.closure import ModelClosure
    from ..physics.closures import DynamicSmagorinsky
    from ..solver.les import les_case
    from ..solver.ensemble import default_n_workers

    dns, by_grid = {}, {}  # one measurement per (n, dt, n_les)
    for flow in _preset_flows(config):
        case = flow.make_case()
        key = (case.n, case.dt, case.n_les)
        if key not in by_grid:
            by_grid[key] = _dns_step_seconds(case, case.n_les)
        dns[flow.name] = by_grid[key]
    rates, model = _epoch_seconds_per_sample(config.network, _shape(config.base)[1])
    out = {"dns_step": dns, "workers": default_n_workers()}
    if any(config.runs_aposteriori(t) for t in config.targets):
        lcase = les_case(config.base.make_case())
        out.update(les_step=_dns_step_seconds(lcase, None, ModelClosure(model)),
                   les_physics_step=_dns_step_seconds(lcase, None, DynamicSmagorinsky()),
                   les_dt=lcase.dt)
    return {
        **out,
        "train_sample_epoch": rates["full"],
        "transfer_sample_epoch": (rates["first"] + rates["last"]) / 2,
        "transfer_first_sample_epoch": rates["first"],
        "transfer_last_sample_epoch": rates["last"],
    }


def retrain_seconds(rates: dict, first: int, n_layers: int) -> float:
    """Seconds per sample and epoch of re-training layers ``first``.. (and any deeper
    ones) of an ``n_layers`` network on the cached output of the layers before.

    The forward and backward passes of layers first..L are what an epoch costs, so
    the cost falls linearly from the first layer's (``transfer_first_sample_epoch``,
    the whole network) to the last's (``transfer_last_sample_epoch``); rates without
    them cost every layer ``transfer_sample_epoch``.
    """
    if "transfer_first_sample_epoch" not in rates or n_layers < 2:
        return rates["transfer_sample_epoch"]
    t1, t_last = rates["transfer_first_sample_epoch"], rates["transfer_last_sample_epoch"]
    return t_last + (t1 - t_last) * (n_layers - first) / (n_layers - 1)


def _pairs_estimate(config, target, rates, fit: int) -> StageEstimate:
    """Every pair (a, b) of the swept layers costs re-training from layer a on."""
    layers = config.sweep.layers or range(1, int(config.network.get("n_layers", 11)) + 1)
    layers, n_layers = sorted(layers), int(config.network.get("n_layers", 11))
    seeds, cap, workers = len(config.seeds), config.transfer.fit.epochs, rates["workers"]
    per_seed = sum(retrain_seconds(rates, a, n_layers) for i, a in enumerate(layers)
                   for _ in layers[i + 1:])
    n_pairs = len(layers) * (len(layers) - 1) // 2
    return StageEstimate(f"pairs-{target.name}",
                         f"{n_pairs} pairs x {seeds} seeds x {fit} samples x {cap} epochs, "
                         f"{workers} workers", per_seed * seeds * fit * cap / workers)


def _preset_flows(config: ExperimentConfig) -> list:
    """The flows xtl simulates (not read from files)."""
    return [f for f in config.flows if not isinstance(f, FileFlowConfig)]


def _shape(flow) -> tuple:
    """``(samples, LES grid)`` of a flow: of its DNS ensemble for a preset; for a flow
    read from files, its files' members × times (read lazily) and its ``n_les`` (else
    the files' ``case_n_les``, else their grid)."""
    if not isinstance(flow, FileFlowConfig):
        return flow.members * n_snapshots(flow), flow.make_case().n_les
    from ..data.netcdf import open_dataset

    samples, n_les = 0, flow.n_les
    for path in flow.files():
        with open_dataset(path) as ds:
            samples += ds.sizes.get("member", 1) * ds.sizes.get("time", 1)
            if n_les is None:
                n_les = int(ds.attrs.get("case_n_les", ds.sizes["x"]))
    return samples, n_les


def _snapshots(flow) -> int:
    return _shape(flow)[0]


def estimate_experiment(config: ExperimentConfig, rates: dict | None = None) -> list:
    """Estimated wall time of every stage of an experiment.

    Parameters
    ----------
    rates : dict, optional
        From :func:`measure_rates` (measured now when None).

    Returns
    -------
    list of StageEstimate
    """
    rates = measure_rates(config) if rates is None else rates
    workers = rates["workers"]
    rows = []
    for flow in _preset_flows(config):
        case = flow.make_case()
        steps = flow.members * int(round(flow.t_end / case.dt))
        rows.append(StageEstimate(f"data-{flow.name}", f"{steps:,} DNS steps at {case.n}² on "
                                  f"{workers} workers", steps * rates["dns_step"][flow.name]
                                  / min(workers, flow.members)))
    n_base = int(_snapshots(config.base) * (1 - TEST_FRACTION))
    validation = config.training.validation or 0.0
    epochs = config.training.fit.epochs
    n_fit = int(n_base * (1 - validation))
    rows.append(StageEstimate("base-model", f"{n_fit} samples x {epochs} epochs",
                              n_fit * epochs * rates["train_sample_epoch"]))
    tl = config.transfer
    n_tl = tl.n_samples if tl.n_samples is not None else \
        max(2, int(round(tl.fraction * n_base)))
    tl_validation = tl.validation or 0.0
    tl_fit = max(1, int(n_tl * (1 - tl_validation)))
    cap = tl.fit.epochs
    n_layers = int(config.network.get("n_layers", 11))
    seeds = len(config.seeds)
    probe = int(config.recommend.method_options("probe").get("epochs", 5))
    baselines = config.sweep.options.baselines
    for target in config.targets:
        pool = int(_snapshots(target) * (1 - TEST_FRACTION))
        if "probe" in config.recommend.methods:
            rows.append(StageEstimate(f"recommend-{target.name}",
                                      f"probe: {n_layers} layers x {probe} epochs",
                                      n_layers * probe * tl_fit * rates["transfer_sample_epoch"]))
        work = n_layers * seeds * tl_fit * cap * rates["transfer_sample_epoch"]
        text = f"{n_layers} layers x {seeds} seeds x {tl_fit} samples x {cap} epochs"
        if "scratch" in baselines:
            work += seeds * tl_fit * cap * rates["train_sample_epoch"]
            text += " + scratch"
        if "full_target" in baselines:
            work += seeds * int(pool * 0.9) * cap * rates["train_sample_epoch"]
            text += f" + full target ({int(pool * 0.9)} samples)"
        rows.append(StageEstimate(f"sweep-{target.name}", text + f", {workers} workers",
                                  work / workers))
        if config.sweep.pairs_of(target.name):
            rows.append(_pairs_estimate(config, target, rates, tl_fit))
        if config.runs_aposteriori(target):
            rows.append(_aposteriori_estimate(config, target, rates))
    if config.budget.enabled:  # the main sweep's fraction is already counted
        target = config.budget.target
        for fraction in config.budget.fractions:
            n = max(2, int(round(fraction * n_base)))
            if n == n_tl:
                continue
            fit = max(1, int(n * (1 - tl_validation)))
            rows.append(StageEstimate(
                f"budget-{target}", f"{n_layers} layers x {seeds} seeds x {fit} samples x "
                f"{cap} epochs", n_layers * seeds * fit * cap * rates["transfer_sample_epoch"]
                / workers))
    return rows


def _aposteriori_estimate(config, target, rates) -> StageEstimate:
    """Every closure from every initial state: the network runs dominate."""
    les = config.les
    states = les.initial_states
    steps = int(round(les.schedule.t_end / (les.schedule.dt or rates["les_dt"])))
    networks = 2 + len(config.sweep.options.baselines)  # BNN, TLNN and the baselines
    physics = 1 + len(les.baseline)
    work = states * steps * (networks * rates["les_step"] + physics * rates["les_physics_step"])
    workers = min(rates["workers"], states * (networks + physics))
    return StageEstimate(f"aposteriori-{target.name}",
                         f"{states} states x ({networks} networks + {physics} physics closures) "
                         f"x {steps:,} LES steps, {workers} workers", work / workers)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_estimate(rows: list, rates: dict) -> str:
    """The estimate (``rows`` of :class:`StageEstimate`) as a table, with the total and
    what the ``rates`` of :func:`measure_rates` were."""
    width = max(len(r.stage) for r in rows)
    lines = [f"{'stage':<{width}}  {'estimate':>9}  work", "-" * (width + 60)]
    lines += [f"{r.stage:<{width}}  {_duration(r.seconds):>9}  {r.work}" for r in rows]
    total = sum(r.seconds for r in rows)
    lines += ["-" * (width + 60), f"{'total':<{width}}  {_duration(total):>9}",
              "",
              "Measured here: " + ", ".join(f"DNS step {name} {1e3 * s:.2f} ms"
                                           for name, s in rates["dns_step"].items())
              + f"; training {1e3 * rates['train_sample_epoch']:.1f} ms and re-training "
              f"{1e3 * rates['transfer_sample_epoch']:.1f} ms per sample-epoch"
              + (f" (layer 1 {1e3 * rates['transfer_first_sample_epoch']:.1f} ms, the last "
                 f"layer on its cached prefix {1e3 * rates['transfer_last_sample_epoch']:.1f} "
                 "ms)" if "transfer_first_sample_epoch" in rates else "")
              + (f"; LES step {1e3 * rates['les_step']:.1f} ms" if "les_step" in rates else "")
              + f"; {rates['workers']} workers.",
              "Trainings are counted at their epoch cap (early stopping ends them sooner)."]
    if total > 12 * 3600:
        lines.append("This experiment belongs on a GPU node or a dask cluster (xtl run "
                     "--scheduler ADDRESS): it would take over half a day here.")
    return "\n".join(lines)
