"""The framework-neutral training loop shared by all backends.

:func:`fit` runs the epochs of a training over a backend's narrow primitives
(:meth:`~xtl.nn.backends.base.Backend.prepare_fit`, ``train_epoch``,
``evaluate``, ``get_state``/``set_state``, ``get_weights``/``set_weights``,
``end_epoch``, ``end_fit``), so that a backend implements gradient steps, not
training logic. The loop does

* the per-epoch order of the samples: the data's ``batches(epoch,
  batch_size, seed, shuffle=True)`` (a permutation drawn from ``(seed,
  epoch)`` only), read one batch ahead in a background thread;
* the history ``loss``, ``val_loss`` (with validation data) and ``epoch_time``;
* early stopping on ``val_loss`` (``loss`` without validation data) after
  ``patience`` epochs without improvement, restoring the best weights;
* a checkpoint after every epoch (the backend's full state, the loop's state,
  the best weights and a fingerprint of the training), written atomically:
  a re-run resumes it and continues bitwise as if never interrupted; a
  checkpoint of a different training is refused with a ValueError;
* a progress bar (:func:`xtl._progress.show_progress` decides).

Backend-native callbacks (``FitOptions.callbacks``) are the backend's: it
gets them in ``prepare_fit`` and calls them from ``train_epoch`` and
``end_epoch``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..._progress import progress_bar, show_progress
from ...options import Options, check_bool, check_float, check_int, check_path

__all__ = ["FitOptions", "fit", "fingerprint", "Checkpoint", "FitState", "Prefetch", "CHECKPOINT_NAME",
           "array_digest", "data_digest"]

#: File name of the checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "train.ckpt.npz"


# ------------------------------------------------------------------ options
@dataclass(frozen=True)
class FitOptions(Options):
    """How a network is fitted: by :func:`xtl.train`, :func:`xtl.transfer`,
    :func:`xtl.layer_sweep` and a backend's ``fit``.

    Parameters
    ----------
    epochs : int
        Epochs to run at most (a resumed fit continues up to it).
    batch_size : int
        Samples per gradient step.
    learning_rate : float
        Adam's learning rate (finite, >= 0; 0 leaves the weights as they are).
    seed : int
        Seeds the initial weights (``train``), the target subset
        (``transfer``) and the per-epoch shuffling; >= 0.
    patience : int, optional
        Early stopping after ``patience`` epochs without improvement of the
        validation loss (the training loss without validation data), then the
        best weights are restored. None: no early stopping.
    deterministic : bool
        Deterministic ops where the backend offers them (TensorFlow's are
        process-wide and disable XLA auto-jit).
    in_memory : bool, optional
        Hold the data in memory (True) or stream them from dask chunks
        (False); None decides from the data size and ``memory_limit``.
    memory_limit : float, optional
        Bytes of float32 data that may be held in memory (default 2 GiB).
    block : int
        Samples per streamed block.
    progress : bool, optional
        Progress bar; None shows it in a Jupyter notebook or on a terminal.
    checkpoint_dir : path-like, optional
        Checkpoint after every epoch there; a re-run with the same options
        resumes an interrupted fit to the same result. A checkpoint of a
        different fit raises a ValueError instead of being resumed.
    callbacks : sequence, optional
        Backend-native callbacks (Keras callbacks for ``"keras"``).
    cache_prefix : bool
        When the layers trained are all ≥ l > 1, compute the frozen layers
        1..l−1 once on the training and validation samples and train layers
        l..L on their cached output (:mod:`xtl.nn.backends.prefix`): the same
        result to float32 round-off, each epoch costing layers l..L only.
        Needs a backend with ``suffix_model``; others train uncached.
    """

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    patience: int | None = None
    deterministic: bool = True
    in_memory: bool | None = None
    memory_limit: float | None = None
    block: int = 256
    progress: bool | None = None
    checkpoint_dir: str | os.PathLike | None = None
    callbacks: tuple = field(default=())
    cache_prefix: bool = True

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "epochs", check_int(self.epochs, "epochs", minimum=1))
        set_(self, "batch_size", check_int(self.batch_size, "batch_size", minimum=1))
        set_(self, "learning_rate", check_float(self.learning_rate, "learning_rate",
                                                minimum=0.0))
        set_(self, "seed", check_int(self.seed, "seed", minimum=0))
        set_(self, "patience", check_int(self.patience, "patience", minimum=1, optional=True))
        set_(self, "deterministic", check_bool(self.deterministic, "deterministic"))
        set_(self, "in_memory", check_bool(self.in_memory, "in_memory", optional=True))
        set_(self, "memory_limit", check_float(self.memory_limit, "memory_limit",
                                               positive=True, optional=True))
        set_(self, "block", check_int(self.block, "block", minimum=1))
        set_(self, "progress", check_bool(self.progress, "progress", optional=True))
        set_(self, "cache_prefix", check_bool(self.cache_prefix, "cache_prefix"))
        check_path(self.checkpoint_dir, "checkpoint_dir")
        callbacks = () if self.callbacks is None else self.callbacks
        if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
            raise TypeError(f"callbacks must be a sequence of callbacks, got {callbacks!r}")
        set_(self, "callbacks", tuple(callbacks))


# --------------------------------------------------------------------- the loop
def fit(backend, model, train, validation, options=None, layers=None, identity=None) -> dict:
    """Train ``model`` in place with ``backend``'s primitives.

    Parameters
    ----------
    backend : xtl.nn.backends.Backend
        The backend owning ``model``.
    train, validation : TrainingData
        Normalized training data and optional (None) validation data.
    options : FitOptions, mapping or None
        See :class:`FitOptions`.
    layers : sequence of int, optional
        Conv layers to train (1..L, checked by the caller); the others stay
        bitwise unchanged. Default: all.
    identity : dict, optional
        The training's :func:`fingerprint` for its checkpoint, when ``model`` and
        the data stand for another training (a cached prefix's suffix network
        and activations); default: the fingerprint of these arguments.

    Returns
    -------
    dict
        ``{"loss": [...], "val_loss": [...], "epoch_time": [...]}`` over all
        epochs run, including those before a resume.

    Raises
    ------
    ValueError
        ``checkpoint_dir`` holds a checkpoint of a different training (the
        message names what differs). (``layers`` are the checked ones of
        :meth:`Backend.fit <xtl.nn.backends.base.Backend.fit>`.)
    """
    options = FitOptions.merge(options)
    layers = (tuple(int(k) for k in layers) if layers is not None
              else tuple(range(1, model.n_layers + 1)))
    ckpt = None
    if options.checkpoint_dir:
        ckpt = Checkpoint(options.checkpoint_dir, identity if identity is not None
                          else fingerprint(backend, model, train, validation, options, layers))
    loop = _Loop(backend, model, options, ckpt)
    saved = ckpt.load() if ckpt is not None and ckpt.exists() else None
    backend.prepare_fit(model, layers, options)
    if saved is not None:
        loop.state, arrays, loop.best_weights = saved
        backend.set_state(model, arrays)
    if loop.state.epoch < options.epochs and not loop.state.stopped:
        loop.run(train, validation)
    backend.end_fit(model)
    if options.patience is not None and loop.best_weights is not None:
        backend.set_weights(model, loop.best_weights)
    return {k: list(v) for k, v in loop.state.history.items()}


@dataclass
class FitState:
    """Where a training stands: epochs done, history, early-stopping state."""

    epoch: int = 0
    history: dict = field(default_factory=dict)
    best: float = math.inf
    wait: int = 0
    stopped: bool = False

    def record(self, logs: dict, seconds: float) -> None:
        """Append an epoch's ``logs`` and wall time to the history; count the epoch."""
        for key in ("loss", "val_loss"):
            if key in logs:
                self.history.setdefault(key, []).append(float(logs[key]))
        self.history.setdefault("epoch_time", []).append(float(seconds))
        self.epoch += 1

    def to_json(self) -> dict:
        """The state as JSON-safe dict (an infinite ``best`` as None)."""
        return {**vars(self), "best": None if math.isinf(self.best) else self.best}

    @classmethod
    def from_json(cls, d: dict) -> "FitState":
        """The state from :meth:`to_json`'s dict."""
        return cls(**{**d, "best": math.inf if d.get("best") is None else float(d["best"])})


