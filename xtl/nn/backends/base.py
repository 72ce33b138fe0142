"""The backend interface: the :class:`Backend` abstract base class, :class:`TrainingData`, the registry.

Backends are registered by name (:func:`register_backend`, the
``xtl.backends`` entry-point group) and looked up with :func:`get_backend`.
Nothing here imports a deep-learning framework.
"""
from __future__ import annotations

import abc
import importlib
import math
import threading
import weakref
from importlib import metadata
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import xarray as xr

from ..dataset import dataset_to_weights, history_from_dataset, model_metadata, weights_to_dataset
from ..spec import NetworkSpec, check_layers, stack_channels, unstack_channels

# ``Model`` in the annotations is xtl.nn.model.Model, which builds on this module.

__all__ = ["Backend", "ModelStates", "TrainingData", "ENTRY_POINT_GROUP", "check_normalization", "crop_targets", "DEFAULT_BACKEND", "get_backend",
           "register_backend", "available_backends"]


# ---------------------------------------------------------------- training data
@runtime_checkable
class TrainingData(Protocol):
    """What a backend's ``fit`` consumes (implemented in :mod:`xtl.nn.training`).

    Inputs are normalized, channels-last ``(sample, y, x, c_in)`` float32 arrays
    (by default c_in = 2: ψ̄, ω̄); targets ``(sample, y, x, c_out)`` (by default Π). Streamed data may also
    offer ``ends(n) -> (x_first, y_first, x_last, y_last)``, the first and
    last ``n`` samples, which :func:`xtl.nn.backends.loop.data_digest` uses to
    fingerprint them cheaply. Data with ``order(epoch, seed, shuffle)`` — the
    sample positions in the order ``batches`` yields them, its batches being
    consecutive runs of it — can be trained on a cached frozen prefix
    (:mod:`xtl.nn.backends.prefix`).
    """

    n_samples: int
    grid: tuple
    in_memory: bool

    def arrays(self) -> tuple:
        """``(x, y)`` in memory (only when ``in_memory``)."""

    def batches(self, epoch: int, batch_size: int, seed: int, shuffle: bool) -> Iterator:
        """Yield ``(x, y)`` batches covering every sample once, shuffled per (seed, epoch)."""


def check_normalization(normalization, variables) -> dict:
    """A standard deviation per variable of ``variables`` (inputs and outputs), each a
    finite float > 0; None gives all ones.

    Raises
    ------
    ValueError
        A variable missing, or a value not finite and positive.
    """
    names = variables.names
    if normalization is None:
        return dict.fromkeys(names, 1.0)
    missing = [k for k in names if k not in normalization]
    if missing:
        raise ValueError(f"normalization must have keys {list(names)}, missing {missing}")
    out = {k: float(normalization[k]) for k in names}
    for k, v in out.items():
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"normalization[{k!r}] must be a finite std > 0, got {v}")
    return out


def crop_targets(y, shrink: int):
    """Targets ``(sample, y, x, c)`` cut to the output of a network whose ``"valid"``
    layers lose ``shrink`` cells on each side (its centre; ``shrink=0``: unchanged)."""
    if not shrink:
        return y
    y = np.asarray(y)
    if min(y.shape[1:3]) <= 2 * shrink:
        raise ValueError(f"the network's 'valid' layers cut {shrink} cells from each side of "
                         f"its input, more than the grid {y.shape[1:3]} has")
    return y[:, shrink:-shrink, shrink:-shrink]


