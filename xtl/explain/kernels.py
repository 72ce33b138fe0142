"""Spectra of learned kernels: their filters, classification, census and changes.

A convolutional closure is read as a bank of filters: :func:`kernel_filters` gives the
transfer function |Ŵ| of every kernel, :func:`classify_filters` / :func:`classify_kernels`
name what each does (low-, high-, band-pass, Gabor, all-pass), :func:`filter_census`
counts them per layer and :func:`kernel_change` finds the kernels transfer learning
changed most. Everything here is a small pure function on xarray objects;
:mod:`xtl.accessors` wraps them as ``ds.tl.*`` / ``da.tl.*``. Isotropic profiles are the
shell sums of :mod:`xtl.data.spectra`.

Conventions (see docs/conventions.md)
-------------------------------------
* Wavenumbers are integer radian wavenumbers on the 2π-periodic domain; isotropic
  profiles sum the integer shells ``k = round(|k|)``.
* A model Dataset holds ``kernel(layer, channel_out, channel_in, tap_y, tap_x)`` (NaN
  where a layer has fewer channels). The transfer function of a kernel ``w`` zero-padded
  to ``n × n`` is the unnormalized DFT ``Ŵ(k) = Σ_taps w(j) exp(-2πi k·j / n)``: the taps
  are read as grid points of an ``n``-point grid on the 2π domain, so ``ky``, ``kx`` are
  integer radian wavenumbers of that grid (the paper pads to the LES grid). Only ``|Ŵ|``
  is used; it does not depend on where the taps sit in the padded array, nor on whether
  the network convolves or cross-correlates (``|Ŵ(k)| = |Ŵ(-k)|`` for a real kernel).
"""
from __future__ import annotations

import json
import numbers

import dask.array as dsa
import numpy as np
import scipy.sparse as sp
import xarray as xr

from ..data.spectra import SHELL_ATTRS, check_kmax, shell_index, shell_matrix, shell_sums
from ..physics.fourier import axis_wavenumbers, wavenumbers

__all__ = [
    "FILTER_TYPES",
    "KERNEL_DIMS",
    "kernel_filters",
    "recorded_grid",
    "radial_profile",
    "classify_filters",
    "classify_kernels",
    "filter_census",
    "kernel_change",
]

#: The filter classes, in census order; "absent" marks NaN-padded or all-zero kernels.
FILTER_TYPES = ("low-pass", "high-pass", "band-pass", "gabor", "all-pass", "absent")
KERNEL_DIMS = ("layer", "channel_out", "channel_in", "tap_y", "tap_x")

# target size of one chunk of |Ŵ| (float32 n×n per kernel). Kept under glibc's 32 MiB
# mmap threshold so that per-chunk buffers are reused rather than page-faulted anew.
_CHUNK_BYTES = 8 * 2**20

# ----------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------
def _check_model(model, name="model"):
    """Return a model Dataset's kernel as a DataArray with dims KERNEL_DIMS."""
    if not isinstance(model, xr.Dataset):
        raise TypeError(
            f"{name} must be a model xarray.Dataset with a variable 'kernel' of dims "
            f"{KERNEL_DIMS}; got {type(model).__name__}"
        )
    if "kernel" not in model.data_vars:
        raise ValueError(
            f"{name} must be a model Dataset with a variable 'kernel' of dims {KERNEL_DIMS} "
            f"(from xtl.model_to_dataset); its variables are {sorted(map(str, model.data_vars))}"
        )
    kernel = model["kernel"]
    if set(kernel.dims) != set(KERNEL_DIMS):
        raise ValueError(f"{name}['kernel'] must have dims {KERNEL_DIMS}; got {kernel.dims}")
    if not np.issubdtype(kernel.dtype, np.number) or np.issubdtype(kernel.dtype, np.complexfloating):
        raise TypeError(f"{name}['kernel'] must hold real numbers; got dtype {kernel.dtype}")
    return kernel.transpose(*KERNEL_DIMS)


def recorded_grid(model):
    """The grid size a model Dataset records as trained on, or None.

    Parameters
    ----------
    model : xarray.Dataset
        A model Dataset; the ``grid`` (``[ny, nx]`` of the training data) of its
        ``xtl_provenance`` JSON attribute, else its ``grid`` attribute (a list, or
        the list as JSON text).

    Returns
    -------
    int or None
        ``n`` of a square ``n × n`` grid; None when none (or no square one) is recorded.
    """

    def parsed(value):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return None
        return value

    provenance = parsed(model.attrs.get("xtl_provenance"))
    value = provenance.get("grid") if isinstance(provenance, dict) else None
    if value is None:
        value = parsed(model.attrs.get("grid"))
    if value is None:
        return None
    sizes = np.unique(np.atleast_1d(np.asarray(value)))
    if sizes.size != 1 or not np.issubdtype(sizes.dtype, np.integer) or sizes[0] < 1:
        return None
    return int(sizes[0])


