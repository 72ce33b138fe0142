"""A priori skill metrics of a predicted SGS term Π, as Datasets.

All functions take DataArrays with dims ``(..., "y", "x")`` (any leading
dims: ``sample``, ``time``, ``member``; numpy- or dask-backed) and return
:class:`xarray.Dataset` objects, so metrics of many models concatenate along
a new dim (e.g. ``layer`` in :func:`xtl.layer_sweep`).

* :func:`correlation` -- Pearson correlation coefficient (CC) per snapshot
  over the grid, averaged over snapshots;
* :func:`conditional_correlation` -- the CC restricted to grid points of
  forward scatter (``Π·ω̄ > 0``) and of backscatter (``Π·ω̄ < 0``), from the
  true Π; with the LES equation carrying ``-Π`` the SGS term's enstrophy
  tendency is ``-Π·ω̄``, so ``Π·ω̄ < 0`` feeds resolved enstrophy
  (backscatter). Pass ψ̄ instead of ω̄ to condition on the energy transfer;
* :func:`relative_l2` -- ``‖Π_pred − Π‖₂ / ‖Π‖₂`` per snapshot, averaged;
* :func:`spectrum_error` -- RMSE over ``k`` of ``log10`` of the isotropic
  power spectra of Π (from :func:`xtl.data.spectra.spectrum`);
* :func:`score` -- all of the above in one Dataset.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .spectra import spectrum

__all__ = [
    "correlation",
    "conditional_correlation",
    "relative_l2",
    "spectrum_error",
    "log_spectrum_rmse",
    "score",
]

_GRID = ("y", "x")


def _check_pair(pred, truth, names=("pred", "truth")):
    """Validate two fields and return them aligned, float64, dims ``(..., y, x)``."""
    out = []
    for da, name in zip((pred, truth), names):
        if not isinstance(da, xr.DataArray):
            raise TypeError(
                f"{name} must be an xarray.DataArray with dims (..., 'y', 'x'), "
                f"got {type(da).__name__}"
            )
        missing = [d for d in _GRID if d not in da.dims]
        if missing:
            raise ValueError(f"{name} must have dims (..., 'y', 'x'); it lacks {missing} "
                             f"(dims {da.dims})")
        out.append(da.astype(np.float64))
    a, b = out
    if set(a.dims) != set(b.dims) or any(a.sizes[d] != b.sizes[d] for d in a.dims):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same dims and sizes, got "
            f"{dict(a.sizes)} and {dict(b.sizes)}"
        )
    a = a.transpose(*b.dims)
    a = a.drop_vars([c for c in a.coords if c not in a.dims])
    b = b.drop_vars([c for c in b.coords if c not in b.dims])
    a, b = xr.align(a, b, join="override")
    return a, b


def _average(da: xr.DataArray, average: bool) -> xr.DataArray:
    """Mean over all dims (skipping NaN) when ``average``, else ``da``."""
    return da.mean(skipna=True) if average else da


def _pearson(a, b, weight=None):
    """Pearson CC over the grid of ``a`` and ``b`` (points where ``weight`` is true)."""
    if weight is None:
        weight = xr.ones_like(a)
    w = weight.astype(np.float64)
    n = w.sum(_GRID)
    am = (a * w).sum(_GRID) / n
    bm = (b * w).sum(_GRID) / n
    da, db = (a - am) * w, (b - bm) * w
    cov = (da * db).sum(_GRID)
    var = np.sqrt((da * da).sum(_GRID) * (db * db).sum(_GRID))
    return (cov / var.where(var > 0)).where(n > 1)


def correlation(pred, truth, *, average: bool = True) -> xr.Dataset:
    """Pearson correlation coefficient per snapshot over the grid.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Predicted and true Π, same dims ``(..., "y", "x")``.
    average : bool
        Average the per-snapshot CC over all leading dims (default), or keep them.

    Returns
    -------
    xarray.Dataset
        ``cc`` (scalar, or over the leading dims); NaN for a constant snapshot.
    """
    a, b = _check_pair(pred, truth)
    cc = _average(_pearson(a, b), average)
    return xr.Dataset({"cc": cc.assign_attrs(
        long_name="correlation coefficient of predicted and true Pi", units="1")})


def conditional_correlation(pred, truth, field, *, average: bool = True) -> xr.Dataset:
    """CC restricted to forward-scatter and to backscatter points.

    Points are classified by the sign of ``truth * field`` (with ``field`` =
    ω̄: enstrophy transfer; ψ̄: energy transfer): ``> 0`` is forward scatter
    (the SGS term removes resolved enstrophy), ``< 0`` backscatter.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Predicted and true Π, same dims ``(..., "y", "x")``.
    field : xarray.DataArray
        ω̄ (or ψ̄) on the same grid and snapshots.
    average : bool
        Average over snapshots (default) or keep the leading dims.

    Returns
    -------
    xarray.Dataset
        ``cc_forward``, ``cc_backscatter`` (per-snapshot Pearson CC over the
        selected points, NaN where fewer than 2 points), and
        ``backscatter_fraction`` (share of points with ``truth*field < 0``).
    """
    a, b = _check_pair(pred, truth)
    _, f = _check_pair(truth, field, names=("truth", "field"))
    transfer = b * f
    forward, back = transfer > 0, transfer < 0
    out = {
        "cc_forward": _average(_pearson(a, b, forward), average).assign_attrs(
            long_name="CC of Pi where Pi*field > 0 (forward scatter)", units="1"),
        "cc_backscatter": _average(_pearson(a, b, back), average).assign_attrs(
            long_name="CC of Pi where Pi*field < 0 (backscatter)", units="1"),
        "backscatter_fraction": _average(back.astype(np.float64).mean(_GRID), average)
        .assign_attrs(long_name="fraction of grid points with backscatter", units="1"),
    }
    return xr.Dataset(out)


def relative_l2(pred, truth, *, average: bool = True) -> xr.Dataset:
    """Relative L2 error ``‖pred − truth‖₂ / ‖truth‖₂`` per snapshot.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Same dims ``(..., "y", "x")``.
    average : bool
        Average over snapshots (default) or keep the leading dims.

    Returns
    -------
    xarray.Dataset
        ``rel_l2``; NaN for an all-zero true snapshot.
    """
    a, b = _check_pair(pred, truth)
    num = np.sqrt(((a - b) ** 2).sum(_GRID))
    den = np.sqrt((b ** 2).sum(_GRID))
    err = _average(num / den.where(den > 0), average)
    return xr.Dataset({"rel_l2": err.assign_attrs(
        long_name="relative L2 error of predicted Pi", units="1")})


def log_spectrum_rmse(a: xr.DataArray, b: xr.DataArray, *, kmin: int = 1,
                      kmax: int | None = None) -> xr.DataArray:
    """``sqrt(mean_k (log10 a(k) − log10 b(k))²)`` over ``kmin <= k <= kmax``.

    Shells where either spectrum is not positive are left out (so an empty
    shell never makes the error infinite).

    Parameters
    ----------
    a, b : xarray.DataArray
        Spectra over ``k``.
    kmin, kmax : int
        Shells compared (default from 1 to the last one).

    Returns
    -------
    xarray.DataArray
        The error in decades (over the remaining dims of ``a`` and ``b``).
    """
    sel = dict(k=slice(int(kmin), None if kmax is None else int(kmax)))
    la, lb = a.sel(sel), b.sel(sel)
    ok = (la > 0) & (lb > 0)
    diff = (np.log10(la.where(ok)) - np.log10(lb.where(ok))) ** 2
    return np.sqrt(diff.mean("k", skipna=True))


def spectrum_error(pred, truth, *, kmin: int = 1, kmax: int | None = None) -> xr.Dataset:
    """RMSE over ``k`` of the log10 isotropic power spectra of Π.

    The spectra (:func:`xtl.data.spectra.spectrum`, ``kind="power"``) are
    averaged over all leading dims first; the error is
    ``sqrt(mean_k (log10 P_pred(k) − log10 P_true(k))²)`` over
    ``kmin <= k <= kmax`` where both spectra are positive.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Same dims ``(..., "y", "x")`` on the 2π-periodic grid.
    kmin : int
        First shell (default 1: the mean, k = 0, is left out).
    kmax : int, optional
        Last shell; default ``min(Ny, Nx) // 2`` (the fully filled shells).

    Returns
    -------
    xarray.Dataset
        ``spectrum_error`` (in decades), and the mean spectra
        ``spectrum_pred`` and ``spectrum_true`` over ``k``.
    """
    a, b = _check_pair(pred, truth)
    n = min(b.sizes["y"], b.sizes["x"])
    kmax = n // 2 if kmax is None else int(kmax)
    if not 0 <= int(kmin) <= kmax:
        raise ValueError(f"kmin and kmax must satisfy 0 <= kmin <= kmax, got {kmin}, {kmax}")
    lead = [d for d in b.dims if d not in _GRID]
    sp = spectrum(a.rename(None), "power", kmax=kmax).mean(lead)
    st = spectrum(b.rename(None), "power", kmax=kmax).mean(lead)
    err = log_spectrum_rmse(sp, st, kmin=kmin, kmax=kmax)
    return xr.Dataset({
        "spectrum_error": err.assign_attrs(
            long_name="RMSE of log10 power spectra of Pi over k", units="1",
            kmin=int(kmin), kmax=int(kmax)),
        "spectrum_pred": sp.assign_attrs(long_name="mean power spectrum of predicted Pi"),
        "spectrum_true": st.assign_attrs(long_name="mean power spectrum of true Pi"),
    })


def score(pred, truth, field=None) -> xr.Dataset:
    """All scalar metrics of a prediction in one Dataset.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Predicted and true Π, same dims ``(..., "y", "x")``.
    field : xarray.DataArray, optional
        ω̄ for the forward/backscatter-conditioned CC (left out when None).

    Returns
    -------
    xarray.Dataset
        Scalars ``cc``, ``rel_l2``, ``spectrum_error`` and, with ``field``,
        ``cc_forward``, ``cc_backscatter``, ``backscatter_fraction``.
    """
    parts = [correlation(pred, truth), relative_l2(pred, truth),
             spectrum_error(pred, truth)[["spectrum_error"]]]
    if field is not None:
        parts.append(conditional_correlation(pred, truth, field))
    return xr.merge(parts, compat="override").compute()
