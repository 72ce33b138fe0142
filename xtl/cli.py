"""The ``xtl`` command.

``xtl demo`` runs the embedded default experiment (:data:`xtl.experiment.config.DEMO_CONFIG`)
and ``xtl run CONFIG`` a TOML one (:mod:`xtl.experiment.stages`); ``simulate``, ``ensemble``,
``coarse-grain``, ``train``, ``transfer``, ``sweep``, ``explain`` and ``report``
run one step each; ``cases`` lists the presets; ``xtl --version`` prints the
version. Every flag's help shows its default (``xtl COMMAND --help``). User
errors print one line on stderr and exit with status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from .data.files import OutputLockedError, check_output_folder, check_output_path
from .nn.spec import INPUTS, OUTPUTS, Variables

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class UserError(Exception):
    """An error in what the user asked for; printed as one line."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that shows every flag's default (``None`` and ``False`` are not shown)."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or "%(default)" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


#: The defaults of ``xtl train``: the paper's network (Guan et al. 2022; Subel et al. 2023).
PAPER_LAYERS, PAPER_CHANNELS = 11, 64


def _command(sub, name, help, handler):
    """The sub-command ``name``, run by ``handler(args)``."""
    parser = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
    parser.set_defaults(handler=handler)
    return parser


def _add_scheduler(p):
    p.add_argument("--scheduler", default=None,
                   help="address of an existing dask scheduler (default: the one in "
                        "$DASK_SCHEDULER_ADDRESS, else a LocalCluster)")


def _add_overwrite(p):
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def _add_dtype(p):
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="storage type of the fields in the netCDF output")


def _add_schedule(p):
    p.add_argument("--t-end", type=float, required=True,
                   help="end time; the last snapshot is the last save time not after it")
    p.add_argument("--save-interval", type=float, required=True,
                   help="time between snapshots (a multiple of the case's dt)")
    p.add_argument("--spin-up", type=float, default=0.0,
                   help="time run before the first snapshot")
    p.add_argument("--dt", type=float, help="override the case's time step")
    p.add_argument("--n", type=int, help="override the case's grid size")


def _add_les_options(p, what):
    from .physics.fourier import FILTERS

    p.add_argument("--les", action="store_true",
                   help=f"coarse-grain {what} on the fly: store only psi, omega and pi on "
                        "the LES grid (the case's n_les unless --n-les)")
    p.add_argument("--n-les", type=int, help="LES grid size (implies --les; default: the "
                                               "case's n_les)")
    p.add_argument("--filter", default="gaussian", choices=FILTERS,
                   help="filter of the on-the-fly coarse-graining")
    p.add_argument("--dns-every", type=int,
                   help="with --les: also keep every k-th DNS snapshot in <out>.dns.nc")


def _demo_command(sub):
    demo = _command(sub, "demo", "run the embedded default experiment (data, models, report)",
                    cmd_demo)
    demo.add_argument("--out", default="xtl-demo", help="output folder")
    _add_scheduler(demo)


def _run_command(sub):
    run = _command(sub, "run", "run (or resume) the experiment of a TOML config", cmd_run)
    run.add_argument("config", help="TOML file (see examples/demo.toml)")
    run.add_argument("--out", help="output folder (required unless --dry-run)")
    run.add_argument("--dry-run", action="store_true",
                     help="print each stage's estimated cost, from rates measured on this "
                          "machine, and run nothing")
    _add_scheduler(run)


def _simulate_command(sub):
    sim = _command(sub, "simulate",
                   "run one DNS (or LES training data, --les) and write it to netCDF",
                   cmd_simulate)
    sim.add_argument("case", help="a preset name (see `xtl cases`)")
    sim.add_argument("--out", required=True, help="netCDF file to write")
    _add_schedule(sim)
    sim.add_argument("--seed", type=int, default=0, help="seed of the random initial condition")
    _add_les_options(sim, "each snapshot")
    _add_dtype(sim)
    _add_overwrite(sim)


