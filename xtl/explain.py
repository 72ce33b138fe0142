"""Explaining a trained closure through its activations.

* :func:`activations` -- the outputs of chosen conv layers for some LES
  inputs, as a labeled Dataset ``activation(layer, sample, channel, y, x)``;
* :func:`activation_spectra` -- their isotropic power spectra averaged over
  samples, ``spectrum(layer, channel, k)``, computed batch by batch so that
  all activations are never held at once (inputs may be dask-backed).

Spectra come from :func:`xtl.spectral.spectrum` (``kind="power"``): shell
sums on integer radian wavenumbers, so the sum over ``k`` is the spatial
mean square of the activation.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .backends import INPUTS, Model, check_layers, get_backend
from .backends.base import stack_inputs
from .spectral import spectrum
from .training import _fields, _n_samples, check_les_dataset

__all__ = ["activations", "activation_spectra"]


def _check(model, inputs, layers, batch_size):
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    check_les_dataset(inputs, "inputs", need_target=False)
    layers = check_layers(range(1, model.n_layers + 1) if layers is None else layers,
                          model.n_layers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return layers


def _batches(model, inputs, batch_size):
    """Yield ``(start, normalized x (b, y, x, 2))`` batch by batch (computing dask slices)."""
    import dask

    fields = _fields(inputs, INPUTS)
    n = _n_samples(inputs[INPUTS[0]])
    for i in range(0, n, batch_size):
        psi, omega = dask.compute(fields["psi"][i:i + batch_size],
                                  fields["omega"][i:i + batch_size])
        psi, omega = np.asarray(psi, np.float32), np.asarray(omega, np.float32)
        if np.isnan(psi).any() or np.isnan(omega).any():
            raise ValueError("inputs contain NaN in 'psi' or 'omega'")
        yield i, stack_inputs(psi, omega, model.normalization)


def _grid_coords(inputs):
    return {c: inputs[c] for c in ("y", "x") if c in inputs.coords}


def _sample_coords(inputs, n):
    """``sample`` coordinate plus the flattened leading-dim coordinates on it."""
    da = inputs[INPUTS[0]]
    lead = [d for d in da.dims if d not in ("y", "x")]
    coords = {"sample": np.arange(n)}
    if lead:
        grids = np.meshgrid(*[np.arange(da.sizes[d]) for d in lead], indexing="ij")
        for d, g in zip(lead, grids):
            values = inputs[d].values[g.ravel()] if d in inputs.coords else g.ravel()
            coords[d] = ("sample", values)
    return coords


def activations(model: Model, inputs, layers=None, *, batch_size: int = 32) -> xr.Dataset:
    """Outputs of conv layers for LES inputs, as a Dataset.

    Parameters
    ----------
    model : Model
        A trained network.
    inputs : xarray.Dataset
        Holds ``psi`` and ``omega`` on ``(..., y, x)`` in physical units (they
        are normalized with the model's stored standard deviations); leading
        dims are stacked into ``sample``.
    layers : int or sequence of int, optional
        Conv layers in 1..L (default all). A layer's output is taken after its
        activation (ReLU); layer L's is the normalized Π.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    xarray.Dataset
        ``activation(layer, sample, channel, y, x)`` float32, NaN-padded where
        a layer has fewer channels (``n_channels(layer)`` tells how many);
        ``ds.activation.sel(layer=k)`` is layer k's ``(sample, channel, y, x)``.
        The leading dims' coordinates are kept on ``sample``.

    Raises
    ------
    ValueError
        A layer outside 1..L, inputs without ``psi``/``omega`` or with NaN.
    """
    layers = _check(model, inputs, layers, batch_size)
    backend = get_backend(model.backend)
    widths = [model.spec.widths[k - 1] for k in layers]
    n = _n_samples(inputs[INPUTS[0]])
    ny, nx = inputs[INPUTS[0]].shape[-2:]
    out = np.full((len(layers), n, max(widths), ny, nx), np.nan, dtype=np.float32)
    for i, x in _batches(model, inputs, batch_size):
        acts = backend.activations(model, x, layers, batch_size=batch_size)
        for j, k in enumerate(layers):
            out[j, i:i + len(x), :widths[j]] = acts[k]
    coords = {"layer": list(layers), "channel": np.arange(max(widths)),
              "n_channels": ("layer", np.asarray(widths, np.int32)),
              **_sample_coords(inputs, n), **_grid_coords(inputs)}
    da = xr.DataArray(out, dims=("layer", "sample", "channel", "y", "x"), coords=coords,
                      attrs={"long_name": "conv layer output (after its activation)",
                             "units": "1"})
    return xr.Dataset({"activation": da}, attrs={"n_samples": n})


def activation_spectra(model: Model, inputs, layers=None, *, batch_size: int = 32,
                       kmax: int | None = None) -> xr.Dataset:
    """Isotropic power spectra of layer outputs, averaged over samples, streamed.

    Processes ``batch_size`` samples at a time (computing only those slices
    of dask-backed inputs) and accumulates the spectra, so all activations
    are never held at once.

    Parameters
    ----------
    model : Model
    inputs : xarray.Dataset
        ``psi`` and ``omega`` on ``(..., y, x)``, physical units.
    layers : int or sequence of int, optional
        Conv layers in 1..L (default all).
    batch_size : int
        Samples per batch.
    kmax : int, optional
        Last shell kept (default: all shells, so the sum over ``k`` is the
        mean square; see :func:`xtl.spectral.spectrum`).

    Returns
    -------
    xarray.Dataset
        ``spectrum(layer, channel, k)`` (float64, NaN for padded channels),
        the sample mean of the power spectra of every channel, and
        ``mean_square(layer, channel)``, the sample mean of the spatial mean
        square (Σ_k spectrum when all shells are kept).
    """
    layers = _check(model, inputs, layers, batch_size)
    backend = get_backend(model.backend)
    widths = [model.spec.widths[k - 1] for k in layers]
    grid = _grid_coords(inputs)
    total, msq, k_coord, n = None, None, None, 0
    for _, x in _batches(model, inputs, batch_size):
        acts = backend.activations(model, x, layers, batch_size=batch_size)
        for j, k in enumerate(layers):
            a = acts[k].astype(np.float64)
            da = xr.DataArray(a, dims=("sample", "channel", "y", "x"), coords=grid)
            s = spectrum(da, "power", kmax=kmax).sum("sample")
            if total is None:
                k_coord = s["k"].values
                total = np.zeros((len(layers), max(widths), len(k_coord)))
                msq = np.zeros((len(layers), max(widths)))
            total[j, :widths[j]] += s.values
            msq[j, :widths[j]] += (a ** 2).mean(axis=(2, 3)).sum(axis=0)
        n += len(x)
    for j, w in enumerate(widths):  # NaN-pad the channels a layer does not have
        total[j, w:], msq[j, w:] = np.nan, np.nan
    k = k_coord
    coords = {"layer": list(layers), "channel": np.arange(max(widths)), "k": k,
              "n_channels": ("layer", np.asarray(widths, np.int32))}
    return xr.Dataset(
        {
            "spectrum": (("layer", "channel", "k"), total / n,
                         {"long_name": "power spectrum of the layer output, sample mean",
                          "units": "1"}),
            "mean_square": (("layer", "channel"), msq / n,
                            {"long_name": "spatial mean square of the layer output, "
                                          "sample mean", "units": "1"}),
        },
        coords=coords, attrs={"n_samples": n},
    )
