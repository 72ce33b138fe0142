"""The model as a Dataset (xtl's model schema), framework-neutral.

``kernel(layer, channel_out, channel_in, tap_y, tap_x)`` and ``bias(layer,
channel_out)``, NaN-padded, with the architecture, the normalization, the
provenance and a content hash in the attributes (docs/training.md, "The model
as data"). A backend packs its weights with :func:`weights_to_dataset` and
unpacks them with :func:`dataset_to_weights`; :func:`xtl.nn.model.model_to_dataset`
and :func:`xtl.nn.model.model_from_dataset` are the entry points.

Kernel convention
-----------------
Every backend exposes its conv layers as *cross-correlations* with centred
taps: layer ``l`` computes ::

    out[co, y, x] = bias[co] + sum_{ci, ty, tx} kernel[co, ci, ty, tx] * in[ci, y + ty, x + tx]

where ``ty, tx`` run over ``-(K//2) .. K//2`` (the ``tap_y``/``tap_x``
coordinates of the model Dataset) and ``in`` is zero outside the grid
(``padding="zeros"``) or periodically continued (``padding="periodic"``).
"""
from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .spec import NetworkSpec, Variables

__all__ = ["SPEC_ATTR", "NORMALIZATION_ATTR", "PROVENANCE_ATTR", "history_to_dataset", "json_safe", "weights_to_dataset", "dataset_to_weights", "pad_taps", "crop_taps",
           "file_metadata",
           "check_model_id", "model_metadata", "history_from_dataset"]

#: The attributes of a model Dataset holding its spec, normalization and provenance (JSON).
SPEC_ATTR = "xtl_spec"
NORMALIZATION_ATTR = "xtl_normalization"
PROVENANCE_ATTR = "xtl_provenance"


def history_to_dataset(history: Mapping) -> xr.Dataset:
    """The training history as a Dataset over ``epoch``.

    Parameters
    ----------
    history : mapping
        ``{"loss": [...], "val_loss": [...], "epoch_time": [...]}`` (lists of
        equal length; keys of other lengths are dropped).

    Returns
    -------
    xarray.Dataset
        One variable per key on ``epoch`` = 1, 2, ...
    """
    n = max((len(v) for v in history.values()), default=0)
    attrs = {
        "loss": {"long_name": "training loss (MSE of normalized Π)", "units": "1"},
        "val_loss": {"long_name": "validation loss (MSE of normalized Π)", "units": "1"},
        "epoch_time": {"long_name": "wall time of the epoch", "units": "s"},
    }
    data = {k: ("epoch", np.asarray(v, dtype=np.float64), attrs.get(k, {}))
            for k, v in history.items() if len(v) == n}
    return xr.Dataset(data, coords={"epoch": ("epoch", np.arange(1, n + 1),
                                              {"long_name": "training epoch"})})


def json_safe(value):
    """``value`` (nested mappings, sequences, numpy arrays and scalars) made JSON-safe:
    dicts with str keys, lists, and Python scalars in place of numpy ones.
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def file_metadata(model) -> dict:
    """JSON-safe metadata a backend stores inside its native model file: the backend,
    spec, normalization, provenance, history and variables of ``model``."""
    history = None
    if model.history is not None:
        history = {k: model.history[k].values.tolist() for k in model.history.data_vars}
    return {"backend": model.backend, "spec": model.spec.to_dict(),
            "normalization": json_safe(model.normalization),
            "provenance": json_safe(model.provenance), "history": history,
            "variables": {"inputs": list(model.variables.inputs),
                          "outputs": list(model.variables.outputs),
                          "channels": model.variables.channels}}


def _netcdf_attr(value):
    """A netCDF-writable attribute value (scalars and strings as is, the rest as JSON)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return int(value)
    return json.dumps(json_safe(value))


