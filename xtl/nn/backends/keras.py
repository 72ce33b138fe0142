"""Keras 3 (TensorFlow) backend: the paper's CNN closure and its training.

Keras and TensorFlow are imported lazily, on the first call that needs them,
so that importing this module (and :mod:`xtl`) stays cheap.

The network (see :class:`~xtl.nn.spec.NetworkSpec`) is ``L`` Conv2D
layers named ``conv_1`` .. ``conv_L``; with ``padding="periodic"`` each is
preceded by a ``PeriodicPad2D`` helper layer (wrap-around padding written
with ``keras.ops``) and uses ``padding="valid"``; with ``padding="zeros"``
it uses Keras' ``padding="same"``. Layer numbers count conv layers only.
The input shape is ``(None, None, 2)``: one network works on any grid size.

Training is the shared loop of :mod:`xtl.nn.backends.loop`; this backend gives
it its primitives: :meth:`KerasBackend.prepare_fit` (freeze layers, Adam on
the MSE, Keras' train step compiled as ``keras.Model.fit`` compiles it),
:meth:`~KerasBackend.train_epoch` (one step per batch, calling Keras
callbacks as ``fit`` does) and :meth:`~KerasBackend.get_state` /
:meth:`~KerasBackend.set_state` (weights and Adam state, for a bitwise resume).
Its per-model state (compiled functions, the train step) lives in a
weak-keyed table here, not on the Model.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.netcdf import FileFormatError
from ...data.files import atomic_path
from .loop import FitOptions
from ..spec import NetworkSpec, Variables, check_layers, leaky_slope, suffix_spec
from .base import Backend, ModelStates, check_normalization, crop_targets
from ..model import Model
from ..dataset import file_metadata, history_to_dataset
from ..importing import ImportedLayers, check_import

__all__ = ["KerasBackend"]

_META_ENTRY = "xtl.json"


# --------------------------------------------------------------- lazy imports
#: Lines TensorFlow's C++ runtime writes to stderr while it is being imported, before
#: any logging setting applies (``TF_CPP_MIN_LOG_LEVEL`` filters only later messages).
_IMPORT_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cudart_stub\.cc|Could not find cuda drivers|cpu_feature_guard\.cc"
    r"|To enable the following instructions|rebuild TensorFlow with the appropriate compiler"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|TF-TRT Warning"
)


@contextlib.contextmanager
def _filtered_stderr(pattern):
    """Capture what is written to file descriptor 2 and replay the lines ``pattern`` misses.

    File-descriptor level, so it catches C++ output (and works in a Jupyter
    kernel, which forwards descriptor 2 to the notebook).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not pattern.search(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


def _tf():
    """Import TensorFlow without its import-time log lines (other output is kept).

    Once TensorFlow is loaded, importing PyTorch's ``triton`` crashes the process (both
    load their own LLVM); unless it is loaded already, it is marked as missing, so that
    PyTorch, which imports it lazily, runs without it (see docs/own-network.md).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with _filtered_stderr(_IMPORT_CHATTER):
            import tensorflow  # noqa: F401
    sys.modules.setdefault("triton", None)  # an import of it raises ImportError
    return sys.modules["tensorflow"]


def _keras():
    """Import Keras 3 on the TensorFlow backend."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _tf()
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"the xtl 'keras' backend needs KERAS_BACKEND=tensorflow, got "
            f"{keras.backend.backend()!r}"
        )
    return keras


