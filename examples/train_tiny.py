"""Train a tiny CNN closure, fine-tune one layer on a target flow, sweep the layers.

    python examples/train_tiny.py [--out out/train_tiny] [--epochs 20]

Runs in well under a minute on a laptop CPU. The LES data here are synthetic
stand-ins with the LES schema (``psi``, ``omega``, ``pi`` on ``(time, y, x)``):
ω̄ is a random smooth periodic field, ψ̄ solves ∇²ψ̄ = −ω̄, and Π is a known
local operator of ω̄ that differs between the "base" and the "target" flow.
In a real study, pass the LES Datasets coarse-grained from DNS instead.

Writes to ``--out``: ``base.keras`` + ``base.nc`` (the base network, natively
and as a model Dataset), ``tl_layer1.keras`` + ``.nc``, ``sweep.nc`` (the
layer sweep) and ``activation_spectra.nc``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import xarray as xr

import xtl.explain.activations
import xtl.nn.training
from xtl.nn.model import model_to_dataset
from xtl.nn.files import save_model


def synthetic_les(nt: int, n: int = 32, *, seed: int = 0, target: bool = False) -> xr.Dataset:
    """Smooth random ω̄, ψ̄ = −∇⁻²ω̄, and Π = h²∇²ω̄ (+ 0.5 ω̄ on the target flow)."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = np.meshgrid(k, k)
    kk = np.hypot(kx, ky)
    noise = rng.standard_normal((nt, n, n)) + 1j * rng.standard_normal((nt, n, n))
    omega = np.real(np.fft.ifft2(noise * kk * np.exp(-0.5 * (kk / 4.0) ** 2)))
    omega /= omega.std()
    psi = np.real(np.fft.ifft2(np.fft.fft2(omega) / np.where(kk == 0, 1.0, kk ** 2)))
    pi = sum(np.roll(omega, s, a) for s in (1, -1) for a in (-1, -2)) - 4 * omega
    if target:
        pi = pi + 0.5 * omega
    x = np.arange(n) * 2 * np.pi / n
    dims = ("time", "y", "x")
    return xr.Dataset(
        {v: (dims, a.astype(np.float32)) for v, a in (("psi", psi), ("omega", omega), ("pi", pi))},
        coords={"time": np.arange(nt) * 0.1, "y": x, "x": x},
        attrs={"case_name": "synthetic-target" if target else "synthetic-base"},
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/train_tiny")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    base_data = synthetic_les(200, seed=0)
    target_data = synthetic_les(200, seed=1, target=True)
    target_test = synthetic_les(40, seed=2, target=True)

    # 1. the base network (BNN): 4 conv layers, 8 channels, 5x5, periodic padding
    spec = dict(n_layers=4, channels=8, kernel_size=5, padding="periodic")
    base = xtl.nn.training.train(base_data, spec, epochs=args.epochs, batch_size=16,
                              learning_rate=3e-3, seed=0, progress=True)
    save_model(base, out / "base.keras", overwrite=True)
    print("base model:", base.provenance)
    print("base on base data:  ", _fmt(xtl.nn.training.evaluate(base, synthetic_les(40, seed=3))))
    print("base on target data:", _fmt(xtl.nn.training.evaluate(base, target_test)))

    # 2. transfer learning (TLNN): re-train layer 1 only on 10% of the target data
    tl = xtl.nn.training.transfer(base, target_data, layers=[1], fraction=0.1,
                               epochs=args.epochs, batch_size=4, learning_rate=3e-3, seed=0,
                               progress=True)
    save_model(tl, out / "tl_layer1.keras", overwrite=True)
    print("TL (layer 1) on target data:", _fmt(xtl.nn.training.evaluate(tl, target_test)))
    diff = np.abs(model_to_dataset(tl).kernel - model_to_dataset(base).kernel)
    print("max |kernel change| per layer:", diff.max(["channel_out", "channel_in", "tap_y",
                                                     "tap_x"]).values.round(4).tolist())

    # 3. which layer is best to re-train? (pass client=dask.distributed.Client() to parallelize)
    sweep = xtl.layer_sweep(base, target_data, target_test, fraction=0.1,
                                     epochs=args.epochs, batch_size=4, learning_rate=3e-3,
                                     progress=True)
    sweep.to_netcdf(out / "sweep.nc")
    print("CC of the TL network per re-trained layer:",
          dict(zip(sweep.layer.values.tolist(), sweep.cc.values.round(3).tolist())),
          "(base:", round(float(sweep.base_cc), 3), ")")

    # 4. what do the layers see? spectra of their outputs, streamed over samples
    spectra = xtl.explain.activations.activation_spectra(tl, target_test, layers=[1, 2], batch_size=8)
    spectra.to_netcdf(out / "activation_spectra.nc")
    print("wrote", sorted(p.name for p in out.iterdir()))


def _fmt(scores: xr.Dataset) -> str:
    return ", ".join(f"{k}={float(v):.3f}" for k, v in scores.data_vars.items())


if __name__ == "__main__":
    main()
