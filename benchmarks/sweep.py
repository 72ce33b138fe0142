"""Benchmark: parallel efficiency of a seed-resolved layer sweep on a dask LocalCluster.

    python benchmarks/sweep.py [--rounds 3] [--n 32] [--layers 6] [--channels 24]

The same sweep (every layer x 2 seeds, 20 epochs of 82 samples, no early stopping, on
synthetic LES fields) runs three ways, each in a fresh process, in interleaved
rounds; the medians are compared in one run:

* ``serial, 1 thread``: one process, TensorFlow pinned to one thread;
* ``serial, 2 threads``: one process with two TensorFlow threads: what a user
  gets without dask;
* ``dask 2 x 1``: ``layer_sweep(client=...)`` on the LocalCluster an experiment
  starts (``xtl.solver.ensemble.local_cluster``: 2 worker processes with 1 thread
  each; the workers are warmed up first: TensorFlow imported and its threads
  pinned, outside the timing);
* ``dask 2 x 1, dask's environ``: the same on a plain ``LocalCluster``, whose
  nannies set dask's default worker environment (``MALLOC_TRIM_THRESHOLD_``
  included, which ``local_cluster`` leaves unset).

Prints the parallel efficiency ``T(serial, 1 thread) / (2 T(dask 2 x 1))`` (goal
>= 0.85), the speed-up of dask over the 2-thread serial run (the alternative a
user has) and that of xtl's cluster over the plain one.

    python benchmarks/sweep.py --cache [--pairs] [--rounds 3] [--epochs 8] [--samples 100]

measures the frozen-prefix cache instead, in one process on one TensorFlow
thread, for the study's network (6 x 24) and the depth study's (11 x 24) at 32²:
the trainings of a single-layer sweep (and with ``--pairs`` of every pair), one
seed, the same data, epochs, batch size and learning rate, no early stopping,
three ways in interleaved rounds: ``xtl.transfer`` with the cache, without it
(``cache_prefix=False``), and the seeds' approach (plain Keras: clone the
network, freeze all but the re-trained layers, compile, ``fit``). It prints the
medians, the cache's gain beside its layer-pass bound (a backward pass counted as
one forward: re-training from layer l costs 2L − l + 1 layer-passes uncached and
2(L − l + 1) cached), beside a cost model with this machine's costs (a layer's cost
its multiply-adds, its input and weight gradients the measured multiples of its
forward pass: on CPU they cost more than a forward; the model leaves out the work
outside the convolutions, which the cache also skips, so it is not a bound), and the
cache's memory for the depth study's re-training set.
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

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

MODES = ("serial, 1 thread", "serial, 2 threads", "dask 2 x 1", "dask 2 x 1, dask's environ")


def _sweep_kwargs(args) -> dict:
    return dict(seeds=[0, 1], n_samples=82, epochs=args.epochs, batch_size=8, validation=None,
                progress=False)


def _child(args) -> float:
    """Run one sweep in this process the way ``args.mode`` says; return its seconds."""
    from training import synthetic_les

    import xtl

    mode = MODES[args.mode]
    if not mode.startswith("dask"):
        import tensorflow as tf

        threads = 1 if mode == "serial, 1 thread" else 2
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    data = synthetic_les(128, args.n)
    spec = dict(n_layers=args.layers, channels=args.channels, kernel_size=5, padding="zeros")
    base = xtl.train(data, spec, epochs=1, batch_size=16, validation=None, progress=False)
    client = cluster = None
    if mode == "dask 2 x 1":
        from xtl.solver.ensemble import local_cluster

        cluster, client = local_cluster(2)
    elif mode.startswith("dask"):
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    if client is not None:
        xtl.layer_sweep(base, data, data, layers=[1, 2], client=client,  # warm the workers
                        **dict(_sweep_kwargs(args), epochs=1, seeds=[5]))
    start = time.perf_counter()
    xtl.layer_sweep(base, data, data, client=client, **_sweep_kwargs(args))
    seconds = time.perf_counter() - start
    if client is not None:
        client.close()
        cluster.close()
    return seconds


# ------------------------------------------------------- the frozen-prefix cache
NETWORKS = {"study 6x24": dict(n_layers=6, channels=24),
            "depth 11x24": dict(n_layers=11, channels=24)}
CACHE_MODES = ("xtl cached", "xtl uncached", "seeds' approach")


def _seeds_fit(keras, base, x, y, layers, args) -> None:
    """The seeds' way: clone the network, freeze all but ``layers``, compile, fit."""
    model = keras.models.clone_model(base.native)
    model.set_weights(base.native.get_weights())
    convs = [lay for lay in model.layers if isinstance(lay, keras.layers.Conv2D)]
    for k, layer in enumerate(convs, 1):
        layer.trainable = k in layers
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="mse")
    keras.utils.set_random_seed(0)  # xtl's fits turned TensorFlow's op determinism on
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch, shuffle=True, verbose=0)


