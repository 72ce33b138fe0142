"""The framework-neutral side of xtl's model backends.

This module defines

* :class:`NetworkSpec` -- the architecture of the closure CNN (depth, width,
  kernel size, padding, activation, precision), the paper's network by default;
* :class:`Model` -- xtl's wrapper of one trained network: the backend's name,
  the native object, the spec, the normalization and the provenance, so that
  analysis code never touches a deep-learning framework;
* :class:`Backend` -- the abstract base class of backends: the primitives a
  framework implements (build, weights, inference, training steps, save/load)
  and the framework-neutral methods built on them (physical-units prediction,
  model <-> Dataset, the training loop of :mod:`xtl.nn.backends.loop`);
* :func:`model_to_dataset` / :func:`model_from_dataset` -- the
  model-as-Dataset schema ``kernel(layer, channel_out, channel_in, tap_y,
  tap_x)`` and ``bias(layer, channel_out)`` (docs/training.md, "The model as data").

Nothing here imports a deep-learning framework.

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

import abc
import dataclasses
import hashlib
import importlib
import json
import threading
from importlib import metadata
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import xarray as xr

from ...data.io import FileFormatError, check_output_path, load_dataset, output_lock, write_dataset

__all__ = [
    "INPUTS",
    "OUTPUT",
    "PADDINGS",
    "PRECISIONS",
    "NetworkSpec",
    "Model",
    "Backend",
    "TrainingData",
    "model_to_dataset",
    "model_from_dataset",
    "model_id",
    "check_layers",
    "normalization_attrs",
    "history_to_dataset",
    "stack_inputs",
    "json_safe",
    "get_backend",
    "register_backend",
    "available_backends",
    "save_model",
    "load_model",
    "check_model_path",
]

#: The network's input variables, in channel order.
INPUTS = ("psi", "omega")
#: The network's output variable.
OUTPUT = "pi"
#: Supported padding modes: zeros (the paper) and periodic (the doubly periodic domain).
PADDINGS = ("zeros", "periodic")
#: Supported compute precisions ("mixed_*" keep float32 weights and a float32 output).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

_SPEC_ATTR = "xtl_spec"
_NORM_ATTR = "xtl_normalization"
_PROV_ATTR = "xtl_provenance"


# --------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class NetworkSpec:
    """Architecture of a fully convolutional closure network.

    The default is the network of Guan et al. (2022) / Subel et al. (2023):
    11 conv layers of 5×5 kernels, 64 filters, ReLU, the last layer linear
    with one filter; inputs (ψ̄, ω̄), output Π.

    Parameters
    ----------
    n_layers : int
        Number of conv layers ``L`` (>= 1). Layers are numbered 1..L from the
        input: layer 1 takes the 2 input channels, layer L gives 1 output channel.
    channels : int or tuple of int
        Output channels of the hidden layers 1..L-1: one int for all of them,
        or a tuple of ``L-1`` ints.
    kernel_size : int
        Odd kernel size ``K`` (square kernels, stride 1).
    padding : {"zeros", "periodic"}
        ``"zeros"`` pads with zeros (the paper); ``"periodic"`` wraps the
        field around, which is consistent with the doubly periodic domain.
    activation : str
        Activation of the hidden layers (a backend-known name, e.g. ``"relu"``);
        the last layer is linear.
    precision : {"float32", "mixed_float16", "mixed_bfloat16"}
        Compute precision. Mixed precision keeps float32 weights and output.
    """

    n_layers: int = 11
    channels: Any = 64
    kernel_size: int = 5
    padding: str = "zeros"
    activation: str = "relu"
    precision: str = "float32"

    def __post_init__(self):
        _validate_spec(self)
        if not isinstance(self.channels, int):
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @classmethod
    def from_any(cls, spec=None) -> "NetworkSpec":
        """Return a :class:`NetworkSpec` from ``None`` (the paper), a mapping or a spec.

        Parameters
        ----------
        spec : None, mapping or NetworkSpec
            ``None`` gives the paper's network; a mapping gives its keys as
            fields (unknown keys raise).

        Returns
        -------
        NetworkSpec
        """
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise TypeError(
                    f"spec has unknown keys {unknown}; expected a subset of {sorted(known)}"
                )
            return cls(**dict(spec))
        raise TypeError(
            f"spec must be None, a mapping or an xtl NetworkSpec, got {type(spec).__name__}"
        )

    @property
    def widths(self) -> tuple:
        """Output channels of layers 1..L (the last is always 1)."""
        if isinstance(self.channels, int):
            hidden = (self.channels,) * (self.n_layers - 1)
        else:
            hidden = tuple(self.channels)
        return hidden + (1,)

    @property
    def in_channels(self) -> tuple:
        """Input channels of layers 1..L (the first is always 2)."""
        return (len(INPUTS),) + self.widths[:-1]

    def to_dict(self) -> dict:
        """Return the spec as a JSON-safe dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if not isinstance(d["channels"], int):
            d["channels"] = list(d["channels"])
        return d

    def to_json(self) -> str:
        """Return the spec as a JSON string (stable key order)."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _validate_spec(spec: NetworkSpec) -> None:
    """Raise a TypeError/ValueError naming the first bad field of ``spec``."""
    n = spec.n_layers
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"spec.n_layers must be an int >= 1, got {n!r}")
    ch = spec.channels
    if isinstance(ch, (int, np.integer)) and not isinstance(ch, bool):
        if ch < 1:
            raise ValueError(f"spec.channels must be >= 1, got {ch!r}")
    else:
        try:
            chs = [int(c) for c in ch]
        except TypeError:
            raise TypeError(
                f"spec.channels must be an int or a sequence of {n - 1} ints, got {ch!r}"
            ) from None
        if len(chs) != n - 1 or any(c < 1 for c in chs):
            raise ValueError(
                f"spec.channels must be an int or {n - 1} ints >= 1 (one per hidden "
                f"layer), got {ch!r}"
            )
    k = spec.kernel_size
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"spec.kernel_size must be an odd int >= 1, got {k!r}")
    if spec.padding not in PADDINGS:
        raise ValueError(f"spec.padding must be one of {PADDINGS}, got {spec.padding!r}")
    if not isinstance(spec.activation, str) or not spec.activation:
        raise TypeError(f"spec.activation must be an activation name, got {spec.activation!r}")
    if spec.precision not in PRECISIONS:
        raise ValueError(f"spec.precision must be one of {PRECISIONS}, got {spec.precision!r}")


# -------------------------------------------------------------------------- model
@dataclass(eq=False)
class Model:
    """A trained (or freshly built) closure network, framework-neutral.

    Parameters
    ----------
    backend : str
        Registered name of the backend that owns ``native``.
    native : object
        The framework's model object (a ``keras.Model`` for ``"keras"``).
    spec : NetworkSpec
        The architecture.
    normalization : dict
        Training-set standard deviations ``{"psi": s, "omega": s, "pi": s}``:
        inputs are divided by theirs, the network output is multiplied by
        ``normalization["pi"]``.
    provenance : dict
        Where the model comes from (training case, sample count, base model,
        re-trained layers, seed, ...); JSON-safe values.
    history : xarray.Dataset, optional
        Training history over ``epoch`` (``loss``, ``val_loss``, ``epoch_time``).

    Notes
    -----
    A backend keeps its framework state of a model (compiled functions, the
    optimizer) itself, not here, so that a Model pickles (to dask workers) and
    deep-copies like plain data.
    """

    backend: str
    native: Any
    spec: NetworkSpec
    normalization: dict
    provenance: dict = field(default_factory=dict)
    history: xr.Dataset | None = None

    @property
    def n_layers(self) -> int:
        """Number of conv layers ``L``."""
        return self.spec.n_layers

    @property
    def n_les(self) -> int | None:
        """The LES grid the network was trained on (``provenance["grid"]``, square),
        or None when unknown (a network not trained by xtl)."""
        grid = (self.provenance or {}).get("grid")
        if isinstance(grid, (list, tuple)) and len(grid) == 2 and grid[0] == grid[1]:
            return int(grid[0])
        return None

    def predict(self, psi, omega, *, batch_size: int = 32) -> np.ndarray:
        """Π in physical units from physical ψ̄ and ω̄ (see :meth:`Backend.predict`)."""
        return get_backend(self.backend).predict(self, psi, omega, batch_size=batch_size)

    def to_dataset(self) -> xr.Dataset:
        """The model as a Dataset (see :func:`model_to_dataset`)."""
        return model_to_dataset(self)

    def save(self, path, *, overwrite: bool = False) -> tuple:
        """Save natively and as netCDF beside it (see :func:`xtl.nn.backends.save_model`).

        Parameters
        ----------
        path : str or path-like
            Native file name (``.keras`` for Keras); the Dataset goes to ``.nc``.
        overwrite : bool
            Replace existing files (default: raise FileExistsError).

        Returns
        -------
        tuple of Path
            ``(native_path, netcdf_path)``.
        """
        return save_model(self, path, overwrite=overwrite)


def check_layers(layers, n_layers: int, *, name: str = "layers") -> tuple:
    """Validate layer numbers against ``1..n_layers``.

    Parameters
    ----------
    layers : int or sequence of int
        Layer numbers (1 = the layer taking the inputs, ``n_layers`` = the output layer).
    n_layers : int
        Number of conv layers ``L`` of the network.
    name : str
        Argument name used in error messages.

    Returns
    -------
    tuple of int
        The sorted, de-duplicated layer numbers.

    Raises
    ------
    ValueError
        If a layer is outside ``1..n_layers`` or none are given.
    """
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(
            f"{name} must be an int or a sequence of ints in 1..{n_layers}, got {layers!r}")
    layers = list(layers)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in layers):
        raise TypeError(f"{name} must hold ints in 1..{n_layers}, got {layers!r}")
    out = [int(k) for k in layers]
    if not out:
        raise ValueError(f"{name} must name at least one layer in 1..{n_layers}")
    bad = [k for k in out if not 1 <= k <= n_layers]
    if bad:
        raise ValueError(
            f"{name} must be layer numbers in 1..{n_layers} (1 takes the inputs, "
            f"{n_layers} gives the output), got {bad}"
        )
    return tuple(sorted(set(out)))


# ---------------------------------------------------------------- training data
@runtime_checkable
class TrainingData(Protocol):
    """What a backend's ``fit`` consumes (implemented in :mod:`xtl.nn.training`).

    Inputs are normalized, channels-last ``(sample, y, x, 2)`` float32 arrays
    of (ψ̄, ω̄); targets ``(sample, y, x, 1)`` of Π. Streamed data may also
    offer ``ends(n) -> (x_first, y_first, x_last, y_last)``, the first and
    last ``n`` samples, which :func:`xtl.nn.backends.loop.data_digest` uses to
    fingerprint them cheaply.
    """

    n_samples: int
    grid: tuple
    in_memory: bool

    def arrays(self) -> tuple:
        """``(x, y)`` in memory (only when ``in_memory``)."""

    def batches(self, epoch: int, batch_size: int, seed: int, shuffle: bool) -> Iterator:
        """Yield ``(x, y)`` batches covering every sample once, shuffled per (seed, epoch)."""


# -------------------------------------------------------------------- backend
class Backend(abc.ABC):
    """A model backend: the primitives a deep-learning framework provides, and
    the framework-neutral methods xtl builds on them.

    A backend is registered under a name (see :func:`xtl.nn.backends.register_backend`
    or the ``xtl.backends`` entry-point group). All methods take and return
    xtl :class:`Model` objects and numpy arrays, never framework objects.

    Subclasses implement the abstract primitives:

    * building and weights: :meth:`build`, :meth:`clone`, :meth:`get_weights`,
      :meth:`set_weights`;
    * inference: :meth:`predict_normalized`, :meth:`activations`;
    * persistence: :meth:`save`, :meth:`load`;
    * training steps: :meth:`prepare_fit`, :meth:`train_epoch`,
      :meth:`get_state`, :meth:`set_state`.

    The training loop itself -- epochs, shuffling, early stopping, checkpoints,
    history, progress -- is shared (:func:`xtl.nn.backends.loop.fit`, called by
    :meth:`fit`). The Gauss–Newton and gradient recommenders
    (:mod:`xtl.explain.recommend`) also need :meth:`jvp` and :meth:`vjp`; a backend
    may override :meth:`evaluate`, :meth:`compiled_forward`, :meth:`end_epoch`,
    :meth:`end_fit`, :meth:`device` and :meth:`set_threads` where it has
    something better than the defaults.
    """

    #: Registered name; also stored in the models it makes.
    name: str = "base"
    #: Suffix of its native model files (``".keras"``).
    suffix: str = ""

    # -- building and weights (primitives) -------------------------------------
    @abc.abstractmethod
    def build(self, spec: NetworkSpec, normalization: dict | None = None, *,
              seed: int = 0) -> Model:
        """Build an untrained network from ``spec`` with seeded initial weights."""

    @abc.abstractmethod
    def clone(self, model: Model) -> Model:
        """An independent copy of ``model`` (same weights, spec, normalization)."""

    @abc.abstractmethod
    def get_weights(self, model: Model) -> list:
        """Per layer 1..L, ``(kernel (out, in, K, K), bias (out,))`` float32 numpy arrays
        (fresh copies: later training does not change them)."""

    @abc.abstractmethod
    def set_weights(self, model: Model, weights: Sequence) -> None:
        """Set the weights from :meth:`get_weights`' layout."""

    # -- inference (primitives) ------------------------------------------------
    @abc.abstractmethod
    def predict_normalized(self, model: Model, x: np.ndarray, *,
                           batch_size: int = 32) -> np.ndarray:
        """Network output ``(sample, y, x)`` for normalized inputs ``(sample, y, x, 2)``."""

    @abc.abstractmethod
    def activations(self, model: Model, x: np.ndarray, layers: Sequence[int], *,
                    batch_size: int = 32) -> dict:
        """``{layer: (sample, channel, y, x)}`` outputs of conv layers for normalized ``x``."""

    # -- persistence (primitives) ----------------------------------------------
    @abc.abstractmethod
    def save(self, model: Model, path) -> None:
        """Save in the native format (atomically)."""

    @abc.abstractmethod
    def load(self, path) -> Model:
        """Load a model saved by :meth:`save`."""

    # -- training steps (primitives of the shared loop) ------------------------
    @abc.abstractmethod
    def prepare_fit(self, model: Model, layers: tuple, options) -> None:
        """Get ``model`` ready to train: freeze the layers not in ``layers``, make the
        optimizer (and its state, so that :meth:`get_state` holds all of it), set up
        ``options.callbacks`` (backend-native) and ``options.deterministic``.

        Parameters
        ----------
        model : Model
        layers : tuple of int
            The conv layers to train (1..L); the others must stay bitwise unchanged.
        options : xtl.nn.backends.loop.FitOptions
            ``learning_rate``, ``deterministic``, ``callbacks``, ``epochs`` are used here.
        """

    @abc.abstractmethod
    def train_epoch(self, model: Model, batches, epoch: int, on_batch=None) -> float:
        """One epoch of gradient steps, one per batch, in the order given.

        Parameters
        ----------
        model : Model
            Prepared by :meth:`prepare_fit`.
        batches : iterable of (numpy.ndarray, numpy.ndarray)
            Normalized ``(x (n, y, x, 2), y (n, y, x, 1))`` float32 batches.
        epoch : int
            0-based epoch number (for backend-native callbacks).
        on_batch : callable, optional
            Called as ``on_batch(i, loss)`` after batch ``i``; ``loss`` is the running
            mean training loss, any scalar that ``float()`` converts (converting may
            wait for the device: call it rarely).

        Returns
        -------
        float
            The epoch's training loss: the MSE over its samples.
        """

    @abc.abstractmethod
    def get_state(self, model: Model) -> list:
        """The full training state of a prepared model as a list of numpy arrays:
        weights and optimizer state, enough for :meth:`set_state` to continue
        bitwise as if never interrupted."""

    @abc.abstractmethod
    def set_state(self, model: Model, state: Sequence) -> None:
        """Restore :meth:`get_state`'s arrays into a model prepared the same way."""

    # -- training: shared -------------------------------------------------------
    def fit(self, model: Model, train: TrainingData, validation, options, *,
            layers=None) -> dict:
        """Train ``model`` in place with the shared loop (:func:`xtl.nn.backends.loop.fit`).

        Parameters
        ----------
        model : Model
        train, validation : TrainingData
            Normalized training and (optional, None) validation data.
        options : xtl.nn.backends.loop.FitOptions
            Epochs, batch size, learning rate, seed, early stopping, checkpoints,
            progress, backend-native callbacks, determinism.
        layers : sequence of int, optional
            Conv layers to train (1..L); default all.

        Returns
        -------
        dict
            ``{"loss": [...], "val_loss": [...], "epoch_time": [...]}``.
        """
        from .loop import fit  # the loop drives the backend's primitives

        layers = None if layers is None else check_layers(layers, model.n_layers)
        return fit(self, model, train, validation, options, layers=layers)

    def evaluate(self, model: Model, data: TrainingData, batch_size: int = 32) -> float:
        """The MSE of the network output against the targets of ``data``.

        Parameters
        ----------
        model : Model
        data : TrainingData
            Normalized data, read once in order.
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        float
            The mean over all samples and grid points of the squared error.
        """
        forward = self.compiled_forward(model)
        total, count = 0.0, 0
        for x, y in data.batches(0, batch_size, 0, False):
            err = forward(x) - np.asarray(y, np.float32)[..., 0]
            total += float(np.sum(np.square(err, dtype=np.float64)))
            count += err.size
        if count == 0:
            raise ValueError("data must hold at least one sample, got none")
        return total / count

    def end_epoch(self, model: Model, epoch: int, logs: dict) -> bool:
        """Tell backend-native callbacks that ``epoch`` ended with ``logs``
        (``loss``, ``val_loss``); return True when one asks to stop. Default: False."""
        return False

    def end_fit(self, model: Model) -> None:
        """The fit is over: tell native callbacks, release per-fit state. Default: nothing."""

    # -- optional -----------------------------------------------------------------
    def jvp(self, model: Model, x: np.ndarray, layer: int, tangent, *,
            batch_size: int = 32) -> np.ndarray:
        """Output change ``(sample, y, x)`` along ``tangent = (kernel, bias)`` of one layer."""
        raise NotImplementedError(f"the {self.name!r} backend has no jvp (xtl.explain.recommend's "
                                  "Gauss-Newton recommender needs it)")

    def vjp(self, model: Model, x: np.ndarray, layer: int, cotangent, *,
            batch_size: int = 32) -> tuple:
        """``(kernel, bias)`` gradient of ``Σ cotangent · output`` w.r.t. one layer's weights."""
        raise NotImplementedError(f"the {self.name!r} backend has no vjp (xtl.explain.recommend's "
                                  "gradient recommenders need it)")

    def device(self) -> str:
        """The device the backend computes on (``"CPU"``, ``"GPU"``); default ``"unknown"``."""
        return "unknown"

    def set_threads(self, n: int) -> None:
        """Use at most ``n`` CPU threads; a backend without thread pools ignores it."""

    # -- inference and Datasets: shared ---------------------------------------------
    def compiled_forward(self, model: Model):
        """A callable ``f(x)`` = :meth:`predict_normalized` for many small calls.

        Backends override it with a faster path (a compiled graph, say); this
        default calls :meth:`predict_normalized`.

        Parameters
        ----------
        model : Model

        Returns
        -------
        callable
            Normalized inputs ``(sample, y, x, 2)`` to the output ``(sample, y, x)``.
        """
        return lambda x: self.predict_normalized(model, x)

    def predict(self, model: Model, psi, omega, *, batch_size: int = 32) -> np.ndarray:
        """Π in physical units from physical ψ̄ and ω̄.

        Parameters
        ----------
        model : Model
            The network; its stored normalization is applied: inputs are
            divided by the training-set standard deviations of ψ̄ and ω̄, the
            output is multiplied by that of Π.
        psi, omega : array_like
            Fields of the same shape ``(..., y, x)`` (numpy, DataArray or dask).
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        numpy.ndarray
            Π with the shape of ``psi`` (float32).
        """
        psi = np.asarray(psi, dtype=np.float32)
        omega = np.asarray(omega, dtype=np.float32)
        if psi.shape != omega.shape or psi.ndim < 2:
            raise ValueError(
                f"psi and omega must be arrays of the same shape (..., y, x), got "
                f"{psi.shape} and {omega.shape}"
            )
        shape = psi.shape
        x = stack_inputs(psi.reshape((-1,) + shape[-2:]), omega.reshape((-1,) + shape[-2:]),
                         model.normalization)
        out = self.predict_normalized(model, x, batch_size=batch_size)
        out = out * np.float32(model.normalization[OUTPUT])
        return out.reshape(shape).astype(np.float32, copy=False)

    def to_dataset(self, model: Model) -> xr.Dataset:
        """The model as a Dataset (see :func:`model_to_dataset`)."""
        return _weights_to_dataset(self.get_weights(model), model)

    def from_dataset(self, ds: xr.Dataset) -> Model:
        """Rebuild a model from a Dataset (see :func:`model_from_dataset`)."""
        spec, normalization, provenance = _attrs_to_meta(ds)
        model = self.build(spec, normalization, seed=0)
        model.provenance = provenance
        self.set_weights(model, _dataset_to_weights(ds, spec))
        model.history = _history_from_dataset(ds)
        return model