@functools.lru_cache(maxsize=None)
def _custom_objects() -> dict:
    """Define (once) and register xtl's helper layers."""
    keras = _keras()
    ops = keras.ops

    @keras.saving.register_keras_serializable(package="xtl", name="PeriodicPad2D")
    class PeriodicPad2D(keras.layers.Layer):
        """Pad a channels-last ``(batch, y, x, c)`` tensor periodically by ``pad`` cells."""

        def __init__(self, pad: int, **kwargs):
            super().__init__(**kwargs)
            self.pad = int(pad)

        def call(self, x):
            p = self.pad
            if p == 0:
                return x
            x = ops.concatenate([x[:, -p:], x, x[:, :p]], axis=1)
            return ops.concatenate([x[:, :, -p:], x, x[:, :, :p]], axis=2)

        def compute_output_shape(self, shape):
            grow = lambda n: None if n is None else n + 2 * self.pad  # noqa: E731
            return (shape[0], grow(shape[1]), grow(shape[2]), shape[3])

        def get_config(self):
            return {**super().get_config(), "pad": self.pad}

    @keras.saving.register_keras_serializable(package="xtl", name="ReflectPad2D")
    class ReflectPad2D(PeriodicPad2D):
        """Pad a channels-last ``(batch, y, x, c)`` tensor by mirroring ``pad`` cells
        at each edge (the edge cell itself not repeated, as ``numpy.pad(mode="reflect")``)."""

        def call(self, x):
            p = self.pad
            return ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect") if p else x

    return {"PeriodicPad2D": PeriodicPad2D, "ReflectPad2D": ReflectPad2D}


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU (it then places the network on it)."""
    return bool(_tf().config.list_physical_devices("GPU"))


@functools.lru_cache(maxsize=None)
def _quiet_retracing() -> None:
    """Drop TensorFlow's 'triggered tf.function retracing' warning.

    Every xtl model gets its own Keras train function; TensorFlow counts those
    as retracings of one function and warns, which is noise here.
    """
    import logging

    logging.getLogger("tensorflow").addFilter(
        lambda record: "triggered tf.function retracing" not in record.getMessage())


@functools.lru_cache(maxsize=None)
def _pin_tf_threads(n: int) -> None:
    if n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n}")
    tf = _tf()
    threading = tf.config.threading
    if threading.get_intra_op_parallelism_threads() == n:
        return
    try:
        threading.set_intra_op_parallelism_threads(n)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime already started: its pools are fixed
        warnings.warn(f"TensorFlow already started with "
                      f"{threading.get_intra_op_parallelism_threads() or 'all'} intra-op "
                      f"threads; could not pin it to {n}", RuntimeWarning, stacklevel=3)


# ----------------------------------------------------------------- the backend
class KerasBackend(Backend):
    """The Keras 3 / TensorFlow backend (registered as ``"keras"``).

    See :class:`xtl.nn.backends.base.Backend` for the methods' contracts.
    """

    name = "keras"
    suffix = ".keras"

    # -- building -------------------------------------------------------------
    def build(self, spec, normalization=None, *, seed: int = 0, variables=None) -> Model:
        """Build an untrained network from ``spec`` with seeded Glorot-uniform weights.

        Parameters
        ----------
        spec : NetworkSpec, mapping or None
            The architecture (None: the paper's).
        normalization : dict, optional
            A standard deviation per variable; default all 1.
        seed : int
            Seed of the initial weights (layer ``k`` uses ``seed * 1000 + k``).
        variables : Variables, mapping, optional
            What the network maps (default ψ̄, ω̄ → Π); the spec's input and output
            channels must fit it.
        """
        keras = _keras()
        spec = NetworkSpec.from_any(spec)
        variables = Variables.from_any(variables)
        variables.levels(spec)
        normalization = check_normalization(normalization, variables)
        native = _build_native(keras, spec, int(seed))
        return Model(self.name, native, spec, normalization,
                     provenance={"seed": int(seed)}, variables=variables)

    def clone(self, model: Model) -> Model:
        """An independent copy of ``model`` with bitwise equal weights."""
        keras = _keras()
        native = _build_native(keras, model.spec, 0)
        native.set_weights(model.native.get_weights())
        return Model(self.name, native, model.spec, dict(model.normalization),
                     provenance=json.loads(json.dumps(model.provenance)),
                     history=None if model.history is None else model.history.copy(deep=True),
                     variables=model.variables)

    def set_threads(self, n: int) -> None:
        """Pin TensorFlow's thread pools: ``n`` intra-op threads, one inter-op thread.

        TensorFlow fixes its pools when its runtime starts, so this takes effect
        only before the process's first TensorFlow operation; later calls with
        another ``n`` warn and change nothing.

        Parameters
        ----------
        n : int
            Threads, >= 1 (a dask worker passes the threads it was given).
        """
        _pin_tf_threads(int(n))

    def suffix_model(self, model: Model, first: int) -> Model:
        """Layers ``first..L`` of ``model`` (their padding helpers too) as a Keras model
        taking the activations entering layer ``first``, sharing the layer objects,
        so their weights, with ``model`` (see :meth:`Backend.suffix_model`)."""
        keras = _keras()
        spec = suffix_spec(model.spec, first)
        native = model.native
        # past the last part (padding, conv, activation layer) of layer first-1
        start = 1 + max(i for i, layer in enumerate(native.layers)
                        if _layer_number(layer.name) == first - 1)
        inputs = keras.Input(shape=(None, None, spec.input_channels), name="prefix_output")
        x = inputs
        for layer in native.layers[start:]:
            x = layer(x)
        sub = keras.Model(inputs, x, name=f"xtl_cnn_from_layer{first}")
        return Model(self.name, sub, spec, dict(model.normalization),
                     provenance={"suffix_of_layer": int(first)}, variables=model.variables)

    # -- weights --------------------------------------------------------------
    def device(self) -> str:
        """``"GPU"`` when TensorFlow sees a GPU (it then trains there), else ``"CPU"``."""
        return "GPU" if gpu_available() else "CPU"

    def conv_layers(self, model: Model) -> list:
        """The Keras Conv2D layers of ``model``, numbered 1..L from the input."""
        keras = _keras()
        return [layer for layer in model.native.layers
                if isinstance(layer, keras.layers.Conv2D)]

    def get_weights(self, model: Model) -> list:
        """Per layer, ``(kernel (out, in, K, K), bias (out,))`` float32 numpy arrays."""
        out = []
        for layer in self.conv_layers(model):
            w, *b = layer.get_weights()  # (K, K, in, out), (out,) when it has a bias
            b = b[0] if b else np.zeros(w.shape[-1], np.float32)
            out.append((np.ascontiguousarray(np.transpose(w, (3, 2, 0, 1)), np.float32),
                        np.asarray(b, np.float32)))
        return out

    def set_weights(self, model: Model, weights) -> None:
        """Set weights given in :meth:`get_weights`' layout."""
        convs = self.conv_layers(model)
        if len(weights) != len(convs):
            raise ValueError(f"weights must hold {len(convs)} layers, got {len(weights)}")
        for k, (layer, (w, b)) in enumerate(zip(convs, weights), 1):
            w = np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0))
            shape = tuple(layer.kernel.shape)
            if w.shape != shape:
                raise ValueError(f"layer {k}: kernel of shape {w.shape} does not fit {shape}")
            b = np.asarray(b, np.float32)
            if not layer.use_bias and np.any(b != 0):
                raise ValueError(f"layer {k} has no bias, but its weights give one that is not 0")
            layer.set_weights([w, b] if layer.use_bias else [w])

    # -- training steps (the loop is xtl.nn.backends.loop's) ------------------------
    def prepare_fit(self, model: Model, layers, options: FitOptions) -> None:
        """Freeze the layers not in ``layers`` (checked by :meth:`Backend.fit`), compile
        Adam on the MSE and a train step (see :meth:`Backend.prepare_fit`).

        ``options.deterministic`` turns TensorFlow's deterministic ops on
        (process-wide); ``options.callbacks`` are Keras callbacks, called as in
        ``keras.Model.fit``.
        """
        keras, tf = _keras(), _tf()
        _quiet_retracing()
        if options.deterministic:  # process-wide; it also turns XLA auto-jit off
            tf.config.experimental.enable_op_determinism()
        trainable = set(layers)
        for k, layer in enumerate(self.conv_layers(model), 1):
            layer.trainable = k in trainable
        native = model.native
        optimizer = keras.optimizers.Adam(learning_rate=float(options.learning_rate))
        if model.spec.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        native.compile(optimizer=optimizer, loss="mse")
        optimizer.build(native.trainable_variables)  # its state exists before the first step
        # Keras' own train step (loss tracker, loss scaling), compiled as Model.fit does
        step = _TrainStep(lambda x, y: native.train_step((x, y)), bool(native.jit_compile))
        callbacks = keras.callbacks.CallbackList(list(options.callbacks), model=native,
                                                 epochs=options.epochs, verbose=0)
        native.stop_training = False
        _model_state(model)["fit"] = _FitSession(step, optimizer, callbacks)
        callbacks.on_train_begin()

    def train_epoch(self, model: Model, batches, epoch: int, on_batch=None) -> float:
        """One epoch of Adam steps over ``batches`` (see :meth:`Backend.train_epoch`).

        Steps are dispatched without waiting for the device unless ``on_batch``
        or a Keras callback with a batch hook needs the loss after each batch.
        """
        tf = _tf()
        session = _fit_session(model)
        native = model.native
        native.reset_metrics()
        session.callbacks.on_epoch_begin(epoch)
        logs = None
        for i, (x, y) in enumerate(batches):
            session.callbacks.on_train_batch_begin(i)
            y = crop_targets(y, model.spec.shrink)
            logs = session.step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
            session.callbacks.on_train_batch_end(i, logs)
            if on_batch is not None:
                on_batch(i, logs["loss"])
            if native.stop_training:
                break
        if logs is None:
            raise ValueError("batches must yield at least one (x, y) batch, got none")
        return float(logs["loss"])

    def end_epoch(self, model: Model, epoch: int, logs: dict) -> bool:
        """Call the Keras callbacks' ``on_epoch_end``; True if one set ``stop_training``."""
        _fit_session(model).callbacks.on_epoch_end(epoch, dict(logs))
        return bool(model.native.stop_training)

    def end_fit(self, model: Model) -> None:
        """Call the Keras callbacks' ``on_train_end`` and drop the fit's train step."""
        session = _model_state(model).pop("fit", None)
        if session is not None:
            session.callbacks.on_train_end()

    def get_state(self, model: Model) -> list:
        """All weights (frozen ones too) and the optimizer's variables (moments, step,
        loss scale) of a model prepared by :meth:`prepare_fit`, as numpy arrays."""
        session = _fit_session(model)
        return ([np.asarray(w) for w in model.native.get_weights()]
                + [np.asarray(v.numpy()) for v in session.optimizer.variables])

    def set_state(self, model: Model, state) -> None:
        """Restore :meth:`get_state`'s arrays."""
        session = _fit_session(model)
        native, variables = model.native, session.optimizer.variables
        n_w = len(native.weights)
        if len(state) != n_w + len(variables):
            raise ValueError(f"state must hold {n_w + len(variables)} arrays ({n_w} weights and "
                             f"{len(variables)} optimizer variables), got {len(state)}")
        native.set_weights(list(state[:n_w]))
        for v, value in zip(variables, state[n_w:]):
            v.assign(value)

    # -- inference ------------------------------------------------------------
    def predict_normalized(self, model: Model, x: np.ndarray, *,
                           batch_size: int = 32) -> np.ndarray:
        """Network output ``(sample, y, x, c_out)`` for normalized inputs ``(sample, y, x, c_in)``."""
        x = _check_input(x, model.spec)
        fn = _forward_fn(model, None)
        out = [fn(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]
        if not out:
            return np.zeros(x.shape[:3] + (model.spec.output_channels,), np.float32)
        return np.concatenate(out, axis=0)

    def compiled_forward(self, model: Model):
        """:meth:`predict_normalized` as a ``tf.function``, for many small calls.

        An a posteriori LES calls the network once per time step on one field,
        where the eager call costs several times the convolutions. The function
        is traced once per model (any batch and grid size, float32), cached with
        it, and returns float32 numpy outputs ``(sample, y, x, c_out)``.
        """
        cache = _model_state(model)
        fn = cache.get("compiled")
        if fn is None:
            tf = _tf()
            native = model.native
            graph = tf.function(lambda x: tf.cast(native(x, training=False), tf.float32),
                                input_signature=[tf.TensorSpec(
                                    [None, None, None, model.spec.input_channels], tf.float32)])

            def fn(x):
                return graph(tf.constant(_check_input(x, model.spec))).numpy()

            cache["compiled"] = fn
        return fn

    def jvp(self, model: Model, x: np.ndarray, layer: int, tangent, *,
            batch_size: int = 32) -> np.ndarray:
        """Change of the network output along a direction of one layer's weights.

        Parameters
        ----------
        x : numpy.ndarray
            Normalized inputs ``(sample, y, x, c_in)``.
        layer : int
            Layer number in 1..L.
        tangent : (kernel, bias)
            The direction, in :meth:`get_weights`' layout ``(out, in, K, K)``, ``(out,)``.

        Returns
        -------
        numpy.ndarray
            ``J t``: the output's directional derivative ``(sample, y, x, c_out)``.
        """
        tf = _tf()
        conv = self.conv_layers(model)[check_layers(layer, model.n_layers)[0] - 1]
        tk = tf.constant(np.transpose(np.asarray(tangent[0], np.float32), (2, 3, 1, 0)))
        tb = tf.constant(np.asarray(tangent[1], np.float32))
        x = _check_input(x, model.spec)
        primals, tangents = [conv.kernel.value], [tk]
        if conv.use_bias:
            primals, tangents = primals + [conv.bias.value], tangents + [tb]
        out = []
        for i in range(0, len(x), batch_size):
            with tf.autodiff.ForwardAccumulator(primals=primals, tangents=tangents) as acc:
                y = model.native(tf.constant(x[i:i + batch_size]), training=False)
            out.append(np.asarray(acc.jvp(y)))
        return np.concatenate(out, axis=0)

    def vjp(self, model: Model, x: np.ndarray, layer: int, cotangent, *,
            batch_size: int = 32) -> tuple:
        """Pull an output cotangent back onto one layer's weights.

        Parameters
        ----------
        x, layer :
            As in :meth:`jvp`.
        cotangent : numpy.ndarray
            ``(sample, y, x, c_out)``, like the output.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``Jᵀ u`` as ``(kernel (out, in, K, K), bias (out,))`` float64: the gradient
            of ``Σ u · output`` with respect to the layer's weights.
        """
        tf = _tf()
        conv = self.conv_layers(model)[check_layers(layer, model.n_layers)[0] - 1]
        x = _check_input(x, model.spec)
        u = np.asarray(cotangent, np.float32)
        shape = x.shape[:3] + (model.spec.output_channels,)
        if u.shape != shape:
            raise ValueError(f"cotangent must have the output's shape {shape}, got {u.shape}")
        gk, gb = 0.0, 0.0
        for i in range(0, len(x), batch_size):
            with tf.GradientTape() as tape:
                y = model.native(tf.constant(x[i:i + batch_size]), training=False)
                total = tf.reduce_sum(tf.cast(y, tf.float32)
                                      * tf.constant(u[i:i + batch_size]))
            k, *b = tape.gradient(total, [conv.kernel] + ([conv.bias] if conv.use_bias else []))
            gk = gk + np.asarray(k, np.float64)
            gb = gb + (np.asarray(b[0], np.float64) if b else np.zeros(conv.filters))
        return np.transpose(gk, (3, 2, 0, 1)), np.asarray(gb)

    def activations(self, model: Model, x: np.ndarray, layers, *,
                    batch_size: int = 32) -> dict:
        """Outputs ``{layer: (sample, channel, y, x)}`` of conv layers (after their activation).

        Parameters
        ----------
        x : numpy.ndarray
            Normalized inputs ``(sample, y, x, c_in)``.
        layers : sequence of int
            Layer numbers in 1..L.

        Returns
        -------
        dict
            float32 arrays; the last layer's is the normalized network output.
        """
        layers = check_layers(layers, model.n_layers)
        x = _check_input(x, model.spec)
        fn = _forward_fn(model, layers)
        parts = {k: [] for k in layers}
        for i in range(0, len(x), batch_size):
            outs = fn(x[i:i + batch_size])
            for k, a in zip(layers, outs):
                parts[k].append(np.transpose(a, (0, 3, 1, 2)))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    # -- importing ------------------------------------------------------------
    def from_native(self, native, variables, normalization) -> Model:
        """An xtl Model of a Keras model's conv layers (see :func:`xtl.from_keras`).

        Batch normalizations are folded into the convolutions before them; the layers
        are rebuilt as xtl's network with the same weights, which must predict what
        ``native`` predicts on a random input (else a ValueError).
        """
        keras = _keras()
        if not isinstance(native, keras.Model):
            raise TypeError(f"model must be a keras.Model (Sequential or functional), got "
                            f"{type(native).__name__}")
        layers = ImportedLayers("Keras", known=functools.partial(_keras_activation, keras))
        for layer in _flat_layers(keras, native):
            _read_layer(keras, layer, layers)
        spec, weights = layers.spec_and_weights(variables)
        model = self.build(spec, normalization, variables=variables)
        self.set_weights(model, weights)
        x = _probe_input(native, spec)
        error = check_import(np.asarray(native(x, training=False)),
                             self.predict_normalized(model, x), "Keras")
        model.provenance = {"kind": "imported", "framework": "keras", "source": native.name,
                            "folded_batchnorm": [n for c in layers.convs for n in c.folded],
                            "import_error": error}
        return model

    # -- persistence ----------------------------------------------------------
    def save(self, model: Model, path) -> None:
        """Save as a ``.keras`` archive with xtl's metadata inside (atomic).

        The archive gets an extra ``xtl.json`` entry holding the spec,
        normalization, provenance and history; Keras ignores it on load.
        """
        path = Path(path)
        if path.suffix != self.suffix:
            raise ValueError(f"path must end with '.keras', got {path}")
        with atomic_path(path, suffix=".keras") as tmp:  # Keras wants the suffix
            with warnings.catch_warnings():  # Keras-internal numpy-2 copy= notice
                warnings.filterwarnings("ignore", message=r"__array__ implementation",
                                        category=DeprecationWarning)
                model.native.save(tmp)
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(_META_ENTRY, json.dumps(_meta(model)))

    def load(self, path) -> Model:
        """Load a ``.keras`` archive written by :meth:`save`.

        A file that is not one (not a zip archive, truncated, damaged, without
        xtl's metadata) raises :class:`xtl.data.netcdf.FileFormatError` naming it, before
        Keras is imported.
        """
        path = Path(path)
        meta = _archive_metadata(path)
        keras = _keras()
        try:
            native = keras.saving.load_model(path, compile=False,
                                             custom_objects=_custom_objects())
        except Exception as err:  # a damaged archive: Keras raises many kinds
            raise FileFormatError(f"{path} is a damaged Keras model archive (Keras could not "
                                  f"load it: {type(err).__name__}: {err})") from err
        history = history_to_dataset(meta["history"]) if meta.get("history") else None
        return Model(self.name, native, NetworkSpec.from_any(meta["spec"]),
                     meta["normalization"], meta.get("provenance", {}), history,
                     Variables.from_any(meta.get("variables")))


# ------------------------------------------------------------------ internals
def _flat_layers(keras, native) -> list:
    """The layers of ``native`` in order, nested models opened."""
    out = []
    for layer in native.layers:
        out.extend(_flat_layers(keras, layer) if isinstance(layer, keras.Model) else [layer])
    return out


def _activation_name(layer) -> str:
    """xtl's name of the activation of a Keras ``Conv2D`` or ``Activation`` layer: its
    serialized name, else its function's name (``"<lambda>"`` for one)."""
    activation = layer.get_config()["activation"]
    if not isinstance(activation, str):
        activation = getattr(layer.activation, "__name__", repr(layer.activation))
    return {"swish": "silu", "leaky_relu": "leaky_relu(0.2)"}.get(activation, activation)


def _read_layer(keras, layer, out: ImportedLayers) -> None:
    """Add one Keras layer to ``out`` (refusing what xtl cannot represent, naming it)."""
    L, config, kind = keras.layers, layer.get_config(), type(layer).__name__
    if isinstance(layer, L.InputLayer):
        return
    if isinstance(layer, L.Conv2D):
        if tuple(config["strides"]) != (1, 1) or tuple(config["dilation_rate"]) != (1, 1) \
                or config.get("groups", 1) != 1 or config["data_format"] != "channels_last" \
                or config["padding"] not in ("same", "valid"):
            out.refuse(layer.name, f"{kind} with strides {config['strides']}, dilation "
                       f"{config['dilation_rate']}, groups {config.get('groups', 1)}, "
                       f"padding {config['padding']!r}")
        w, *b = layer.get_weights()
        out.add_conv(layer.name, np.transpose(w, (3, 2, 0, 1)), b[0] if b else None,
                     "zeros" if config["padding"] == "same" else "valid")
        out.add_activation(layer.name, _activation_name(layer))
    elif isinstance(layer, L.BatchNormalization):
        if config["axis"] not in (-1, 3, [-1], [3]):
            out.refuse(layer.name, f"{kind} over axis {config['axis']}, not the channels")
        n = layer.moving_mean.shape[0]
        gamma = np.asarray(layer.gamma) if layer.scale else np.ones(n)
        beta = np.asarray(layer.beta) if layer.center else np.zeros(n)
        out.add_batchnorm(layer.name, gamma, beta, np.asarray(layer.moving_mean),
                          np.asarray(layer.moving_variance), config["epsilon"])
    elif kind in ("PeriodicPad2D", "ReflectPad2D"):
        out.add_pad(layer.name, "periodic" if kind == "PeriodicPad2D" else "reflect", layer.pad)
    elif isinstance(layer, L.ZeroPadding2D) and len({p for side in config["padding"]
                                                     for p in side}) == 1:
        out.add_pad(layer.name, "zeros", config["padding"][0][0])
    else:
        out.add_activation(layer.name, _activation_layer_name(keras, layer, config, out))


def _keras_activation(keras, name: str) -> bool:
    """Whether ``name`` is a Keras activation (serializable by its name)."""
    try:
        return isinstance(name, str) and keras.activations.get(name) is not None
    except (ValueError, TypeError):
        return False


def _activation_layer_name(keras, layer, config, out: ImportedLayers) -> str:
    """xtl's name of the activation a Keras activation layer applies (refusing others)."""
    L, kind = keras.layers, type(layer).__name__
    if isinstance(layer, L.Activation):
        return _activation_name(layer)
    if isinstance(layer, L.ReLU) and config.get("max_value") is None \
            and not config.get("threshold"):
        slope = float(config.get("negative_slope", 0.0))
        return f"leaky_relu({slope!r})" if slope else "relu"
    if isinstance(layer, L.LeakyReLU):
        return f"leaky_relu({float(config['negative_slope'])!r})"
    if isinstance(layer, L.ELU) and float(config.get("alpha", 1.0)) == 1.0:
        return "elu"
    out.refuse(layer.name, kind)


def _probe_input(native, spec: NetworkSpec) -> np.ndarray:
    """A random normalized input that ``native`` takes: its grid if it fixes one, else
    24 cells plus what its 'valid' layers cut."""
    try:
        shape = tuple(native.inputs[0].shape)
    except (AttributeError, ValueError, IndexError):
        shape = (None, None, None, spec.input_channels)
    n = 24 + 2 * spec.shrink
    ny, nx = (d if d is not None else n for d in shape[1:3])
    rng = np.random.default_rng(0)
    return rng.standard_normal((2, ny, nx, spec.input_channels)).astype(np.float32)


def _not_an_archive(path: Path) -> str:
    """What the file ``path``, which is no zip archive, is instead (for the error message)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        return "a truncated zip archive: its end is missing"
    if head.startswith(b"CDF") or head.startswith(b"\x89HDF"):
        return "a netCDF file; a model Dataset's name ends with .nc"
    return "not a zip file"


def _archive_metadata(path: Path) -> dict:
    """xtl's metadata of the ``.keras`` archive ``path``, checked to its end (CRCs)."""
    if not zipfile.is_zipfile(path):
        raise FileFormatError(f"{path} is not a Keras model archive ({_not_an_archive(path)})")
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise FileFormatError(f"{path} is a damaged Keras model archive ({bad!r} fails "
                                      "its checksum)")
            if _META_ENTRY not in zf.namelist():
                raise FileFormatError(f"{path} is a zip archive without xtl's metadata "
                                      f"({_META_ENTRY}); was it written by xtl.save_model?")
            meta = json.loads(zf.read(_META_ENTRY))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        if isinstance(err, FileFormatError):
            raise
        raise FileFormatError(f"{path} is a damaged Keras model archive ({err})") from err
    missing = [k for k in ("spec", "normalization") if k not in meta] \
        if isinstance(meta, dict) else None
    if missing is None or missing:
        raise FileFormatError(f"{path}: xtl's metadata lacks {missing or 'everything'}; was it "
                              "written by xtl.save_model?")
    return meta


def _build_native(keras, spec: NetworkSpec, seed: int):
    """The Keras functional model of ``spec``: per layer an optional padding layer, the
    Conv2D ``conv_k`` and, for a leaky ReLU, an activation layer ``activation_k``."""
    policy = spec.precision
    inputs = keras.Input(shape=(None, None, spec.input_channels), name="inputs")
    x = inputs
    layers = zip(spec.widths, spec.layer_kernel_sizes, spec.layer_paddings,
                 spec.layer_activations, spec.layer_biases)
    for k, (width, size, padding, activation, bias) in enumerate(layers, 1):
        pad = _pad_layer(padding, size, k, policy)
        if pad is not None:
            x = pad(x)
        slope = leaky_slope(activation)
        x = keras.layers.Conv2D(
            width, size, padding="same" if padding == "zeros" else "valid",
            activation=None if activation == "linear" or slope is not None else activation,
            use_bias=bool(bias),
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + k),
            bias_initializer="zeros", name=f"conv_{k}", dtype=policy,
        )(x)
        if slope is not None:
            x = keras.layers.LeakyReLU(negative_slope=slope, name=f"activation_{k}",
                                       dtype=policy)(x)
    if policy != "float32":
        x = keras.layers.Activation("linear", dtype="float32", name="output_float32")(x)
    return keras.Model(inputs, x, name="xtl_cnn")