def _ensemble_command(sub):
    ens = _command(sub, "ensemble", "run an ensemble of (case, seed) members on a dask "
                                    "cluster, one netCDF file per member", cmd_ensemble)
    ens.add_argument("cases", nargs="+", help="preset names (see `xtl cases`)")
    ens.add_argument("--seeds", type=int, nargs="+", default=[0],
                     help="seeds of the random initial conditions (one member per case and seed)")
    ens.add_argument("--directory", required=True,
                     help="folder of the member files (complete members are not run again)")
    _add_schedule(ens)
    _add_les_options(ens, "every member")
    _add_dtype(ens)
    ens.add_argument("--n-workers", type=int,
                     help="workers of the LocalCluster (default: one per core)")
    _add_scheduler(ens)


def _coarse_grain_command(sub):
    from .physics.fourier import FILTERS

    cg = _command(sub, "coarse-grain",
                  "filter and coarse-grain a DNS file to LES data (psi, omega, pi)",
                  cmd_coarse_grain)
    cg.add_argument("dns", help="DNS netCDF (from `xtl simulate` without --les)")
    cg.add_argument("--n-les", type=int,
                    help="LES grid size (default: the case's n_les, from the file's attributes)")
    cg.add_argument("--filter", default="gaussian", choices=FILTERS,
                    help="the filter")
    cg.add_argument("--out", required=True, help="netCDF file to write")
    _add_dtype(cg)
    _add_overwrite(cg)


def _train_command(sub):
    tr = _command(sub, "train", "train a base network on LES data", cmd_train)
    tr.add_argument("data", help="LES netCDF or zarr (psi, omega, pi; or --inputs, --outputs)")
    tr.add_argument("--out", required=True, help="model path (.keras; a .nc is written beside it)")
    tr.add_argument("--layers", type=int, default=PAPER_LAYERS,
                    help="conv layers; the default is the paper's network, 11 layers × 64 channels")
    tr.add_argument("--channels", type=int, default=PAPER_CHANNELS,
                    help="channels of the hidden layers (64 in the paper's network)")
    tr.add_argument("--kernel-size", type=int, default=5, help="kernel size (taps per side)")
    tr.add_argument("--padding", default="zeros", choices=["zeros", "periodic"],
                    help="zeros (the paper) or periodic")
    tr.add_argument("--epochs", type=int, default=20, help="training epochs")
    tr.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    tr.add_argument("--seed", type=int, default=0, help="seed of the weights and the batches")
    tr.add_argument("--inputs", nargs="+", default=list(INPUTS),
                    help="input variables, in channel order (default: psi omega)")
    tr.add_argument("--outputs", nargs="+", default=list(OUTPUTS),
                    help="output variables (default: pi)")
    tr.add_argument("--channel-dim", default=None,
                    help="a dim whose entries become channels, e.g. lev (default: none; "
                         "every dim but y, x holds samples)")
    _add_overwrite(tr)


def _transfer_command(sub):
    tf = _command(sub, "transfer", "re-train chosen layers of a model on target LES data",
                  cmd_transfer)
    tf.add_argument("model", help="base model (.keras or .nc)")
    tf.add_argument("data", help="target LES netCDF")
    tf.add_argument("--layers", type=int, nargs="+", required=True,
                    help="layers to re-train (1 = input side)")
    tf.add_argument("--fraction", type=float,
                    help="fraction of the target samples to use (default: all)")
    tf.add_argument("--epochs", type=int, default=20, help="training epochs")
    tf.add_argument("--out", required=True, help="model path (.keras; a .nc is written beside it)")
    tf.add_argument("--seed", type=int, default=0, help="seed of the subset and the batches")
    _add_overwrite(tf)


