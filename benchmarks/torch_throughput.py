"""Benchmark: training throughput of the torch and keras backends against bare loops.

    python benchmarks/torch_throughput.py [--rounds 3] [--samples 256] [--epochs 4]

Prints, measured in one run, with one CPU thread per framework (or the GPU where
the framework sees one):

* ``xtl.train(backend="torch")`` samples/s over a bare PyTorch loop on the same
  network (built by the torch backend, same initial weights), same data held as
  tensors, batch size, Adam (Keras' epsilon) and MSE, shuffled every epoch (goal >= 0.9),
  and over the same loop with its tensors in channels-last memory (what xtl hands
  PyTorch: its batches are channels-last arrays, permuted without a copy);
* ``xtl.train(backend="keras")`` samples/s over a bare ``keras.Model.fit`` on the
  same arrays, network, batch size and (deterministic-op) TensorFlow settings.

Each throughput is the median of steady-state epoch times (every run's first epoch,
which builds or traces, is left out); the four runs alternate in every round, so
that a change of the machine's load hits all of them alike.
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

from training import synthetic_les  # noqa: E402  (benchmarks/training.py)

SPEC = dict(n_layers=4, channels=16, kernel_size=5, padding="zeros")


def arrays(ds, norm):
    """Normalized channels-last inputs and targets of ``ds``."""
    x = np.stack([ds.psi.values / norm["psi"], ds.omega.values / norm["omega"]], -1)
    return x.astype(np.float32), (ds.pi.values / norm["pi"])[..., None].astype(np.float32)


def bare_torch_epochs(spec, norm, x, y, batch, epochs, seed, channels_last=False):
    """Epoch times of a plain PyTorch loop: NCHW tensors (in channels-last memory with
    ``channels_last``), randperm shuffling, Adam, MSE."""
    import torch

    from xtl.nn.backends.base import get_backend

    backend = get_backend("torch")
    net = backend.build(spec, norm, seed=seed).native.train()
    device = next(net.parameters()).device
    layout = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=layout).to(device)
    yt = torch.from_numpy(y).permute(0, 3, 1, 2).contiguous(memory_format=layout).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    generator = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(xt), generator=generator).to(device)
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(net(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
        float(loss.detach())  # wait for the device
        times.append(time.perf_counter() - start)
    return times[1:]


def bare_keras_epochs(spec, norm, x, y, batch, epochs, seed):
    """Epoch times of a plain ``keras.Model.fit`` on numpy arrays."""
    import keras

    from xtl.nn.backends.base import get_backend

    keras.utils.set_random_seed(seed)  # fit's shuffling, under deterministic ops
    model = get_backend("keras").build(spec, norm, seed=seed).native
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[Timer()])
    return times[1:]


def xtl_epochs(ds, spec, backend, batch, epochs, seed):
    """Steady-state epoch times of ``xtl.train`` (its history's ``epoch_time``)."""
    from xtl.nn.training import train

    model = train(ds, spec, backend=backend, validation=None, epochs=epochs, batch_size=batch,
                  seed=seed, progress=False)
    return model.history.epoch_time.values[1:].tolist()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    import tensorflow as tf
    import torch

    from xtl.nn.backends.base import get_backend
    from xtl.nn.spec import NetworkSpec
    from xtl.nn.training import compute_normalization

    for name in ("keras", "torch"):
        get_backend(name).set_threads(1)
    tf.config.experimental.enable_op_determinism()  # xtl.train's default, for both sides
    ds = synthetic_les(args.samples, args.grid)
    norm = compute_normalization(ds)
    x, y = arrays(ds, norm)
    spec = NetworkSpec(**SPEC)
    times = {k: [] for k in ("bare torch", "bare torch NHWC", "xtl torch", "bare keras",
                             "xtl keras")}
    for r in range(args.rounds):
        common = (args.batch, args.epochs, r)
        times["bare torch"] += bare_torch_epochs(spec, norm, x, y, *common)
        times["bare torch NHWC"] += bare_torch_epochs(spec, norm, x, y, *common, True)
        times["xtl torch"] += xtl_epochs(ds, spec, "torch", *common)
        times["bare keras"] += bare_keras_epochs(spec, norm, x, y, *common)
        times["xtl keras"] += xtl_epochs(ds, spec, "keras", *common)
    rate = {k: args.samples / statistics.median(v) for k, v in times.items()}
    print(f"devices: torch {get_backend('torch').device()}, keras {get_backend('keras').device()}; "
          f"torch {torch.__version__}, TF {tf.__version__}; 1 thread each")
    print(f"network {SPEC['n_layers']} layers x {SPEC['channels']} ch, {SPEC['kernel_size']}x"
          f"{SPEC['kernel_size']}, {args.grid}^2, {args.samples} samples/epoch, batch "
          f"{args.batch}, {args.rounds} rounds x {args.epochs - 1} timed epochs per run")
    for k, v in rate.items():
        print(f"    {k:15s}: {v:9.1f} samples/s")
    print(f"ratio xtl/bare samples/s: torch {rate['xtl torch'] / rate['bare torch']:.3f} "
          f"(over channels-last bare {rate['xtl torch'] / rate['bare torch NHWC']:.3f})   "
          f"keras {rate['xtl keras'] / rate['bare keras']:.3f}   (goal >= 0.9)")


if __name__ == "__main__":
    main()
