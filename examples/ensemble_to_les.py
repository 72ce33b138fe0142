"""From an ensemble of DNS to an LES training set, in one call, on a dask cluster.

    python examples/ensemble_to_les.py                      # tiny demo, seconds
    python examples/ensemble_to_les.py --cases small-base small-re --seeds 0 1 2 3 \\
        --t-end 60 --spin-up 20 --save-interval 0.5 --n-les 64 --out small-les.nc
    DASK_SCHEDULER_ADDRESS=tcp://head:8786 python examples/ensemble_to_les.py ...

Every (case, seed) pair is one member, run as one task (a LocalCluster with one
single-threaded worker per core unless ``--scheduler``/``DASK_SCHEDULER_ADDRESS`` names
a running cluster). Members coarse-grain on the fly (``les=``): only ψ̄, ω̄ and Π on the
LES grid are written, plus every ``--dns-every``-th DNS snapshot. Run it again and
completed members are skipped. The result is one lazy Dataset with a ``member`` dim;
the complete members are saved as one training file.

The second half shows the other route: a stored DNS, coarse-grained lazily with
``ds.tl.coarse_grain`` (what you would do with DNS files you already have).
"""
from __future__ import annotations

import argparse

import xtl
from xtl.data.coarse import filter_transfer_function
from xtl.data.netcdf import write_dataset
from xtl.solver import ensemble


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["tiny"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--t-end", type=float, default=1.0)
    parser.add_argument("--spin-up", type=float, default=0.5)
    parser.add_argument("--save-interval", type=float, default=0.1)
    parser.add_argument("--n-les", type=int, default=None, help="default: the case's n_les")
    parser.add_argument("--filter", default="gaussian", choices=["gaussian", "box", "sharp"])
    parser.add_argument("--dns-every", type=int, default=5)
    parser.add_argument("--directory", default="xtl-ensemble")
    parser.add_argument("--scheduler", default=None, help="address of a running scheduler")
    parser.add_argument("--out", default="xtl-ensemble/les-training.nc")
    args = parser.parse_args(argv)

    les = {"filter": args.filter}
    if args.n_les is not None:
        les["n_les"] = args.n_les
    ds = ensemble(
        args.cases, seeds=args.seeds, t_end=args.t_end, spin_up=args.spin_up,
        save_interval=args.save_interval, directory=args.directory, les=les,
        dns_every=args.dns_every, scheduler=args.scheduler, dtype="float32",
    )
    print(ds)
    ok = ds.sel(member=ds.status == "complete")
    print(f"\n{ok.sizes['member']} of {ds.sizes['member']} members complete; "
          f"Π rms per member: {ok.pi.std(('time', 'y', 'x')).values.round(3)}")
    write_dataset(ok.load(), args.out, overwrite=True)
    print(f"training set written to {args.out}")

    # The other route: coarse-grain a stored DNS lazily (chunks over time).
    case = xtl.get_case(args.cases[0])
    dns = xtl.simulate(case, t_end=args.spin_up + 5 * args.save_interval,
                       save_interval=args.save_interval, spin_up=args.spin_up, progress=False)
    lazy = dns.chunk(time=2).tl.coarse_grain(args.n_les, args.filter)
    print(f"\nlazy coarse-graining of a {case.n}² DNS: {lazy.pi.data!r}")
    print("Π of the first snapshot, rms:", float(lazy.pi.isel(time=0).std()))
    G = filter_transfer_function(lazy.attrs["n_les"], args.filter, n=case.n)
    print(f"the {args.filter} filter at the LES Nyquist k = {lazy.attrs['n_les'] // 2}:",
          round(float(G.sel(kx=lazy.attrs["n_les"] // 2, ky=0)), 4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
