"""Keras 3 (TensorFlow) backend: the paper's CNN closure and its training.

Keras and TensorFlow are imported lazily, on the first call that needs them,
so that importing this module (and :mod:`xtl`) stays cheap.

The network (see :class:`~xtl.backends.base.NetworkSpec`) is ``L`` Conv2D
layers named ``conv_1`` .. ``conv_L``; with ``padding="periodic"`` each is
preceded by a ``PeriodicPad2D`` helper layer (wrap-around padding written
with ``keras.ops``) and uses ``padding="valid"``; with ``padding="zeros"``
it uses Keras' ``padding="same"``. Layer numbers count conv layers only.
The input shape is ``(None, None, 2)``: one network works on any grid size.

Training uses a ``tf.data`` pipeline whose shuffling depends only on
``(seed, epoch)`` (stateless random), so that a run resumed from a
checkpoint (weights + Adam state + history, written atomically after each
epoch) continues exactly as an uninterrupted run.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._progress import show_progress
from ..options import FitOptions
from .base import (
    INPUTS,
    OUTPUT,
    BackendBase,
    Model,
    NetworkSpec,
    array_digest,
    check_layers,
    data_digest,
    history_to_dataset,
)

__all__ = ["KerasBackend"]

_META_ENTRY = "xtl.json"
_CKPT_NAME = "train.ckpt.npz"


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
    """Import TensorFlow without its import-time log lines (other output is kept)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules:
        with _filtered_stderr(_IMPORT_CHATTER):
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