def _sweep_command(sub):
    sw = _command(sub, "sweep", "re-train each single layer and score it on target test data",
                  cmd_sweep)
    sw.add_argument("model", help="base model (.keras or .nc)")
    sw.add_argument("train_data", help="target LES netCDF to re-train on")
    sw.add_argument("test_data", help="target LES netCDF to score on")
    sw.add_argument("--fraction", type=float,
                    help="fraction of the target samples to use (default: all)")
    sw.add_argument("--epochs", type=int, default=20,
                    help="epoch cap of each re-training")
    sw.add_argument("--patience", type=int, default=None,
                    help="early stopping after this many epochs without a better validation "
                         "loss, restoring the best weights (default: none)")
    sw.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="seeds: each draws another target subset and shuffle")
    sw.add_argument("--out", required=True, help="netCDF of the metrics over `layer`")
    _add_overwrite(sw)
    _add_scheduler(sw)


def _explain_command(sub):
    ex = _command(sub, "explain", "kernel filter census of a model (and changes from a base)",
                  cmd_explain)
    ex.add_argument("model", help="model (.keras or .nc)")
    ex.add_argument("--pad-to", type=int,
                    help="grid to zero-pad the kernels to (default: the grid the model was "
                         "trained on)")
    ex.add_argument("--base", help="base model: also write the kernel changes")
    ex.add_argument("--out", required=True, help="netCDF file to write")
    _add_overwrite(ex)


def _report_command(sub):
    rp = _command(sub, "report", "redraw the report of an experiment folder (report.html, or "
                  "report.md with --format md) and results/summary.nc + summary.json",
                  cmd_report)
    rp.add_argument("out", help="experiment folder (from `xtl run` or `xtl demo`)")
    rp.add_argument("--format", choices=("html", "md"), default="html",
                    help="html (default): report.html; md: report.md (renders on GitHub)")


def _cases_command(sub):
    _command(sub, "cases", "list the preset cases", cmd_cases)



