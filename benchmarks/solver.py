"""Solver benchmark: xtl against pyqg's BTModel, xtl's step against the FFT floor; flat memory.

For n = 256, 512, 1024 and 1 and 2 threads it times, in one run and in interleaved
rounds (every configuration once per round, the median over the rounds reported):

* xtl's AB2–CN step (the small-base flow at n², default kernels and planner);
* pyqg 0.7.2's BTModel step (``_step_forward``; FFTW, float64) at its best setting:
  1 thread with ``OMP_NUM_THREADS=1``; 2 threads with ``OMP_WAIT_POLICY=PASSIVE``
  (OpenMP's default busy-waiting threads were 20–70× slower on this shared machine, and
  a worker left spinning takes a core from every other measurement: ``--pyqg-active``
  times that setting too, after the interleaved rounds);
* single-field real FFTs (forward and inverse) with FFTW_ESTIMATE and FFTW_MEASURE plans
  (and FFTW_PATIENT with ``--patient``: planning it takes minutes per size the first
  time), and, at 1 thread, per field in batched plans of 2 and 4 fields (the layout xtl
  chose); the *floor* is 4 single-field FFTs at the fastest plan: 2 × fastest forward +
  2 × fastest inverse.

It prints ``pyqg ÷ xtl`` (the goal: ≥ 2 at 512² and 1024²) and ``step ÷ floor`` (the goal:
≤ 1.3). xtl workers run with ``OMP_NUM_THREADS`` set to the thread count, as a dask
worker would. pyqg runs in its own virtualenv in xtl's cache folder (built by
benchmarks/_pyqg.py when missing); if it cannot be built, the benchmark says so and times
xtl alone.

Then it runs a 512² simulation that streams 200 and 2000 snapshots to disk, each in a
fresh process, and prints their peak RSS: it must not grow with the snapshot count.

Usage: python benchmarks/solver.py [--quick] [--rounds R] [--patient] [--no-pyqg] [--no-rss]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import _pyqg

HERE = Path(__file__).resolve().parent
PLANNERS = ["FFTW_ESTIMATE", "FFTW_MEASURE"]


class Worker:
    """A timing process (benchmarks/_solver_worker.py) with its own environment."""

    def __init__(self, python, mode, env):
        full = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
        full.update(env)
        self.proc = subprocess.Popen([str(python), str(HERE / "_solver_worker.py"), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=full, cwd=HERE)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker died on {cmd}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _calls(n):
    return max(5, int(3e7 / n**2))


def timing_table(sizes, rounds, use_pyqg):
    """{(label, n, threads): [ms per round]} with every entry timed once per round."""
    workers = {
        ("xtl", 1): Worker(sys.executable, "xtl", {"OMP_NUM_THREADS": "1"}),
        ("xtl", 2): Worker(sys.executable, "xtl", {"OMP_NUM_THREADS": "2"}),
    }
    if use_pyqg:
        workers[("pyqg", 1)] = Worker(_pyqg.PYTHON, "pyqg", {"OMP_NUM_THREADS": "1"})
        workers[("pyqg-passive", 2)] = Worker(_pyqg.PYTHON, "pyqg", {"OMP_WAIT_POLICY": "PASSIVE"})
    entries = []  # (worker, key, n, threads, calls)
    for n in sizes:
        for threads in (1, 2):
            for (label, t), worker in workers.items():
                if t != threads:
                    continue
                whats = ["step"]
                if label == "xtl":
                    whats += [f"{d}:{p}:1" for p in PLANNERS for d in ("fwd", "inv")]
                    if threads == 1:
                        whats += [f"{d}:FFTW_MEASURE:{b}" for b in (2, 4) for d in ("fwd", "inv")]
                for what in whats:
                    key = f"{label}|{what}|{n}|{threads}"
                    worker.ask(op="setup", key=key, what=what, n=n, threads=threads)
                    entries.append((worker, key, n, threads, _calls(n)))
    times = {key: [] for _, key, _, _, _ in entries}
    for r in range(rounds):
        order = entries if r % 2 == 0 else entries[::-1]
        for worker, key, _, _, calls in order:
            times[key].append(worker.ask(op="time", key=key, calls=calls)["ms"])
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    for worker in workers.values():
        worker.close()
    return {key: float(np.median(v)) for key, v in times.items()}


def report(med, sizes, use_pyqg):
    print(f"\n{'n':>5} {'thr':>3} {'xtl ms':>8} {'pyqg ms':>8} {'pyqg setting':>13} "
          f"{'pyqg÷xtl':>9} {'floor ms':>9} {'floor plan':>13} {'step÷floor':>10}")
    for n in sizes:
        for threads in (1, 2):
            step = med[f"xtl|step|{n}|{threads}"]
            fwd = {p: med[f"xtl|fwd:{p}:1|{n}|{threads}"] for p in PLANNERS}
            inv = {p: med[f"xtl|inv:{p}:1|{n}|{threads}"] for p in PLANNERS}
            pf, pi = min(fwd, key=fwd.get), min(inv, key=inv.get)
            floor = 2 * fwd[pf] + 2 * inv[pi]
            plan = f"{pf[5:].lower()[:4]}/{pi[5:].lower()[:4]}"
            if use_pyqg:
                label = "pyqg" if threads == 1 else "pyqg-passive"
                pyqg = med[f"{label}|step|{n}|{threads}"]
                setting = "OMP=1" if threads == 1 else "passive"
                cols = f"{pyqg:8.2f} {setting:>13} {pyqg / step:9.2f}"
            else:
                cols = f"{'—':>8} {'—':>13} {'—':>9}"
            print(f"{n:>5} {threads:>3} {step:8.2f} {cols} {floor:9.2f} {plan:>13} "
                  f"{step / floor:10.2f}")
    print("\nFFT plan layouts at 1 thread, ms per field (FFTW_MEASURE): single vs batched")
    print(f"{'n':>5} {'fwd 1':>7} {'fwd 2':>7} {'fwd 4':>7} {'inv 1':>7} {'inv 2':>7} {'inv 4':>7}")
    for n in sizes:
        row = [med[f"xtl|{d}:FFTW_MEASURE:{b}|{n}|1"] for d in ("fwd", "inv") for b in (1, 2, 4)]
        print(f"{n:>5} " + " ".join(f"{v:7.3f}" for v in row))


def pyqg_active(sizes, rounds):
    """pyqg at 2 threads with OpenMP's default (spinning) threads, timed alone."""
    worker = Worker(_pyqg.PYTHON, "pyqg", {})
    print("\npyqg at 2 threads with OpenMP's default wait policy (timed alone), ms/step")
    for n in sizes:
        key = f"active|{n}"
        worker.ask(op="setup", key=key, what="step", n=n, threads=2)
        ms = [worker.ask(op="time", key=key, calls=_calls(n))["ms"] for _ in range(rounds)]
        print(f"{n:>5} {np.median(ms):8.2f}")
    worker.close()


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