class _Loop:
    """The epochs of one fit: history, early stopping, checkpoints, progress."""

    def __init__(self, backend, model, options: FitOptions, ckpt):
        self.backend, self.model, self.options, self.ckpt = backend, model, options, ckpt
        self.state = FitState()
        self.best_weights = None  # early stopping's best so far, in get_weights' layout

    def run(self, train, validation) -> None:
        """Run the epochs from ``state.epoch`` to ``options.epochs`` (or an early stop)."""
        o = self.options
        n_batches = math.ceil(train.n_samples / o.batch_size)
        bar = _Progress(o.progress, (o.epochs - self.state.epoch) * n_batches)
        try:
            for epoch in range(self.state.epoch, o.epochs):
                logs = self._epoch(epoch, train, validation, bar.on_batch)
                self._early_stop(logs)
                if self.ckpt is not None:
                    self.ckpt.save(self.state, self.backend.get_state(self.model),
                                   self.best_weights)
                native_stop = self.backend.end_epoch(self.model, epoch, logs)
                bar.end_epoch(logs)
                if self.state.stopped or native_stop:
                    break
        finally:
            bar.close()

    def _epoch(self, epoch: int, train, validation, on_batch) -> dict:
        """Train one epoch, evaluate, record; return the epoch's logs."""
        o = self.options
        t0 = time.perf_counter()
        with Prefetch(train.batches(epoch, o.batch_size, o.seed, True)) as batches:
            loss = self.backend.train_epoch(self.model, batches, epoch, on_batch)
        logs = {"loss": float(loss)}
        if validation is not None:
            logs["val_loss"] = float(self.backend.evaluate(self.model, validation,
                                                           o.batch_size))
        self.state.record(logs, time.perf_counter() - t0)
        return logs

    def _early_stop(self, logs: dict) -> None:
        """Keep the best weights; stop after ``patience`` epochs without improvement."""
        patience = self.options.patience
        if patience is None:
            return
        value = float(logs.get("val_loss", logs["loss"]))
        state = self.state
        if value < state.best:
            state.best, state.wait = value, 0
            self.best_weights = self.backend.get_weights(self.model)
        else:
            state.wait += 1
            if state.wait >= patience:
                state.stopped = True


