"""Train layers l..L on the cached output of the frozen layers 1..l−1 (the *prefix*).

Re-training layers ≥ l leaves layers 1..l−1 frozen, so their output on the
(fixed) training and validation samples never changes; the uncached loop
recomputes it in every epoch. Here it is computed once, before the first
epoch, with the backend's :meth:`~xtl.nn.backends.base.Backend.activations`,
and the backend's :meth:`~xtl.nn.backends.base.Backend.suffix_model` — layers
l..L alone, sharing their weights with the network — is trained on it by the
shared loop (:func:`xtl.nn.backends.loop.fit`). An epoch then costs the forward
and backward passes of layers l..L only.

The result equals the uncached training's to float32 round-off: the batches are
the same samples in the same order (the data's ``order``), the frozen layers'
output is the same function of the same weights, and the steps update the same
variables. Checkpoints resume bitwise (the cache is rebuilt, deterministically,
before the first epoch of a resumed fit); a checkpoint of the cached training is
told apart from the uncached one's (its fingerprint names the cached prefix).

Memory: the cache holds the activations entering layer l and the targets of
every training and validation sample, :func:`prefix_bytes` in all (float32). Up
to the fit's ``memory_limit`` (2 GiB by default, the bound that also decides
whether data are held or streamed) it is kept in memory; above it, it is
written to a memory-mapped file in a temporary folder (``tempfile``'s, i.e.
``$TMPDIR``), read back batch by batch, and removed when the fit ends, also
when it fails.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .loop import FitOptions, fingerprint, fit as loop_fit

__all__ = ["DEFAULT_MEMORY_LIMIT", "PrefixData", "PrefixCache", "prefix_bytes", "cacheable",
           "fit_cached"]

#: Bytes the cache may hold in memory when the fit gives no ``memory_limit``.
DEFAULT_MEMORY_LIMIT = 2 * 2**30


def prefix_bytes(spec, first: int, n_samples: int, grid) -> int:
    """Bytes of the cache of layers 1..``first``−1 for ``n_samples`` samples on ``grid``.

    Parameters
    ----------
    spec : NetworkSpec
        The network.
    first : int
        The first trained layer (2..L).
    n_samples : int
        Training plus validation samples.
    grid : (int, int)
        ``(ny, nx)``.

    Returns
    -------
    int
        ``n_samples · ny · nx · (C_in(first) + C_out) · 4``: the float32 activations
        entering layer ``first`` and the targets.
    """
    channels = spec.in_channels[first - 1] + spec.output_channels
    return int(n_samples) * int(grid[0]) * int(grid[1]) * channels * 4


class PrefixData:
    """Training data made of a prefix's cached output: what the suffix network trains on.

    Batches hold the same samples in the same order as the data they were cached
    from (its ``order``), so that a cached fit sees what the uncached one sees.

    Parameters
    ----------
    x : numpy.ndarray or numpy.memmap
        Activations entering the first trained layer, ``(sample, y, x, C)`` float32.
    y : numpy.ndarray or numpy.memmap
        Normalized targets ``(sample, y, x, c_out)``.
    order : callable
        ``order(epoch, seed, shuffle)`` of the source data: the sample positions in
        the order its ``batches`` yields them.
    """

    in_memory = True

    def __init__(self, x, y, order):
        self.x, self.y, self._order = x, y, order

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    @property
    def grid(self) -> tuple:
        """``(ny, nx)``."""
        return tuple(self.x.shape[1:3])

    def arrays(self) -> tuple:
        """``(x, y)`` (memory-mapped when the cache spilled to disk)."""
        return self.x, self.y

    def order(self, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
        """The source data's sample order of this epoch."""
        return np.asarray(self._order(epoch, seed, shuffle))

    def batches(self, epoch: int, batch_size: int, seed: int, shuffle: bool = True):
        """Yield ``(x, y)`` batches: consecutive runs of ``batch_size`` of :meth:`order`."""
        order = self.order(epoch, seed, shuffle)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield np.asarray(self.x[idx]), np.asarray(self.y[idx])


