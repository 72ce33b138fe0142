"""Explaining a trained closure through its activations.

* :func:`activations` -- the outputs of chosen conv layers for some LES
  inputs, as a labeled Dataset ``activation(layer, sample, channel, y, x)``;
* :func:`activation_spectra` -- their isotropic power spectra averaged over
  samples, ``spectrum(layer, channel, k)``, computed batch by batch so that
  all activations are never held at once (inputs may be dask-backed);
* :func:`flow_difference` -- where and by how much two flows differ: their
  spectra, log-ratio and shell weight, and the largest difference in decades;
* :func:`spectral_change_correlation` -- whether transfer learning changed a
  layer's filters at the wavenumbers where the flows differ, with a
  permutation p-value;
* :func:`spectral_distance` -- the normalized distance between two spectra.

Which layer to re-train is decided in :mod:`xtl.explain.recommend`, on this evidence.

Spectra come from :func:`xtl.data.spectra.spectrum` (``kind="power"``): shell
sums on integer radian wavenumbers, so the sum over ``k`` is the spatial
mean square of the activation.
"""
from __future__ import annotations

import math

import numpy as np
import xarray as xr

from ..nn.spec import GRID_DIMS, Variables, check_layers, stack_channels
from ..nn.model import Model
from ..nn.backends.base import get_backend
from ..data.spectra import spectrum
from ..physics.fourier import domain_length
from ..options import check_float
from ..nn.training import (check_les_dataset, check_model_data, check_same_levels,
                            sample_fields, variable_samples)

__all__ = ["activations", "activation_spectra", "flow_difference", "mean_spectra",
           "spectral_change_correlation",
           "spectral_distance", "filter_profile", "DIFFERS_THRESHOLD", "SPECTRAL_FLOOR",
           "FLOW_VARIABLES"]


def _check(model, inputs, layers, batch_size):
    """``(layers, backend, widths)`` of a checked call of :func:`activations`."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    check_model_data(model, inputs, "inputs", need_target=False)
    layers = check_layers(range(1, model.n_layers + 1) if layers is None else layers,
                          model.n_layers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return layers, get_backend(model.backend), [model.spec.widths[k - 1] for k in layers]


def _batches(model, inputs, batch_size):
    """Yield ``(start, normalized x (b, y, x, c_in))`` batch by batch (computing dask slices)."""
    import dask

    names, dim = model.variables.inputs, model.variables.channels
    fields = sample_fields(inputs, names, dim)
    n = fields[names[0]].shape[0]  # (sample, level, y, x)
    for i in range(0, n, batch_size):
        parts = dask.compute(*[fields[v][i:i + batch_size] for v in names])
        batch = {v: np.asarray(a, np.float32) for v, a in zip(names, parts)}
        nan = [v for v, a in batch.items() if np.isnan(a).any()]
        if nan:
            raise ValueError(f"inputs contain NaN in {nan}")
        yield i, stack_channels(batch, names, model.normalization)


def _grid_coords(inputs):
    return {c: inputs[c] for c in GRID_DIMS if c in inputs.coords}


def _sample_coords(inputs, n, variables: Variables):
    """``sample`` coordinate plus the flattened leading-dim coordinates on it."""
    da = inputs[variables.inputs[0]]
    lead = [d for d in da.dims if d not in GRID_DIMS and d != variables.channels]
    coords = {"sample": np.arange(n)}
    if lead:
        for d, i in zip(lead, np.unravel_index(np.arange(n), [da.sizes[d] for d in lead])):
            coords[d] = ("sample", inputs[d].values[i] if d in inputs.coords else i)
    return coords


def activations(model: Model, inputs, layers=None, *, batch_size: int = 32) -> xr.Dataset:
    """Outputs of conv layers for LES inputs, as a Dataset.

    Parameters
    ----------
    model : Model
        A trained network.
    inputs : xarray.Dataset
        Holds the model's inputs (``model.variables.inputs``; ``psi``, ``omega``
        by default) in physical units (they are normalized with the model's
        stored standard deviations); dims other than ``y``, ``x`` and the
        channel dim are stacked into ``sample``.
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
    layers, backend, widths = _check(model, inputs, layers, batch_size)
    first = inputs[model.variables.inputs[0]]
    n = variable_samples(inputs, model.variables)
    ny, nx = first.sizes["y"], first.sizes["x"]
    out = np.full((len(layers), n, max(widths), ny, nx), np.nan, dtype=np.float32)
    for i, x in _batches(model, inputs, batch_size):
        acts = backend.activations(model, x, layers, batch_size=batch_size)
        for j, k in enumerate(layers):
            out[j, i:i + len(x), :widths[j]] = acts[k]
    coords = {"layer": list(layers), "channel": np.arange(max(widths)),
              "n_channels": ("layer", np.asarray(widths, np.int32)),
              **_sample_coords(inputs, n, model.variables), **_grid_coords(inputs)}
    da = xr.DataArray(out, dims=("layer", "sample", "channel", "y", "x"), coords=coords,
                      attrs={"long_name": "conv layer output (after its activation)",
                             "units": "1"})
    return xr.Dataset({"activation": da}, attrs={"n_samples": n})


