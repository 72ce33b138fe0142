"""Explain the network you already have: a Keras and a PyTorch CNN closure, imported.

Trains (briefly, natively, outside xtl) a small Keras Sequential closure with tanh,
5×5 and 3×3 kernels and a BatchNormalization, and a small PyTorch module of the
m2lines FullyCNN shape (conv → ReLU → BatchNorm2d blocks, circular padding); imports
both with their normalization; checks that xtl predicts what they predict; classifies
their kernels; re-trains one layer on a target flow; and hands the networks back
as plain Keras / PyTorch models.

    python examples/own_network.py [--epochs 3] [--n 16]
"""
from __future__ import annotations

import argparse

import numpy as np
import xarray as xr

import xtl


def synthetic_les(n: int, samples: int, seed: int, target: bool = False) -> xr.Dataset:
    """Smooth random (psi, omega) on an n² periodic grid and a local SGS-like map pi."""
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(n, 1.0 / n)
    kk = np.hypot(*np.meshgrid(k, k))
    noise = rng.standard_normal((samples, n, n)) + 1j * rng.standard_normal((samples, n, n))
    omega = np.real(np.fft.ifft2(noise * kk * np.exp(-0.5 * (kk / 3) ** 2)))
    omega /= omega.std()
    psi = np.real(np.fft.ifft2(np.fft.fft2(omega) / np.where(kk == 0, 1, kk ** 2)))
    pi = sum(np.roll(omega, s, a) for s in (1, -1) for a in (-1, -2)) - 4 * omega
    pi = pi + 0.5 * omega if target else pi
    x = np.arange(n) * 2 * np.pi / n
    dims = ("time", "y", "x")
    return xr.Dataset({"psi": (dims, psi.astype("f4")), "omega": (dims, omega.astype("f4")),
                       "pi": (dims, pi.astype("f4"))},
                      coords={"time": np.arange(samples), "y": x, "x": x},
                      attrs={"case_name": "target" if target else "base"})


def normalization(ds: xr.Dataset) -> dict:
    """The standard deviation per variable, as the networks below are trained with."""
    return {name: float(ds[name].std()) for name in ("psi", "omega", "pi")}


def arrays(ds: xr.Dataset, norm: dict) -> tuple:
    """Normalized channels-last inputs (psi, omega) and target pi."""
    x = np.stack([ds.psi / norm["psi"], ds.omega / norm["omega"]], -1).astype("f4")
    return x, (ds.pi.values / norm["pi"])[..., None].astype("f4")


def keras_closure(x, y, epochs: int):
    """A Keras Sequential closure trained with Keras' own fit."""
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((None, None, 2)),
        keras.layers.Conv2D(8, 5, padding="same", activation="tanh"),
        keras.layers.Conv2D(8, 3, padding="same"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("tanh"),
        keras.layers.Conv2D(1, 3, padding="same"),
    ])
    net.compile("adam", "mse")
    net.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
    return net


def torch_closure(x, y, epochs: int):
    """A FullyCNN-shaped PyTorch closure trained with a plain PyTorch loop."""
    import torch

    torch.manual_seed(0)
    nn = torch.nn

    def block(c_in, c_out, size):
        return [nn.Conv2d(c_in, c_out, size, padding=size // 2, padding_mode="circular"),
                nn.ReLU(), nn.BatchNorm2d(c_out)]

    net = nn.Sequential(*block(2, 8, 5), *block(8, 8, 5), *block(8, 8, 3),
                        nn.Conv2d(8, 1, 3, padding=1, padding_mode="circular"))
    xt, yt = (torch.from_numpy(a).permute(0, 3, 1, 2) for a in (x, y))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in range(0, len(xt), 8):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(net(xt[i:i + 8]), yt[i:i + 8]).backward()
            optimizer.step()
    return net.eval()


def explain(model, name: str, target: xr.Dataset, epochs: int) -> dict:
    """Classify the imported network's kernels and re-train its layer 2 on ``target``."""
    ds = model.to_dataset()
    census = xtl.filter_census(xtl.classify_kernels(ds, 16))
    tl = xtl.transfer(model, target, layers=[2], n_samples=16, epochs=epochs, progress=False)
    change = xtl.kernel_change(ds, tl.to_dataset(), pad_to=16)
    moved = change.physical_change.max(("channel_out", "channel_in")).values
    print(f"{name}: {model.n_layers} layers, kernels {model.spec.layer_kernel_sizes}, "
          f"activations {model.spec.layer_activations}, folded {model.provenance['folded_batchnorm']}")
    print(f"  filter census (layer 1): {dict(census.sel(layer=1).to_series())}")
    print(f"  re-training layer 2 moved the kernels of layers {np.flatnonzero(moved) + 1}")
    return {"moved": moved, "tl": tl}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args(argv)
    base = synthetic_les(args.n, 64, seed=0)
    target = synthetic_les(args.n, 32, seed=1, target=True)
    norm = normalization(base)
    x, y = arrays(base, norm)
    results = {}
    keras_net = keras_closure(x, y, args.epochs)
    imported = xtl.from_keras(keras_net, normalization=norm)  # ψ̄, ω̄ → Π by default
    results["keras_parity"] = float(np.abs(imported.predict(base.psi.values, base.omega.values)
                                           - np.asarray(keras_net(x))[..., 0] * norm["pi"]).max())
    results["keras"] = explain(imported, "Keras", target, args.epochs)
    torch_net = torch_closure(x, y, args.epochs)
    imported_torch = xtl.from_torch(torch_net, normalization=norm)
    import torch

    with torch.no_grad():
        native = torch_net(torch.from_numpy(x).permute(0, 3, 1, 2))[:, 0].numpy()
    results["torch_parity"] = float(np.abs(imported_torch.predict(base.psi.values,
                                                                  base.omega.values)
                                           - native * norm["pi"]).max())
    results["torch"] = explain(imported_torch, "PyTorch", target, args.epochs)
    back = results["torch"]["tl"].to_keras()  # the re-trained PyTorch closure, in Keras
    results["cross_parity"] = float(np.abs(
        np.asarray(back(x)) - xtl.get_backend("torch").predict_normalized(results["torch"]["tl"],
                                                                        x)).max())
    print(f"largest differences of pi: xtl vs Keras {results['keras_parity']:.1e}, xtl vs "
          f"PyTorch {results['torch_parity']:.1e} (pi's std: {norm['pi']:.2f}); the re-trained "
          f"PyTorch network vs its Keras copy {results['cross_parity']:.1e} (normalized)")
    return results


if __name__ == "__main__":
    main()