def _resolve_n(n, model, kernel):
    """``n`` if given, else the grid the model records; checked against the kernel size."""
    if n is None:
        n = recorded_grid(model)
        if n is None:
            raise ValueError(
                "pad_to (the grid to zero-pad the kernels to, e.g. the LES grid, 128) must be "
                "given: the model Dataset records no square training grid (attrs 'grid')"
            )
    taps = max(kernel.sizes["tap_y"], kernel.sizes["tap_x"])
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"pad_to must be an integer grid size (e.g. the LES grid, 128); "
                        f"got {n!r}")
    if n < taps:
        raise ValueError(
            f"pad_to must be at least the kernel size ({kernel.sizes['tap_y']}×"
            f"{kernel.sizes['tap_x']}) to zero-pad the kernel to pad_to×pad_to; got pad_to={n}"
        )
    return int(n)


def _check_filters(filters):
    """Validate a filter-magnitude DataArray with integer ``ky``, ``kx`` coordinates."""
    if not isinstance(filters, xr.DataArray):
        raise TypeError(
            "filters must be an xarray.DataArray of |Ŵ| with dims (..., 'ky', 'kx') "
            f"(as returned by kernel_filters); got {type(filters).__name__}"
        )
    for d in ("ky", "kx"):
        if d not in filters.dims:
            raise ValueError(
                "filters must have dims (..., 'ky', 'kx') (as returned by kernel_filters); "
                f"got dims {filters.dims}"
            )
        if d not in filters.coords:
            raise ValueError(f"filters needs integer wavenumber coordinates {d!r}")
        c = np.asarray(filters[d].values, dtype=float)
        if not np.allclose(c, np.rint(c)):
            raise ValueError(f"filters: coordinate {d!r} must hold integer radian wavenumbers")
    return filters.transpose(..., "ky", "kx")


# ----------------------------------------------------------------------------------------
# kernel filters
# ----------------------------------------------------------------------------------------
def _magnitude_np(kernels, n, shift):
    """|Ŵ| on the full n×n grid of real kernels (..., ty, tx), via rfft2 and mirroring."""
    half = np.abs(np.fft.rfft2(kernels, s=(n, n)))
    nh = n // 2 + 1
    full = np.empty(half.shape[:-1] + (n,), dtype=half.dtype)
    full[..., :nh] = half
    if n > nh:
        rows = (-np.arange(n)) % n  # |Ŵ(ky, -m)| = |Ŵ(-ky, m)|
        cols = n - np.arange(nh, n)
        full[..., nh:] = half[..., rows, :][..., cols]
    if shift:
        full = np.fft.fftshift(full, axes=(-2, -1))
    return full


def _with_attrs(da, **attrs):
    """A copy of ``da`` whose attrs are exactly ``attrs``."""
    da = da.copy()
    da.attrs = attrs
    return da


def _float_dtype(dtype):
    return np.float32 if dtype in (np.float16, np.float32) else np.float64