#: The sub-commands, in the order ``xtl --help`` lists them.
_COMMANDS = (_demo_command, _run_command, _simulate_command, _ensemble_command,
             _coarse_grain_command, _train_command, _transfer_command, _sweep_command,
             _explain_command, _report_command, _cases_command)


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="xtl", formatter_class=_Formatter,
        description="Explainable transfer learning of SGS closures for 2D turbulence.",
    )
    parser.add_argument("--version", action="version", version=f"xtl {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def _case(name, **changes):
    from .physics.cases import get_case

    changes = {k: v for k, v in changes.items() if v is not None}
    try:
        return get_case(name, **changes)
    except KeyError as err:
        raise UserError(err.args[0]) from None


def _existing(path, what):
    if not Path(path).exists():
        raise UserError(f"{what} {str(path)!r} does not exist")
    return path


def _open(path, what="data", variables=None):
    from .data.netcdf import open_dataset

    return open_dataset(_existing(path, what), variables=variables)




def _same_file(a, b) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _refuse_inputs_as_outputs(outputs, inputs, argument="--out") -> None:
    """Refuse an output that is one of the inputs (it would be replaced, the input lost)."""
    for out in outputs:
        for given in inputs:
            if given is not None and _same_file(out, given):
                raise UserError(f"{argument} {str(out)!r} is the input file {str(given)!r}: "
                                "writing it would destroy the input; choose another name")


def _load_model(path):
    from .nn.files import load_model

    return load_model(_existing(path, "model"))


def cmd_cases(args) -> None:
    """Print the presets, one line each."""
    from .physics.cases import PRESETS

    for name, case in sorted(PRESETS.items()):
        print(f"{name:15s} n={case.n:<5d} Re={case.Re:<8g} kf={case.kf:<4g} beta={case.beta:<4g} "
              f"mu={case.mu:<4g} dt={case.dt:g}  {case.description}")


def _les_argument(args):
    """The ``les=`` argument of simulate/ensemble from ``--les``, ``--n-les``, ``--filter``."""
    if not args.les and args.n_les is None:
        if args.dns_every is not None:
            raise UserError("--dns-every only applies with --les or --n-les (the DNS is "
                            "stored in full without them)")
        if args.filter != "gaussian":
            raise UserError("--filter only applies with --les or --n-les")
        return None
    les = {"filter": args.filter}
    if args.n_les is not None:
        les["n_les"] = args.n_les
    return les


def cmd_simulate(args) -> None:
    """Run one DNS (or on-the-fly LES data) to ``--out``."""
    from .solver import simulate

    check_output_path(args.out, args.overwrite, argument="--out")
    # every override first, then the case's checks (``--n 8 --n-les 4`` of a preset
    # whose n_les is 16 is a valid case)
    case = _case(args.case, dt=args.dt, n=args.n, n_les=args.n_les)
    les = _les_argument(args)
    ds = simulate(case, t_end=args.t_end, save_interval=args.save_interval, spin_up=args.spin_up,
                  path=args.out, overwrite=args.overwrite, seed=args.seed, les=les,
                  dns_every=args.dns_every, dtype=args.dtype)
    what = "DNS" if les is None else "LES data (psi, omega, pi)"
    print(f"wrote {args.out}: {ds.sizes['time']} snapshots of {ds.sizes['x']}² {what} "
          f"({case.name}, {args.dtype})")
    if "dns_file" in ds.attrs:
        print(f"wrote {Path(args.out).with_name(ds.attrs['dns_file'])}: every "
              f"{args.dns_every}-th DNS snapshot")
    ds.close()


def cmd_ensemble(args) -> None:
    """Run an ensemble into ``--directory``."""
    from .solver.ensemble import ensemble

    cases = [_case(name, dt=args.dt, n=args.n) for name in args.cases]
    check_output_folder(args.directory, "--directory")
    ds = ensemble(cases, seeds=args.seeds, t_end=args.t_end, save_interval=args.save_interval,
                  spin_up=args.spin_up, directory=args.directory, les=_les_argument(args),
                  dns_every=args.dns_every, dtype=args.dtype, scheduler=args.scheduler,
                  n_workers=args.n_workers)
    complete = int((ds.status == "complete").sum())
    print(f"{complete} of {ds.sizes['member']} members complete in {args.directory} "
          f"({ds.sizes['time']} snapshots of {ds.sizes['x']}² each); open them with "
          f"xtl.open_ensemble({args.directory!r})")
    for number, file, status in zip(ds.member.values, ds.file.values, ds.status.values):
        print(f"  member {int(number)}: {file} ({status})")


def cmd_coarse_grain(args) -> None:
    """Coarse-grain a DNS file (refusing LES data)."""
    from .data.coarse import coarse_grain
    from .data.netcdf import write_dataset

    check_output_path(args.out, args.overwrite, argument="--out")
    _refuse_inputs_as_outputs([args.out], [_existing(args.dns, "DNS file")])
    with _open(args.dns, "DNS file") as dns:
        les = coarse_grain(dns, args.n_les, filter=args.filter).compute()
    write_dataset(les, args.out, overwrite=args.overwrite, dtype=args.dtype)
    print(f"wrote {args.out}: psi, omega, pi on {les.sizes['x']}² ({les.attrs['filter']} filter)")


def _check_model_out(path, overwrite, inputs):
    """Refuse a model output (wrong suffix, existing, an input) before any training is done."""
    from .nn.files import check_model_path

    _refuse_inputs_as_outputs(check_model_path(path, overwrite, argument="--out"), inputs)


def cmd_train(args) -> None:
    """Train a base network."""
    from .nn.training import train

    _check_model_out(args.out, args.overwrite, [args.data])
    spec = dict(n_layers=args.layers, channels=args.channels, kernel_size=args.kernel_size,
                padding=args.padding)
    paper = (args.layers, args.channels) == (PAPER_LAYERS, PAPER_CHANNELS)
    variables = Variables(args.inputs, args.outputs, args.channel_dim)
    with _open(args.data, variables=variables.names) as data:
        print(f"training {args.layers} layers × {args.channels} channels, {args.kernel_size}×"
              f"{args.kernel_size} kernels, {args.epochs} epochs"
              + (" (the paper's network; --layers/--channels for another)" if paper else ""))
        model = train(data, spec, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      inputs=variables.inputs, outputs=variables.outputs,
                      channels=variables.channels)
    model.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out} (final loss {float(model.history.loss[-1]):.4g})")