def weights_to_dataset(weights: Sequence, model) -> xr.Dataset:
    """Pack per-layer ``(kernel, bias)`` into the NaN-padded model Dataset.

    Parameters
    ----------
    weights : sequence of (numpy.ndarray, numpy.ndarray)
        Per layer 1..L, ``kernel (out, in, K, K)`` and ``bias (out,)``
        (:meth:`xtl.nn.backends.base.Backend.get_weights`).
    model : xtl.nn.model.Model
        Their model: its spec, backend, normalization, provenance and history.
    """
    spec = model.spec
    L, K = spec.n_layers, spec.kernel_size
    cout_max, cin_max = max(spec.widths), max(spec.in_channels)
    kernel = np.full((L, cout_max, cin_max, K, K), np.nan, dtype=np.float32)
    bias = np.full((L, cout_max), np.nan, dtype=np.float32)
    for i, (w, b) in enumerate(weights):
        co, ci = w.shape[:2]
        kernel[i, :co, :ci] = pad_taps(w, K)
        bias[i, :co] = b
    taps = np.arange(K) - K // 2
    layer = np.arange(1, L + 1)
    ds = xr.Dataset(
        {
            "kernel": (("layer", "channel_out", "channel_in", "tap_y", "tap_x"), kernel, {
                "long_name": "convolution kernel (cross-correlation, centred taps)",
                "units": "1",
                "convention": "out[co,y,x] = bias[co] + sum kernel[co,ci,ty,tx] * "
                              "in[ci, y+tap_y, x+tap_x]",
            }),
            "bias": (("layer", "channel_out"), bias, {"long_name": "bias", "units": "1"}),
        },
        coords={
            "layer": ("layer", layer, {"long_name": "conv layer number (1 = input side)"}),
            "channel_out": np.arange(cout_max),
            "channel_in": np.arange(cin_max),
            "tap_y": ("tap_y", taps, {"long_name": "kernel tap offset in y", "units": "1"}),
            "tap_x": ("tap_x", taps, {"long_name": "kernel tap offset in x", "units": "1"}),
            "n_channels_out": ("layer", np.asarray(spec.widths, dtype=np.int32)),
            "n_channels_in": ("layer", np.asarray(spec.in_channels, dtype=np.int32)),
        },
    )
    if spec.kernel_sizes is not None:  # an imported network of mixed kernel sizes
        ds.coords["layer_kernel_size"] = ("layer", np.asarray(spec.kernel_sizes, np.int32), {
            "long_name": "the layer's own kernel size (its taps beyond it are zero)"})
    if model.history is not None:
        for name, var in model.history.data_vars.items():
            ds[name] = var
    attrs = {
        "title": "xtl closure network",
        "backend": model.backend,
        **model.variables.to_attrs(),
        "n_layers": L,
        "kernel_size": K,
        "padding": ",".join(spec.paddings) if spec.paddings else spec.padding,
        "activation": ",".join(spec.activations) if spec.activations else spec.activation,
        "precision": spec.precision,
        "channels": _netcdf_attr(spec.to_dict()["channels"]),
        **{f"norm_std_{k}": float(v) for k, v in model.normalization.items()},
        SPEC_ATTR: spec.to_json(),
        NORMALIZATION_ATTR: json.dumps(json_safe(model.normalization), sort_keys=True),
        PROVENANCE_ATTR: json.dumps(json_safe(model.provenance), sort_keys=True),
    }
    for key, value in model.provenance.items():
        attrs.setdefault(key, _netcdf_attr(value))
    ds.attrs.update(attrs)
    ds.attrs["model_id"] = _dataset_id(ds)
    return ds


def pad_taps(kernel: np.ndarray, size: int) -> np.ndarray:
    """``kernel (out, in, k, k)`` zero-padded to ``size × size`` taps, centred (the same
    cross-correlation: the added taps are zero)."""
    p = (size - kernel.shape[-1]) // 2
    return np.pad(kernel, ((0, 0), (0, 0), (p, p), (p, p))) if p else kernel


def crop_taps(kernel: np.ndarray, size: int, layer: int) -> np.ndarray:
    """The inverse of :func:`pad_taps`: the centred ``size × size`` taps of ``kernel``.

    Raises
    ------
    ValueError
        A tap outside them is not zero (the kernel is larger than ``size``).
    """
    p = (kernel.shape[-1] - size) // 2
    if not p:
        return kernel
    rim = np.ones(kernel.shape[-2:], bool)
    rim[p:p + size, p:p + size] = False
    if np.any(kernel[..., rim] != 0):
        raise ValueError(f"layer {layer}: its spec says {size}x{size} taps, but ds['kernel'] "
                         f"holds non-zero taps outside them (spec and weights disagree)")
    return kernel[..., p:p + size, p:p + size]


def model_metadata(ds: xr.Dataset) -> tuple:
    """``(spec, normalization, provenance, variables)`` from a model Dataset's attrs;
    ValueError if it is none."""
    if not isinstance(ds, xr.Dataset) or "kernel" not in ds or "bias" not in ds:
        raise ValueError(
            "ds must be a model Dataset with 'kernel' and 'bias' variables "
            "(from xtl.model_to_dataset)"
        )
    missing = [a for a in (SPEC_ATTR, NORMALIZATION_ATTR) if a not in ds.attrs]
    if missing:
        raise ValueError(f"ds.attrs lacks {missing}; was it written by xtl.model_to_dataset?")
    spec = NetworkSpec.from_any(json.loads(ds.attrs[SPEC_ATTR]))
    normalization = {k: float(v) for k, v in json.loads(ds.attrs[NORMALIZATION_ATTR]).items()}
    provenance = json.loads(ds.attrs.get(PROVENANCE_ATTR, "{}"))
    variables = Variables.from_attrs(ds.attrs)
    variables.levels(spec)  # the spec's channels must fit the variables
    return spec, normalization, provenance, variables


def _check_kernel_shape(kernel: xr.DataArray, spec: NetworkSpec) -> None:
    """ValueError unless ``kernel`` has the spec's layers, taps and at least its channels."""
    sizes = kernel.sizes
    if sizes["layer"] != spec.n_layers or sizes["tap_y"] != spec.kernel_size \
            or sizes["tap_x"] != spec.kernel_size:
        raise ValueError(
            f"ds['kernel'] has {sizes['layer']} layers of {sizes['tap_y']}x{sizes['tap_x']}-tap "
            f"kernels, but its spec says {spec.n_layers} layers of {spec.kernel_size}x"
            f"{spec.kernel_size}")
    for dim, wanted in (("channel_out", max(spec.widths)), ("channel_in", max(spec.in_channels))):
        if sizes[dim] < wanted:
            raise ValueError(f"ds['kernel'] has {sizes[dim]} {dim} channels, but its spec needs "
                             f"{wanted}")


