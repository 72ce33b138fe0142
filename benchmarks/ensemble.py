"""Benchmark: parallel efficiency of ``xtl.ensemble`` on a 2-worker LocalCluster.

    python benchmarks/ensemble.py [--case small-base] [--t-end 4.0] [--repeats 3]

On one real ``LocalCluster(n_workers=2, threads_per_worker=1)`` it times, in alternation,
``ensemble`` of 1 member and of 2 members (different seeds, fresh directories so nothing
is resumed), and ``simulate`` of 1 member in this process without dask. Parallel
efficiency = T(1 member) / T(2 members on 2 workers) (1.0 is perfect; goal >= 0.85).

As a control without dask, it also times the same ``simulate`` in one plain child
process alone and in two plain child processes at once (each child times its own run):
that ratio is what the machine allows at that moment, whatever the scheduler.
Times are medians of ``--repeats`` runs measured in this one run (the ratio of the
fastest runs is printed too); the machine's cores may be shared with other jobs, which
lowers the 2-member efficiency: a second job on a 2-core machine halves it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

_CHILD = """
import sys, time, xtl
case = xtl.get_case(sys.argv[1])
t0 = time.perf_counter()
xtl.simulate(case, t_end=float(sys.argv[2]), save_interval=float(sys.argv[3]),
             seed=int(sys.argv[4]), progress=False)
print(time.perf_counter() - t0)
"""


def _plain(case, t_end, save_interval, seeds):
    """Run simulate in len(seeds) plain child processes at once; their own run times."""
    procs = [
        subprocess.Popen([sys.executable, "-c", _CHILD, case, str(t_end), str(save_interval),
                          str(s)], stdout=subprocess.PIPE, text=True)
        for s in seeds
    ]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="small-base")
    parser.add_argument("--t-end", type=float, default=3.0)
    parser.add_argument("--save-interval", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    import xtl
    from xtl.solver.ensemble import ensemble

    case = xtl.get_case(args.case)
    run = dict(t_end=args.t_end, save_interval=args.save_interval, progress=False)
    steps = round(args.t_end / case.dt)
    root = tempfile.mkdtemp(prefix="xtl-bench-ensemble-")
    one, two, serial, plain1, plain2 = [], [], [], [], []
    try:
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, \
                Client(cluster, set_as_default=False) as client:
            client.submit(sum, [1, 2]).result()  # workers up
            for r in range(args.repeats):
                seeds = (100 * r, 100 * r + 1)
                t0 = time.perf_counter()
                ensemble(case, seeds=[seeds[0]], directory=f"{root}/one{r}", client=client, **run)
                one.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ensemble(case, seeds=list(seeds), directory=f"{root}/two{r}", client=client, **run)
                two.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                xtl.simulate(case, seed=seeds[0], path=f"{root}/serial{r}.nc", **run).close()
                serial.append(time.perf_counter() - t0)
                plain1.append(max(_plain(args.case, args.t_end, args.save_interval, seeds[:1])))
                plain2.append(max(_plain(args.case, args.t_end, args.save_interval, seeds)))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    t1, t2, ts = (statistics.median(v) for v in (one, two, serial))
    print(f"ensemble of case {case.name!r} ({case.n}², {steps} steps/member, "
          f"{int(args.t_end / args.save_interval) + 1} snapshots/member) on "
          "LocalCluster(n_workers=2, threads_per_worker=1)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "(shared with other jobs: timings are noisy)")
    print(f"  1 member,  serial simulate():   {ts:7.2f} s   runs {[round(t, 2) for t in serial]}")
    print(f"  1 member,  ensemble:            {t1:7.2f} s   runs {[round(t, 2) for t in one]}")
    print(f"  2 members, ensemble (2 workers):{t2:7.2f} s   runs {[round(t, 2) for t in two]}")
    print(f"  parallel efficiency T1/T2:      {t1 / t2:7.2f}   (goal >= 0.85; medians of "
          f"{args.repeats})")
    print(f"  same from the fastest runs:     {min(one) / min(two):7.2f}   (less sensitive to "
          "other jobs on the cores)")
    print(f"  ensemble overhead T1/serial:    {t1 / ts:7.2f}")
    p1, p2 = statistics.median(plain1), statistics.median(plain2)
    print(f"  control, no dask: 1 process {p1:.2f} s {[round(t, 2) for t in plain1]}, "
          f"2 processes at once {p2:.2f} s {[round(t, 2) for t in plain2]}")
    print(f"  control efficiency (machine):   {p1 / p2:7.2f}   (what the cores allowed during "
          "this run)")
    return 0


if __name__ == "__main__":
    warnings.simplefilter("ignore", UserWarning)
    raise SystemExit(main())
