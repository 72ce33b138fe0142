"""Benchmark: training throughput of ``xtl.train`` and of the paper's network.

    python benchmarks/training.py [--quick] [--repeats 3]

Prints, measured in one run:

1. samples/s of ``xtl.train`` over a bare Keras ``fit`` on the same
   in-memory arrays, same network, batch size and (deterministic-op) TF
   settings (goal >= 0.9). Throughputs are medians of steady-state epoch
   times (the first epoch of every run, which traces the graph, is left
   out); runs alternate bare / xtl, ``--repeats`` times.
2. the paper's network (11 layers, 64 channels, 5×5, zero padding) training
   samples/s at 64² and 128², its GFLOP/s (3 × forward FLOPs per sample:
   forward, input-gradient and weight-gradient convolutions), and that over
   a float32 ``tf.matmul``'s GFLOP/s measured in the same run.

Runs on the GPU when TensorFlow sees one (the same measurements, larger
epochs); prints which device was used.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def synthetic_les(n_samples: int, n: int, seed: int = 0) -> xr.Dataset:
    """Random smooth (psi, omega, pi) fields with the LES schema (time, y, x)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = np.meshgrid(k, k)
    kk = np.hypot(kx, ky)
    amp = kk * np.exp(-0.5 * (kk / 6.0) ** 2)
    noise = rng.standard_normal((n_samples, n, n)) + 1j * rng.standard_normal((n_samples, n, n))
    omega = np.real(np.fft.ifft2(noise * amp)).astype(np.float32)
    k2 = np.where(kk == 0, 1.0, kk ** 2)
    psi = np.real(np.fft.ifft2(np.fft.fft2(omega) / k2)).astype(np.float32)
    pi = (np.roll(omega, 1, -1) + np.roll(omega, -1, -1) + np.roll(omega, 1, -2)
          + np.roll(omega, -1, -2) - 4 * omega).astype(np.float32)
    x = np.arange(n) * 2 * np.pi / n
    dims = ("time", "y", "x")
    return xr.Dataset({"psi": (dims, psi), "omega": (dims, omega), "pi": (dims, pi)},
                      coords={"time": np.arange(n_samples), "y": x, "x": x})


def forward_flops(spec, n: int) -> float:
    """FLOPs of one forward pass on an n×n sample (2 per multiply-add)."""
    macs = sum(ci * co for ci, co in zip(spec.in_channels, spec.widths))
    return 2.0 * n * n * spec.kernel_size ** 2 * macs


def matmul_gflops(tf, size: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of a float32 size×size matmul."""
    a = tf.random.normal((size, size), seed=1)
    b = tf.random.normal((size, size), seed=2)
    tf.matmul(a, b).numpy()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        tf.matmul(a, b).numpy()
        times.append(time.perf_counter() - t)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def bare_fit_epoch_times(backend, spec, norm, x, y, batch_size, epochs, seed):
    """Steady-state epoch times of a plain ``keras.Model.fit`` on numpy arrays."""
    import keras

    keras.utils.set_random_seed(seed)
    model = backend.build(spec, norm, seed=seed).native
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t)

    times = []
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[Timer()])
    return times[1:]


def overhead(args, tf):
    """xtl.train vs bare Keras fit on the same arrays."""
    import xtl.nn.training as training
    from xtl.nn.backends.base import get_backend
    from xtl.nn.spec import NetworkSpec, stack_channels

    spec = NetworkSpec(n_layers=4, channels=16, kernel_size=5, padding="zeros")
    n, n_samples, batch, epochs = 32, (256 if args.quick else 512), 32, 4
    if args.gpu:
        n_samples, epochs = 4096, 5
    ds = synthetic_les(n_samples, n)
    norm = training.compute_normalization(ds)
    x = stack_channels({v: ds[v].values[:, None] for v in ("psi", "omega")}, ("psi", "omega"), norm)
    y = (ds.pi.values / norm["pi"])[..., None]
    backend = get_backend("keras")
    bare, ours = [], []
    for r in range(args.repeats):
        bare += bare_fit_epoch_times(backend, spec, norm, x, y, batch, epochs, seed=r)
        model = training.train(ds, spec, validation=None, epochs=epochs, batch_size=batch,
                               seed=r, progress=False)
        ours += model.history.epoch_time.values[1:].tolist()
    t_bare, t_ours = statistics.median(bare), statistics.median(ours)
    print(f"[1] xtl.train vs bare keras fit: {spec.n_layers} layers x {spec.channels} ch, "
          f"{n}^2, {n_samples} samples/epoch, batch {batch}, {len(ours)} epochs each")
    print(f"    bare fit : {n_samples / t_bare:9.1f} samples/s (median epoch {t_bare:.3f} s)")
    print(f"    xtl.train: {n_samples / t_ours:9.1f} samples/s (median epoch {t_ours:.3f} s)")
    print(f"    ratio xtl/bare samples/s = {t_bare / t_ours:.3f}   (goal >= 0.9)")


def paper_network(args, tf, mm):
    """The paper's network: samples/s, GFLOP/s and the ratio to matmul GFLOP/s."""
    import xtl.nn.training as training
    from xtl.nn.spec import NetworkSpec

    spec = NetworkSpec()  # 11 layers, 64 channels, 5x5, zeros
    sizes = {64: 16, 128: 8} if not args.gpu else {64: 512, 128: 256}
    if args.quick and not args.gpu:
        sizes = {64: 8, 128: 4}
    batch = 8 if not args.gpu else 32
    print(f"[2] paper network ({spec.n_layers} layers x {spec.channels} ch, "
          f"{spec.kernel_size}x{spec.kernel_size}), batch {batch}, float32")
    for n, n_samples in sizes.items():
        ds = synthetic_les(n_samples, n)
        times = []
        for r in range(args.repeats):
            model = training.train(ds, spec, validation=None, epochs=4, batch_size=min(
                batch, n_samples), seed=r, progress=False)
            times += model.history.epoch_time.values[1:].tolist()
        t = statistics.median(times)
        sps = n_samples / t
        gflops = 3 * forward_flops(spec, n) * sps / 1e9
        print(f"    {n:4d}^2: {sps:8.2f} samples/s, {gflops:8.1f} GFLOP/s, "
              f"{gflops / mm:.3f} of matmul GFLOP/s   ({len(times)} epochs of "
              f"{n_samples} samples, median {t:.2f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller epochs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import tensorflow as tf

    from xtl.nn.backends.keras import gpu_available

    tf.config.experimental.enable_op_determinism()  # xtl.train's default; both sides of [1]
    args.gpu = gpu_available()
    device = "GPU " + tf.config.list_physical_devices("GPU")[0].name if args.gpu else "CPU"
    print(f"device: {device}; TF {tf.__version__}; CPU threads: {os.cpu_count()}; "
          f"deterministic ops on (XLA off)")
    mm = matmul_gflops(tf, 4096 if args.gpu else 2048)
    print(f"float32 matmul: {mm:.1f} GFLOP/s")
    overhead(args, tf)
    paper_network(args, tf, mm)
    mm2 = matmul_gflops(tf, 4096 if args.gpu else 2048)
    print(f"float32 matmul again (drift check): {mm2:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