def stack_inputs(psi: np.ndarray, omega: np.ndarray, normalization: Mapping) -> np.ndarray:
    """Normalized channels-last network input ``(sample, y, x, 2)`` from ψ̄ and ω̄.

    Parameters
    ----------
    psi, omega : numpy.ndarray
        ``(sample, y, x)`` fields in physical units.
    normalization : mapping
        Standard deviations with keys ``"psi"`` and ``"omega"``.

    Returns
    -------
    numpy.ndarray
        float32 ``(sample, y, x, 2)``.
    """
    x = np.empty(psi.shape + (len(INPUTS),), dtype=np.float32)
    x[..., 0] = psi / np.float32(normalization["psi"])
    x[..., 1] = omega / np.float32(normalization["omega"])
    return x


# -------------------------------------------------------------------- digests
def normalization_attrs(normalization: Mapping) -> dict:
    """Human-readable ``norm_std_<var>`` attributes of a normalization dict.

    Parameters
    ----------
    normalization : mapping
        Standard deviations per variable, e.g. ``{"psi": s, "omega": s, "pi": s}``.

    Returns
    -------
    dict
        ``{"norm_std_psi": float, ...}``, one entry per key of ``normalization``.
    """
    return {f"norm_std_{k}": float(v) for k, v in normalization.items()}


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
    """``value`` with numpy scalars and arrays, tuples and non-str keys made JSON-safe.

    Parameters
    ----------
    value : object
        Mappings, sequences, numpy arrays and scalars, nested.

    Returns
    -------
    object
        Dicts with str keys, lists, and Python scalars in place of numpy ones.
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


def _netcdf_attr(value):
    """A netCDF-writable attribute value (scalars and strings as is, the rest as JSON)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        return int(value)
    return json.dumps(json_safe(value))


