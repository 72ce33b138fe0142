"""Training, transfer learning and layer sweeps of CNN closures on LES Datasets.

An LES Dataset holds the network's input and output variables (by default
``psi``, ``omega`` → ``pi``: :class:`xtl.nn.spec.Variables`) on dims that include
``y`` and ``x``, in any order. A channel dim (``channels="lev"``) becomes
channels; every other dim is stacked into ``sample`` (in the data's order:
member-major, then time, for ``(member, time, y, x)``). Inputs are the
channels-last ``(sample, y, x, c_in)`` stack of the inputs, targets
``(sample, y, x, c_out)`` of the outputs, each variable divided by its
training-set standard deviation; the standard deviations are stored with the
model (``Model.normalization``) and :func:`predict` works in physical units.

Data are held in memory when they fit (``in_memory=None`` decides from the
size of dask-backed data) and otherwise streamed from their dask chunks,
block by block.

Functions are framework-neutral: the network work is done by a backend
(:mod:`xtl.nn.backends`; Keras by default).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .spec import GRID_DIMS, NetworkSpec, Variables, check_layers, stack_channels
from .model import Model, model_id
from .backends.base import get_backend
from .dataset import history_to_dataset
from ..data import metrics as _metrics
from ..options import check_float, check_int
from .backends.loop import FitOptions

__all__ = [
    "train",
    "transfer",
    "predict",
    "evaluate",
    "compute_normalization",
    "check_les_dataset",
    "check_model_data",
    "check_same_levels",
    "check_validation",
    "conditioning_field",
    "data_levels",
    "count_samples",
    "variable_samples",
    "load_normalized",
    "sample_fields",
    "select_samples",
    "stack_samples",
    "epoch_records",
    "ArrayData",
    "StreamData",
]

_DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes of float32 training data held in memory


# --------------------------------------------------------------------- checks
def check_les_dataset(ds, name: str = "ds", *, need_target: bool = True,
                      variables: Variables | None = None) -> None:
    """Check that ``ds`` is an LES Dataset usable for training.

    Parameters
    ----------
    ds : xarray.Dataset
        Must hold the input variables (and the outputs when ``need_target``), each
        with dims ``y`` and ``x`` (and the channel dim, when there is one) in any
        order, sharing their dims and sizes, with at least one sample.
    name : str
        Argument name used in error messages.
    need_target : bool
        Whether the output variables are required.
    variables : Variables, optional
        The variables and channel dim (default ψ̄, ω̄ → Π).

    Raises
    ------
    TypeError, ValueError
        Naming ``name`` and what was expected.
    """
    variables = Variables.from_any(variables)
    needed = variables.names if need_target else variables.inputs
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"{name} must be an LES xarray.Dataset with variables "
                        f"{list(needed)}, got {type(ds).__name__}")
    missing = [v for v in needed if v not in ds.data_vars]
    if missing:
        raise ValueError(f"{name} must hold variables {list(needed)}; missing {missing} "
                         f"(it has {sorted(map(str, ds.data_vars))}; other variables are "
                         "named with inputs=, outputs=)")
    first = ds[needed[0]]
    required = GRID_DIMS + ((variables.channels,) if variables.channels else ())
    for v in needed:
        d = ds[v].dims
        lacking = [k for k in required if k not in d]
        if lacking:
            raise ValueError(f"{name}[{v!r}] must have dims {required} (in any order); it "
                             f"lacks {lacking}, dims are {d}")
        if set(d) != set(first.dims) or any(ds[v].sizes[k] != first.sizes[k] for k in d):
            raise ValueError(f"{name}: variables {list(needed)} must share dims and sizes; "
                             f"{v!r} has {dict(ds[v].sizes)}, {needed[0]!r} "
                             f"{dict(first.sizes)}")
    if count_samples(first, variables.channels) < 1:
        raise ValueError(f"{name} holds no samples (dims {dict(first.sizes)})")


def _lead_dims(da: xr.DataArray, channels: str | None = None) -> list:
    return [d for d in da.dims if d not in GRID_DIMS and d != channels]


def count_samples(da: xr.DataArray, channels: str | None = None) -> int:
    """Number of samples of a field: the product of its dims other than ``y``, ``x``
    and the channel dim ``channels``."""
    return int(np.prod([da.sizes[d] for d in _lead_dims(da, channels)], dtype=np.int64))


def variable_samples(ds: xr.Dataset, variables: Variables) -> int:
    """Number of samples of ``ds`` as a network of ``variables`` stacks them (its first
    input's dims other than ``y``, ``x`` and the channel dim; every variable has them)."""
    return count_samples(ds[variables.inputs[0]], variables.channels)


def sample_fields(ds: xr.Dataset, names=None, channels: str | None = None) -> dict:
    """Variables of an LES Dataset as ``(sample, level, y, x)`` arrays, leading dims stacked.

    Parameters
    ----------
    ds : xarray.Dataset
        An LES Dataset (numpy- or dask-backed).
    names : sequence of str, optional
        Variables to return (default ``psi``, ``omega``, ``pi``).
    channels : str, optional
        The channel dim (``level`` axis); None: ``level`` has length 1.

    Returns
    -------
    dict
        ``{name: array}``, numpy or dask as the data are, the samples stacked in
        the order of the leading dims of ``names[0]`` (member-major, then time).
    """
    names = Variables().names if names is None else tuple(names)
    lead = _lead_dims(ds[names[0]], channels)
    order = lead + ([channels] if channels else []) + list(GRID_DIMS)
    arrays = {v: ds[v].transpose(*order).data for v in names}
    return {v: a.reshape((-1, a.shape[-3] if channels else 1) + a.shape[-2:])
            for v, a in arrays.items()}


def _is_lazy(arr) -> bool:
    return hasattr(arr, "dask") or type(arr).__module__.startswith("dask")


def compute_normalization(ds: xr.Dataset, *, name: str = "ds", indices=None,
                          variables: Variables | None = None) -> dict:
    """Training-set standard deviations of the inputs and outputs (one per variable,
    over all its levels).

    Also checks the data for NaN (in the same pass over dask-backed data).

    Parameters
    ----------
    ds : xarray.Dataset
        An LES Dataset (numpy- or dask-backed).
    name : str
        Argument name for error messages.
    indices : array of int, optional
        Stacked sample indices to use (default: all).
    variables : Variables, optional
        The variables (default ψ̄, ω̄ → Π).

    Returns
    -------
    dict
        ``{variable: std}`` as floats (``{"psi": ..., "omega": ..., "pi": ...}``).

    Raises
    ------
    ValueError
        NaN in the data, or a variable with zero standard deviation.
    """
    import dask

    variables = Variables.from_any(variables)
    check_les_dataset(ds, name, variables=variables)
    todo = {}
    for v, a in sample_fields(ds, variables.names, variables.channels).items():  # numpy or dask: one pass over dask-backed data
        a = a if indices is None else a[np.asarray(indices)]
        todo[v] = (np.isnan(a).sum(), a.std(dtype=np.float64))
    (stats,) = dask.compute(todo)
    out = {}
    for v, (nans, std) in stats.items():
        nans, std = int(nans), float(std)
        if nans:
            raise ValueError(f"{name}[{v!r}] contains {nans} NaN value(s); the network cannot "
                             "train on them: drop or fill them first (e.g. ds.dropna('time'))")
        if not (std > 0 and math.isfinite(std)):
            raise ValueError(f"{name}[{v!r}] has standard deviation {std}; it cannot be "
                             "normalized (constant or infinite data)")
        out[v] = std
    return out


# ----------------------------------------------------------------------- data
@dataclass
class ArrayData:
    """Normalized training data held in memory.

    Parameters
    ----------
    x : numpy.ndarray
        Inputs ``(sample, y, x, c_in)`` float32.
    y : numpy.ndarray
        Targets ``(sample, y, x, c_out)`` float32.
    """

    x: np.ndarray
    y: np.ndarray
    in_memory: bool = field(default=True, init=False)

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(self.x.shape[0])

    @property
    def grid(self) -> tuple:
        """``(ny, nx)``."""
        return tuple(self.x.shape[1:3])

    def arrays(self) -> tuple:
        """``(x, y)``."""
        return self.x, self.y

    def order(self, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
        """The positions (0..n-1) of the samples in the order :meth:`batches` yields them:
        a permutation drawn from ``(seed, epoch)`` when ``shuffle``, else ``0..n-1``."""
        n = self.n_samples
        if not shuffle:
            return np.arange(n)
        return np.random.default_rng([int(seed), int(epoch)]).permutation(n)

    def batches(self, epoch: int, batch_size: int, seed: int, shuffle: bool = True):
        """Yield ``(x, y)`` batches covering every sample once, consecutive runs of
        ``batch_size`` samples of :meth:`order`."""
        order = self.order(epoch, seed, shuffle)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass
class StreamData:
    """Normalized training data streamed from (dask) arrays, block by block.

    Each epoch visits the blocks of ``block`` consecutive samples in an order
    drawn from ``(seed, epoch)``, shuffles the samples inside each block, and
    yields full batches (the last one of the epoch may be smaller). Only one
    block (plus a partial batch) is in memory at a time.

    Parameters
    ----------
    fields : dict
        ``{variable: array}`` ``(sample, level, y, x)``, numpy or dask.
    normalization : dict
        Standard deviations per variable.
    indices : numpy.ndarray
        Sorted sample indices to use.
    block : int
        Samples loaded at once.
    variables : Variables
        Which fields are inputs and which outputs.
    """

    fields: dict
    normalization: dict
    indices: np.ndarray
    block: int = 256
    variables: Variables = field(default_factory=Variables)
    in_memory: bool = field(default=False, init=False)

    @property
    def n_samples(self) -> int:
        """Number of samples."""
        return int(len(self.indices))

    @property
    def grid(self) -> tuple:
        """``(ny, nx)``."""
        return tuple(next(iter(self.fields.values())).shape[-2:])

    def arrays(self) -> tuple:
        """Not available: the data are streamed."""
        raise RuntimeError("StreamData is streamed; use batches()")

    def load(self, idx) -> tuple:
        """Normalized ``(x, y)`` for the given sample indices (computes dask blocks)."""
        return load_normalized(self.fields, self.normalization, idx, self.variables)

    def ends(self, n: int) -> tuple:
        """Normalized ``(x_first, y_first, x_last, y_last)`` of the first and last ``n`` samples.

        Cheap (at most ``2 n`` samples are computed); used to fingerprint the
        data for checkpoints (:func:`xtl.nn.backends.loop.data_digest`).
        """
        x0, y0 = self.load(self.indices[:n])
        x1, y1 = self.load(self.indices[-n:])
        return x0, y0, x1, y1

    def _block_draws(self, epoch: int, seed: int, shuffle: bool):
        """Yield ``(start, permutation inside the block)`` per block in the epoch's order:
        the blocks in an order drawn from ``(seed, epoch)``, each shuffled inside (the
        permutation is None without ``shuffle``)."""
        starts = np.arange(0, self.n_samples, self.block)
        if not shuffle:
            yield from ((s, None) for s in starts)
            return
        rng = np.random.default_rng([int(seed), int(epoch), 1])
        for s in starts[rng.permutation(len(starts))]:
            yield s, rng.permutation(min(self.block, self.n_samples - s))

    def order(self, epoch: int, seed: int, shuffle: bool = True) -> np.ndarray:
        """The positions (0..n-1 in ``indices``) of the samples in the order
        :meth:`batches` yields them (its batches are consecutive runs of it)."""
        if not shuffle:
            return np.arange(self.n_samples)
        parts = [s + p for s, p in self._block_draws(epoch, seed, shuffle)]
        return np.concatenate(parts) if parts else np.arange(0)

    def batches(self, epoch: int, batch_size: int, seed: int, shuffle: bool = True):
        """Yield ``(x, y)`` batches covering every sample once (see the class docstring)."""
        carry = None
        for s, p in self._block_draws(epoch, seed, shuffle):
            x, y = self.load(self.indices[s:s + self.block])
            if p is not None:
                x, y = x[p], y[p]
            if carry is not None:
                x, y = np.concatenate([carry[0], x]), np.concatenate([carry[1], y])
            n_full = (len(x) // batch_size) * batch_size
            for i in range(0, n_full, batch_size):
                yield x[i:i + batch_size], y[i:i + batch_size]
            carry = (x[n_full:], y[n_full:]) if n_full < len(x) else None
        if carry is not None:
            yield carry


def load_normalized(fields: dict, normalization: dict, indices, variables: Variables) -> tuple:
    """Normalized float32 ``(x (n, y, x, c_in), y (n, y, x, c_out))`` of the given samples.

    Computes only those samples of dask-backed fields.
    """
    import dask

    names = variables.names
    parts = dask.compute(*[fields[v][indices] for v in names])
    loaded = {v: np.asarray(p, dtype=np.float32) for v, p in zip(names, parts)}
    return (stack_channels(loaded, variables.inputs, normalization),
            stack_channels(loaded, variables.outputs, normalization))


def _make_data(fields, normalization, indices, options: FitOptions, n: int,
               variables: Variables):
    """The given samples, normalized: in memory, or streamed when ``options.in_memory``
    says so or, when None, ``n`` samples of dask-backed fields exceed
    ``options.memory_limit`` (numpy-backed data are always held)."""
    in_memory = options.in_memory
    if in_memory is None:
        sample_size = sum(int(np.prod(a.shape[1:])) for a in fields.values())
        limit = _DEFAULT_MEMORY_LIMIT if options.memory_limit is None else options.memory_limit
        in_memory = (not any(_is_lazy(a) for a in fields.values())
                     or n * sample_size * 4 <= limit)
    if in_memory:
        return ArrayData(*load_normalized(fields, normalization, indices, variables))
    return StreamData(fields, normalization, np.asarray(indices), block=options.block,
                      variables=variables)


def check_validation(validation):
    """``validation`` as None, an LES Dataset, or a float in [0, 1): the fraction of
    the samples held out for validation (by :func:`train`, :func:`transfer`, a sweep
    and a config alike).

    Raises
    ------
    TypeError, ValueError
        Not a number (nor a Dataset or None), or not in [0, 1); the message says so.
    """
    if validation is None or isinstance(validation, xr.Dataset):
        return validation
    try:
        return check_float(validation, "validation", minimum=0.0, below=1.0)
    except (TypeError, ValueError) as err:
        raise type(err)(f"validation must be a fraction in [0, 1) of the samples held out "
                        f"for validation, an LES Dataset or None, got {validation!r}") from None


def _split(n: int, validation) -> tuple:
    """``(train_indices, val_indices or None)`` with the last fraction (checked) held out."""
    n_val = 0 if validation is None or isinstance(validation, xr.Dataset) \
        else int(round(validation * n))
    if n_val == 0:
        return np.arange(n), None
    if n - n_val < 1:
        raise ValueError(f"validation={validation} leaves no training samples out of {n}")
    return np.arange(n - n_val), np.arange(n - n_val, n)


def epoch_records(history: dict, epochs: int) -> dict:
    """How many epochs a training ran, which one it kept, and whether it stopped early.

    Parameters
    ----------
    history : dict
        ``{"loss": [...], "val_loss": [...]}`` as returned by a backend's ``fit``.
    epochs : int
        The epoch cap the training was given.

    Returns
    -------
    dict
        ``epochs_run`` (epochs trained), ``best_epoch`` (1-based epoch of the lowest
        ``val_loss``, or ``loss`` without validation: the weights early stopping
        restores) and ``stopped_early`` (fewer epochs than the cap).
    """
    monitored = history.get("val_loss") or history.get("loss") or []
    run = len(history.get("loss", []))
    best = int(np.argmin(monitored)) + 1 if len(monitored) else 0
    return {"epochs_run": run, "best_epoch": best, "stopped_early": bool(run < epochs)}


def _case_name(ds: xr.Dataset) -> str:
    return str(next((ds.attrs[k] for k in ("case_name", "case", "name") if k in ds.attrs),
                    "unknown"))


def _prepare(ds, normalization, validation, options: FitOptions, indices, name,
             variables: Variables):
    """Training and validation data objects from an LES Dataset."""
    validation = check_validation(validation)
    fields = sample_fields(ds, variables.names, variables.channels)
    n_all = len(indices)
    train_pos, val_pos = _split(n_all, validation)
    train_idx = indices[train_pos]
    if normalization is None:
        normalization = compute_normalization(ds, name=name, indices=train_idx,
                                              variables=variables)
    else:  # still refuse NaN anywhere we train
        compute_normalization(ds, name=name, indices=indices, variables=variables)
    train_data = _make_data(fields, normalization, train_idx, options, n_all, variables)
    val_data = None
    if isinstance(validation, xr.Dataset):
        check_same_levels(ds, validation, variables, "validation")
        compute_normalization(validation, name="validation", variables=variables)
        vf = sample_fields(validation, variables.names, variables.channels)
        nv = len(vf[variables.outputs[0]])
        val_data = _make_data(vf, normalization, np.arange(nv), options, nv, variables)
    elif val_pos is not None:
        val_data = _make_data(fields, normalization, indices[val_pos], options, n_all,
                              variables)
    return train_data, val_data, normalization


def check_same_levels(ds, other, variables: Variables, name: str) -> None:
    """Raise a ValueError naming ``name`` when ``other`` has another number of entries
    of the channel dim than ``ds`` (a network has one number of channels)."""
    dim = variables.channels
    if dim and ds.sizes[dim] != other.sizes.get(dim):
        raise ValueError(f"{name} must have {ds.sizes[dim]} entries of the channel dim "
                         f"{dim!r}, like the training data; it has {other.sizes.get(dim)}")


def data_levels(ds, variables: Variables) -> int:
    """Entries of the channel dim of ``ds`` (1 without one)."""
    return int(ds.sizes[variables.channels]) if variables.channels else 1


# ---------------------------------------------------------------------- train
def train(ds, spec=None, options: FitOptions | None = None, *, inputs=None, outputs=None,
          channels=None, backend="keras", validation=0.1, **fit) -> Model:
    """Train a closure network (the base network, BNN) on an LES Dataset.

    Parameters
    ----------
    ds : xarray.Dataset
        LES data holding the inputs and outputs on dims including ``y``, ``x``
        (any order); the dims other than these and ``channels`` are stacked
        into samples. Numpy- or dask-backed.
    spec : NetworkSpec, mapping or None
        Architecture; None is the paper's network (11 layers, 64 channels, 5×5).
        Its input and output channels are set from the data.
    options : FitOptions, mapping, optional
        How to fit: epochs, batch size, learning rate, seed (of the initial
        weights and the per-epoch shuffling: same seed, same weights), early
        stopping, checkpoints, data streaming, progress (see
        :class:`xtl.nn.backends.loop.FitOptions` for each option and its default).
    inputs, outputs : str or sequence of str, optional
        The input and output variables (default ``["psi", "omega"]`` → ``["pi"]``).
    channels : str, optional
        A dim whose entries become channels (e.g. ``"lev"``: a two-layer model's
        levels); default None, every dim but ``y``, ``x`` holds samples.
    backend : str
        Registered backend name.
    validation : float, xarray.Dataset or None
        Fraction of samples held out for validation (the last ones: the
        latest times, or the last members), an LES Dataset, or None.
    **fit
        Single :class:`~xtl.nn.backends.loop.FitOptions` by name (``epochs=5``), replacing
        those of ``options``.

    Returns
    -------
    Model
        With ``variables`` (the inputs, outputs and channel dim), ``normalization``,
        ``history`` (Dataset over ``epoch``) and ``provenance`` (training case,
        grid ``[ny, nx]``, sample counts, hyper-parameters, seed, device).

    Raises
    ------
    TypeError, ValueError
        A Dataset without the variables or the channel dim, NaN in the data,
        bad arguments, an unknown backend.

    Examples
    --------
    >>> model = xtl.train(les, {"n_layers": 4, "channels": 16}, epochs=5)  # doctest: +SKIP
    >>> qg = xtl.train(qg_les, spec, inputs=["q"], outputs=["pi_q"],
    ...                channels="lev")                                    # doctest: +SKIP
    """
    options = FitOptions.merge(options, **fit)
    variables = Variables.from_any(None, inputs=inputs, outputs=outputs, channels=channels)
    check_les_dataset(ds, "ds", variables=variables)
    n_in, n_out = variables.channel_count(data_levels(ds, variables))
    spec = dataclasses.replace(NetworkSpec.from_any(spec), input_channels=n_in,
                               output_channels=n_out)
    be = get_backend(backend)
    n_all = variable_samples(ds, variables)
    train_data, val_data, norm = _prepare(ds, None, validation, options, np.arange(n_all), "ds",
                                          variables)
    model = be.build(spec, norm, seed=options.seed, variables=variables)
    history = be.fit(model, train_data, val_data, options)
    model.history = history_to_dataset(history)
    model.provenance = {
        "kind": "base",
        "training_case": _case_name(ds),
        "grid": list(train_data.grid),
        "n_samples": train_data.n_samples,
        "n_validation": 0 if val_data is None else val_data.n_samples,
        **_fit_provenance(options, history),
        "streamed": not train_data.in_memory,
        "device": be.device(),
    }
    return model


def _fit_provenance(options: FitOptions, history: dict) -> dict:
    """The fit's settings and epochs for a model's provenance."""
    return {"epochs": options.epochs, **epoch_records(history, options.epochs),
            "batch_size": options.batch_size, "learning_rate": options.learning_rate,
            "seed": options.seed}


# ------------------------------------------------------------------- transfer
def select_samples(n_total: int, n_samples=None, fraction=None, seed: int = 0) -> np.ndarray:
    """A sorted random subset of ``range(n_total)``, drawn from ``seed``.

    Parameters
    ----------
    n_total : int
        Number of samples to draw from.
    n_samples : int, optional
        Subset size.
    fraction : float, optional
        Or the fraction of ``n_total`` in (0, 1] (at least one sample).
    seed : int
        The same seed draws the same subset; another seed another one.

    Returns
    -------
    numpy.ndarray
        Sorted indices; every index when both sizes are None.

    Raises
    ------
    ValueError
        Both sizes given, or a size outside its range.
    """
    if n_samples is not None and fraction is not None:
        raise ValueError("give n_samples or fraction, not both")
    if n_samples is None and fraction is None:
        return np.arange(n_total)
    if fraction is not None:
        f = float(fraction)
        if not 0 < f <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
        n = max(1, int(round(f * n_total)))
    else:
        n = check_int(n_samples, "n_samples", minimum=1)
        if n > n_total:
            raise ValueError(f"n_samples={n} exceeds the {n_total} samples of target_ds")
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(n_total, size=n, replace=False))


def transfer(base: Model, target_ds, layers, options: FitOptions | None = None, *,
             n_samples: int | None = None, fraction: float | None = None, validation=0.1,
             renormalize: bool = False, **fit) -> Model:
    """Transfer learning: re-train chosen layers of ``base`` on target data (the TLNN).

    Parameters
    ----------
    base : Model
        The base network (left untouched).
    target_ds : xarray.Dataset
        LES data of the target flow, with the base's variables (``base.variables``).
    layers : int or sequence of int
        Conv layers to re-train, in 1..L. Every other weight stays bitwise equal.
    options : FitOptions, mapping, optional
        How to fit, as in :func:`train`; its ``seed`` also draws the subset.
    n_samples : int, optional
        Use a random subset of this many target samples (seeded by ``seed``).
    fraction : float, optional
        Or this fraction of the target samples (e.g. 0.1). Default: all.
    validation : float, xarray.Dataset or None
        As in :func:`train` (a fraction of the selected samples).
    renormalize : bool
        Use the target data's standard deviations instead of the base model's
        (default False: the base normalization is kept).
    **fit
        Single :class:`~xtl.nn.backends.loop.FitOptions` by name, as in :func:`train`.

    Returns
    -------
    Model
        A new model; ``provenance`` holds ``base_model`` (its ``model_id``),
        ``base_case``, ``retrained_layers``, ``target_case``, ``n_samples``
        (re-training samples) and ``fraction``.

    Raises
    ------
    ValueError
        A layer outside 1..L, bad ``n_samples``/``fraction``, bad data.
    """
    if not isinstance(base, Model):
        raise TypeError(f"base must be an xtl Model, got {type(base).__name__}")
    options = FitOptions.merge(options, **fit)
    layers = check_layers(layers, base.n_layers)
    variables = base.variables
    check_model_data(base, target_ds, "target_ds")
    be = get_backend(base.backend)
    n_total = variable_samples(target_ds, variables)
    subset = select_samples(n_total, n_samples, fraction, options.seed)
    norm = None if renormalize else dict(base.normalization)
    train_data, val_data, norm = _prepare(target_ds, norm, validation, options, subset,
                                          "target_ds", variables)
    model = be.clone(base)
    model.normalization = dict(norm)
    model.history = None
    history = be.fit(model, train_data, val_data, options, layers=layers)
    model.history = history_to_dataset(history)
    model.provenance = {
        "kind": "transfer",
        "base_model": model_id(base),
        "base_case": base.provenance.get("training_case", "unknown"),
        "retrained_layers": list(layers),
        "target_case": _case_name(target_ds),
        "training_case": _case_name(target_ds),
        "grid": list(train_data.grid),
        "n_samples": int(len(subset)),
        "n_train": train_data.n_samples,
        "n_validation": 0 if val_data is None else val_data.n_samples,
        "fraction": float(len(subset) / n_total),
        "renormalized": bool(renormalize),
        **_fit_provenance(options, history),
    }
    return model


# ----------------------------------------------------------- predict/evaluate
def check_model_data(model: Model, ds, name: str = "ds", *, need_target: bool = True) -> None:
    """Check that ``ds`` holds the variables of ``model`` (:func:`check_les_dataset`)
    with the channel dim's size the network was built for.

    Raises
    ------
    TypeError, ValueError
        Naming ``name``, the variables and the sizes expected.
    """
    check_les_dataset(ds, name, need_target=need_target, variables=model.variables)
    dim = model.variables.channels
    if dim and ds.sizes[dim] != model.levels:
        raise ValueError(f"{name} has {ds.sizes[dim]} entries of the channel dim {dim!r}; "
                         f"the network was built for {model.levels}")


def predict(model: Model, ds, *, batch_size: int = 32):
    """The outputs predicted by ``model`` from an LES Dataset, in physical units.

    Parameters
    ----------
    ds : xarray.Dataset
        Holds the model's inputs (``model.variables.inputs``), dims in any order.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        The output (``pi`` by default) with the dims and coordinates of the first
        input; a Dataset of them for a model with several outputs. A network with
        ``"valid"`` layers (:attr:`NetworkSpec.shrink <xtl.nn.spec.NetworkSpec.shrink>`
        cells lost per side) gives the interior of the grid, with its coordinates.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    check_model_data(model, ds, "ds", need_target=False)
    variables = model.variables
    first = ds[variables.inputs[0]]
    order = _lead_dims(first, variables.channels) \
        + ([variables.channels] if variables.channels else []) + list(GRID_DIMS)
    arrays = [ds[v].transpose(*order).values for v in variables.inputs]
    out = get_backend(model.backend).predict(model, *arrays, batch_size=batch_size)
    out = (out,) if len(variables.outputs) == 1 else out
    template = first.transpose(*order)
    s = model.spec.shrink  # 'valid' layers: the output is the interior of the grid
    template = template.isel(y=slice(s, -s), x=slice(s, -s)) if s else template
    predicted = {
        name: xr.DataArray(a, dims=template.dims, coords=template.coords, name=name,
                           attrs={"long_name": f"{name} predicted by the CNN closure",
                                  "units": ds[name].attrs.get("units", "1")
                                  if name in ds else "1"}).transpose(*first.dims)
        for name, a in zip(variables.outputs, out)}
    return predicted[variables.outputs[0]] if len(out) == 1 else xr.Dataset(predicted)


def conditioning_field(ds, output: str):
    """The field a prediction of ``output`` is conditioned on for forward/backscatter
    (:func:`xtl.data.metrics.conditional_correlation`): ``omega`` for ``pi``, the
    scalar ``q`` for ``pi_q``; None when ``ds`` lacks it."""
    name = "omega" if output == "pi" else output[3:] if output.startswith("pi_") else None
    return ds[name] if name in ds.data_vars else None


def evaluate(model: Model, ds, *, batch_size: int = 32) -> xr.Dataset:
    """A priori metrics of ``model`` on an LES Dataset (see :func:`xtl.data.metrics.score`).

    Returns
    -------
    xarray.Dataset
        Scalars ``cc``, ``cc_forward``, ``cc_backscatter``,
        ``backscatter_fraction``, ``rel_l2``, ``spectrum_error``; for a model
        with several outputs or a channel dim, over ``variable`` (the outputs)
        and the channel dim.

    Raises
    ------
    ValueError
        A network with ``"valid"`` layers: its output misses the grid's edges, and the
        scores (spectra) need the whole periodic field.
    """
    check_model_data(model, ds, "ds")
    if model.spec.shrink:
        raise ValueError(f"model has 'valid' layers: its output misses {model.spec.shrink} "
                         "cells at each edge, and the a priori scores need the whole periodic "
                         "field; use xtl.predict for its output on the interior")
    pred = predict(model, ds, batch_size=batch_size)
    pred = pred if isinstance(pred, xr.Dataset) else pred.to_dataset()
    dim = model.variables.channels
    parts = []
    for name in model.variables.outputs:
        arrays = (pred[name], ds[name].transpose(*pred[name].dims), conditioning_field(ds, name))
        if dim is None:
            parts.append(_metrics.score(*arrays))
            continue
        per_level = [_metrics.score(*(None if a is None else a.isel({dim: i}) for a in arrays))
                     for i in range(ds.sizes[dim])]
        parts.append(xr.concat(per_level, ds[dim]))
    if len(parts) == 1:
        return parts[0]
    return xr.concat(parts, xr.DataArray(list(model.variables.outputs), dims="variable"))


# ------------------------------------------------------------------ subsets
def stack_samples(ds: xr.Dataset, indices, variables: Variables | None = None) -> xr.Dataset:
    """The given stacked samples of ``ds`` as an in-memory Dataset on ``(sample, y, x)``
    (``(sample, <channel dim>, y, x)`` with one).

    Parameters
    ----------
    ds : xarray.Dataset
        An LES Dataset (numpy- or dask-backed; only the chosen samples are computed).
    indices : sequence of int
        Stacked sample indices (see :func:`sample_fields` for the order).
    variables : Variables, optional
        The variables kept (default ψ̄, ω̄ → Π).

    Returns
    -------
    xarray.Dataset
        The variables on ``(sample, y, x)`` with their attrs, the grid (and channel)
        coordinates and the Dataset's attrs.
    """
    import dask

    variables = Variables.from_any(variables)
    names, dim = variables.names, variables.channels
    fields = sample_fields(ds, names, dim)
    arrays = dask.compute(*[fields[v][np.asarray(indices)] for v in names])
    dims = ("sample",) + ((dim,) if dim else ()) + GRID_DIMS
    coords = {c: ds[c] for c in (dim,) + GRID_DIMS if c and c in ds.coords}
    return xr.Dataset({v: (dims, np.asarray(a) if dim else np.asarray(a)[:, 0], ds[v].attrs)
                       for v, a in zip(names, arrays)},
                      coords={"sample": np.arange(len(indices)), **coords}, attrs=ds.attrs)