def _held(block: np.ndarray, axis: int) -> int:
    """How many leading entries of ``block`` along ``axis`` hold a number (the last non-NaN + 1)."""
    finite = ~np.isnan(block)
    other = tuple(a for a in range(block.ndim) if a != axis)
    rows = np.flatnonzero(finite.any(axis=other)) if block.size else []
    return int(rows[-1]) + 1 if len(rows) else 0


def _check_layer(i: int, w: np.ndarray, b: np.ndarray, co: int, ci: int) -> None:
    """ValueError unless layer ``i``'s padded ``w (out, in, K, K)``, ``b (out,)`` hold numbers
    exactly in their first ``co`` out and ``ci`` in channels (NaN beyond them)."""
    held_out = max(_held(w, 0), _held(b, 0))
    held_in = _held(w, 1)
    if held_out > co or held_in > ci:
        raise ValueError(
            f"layer {i + 1}: its spec says {co} output and {ci} input channels, but ds['kernel'] "
            f"and ds['bias'] hold numbers in {held_out} output and {held_in} input channels; "
            "the padding beyond the spec's widths must be NaN (spec and weights disagree)")
    if np.isnan(w[:co, :ci]).any() or np.isnan(b[:co]).any():
        raise ValueError(f"layer {i + 1}: ds['kernel'] or ds['bias'] has NaN inside its spec's "
                         f"{co} output and {ci} input channels")


def check_model_id(ds: xr.Dataset) -> None:
    """ValueError unless ``ds.attrs["model_id"]`` (when present) is the hash of its content.

    The id hashes the kernels, biases, spec and normalization; a Dataset whose weights
    were changed after it was made keeps a stale id. One edited on purpose must drop
    its ``model_id`` attribute (:func:`xtl.nn.model.model_to_dataset` of the loaded
    model gives it a new one).
    """
    stored = ds.attrs.get("model_id")
    if stored is None:
        return
    actual = _dataset_id(ds)
    if str(stored) != actual:
        raise ValueError(
            f"ds.attrs['model_id'] is {stored!r}, but the Dataset's weights, spec and "
            f"normalization hash to {actual!r}: the model was changed after it was saved "
            "(drop its model_id attribute if the change is intended)")


def dataset_to_weights(ds: xr.Dataset, spec: NetworkSpec) -> list:
    """Unpack the NaN-padded kernels into per-layer ``(kernel, bias)`` arrays.

    The Dataset is checked whole: its layers, taps and channels agree with ``spec``
    (numbers exactly inside each layer's ``spec.widths`` output and ``spec.in_channels``
    input channels, NaN beyond), its ``n_channels_out``/``n_channels_in`` coordinates
    (when present) are the spec's, and its ``model_id`` (when present) is the hash of
    its content (:func:`check_model_id`).

    Raises
    ------
    ValueError
        Naming the layer and the counts, or the ``model_id``, that disagree.
    """
    kernel = ds["kernel"].transpose("layer", "channel_out", "channel_in", "tap_y", "tap_x")
    bias = ds["bias"].transpose("layer", "channel_out")
    _check_kernel_shape(kernel, spec)
    kernel = np.asarray(kernel.values, dtype=np.float32)
    bias = np.asarray(bias.values, dtype=np.float32)
    weights = []
    for i, (co, ci, k) in enumerate(zip(spec.widths, spec.in_channels, spec.layer_kernel_sizes)):
        _check_layer(i, kernel[i], bias[i], co, ci)
        w, b = crop_taps(kernel[i, :co, :ci], k, i + 1), bias[i, :co]
        weights.append((np.ascontiguousarray(w), np.ascontiguousarray(b)))
    for coord, wanted in (("n_channels_out", spec.widths), ("n_channels_in", spec.in_channels)):
        if coord in ds.coords and [int(v) for v in ds[coord].values] != list(wanted):
            raise ValueError(f"ds['{coord}'] is {[int(v) for v in ds[coord].values]}, but its "
                             f"spec says {list(wanted)} per layer")
    check_model_id(ds)
    return weights


def history_from_dataset(ds: xr.Dataset):
    """The training history (variables on ``epoch``) of a model Dataset, or None."""
    names = [n for n, v in ds.data_vars.items() if v.dims == ("epoch",)]
    return ds[names].load() if names else None


def _dataset_id(ds: xr.Dataset) -> str:
    """A short content hash of a model Dataset's weights, spec and normalization."""
    h = hashlib.sha256()
    for name in ("kernel", "bias"):
        h.update(np.ascontiguousarray(ds[name].values, dtype=np.float32).tobytes())
    h.update(ds.attrs[SPEC_ATTR].encode())
    h.update(ds.attrs[NORMALIZATION_ATTR].encode())
    return h.hexdigest()[:16]

