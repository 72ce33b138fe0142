"""Explaining a trained closure through its activations.

* :func:`activations` -- the outputs of chosen conv layers for some LES
  inputs, as a labeled Dataset ``activation(layer, sample, channel, y, x)``;
* :func:`activation_spectra` -- their isotropic power spectra averaged over
  samples, ``spectrum(layer, channel, k)``, computed batch by batch so that
  all activations are never held at once (inputs may be dask-backed);
* :func:`recommend_layers` -- which layer(s) of a base network to re-train for
  a target flow, before any re-training (the physics-guided framework of
  Subel et al., PNAS Nexus 2023), with every quantity behind the ranking;
* :func:`compare_recommendation` -- how that ranking compares with a measured
  single-layer sweep (:func:`xtl.training.layer_sweep`);
* :func:`spectral_distance` -- the normalized distance between two spectra
  that the ranking uses.

Spectra come from :func:`xtl.spectral.spectrum` (``kind="power"``): shell
sums on integer radian wavenumbers, so the sum over ``k`` is the spatial
mean square of the activation.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import xarray as xr

from .backends import INPUTS, Model, check_layers, get_backend
from .backends.base import stack_inputs
from .spectral import spectrum
from .training import _fields, _n_samples, check_les_dataset

__all__ = ["activations", "activation_spectra", "recommend_layers", "compare_recommendation",
           "recommended_layers", "spectral_distance", "DIFFERS_THRESHOLD", "SPECTRAL_FLOOR"]


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


# =====================================================================================
# Which layer to re-train: the physics-guided framework of Subel et al. (2023)
# =====================================================================================
#: Default threshold, in decades, on |log10(S_target / S_base)| above which a
#: wavenumber shell is reported as one where the flows differ (0.3 decades ≈ a
#: factor 2). It only labels the shells (``differs``, ``flows_differ``, the warning);
#: the overlap and the score use the continuous weight ``|log10(S_target/S_base)|``.
DIFFERS_THRESHOLD = 0.3
#: Shells whose power is below this fraction of the variable's largest shell, in
#: both flows, are treated as equal (round-off, not physics): see :func:`_log_ratio`.
SPECTRAL_FLOOR = 1e-10
#: The variables whose spectra are compared, in order: the two inputs, then Π.
FLOW_VARIABLES = INPUTS + ("pi",)

# metrics of xtl.training.layer_sweep for which a lower value is better
_LOWER_IS_BETTER = ("rel_l2", "spectrum_error", "final_loss", "final_val_loss")


def _attrs(da, **attrs):
    """``da`` with its attrs replaced by ``attrs`` (a shallow copy)."""
    da = da.copy(deep=False)
    da.attrs = dict(attrs)
    return da


def _check_number(value, name, *, lo=0.0, hi=np.inf, lo_open=True):
    """A real number in (lo, hi] (or [lo, hi] with ``lo_open=False``), as float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not np.isfinite(value) or value > hi or value < lo \
            or (lo_open and value == lo):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be a number in {interval}; got {value!r}")
    return float(value)


def _grid(ds):
    da = ds[INPUTS[0]]
    return da.sizes["y"], da.sizes["x"]