def _weights_to_dataset(weights: Sequence, model: Model) -> xr.Dataset:
    """Pack per-layer ``(kernel, bias)`` into the NaN-padded model Dataset."""
    spec = model.spec
    L, K = spec.n_layers, spec.kernel_size
    cout_max, cin_max = max(spec.widths), max(spec.in_channels)
    kernel = np.full((L, cout_max, cin_max, K, K), np.nan, dtype=np.float32)
    bias = np.full((L, cout_max), np.nan, dtype=np.float32)
    for i, (w, b) in enumerate(weights):
        co, ci = w.shape[:2]
        kernel[i, :co, :ci] = w
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
    if model.history is not None:
        for name, var in model.history.data_vars.items():
            ds[name] = var
    attrs = {
        "title": "xtl closure network",
        "backend": model.backend,
        "inputs": ",".join(INPUTS),
        "output": OUTPUT,
        "n_layers": L,
        "kernel_size": K,
        "padding": spec.padding,
        "activation": spec.activation,
        "precision": spec.precision,
        "channels": _netcdf_attr(spec.to_dict()["channels"]),
        **normalization_attrs(model.normalization),
        _SPEC_ATTR: spec.to_json(),
        _NORM_ATTR: json.dumps(json_safe(model.normalization), sort_keys=True),
        _PROV_ATTR: json.dumps(json_safe(model.provenance), sort_keys=True),
    }
    for key, value in model.provenance.items():
        attrs.setdefault(key, _netcdf_attr(value))
    ds.attrs.update(attrs)
    ds.attrs["model_id"] = _dataset_id(ds)
    return ds