def rss_check(quick):
    counts = (20, 200) if quick else (200, 2000)
    with tempfile.TemporaryDirectory(dir=os.environ.get("XTL_BENCH_DIR")) as folder:
        rss = []
        for count in counts:
            mib, gib = peak_rss_mib(count, folder)
            rss.append(mib)
            print(f"512² run streaming {count:5d} snapshots ({gib:.2f} GiB on disk): "
                  f"peak RSS {mib:.0f} MiB")
    print(f"peak RSS ratio {counts[1]} / {counts[0]} snapshots: {rss[1] / rss[0]:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256² and 512² only, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 7)")
    parser.add_argument("--patient", action="store_true", help="FFTW_PATIENT plans in the floor too")
    parser.add_argument("--no-pyqg", action="store_true", help="time xtl alone")
    parser.add_argument("--no-rss", action="store_true", help="skip the streaming-memory check")
    parser.add_argument("--pyqg-active", action="store_true",
                        help="also time pyqg's 2 threads with OpenMP's default wait policy")
    args = parser.parse_args(argv)
    import xtl
    from xtl.physics.fourier import available_kernels, cache_dir

    if args.patient:
        PLANNERS.append("FFTW_PATIENT")
    sizes = (256, 512) if args.quick else (256, 512, 1024)
    rounds = args.rounds or (3 if args.quick else 7)
    use_pyqg = not args.no_pyqg and _pyqg.build(log=lambda m: print(m, flush=True))
    if not args.no_pyqg and not use_pyqg:
        print("pyqg is not available: timing xtl alone")
    load = os.getloadavg()
    print(f"xtl {xtl.__version__}; kernels {available_kernels()[0]}; planner "
          f"{os.environ.get('XTL_FFTW_PLANNER', 'FFTW_MEASURE')} (wisdom in {cache_dir()}); "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"medians of {rounds} interleaved rounds (ms per step; FFTs ms per field)")
    med = timing_table(sizes, rounds, use_pyqg)
    report(med, sizes, use_pyqg)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if use_pyqg and args.pyqg_active:
        pyqg_active(sizes, rounds)
    if not args.no_rss:
        rss_check(args.quick)


if __name__ == "__main__":
    main()