def _mean_spectra(ds, kmax):
    """Time/member-mean power spectra of ``psi``, ``omega``, ``pi`` → (variable, k)."""
    out = []
    for v in FLOW_VARIABLES:
        da = ds[v]
        lead = [d for d in da.dims if d not in ("y", "x")]
        if da.chunks is None and lead:  # bound the FFT's memory: ~32 MiB of float64 a chunk
            per = 8 * da.sizes["y"] * da.sizes["x"] * int(np.prod([da.sizes[d] for d in lead[1:]]))
            da = da.chunk({lead[0]: max(1, 2**25 // per)})
        s = spectrum(da.astype(np.float64), "power", kmax=kmax)
        out.append(s.mean([d for d in s.dims if d != "k"]))
    return xr.concat(out, dim="variable", coords="minimal", compat="override") \
        .assign_coords(variable=list(FLOW_VARIABLES)).compute()


def _log_ratio(target, base, floor=SPECTRAL_FLOOR):
    """``log10((S_t + ε)/(S_b + ε))`` with ``ε = floor · max_k max(S_t, S_b)`` per row.

    The floor keeps shells where both spectra are round-off (e.g. above a
    dealiasing cut-off) from counting as differences; it is negligible elsewhere.
    """
    eps = floor * np.maximum(target, base).max("k")
    return np.log10((target + eps) / (base + eps))


def spectral_distance(target, base, dim="k"):
    """Normalized spectral distance ``Σ_k |S_t − S_b| / Σ_k (S_t + S_b)``.

    A total-variation distance between two power spectra: 0 when they are equal,
    1 when their power lies in disjoint shells; it is unchanged when both are
    multiplied by the same constant (so units and normalization do not matter)
    but, unlike a log-ratio, it is sensitive to filtering: a filter that removes
    the shells where two fields differ brings their distance to 0.

    Parameters
    ----------
    target, base : xarray.DataArray
        Non-negative spectra with the dim ``dim`` (any other dims broadcast).
    dim : str
        The wavenumber dim summed over.

    Returns
    -------
    xarray.DataArray
        The distance in [0, 1] over the other dims; NaN where both spectra are
        zero (e.g. a dead or NaN-padded channel).

    Examples
    --------
    >>> spectral_distance(S_target.sel(k=slice(1, None)), S_base.sel(k=slice(1, None)))
    """
    for name, da in (("target", target), ("base", base)):
        if not isinstance(da, xr.DataArray):
            raise TypeError(f"{name} must be an xarray.DataArray spectrum with a {dim!r} dim; "
                            f"got {type(da).__name__}")
        if dim not in da.dims:
            raise ValueError(f"{name} must have the wavenumber dim {dim!r}; dims are {da.dims}")
    num = abs(target - base).sum(dim, skipna=False)
    den = (target + base).sum(dim, skipna=False)
    return num / den.where(den > 0)


def _channel_divergence(target, base):
    """Spectral distance (shells k ≥ 1) per row of two spectra with a ``k`` dim."""
    pos = dict(k=slice(1, None))
    return spectral_distance(target.sel(**pos), base.sel(**pos))


def _filter_profile(model_ds, n_grid, kmax):
    """Mean over a layer's kernels of the shell-mean |Ŵ| on the LES grid → (layer, k)."""
    from .spectral import kernel_filters, radial_profile

    filters = kernel_filters(model_ds.assign(kernel=model_ds["kernel"].astype(np.float64)),
                             n_grid)
    prof = radial_profile(filters, kmax=kmax)
    return prof.mean(["channel_out", "channel_in"], skipna=True).compute()


def _shell_weight(log_ratio):
    """``w(k) = max over variables of |log_ratio|`` (decades), 0 at ``k = 0`` and for NaN."""
    w = abs(log_ratio).max("variable", skipna=True).fillna(0.0)
    return w.where(w["k"] >= 1, 0.0)


def _overlap(profile, weight):
    """Mean of ``weight`` over shells k ≥ 1, weighted by a layer's mean filter response.

    ``O(l) = Σ_{k≥1} p_l(k)·w(k) / Σ_{k≥1} p_l(k)``, in the units of ``weight``
    (decades); NaN for a layer whose response is zero at every shell k ≥ 1.
    """
    pos = dict(k=slice(1, None))
    prof = profile.sel(**pos)
    inside = (prof * weight.sel(**pos)).sum("k")
    total = prof.sum("k")
    return inside / total.where(total > 0)


def _rank_desc(values, layers):
    """Ranks 1..n by decreasing value, ties (and NaN, last) broken by the shallower layer."""
    v = np.where(np.isfinite(values), values, -np.inf)
    order = np.lexsort((np.asarray(layers), -v))
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def _check_pair_datasets(base_ds, target_ds):
    check_les_dataset(base_ds, "base_ds")
    check_les_dataset(target_ds, "target_ds")
    gb, gt = _grid(base_ds), _grid(target_ds)
    if gb != gt:
        raise ValueError(
            f"target_ds must be on the same LES grid as base_ds (the spectra are compared "
            f"shell by shell): base_ds is {gb[0]}×{gb[1]}, target_ds is {gt[0]}×{gt[1]}; "
            "coarse-grain both to one grid first"
        )
    return gb


def _check_kmax_for_grid(kmax, grid):
    half = min(grid) // 2
    if kmax is None:
        return half
    if isinstance(kmax, bool) or not isinstance(kmax, (int, np.integer)) \
            or not 1 <= kmax <= half:
        raise ValueError(f"kmax must be an int in 1..{half} (the whole shells of the "
                         f"{grid[0]}×{grid[1]} LES grid); got {kmax!r}")
    return int(kmax)


def _check_top(top, n_candidates):
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) \
            or not 1 <= top <= n_candidates:
        raise ValueError(f"top must be an int in 1..{n_candidates} (the number of candidate "
                         f"layers); got {top!r}")
    return int(top)


def recommend_layers(base_model: Model, base_ds, target_ds, *, n: int | None = None,
                     layers=None, batch_size: int = 32, top: int = 1,
                     kmax: int | None = None, threshold: float = DIFFERS_THRESHOLD,
                     criteria: dict | None = None) -> xr.Dataset:
    """Rank the layers of a base network by how good they are to re-train, before any TL.

    The physics-guided framework of Subel et al. (PNAS Nexus 2023): the base and
    target flows differ at some wavenumbers; the layers of the base network (BNN)
    whose activations first and most strongly carry that difference, and whose
    filters act at those wavenumbers, are the ones to re-train. Four steps:

    1. **Flows.** Time/member-mean power spectra ``S(k)`` of ``psi``, ``omega`` and
       ``pi`` of both flows (:func:`xtl.spectral.spectrum`); their log-ratio
       ``r = log10(S_target/S_base)`` (with a round-off floor, see
       :data:`SPECTRAL_FLOOR`) and the weight of each shell
       ``w(k) = max over (ψ̄, ω̄, Π) of |r(k)|`` (decades, ``k ≥ 1``): how much the
       flows differ there. For reporting only, ``differs = |r| > threshold`` per
       variable and the band ``flows_differ(k)``: shells ``k ≥ 1`` where any of the
       three differs by more than ``threshold``.
    2. **Activations.** Sample-mean power spectra of every channel of each
       candidate layer of the BNN, fed base and then target inputs
       (:func:`activation_spectra`); per channel the spectral distance
       ``d = Σ_{k≥1}|S_t − S_b| / Σ_{k≥1}(S_t + S_b)`` (:func:`spectral_distance`,
       0 = same spectrum, 1 = disjoint), and the layer's ``divergence`` ``D(l)``,
       the mean of ``d`` over its live channels. ``input_divergence`` ``D(0)`` is
       the same mean over the inputs (ψ̄, ω̄).
    3. **Kernels.** The filter census of each layer (:func:`xtl.spectral.filter_census`,
       kernels zero-padded to ``n``) and the layer's mean filter response
       ``filter_profile(k)``: the shell mean of ``|Ŵ|`` on the LES grid averaged over
       the layer's kernels ``p_l(k)``; its ``overlap``
       ``O(l) = Σ_{k≥1} p_l(k)·w(k) / Σ_{k≥1} p_l(k)``, the mean of ``w`` weighted by
       the layer's response (decades, ≥ 0): large when the layer's filters act where
       the flows differ most. It is continuous in the spectra: it does not drop to 0
       when no shell crosses ``threshold``.
    4. **Score.** ``score(l) = D(l) · O(l) · R(l)`` with the reach
       ``R(l) = (L − l + 1)/L``, the fraction of the network's layers whose input
       changes when layer ``l`` is re-trained (a re-trained layer re-shapes the
       features of every frozen layer after it, none before it). Rank 1 is the
       highest score; ties go to the shallower layer.

    Parameters
    ----------
    base_model : Model
        The trained base network.
    base_ds, target_ds : xarray.Dataset
        LES Datasets of the base and target flows (``psi``, ``omega``, ``pi`` on
        ``(..., y, x)``, the same grid), numpy- or dask-backed. Every sample is
        used; pass a subset (e.g. ``ds.isel(time=slice(None, None, 10))``) to go
        faster. Only ``psi`` and ``omega`` feed the network; ``pi`` enters the band.
    n : int, optional
        Padded grid size of the filter census (default: the LES grid size,
        as in the paper). The overlap always uses the LES grid.
    layers : int or sequence of int, optional
        Candidate layers in 1..L (default all).
    batch_size : int
        Samples per forward pass of the activation spectra.
    top : int
        How many layers to recommend.
    kmax : int, optional
        Last wavenumber shell compared (default ``min(Ny, Nx)//2``, the whole shells).
    threshold : float
        Decades of ``|log10(S_target/S_base)|`` above which a shell is reported as
        differing (``differs``, ``flows_differ``; default 0.3, a factor ≈ 2). It does
        not enter the score.
    criteria : dict, optional
        Classification criteria for the census (``flat_ratio``, ``edge``,
        ``min_anisotropy``; see :func:`xtl.spectral.classify_filters`).

    Returns
    -------
    xarray.Dataset
        Over ``layer`` (the candidates): ``score``, ``rank`` (1 = best; read it
        as ``rec["rank"]``, ``rec.rank`` is xarray's method),
        ``divergence``, ``relative_divergence`` (``D(l)/D(0)``), ``overlap``,
        ``reach``; ``channel_divergence(layer, channel)``;
        ``activation_spectrum_base`` / ``_target(layer, channel, k)``;
        ``filter_profile(layer, k)``; ``filter_count`` / ``filter_fraction(layer,
        filter_type)``; over ``variable`` (psi, omega, pi) and ``k``:
        ``base_spectrum``, ``target_spectrum``, ``log_ratio``, ``differs``;
        ``spectral_difference(variable)`` (the spectral distance of the flows);
        ``flows_differ(k)``; ``shell_weight(k)`` (``w``); scalars ``input_divergence`` and
        ``first_divergent_layer`` (the first candidate whose divergence reaches
        half the largest; -1 when no layer has a live channel); ``recommended(choice)``, the ``top`` best layers.
        ``attrs`` hold ``recommended`` (a list), the formula, ``threshold``,
        ``n`` and the base model's id. Every variable has CF-like attrs.

    Raises
    ------
    TypeError, ValueError
        ``base_model`` is not a Model; a Dataset lacks ``psi``/``omega``/``pi``;
        the two grids differ; a layer outside 1..L; bad ``top``, ``kmax``,
        ``threshold``, ``n`` or ``batch_size``.

    Warns
    -----
    UserWarning
        When no shell differs by more than ``threshold``: the flows are close, the
        overlaps and scores are then small (``O(l) ≤ threshold``) but still rank the
        layers by where the remaining differences lie.

    Examples
    --------
    >>> rec = xtl.recommend_layers(base, les_base, les_target, top=2)
    >>> rec.score.to_series(), rec.attrs["recommended"]
    """
    from .backends import model_id, model_to_dataset
    from .spectral import filter_census

    if not isinstance(base_model, Model):
        raise TypeError(f"base_model must be an xtl Model, got {type(base_model).__name__}")
    grid = _check_pair_datasets(base_ds, target_ds)
    L = base_model.n_layers
    layers = check_layers(range(1, L + 1) if layers is None else layers, L)
    top = _check_top(top, len(layers))
    kmax = _check_kmax_for_grid(kmax, grid)
    threshold = _check_number(threshold, "threshold")
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                          or n < base_model.spec.kernel_size):
        raise ValueError(f"n must be None (the LES grid size) or an int >= the kernel size "
                         f"{base_model.spec.kernel_size}; got {n!r}")
    n_census = min(grid) if n is None else int(n)
    criteria = {} if criteria is None else dict(criteria)

    # 1. the flows: spectra, where they differ, how much
    s_base, s_target = _mean_spectra(base_ds, kmax), _mean_spectra(target_ds, kmax)
    log_ratio = _log_ratio(s_target, s_base)
    positive = log_ratio["k"] >= 1
    differs = (abs(log_ratio) > threshold) & positive
    band = differs.any("variable")  # reported, not used by the score
    weight = _shell_weight(log_ratio)
    flow_distance = _channel_divergence(s_target, s_base)
    input_div = float(flow_distance.sel(variable=list(INPUTS)).mean())
    if not bool(band.any()):
        warnings.warn(
            f"the base and target spectra of {FLOW_VARIABLES} differ by less than "
            f"threshold={threshold} decades at every shell 1..{kmax} (largest "
            f"{float(weight.max()):.3g}): the flows are close, so every overlap and score "
            "is small, but the ranking still follows where the remaining differences lie",
            UserWarning, stacklevel=2)

    # 2. the activations of the base network on base and target inputs
    act_b = activation_spectra(base_model, base_ds, layers, batch_size=batch_size, kmax=kmax)
    act_t = activation_spectra(base_model, target_ds, layers, batch_size=batch_size,
                               kmax=kmax)
    chan_div = _channel_divergence(act_t.spectrum, act_b.spectrum)
    divergence = chan_div.mean("channel", skipna=True)

    # 3. the kernels: census and mean filter response on the LES grid
    model_ds = model_to_dataset(base_model).sel(layer=list(layers))
    counts = filter_census(model_ds, n=n_census, **criteria)
    fractions = counts / counts.sum("filter_type")
    profile = _filter_profile(model_ds, min(grid), kmax)
    overlap = _overlap(profile, weight)

    # 4. the score
    layer = xr.DataArray(np.asarray(layers), dims="layer", coords={"layer": list(layers)})
    reach = (L - layer + 1) / L
    # a layer with no live channel (NaN divergence) carries no difference: score 0
    score = divergence.fillna(0.0) * overlap.fillna(0.0) * reach
    ranks = _rank_desc(score.values, layers)
    recommended = [int(layers[i]) for i in np.argsort(ranks)[:top]]
    div = divergence.values
    first = int(layers[int(np.flatnonzero(div >= 0.5 * np.nanmax(div))[0])]) \
        if np.isfinite(div).any() else -1

    formula = ("score(l) = D(l) * O(l) * R(l); D = divergence, O = overlap = "
               "sum_{k>=1} p_l(k) w(k) / sum_{k>=1} p_l(k) with p_l = filter_profile and "
               "w(k) = max over (psi, omega, pi) of |log10(S_target/S_base)| (decades), "
               "R = reach = (L - l + 1)/L; rank 1 = highest score, ties to the shallower")
    out = xr.Dataset(
        {
            "score": _attrs(score, long_name="layer-selection score D*O*R", units="decades",
                            description=formula),
            "rank": ("layer", ranks, {"long_name": "rank of the layer by score (1 = best "
                                      "to re-train)", "units": "1"}),
            "recommended": ("choice", np.asarray(recommended, np.int64),
                            {"long_name": f"the {top} best layer(s) to re-train, best "
                                          "first", "units": "1"}),
            "divergence": _attrs(divergence, long_name="activation divergence D(l)",
                                 units="1", description=(
                                     "mean over the layer's live channels of sum_{k>=1}"
                                     "|S_t - S_b| / sum_{k>=1}(S_t + S_b), S the sample-"
                                     "mean power spectra of the channel's output for "
                                     "target (t) and base (b) inputs; 0 = same, 1 = "
                                     "disjoint")),
            "relative_divergence": _attrs(
                divergence / input_div if input_div > 0 else divergence * np.nan,
                long_name="activation divergence relative to the inputs' D(l)/D(0)",
                units="1", description=">1: the layer amplifies the base/target difference"),
            "input_divergence": ((), input_div, {
                "long_name": "divergence D(0) of the inputs", "units": "1",
                "description": "mean of spectral_difference over psi and omega"}),
            "first_divergent_layer": ((), first, {
                "long_name": "first candidate layer whose divergence reaches half the "
                             "largest", "units": "1"}),
            "channel_divergence": _attrs(chan_div, long_name="activation divergence per "
                                         "channel (NaN for dead or absent channels)",
                                         units="1"),
            "overlap": _attrs(overlap.fillna(0.0), long_name="overlap O(l): mean over shells "
                              "of how much the flows differ, weighted by the layer's mean "
                              "filter response", units="decades", description=(
                                  "sum_{k>=1} filter_profile * shell_weight / "
                                  "sum_{k>=1} filter_profile")),
            "reach": _attrs(reach.astype(float), long_name="reach R(l) = (L - l + 1)/L, "
                            "fraction of the layers whose input re-training l changes",
                            units="1"),
            "filter_profile": _attrs(profile, long_name="mean over the layer's kernels of "
                                     "the shell-mean |W^| on the LES grid", units="1"),
            "filter_count": _attrs(counts, long_name="number of kernels of each filter type",
                                   units="1"),
            "filter_fraction": _attrs(fractions, long_name="fraction of the layer's kernels "
                                      "of each filter type", units="1"),
            "activation_spectrum_base": _attrs(
                act_b.spectrum, long_name="power spectrum of the layer output, base inputs, "
                "sample mean", units="1"),
            "activation_spectrum_target": _attrs(
                act_t.spectrum, long_name="power spectrum of the layer output, target "
                "inputs, sample mean", units="1"),
            "base_spectrum": _attrs(s_base, long_name="time/member-mean power spectrum, "
                                    "base flow", units="1"),
            "target_spectrum": _attrs(s_target, long_name="time/member-mean power spectrum, "
                                      "target flow", units="1"),
            "log_ratio": _attrs(log_ratio, long_name="log10(S_target/S_base)",
                                units="1", description=(
                                    f"with a floor {SPECTRAL_FLOOR} * max_k max(S_t, S_b) "
                                    "added to both spectra")),
            "differs": _attrs(differs, long_name=f"|log_ratio| > {threshold} (k >= 1)"),
            "flows_differ": _attrs(band, long_name="shells where psi, omega or pi differ "
                                   f"by more than {threshold} decades (reported only; not "
                                   "used by the score)"),
            "shell_weight": _attrs(weight, long_name="w(k) = max over psi, omega, pi of "
                                   "|log_ratio|: how much the flows differ at shell k "
                                   "(0 at k = 0)", units="decades"),
            "spectral_difference": _attrs(flow_distance, long_name="spectral distance of "
                                          "the flows sum_{k>=1}|S_t - S_b| / "
                                          "sum_{k>=1}(S_t + S_b)", units="1"),
        },
        coords={"choice": np.arange(1, top + 1)},
    )
    out.attrs = {
        "title": "which layer to re-train (Subel et al. 2023 framework)",
        "recommended": recommended,
        "formula": formula,
        "threshold": threshold,
        "spectral_floor": SPECTRAL_FLOOR,
        "n": int(n_census),
        "kmax": int(kmax),
        "n_layers": int(L),
        "base_model": model_id(base_model),
        "base_case": str(base_model.provenance.get("training_case", "unknown")),
        "base_data_case": str(base_ds.attrs.get("case_name", "unknown")),
        "target_case": str(target_ds.attrs.get("case_name", "unknown")),
    }
    return out


def _higher_is_better(metric, higher_is_better):
    if higher_is_better is not None:
        if not isinstance(higher_is_better, (bool, np.bool_)):
            raise TypeError(f"higher_is_better must be None or a bool; got {higher_is_better!r}")
        return bool(higher_is_better)
    if metric.startswith("cc") or metric.startswith("base_cc"):
        return True
    if metric in _LOWER_IS_BETTER:
        return False
    raise ValueError(f"cannot tell whether a higher {metric!r} is better: pass "
                     "higher_is_better=True or False")


def _spearman(a, b):
    """Spearman rank correlation and its p-value (NaN when either input is constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def recommended_layers(recommendation: xr.Dataset) -> list:
    """The recommended layer numbers of a :func:`recommend_layers` result.

    Parameters
    ----------
    recommendation : xarray.Dataset
        In memory or read back from netCDF (where a one-element list attribute
        becomes a scalar).

    Returns
    -------
    list of int
    """
    if "recommended" not in recommendation.attrs:
        raise ValueError("recommendation has no 'recommended' attribute; is it a "
                         "recommend_layers() result?")
    return [int(v) for v in np.atleast_1d(recommendation.attrs["recommended"])]


def compare_recommendation(recommendation, sweep, *, metric: str = "cc",
                           higher_is_better: bool | None = None) -> xr.Dataset:
    """How well a recommendation predicted a measured single-layer sweep.

    Parameters
    ----------
    recommendation : xarray.Dataset
        From :func:`recommend_layers` (``score(layer)`` and ``recommended``).
    sweep : xarray.Dataset
        From :func:`xtl.training.layer_sweep` with ``pairs=False``: a Dataset over
        ``layer`` holding ``metric``.
    metric : str
        The sweep's skill variable (default ``"cc"``, the correlation coefficient).
    higher_is_better : bool, optional
        Default: True for ``cc*`` metrics, False for ``rel_l2``,
        ``spectrum_error``, ``final_loss`` and ``final_val_loss``.

    Returns
    -------
    xarray.Dataset
        Over the ``layer`` s both hold: ``score``, the metric (under its own name),
        ``predicted_rank`` (by score, ties to the shallower layer) and
        ``measured_rank`` (by the metric, best = 1, ties share the best rank);
        over ``choice``: ``recommended_layer`` and ``recommended_measured_rank``;
        scalars ``spearman`` (Spearman's rank correlation between the score and the
        measured skill — the metric, or minus the metric when lower is better — so
        +1 is a perfect prediction and -1 a perfectly reversed one; NaN when either
        is constant), ``spearman_pvalue`` and ``best_measured_layer``. ``attrs``
        repeat the scalars and the top recommendation's measured rank.

    Raises
    ------
    TypeError, ValueError
        Not Datasets; a pair sweep; ``metric`` missing; fewer than 2 common layers;
        a recommended layer that the sweep did not re-train.
    """
    from scipy.stats import rankdata

    if not isinstance(recommendation, xr.Dataset) or "score" not in recommendation \
            or "layer" not in recommendation.dims:
        raise TypeError("recommendation must be the Dataset of recommend_layers, with "
                        "'score' over 'layer'")
    if not isinstance(sweep, xr.Dataset):
        raise TypeError(f"sweep must be the Dataset of layer_sweep, got {type(sweep).__name__}")
    if "layer" not in sweep.dims:
        raise ValueError("sweep must be a single-layer sweep over 'layer' (layer_sweep with "
                         f"pairs=False); its dims are {dict(sweep.sizes)}")
    if not isinstance(metric, str) or metric not in sweep.data_vars \
            or sweep[metric].dims != ("layer",):
        have = sorted(v for v in sweep.data_vars if sweep[v].dims == ("layer",))
        raise ValueError(f"metric must name a variable of sweep over 'layer'; got {metric!r}, "
                         f"sweep has {have}")
    higher = _higher_is_better(metric, higher_is_better)
    common = np.intersect1d(recommendation["layer"].values, sweep["layer"].values)
    if len(common) < 2:
        raise ValueError(
            "recommendation and sweep must share at least 2 layers to compare rankings; "
            f"recommendation has {recommendation['layer'].values.tolist()}, sweep has "
            f"{sweep['layer'].values.tolist()}")
    recommended = [int(x) for x in np.atleast_1d(
        recommendation["recommended"].values if "recommended" in recommendation
        else recommendation.attrs.get("recommended", []))]
    if not recommended:
        raise ValueError("recommendation holds no 'recommended' layer")
    missing = [x for x in recommended if x not in common]
    if missing:
        raise ValueError(f"sweep did not re-train the recommended layer(s) {missing}; it has "
                         f"{sweep['layer'].values.tolist()}")
    score = recommendation["score"].sel(layer=common).values.astype(float)
    value = sweep[metric].sel(layer=common).values.astype(float)
    if not np.isfinite(value).all():
        raise ValueError(f"sweep[{metric!r}] holds NaN or inf at layers "
                         f"{common[~np.isfinite(value)].tolist()}")
    skill = value if higher else -value
    measured = rankdata(-skill, method="min").astype(np.int64)
    predicted = _rank_desc(score, common)
    rho, pvalue = _spearman(score, skill)
    pos = {int(x): i for i, x in enumerate(common)}
    rec_rank = np.asarray([measured[pos[x]] for x in recommended], np.int64)
    best = int(common[np.lexsort((common, -skill))[0]])
    sense = "higher" if higher else "lower"
    out = xr.Dataset(
        {
            "score": ("layer", score, {"long_name": "layer-selection score", "units": "1"}),
            metric: ("layer", value, dict(sweep[metric].attrs)),
            "predicted_rank": ("layer", predicted, {
                "long_name": "rank by score (1 = recommended first)", "units": "1"}),
            "measured_rank": ("layer", measured, {
                "long_name": f"rank by measured {metric} ({sense} is better; 1 = best, ties "
                             "share the best rank)", "units": "1"}),
            "recommended_layer": ("choice", np.asarray(recommended, np.int64),
                                  {"long_name": "recommended layer(s), best first"}),
            "recommended_measured_rank": ("choice", rec_rank, {
                "long_name": f"measured rank of the recommended layer(s) by {metric}",
                "units": "1"}),
            "spearman": ((), rho, {
                "long_name": f"Spearman rank correlation of score and measured skill "
                             f"({'' if higher else 'minus '}{metric})", "units": "1"}),
            "spearman_pvalue": ((), pvalue, {"long_name": "two-sided p-value of spearman",
                                             "units": "1"}),
            "best_measured_layer": ((), best, {
                "long_name": f"layer with the best measured {metric}"}),
        },
        coords={"layer": common, "choice": np.arange(1, len(recommended) + 1)},
    )
    out.attrs = {"metric": metric, "higher_is_better": int(higher),
                 "recommended_measured_rank": int(rec_rank[0]), "spearman": rho,
                 "best_measured_layer": best, "n_layers_compared": int(len(common))}
    return out