def _attrs_to_meta(ds: xr.Dataset):
    """``(spec, normalization, provenance)`` from a model Dataset's attrs."""
    if not isinstance(ds, xr.Dataset) or "kernel" not in ds or "bias" not in ds:
        raise ValueError(
            "ds must be a model Dataset with 'kernel' and 'bias' variables "
            "(from xtl.model_to_dataset)"
        )
    missing = [a for a in (_SPEC_ATTR, _NORM_ATTR) if a not in ds.attrs]
    if missing:
        raise ValueError(f"ds.attrs lacks {missing}; was it written by xtl.model_to_dataset?")
    spec = NetworkSpec.from_any(json.loads(ds.attrs[_SPEC_ATTR]))
    normalization = {k: float(v) for k, v in json.loads(ds.attrs[_NORM_ATTR]).items()}
    provenance = json.loads(ds.attrs.get(_PROV_ATTR, "{}"))
    return spec, normalization, provenance


def _dataset_to_weights(ds: xr.Dataset, spec: NetworkSpec) -> list:
    """Unpack the NaN-padded kernels into per-layer ``(kernel, bias)`` arrays."""
    kernel = ds["kernel"].transpose("layer", "channel_out", "channel_in", "tap_y", "tap_x")
    bias = ds["bias"].transpose("layer", "channel_out")
    if kernel.sizes["layer"] != spec.n_layers or kernel.sizes["tap_y"] != spec.kernel_size:
        raise ValueError(
            f"ds['kernel'] has {kernel.sizes['layer']} layers of {kernel.sizes['tap_y']}-tap "
            f"kernels, but its spec says {spec.n_layers} layers of {spec.kernel_size}"
        )
    kernel = np.asarray(kernel.values, dtype=np.float32)
    bias = np.asarray(bias.values, dtype=np.float32)
    weights = []
    for i, (co, ci) in enumerate(zip(spec.widths, spec.in_channels)):
        w, b = kernel[i, :co, :ci], bias[i, :co]
        if np.isnan(w).any() or np.isnan(b).any():
            raise ValueError(f"ds['kernel'] or ds['bias'] has NaN inside layer {i + 1}")
        weights.append((np.ascontiguousarray(w), np.ascontiguousarray(b)))
    return weights


