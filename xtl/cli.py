"""The ``xtl`` command.

``xtl demo`` runs the embedded default experiment (:data:`xtl.config.DEMO_CONFIG`)
and ``xtl run CONFIG`` a TOML one (:mod:`xtl.pipeline`); ``simulate``,
``coarse-grain``, ``train``, ``transfer``, ``sweep``, ``explain`` and ``report``
run one step each; ``cases`` lists the presets. User errors print one line on
stderr and exit with status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

class UserError(Exception):
    """An error in what the user asked for; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtl", description="Explainable transfer learning of SGS closures for 2D turbulence."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def scheduler(p):
        p.add_argument("--scheduler", default=None,
                       help="address of an existing dask scheduler (default: a LocalCluster, "
                            "or $DASK_SCHEDULER_ADDRESS)")

    demo = sub.add_parser("demo", help="run the embedded default experiment (data, models, report)")
    demo.add_argument("--out", default="xtl-demo", help="output folder (default: xtl-demo)")
    scheduler(demo)

    run = sub.add_parser("run", help="run (or resume) the experiment of a TOML config")
    run.add_argument("config", help="TOML file (see examples/demo.toml)")
    run.add_argument("--out", help="output folder (required unless --dry-run)")
    run.add_argument("--dry-run", action="store_true",
                     help="print each stage's estimated cost, from rates measured on this "
                          "machine, and run nothing")
    scheduler(run)

    sim = sub.add_parser("simulate", help="run one DNS and write it to netCDF")
    sim.add_argument("case", help="a preset name (see `xtl cases`)")
    sim.add_argument("--out", required=True, help="netCDF file to write")
    sim.add_argument("--t-end", type=float, required=True)
    sim.add_argument("--save-interval", type=float, required=True)
    sim.add_argument("--spin-up", type=float, default=0.0)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--dt", type=float, help="override the case's time step")
    sim.add_argument("--n", type=int, help="override the case's grid size")
    sim.add_argument("--overwrite", action="store_true")

    cg = sub.add_parser("coarse-grain", help="filter and coarse-grain a DNS file to LES data (psi, omega, pi)")
    cg.add_argument("dns", help="DNS netCDF (from `xtl simulate`)")
    cg.add_argument("--n-les", type=int, required=True)
    cg.add_argument("--filter", default="gaussian", help="gaussian, box or sharp")
    cg.add_argument("--out", required=True)
    cg.add_argument("--overwrite", action="store_true")

    tr = sub.add_parser("train", help="train a base network on LES data")
    tr.add_argument("data", help="LES netCDF (psi, omega, pi)")
    tr.add_argument("--out", required=True, help="model path (.keras; a .nc is written beside it)")
    tr.add_argument("--layers", type=int, default=11, help="conv layers (default 11, the paper)")
    tr.add_argument("--channels", type=int, default=64)
    tr.add_argument("--kernel-size", type=int, default=5)
    tr.add_argument("--padding", default="zeros", help="zeros (the paper) or periodic")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--overwrite", action="store_true")

    tf = sub.add_parser("transfer", help="re-train chosen layers of a model on target LES data")
    tf.add_argument("model", help="base model (.keras or .nc)")
    tf.add_argument("data", help="target LES netCDF")
    tf.add_argument("--layers", type=int, nargs="+", required=True)
    tf.add_argument("--fraction", type=float, help="fraction of the target samples to use")
    tf.add_argument("--epochs", type=int, default=20)
    tf.add_argument("--out", required=True)
    tf.add_argument("--seed", type=int, default=0)
    tf.add_argument("--overwrite", action="store_true")

    sw = sub.add_parser("sweep", help="re-train each single layer and score it on target test data")
    sw.add_argument("model")
    sw.add_argument("train_data")
    sw.add_argument("test_data")
    sw.add_argument("--fraction", type=float)
    sw.add_argument("--epochs", type=int, default=20,
                    help="epoch cap of each re-training (default 20)")
    sw.add_argument("--patience", type=int, default=None,
                    help="early stopping after this many epochs without a better validation "
                         "loss, restoring the best weights (default: none)")
    sw.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="seeds: each draws another target subset and shuffle (default 0)")
    sw.add_argument("--out", required=True, help="netCDF of the metrics over `layer`")
    sw.add_argument("--overwrite", action="store_true")
    scheduler(sw)

    ex = sub.add_parser("explain", help="kernel filter census of a model (and changes from a base)")
    ex.add_argument("model")
    ex.add_argument("--n", type=int, required=True, help="padded grid (the LES grid)")
    ex.add_argument("--base", help="base model: also write the kernel changes")
    ex.add_argument("--out", required=True)
    ex.add_argument("--overwrite", action="store_true")

    rp = sub.add_parser("report", help="redraw report.html of an experiment folder")
    rp.add_argument("out", help="experiment folder (from `xtl run` or `xtl demo`)")

    sub.add_parser("cases", help="list the preset cases")
    return parser