def _sweep_seconds(mode, base, data, xy, combos, args) -> float:
    """Seconds of one sweep's trainings (one per layer or pair) the way ``mode`` says."""
    import keras

    import xtl

    start = time.perf_counter()
    for layers in combos:
        if mode == "seeds' approach":
            _seeds_fit(keras, base, *xy, layers, args)
        else:
            xtl.transfer(base, data, list(layers), epochs=args.epochs, batch_size=args.batch,
                         learning_rate=args.lr, validation=None, progress=False,
                         cache_prefix=mode == "xtl cached")
    return time.perf_counter() - start


def _layer_passes(n_layers: int, combos, cached: bool) -> int:
    """Layer-passes per sample of a sweep: a backward pass counts as one forward."""
    return sum(2 * (n_layers - min(c) + 1) if cached and min(c) > 1
               else 2 * n_layers - min(c) + 1 for c in combos)


def conv_costs(channels: int, batch: int, n: int, kernel_size: int = 5,
               rounds: int = 7) -> dict:
    """This machine's cost of a convolution's input and weight gradients, each over its
    forward pass (medians of interleaved rounds, one ``channels`` -> ``channels`` layer
    at ``batch`` x ``n``², TensorFlow's threads as set)."""
    import tensorflow as tf

    pad = n + kernel_size - 1
    x = tf.random.normal((batch, pad, pad, channels))
    w = tf.random.normal((kernel_size, kernel_size, channels, channels))
    dy = tf.random.normal((batch, n, n, channels))
    ops = {
        "forward": lambda: tf.nn.conv2d(x, w, 1, "VALID"),
        "input": lambda: tf.raw_ops.Conv2DBackpropInput(
            input_sizes=x.shape, filter=w, out_backprop=dy, strides=[1] * 4, padding="VALID"),
        "weight": lambda: tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=w.shape, out_backprop=dy, strides=[1] * 4, padding="VALID")}
    ops = {k: tf.function(f) for k, f in ops.items()}
    times = {k: [] for k in ops}
    for _ in range(rounds + 1):  # the first round traces and warms up
        for k, f in ops.items():
            start = time.perf_counter()
            for _call in range(10):
                f()
            np.asarray(f())
            times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(t[1:]) for k, t in times.items()}
    return {"input": med["input"] / med["forward"], "weight": med["weight"] / med["forward"]}


def cost_model(spec, combos, costs: dict) -> float:
    """The cache's gain on a sweep of ``spec`` (a ``NetworkSpec``) when a layer's
    cost is its multiply-adds (``C_in C_out``) and its input and weight gradients cost
    ``costs`` times its forward pass: (forward of every layer + backward) over (forward
    of layers ≥ l + backward)."""
    flops = np.array([a * b for a, b in zip(spec.in_channels, spec.widths)], float)
    uncached = cached = 0.0
    for combo in combos:
        first = min(combo)
        backward = (costs["input"] * flops[first:].sum()
                    + costs["weight"] * sum(flops[k - 1] for k in combo))
        uncached += flops.sum() + backward
        cached += flops[first - 1:].sum() + backward  # first = 1: every layer, as uncached
    return uncached / cached