def _history_from_dataset(ds: xr.Dataset):
    """The training history (variables on ``epoch``) of a model Dataset, or None."""
    names = [n for n, v in ds.data_vars.items() if v.dims == ("epoch",)]
    if not names:
        return None
    return ds[names].load()


def _dataset_id(ds: xr.Dataset) -> str:
    """A short content hash of a model Dataset's weights, spec and normalization."""
    h = hashlib.sha256()
    for name in ("kernel", "bias"):
        h.update(np.ascontiguousarray(ds[name].values, dtype=np.float32).tobytes())
    h.update(ds.attrs[_SPEC_ATTR].encode())
    h.update(ds.attrs[_NORM_ATTR].encode())
    return h.hexdigest()[:16]


def model_to_dataset(model: Model) -> xr.Dataset:
    """The model as a labeled Dataset (xtl's model schema).

    Parameters
    ----------
    model : Model
        A model of any registered backend.

    Returns
    -------
    xarray.Dataset
        ``kernel(layer, channel_out, channel_in, tap_y, tap_x)`` and
        ``bias(layer, channel_out)`` (float32, NaN-padded where a layer has
        fewer channels), coordinates ``n_channels_out``/``n_channels_in`` per
        layer, the training history on ``epoch`` when known, and attrs with
        the architecture, the normalization (``norm_std_psi`` ...), the
        provenance and a content hash ``model_id``. Kernels are
        cross-correlations with centred taps (see the module docstring).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    return get_backend(model.backend).to_dataset(model)


def model_from_dataset(ds: xr.Dataset, *, backend: str | None = None) -> Model:
    """Rebuild a model from :func:`model_to_dataset`'s output (e.g. read from netCDF).

    Parameters
    ----------
    ds : xarray.Dataset
        A model Dataset.
    backend : str, optional
        Backend to rebuild with; default ``ds.attrs["backend"]``.

    Returns
    -------
    Model
        A model that predicts identically to the one ``ds`` was made from
        (optimizer state is not part of the Dataset).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    name = backend or ds.attrs.get("backend")
    if not name:
        raise ValueError("ds.attrs has no 'backend'; pass backend='keras' (or another name)")
    return get_backend(name).from_dataset(ds)