def _case(name, **changes):
    from .cases import get_case

    changes = {k: v for k, v in changes.items() if v is not None}
    try:
        return get_case(name, **changes)
    except KeyError as err:
        raise UserError(err.args[0]) from None


def _existing(path, what):
    if not Path(path).exists():
        raise UserError(f"{what} {str(path)!r} does not exist")
    return path


def _open(path, what="data"):
    import xarray as xr

    return xr.open_dataset(_existing(path, what))


def _load_model(path):
    from .backends import load_model

    return load_model(_existing(path, "model"))


def cmd_cases(args) -> None:
    """Print the presets, one line each."""
    from .cases import PRESETS

    for name, case in sorted(PRESETS.items()):
        print(f"{name:15s} n={case.n:<5d} Re={case.Re:<8g} kf={case.kf:<4g} beta={case.beta:<4g} "
              f"mu={case.mu:<4g} dt={case.dt:g}  {case.description}")


def cmd_simulate(args) -> None:
    """Run one DNS to ``--out``."""
    from .solver import simulate

    case = _case(args.case, dt=args.dt, n=args.n)
    ds = simulate(case, t_end=args.t_end, save_interval=args.save_interval, spin_up=args.spin_up,
                  path=args.out, overwrite=args.overwrite, seed=args.seed)
    print(f"wrote {args.out}: {ds.sizes['time']} snapshots of {case.n}² ({case.name})")


def cmd_coarse_grain(args) -> None:
    """Coarse-grain a DNS file."""
    from .coarse import coarse_grain
    from .io import check_output_path, write_dataset

    check_output_path(args.out, args.overwrite, argument="--out")
    with _open(args.dns, "DNS file") as dns:
        les = coarse_grain(dns, args.n_les, filter=args.filter).compute()
    write_dataset(les, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: psi, omega, pi on {args.n_les}²")


def _check_model_out(path, overwrite):
    """Refuse an existing model output before any training is done."""
    from .io import check_output_path

    path = Path(path)
    for target in (path, path.with_suffix(".nc")):
        check_output_path(target, overwrite, argument="--out")


def cmd_train(args) -> None:
    """Train a base network."""
    from .training import train

    _check_model_out(args.out, args.overwrite)
    spec = dict(n_layers=args.layers, channels=args.channels, kernel_size=args.kernel_size,
                padding=args.padding)
    with _open(args.data) as data:
        model = train(data, spec, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    model.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out} (final loss {float(model.history.loss[-1]):.4g})")


def cmd_transfer(args) -> None:
    """Re-train chosen layers."""
    from .training import transfer

    _check_model_out(args.out, args.overwrite)
    with _open(args.data) as data:
        model = transfer(_load_model(args.model), data, args.layers, fraction=args.fraction,
                         epochs=args.epochs, seed=args.seed)
    model.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out} (re-trained layers {args.layers})")


def cmd_sweep(args) -> None:
    """Single-layer sweep."""
    from .io import check_output_path, write_dataset
    from .sweep import layer_sweep

    check_output_path(args.out, args.overwrite, argument="--out")
    client = _client(args.scheduler)
    try:
        with _open(args.train_data) as train_data, _open(args.test_data) as test_data:
            sweep = layer_sweep(_load_model(args.model), train_data, test_data,
                                seeds=args.seeds, fraction=args.fraction, epochs=args.epochs,
                                patience=args.patience, client=client)
    finally:
        if client is not None:
            client.close()
    write_dataset(sweep, args.out, overwrite=args.overwrite)
    best = int(sweep.attrs["best"])
    print(f"wrote {args.out}; best layer {best} (mean CC "
          f"{float(sweep.cc_mean.sel(layer=best)):.3f} over {sweep.sizes['seed']} seed(s), "
          f"base CC {float(sweep.base_cc):.3f}); best set {list(sweep.attrs['best_set'])}")


