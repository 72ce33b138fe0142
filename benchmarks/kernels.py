"""Benchmark: the filter census of a random paper-size model (11 layers × 64 × 64 5×5
kernels) at n = 128, against the raw FFTs it needs; peak memory of each.

Each measurement runs in a fresh subprocess, so its peak RSS (``resource.getrusage``,
``ru_maxrss``) is its own. Times are medians of ``--repeats`` runs inside that process.
Materialized, the |Ŵ| of this model would be 11·64·64·128²·4 B = 2.95 GB (float32).

    python benchmarks/kernels.py [--repeats 3] [--quick]

Prints ratios measured in one run: census time / raw rfft2 time (the transforms the
census computes), census time / raw complex fft2 time (the naive full transform), and
the peak RSS of each process.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SHAPE = (11, 64, 64, 5, 5)
N = 128


def _model(shape, seed):
    import numpy as np
    import xarray as xr

    from xtl.explain.kernels import KERNEL_DIMS

    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {"kernel": (KERNEL_DIMS, rng.standard_normal(shape).astype(np.float32))},
        coords={"layer": np.arange(1, shape[0] + 1)},
    )


def _raw(kernels, n, transform, batch=128):
    """Transform all kernels in batches, keeping nothing (a lower bound on the work).

    Batches of 128 kernels, the census's default chunk (2 × 64 at n = 128)."""
    flat = kernels.reshape(-1, *kernels.shape[-2:])
    checksum = 0.0
    for i in range(0, flat.shape[0], batch):
        checksum += float(abs(transform(flat[i : i + batch], s=(n, n))[..., 0, 0]).sum())
    return checksum


def child(task, shape, n, repeats):
    """Run one task ``repeats`` times in this process; print JSON times and peak RSS."""
    import resource

    import dask
    import numpy as np

    from xtl.explain import kernels as kernel_spectra

    base = _model(shape, 0)
    kernels = base.kernel.values
    if task == "census":
        run = lambda: kernel_spectra.filter_census(base, pad_to=n)  # noqa: E731
    elif task == "census-1thread":
        def run():
            with dask.config.set(scheduler="synchronous"):
                return kernel_spectra.filter_census(base, pad_to=n)
    elif task == "rfft2":
        run = lambda: _raw(kernels, n, np.fft.rfft2)  # noqa: E731
    elif task == "fft2":
        run = lambda: _raw(kernels, n, np.fft.fft2)  # noqa: E731
    elif task == "kernel_change":
        tl = _model(shape, 1)
        run = lambda: kernel_spectra.kernel_change(base, tl, pad_to=n)  # noqa: E731
    elif task == "baseline":
        run = lambda: None  # noqa: E731
    else:
        raise ValueError(task)
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    extra = {}
    if task.startswith("census"):
        extra["census_total"] = int(result.sum())
        extra["census_by_type"] = {
            str(t): int(result.sel(filter_type=t).sum()) for t in result["filter_type"].values
        }
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"task": task, "times": times, "rss": rss, **extra}))


def measure(task, shape, n, repeats):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", task, "--repeats", str(repeats),
           "--shape", ",".join(map(str, shape)), "--n", str(n)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a 3×16×16 model at n=64")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=N, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, tuple(int(s) for s in args.shape.split(",")), args.n, args.repeats)
        return
    shape, n = ((3, 16, 16, 5, 5), 64) if args.quick else (SHAPE, N)
    import numpy as np

    nker = int(np.prod(shape[:3]))
    print(f"model: {shape[0]} layers x {shape[1]} x {shape[2]} kernels "
          f"{shape[3]}x{shape[4]} = {nker} kernels, float32, padded to n={n}")
    print(f"|W^| materialized would be {nker * n * n * 4 / 1e9:.2f} GB; cpus: {os.cpu_count()}")
    res = {}
    for task, reps in [("baseline", 1), ("rfft2", args.repeats), ("fft2", args.repeats),
                       ("census", args.repeats), ("census-1thread", args.repeats),
                       ("kernel_change", 1)]:
        r = measure(task, shape, n, reps)
        res[task] = r
        med = float(np.median(r["times"]))
        print(f"  {task:15s} median {med:8.3f} s over {len(r['times'])} run(s)"
              f"   peak RSS {r['rss'] / 2**20:7.1f} MiB")
    t = {k: float(np.median(v["times"])) for k, v in res.items()}
    print(f"census counts {res['census']['census_by_type']} "
          f"(total {res['census']['census_total']} of {nker})")
    print("ratios (same run):")
    print(f"  census (dask threads) / raw rfft2 (1 thread)   = {t['census'] / t['rfft2']:.2f}")
    print(f"  census (1 thread)     / raw rfft2 (1 thread)   = {t['census-1thread'] / t['rfft2']:.2f}")
    print(f"  census (1 thread)     / raw fft2  (1 thread)   = {t['census-1thread'] / t['fft2']:.2f}")
    print(f"  kernel_change (2 models) / census (threads)    = {t['kernel_change'] / t['census']:.2f}")
    print(f"  peak RSS census / baseline process             = "
          f"{res['census']['rss'] / res['baseline']['rss']:.2f} "
          f"({res['census']['rss'] / 2**30:.2f} GiB; bound 1.5 GB)")
    ok = res["census"]["rss"] < 1.5e9 and res["kernel_change"]["rss"] < 1.5e9
    print("peak memory under 1.5 GB:", "yes" if ok else "NO")


if __name__ == "__main__":
    main()