class PrefixCache:
    """The cached prefix output of one fit: in memory, or memory-mapped files in a
    temporary folder (removed by :meth:`close`, or on leaving a ``with``).

    Parameters
    ----------
    backend : Backend
        Computes the activations (:meth:`~xtl.nn.backends.base.Backend.activations`).
    model : Model
        The whole network (its layers 1..``first``−1 are the prefix).
    first : int
        The first trained layer, in 2..L.
    chunk : int
        Samples per forward pass while filling the cache.
    """

    def __init__(self, backend, model, first: int, chunk: int = 32):
        self.backend, self.model, self.first = backend, model, int(first)
        self.chunk = max(1, int(chunk))
        self.folder = None
        self.nbytes = 0

    def add(self, data, spill: bool) -> PrefixData:
        """``data`` (with ``order``) as :class:`PrefixData` over the cached prefix output;
        in the temporary folder when ``spill``."""
        spec = self.model.spec
        n, grid = data.n_samples, tuple(data.grid)
        x = self._array((n, *grid, spec.in_channels[self.first - 1]), spill)
        y = self._array((n, *grid, spec.output_channels), spill)
        pos, layer = 0, self.first - 1
        for xb, yb in data.batches(0, self.chunk, 0, False):
            act = self.backend.activations(self.model, xb, [layer], batch_size=self.chunk)[layer]
            x[pos:pos + len(act)] = np.moveaxis(act, 1, -1)
            y[pos:pos + len(act)] = yb
            pos += len(act)
        if pos != n:
            raise ValueError(f"data yielded {pos} samples in an unshuffled epoch, but says it "
                             f"holds n_samples={n}")
        self.nbytes += x.nbytes + y.nbytes
        return PrefixData(x, y, data.order)

    def _array(self, shape: tuple, spill: bool):
        if not spill:
            return np.empty(shape, np.float32)
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="xtl-prefix-"))
        path = self.folder / f"part{len(list(self.folder.iterdir()))}.f32"
        return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)

    def close(self) -> None:
        """Remove the temporary folder, if the cache spilled to one."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> "PrefixCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def cacheable(train, validation, options: FitOptions, layers) -> bool:
    """Whether a fit of ``layers`` can train on a cached prefix: ``options.cache_prefix``,
    no layer 1 (nothing to cache) and data with ``order``
    (:class:`xtl.nn.training.ArrayData`, ``StreamData``). The backend must also have
    ``suffix_model`` (:meth:`xtl.nn.backends.base.Backend.fit` checks)."""
    return (options.cache_prefix and min(layers) > 1
            and all(callable(getattr(d, "order", None)) for d in (train, validation)
                    if d is not None))


def fit_cached(backend, model, train, validation, options: FitOptions, layers) -> dict:
    """Train ``layers`` of ``model`` in place on the cached output of layers
    1..min(layers)−1: :func:`xtl.nn.backends.loop.fit`'s arguments and result.

    Raises
    ------
    ValueError
        As :func:`xtl.nn.backends.loop.fit`; layer 1 among ``layers`` (nothing to cache).
    """
    layers = tuple(int(k) for k in layers)
    first = min(layers)
    if first < 2:
        raise ValueError(f"layers must all be >= 2 to cache the layers before them, got "
                         f"{list(layers)}")
    identity = None
    if options.checkpoint_dir:  # the training's own identity, marked as cached
        identity = {**fingerprint(backend, model, train, validation, options, layers),
                    "prefix_cache": first}
    suffix = backend.suffix_model(model, first)
    limit = DEFAULT_MEMORY_LIMIT if options.memory_limit is None else options.memory_limit
    sizes = sum(d.n_samples for d in (train, validation) if d is not None)
    spill = prefix_bytes(model.spec, first, sizes, train.grid) > limit
    with PrefixCache(backend, model, first, chunk=max(32, options.batch_size)) as cache:
        cached_train = cache.add(train, spill)
        cached_val = None if validation is None else cache.add(validation, spill)
        return loop_fit(backend, suffix, cached_train, cached_val, options,
                        tuple(k - first + 1 for k in layers), identity=identity)