def cmd_explain(args) -> None:
    """Filter census (and kernel changes)."""
    from .io import check_output_path, write_dataset
    from .spectral import classify_kernels, kernel_change

    check_output_path(args.out, args.overwrite, argument="--out")
    model_ds = _load_model(args.model).to_dataset()
    out = classify_kernels(model_ds, args.n)
    if args.base:
        change = kernel_change(_load_model(args.base).to_dataset(), model_ds, n=args.n)
        out = out.merge(change.drop_vars(["layer", "channel_out", "channel_in"], errors="ignore"),
                        compat="override")
    write_dataset(out, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")


def cmd_report(args) -> None:
    """Redraw the report of an experiment folder."""
    from .config import load_config
    from .pipeline import Experiment
    from .report import write_report

    folder = Path(_existing(args.out, "experiment folder"))
    config = load_config(json.loads(_existing(folder / "config.json", "config").read_text()))
    path = write_report(Experiment(config, folder))
    print(f"wrote {path}")


def _client(address):
    if address is None:
        return None
    from distributed import Client

    return Client(address)


def _run(config, out, scheduler):
    from .pipeline import run_experiment

    client = _client(scheduler)
    try:
        summary = run_experiment(config, out, client=client)
    finally:
        if client is not None:
            client.close()
    print(f"\nexperiment done in {summary['wall_seconds']:.0f} s: {summary['out']}/report.html")
    print(f"stages run: {len(summary['ran'])}, skipped (unchanged): {len(summary['skipped'])}")
    for target, s in summary["targets"].items():
        cc = ", ".join(f"L{k}: {m:.3f}±{e:.3f}" for k, (m, e) in s["cc_tlnn"].items())
        print(f"  {target}: CC BNN {s['cc_bnn']:.3f}; CC TLNN per layer {cc}; best set "
              f"{s['best_set']}")
        for method, r in s["recommendations"].items():
            print(f"    {method}: recommended {r['recommended']} (rank {r['rank']}, "
                  f"{'in' if r['hit'] else 'not in'} the best set, Spearman "
                  f"{r['spearman']:.2f}, cost {100 * r['cost_ratio']:.1f}% of the sweep)")


def cmd_demo(args) -> None:
    """Run the embedded default experiment."""
    _run(None, args.out, args.scheduler)


def cmd_run(args) -> None:
    """Run the experiment of a TOML config (or estimate its cost)."""
    config = _existing(args.config, "config file")
    if args.dry_run:
        from .config import load_config
        from .estimate import estimate_experiment, format_estimate, measure_rates

        cfg = load_config(config)
        print(f"measuring rates on this machine for {cfg.name!r} ...", flush=True)
        rates = measure_rates(cfg)
        print(format_estimate(estimate_experiment(cfg, rates), rates))
        return
    if args.out is None:
        raise UserError("xtl run needs --out FOLDER (or --dry-run)")
    _run(config, args.out, args.scheduler)


COMMANDS = {
    "demo": cmd_demo,
    "run": cmd_run,
    "simulate": cmd_simulate,
    "coarse-grain": cmd_coarse_grain,
    "train": cmd_train,
    "transfer": cmd_transfer,
    "sweep": cmd_sweep,
    "explain": cmd_explain,
    "report": cmd_report,
    "cases": cmd_cases,
}


def main(argv=None) -> int:
    """Entry point of the ``xtl`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a user error (one line on stderr), 130 when interrupted.
    """
    import logging

    from .solver.run import DivergenceError

    logging.getLogger("distributed").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (UserError, DivergenceError, ValueError, TypeError, FileExistsError,
            FileNotFoundError, PermissionError) as err:
        print(f"xtl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xtl {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
