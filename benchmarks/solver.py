"""Solver benchmark: step time over the time of the FFTs a step must do; flat memory.

For n = 256, 512, 1024 it prints the median ms per AB2–CN step and its ratio to
the median time of the FFTs one step needs (4 inverse + 1 forward real 2D FFTs
with the same backend and plans), both measured in this run. Then it runs a
512² simulation that streams 200 and 2000 snapshots to disk, each in a fresh
process, and prints their peak RSS: it must not grow with the snapshot count.

Usage: python benchmarks/solver.py [--quick]
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from _timing import median_ms

import xtl
from xtl.solver import SpectralGrid, available_fft_backends, initial_state, make_stepper

REPEATS = 7


def step_over_fft(n, fft):
    case = xtl.get_case("small-base", n=n, n_les=n // 4, dt=1e-4)
    grid = SpectralGrid(n, fft=fft)
    stepper = make_stepper(case, grid)
    state = initial_state(case, grid, seed=0)
    for _ in range(3):
        stepper.step(state)
    calls = max(3, int(2e6 / n**2))
    inverse4, forward1 = grid.plan((4,)), grid.plan(())

    def ffts():
        inverse4.inverse()
        forward1.forward()

    step_ms = median_ms(lambda: stepper.step(state), calls, REPEATS)
    fft_ms = median_ms(ffts, calls, REPEATS)
    return step_ms, fft_ms


_RSS_SCRIPT = """
import resource, sys, xtl
n_snap, path = int(sys.argv[1]), sys.argv[2]
case = xtl.get_case("small-base", n=512, n_les=128, dt=2e-4)
xtl.simulate(case, t_end=(n_snap - 1) * case.dt, save_interval=case.dt, path=path,
             dtype="float32", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mib(n_snapshots, folder):
    path = os.path.join(folder, f"rss-{n_snapshots}.nc")
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(n_snapshots), path],
                         check=True, capture_output=True, text=True).stdout
    size = os.path.getsize(path) / 2**30
    os.remove(path)
    return float(out.strip().splitlines()[-1]), size


def main(quick=False):
    print(f"xtl {xtl.__version__}; FFT backends: {available_fft_backends()}; "
          f"threads=1; medians of {REPEATS} repeats (noisy shared machine: compare ratios)")
    print(f"{'n':>6} {'fft':>7} {'ms/step':>9} {'ms FFTs':>9} {'ratio':>7}")
    sizes = (256, 512) if quick else (256, 512, 1024)
    for fft in available_fft_backends():
        for n in sizes:
            step_ms, fft_ms = step_over_fft(n, fft)
            print(f"{n:>6} {fft:>7} {step_ms:9.2f} {fft_ms:9.2f} {step_ms / fft_ms:7.2f}")
    counts = (20, 200) if quick else (200, 2000)
    with tempfile.TemporaryDirectory(dir=os.environ.get("XTL_BENCH_DIR")) as folder:
        rss = []
        for count in counts:
            mib, gib = peak_rss_mib(count, folder)
            rss.append(mib)
            print(f"512² run streaming {count:5d} snapshots ({gib:.2f} GiB on disk): "
                  f"peak RSS {mib:.0f} MiB")
    print(f"peak RSS ratio {counts[1]} / {counts[0]} snapshots: {rss[1] / rss[0]:.3f}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