def _kernel_dask(kernel, n, chunks):
    """The kernel as a float dask array chunked over (layer, channel_out, channel_in)."""
    dtype = _float_dtype(kernel.dtype)
    if chunks is None:
        per_out = kernel.sizes["channel_in"] * n * n * np.dtype(dtype).itemsize
        co = int(max(1, min(kernel.sizes["channel_out"], _CHUNK_BYTES // max(per_out, 1))))
        chunks = {"layer": 1, "channel_out": co, "channel_in": -1}
    if not isinstance(chunks, dict):
        raise TypeError(f"chunks must be a dict over layer/channel_out/channel_in; got {chunks!r}")
    bad = set(chunks) - set(KERNEL_DIMS[:3])
    if bad:
        raise ValueError(f"chunks may only name layer, channel_out, channel_in; got {sorted(bad)}")
    data = kernel.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(np.asarray(data), chunks=-1)
    data = data.astype(dtype)
    return data.rechunk(tuple(chunks.get(d, -1) for d in KERNEL_DIMS[:3]) + (-1, -1))


def _half_plane(n):
    """ky (fftfreq order), kx = 0..n//2 of rfft2, and each point's multiplicity in the
    full n×n grid (2 where the mirror point (-ky, -kx) is not in the half plane)."""
    ky, kx = (k.astype(float) for k in wavenumbers(n))
    mult = np.where((kx > 0) & (2 * kx < n), 2.0, 1.0)
    return ky, kx, np.broadcast_to(mult[None, :], (n, kx.size))


def kernel_filters(model, pad_to=None, *, shift=True, chunks=None):
    """Magnitude of the Fourier transform of every kernel, zero-padded to ``pad_to × pad_to``.

    Parameters
    ----------
    model : xarray.Dataset
        Model Dataset with ``kernel(layer, channel_out, channel_in, tap_y, tap_x)``.
    pad_to : int, optional
        Grid size to zero-pad to (the paper uses the LES grid, e.g. 128); at least the
        kernel size. Default: the grid the model was trained on (its ``grid`` attribute).
    shift : bool, default True
        If True, ``ky`` and ``kx`` run ``-pad_to//2 … (pad_to-1)//2`` (fftshifted: k = 0 at the
        centre, the way the paper plots |Ŵ|); if False, numpy's ``fftfreq`` order.
    chunks : dict, optional
        Chunks over ``layer``, ``channel_out``, ``channel_in`` (``ky``, ``kx`` are always
        whole). Default: one layer and as many output channels as keep a chunk of |Ŵ|
        near 8 MiB (2 × 64 kernels of the paper's network at n = 128), which bounds
        memory for the paper's network (11 × 64 × 64 kernels, ~3 GB if materialized).

    Returns
    -------
    xarray.DataArray
        Lazy (dask) ``|Ŵ|`` with dims ``(layer, channel_out, channel_in, ky, kx)``,
        float32 for float32 (or float16) kernels, float64 otherwise; NaN for NaN-padded
        kernels. ``Ŵ`` is the unnormalized DFT (``Ŵ(0)`` is the sum of the taps).

    Raises
    ------
    TypeError, ValueError
        ``model`` is not a model Dataset, or ``pad_to`` is not an integer ≥ the kernel size
        (or not given when the model records no grid).
    """
    kernel = _check_model(model)
    n = _resolve_n(pad_to, model, kernel)
    data = _kernel_dask(kernel, n, chunks)
    dtype = data.dtype
    out = data.map_blocks(
        _magnitude_np,
        n,
        shift,
        chunks=data.chunks[:3] + ((n,), (n,)),
        dtype=dtype,
        token="kernel-filters",
    )
    k = axis_wavenumbers(n)
    if shift:
        k = np.fft.fftshift(k)
    coords = {d: kernel[d] for d in KERNEL_DIMS[:3] if d in kernel.coords}
    kattrs = {"long_name": "radian wavenumber of the n-point padded grid", "units": "1"}
    coords["ky"] = ("ky", k, kattrs)
    coords["kx"] = ("kx", k, kattrs)
    return xr.DataArray(
        out,
        dims=KERNEL_DIMS[:3] + ("ky", "kx"),
        coords=coords,
        name="kernel_filter",
        attrs={
            "long_name": "magnitude of the kernel transfer function |W^|",
            "units": "1",
            "pad_to": n,
            "fftshift": int(bool(shift)),
        },
    )


def radial_profile(filters, *, kmax=None):
    """Mean of ``|Ŵ|`` over each integer wavenumber shell ``round(|k|) = k``.

    Parameters
    ----------
    filters : xarray.DataArray
        Filter magnitudes with dims ``(..., "ky", "kx")`` and integer ``ky``, ``kx``
        coordinates (any order, shifted or not), e.g. from :func:`kernel_filters`.
    kmax : int, optional
        Last shell; default ``min(len(ky), len(kx)) // 2``, the shells that are whole
        circles on the grid.

    Returns
    -------
    xarray.DataArray
        Profile with dims ``(..., "k")``, ``k = 0..kmax``; lazy on dask input.

    Raises
    ------
    TypeError, ValueError
        ``filters`` lacks ``ky``/``kx`` or integer wavenumber coordinates; bad ``kmax``.
    """
    filters = _check_filters(filters)
    kmax = check_kmax(kmax)
    if kmax is None:
        kmax = min(filters.sizes["ky"], filters.sizes["kx"]) // 2
    idx = shell_index(filters["ky"].values, filters["kx"].values)
    matrix = _shell_mean_matrix(idx, kmax, np.ones(idx.shape), filters.dtype)
    out = xr.apply_ufunc(
        shell_sums,
        filters,
        input_core_dims=[["ky", "kx"]],
        output_core_dims=[["k"]],
        dask="parallelized",
        output_dtypes=[filters.dtype],
        dask_gufunc_kwargs={"output_sizes": {"k": kmax + 1}},
        kwargs={"matrix": matrix},
    )
    out = out.assign_coords(k=("k", np.arange(kmax + 1), SHELL_ATTRS))
    out.name = "radial_profile"
    out.attrs = {"long_name": "shell mean of |W^|", "units": "1"}
    return out


# per-kernel features computed chunk by chunk (so only they are ever materialized)
_FEATURES = ("peak_k", "flatness", "anisotropy", "orientation", "peak_value", "finite")


def _shell_mean_matrix(idx, kmax, mult, dtype):
    """Sparse matrix of the shell means (shells ``0..kmax``) of values on the grid points
    of shell index ``idx``, each point counted ``mult`` times."""
    counts = np.bincount(idx.ravel(), weights=mult.ravel(), minlength=kmax + 1)[:kmax + 1]
    if np.any(counts == 0):
        raise ValueError(f"kmax={kmax} reaches shells that hold no grid wavenumber")
    return shell_matrix(idx, kmax + 1, mult / counts[np.minimum(idx, kmax)], dtype)


def _feature_matrices(ky, kx, mult, kmax, dtype, shape):
    """Sparse matrices giving, from |Ŵ| (resp. |Ŵ|²) on a (ky, kx) grid flattened,
    the shell means (resp. Σ w cos2φ, Σ w sin2φ, Σ w per shell) for shells 0..kmax.
    ``mult`` is each point's multiplicity in the full grid (1 for a full grid) and
    ``shape`` the full grid's (ny, nx). On an even grid the Nyquist line k = -N/2 is
    also k = +N/2: its points count for both, so their sin 2φ (which flips between the
    two) is 0, which makes the angles symmetric and the full grid agree with rfft2's."""
    idx = shell_index(ky, kx)
    nshell = kmax + 1
    mult = np.asarray(mult, dtype=float)
    mean_matrix = _shell_mean_matrix(idx, kmax, mult, dtype)
    phi = np.arctan2(np.asarray(ky, float)[:, None], np.asarray(kx, float)[None, :])
    cos2, sin2 = np.cos(2 * phi), np.sin(2 * phi)
    cos2[idx == 0] = 0.0  # the k = 0 point has no direction
    sin2[idx == 0] = 0.0
    ny, nx = shape
    nyquist_y = (ny % 2 == 0) & (np.abs(np.asarray(ky, float)) == ny / 2)
    nyquist_x = (nx % 2 == 0) & (np.abs(np.asarray(kx, float)) == nx / 2)
    sin2[nyquist_y[:, None] | nyquist_x[None, :]] = 0.0
    moment_matrix = sp.hstack(
        [
            shell_matrix(idx, nshell, mult * cos2, dtype),
            shell_matrix(idx, nshell, mult * sin2, dtype),
            shell_matrix(idx, nshell, mult, dtype),
        ],
        format="csr",
    )
    return mean_matrix, moment_matrix


def _features_np(mag, mean_matrix, moment_matrix, owned=False):
    """Per-kernel features from |Ŵ| blocks (..., ky, kx) -> (..., len(_FEATURES)).

    ``owned=True`` lets it overwrite ``mag`` (a temporary) instead of allocating."""
    nshell = mean_matrix.shape[1]
    lead = mag.shape[:-2]
    flat = np.ascontiguousarray(mag).reshape(-1, mag.shape[-2] * mag.shape[-1])
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        flat = np.where(finite[:, None], flat, 0)
    profile = np.asarray(flat @ mean_matrix, dtype=np.float64)  # (M, S)
    flat = np.square(flat, out=flat if owned or not finite.all() else None)
    moments = np.asarray(flat @ moment_matrix, dtype=np.float64)  # (M, 3S)
    cos2, sin2, power = (moments[:, i * nshell : (i + 1) * nshell] for i in range(3))
    rows = np.arange(flat.shape[0])
    peak = profile.argmax(axis=1)
    pmax = profile[rows, peak]
    pmin = profile.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        flatness = np.where(pmin > 0, pmax / np.where(pmin > 0, pmin, 1), np.inf)
        zc, zs, zp = cos2[rows, peak], sin2[rows, peak], power[rows, peak]
        anis = np.where(zp > 0, np.hypot(zc, zs) / np.where(zp > 0, zp, 1), 0.0)
    theta = np.degrees(0.5 * np.arctan2(zs, zc)) % 180.0
    theta = np.where(theta >= 180.0 - 1e-6, 0.0, theta)  # keep [0, 180) despite rounding
    feats = np.stack(
        [peak.astype(float), flatness, anis, theta, pmax, finite.astype(float)], axis=-1
    )
    return feats.reshape(*lead, len(_FEATURES))


def _kernel_features_np(kernels, n, mean_matrix, moment_matrix):
    """Features of real kernels (..., ty, tx) from |Ŵ| on the rfft2 half plane."""
    mag = np.abs(np.fft.rfft2(kernels, s=(n, n)))
    return _features_np(mag, mean_matrix, moment_matrix, owned=True)


def classify_filters(filters, *, flat_ratio=2.0, edge=0.1, min_anisotropy=0.5, kmax=None):
    """Classify filters as low-pass, high-pass, band-pass, Gabor or all-pass.

    From ``|Ŵ|`` on the (ky, kx) grid, per filter:

    * the radial profile ``P(k)`` (:func:`radial_profile`, shells ``0..K``,
      ``K = min(len(ky), len(kx)) // 2`` by default), its peak shell ``k_p = argmax P``
      and its flatness ``max P / min P``;
    * the anisotropy of the peak shell, ``A = |Σ w e^{2iφ}| / Σ w`` over the grid points
      of shell ``k_p`` with ``w = |Ŵ|²`` and ``φ = atan2(ky, kx)`` (0 for an isotropic
      ring, 1 for all weight at ±θ; 0 when ``k_p = 0``), and the orientation
      ``θ = ½ arg Σ w e^{2iφ}`` in degrees in [0, 180): the direction of the peak
      wavevector (kx, ky) from the kx axis (the stripes of such a kernel run
      perpendicular to it).

    The class is the first rule that holds:

    1. ``absent``: a NaN-padded (non-finite) or all-zero filter;
    2. ``all-pass``: ``max P / min P ≤ flat_ratio``;
    3. ``low-pass``: ``k_p ≤ edge·K``;
    4. ``gabor``: ``A ≥ min_anisotropy`` (an oriented band; ``orientation`` is set);
    5. ``high-pass``: ``k_p ≥ (1 - edge)·K``;
    6. ``band-pass``: otherwise (an isotropic band between).

    Parameters
    ----------
    filters : xarray.DataArray
        ``|Ŵ|`` with dims ``(..., "ky", "kx")`` and integer wavenumber coordinates,
        e.g. from :func:`kernel_filters`; may be dask-backed (it is reduced chunk by
        chunk: only a few numbers per filter are ever held in memory).
    flat_ratio : float, default 2.0
        All-pass threshold on ``max P / min P``.
    edge : float, default 0.1
        Fraction of ``K`` defining the low and high ends of the spectrum.
    min_anisotropy : float, default 0.5
        Gabor threshold on ``A``.
    kmax : int, optional
        ``K``, the last shell used.

    Returns
    -------
    xarray.Dataset
        Computed (numpy) variables over the leading dims: ``filter_type`` (str),
        ``orientation`` (degrees, NaN unless gabor), ``anisotropy``, ``peak_k``,
        ``flatness``; the criteria are in ``attrs``.

    Raises
    ------
    TypeError, ValueError
        Bad ``filters`` or thresholds.
    """
    filters = _check_filters(filters)
    kmax = check_kmax(kmax)
    criteria = _check_criteria(flat_ratio, edge, min_anisotropy)
    if kmax is None:
        kmax = min(filters.sizes["ky"], filters.sizes["kx"]) // 2
    if kmax < 1:
        raise ValueError(f"filters need at least shells 0..1 (kmax ≥ 1); got kmax={kmax}")
    dtype = _float_dtype(filters.dtype)
    mean_matrix, moment_matrix = _feature_matrices(
        filters["ky"].values,
        filters["kx"].values,
        np.ones((filters.sizes["ky"], filters.sizes["kx"])),
        kmax,
        dtype,
        (filters.sizes["ky"], filters.sizes["kx"]),
    )
    feats = xr.apply_ufunc(
        _features_np,
        filters.astype(dtype),
        input_core_dims=[["ky", "kx"]],
        output_core_dims=[["feature"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"feature": len(_FEATURES)}},
        kwargs={"mean_matrix": mean_matrix, "moment_matrix": moment_matrix},
    ).compute()
    return _classification(feats, kmax, criteria)


def _check_criteria(flat_ratio, edge, min_anisotropy) -> dict:
    """The criteria of :func:`classify_filters`, checked, as floats by name."""
    for name, value, lo, hi in (
        ("flat_ratio", flat_ratio, 1.0, np.inf),
        ("edge", edge, 0.0, 0.5),
        ("min_anisotropy", min_anisotropy, 0.0, 1.0),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not lo <= value <= hi:
            raise ValueError(f"{name} must be a number in [{lo}, {hi}]; got {value!r}")
    return {"flat_ratio": float(flat_ratio), "edge": float(edge),
            "min_anisotropy": float(min_anisotropy)}


def _classification(feats, kmax, criteria):
    """The classification Dataset from computed features (..., feature): the decision
    list of :func:`classify_filters`, the last rule set winning (rules run from 6 to 1);
    ``criteria`` is :func:`_check_criteria`'s dict."""
    f = {name: feats.isel(feature=i, drop=True) for i, name in enumerate(_FEATURES)}
    peak, edge = f["peak_k"].values, criteria["edge"]
    types = np.full(peak.shape, "band-pass", dtype="<U9")
    types[peak >= (1.0 - edge) * kmax] = "high-pass"
    types[(f["anisotropy"].values >= criteria["min_anisotropy"]) & (peak > edge * kmax)] = "gabor"
    types[peak <= edge * kmax] = "low-pass"
    types[f["flatness"].values <= criteria["flat_ratio"]] = "all-pass"
    types[~(f["finite"].values.astype(bool) & (f["peak_value"].values > 0))] = "absent"
    valid = types != "absent"
    out = xr.Dataset(
        {
            "filter_type": _with_attrs(
                f["peak_k"].copy(data=types),
                long_name="filter type",
                flag_values=" ".join(FILTER_TYPES),
            ),
            "orientation": _with_attrs(
                f["orientation"].where(types == "gabor"),
                long_name="orientation of the peak wavevector from the kx axis (gabor only)",
                units="degree",
            ),
            "anisotropy": _with_attrs(
                f["anisotropy"].where(valid),
                long_name="anisotropy |sum w exp(2i phi)|/sum w of the peak shell",
                units="1",
            ),
            "peak_k": _with_attrs(
                f["peak_k"].where(valid),
                long_name="shell of the maximum of the radial profile",
                units="1",
            ),
            "flatness": _with_attrs(
                f["flatness"].where(valid), long_name="max/min of the radial profile", units="1"
            ),
        }
    )
    out.attrs = {
        "criteria": "first that holds: absent (non-finite or zero); all-pass if "
        "max P/min P <= flat_ratio; low-pass if k_p <= edge*K; gabor if anisotropy >= "
        "min_anisotropy; high-pass if k_p >= (1-edge)*K; band-pass otherwise",
        **criteria,
        "kmax": int(kmax),
    }
    return out


def classify_kernels(model, pad_to=None, *, chunks=None, flat_ratio=2.0, edge=0.1,
                     min_anisotropy=0.5, kmax=None):
    """Classify every kernel of a model Dataset from its spectrum padded to ``pad_to × pad_to``.

    Gives the same result as
    ``classify_filters(kernel_filters(model, pad_to), flat_ratio=..., ...)`` (same criteria),
    computed faster: a real kernel's ``|Ŵ|`` is symmetric under k → -k, so the features
    are taken on the ``rfft2`` half plane, each point weighted by its multiplicity in the
    full grid. Work is done chunk by chunk over (layer, channel_out, channel_in) and only
    a few numbers per kernel are kept, so the paper's network (11 × 64 × 64 kernels) at
    n = 128 is classified in bounded memory (see ``benchmarks/kernels.py``).

    Parameters
    ----------
    model, pad_to, chunks
        As in :func:`kernel_filters`.
    flat_ratio, edge, min_anisotropy, kmax
        The criteria of :func:`classify_filters`.

    Returns
    -------
    xarray.Dataset
        As :func:`classify_filters`, over ``(layer, channel_out, channel_in)``.

    Raises
    ------
    TypeError, ValueError
        Not a model Dataset, bad ``pad_to``, ``chunks`` or criteria.
    """
    kernel = _check_model(model)
    n = _resolve_n(pad_to, model, kernel)
    kmax = check_kmax(kmax)
    criteria = _check_criteria(flat_ratio, edge, min_anisotropy)
    if kmax is None:
        kmax = n // 2
    if not 1 <= kmax <= n // 2:
        raise ValueError(f"kmax must be in [1, pad_to//2 = {n // 2}]; got {kmax}")
    data = _kernel_dask(kernel, n, chunks)
    ky, kx, mult = _half_plane(n)
    mean_matrix, moment_matrix = _feature_matrices(ky, kx, mult, kmax, data.dtype, (n, n))
    feats = data.map_blocks(
        _kernel_features_np,
        n,
        mean_matrix,
        moment_matrix,
        drop_axis=[3, 4],
        new_axis=[3],
        chunks=data.chunks[:3] + ((len(_FEATURES),),),
        dtype=np.float64,
        token="kernel-features",
    ).compute()
    coords = {d: kernel[d] for d in KERNEL_DIMS[:3] if d in kernel.coords}
    feats = xr.DataArray(feats, dims=KERNEL_DIMS[:3] + ("feature",), coords=coords)
    return _classification(feats, kmax, criteria)


def filter_census(obj, *, pad_to=None, chunks=None, **criteria):
    """Count the filter types per layer.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        A classification (a Dataset with ``filter_type``, or the ``filter_type``
        DataArray, with a ``layer`` dim), or a model Dataset with ``kernel``, which is
        classified first with :func:`classify_kernels`.
    pad_to, chunks
        For a model Dataset, as in :func:`kernel_filters`.
    **criteria
        For a model Dataset, passed to :func:`classify_filters`.

    Returns
    -------
    xarray.DataArray
        Integer counts with dims ``(layer, filter_type)``, ``filter_type`` in the order
        low-pass, high-pass, band-pass, gabor, all-pass; absent (NaN-padded) kernels
        are not counted.

    Raises
    ------
    TypeError, ValueError
        Neither a classification nor a model; a model without ``pad_to`` that records
        no grid.
    """
    if isinstance(obj, xr.Dataset) and "filter_type" not in obj.data_vars:
        if "kernel" not in obj.data_vars:
            raise ValueError(
                "obj must be a classification (with 'filter_type') or a model Dataset with "
                f"'kernel'; its variables are {sorted(map(str, obj.data_vars))}"
            )
        obj = classify_kernels(obj, pad_to, chunks=chunks, **criteria)
    if isinstance(obj, xr.Dataset):
        obj = obj["filter_type"]
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"obj must be an xarray Dataset or DataArray; got {type(obj).__name__}")
    if "layer" not in obj.dims:
        raise ValueError(f"the filter types need a 'layer' dim; got dims {obj.dims}")
    types = list(FILTER_TYPES[:-1])
    values = np.asarray(obj.transpose("layer", ...).values).reshape(obj.sizes["layer"], -1)
    counts = np.stack([(values == t).sum(axis=1) for t in types], axis=-1).astype(np.int64)
    coords = {"filter_type": types}
    if "layer" in obj.coords:
        coords["layer"] = obj["layer"].values
    return xr.DataArray(
        counts,
        dims=("layer", "filter_type"),
        coords=coords,
        name="filter_count",
        attrs={"long_name": "number of kernels of each filter type", "units": "1"},
    )


# ----------------------------------------------------------------------------------------
# kernel changes under transfer learning
# ----------------------------------------------------------------------------------------
def _spectral_change_np(wb, wt, n, mult):
    """‖|Ŵ_t| − |Ŵ_b|‖_F over the full n×n grid, from the rfft2 half plane."""
    d = np.abs(np.fft.rfft2(wt, s=(n, n))) - np.abs(np.fft.rfft2(wb, s=(n, n)))
    d *= d
    return np.sqrt(np.einsum("...ij,ij->...", d.astype(np.float64), mult))


def kernel_change(base, tl, *, pad_to=None, percentile=99.9, by="spectral", chunks=None):
    """How re-training changed each kernel, in physical and in spectral space.

    Per kernel: ``physical_change = ‖W_TL − W_base‖_F`` over the taps and
    ``spectral_change = ‖|Ŵ_TL| − |Ŵ_base|‖_F`` over the ``pad_to × pad_to`` grid (Ŵ as in
    :func:`kernel_filters`, the unnormalized DFT; by Parseval and the triangle
    inequality ``spectral_change ≤ pad_to·physical_change``). Per layer, the relative
    changes ``‖W_TL − W_base‖_F / ‖W_base‖_F`` and
    ``‖|Ŵ_TL| − |Ŵ_base|‖_F / ‖Ŵ_base‖_F`` over all kernels of the layer. The
    most-changed kernels are those whose change (``by``) is at or above the given
    percentile over all kernels (the paper used the 99.9th), sorted by decreasing
    change, with their spectra before and after.

    Parameters
    ----------
    base, tl : xarray.Dataset
        Model Datasets with the same ``kernel`` shape and coordinates (the base model
        and the re-trained one).
    pad_to : int, optional
        As in :func:`kernel_filters`, the default from ``base``.
    percentile : float, default 99.9
        In [0, 100].
    by : {"spectral", "physical"}
        Which change ranks the kernels.
    chunks : dict, optional
        Chunks over ``layer``, ``channel_out``, ``channel_in`` (as in
        :func:`kernel_filters`); the spectral change is reduced chunk by chunk.

    Returns
    -------
    xarray.Dataset
        ``physical_change``, ``spectral_change`` (layer, channel_out, channel_in; NaN for
        padded kernels); ``relative_physical_change``, ``relative_spectral_change``
        (layer); and along ``top`` (most-changed first): ``top_layer``, ``top_channel_out``,
        ``top_channel_in``, ``top_change``, ``top_filter_base`` and ``top_filter_tl``
        (top, ky, kx; fftshifted). ``attrs`` hold ``percentile``, ``threshold``, ``by``
        and ``pad_to``. Everything is computed (numpy-backed).

    Raises
    ------
    TypeError, ValueError
        Bad models, models that do not match, bad ``pad_to``, ``percentile`` or ``by``.
    """
    kb, kt = _check_kernel_pair(base, tl)
    n = _resolve_n(pad_to, base, kb)
    if not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be a number in [0, 100]; got {percentile!r}")
    if by not in ("spectral", "physical"):
        raise ValueError(f"by must be 'spectral' or 'physical'; got {by!r}")
    physical, spectral = _kernel_changes(kb, kt, n, chunks)
    rel_phys, rel_spec = _relative_changes(kb, physical, spectral, n)
    threshold, top = _top_changes(kb, kt, spectral if by == "spectral" else physical,
                                  percentile, n, by)
    long_names = {
        "physical_change": (physical, "Frobenius norm of W_TL - W_base over the taps"),
        "spectral_change": (spectral, "Frobenius norm of |W^_TL| - |W^_base| over the n x n grid"),
        "relative_physical_change": (rel_phys, "per-layer ||W_TL - W_base||_F / ||W_base||_F"),
        "relative_spectral_change": (rel_spec,
                                     "per-layer || |W^_TL| - |W^_base| ||_F / ||W^_base||_F"),
    }
    out = xr.Dataset({name: _with_attrs(da, long_name=text, units="1")
                      for name, (da, text) in long_names.items()})
    out = xr.merge([out, top], combine_attrs="override")
    out.attrs = {"percentile": float(percentile), "threshold": threshold, "by": by, "pad_to": n}
    return out


def _check_kernel_pair(base, tl):
    """The ``kernel`` DataArrays of two model Datasets of one shape, ``tl``'s on
    ``base``'s (layer, channel_out, channel_in) coordinates."""
    kb = _check_model(base, "base")
    kt = _check_model(tl, "tl")
    if kb.shape != kt.shape:
        raise ValueError(f"base and tl kernels must have the same shape; got {kb.shape} and {kt.shape}")
    for d in KERNEL_DIMS[:3]:
        if d in kb.coords and d in kt.coords and not np.array_equal(kb[d].values, kt[d].values):
            raise ValueError(f"base and tl must have the same {d!r} coordinates")
    return kb, kt.assign_coords({d: kb[d] for d in KERNEL_DIMS[:3] if d in kb.coords})


def _kernel_changes(kb, kt, n, chunks):
    """Computed ``(physical, spectral)`` change of each kernel over (layer, channel_out,
    channel_in): ``‖W_t − W_b‖_F`` over the taps and ``‖|Ŵ_t| − |Ŵ_b|‖_F`` over the
    ``n × n`` grid (the latter reduced chunk by chunk)."""
    diff = (kt - kb).astype(np.float64)
    physical = np.sqrt((diff**2).sum(["tap_y", "tap_x"], skipna=False))
    db = _kernel_dask(kb, n, chunks)
    dt = _kernel_dask(kt, n, chunks).rechunk(db.chunks)
    mult = _half_plane(n)[2]
    spectral = dsa.map_blocks(
        _spectral_change_np, db, dt, n, mult,
        drop_axis=[3, 4], dtype=np.float64, token="spectral-change",
    )
    spectral = xr.DataArray(spectral, dims=KERNEL_DIMS[:3], coords=physical.coords)
    return xr.align(physical.compute(), spectral.compute(), join="exact")


def _relative_changes(kb, physical, spectral, n):
    """Per-layer ``‖W_t − W_b‖_F / ‖W_b‖_F`` and ``‖|Ŵ_t| − |Ŵ_b|‖_F / ‖Ŵ_b‖_F`` over
    all kernels of a layer, from the per-kernel changes (``‖Ŵ‖_F = n‖W‖_F``)."""
    rest = ["channel_out", "channel_in"]
    base_norm = np.sqrt((kb.astype(np.float64) ** 2).sum(rest + ["tap_y", "tap_x"]))
    rel_phys = np.sqrt((physical**2).sum(rest)) / base_norm
    rel_spec = np.sqrt((spectral**2).sum(rest)) / (n * base_norm)
    return rel_phys, rel_spec


def _top_changes(kb, kt, ranked, percentile, n, by):
    """``(threshold, Dataset)`` of the kernels whose ``ranked`` change (the ``by``
    change) is at or above the ``percentile``, most-changed first: their (layer,
    channel_out, channel_in) labels, change and |Ŵ| on the ``n × n`` grid before and
    after (fftshifted) along ``top``."""
    values = ranked.values
    if not np.isfinite(values).any():
        raise ValueError("base and tl have no finite kernels to compare")
    threshold = float(np.nanpercentile(values, percentile))
    flat = np.where(np.isfinite(values), values, -np.inf).ravel()
    picks = np.flatnonzero(flat >= threshold)
    picks = picks[np.argsort(-flat[picks], kind="stable")]
    index = np.unravel_index(picks, values.shape)
    dtype = _float_dtype(kb.dtype)
    k = np.fft.fftshift(axis_wavenumbers(n))

    def label(d, i):
        return ("top", kb[d].values[i] if d in kb.coords else i)

    def filters(kernel, who):
        selected = np.asarray(kernel.values)[index].astype(dtype)
        return (("top", "ky", "kx"), _magnitude_np(selected, n, True),
                {"long_name": f"|W^| of the {who} kernel", "units": "1"})

    top = xr.Dataset(
        {
            "top_layer": label("layer", index[0]),
            "top_channel_out": label("channel_out", index[1]),
            "top_channel_in": label("channel_in", index[2]),
            "top_change": ("top", flat[picks], {"long_name": f"{by} change", "units": "1"}),
            "top_filter_base": filters(kb, "base"),
            "top_filter_tl": filters(kt, "re-trained"),
        },
        coords={"top": np.arange(picks.size), "ky": ("ky", k), "kx": ("kx", k)},
    )
    return threshold, top
