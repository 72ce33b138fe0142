"""Benchmark: parallel efficiency of a seed-resolved layer sweep on a dask LocalCluster.

    python benchmarks/sweep.py [--rounds 3] [--n 32] [--layers 6] [--channels 24]

The same sweep (every layer x 2 seeds, 20 epochs of 82 samples, no early stopping, on
synthetic LES fields) runs three ways, each in a fresh process, in interleaved
rounds; the medians are compared in one run:

* ``serial, 1 thread``: one process, TensorFlow pinned to one thread;
* ``serial, 2 threads``: one process with two TensorFlow threads: what a user
  gets without dask;
* ``dask 2 x 1``: ``layer_sweep(client=...)`` on a LocalCluster of 2 worker
  processes with 1 thread each (the workers are warmed up first: TensorFlow
  imported and its threads pinned, outside the timing).

Prints the parallel efficiency ``T(serial, 1 thread) / (2 T(dask 2 x 1))`` (goal
>= 0.85) and the speed-up of dask over the 2-thread serial run (the
alternative a user has).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("serial, 1 thread", "serial, 2 threads", "dask 2 x 1")


def _sweep_kwargs(args) -> dict:
    return dict(seeds=[0, 1], n_samples=82, epochs=args.epochs, batch_size=8, validation=None,
                progress=False)


def _child(args) -> float:
    """Run one sweep in this process the way ``args.mode`` says; return its seconds."""
    from training import synthetic_les

    import xtl

    mode = MODES[args.mode]
    if mode != "dask 2 x 1":
        import tensorflow as tf

        threads = 1 if mode == "serial, 1 thread" else 2
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    data = synthetic_les(128, args.n)
    spec = dict(n_layers=args.layers, channels=args.channels, kernel_size=5, padding="zeros")
    base = xtl.train(data, spec, epochs=1, batch_size=16, validation=None, progress=False)
    client = cluster = None
    if mode == "dask 2 x 1":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
        xtl.layer_sweep(base, data, data, layers=[1, 2], client=client,  # warm the workers
                        **dict(_sweep_kwargs(args), epochs=1, seeds=[5]))
    start = time.perf_counter()
    xtl.layer_sweep(base, data, data, client=client, **_sweep_kwargs(args))
    seconds = time.perf_counter() - start
    if client is not None:
        client.close()
        cluster.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="LES grid")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--channels", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mode", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        print(json.dumps(_child(args)))
        return
    import xtl

    print(f"xtl {xtl.__version__}; {os.cpu_count()} CPUs; sweep of {args.layers} layers x 2 "
          f"seeds, {args.layers}x{args.channels} network at {args.n}², {args.epochs} epochs "
          f"of 82 samples; medians of {args.rounds} interleaved rounds")
    times = {m: [] for m in MODES}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for _ in range(args.rounds):
        for i, mode in enumerate(MODES):
            cmd = [sys.executable, __file__, "--mode", str(i), "--n", str(args.n),
                   "--layers", str(args.layers), "--channels", str(args.channels),
                   "--epochs", str(args.epochs)]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            times[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {m: statistics.median(t) for m, t in times.items()}
    for m in MODES:
        print(f"  {m:<18} {med[m]:7.1f} s   (rounds: {', '.join(f'{t:.1f}' for t in times[m])})")
    efficiency = med["serial, 1 thread"] / (2 * med["dask 2 x 1"])
    print(f"parallel efficiency T(serial, 1 thread) / (2 T(dask 2 x 1)) = {efficiency:.2f} "
          "(goal >= 0.85)")
    print(f"speed-up of dask 2 x 1 over one process with 2 threads = "
          f"{med['serial, 2 threads'] / med['dask 2 x 1']:.2f}")


if __name__ == "__main__":
    main()