def model_id(model: Model) -> str:
    """A short content hash of the model's weights, spec and normalization.

    Parameters
    ----------
    model : Model

    Returns
    -------
    str
        16 hex digits; equal for models with bitwise equal weights.
    """
    return model_to_dataset(model).attrs["model_id"]


# ----------------------------------------------------------------- the registry
ENTRY_POINT_GROUP = "xtl.backends"
DEFAULT_BACKEND = "keras"

#: name -> Backend instance, Backend class, or "module:attr" string (resolved lazily).
_REGISTRY: dict = {"keras": "xtl.nn.backends.keras:KerasBackend"}
_INSTANCES: dict = {}
_LOCK = threading.Lock()


def _entry_points() -> dict:
    """``{name: "module:attr"}`` of the installed ``xtl.backends`` entry points."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list:
    """Names of the registered and installed backends.

    Returns
    -------
    list of str
        Sorted names usable with :func:`get_backend`.
    """
    return sorted(set(_REGISTRY) | set(_entry_points()))


def register_backend(name: str, backend, *, overwrite: bool = False) -> None:
    """Register a backend under ``name``.

    Parameters
    ----------
    name : str
        Name to look it up by (``get_backend(name)``, ``train(..., backend=name)``).
    backend : Backend instance, class, or str
        A :class:`Backend` instance, a subclass (instantiated without arguments
        on first use), or a ``"module:attr"`` path to either, imported and
        checked on first use.
    overwrite : bool
        Replace an existing registration of ``name`` (default: raise).

    Raises
    ------
    ValueError
        If ``name`` is taken and ``overwrite`` is false, or is not a non-empty str.
    TypeError
        If ``backend`` is none of the above.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not (isinstance(backend, (str, Backend))
            or (isinstance(backend, type) and issubclass(backend, Backend))):
        raise TypeError(
            "backend must be an xtl.nn.backends.Backend instance, a Backend subclass or a "
            f"'module:attr' string naming one; got {backend!r}"
        )
    missing = sorted(getattr(backend, "__abstractmethods__", ())) if isinstance(backend, type) \
        else []
    if missing:
        raise TypeError(f"backend {backend.__name__} does not implement the abstract "
                        f"Backend methods {missing}")
    with _LOCK:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"a backend named {name!r} is registered; pass overwrite=True")
        _REGISTRY[name] = backend
        _INSTANCES.pop(name, None)