def cmd_transfer(args) -> None:
    """Re-train chosen layers."""
    from .nn.training import transfer

    _check_model_out(args.out, args.overwrite, [args.model, args.data])
    base = _load_model(args.model)
    with _open(args.data, variables=base.variables.names) as data:
        model = transfer(base, data, args.layers, fraction=args.fraction,
                         epochs=args.epochs, seed=args.seed)
    model.save(args.out, overwrite=args.overwrite)
    print(f"wrote {args.out} (re-trained layers {args.layers})")


def cmd_sweep(args) -> None:
    """Single-layer sweep."""
    from .data.netcdf import write_dataset
    from .nn.sweep import layer_sweep

    check_output_path(args.out, args.overwrite, argument="--out")
    _refuse_inputs_as_outputs([args.out], [args.model, args.train_data, args.test_data])
    base = _load_model(args.model)
    with _client(args.scheduler) as client, \
            _open(args.train_data, variables=base.variables.names) as train_data, \
            _open(args.test_data, variables=base.variables.names) as test_data:
        sweep = layer_sweep(base, train_data, test_data, seeds=args.seeds,
                            fraction=args.fraction, epochs=args.epochs,
                            patience=args.patience, client=client)
    write_dataset(sweep, args.out, overwrite=args.overwrite)
    best = int(sweep.attrs["best"])
    print(f"wrote {args.out}; best layer {best} (mean CC "
          f"{float(sweep.cc_mean.sel(layer=best)):.3f} over {sweep.sizes['seed']} seed(s), "
          f"base CC {float(sweep.base_cc):.3f}); best set {list(sweep.attrs['best_set'])}")


def cmd_explain(args) -> None:
    """Filter census (and kernel changes)."""
    from .data.netcdf import write_dataset
    from .explain.kernels import classify_kernels, kernel_change

    check_output_path(args.out, args.overwrite, argument="--out")
    _refuse_inputs_as_outputs([args.out], [args.model, args.base])
    model_ds = _load_model(args.model).to_dataset()
    out = classify_kernels(model_ds, args.pad_to)
    if args.base:
        change = kernel_change(_load_model(args.base).to_dataset(), model_ds, pad_to=args.pad_to)
        out = out.merge(change.drop_vars(["layer", "channel_out", "channel_in"], errors="ignore"),
                        compat="override")
    write_dataset(out, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}")


def cmd_report(args) -> None:
    """Redraw the report of an experiment folder."""
    from .experiment.config import load_config
    from .experiment.stages import Experiment
    from .experiment.report import write_report

    folder = Path(_existing(args.out, "experiment folder"))
    if not folder.is_dir():
        raise UserError(f"{str(folder)!r} is a file, not an experiment folder")
    config = load_config(json.loads(_existing(folder / "config.json", "config").read_text()))
    with Experiment(config, folder) as experiment:
        path = write_report(experiment, format=args.format)
    print(f"wrote {path}")


@contextlib.contextmanager
def _client(address):
    """A Client of the scheduler at ``address`` (probed first: a dead or non-dask
    address is refused within ``$XTL_SCHEDULER_TIMEOUT`` seconds), closed on exit;
    None without an address."""
    if address is None:
        yield None
        return
    from .scheduler import connect

    with contextlib.closing(connect(address, name="--scheduler", set_as_default=True)) as client:
        yield client