def _layer_number(name: str):
    """The layer ``k`` a part of xtl's Keras network belongs to, from its name
    (``conv_k``, ``activation_k``, ``periodic_pad_k``, ``reflect_pad_k``); None for the
    others (the input, ``output_float32``)."""
    tail = name.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def _pad_layer(padding: str, size: int, k: int, policy):
    """The layer padding layer ``k``'s input (None: the Conv2D pads or none is needed)."""
    if padding in ("zeros", "valid") or size == 1:
        return None
    name = {"periodic": "PeriodicPad2D", "reflect": "ReflectPad2D"}[padding]
    return _custom_objects()[name](size // 2, name=f"{padding}_pad_{k}", dtype=policy)


def _check_input(x, spec: NetworkSpec) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != spec.input_channels:
        raise ValueError(f"x must be normalized inputs (sample, y, x, {spec.input_channels}), "
                         f"got shape {x.shape}")
    return x


#: Keras state of each Model (compiled functions, the fit's train step and optimizer).
_STATES = ModelStates()
_model_state = _STATES.of
_fit_session = _STATES.fit_session


class _TrainStep:
    """A train step compiled once per fit, for any batch size.

    The ``tf.function`` is made at the first batch, with that batch's shapes and a
    free batch dimension: a last, shorter batch runs the same graph instead of
    tracing a second one (tracing costs about as much as a few dozen steps of the
    study's network).
    """

    def __init__(self, fn, jit_compile: bool):
        self.fn, self.jit_compile, self.compiled = fn, jit_compile, None

    def __call__(self, x, y):
        if self.compiled is None:
            tf = _tf()
            signature = [tf.TensorSpec((None, *t.shape[1:]), t.dtype) for t in (x, y)]
            self.compiled = tf.function(self.fn, input_signature=signature,
                                        jit_compile=self.jit_compile)
        return self.compiled(x, y)


@dataclass
class _FitSession:
    """What :meth:`KerasBackend.prepare_fit` makes for the steps of one fit."""

    step: _TrainStep
    optimizer: object
    callbacks: object


def _forward_fn(model: Model, layers):
    """A cached function returning numpy outputs of the given conv layers (eager);
    ``layers=None``: the network output."""
    cache = _model_state(model)
    key = ("forward", layers)
    fn = cache.get(key)
    if fn is None:
        keras, tf = _keras(), _tf()
        outputs = ([model.native.output] if layers is None
                   else [_layer_output(model, k) for k in layers])
        sub = keras.Model(model.native.inputs, outputs)

        def fn(x):  # eager: no per-model tracing, the convolutions dominate anyway
            out = sub(tf.convert_to_tensor(x), training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            return [np.asarray(tf.cast(o, tf.float32)) for o in out]

        cache[key] = fn
    return fn


def _layer_output(model: Model, k: int):
    """The symbolic output of layer ``k`` after its activation."""
    names = {layer.name for layer in model.native.layers}
    name = f"activation_{k}" if f"activation_{k}" in names else f"conv_{k}"
    return model.native.get_layer(name).output


def _meta(model: Model) -> dict:
    """JSON-safe metadata stored inside the ``.keras`` archive."""
    return file_metadata(model)