def _resolve(obj):
    """Turn a registry entry into a Backend instance."""
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        obj = getattr(importlib.import_module(module), attr)
    if isinstance(obj, type):
        obj = obj()
    if not isinstance(obj, Backend):
        raise TypeError(f"backend {obj!r} is not an xtl.nn.backends.Backend (subclass "
                        "xtl.nn.backends.Backend and implement its abstract methods)")
    return obj


def get_backend(name=None) -> Backend:
    """Return the backend registered as ``name``.

    Parameters
    ----------
    name : str or Backend, optional
        A registered or entry-point name; default ``"keras"``. A Backend
        instance is returned as is.

    Returns
    -------
    Backend

    Raises
    ------
    ValueError
        If no backend has that name (the message lists the available ones).
    """
    if name is None:
        name = DEFAULT_BACKEND
    if not isinstance(name, str):
        if isinstance(name, Backend):
            return name
        raise TypeError(f"backend must be a backend name (str), got {type(name).__name__}")
    with _LOCK:
        if name in _INSTANCES:
            return _INSTANCES[name]
        entry = _REGISTRY.get(name)
        if entry is None:
            entry = _entry_points().get(name)
        if entry is None:
            raise ValueError(
                f"unknown backend {name!r}; available: {', '.join(available_backends())}. "
                "Register one with xtl.register_backend(name, backend) or the "
                f"'{ENTRY_POINT_GROUP}' entry-point group."
            )
        instance = _resolve(entry)
        _INSTANCES[name] = instance
        return instance


def _netcdf_path(path: Path) -> Path:
    return path.with_suffix(".nc")