class _Progress:
    """A per-batch progress bar over the remaining epochs (nothing when not shown).

    Without a bar :attr:`on_batch` is None, so that the backend runs no
    per-batch hook (which would wait for the device after every batch).
    """

    def __init__(self, progress, total: int):
        self.bar = None
        self.on_batch = None
        if show_progress(progress):
            self.bar = progress_bar(True, total=total, desc="train", unit="batch", leave=False)
            self.on_batch = self._batch

    def _batch(self, i: int, loss) -> None:
        self.bar.update(1)
        if i % 10 == 0:
            self.bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)

    def end_epoch(self, logs: dict) -> None:
        if self.bar is not None and "val_loss" in logs:
            self.bar.set_postfix(val_loss=f"{logs['val_loss']:.4g}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------- prefetching
class Prefetch:
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead.

    Items come in order; an exception of the iterable is raised by the
    consumer. Use as a context manager (or call :meth:`close`) so that the
    thread stops when the consumer stops early.

    Parameters
    ----------
    iterable : iterable
        E.g. a data object's ``batches(...)`` (which may load dask blocks).
    """

    _END = object()

    def __init__(self, iterable, depth: int = 2):
        self._queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(iterable,), daemon=True,
                                        name="xtl-prefetch")
        self._thread.start()

    def _fill(self, iterable) -> None:
        try:
            for item in iterable:
                if not self._put((item, None)):
                    return
            self._put((self._END, None))
        except BaseException as exc:  # noqa: BLE001 -- re-raised in the consumer
            self._put((self._END, exc))

    def _put(self, message) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item, exc = self._queue.get()
            if exc is not None:
                raise exc
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        """Stop the background thread (it finishes the item it is reading)."""
        self._stop.set()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------- checkpoints
def fingerprint(backend, model, train, validation, options: FitOptions, layers) -> dict:
    """What identifies a training for resuming its checkpoint (JSON-safe).

    Parameters
    ----------
    model : xtl.nn.model.Model
        Before training: a hash of its starting weights is part of it, so a
        transfer from another base model differs.
    train, validation : TrainingData
        Cheap digests of them (sizes plus the first and last ``batch_size``
        samples; see :func:`data_digest`).
    options : FitOptions
        Batch size, seed and learning rate are part of it; ``epochs`` and
        ``patience`` are not (a resumed run may extend the training).
    layers : tuple of int
        The trained layers.
    """
    bs = options.batch_size
    return {
        "backend": backend.name, "spec": model.spec.to_dict(),
        "n_samples": int(train.n_samples), "batch_size": int(bs), "seed": int(options.seed),
        "layers": [int(k) for k in layers], "learning_rate": float(options.learning_rate),
        "normalization": {k: float(v) for k, v in sorted(model.normalization.items())},
        "initial_weights": array_digest(_flatten(backend.get_weights(model))),
        "train_data": data_digest(train, bs),
        "validation_data": None if validation is None else data_digest(validation, bs),
    }


def _flatten(pairs) -> list:
    return [a for pair in pairs for a in pair]


class Checkpoint:
    """Resumable training state in ``<directory>/train.ckpt.npz``, written atomically.

    Holds the backend's state (weights and optimizer), the loop's
    :class:`FitState`, the best weights so far and the training's
    :func:`fingerprint`. A checkpoint whose fingerprint differs (another base
    model, other data, other settings) is refused with a ValueError naming what
    differs, never silently resumed. The data digest reads only the first and
    last batch, so data differing only in between are not told apart.

    Parameters
    ----------
    directory : path-like
        Created if missing.
    """

    def __init__(self, directory, fingerprint: dict):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / CHECKPOINT_NAME
        self.fingerprint = fingerprint

    def exists(self) -> bool:
        """Whether a checkpoint was written."""
        return self.path.exists()

    def save(self, state: FitState, arrays, best) -> None:
        """Write ``state``, the backend's state ``arrays`` and the ``best`` weights."""
        out = {f"s{i}": np.asarray(a) for i, a in enumerate(arrays)}
        out.update({f"b{i}": np.asarray(a) for i, a in enumerate(_flatten(best or []))})
        meta = {"state": state.to_json(), "fingerprint": self.fingerprint}
        out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.npz")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **out)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load(self) -> tuple:
        """``(FitState, state arrays, best weights or None)`` of the checkpoint.

        Raises
        ------
        ValueError
            The checkpoint is of a different training.
        """
        with np.load(self.path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            self._check(meta["fingerprint"])
            n_state = sum(1 for k in z.files if k.startswith("s"))
            arrays = [z[f"s{i}"] for i in range(n_state)]
            flat = [z[f"b{i}"] for i in range(sum(1 for k in z.files if k.startswith("b")))]
        best = list(zip(flat[::2], flat[1::2])) or None
        return FitState.from_json(meta["state"]), arrays, best

    def _check(self, old: dict) -> None:
        new = self.fingerprint
        if old != new:
            differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"checkpoint_dir {self.dir} holds a checkpoint of a different training "
                f"(it differs in: {', '.join(differ)}); use another directory or "
                f"delete {self.path}"
            )


# ------------------------------------------------------------------ fingerprints
def array_digest(arrays: Sequence) -> str:
    """A content hash of a sequence of arrays (their shapes, dtypes and bytes).

    Returns
    -------
    str
        16 hex digits; equal for bitwise equal arrays of equal shapes and dtypes.
    """
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def data_digest(data: TrainingData, n: int = 32) -> str:
    """A cheap content hash of training data: its size and its first and last samples.

    Reads at most ``2 n`` samples: never all of streamed data. Data differing
    only in samples between the first and last ``n`` get the same digest.

    Parameters
    ----------
    data : TrainingData
        In memory (hashed from :meth:`~TrainingData.arrays`), or with an
        ``ends(n)`` method returning ``(x_first, y_first, x_last, y_last)``
        (as :class:`xtl.nn.training.StreamData`); other streamed data are hashed
        from their first unshuffled batch of ``n`` samples.
    n : int
        Samples taken from each end.

    Returns
    -------
    str
        16 hex digits.
    """
    n = max(1, int(n))
    head = [np.asarray([int(data.n_samples), *map(int, data.grid)], dtype=np.int64)]
    ends = getattr(data, "ends", None)
    if callable(ends):
        parts = list(ends(n))
    elif data.in_memory:
        x, y = data.arrays()
        parts = [x[:n], y[:n], x[-n:], y[-n:]]
    else:
        parts = list(next(iter(data.batches(0, n, 0, False)), ()))
    return array_digest(head + [np.asarray(p, dtype=np.float32) for p in parts])