def _cache_report(name, network, times, combos, costs) -> None:
    med = {m: statistics.median(t) for m, t in times.items()}
    bound = (_layer_passes(network.n_layers, combos, False)
             / _layer_passes(network.n_layers, combos, True))
    modelled = cost_model(network, combos, costs)
    what = "pairs" if len(combos[0]) == 2 else "single layers"
    print(f"{name}, {len(combos)} {what}:")
    for m in CACHE_MODES:
        print(f"  {m:<16} {med[m]:7.1f} s   (rounds: {', '.join(f'{t:.1f}' for t in times[m])})")
    gain = med['xtl uncached'] / med['xtl cached']
    print(f"  cache gain  T(xtl uncached) / T(xtl cached) = {gain:.2f}   (layer-pass bound "
          f"{bound:.2f}; convolution cost model with this machine's gradient costs "
          f"{modelled:.2f})")
    print(f"  vs seeds    T(seeds' approach) / T(xtl cached) = "
          f"{med[CACHE_MODES[2]] / med['xtl cached']:.2f};  T(seeds') / T(xtl uncached) = "
          f"{med[CACHE_MODES[2]] / med['xtl uncached']:.2f}")


def cache_benchmark(args) -> None:
    """xtl cached vs xtl uncached vs the seeds' approach, interleaved rounds, one thread."""
    import itertools

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from training import synthetic_les

    import xtl
    from xtl.nn.backends.prefix import prefix_bytes
    from xtl.nn.training import load_normalized, sample_fields

    data = synthetic_les(args.samples, args.n)
    print(f"xtl {xtl.__version__}; one TensorFlow thread; {args.samples} samples at {args.n}², "
          f"{args.epochs} epochs, batch {args.batch}, lr {args.lr}, no early stopping; medians "
          f"of {args.rounds} interleaved rounds")
    costs = conv_costs(24, args.batch, args.n)
    print(f"a 24 -> 24 5x5 convolution's input gradient costs {costs['input']:.2f} and its "
          f"weight gradient {costs['weight']:.2f} forward passes here")
    for name in args.networks or NETWORKS:
        spec = dict(NETWORKS[name], kernel_size=5, padding="zeros")
        base = xtl.train(data, spec, epochs=1, batch_size=16, validation=None, progress=False)
        fields = sample_fields(data, base.variables.names)
        xy = load_normalized(fields, base.normalization, np.arange(args.samples), base.variables)
        layers = range(1, base.spec.n_layers + 1)
        sets = [[(k,) for k in layers]] + ([list(itertools.combinations(layers, 2))]
                                            if args.pairs else [])
        for combos in sets:
            times = {m: [] for m in CACHE_MODES}
            for _ in range(args.rounds):
                for m in CACHE_MODES:
                    times[m].append(_sweep_seconds(m, base, data, xy, combos, args))
            _cache_report(name, base.spec, times, combos, costs)
        peak = prefix_bytes(base.spec, 2, args.depth_samples, (args.n, args.n))
        print(f"  {name}: cache peak (re-training layers >= 2, {args.depth_samples} samples "
              f"at {args.n}²): {peak / 2**20:.2f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=32, help="LES grid")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--channels", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs per training (default 20; 8 with --cache)")
    parser.add_argument("--mode", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true",
                        help="the frozen-prefix cache against the uncached sweep and the "
                             "seeds' approach (not the parallel efficiency)")
    parser.add_argument("--pairs", action="store_true", help="with --cache: also all pairs")
    parser.add_argument("--samples", type=int, default=100, help="with --cache")
    parser.add_argument("--batch", type=int, default=8, help="with --cache")
    parser.add_argument("--lr", type=float, default=1e-3, help="with --cache")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORKS), default=None,
                        help="with --cache: which networks (default both)")
    parser.add_argument("--depth-samples", type=int, default=102,
                        help="with --cache: re-training samples of the depth study")
    args = parser.parse_args()
    if args.cache:
        args.epochs = 8 if args.epochs is None else args.epochs
        cache_benchmark(args)
        return
    args.epochs = 20 if args.epochs is None else args.epochs
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
        print(f"  {m:<27} {med[m]:7.1f} s   (rounds: {', '.join(f'{t:.1f}' for t in times[m])})")
    efficiency = med["serial, 1 thread"] / (2 * med["dask 2 x 1"])
    print(f"parallel efficiency T(serial, 1 thread) / (2 T(dask 2 x 1)) = {efficiency:.2f} "
          "(goal >= 0.85)")
    print(f"speed-up of dask 2 x 1 over one process with 2 threads = "
          f"{med['serial, 2 threads'] / med['dask 2 x 1']:.2f}")
    print(f"speed-up of xtl's LocalCluster over a plain one (dask's worker environ) = "
          f"{med[MODES[3]] / med['dask 2 x 1']:.2f}")


if __name__ == "__main__":
    main()