def _run(config, out, scheduler):
    from .experiment.stages import run_experiment

    with _client(scheduler) as client:
        summary = run_experiment(config, out, client=client)
    print(f"\nexperiment done in {summary['wall_seconds']:.0f} s: {summary['out']}/report.html")
    print(f"stages run: {len(summary['ran'])}, skipped (unchanged): {len(summary['skipped'])}")
    curve = ", ".join(f"{n}: {c:.3f}" for n, c in summary["base"]["learning_curve"].items())
    print(f"  base network: CC {summary['base']['cc']:.3f} on held-out base data "
          f"(CC by training samples: {curve})")
    for target, s in summary["targets"].items():
        cc = ", ".join(f"L{k}: {m:.3f}±{e:.3f}" for k, (m, e) in s["cc_tlnn"].items())
        print(f"  {target}: CC BNN {s['cc_bnn']:.3f}; CC TLNN per layer {cc}; best set "
              f"{s['best_set']}")
        if s.get("aposteriori_stable"):
            runs = ", ".join(f"{c} {k}/{n}" for c, (k, n) in s["aposteriori_stable"].items())
            print(f"    a posteriori, stable runs: {runs}")
        for method, r in s["recommendations"].items():
            print(f"    {method}: recommended {r['recommended']} (rank {r['rank']}, "
                  f"{'in' if r['hit'] else 'not in'} the best set, Spearman "
                  f"{r['spearman']:.2f}, cost {100 * r['cost_ratio']:.1f}% of the sweep)")


def cmd_demo(args) -> None:
    """Run the embedded default experiment."""
    check_output_folder(args.out, "--out")
    _run(None, args.out, args.scheduler)


def cmd_run(args) -> None:
    """Run the experiment of a TOML config (or estimate its cost)."""
    config = _existing(args.config, "config file")
    if args.dry_run:
        from .experiment.config import load_config
        from .experiment.estimate import estimate_experiment, format_estimate, measure_rates

        cfg = load_config(config)
        print(f"measuring rates on this machine for {cfg.name!r} ...", flush=True)
        rates = measure_rates(cfg)
        print(format_estimate(estimate_experiment(cfg, rates), rates))
        return
    if args.out is None:
        raise UserError("xtl run needs --out FOLDER (or --dry-run)")
    check_output_folder(args.out, "--out")
    _run(config, args.out, args.scheduler)



def main(argv=None) -> int:
    """Entry point of the ``xtl`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a user error (one line on stderr: bad input, an
        unreadable file, an output another process is writing, a full disk or quota,
        a read-only file system, no permission, a symlink loop, a name too long — the
        line names the path; a netCDF "HDF error" when the output's folder has no space
        left is reported as such), 130 when interrupted; an internal error raises
        (exit status 1, with its traceback).
    """
    import logging

    from .solver.ensemble import EnsembleError
    from .solver.run import DivergenceError

    logging.getLogger("distributed").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        args.handler(args)
    except (UserError, DivergenceError, EnsembleError, ValueError, TypeError, FileExistsError,
            FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            OutputLockedError) as err:
        print(f"xtl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xtl {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as err:
        line = _edge_error_line(err, args)
        if line is None:
            raise
        print(f"xtl {args.command}: error: {line}", file=sys.stderr)
        return 2
    return 0


#: errno of the OSErrors that are about the user's files and disks, with what they mean.
_EDGE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.ENAMETOOLONG: "file name too long",
    errno.EROFS: "read-only file system",
}
#: The free space (bytes) under which a netCDF "HDF error" is reported as a full disk.
_LOW_SPACE = 16 * 2 ** 20


def _edge_error_line(err, args) -> str | None:
    """One line for an OSError at the edge (a full disk, a bad path, no permission) or a
    netCDF "HDF error" on a full disk; None for anything else (a bug: keep the traceback).
    """
    if isinstance(err, OSError) and err.errno in _EDGE_ERRNOS:
        path = err.filename if err.filename is not None else _output_folder(args)
        line = f"{_EDGE_ERRNOS[err.errno]}: {path}" if path else _EDGE_ERRNOS[err.errno]
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            line += ("; free space and run the command again (partial output is removed, "
                     "or kept where the command resumes it)")
        return line
    if isinstance(err, RuntimeError) and "HDF error" in str(err):
        folder = _output_folder(args)
        if folder is not None and shutil.disk_usage(folder).free < _LOW_SPACE:
            return (f"no space left on {folder} (netCDF: {err}); free space and run the "
                    f"command again")
    return None


def _output_folder(args):
    """The existing folder of the command's ``--out`` path, or None."""
    value = getattr(args, "out", None)
    if not isinstance(value, (str, os.PathLike)):
        return None
    folder = os.path.abspath(os.fspath(value))
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return folder or None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