# -------------------------------------------------------------------- backend
class ModelStates:
    """A backend's framework state per :class:`~xtl.nn.model.Model` (compiled functions,
    a fit's optimizer), kept beside the framework-neutral Model rather than on it: an
    entry goes with its Model and is emptied when it was made for another native model."""

    def __init__(self):
        self._states = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, model) -> dict:
        """The state of ``model`` (a new one when its native model changed)."""
        with self._lock:
            state = self._states.get(model)
            if state is None or state["native"] is not model.native:
                state = self._states[model] = {"native": model.native}
            return state

    def fit_session(self, model):
        """What the backend's ``prepare_fit`` stored under ``"fit"`` for ``model``.

        Raises
        ------
        RuntimeError
            ``model`` is not prepared for training.
        """
        session = self.of(model).get("fit")
        if session is None:
            raise RuntimeError("model is not prepared for training; call prepare_fit(model, "
                               "layers, options) first (xtl.nn.backends.loop.fit does)")
        return session


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
              seed: int = 0, variables=None) -> Model:
        """Build an untrained network from ``spec`` with seeded initial weights, mapping
        ``variables`` (:class:`~xtl.nn.spec.Variables`; None: ψ̄, ω̄ → Π)."""

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
        """Network output ``(sample, y, x, c_out)`` for normalized inputs ``(sample, y, x, c_in)``."""

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

    # -- the frozen-prefix cache (optional primitive) ---------------------------
    def suffix_model(self, model: Model, first: int) -> Model:
        """Layers ``first..L`` of ``model`` as a network of their own, for training them
        on the cached output of layers 1..first−1 (:mod:`xtl.nn.backends.prefix`).

        The one primitive a backend adds for the cache (the activations entering
        layer ``first`` come from :meth:`activations`). It must

        * take normalized channels-last inputs ``(sample, y, x, C)`` with ``C =
          model.spec.in_channels[first - 1]``: the outputs of layer ``first − 1``
          after its activation, as :meth:`activations` gives them (transposed);
        * apply the padding, convolutions and activations of layers first..L exactly
          as ``model`` does, so that its output equals ``model``'s;
        * share the weights of those layers with ``model`` (the same variables or
          parameters, not copies): training it trains ``model``;
        * be a :class:`~xtl.nn.model.Model` of this backend whose ``spec`` is
          :func:`xtl.nn.spec.suffix_spec` ``(model.spec, first)``, on which every
          primitive of the loop (:meth:`prepare_fit`, :meth:`train_epoch`,
          :meth:`get_state`, :meth:`set_state`, :meth:`get_weights`,
          :meth:`set_weights`, :meth:`evaluate`) works, its layers numbered 1.. from
          ``first``.

        A backend without it trains uncached (the default raises NotImplementedError).
        """
        raise NotImplementedError(f"the {self.name!r} backend has no suffix_model (the "
                                  "frozen-prefix cache needs it; fits run uncached)")

    # -- training: shared -------------------------------------------------------
    def fit(self, model: Model, train: TrainingData, validation, options, *,
            layers=None) -> dict:
        """Train ``model`` in place with the shared loop: :func:`xtl.nn.backends.loop.fit`
        (its parameters and the history it returns); ``layers`` (1..L, default all)
        are checked here. When they are all ≥ l > 1, ``options.cache_prefix`` is on and
        the backend has :meth:`suffix_model` (and no layer pads ``"valid"``), layers
        1..l−1 are computed once and
        layers l..L trained on their cached output
        (:func:`xtl.nn.backends.prefix.fit_cached`; same result to float32 round-off).

        Raises
        ------
        ValueError
            A layer outside 1..L; a checkpoint of a different training.
        """
        from .loop import FitOptions, fit  # the loop drives the backend's primitives
        from .prefix import cacheable, fit_cached

        options = FitOptions.merge(options)
        layers = None if layers is None else check_layers(layers, model.n_layers)
        # a 'valid' network crops its targets by its whole shrink: it trains uncached
        if layers is not None and type(self).suffix_model is not Backend.suffix_model \
                and model.spec.shrink == 0 and cacheable(train, validation, options, layers):
            return fit_cached(self, model, train, validation, options, layers)
        return fit(self, model, train, validation, options, layers=layers)

    def evaluate(self, model: Model, data: TrainingData, batch_size: int = 32) -> float:
        """The MSE of the network output against the targets of ``data``.

        ``data`` (normalized) is read once in order, ``batch_size`` samples per
        forward pass; the result is the mean over all samples and grid points of
        the squared error.
        """
        forward = self.compiled_forward(model)
        total, count = 0.0, 0
        for x, y in data.batches(0, batch_size, 0, False):
            err = forward(x) - np.asarray(crop_targets(y, model.spec.shrink), np.float32)
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
        """Output change ``(sample, y, x, c_out)`` along ``tangent = (kernel, bias)`` of one layer."""
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

        ``f`` maps normalized inputs ``(sample, y, x, c_in)`` to the output
        ``(sample, y, x, c_out)``. Backends override it with a faster path (a compiled
        graph, say); this default calls :meth:`predict_normalized`.
        """
        return lambda x: self.predict_normalized(model, x)

    def predict(self, model: Model, *inputs, batch_size: int = 32):
        """The outputs in physical units from physical inputs.

        Parameters
        ----------
        model : Model
            The network; its normalization is applied (see :class:`~xtl.nn.model.Model`).
        *inputs : array_like
            One array per input variable (``model.variables.inputs``, in order), all
            of one shape ``(..., y, x)``, or ``(..., level, y, x)`` for a model with a
            channel dim (numpy, DataArray or dask).
        batch_size : int
            Samples per forward pass.

        Returns
        -------
        numpy.ndarray or tuple of numpy.ndarray
            Float32 output(s) of the inputs' shape: one array for one output
            variable, else a tuple in ``model.variables.outputs`` order.

        Raises
        ------
        ValueError
            Not one array per input, shapes that differ, or a level axis of the
            wrong size.
        """
        variables, levels = model.variables, model.levels
        arrays = [np.asarray(a, dtype=np.float32) for a in inputs]
        lead = 3 if variables.channels else 2
        if len(arrays) != len(variables.inputs) or arrays[0].ndim < lead \
                or any(a.shape != arrays[0].shape for a in arrays) \
                or (variables.channels and arrays[0].shape[-3] != levels):
            shape = "(..., level, y, x)" if variables.channels else "(..., y, x)"
            raise ValueError(
                f"predict takes one array per input {list(variables.inputs)}, all of one "
                f"shape {shape}" + (f" with {levels} levels" if variables.channels else "")
                + f"; got shapes {[a.shape for a in arrays]}")
        shape = arrays[0].shape
        fields = {name: a.reshape((-1, levels) + shape[-2:])
                  for name, a in zip(variables.inputs, arrays)}
        x = stack_channels(fields, variables.inputs, model.normalization)
        out = self.predict_normalized(model, x, batch_size=batch_size)
        outputs = unstack_channels(out, variables.outputs, model.normalization)
        shape = shape[:-2] + out.shape[1:3]  # smaller than the input after 'valid' layers
        result = tuple(outputs[name].reshape(shape).astype(np.float32, copy=False)
                       for name in variables.outputs)
        return result[0] if len(result) == 1 else result

    def to_dataset(self, model: Model) -> xr.Dataset:
        """The model as a Dataset (see :func:`xtl.nn.model.model_to_dataset`)."""
        return weights_to_dataset(self.get_weights(model), model)

    def from_dataset(self, ds: xr.Dataset) -> Model:
        """Rebuild a model from a Dataset (see :func:`xtl.nn.model.model_from_dataset`)."""
        spec, normalization, provenance, variables = model_metadata(ds)
        model = self.build(spec, normalization, seed=0, variables=variables)
        model.provenance = provenance
        self.set_weights(model, dataset_to_weights(ds, spec))
        model.history = history_from_dataset(ds)
        return model


# ----------------------------------------------------------------- the registry
ENTRY_POINT_GROUP = "xtl.backends"
DEFAULT_BACKEND = "keras"

#: name -> Backend instance, Backend class, or "module:attr" string (resolved lazily).
_REGISTRY: dict = {"keras": "xtl.nn.backends.keras:KerasBackend",
                   "torch": "xtl.nn.backends.torch:TorchBackend"}
_INSTANCES: dict = {}
_LOCK = threading.Lock()


def _entry_points() -> dict:
    """``{name: "module:attr"}`` of the installed ``xtl.backends`` entry points."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list:
    """Sorted names of the registered and installed backends."""
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
        entry = _REGISTRY.get(name) or _entry_points().get(name)
        if entry is None:
            raise ValueError(
                f"unknown backend {name!r}; available: {', '.join(available_backends())}. "
                "Register one with xtl.register_backend(name, backend) or the "
                f"'{ENTRY_POINT_GROUP}' entry-point group."
            )
        instance = _resolve(entry)
        _INSTANCES[name] = instance
        return instance