def _keras():
    """Import Keras 3 on the TensorFlow backend."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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

    return {"PeriodicPad2D": PeriodicPad2D}


def gpu_available() -> bool:
    """Whether TensorFlow sees a GPU (it then places the network on it)."""
    return bool(_tf().config.list_physical_devices("GPU"))


class _RetracingFilter:
    """Drop TensorFlow's 'triggered tf.function retracing' warning.

    Every xtl model gets its own Keras train function; TensorFlow counts those
    as retracings of one function and warns, which is noise here.
    """

    def filter(self, record) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@functools.lru_cache(maxsize=None)
def _quiet_retracing() -> None:
    import logging

    logging.getLogger("tensorflow").addFilter(_RetracingFilter())


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


def _enable_determinism() -> None:
    """Deterministic TF ops (process-wide; it also turns XLA auto-jit off)."""
    tf = _tf()
    tf.config.experimental.enable_op_determinism()


# ----------------------------------------------------------------- the backend
class KerasBackend(BackendBase):
    """The Keras 3 / TensorFlow backend (registered as ``"keras"``).

    See :class:`xtl.backends.base.Backend` for the methods' contracts.
    """

    name = "keras"
    suffix = ".keras"

    # -- building -------------------------------------------------------------
    def build(self, spec, normalization=None, *, seed: int = 0) -> Model:
        """Build an untrained network from ``spec`` with seeded Glorot-uniform weights.

        Parameters
        ----------
        spec : NetworkSpec, mapping or None
            The architecture (None: the paper's).
        normalization : dict, optional
            Standard deviations ``{"psi", "omega", "pi"}``; default all 1.
        seed : int
            Seed of the initial weights (layer ``k`` uses ``seed * 1000 + k``).

        Returns
        -------
        Model
        """
        keras = _keras()
        spec = NetworkSpec.from_any(spec)
        normalization = _check_normalization(normalization)
        native = _build_native(keras, spec, int(seed))
        return Model(self.name, native, spec, normalization,
                     provenance={"seed": int(seed)})

    def clone(self, model: Model) -> Model:
        """An independent copy of ``model`` with bitwise equal weights."""
        keras = _keras()
        native = _build_native(keras, model.spec, 0)
        native.set_weights(model.native.get_weights())
        return Model(self.name, native, model.spec, dict(model.normalization),
                     provenance=json.loads(json.dumps(model.provenance)),
                     history=None if model.history is None else model.history.copy(deep=True))

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
            w, b = layer.get_weights()  # (K, K, in, out), (out,)
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
            layer.set_weights([w, np.asarray(b, np.float32)])

    # -- training -------------------------------------------------------------
    def fit(self, model: Model, train, validation, options: FitOptions, *,
            layers=None) -> dict:
        """Train ``model`` in place with Adam on the MSE.

        Parameters
        ----------
        model : Model
        train, validation : TrainingData
            Normalized training and (optional, None) validation data.
        options : FitOptions
            Epochs (a resumed run continues up to them), batch size, learning
            rate, seed of the per-epoch shuffling, early stopping (restoring
            the best weights), checkpoint directory (an existing checkpoint of
            the same training is resumed, one of a different training raises
            a ValueError), progress, extra Keras callbacks, determinism.
        layers : sequence of int, optional
            Conv layers to train (1..L); the others are frozen and stay
            bitwise unchanged. Default: all.

        Returns
        -------
        dict
            ``{"loss": [...], "val_loss": [...], "epoch_time": [...]}`` over
            all epochs run (including those before a resume).
        """
        epochs, batch_size, seed = options.epochs, options.batch_size, options.seed
        learning_rate, patience = options.learning_rate, options.patience
        checkpoint_dir, progress = options.checkpoint_dir, options.progress
        callbacks, deterministic = list(options.callbacks), options.deterministic
        keras, tf = _keras(), _tf()
        _quiet_retracing()
        if deterministic:
            _enable_determinism()
        n_layers = model.n_layers
        trainable = set(check_layers(layers, n_layers)) if layers is not None \
            else set(range(1, n_layers + 1))
        for k, layer in enumerate(self.conv_layers(model), 1):
            layer.trainable = k in trainable
        optimizer = keras.optimizers.Adam(learning_rate=float(learning_rate))
        if model.spec.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.native.compile(optimizer=optimizer, loss="mse")

        ckpt = None
        if checkpoint_dir:
            ckpt = _Checkpoint(checkpoint_dir, _fingerprint(
                model, train, validation, batch_size=batch_size, seed=seed,
                layers=sorted(trainable), learning_rate=learning_rate))
        state = {"epoch": 0, "history": {}, "best": math.inf, "wait": 0, "stopped": False}
        best_weights = None
        if ckpt is not None and ckpt.exists():
            state, best_weights = ckpt.load(model.native)
        if state["epoch"] < epochs and not state["stopped"]:
            n_batches = math.ceil(train.n_samples / batch_size)
            train_ds = _train_dataset(tf, train, batch_size, seed, state["epoch"], epochs)
            val_ds = None if validation is None else _eval_dataset(tf, validation, batch_size)
            monitor = _monitor_class(show_progress(progress))(
                state, ckpt, patience, best_weights, n_batches, epochs)
            try:
                model.native.fit(train_ds, epochs=epochs, initial_epoch=state["epoch"],
                                 steps_per_epoch=n_batches, validation_data=val_ds,
                                 validation_steps=None if validation is None else
                                 math.ceil(validation.n_samples / batch_size),
                                 shuffle=False, callbacks=[monitor, *(callbacks or [])],
                                 verbose=0)
            finally:
                monitor.close()
            best_weights = monitor.best_weights
        if patience is not None and best_weights is not None:
            model.native.set_weights(best_weights)
        return {k: list(v) for k, v in state["history"].items()}

    # -- inference ------------------------------------------------------------
    def predict_normalized(self, model: Model, x: np.ndarray, *,
                           batch_size: int = 32) -> np.ndarray:
        """Network output ``(sample, y, x)`` for normalized inputs ``(sample, y, x, 2)``."""
        x = _check_input(x)
        fn = _forward_fn(model, "predict", None)
        out = [fn(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(out, axis=0)[..., 0] if out else np.zeros(x.shape[:3], np.float32)

    def compiled_forward(self, model: Model):
        """:meth:`predict_normalized` as a ``tf.function``, for many small calls.

        An a posteriori LES calls the network once per time step on one field,
        where the eager call costs several times the convolutions. The function
        is traced once per model (any batch and grid size, float32), cached with
        it, and returns float32 numpy outputs ``(sample, y, x)``.
        """
        return _compiled_forward(model)

    def jvp(self, model: Model, x: np.ndarray, layer: int, tangent, *,
            batch_size: int = 32) -> np.ndarray:
        """Change of the network output along a direction of one layer's weights.

        Parameters
        ----------
        model : Model
        x : numpy.ndarray
            Normalized inputs ``(sample, y, x, 2)``.
        layer : int
            Layer number in 1..L.
        tangent : (kernel, bias)
            The direction, in :meth:`get_weights`' layout ``(out, in, K, K)``, ``(out,)``.
        batch_size : int

        Returns
        -------
        numpy.ndarray
            ``J t``: the output's directional derivative ``(sample, y, x)``.
        """
        tf = _tf()
        conv = self.conv_layers(model)[check_layers(layer, model.n_layers)[0] - 1]
        tk = tf.constant(np.transpose(np.asarray(tangent[0], np.float32), (2, 3, 1, 0)))
        tb = tf.constant(np.asarray(tangent[1], np.float32))
        x = _check_input(x)
        out = []
        for i in range(0, len(x), batch_size):
            with tf.autodiff.ForwardAccumulator(
                    primals=[conv.kernel.value, conv.bias.value], tangents=[tk, tb]) as acc:
                y = model.native(tf.constant(x[i:i + batch_size]), training=False)
            out.append(np.asarray(acc.jvp(y))[..., 0])
        return np.concatenate(out, axis=0)

    def vjp(self, model: Model, x: np.ndarray, layer: int, cotangent, *,
            batch_size: int = 32) -> tuple:
        """Pull an output cotangent back onto one layer's weights.

        Parameters
        ----------
        model : Model
        x : numpy.ndarray
            Normalized inputs ``(sample, y, x, 2)``.
        layer : int
            Layer number in 1..L.
        cotangent : numpy.ndarray
            ``(sample, y, x)``, like the output.
        batch_size : int

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            ``Jᵀ u`` as ``(kernel (out, in, K, K), bias (out,))`` float64: the gradient
            of ``Σ u · output`` with respect to the layer's weights.
        """
        tf = _tf()
        conv = self.conv_layers(model)[check_layers(layer, model.n_layers)[0] - 1]
        x = _check_input(x)
        u = np.asarray(cotangent, np.float32)
        if u.shape != x.shape[:3]:
            raise ValueError(f"cotangent must have the output's shape {x.shape[:3]}, got "
                             f"{u.shape}")
        gk, gb = 0.0, 0.0
        for i in range(0, len(x), batch_size):
            with tf.GradientTape() as tape:
                y = model.native(tf.constant(x[i:i + batch_size]), training=False)
                total = tf.reduce_sum(tf.cast(y[..., 0], tf.float32)
                                      * tf.constant(u[i:i + batch_size]))
            k, b = tape.gradient(total, [conv.kernel, conv.bias])
            gk = gk + np.asarray(k, np.float64)
            gb = gb + np.asarray(b, np.float64)
        return np.transpose(gk, (3, 2, 0, 1)), np.asarray(gb)

    def activations(self, model: Model, x: np.ndarray, layers, *,
                    batch_size: int = 32) -> dict:
        """Outputs ``{layer: (sample, channel, y, x)}`` of conv layers (after their activation).

        Parameters
        ----------
        model : Model
        x : numpy.ndarray
            Normalized inputs ``(sample, y, x, 2)``.
        layers : sequence of int
            Layer numbers in 1..L.
        batch_size : int

        Returns
        -------
        dict
            float32 arrays; the last layer's is the normalized network output.
        """
        layers = check_layers(layers, model.n_layers)
        x = _check_input(x)
        fn = _forward_fn(model, "activations", layers)
        parts = {k: [] for k in layers}
        for i in range(0, len(x), batch_size):
            outs = fn(x[i:i + batch_size])
            for k, a in zip(layers, outs):
                parts[k].append(np.transpose(a, (0, 3, 1, 2)))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    # -- persistence ----------------------------------------------------------
    def save(self, model: Model, path) -> None:
        """Save as a ``.keras`` archive with xtl's metadata inside (atomic).

        The archive gets an extra ``xtl.json`` entry holding the spec,
        normalization, provenance and history; Keras ignores it on load.
        """
        path = Path(path)
        if path.suffix != self.suffix:
            raise ValueError(f"path must end with '.keras', got {path}")
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
        try:
            with warnings.catch_warnings():  # Keras-internal numpy-2 copy= notice
                warnings.filterwarnings("ignore", message=r"__array__ implementation",
                                        category=DeprecationWarning)
                model.native.save(tmp)
            with zipfile.ZipFile(tmp, "a") as zf:
                zf.writestr(_META_ENTRY, json.dumps(_meta(model)))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load(self, path) -> Model:
        """Load a ``.keras`` archive written by :meth:`save`."""
        keras = _keras()
        path = Path(path)
        with zipfile.ZipFile(path) as zf:
            if _META_ENTRY not in zf.namelist():
                raise ValueError(f"{path} has no xtl metadata; was it written by xtl.save_model?")
            meta = json.loads(zf.read(_META_ENTRY))
        native = keras.saving.load_model(path, compile=False,
                                         custom_objects=_custom_objects())
        history = meta.get("history")
        if history:
            history = history_to_dataset(history)
        return Model(self.name, native, NetworkSpec.from_any(meta["spec"]),
                     meta["normalization"], meta.get("provenance", {}), history or None)


# ------------------------------------------------------------------ internals
def _check_normalization(normalization) -> dict:
    """Default all-ones normalization; validate keys and values."""
    names = INPUTS + (OUTPUT,)
    if normalization is None:
        return {k: 1.0 for k in names}
    missing = [k for k in names if k not in normalization]
    if missing:
        raise ValueError(f"normalization must have keys {names}, missing {missing}")
    out = {}
    for k in names:
        v = float(normalization[k])
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"normalization[{k!r}] must be a finite std > 0, got {v}")
        out[k] = v
    return out


def _build_native(keras, spec: NetworkSpec, seed: int):
    """The Keras functional model of ``spec``."""
    pad_cls = _custom_objects()["PeriodicPad2D"]
    policy = spec.precision
    inputs = keras.Input(shape=(None, None, len(INPUTS)), name="inputs")
    x = inputs
    n = spec.n_layers
    for k, width in enumerate(spec.widths, 1):
        if spec.padding == "periodic" and spec.kernel_size > 1:
            x = pad_cls(spec.kernel_size // 2, name=f"periodic_pad_{k}", dtype=policy)(x)
        x = keras.layers.Conv2D(
            width, spec.kernel_size,
            padding="valid" if spec.padding == "periodic" else "same",
            activation=spec.activation if k < n else None,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + k),
            bias_initializer="zeros",
            name=f"conv_{k}", dtype=policy,
        )(x)
    if policy != "float32":
        x = keras.layers.Activation("linear", dtype="float32", name="output_float32")(x)
    return keras.Model(inputs, x, name="xtl_cnn")


def _check_input(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != len(INPUTS):
        raise ValueError(f"x must be normalized inputs (sample, y, x, {len(INPUTS)}), "
                         f"got shape {x.shape}")
    return x


def _model_cache(model: Model) -> dict:
    """``model.cache``, emptied first when it was filled for another native model."""
    if model.cache.get("native") is not model.native:
        model.cache.clear()
        model.cache["native"] = model.native
    return model.cache


def _compiled_forward(model: Model):
    """The cached graph-compiled forward pass: one trace for any batch and grid size."""
    cache = _model_cache(model)
    fn = cache.get("compiled")
    if fn is None:
        tf = _tf()
        native = model.native
        graph = tf.function(lambda x: tf.cast(native(x, training=False), tf.float32),
                            input_signature=[tf.TensorSpec([None, None, None, len(INPUTS)],
                                                           tf.float32)])

        def fn(x):
            return graph(tf.constant(_check_input(x))).numpy()[..., 0]

        cache["compiled"] = fn
    return fn


def _forward_fn(model: Model, kind: str, layers):
    """A cached function returning numpy outputs of the given conv layers (eager)."""
    cache = _model_cache(model)
    key = (kind, layers)
    fn = cache.get(key)
    if fn is None:
        keras, tf = _keras(), _tf()
        convs = KerasBackend().conv_layers(model)
        if layers is None:
            outputs = [model.native.output]
        else:
            outputs = [convs[k - 1].output for k in layers]
        sub = keras.Model(model.native.inputs, outputs)

        def fn(x):  # eager: no per-model tracing, the convolutions dominate anyway
            out = sub(tf.convert_to_tensor(x), training=False)
            out = out if isinstance(out, (list, tuple)) else [out]
            return [np.asarray(tf.cast(o, tf.float32)) for o in out]

        cache[key] = fn
    return fn


def _train_dataset(tf, data, batch_size: int, seed: int, first_epoch: int, epochs: int):
    """Batches for epochs ``first_epoch..epochs-1``, shuffled statelessly per (seed, epoch)."""
    ny, nx = data.grid
    if data.in_memory:
        x, y = data.arrays()
        with tf.device("/CPU:0"):  # the pipeline runs on the host; batches go to the GPU
            X, Y = tf.constant(x), tf.constant(y)
        n = int(data.n_samples)

        def epoch_batches(e):
            key = tf.stack([tf.constant(seed, tf.int64), e])
            order = tf.argsort(tf.random.stateless_uniform([n], seed=key))
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
        ds = ds.map(lambda i: (tf.gather(X, i), tf.gather(Y, i)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        signature = (tf.TensorSpec((None, ny, nx, len(INPUTS)), tf.float32),
                     tf.TensorSpec((None, ny, nx, 1), tf.float32))

        def epoch_batches(e):
            return tf.data.Dataset.from_generator(
                lambda e: data.batches(int(e), batch_size, seed, True),
                args=(e,), output_signature=signature)

        ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_batches)
    return ds.prefetch(tf.data.AUTOTUNE)


def _eval_dataset(tf, data, batch_size: int):
    """Unshuffled batches of ``data`` (re-iterated every epoch)."""
    ny, nx = data.grid
    if data.in_memory:
        x, y = data.arrays()
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    else:
        signature = (tf.TensorSpec((None, ny, nx, len(INPUTS)), tf.float32),
                     tf.TensorSpec((None, ny, nx, 1), tf.float32))
        ds = tf.data.Dataset.from_generator(
            lambda: data.batches(0, batch_size, 0, False), output_signature=signature)
    return ds.prefetch(tf.data.AUTOTUNE)


def _fingerprint(model: Model, train, validation, *, batch_size, seed, layers,
                 learning_rate) -> dict:
    """What identifies a training for resuming its checkpoint (JSON-safe).

    The architecture, hyper-parameters, trained layers, the normalization, a
    hash of the starting weights (taken before fitting, so a transfer from
    another base model differs) and cheap digests of the training and
    validation data (sizes plus the first and last ``batch_size`` samples;
    see :func:`~xtl.backends.base.data_digest`). ``epochs`` and ``patience``
    are not part of it: a resumed run may extend the training.
    """
    return {
        "spec": model.spec.to_dict(), "n_samples": int(train.n_samples),
        "batch_size": int(batch_size), "seed": int(seed),
        "layers": list(layers), "learning_rate": float(learning_rate),
        "normalization": {k: float(v) for k, v in sorted(model.normalization.items())},
        "initial_weights": array_digest(model.native.get_weights()),
        "train_data": data_digest(train, batch_size),
        "validation_data": None if validation is None else data_digest(validation, batch_size),
    }


class _Checkpoint:
    """Resumable training state in ``<dir>/train.ckpt.npz``, written atomically.

    Holds the weights, the optimizer variables (Adam moments and step), the
    history, early-stopping state and the best weights so far, plus the
    training's fingerprint (see :func:`_fingerprint`): architecture,
    hyper-parameters, trained layers, normalization, a hash of the starting
    weights and digests of the data. A checkpoint whose fingerprint differs
    (another base model, other data, other settings) is refused with a
    ValueError naming what differs, never silently resumed. The data digest
    reads only the first and last batch, so data differing only in between
    are not told apart.
    """

    def __init__(self, directory, fingerprint: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / _CKPT_NAME
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        return self.path.exists()

    def save(self, native, state: dict, best_weights) -> None:
        arrays = {f"w{i}": w for i, w in enumerate(native.get_weights())}
        for i, v in enumerate(native.optimizer.variables):
            arrays[f"o{i}"] = np.asarray(v.numpy())
        for i, w in enumerate(best_weights or []):
            arrays[f"b{i}"] = w
        meta = {"state": state, "fingerprint": self.fingerprint}
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.npz")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load(self, native):
        with np.load(self.path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            old = meta["fingerprint"]
            if old != self.fingerprint:
                differ = sorted(k for k in set(old) | set(self.fingerprint)
                                if old.get(k) != self.fingerprint.get(k))
                raise ValueError(
                    f"checkpoint_dir {self.dir} holds a checkpoint of a different training "
                    f"(it differs in: {', '.join(differ)}); use another directory or "
                    f"delete {self.path}"
                )
            n_w = len(native.weights)
            native.set_weights([z[f"w{i}"] for i in range(n_w)])
            opt = native.optimizer
            opt.build(native.trainable_variables)
            for i, v in enumerate(opt.variables):
                v.assign(z[f"o{i}"])
            best = [z[f"b{i}"] for i in range(n_w)] if "b0" in z.files else None
        state = meta["state"]
        state["best"] = math.inf if state["best"] is None else state["best"]
        return state, best


@functools.lru_cache(maxsize=None)
def _monitor_class(show_progress: bool):
    """The Keras callback that records history, checkpoints, stops early, shows progress.

    Without a progress bar it defines no batch-level hook, so that Keras keeps
    dispatching batches asynchronously (a batch hook forces a sync per batch).
    """
    keras = _keras()

    class _Monitor(keras.callbacks.Callback):
        def __init__(self, state, ckpt, patience, best_weights, n_batches, epochs):
            super().__init__()
            self.state, self.ckpt, self.patience = state, ckpt, patience
            self.best_weights = best_weights
            self.bar = None
            if show_progress:
                from .._progress import progress_bar

                self.bar = progress_bar(True, total=(epochs - state["epoch"]) * n_batches, desc="train",
                                unit="batch", leave=False)
            self._t0 = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            hist = self.state["history"]
            for key in ("loss", "val_loss"):
                if key in logs:
                    hist.setdefault(key, []).append(float(logs[key]))
            hist.setdefault("epoch_time", []).append(time.perf_counter() - self._t0)
            self.state["epoch"] = epoch + 1
            if self.patience is not None:
                value = float(logs.get("val_loss", logs.get("loss")))
                if value < self.state["best"]:
                    self.state["best"], self.state["wait"] = value, 0
                    self.best_weights = self.model.get_weights()
                else:
                    self.state["wait"] += 1
                    if self.state["wait"] >= self.patience:
                        self.state["stopped"] = True
                        self.model.stop_training = True
            if self.ckpt is not None:
                saved = dict(self.state)
                saved["best"] = None if math.isinf(saved["best"]) else saved["best"]
                self.ckpt.save(self.model, saved, self.best_weights)
            if self.bar is not None and "val_loss" in logs:
                self.bar.set_postfix(val_loss=f"{logs['val_loss']:.4g}", refresh=False)

        def close(self):
            if self.bar is not None:
                self.bar.close()

    if not show_progress:
        return _Monitor

    class _ProgressMonitor(_Monitor):
        def on_train_batch_end(self, batch, logs=None):
            self.bar.update(1)
            if batch % 10 == 0 and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{float(logs['loss']):.4g}", refresh=False)

    return _ProgressMonitor


def _meta(model: Model) -> dict:
    """JSON-safe metadata stored inside the ``.keras`` archive."""
    from .base import _json_safe

    history = None
    if model.history is not None:
        history = {k: model.history[k].values.tolist() for k in model.history.data_vars}
    return {"backend": model.backend, "spec": model.spec.to_dict(),
            "normalization": _json_safe(model.normalization),
            "provenance": _json_safe(model.provenance), "history": history}
