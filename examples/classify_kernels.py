"""Classify synthetic 5×5 kernels by their Fourier spectra, the way xtl explains a CNN.

Builds a two-layer "model" Dataset (xtl's model schema) whose kernels are textbook filters
(Gaussian blur, 5-point Laplacian, difference of Gaussians, delta, Gabor kernels at
several angles) and random noise; classifies them; prints the census per layer; then
"re-trains" a few kernels and lists the most-changed ones. Figures go to ``--out``.

    python examples/classify_kernels.py [--n 64] [--out figures/]
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import xarray as xr

import xtl.accessors  # noqa: F401  (registers .tl; `import xtl` does the same)
from xtl.experiment import plotting
from xtl.explain.kernels import KERNEL_DIMS

T = np.arange(5) - 2
TY, TX = np.meshgrid(T, T, indexing="ij")  # rows are y (tap_y), columns x (tap_x)


def gaussian(sigma):
    g = np.exp(-(TX**2 + TY**2) / (2 * sigma**2))
    return g / g.sum()


def gabor(theta_deg, wavelength=3.0, sigma=1.2):
    th = np.deg2rad(theta_deg)
    return np.exp(-(TX**2 + TY**2) / (2 * sigma**2)) * np.cos(
        2 * np.pi / wavelength * (TX * np.cos(th) + TY * np.sin(th))
    )


def synthetic_model(seed=0):
    """Layer 1: named filters; layer 2: random noise. One input channel each."""
    laplacian = np.zeros((5, 5))
    laplacian[2, 2], laplacian[1, 2], laplacian[3, 2], laplacian[2, 1], laplacian[2, 3] = -4, 1, 1, 1, 1
    delta = np.zeros((5, 5))
    delta[2, 2] = 1
    named = {
        "gaussian": gaussian(1.0),
        "laplacian": laplacian,
        "dog": gaussian(0.6) - gaussian(1.2),
        "delta": delta,
        **{f"gabor{a}": gabor(a) for a in (0, 30, 60, 90, 120, 150)},
    }
    rng = np.random.default_rng(seed)
    kernels = np.stack([np.stack(list(named.values())), rng.standard_normal((len(named), 5, 5))])
    model = xr.Dataset(
        {
            "kernel": (KERNEL_DIMS, kernels[:, :, None].astype(np.float32)),
            "bias": (("layer", "channel_out"), np.zeros(kernels.shape[:2], np.float32)),
        },
        coords={"layer": [1, 2], "channel_out": np.arange(len(named)), "channel_in": [0]},
        attrs={"description": "synthetic kernels for xtl's classification example"},
    )
    return model, list(named)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--pad-to", type=int, default=64, help="padded grid size (the LES grid)")
    p.add_argument("--out", default=None, help="folder for the figures (none if omitted)")
    args = p.parse_args()

    model, names = synthetic_model()
    classes = model.tl.classify_kernels(pad_to=args.pad_to)
    print("layer 1, named kernels:")
    for i, name in enumerate(names):
        c = classes.sel(layer=1, channel_out=i, channel_in=0)
        theta = f"  θ = {float(c.orientation):5.1f}°" if c.filter_type.item() == "gabor" else ""
        print(f"  {name:10s} -> {c.filter_type.item():9s}{theta}")
    census = classes.tl.filter_census()
    print("census per layer (layer 2 is random noise):")
    print(census.to_pandas().to_string())

    # "re-train": perturb three kernels of layer 2 and find the most-changed ones
    tl = model.copy(deep=True)
    tl["kernel"][dict(layer=1, channel_out=[0, 3, 7])] *= 1.5
    change = model.tl.kernel_change(tl, pad_to=args.pad_to, percentile=85)
    print("most-changed kernels (spectral change ≥ 85th percentile):")
    for r in range(change.sizes["top"]):
        print(f"  layer {int(change.top_layer[r])} out {int(change.top_channel_out[r])}"
              f"  ‖|W^_TL|-|W^_base|‖_F = {float(change.top_change[r]):.3f}")
    print("relative spectral change per layer:",
          np.round(change.relative_spectral_change.values, 3).tolist())

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        filters = model.tl.kernel_filters(pad_to=args.pad_to)
        sel = [{"layer": 1, "channel_out": i, "channel_in": 0} for i in range(len(names))]
        fig = plotting.plot_kernel_spectra(filters, sel, classes=classes, ncols=5)
        fig.savefig(os.path.join(args.out, "kernel_spectra.png"), dpi=120)
        ax = plotting.plot_census(census, title="filter types per layer")
        ax.figure.savefig(os.path.join(args.out, "census.png"), dpi=120)
        prof = filters.tl.radial_profile().sel(layer=1, channel_in=0)
        ax = plotting.plot_spectra(
            {names[i]: prof.isel(channel_out=i) for i in range(4)}, ylabel="mean |W^| per shell"
        )
        ax.figure.savefig(os.path.join(args.out, "radial_profiles.png"), dpi=120)
        print("figures written to", args.out)


if __name__ == "__main__":
    main()