def activation_spectra(model: Model, inputs, layers=None, *, batch_size: int = 32,
                       kmax: int | None = None, L: float | None = None) -> xr.Dataset:
    """Isotropic power spectra of layer outputs, averaged over samples, streamed.

    Processes ``batch_size`` samples at a time (computing only those slices
    of dask-backed inputs) and accumulates the spectra, so all activations
    are never held at once.

    Parameters
    ----------
    model, inputs, layers, batch_size :
        As in :func:`activations`.
    kmax : int, optional
        Last shell kept (default: all shells, so the sum over ``k`` is the
        mean square; see :func:`xtl.data.spectra.spectrum`).
    L : float, optional
        The domain length: required when ``inputs`` has no coordinates ``y``, ``x``
        (the layer outputs are on the input grid).

    Returns
    -------
    xarray.Dataset
        ``spectrum(layer, channel, k)`` (float64, NaN for padded channels),
        the sample mean of the power spectra of every channel, and
        ``mean_square(layer, channel)``, the sample mean of the spatial mean
        square (Σ_k spectrum when all shells are kept).
    """
    layers, backend, widths = _check(model, inputs, layers, batch_size)
    grid = _grid_coords(inputs)
    length = domain_length(inputs[model.variables.inputs[0]], L, name="inputs")
    total, msq, k_coord, n = None, None, None, 0
    for _, x in _batches(model, inputs, batch_size):
        acts = backend.activations(model, x, layers, batch_size=batch_size)
        for j, k in enumerate(layers):
            a = acts[k].astype(np.float64)
            da = xr.DataArray(a, dims=("sample", "channel", "y", "x"), coords=grid)
            s = spectrum(da, "power", kmax=kmax, L=length).sum("sample")
            if total is None:
                k_coord = s["k"].values
                total = np.zeros((len(layers), max(widths), len(k_coord)))
                msq = np.zeros((len(layers), max(widths)))
            total[j, :widths[j]] += s.values
            msq[j, :widths[j]] += (a ** 2).mean(axis=(2, 3)).sum(axis=0)
        n += len(x)
    for j, w in enumerate(widths):  # NaN-pad the channels a layer does not have
        total[j, w:], msq[j, w:] = np.nan, np.nan
    coords = {"layer": list(layers), "channel": np.arange(max(widths)), "k": k_coord,
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


# ---------------------------------------- where two flows differ (Subel et al., 2023)
#: Default threshold, in decades, on |log10(S_target / S_base)| above which a
#: wavenumber shell is reported as one where the flows differ (0.3 decades ≈ a
#: factor 2). It only labels the shells (``differs``, ``flows_differ``, the warning);
#: the overlap and the score use the continuous weight ``|log10(S_target/S_base)|``.
DIFFERS_THRESHOLD = 0.3
#: Shells whose power is below this fraction of the variable's largest shell, in
#: both flows, are treated as equal (round-off, not physics): see :func:`_log_ratio`.
SPECTRAL_FLOOR = 1e-10
#: The variables whose spectra are compared by default, in order: the two inputs, then Π.
FLOW_VARIABLES = Variables().names


def _attrs(da, **attrs):
    """``da`` with its attrs replaced by ``attrs`` (a shallow copy)."""
    da = da.copy(deep=False)
    da.attrs = dict(attrs)
    return da


def _flow_fields(ds, names, dim) -> dict:
    """``{label: field}`` of the variables ``names``, one per level of the channel dim
    ``dim`` (labelled ``"q[1]"`` by the channel coordinate) when there is one."""
    if dim is None:
        return {v: ds[v] for v in names}
    labels = ds[dim].values if dim in ds.coords else range(ds.sizes[dim])
    return {f"{v}[{label}]": ds[v].isel({dim: i}) for v in names for i, label in enumerate(labels)}


def mean_spectra(ds, names=FLOW_VARIABLES, channels: str | None = None, *,
                 kmax: int | None = None, L: float | None = None) -> xr.DataArray:
    """Sample-mean power spectra of a flow's variables, each level apart.

    Parameters
    ----------
    ds : xarray.Dataset
        The flow (numpy- or dask-backed; the FFTs go chunk by chunk).
    names : sequence of str
        The variables (default ψ̄, ω̄, Π).
    channels : str, optional
        The channel dim: each of its levels apart.
    kmax : int, optional
        Last shell (default: all).
    L : float, optional
        The domain length, when ``ds`` has no coordinates ``y``, ``x``.

    Returns
    -------
    xarray.DataArray
        Over ``(variable, k)``, labelled ``"psi"`` ... or ``"q[1]"``, ``"q[2]"`` per level
        of the channel dim (its coordinate values).
    """
    out = []
    fields = _flow_fields(ds, names, channels)
    for da in fields.values():
        lead = [d for d in da.dims if d not in GRID_DIMS]
        if da.chunks is None and lead:  # bound the FFT's memory: ~32 MiB of float64 a chunk
            per = 8 * da.sizes["y"] * da.sizes["x"] * int(np.prod([da.sizes[d] for d in lead[1:]]))
            da = da.chunk({lead[0]: max(1, 2**25 // per)})
        s = spectrum(da.astype(np.float64), "power", kmax=kmax, L=L)
        out.append(s.mean([d for d in s.dims if d != "k"]))
    return xr.concat(out, dim="variable", coords="minimal", compat="override") \
        .assign_coords(variable=list(fields)).compute()


def _common_length(base_ds, target_ds, L):
    """The domain length of two flows (their shells must mean the same wavenumbers)."""
    lengths = [domain_length(ds, L, name=name)
               for ds, name in ((base_ds, "base_ds"), (target_ds, "target_ds"))]
    if not np.isclose(lengths[0], lengths[1], rtol=1e-6, atol=0):
        raise ValueError(f"base_ds and target_ds must be on one domain length; got "
                         f"{lengths[0]:.6g} and {lengths[1]:.6g}")
    return lengths[1]


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


def filter_profile(model_ds, n_grid: int, kmax: int | None = None) -> xr.DataArray:
    """Mean over each layer's kernels of the shell-mean ``|Ŵ|`` on an ``n_grid`` grid.

    Parameters
    ----------
    model_ds : xarray.Dataset
        A model Dataset (:func:`xtl.model_to_dataset`).
    n_grid : int
        Grid the kernels are zero-padded to (the LES grid).
    kmax : int, optional
        Last shell (default ``n_grid // 2``).

    Returns
    -------
    xarray.DataArray
        ``(layer, k)``; NaN-padded channels are skipped.
    """
    return _channel_profile(_filters64(model_ds, n_grid), kmax)


def _filters64(model_ds, n_grid):
    """|Ŵ| (float64) of a model Dataset's kernels zero-padded to ``n_grid``."""
    from .kernels import kernel_filters

    return kernel_filters(model_ds.assign(kernel=model_ds["kernel"].astype(np.float64)), n_grid)


def _channel_profile(filters, kmax):
    """Shell mean of ``filters`` averaged over the kernels of each layer → (layer, k)."""
    from .kernels import radial_profile

    prof = radial_profile(filters, kmax=kmax)
    return prof.mean(["channel_out", "channel_in"], skipna=True).compute()


def flow_difference(base_ds, target_ds, *, kmax: int | None = None,
                    threshold: float = DIFFERS_THRESHOLD, variables=None,
                    L: float | None = None) -> xr.Dataset:
    """Where, and by how many decades, the spectra of two flows differ.

    Time/member-mean power spectra ``S(k)`` of the variables (``psi``, ``omega``
    and ``pi`` by default; each level of a channel dim apart) of both flows
    (:func:`xtl.data.spectra.spectrum`), their log-ratio
    ``r = log10(S_target/S_base)`` (with a round-off floor, :data:`SPECTRAL_FLOOR`),
    the shell weight ``w(k) = max over variables of |r(k)|`` (0 at ``k = 0``), and
    the largest ``|r|`` of each variable over the shells ``1 ≤ k ≤ kmax``.

    Parameters
    ----------
    base_ds, target_ds : xarray.Dataset
        LES Datasets on the same grid (numpy- or dask-backed).
    kmax : int, optional
        Last shell compared (default ``min(Ny, Nx)//2``, the whole shells).
    threshold : float
        Decades above which a shell is labelled as differing (default 0.3, a
        factor ≈ 2).
    variables : Variables or mapping, optional
        The variables compared and the channel dim (a model's ``variables``);
        default ψ̄, ω̄, Π.
    L : float, optional
        The domain length of both flows: required when they have no coordinates
        ``y``, ``x`` (see :func:`xtl.data.spectra.spectrum`).

    Returns
    -------
    xarray.Dataset
        Over ``(variable, k)``: ``base_spectrum``, ``target_spectrum``,
        ``log_ratio``, ``differs``; over ``k``: ``shell_weight``, ``flows_differ``;
        over ``variable``: ``max_decades`` and ``spectral_difference`` (the spectral
        distance of the flows); scalar ``largest_decades``; attrs ``threshold``,
        ``kmax`` and the two case names.

    Raises
    ------
    TypeError, ValueError
        Not LES Datasets, different grids or domain lengths, a bad ``kmax`` or
        ``threshold``, no coordinates and no ``L``.
    """
    variables = Variables.from_any(variables)
    grid = check_pair_datasets(base_ds, target_ds, variables)
    kmax = check_kmax(kmax, grid)
    threshold = check_float(threshold, "threshold", positive=True)
    length = _common_length(base_ds, target_ds, L)
    s_base, s_target = (mean_spectra(ds, variables.names, variables.channels, kmax=kmax,
                                     L=length)
                        for ds in (base_ds, target_ds))
    log_ratio = _log_ratio(s_target, s_base)
    positive = log_ratio["k"] >= 1
    differs = (abs(log_ratio) > threshold) & positive
    resolved = abs(log_ratio).where(positive)
    shell_weight = abs(log_ratio).max("variable", skipna=True).fillna(0.0).where(positive, 0.0)
    max_decades = resolved.max("k")
    return xr.Dataset(
        {
            "base_spectrum": _attrs(s_base, long_name="time/member-mean power spectrum, "
                                    "base flow", units="1"),
            "target_spectrum": _attrs(s_target, long_name="time/member-mean power spectrum, "
                                      "target flow", units="1"),
            "log_ratio": _attrs(log_ratio, long_name="log10(S_target/S_base)", units="1",
                                description=f"with a floor {SPECTRAL_FLOOR} * max_k max(S_t, "
                                            "S_b) added to both spectra"),
            "differs": _attrs(differs, long_name=f"|log_ratio| > {threshold} (k >= 1)"),
            "flows_differ": _attrs(differs.any("variable"), long_name="shells where a "
                                   f"variable differs by more than {threshold} decades"),
            "shell_weight": _attrs(shell_weight, long_name="w(k) = max over "
                                   "the variables of |log_ratio| (0 at k = 0)",
                                   units="decades"),
            "max_decades": _attrs(max_decades, long_name="largest |log10(S_target/S_base)| "
                                  "over the shells 1..kmax", units="decades"),
            "largest_decades": _attrs(max_decades.max("variable"), long_name="largest "
                                      "difference of the flows over variables and shells",
                                      units="decades"),
            "spectral_difference": _attrs(spectral_distance(s_target.sel(k=slice(1, None)),
                                                            s_base.sel(k=slice(1, None))),
                                          long_name="spectral distance of the flows "
                                          "sum_{k>=1}|S_t - S_b| / sum_{k>=1}(S_t + S_b)",
                                          units="1"),
        },
        attrs={"threshold": threshold, "kmax": int(kmax), "spectral_floor": SPECTRAL_FLOOR,
               "base_case": str(base_ds.attrs.get("case_name", "unknown")),
               "target_case": str(target_ds.attrs.get("case_name", "unknown"))},
    )


def check_pair_datasets(base_ds, target_ds, variables=None) -> tuple:
    """Check two LES Datasets on one grid; return the grid ``(Ny, Nx)``.

    Raises
    ------
    TypeError, ValueError
        Not LES Datasets, or different grids.
    """
    variables = Variables.from_any(variables)
    check_les_dataset(base_ds, "base_ds", variables=variables)
    check_les_dataset(target_ds, "target_ds", variables=variables)
    check_same_levels(base_ds, target_ds, variables, "target_ds")
    gb, gt = ((ds.sizes["y"], ds.sizes["x"]) for ds in (base_ds, target_ds))
    if gb != gt:
        raise ValueError(
            f"target_ds must be on the same LES grid as base_ds (the spectra are compared "
            f"shell by shell): base_ds is {gb[0]}×{gb[1]}, target_ds is {gt[0]}×{gt[1]}; "
            "coarse-grain both to one grid first"
        )
    return gb


def check_kmax(kmax, grid) -> int:
    """``kmax`` checked against a grid: an int in ``1..min(grid)//2`` (None: the maximum)."""
    half = min(grid) // 2
    if kmax is None:
        return half
    if isinstance(kmax, bool) or not isinstance(kmax, (int, np.integer)) \
            or not 1 <= kmax <= half:
        raise ValueError(f"kmax must be an int in 1..{half} (the whole shells of the "
                         f"{grid[0]}×{grid[1]} LES grid); got {kmax!r}")
    return int(kmax)


def _kernel_change_profile(base_ds, tl_ds, layer, n_grid, kmax):
    """Shell mean of ``||Ŵ_tl| − |Ŵ_base||`` over a layer's kernels → (k,)."""
    change = abs(_filters64(tl_ds.sel(layer=[layer]), n_grid)
                 - _filters64(base_ds.sel(layer=[layer]), n_grid))
    return _channel_profile(change, kmax).squeeze("layer")


def spectral_change_correlation(base_model_ds, tl_model_ds, layer: int, shell_weight, *,
                                n_permutations: int = 9999, seed: int = 0) -> xr.Dataset:
    """Did transfer learning change a layer's filters where the flows differ? As a number.

    The change profile ``c(k)`` is the shell mean, over the layer's kernels padded to
    the LES grid, of ``||Ŵ_TL(k)| − |Ŵ_base(k)||`` (averaged over the TL networks
    given, e.g. one per seed). Its Pearson correlation ``r`` with the flows' shell
    weight ``w(k)`` (:func:`flow_difference`) over the shells ``1..kmax`` is tested
    against a permutation null: ``w`` shuffled over the shells; the one-sided p-value
    is ``(1 + #{r_perm ≥ r}) / (1 + n_permutations)``. Neighbouring shells are
    correlated in both profiles, which a plain permutation ignores, so the p-value is
    optimistic; read it as a screen, not a proof.

    Parameters
    ----------
    base_model_ds : xarray.Dataset
        The base network as a model Dataset.
    tl_model_ds : xarray.Dataset or sequence of them
        The re-trained network(s) (same architecture).
    layer : int
        The re-trained layer.
    shell_weight : xarray.DataArray
        ``w(k)`` over integer shells ``k`` (from :func:`flow_difference`); its largest
        shell sets ``kmax`` and the LES grid is ``2 * kmax``.
    n_permutations : int
        Size of the permutation null.
    seed : int
        Seed of the permutations.

    Returns
    -------
    xarray.Dataset
        ``change_profile(k)``, ``shell_weight(k)`` (shells 1..kmax), scalars
        ``correlation`` and ``pvalue``; attrs ``layer``, ``n_permutations``,
        ``n_models``.
    """
    models = [tl_model_ds] if isinstance(tl_model_ds, xr.Dataset) else list(tl_model_ds)
    if not models or not all(isinstance(m, xr.Dataset) for m in models):
        raise TypeError("tl_model_ds must be a model Dataset or a sequence of them")
    if not isinstance(shell_weight, xr.DataArray) or shell_weight.dims != ("k",):
        raise TypeError("shell_weight must be a DataArray over 'k' (flow_difference's)")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) \
            or n_permutations < 1:
        raise ValueError(f"n_permutations must be an int >= 1, got {n_permutations!r}")
    kmax = int(shell_weight["k"].max())
    profiles = [_kernel_change_profile(base_model_ds, m, int(layer), 2 * kmax, kmax)
                for m in models]
    change = xr.concat(profiles, "model").mean("model").sel(k=slice(1, kmax))
    weight = shell_weight.sel(k=slice(1, kmax))
    c, w = change.values, weight.values
    r = _pearson(c, w)
    rng = np.random.default_rng(seed)
    null = np.array([_pearson(c, rng.permutation(w)) for _ in range(int(n_permutations))])
    pvalue = (1 + np.sum(null >= r)) / (1 + len(null)) if np.isfinite(r) else np.nan
    return xr.Dataset(
        {"change_profile": _attrs(change, long_name="shell mean of ||W_TL| - |W_base|| over "
                                  "the layer's kernels", units="1"),
         "shell_weight": _attrs(weight, long_name="w(k): how much the flows differ",
                                units="decades"),
         "correlation": ((), r, {"long_name": "Pearson correlation of change_profile and "
                                 "shell_weight over shells 1..kmax", "units": "1"}),
         "pvalue": ((), float(pvalue), {"long_name": "one-sided permutation p-value of "
                                        "correlation", "units": "1"})},
        attrs={"layer": int(layer), "n_permutations": int(n_permutations),
               "n_models": len(models)})


def _pearson(a, b) -> float:
    a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
    den = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else float("nan")
