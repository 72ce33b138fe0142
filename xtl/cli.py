"""The ``xtl`` command.

``xtl demo`` runs the embedded small default and writes its data and figures;
``xtl simulate CASE`` runs one DNS to netCDF; ``xtl cases`` lists the presets.
User errors print one line on stderr and exit with status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The embedded default of ``xtl demo``.
DEMO = {"case": "small-base", "spin_up": 20.0, "t_end": 30.0, "save_interval": 1.0, "seed": 0}


class UserError(Exception):
    """An error in what the user asked for; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xtl", description="Explainable transfer learning of SGS closures for 2D turbulence."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the embedded small default and write data + figures")
    demo.add_argument("--out", default="xtl-demo", help="output folder (default: xtl-demo)")
    demo.add_argument("--overwrite", action="store_true", help="replace earlier demo output")
    demo.add_argument("--t-end", type=float, default=DEMO["t_end"], help="end time")
    demo.add_argument("--spin-up", type=float, default=DEMO["spin_up"], help="spin-up time")
    demo.add_argument("--case", default=DEMO["case"], help="preset to run (default: small-base)")

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

    sub.add_parser("cases", help="list the preset cases")
    return parser


def _case(name, **changes):
    from .cases import get_case

    changes = {k: v for k, v in changes.items() if v is not None}
    try:
        return get_case(name, **changes)
    except KeyError as err:
        raise UserError(err.args[0]) from None


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


def cmd_demo(args) -> None:
    """Run the small demo case; write its netCDF, a vorticity figure and a spectrum figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plotting import plot_spectra, plot_vorticity
    from .solver import simulate
    from .spectral import spectrum

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    case = _case(args.case)
    start = time.perf_counter()
    path = out / f"dns-{case.name}.nc"
    print(f"xtl demo: {case.n}² DNS of {case.name!r} (Re={case.Re:g}, kf={case.kf:g}) "
          f"to t={args.t_end:g} -> {path}", flush=True)
    if path.exists() and not args.overwrite:
        import xarray as xr

        ds = xr.open_dataset(path)
        print(f"reusing {path} (pass --overwrite to run it again)")
    else:
        ds = simulate(case, t_end=args.t_end, save_interval=DEMO["save_interval"],
                      spin_up=args.spin_up, path=path, overwrite=args.overwrite, seed=DEMO["seed"])
    last = ds.omega.isel(time=-1)
    ax = plot_vorticity(last, title=f"{case.name}: ω at t = {float(last.time):g}")
    ax.figure.savefig(out / "vorticity.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    enstrophy = spectrum(ds, kind="enstrophy").mean("time")
    ax = plot_spectra({"enstrophy Z(k)": enstrophy}, title=f"{case.name}: time-mean enstrophy spectrum")
    ax.axvline(case.n // 3, color="k", ls=":", lw=1)
    ax.figure.savefig(out / "enstrophy-spectrum.png", dpi=110, bbox_inches="tight")
    plt.close(ax.figure)
    ratio = float(enstrophy.sel(k=(case.n - 1) // 3) / enstrophy.max())
    print(f"wrote {path}, {out / 'vorticity.png'}, {out / 'enstrophy-spectrum.png'} "
          f"in {time.perf_counter() - start:.0f} s; Z(k_cutoff)/max Z = {ratio:.1e}")


COMMANDS = {"demo": cmd_demo, "simulate": cmd_simulate, "cases": cmd_cases}


def main(argv=None) -> int:
    """Entry point of the ``xtl`` command; returns the exit status."""
    from .solver.run import DivergenceError

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