def check_model_path(path, overwrite: bool = False, backend=None, argument: str = "path") -> tuple:
    """Validate where a model will be saved, before any training is done.

    Parameters
    ----------
    path : str or path-like
        The native file; its suffix must be the backend's (``.keras`` for Keras).
    overwrite : bool
        Whether existing files may be replaced.
    backend : str or Backend, optional
        Default ``"keras"``.
    argument : str
        Name of the argument, for the error messages (e.g. ``"--out"``).

    Returns
    -------
    tuple of Path
        ``(native_path, netcdf_path)`` (the model Dataset goes beside it, suffix ``.nc``).

    Raises
    ------
    ValueError
        If ``path`` has the wrong suffix.
    FileExistsError, IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError
        As :func:`xtl.data.io.check_output_path`, for either file.
    """
    backend = get_backend(backend)
    path = Path(path)
    if path.suffix != backend.suffix:
        raise ValueError(
            f"{argument} must end with {backend.suffix!r} for the {backend.name!r} backend "
            f"(its model Dataset goes beside it, as .nc), got {str(path)!r}"
        )
    nc = _netcdf_path(path)
    check_output_path(path, overwrite, argument=argument)
    check_output_path(nc, overwrite, argument=argument)
    return path, nc


def save_model(model: Model, path, *, overwrite: bool = False) -> tuple:
    """Save a model natively and, beside it, as a netCDF model Dataset.

    Parameters
    ----------
    model : Model
    path : str or path-like
        Native file name; its suffix must be the backend's (``.keras`` for
        Keras). The Dataset goes to the same name with suffix ``.nc``.
    overwrite : bool
        Replace existing files. Default False: raise if either file exists
        (checked before anything is written).

    Returns
    -------
    tuple of Path
        ``(native_path, netcdf_path)``. Both are written atomically.

    Raises
    ------
    FileExistsError
        If ``path`` or its ``.nc`` exists and ``overwrite`` is False.
    ValueError
        If ``path`` has the wrong suffix (:func:`check_model_path`).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    backend = get_backend(model.backend)
    path, nc = check_model_path(path, overwrite, backend)
    ds = model_to_dataset(model)
    with output_lock(path):  # a second writer is refused; a killed one's temp is swept
        backend.save(model, path)
        write_dataset(ds, nc, overwrite=overwrite)
    return path, nc


#: What a netCDF file that is not a model Dataset holds, by its variables.
_DATA_KINDS = ((("psi", "omega", "pi"), "an LES data file (psi, omega, pi)"),
               (("omega", "psi"), "a DNS file (omega, psi)"))


def _model_dataset(path: Path) -> xr.Dataset:
    """The model Dataset in the netCDF file ``path``; refuse a file that holds none."""
    ds = load_dataset(path)
    if "kernel" not in ds or "bias" not in ds:
        kind = next((what for names, what in _DATA_KINDS if all(v in ds for v in names)),
                    f"a netCDF file of the variables {sorted(map(str, ds.data_vars))}")
        raise FileFormatError(
            f"{path} is {kind}, not a model Dataset (needs the variables kernel, bias)")
    missing = [a for a in (_SPEC_ATTR, _NORM_ATTR) if a not in ds.attrs]
    if missing:
        raise FileFormatError(f"{path} has kernel and bias but lacks the attributes {missing}; "
                              "was it written by xtl.save_model?")
    return ds


def _backend_of(path: Path) -> str:
    """The registered backend whose native files end like ``path`` (the default first)."""
    names = sorted(available_backends(), key=lambda n: n != DEFAULT_BACKEND)
    suffixes = {name: getattr(get_backend(name), "suffix", None) for name in names}
    for name, suffix in suffixes.items():
        if suffix == path.suffix:
            return name
    known = ", ".join(f"{s} ({n})" for n, s in suffixes.items() if s)
    raise FileFormatError(
        f"{path}: no registered backend reads {path.suffix or 'suffix-less'!r} files; a model "
        f"is a .nc model Dataset or a native file: {known}")


def load_model(path, *, backend: str | None = None) -> Model:
    """Load a model from a native file or a netCDF model Dataset.

    Parameters
    ----------
    path : str or path-like
        A ``.nc`` file (written by :func:`save_model` or ``model_to_dataset(...)
        .to_netcdf``) or a backend-native file (``.keras``).
    backend : str, optional
        Backend to load with; default from the file (``.nc``: its ``backend``
        attribute; otherwise the backend whose suffix matches).

    Returns
    -------
    Model

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    xtl.data.io.FileFormatError
        (a ValueError) If ``path`` is a folder, or not a model file: the message
        names the file and what it is (not a zip archive, truncated, an LES data
        file, a Dataset without ``kernel``, ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"path {path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder, not a model file (a .nc model Dataset or "
                              "a backend's native file such as .keras)")
    if path.suffix != ".nc":
        return get_backend(backend or _backend_of(path)).load(path)
    ds = _model_dataset(path)
    if not (backend or ds.attrs.get("backend")):
        raise FileFormatError(f"{path} is a model Dataset without a 'backend' attribute; pass "
                              "backend='keras' (or another registered name)")
    try:
        return model_from_dataset(ds, backend=backend)
    except (KeyError, ValueError) as err:
        if isinstance(err, FileFormatError):
            raise
        raise FileFormatError(f"{path}: not a readable model Dataset ({err})") from err
