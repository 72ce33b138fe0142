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

A posteriori, an LES run against the filtered DNS (:func:`les_metrics`):
spectra, the vorticity PDF (:func:`pdf_distance`) and its tails
(:func:`tail_density`), energy and enstrophy, the closure's energy transfer,
stability.
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
    "les_metrics",
    "pdf_distance",
    "tail_density",
    "TAIL_SIGMAS",
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


def spectrum_error(pred, truth, *, kmin: int = 1, kmax: int | None = None,
                   L: float | None = None) -> xr.Dataset:
    """RMSE over ``k`` of the log10 isotropic power spectra of Π.

    The spectra (:func:`xtl.data.spectra.spectrum`, ``kind="power"``) are
    averaged over all leading dims first; the error is
    ``sqrt(mean_k (log10 P_pred(k) − log10 P_true(k))²)`` over
    ``kmin <= k <= kmax`` where both spectra are positive.

    Parameters
    ----------
    pred, truth : xarray.DataArray
        Same dims ``(..., "y", "x")`` on one periodic square domain (``truth``'s
        coordinates ``y``, ``x``, which ``pred`` takes, give its length).
    kmin : int
        First shell (default 1: the mean, k = 0, is left out).
    kmax : int, optional
        Last shell; default ``min(Ny, Nx) // 2`` (the fully filled shells).
    L : float, optional
        The domain length: required when ``truth`` has no coordinates ``y``, ``x``
        (see :func:`xtl.data.spectra.spectrum`).

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
    sp = spectrum(a.rename(None), "power", kmax=kmax, L=L).mean(lead)
    st = spectrum(b.rename(None), "power", kmax=kmax, L=L).mean(lead)
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


# --------------------------------------------------------------------------- a posteriori
#: Multiples of the filtered DNS's vorticity standard deviation σ at which
#: :func:`les_metrics` compares the PDFs' tails.
TAIL_SIGMAS = (-5.0, -4.0, -3.0, 3.0, 4.0, 5.0)


def _cell_fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Fractions of the finite ``values`` below, in each bin of, and above ``edges``."""
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)]
    inside, _ = np.histogram(values, bins=edges)
    counts = np.concatenate([[np.count_nonzero(values < edges[0])], inside,
                             [np.count_nonzero(values > edges[-1])]])
    return counts / max(values.size, 1)


def pdf_distance(a, b, edges) -> float:
    r"""Hellinger distance between the distributions of two samples on common bins.

    .. math:: H^2 = \tfrac12 \sum_i \left(\sqrt{p_i} - \sqrt{q_i}\right)^2,

    with :math:`p_i, q_i` the fractions of ``a`` and ``b`` in cell ``i``: the bins
    of ``edges`` and the two cells outside them (so mass beyond the bins counts).
    ``0 <= H <= 1``; ``H = 0`` exactly for samples with one histogram, 1 for
    samples in disjoint cells. For two Gaussians of one σ whose means differ by
    δ, ``H² → 1 − exp(−δ²/(8σ²))`` as the bins get fine and the samples large.

    Parameters
    ----------
    a, b : array_like
        Samples (any shape; NaNs are left out).
    edges : array_like
        Increasing bin edges.
    """
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"edges must be increasing bin edges (at least 2), got {edges!r}")
    p, q = _cell_fractions(a, edges), _cell_fractions(b, edges)
    return float(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


def tail_density(values, sigma: float, multiples=TAIL_SIGMAS, *,
                 half_width: float = 0.25) -> np.ndarray:
    """The PDF of ``values`` at ``m·sigma`` for each ``m`` of ``multiples``.

    Estimated as the fraction of values within ``(m ± half_width)·sigma``
    divided by the window's width ``2·half_width·sigma``.

    Parameters
    ----------
    values : array_like
        Samples (NaNs are left out).
    sigma : float
        The scale (> 0), e.g. the filtered DNS's standard deviation of ω̄.
    multiples : sequence of float
        Where to evaluate, in units of ``sigma``.
    half_width : float
        Half the window, in units of ``sigma`` (> 0).

    Returns
    -------
    numpy.ndarray
        One density per multiple.
    """
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    if not half_width > 0:
        raise ValueError(f"half_width must be > 0, got {half_width!r}")
    values = np.asarray(values, dtype=float).ravel()
    values = values[np.isfinite(values)] / sigma
    out = [np.count_nonzero(np.abs(values - m) < half_width) for m in multiples]
    return np.asarray(out, dtype=float) / max(values.size, 1) / (2 * half_width * sigma)


def _pdf(omega: xr.DataArray, edges: np.ndarray) -> xr.DataArray:
    density = _cell_fractions(omega.values, edges)[1:-1] / np.diff(edges)
    centers = 0.5 * (edges[1:] + edges[:-1])
    return xr.DataArray(density, dims="omega_bin", coords={"omega_bin": centers},
                        attrs={"long_name": "PDF of vorticity (values beyond the bins count "
                                            "in the normalization)", "units": "1"})


def _resolved_kmax(les_ds: xr.Dataset) -> int:
    """Largest wavenumber the LES carries: the 2/3-rule cutoff when it dealiases."""
    n = les_ds.sizes["x"]
    return (n - 1) // 3 if int(les_ds.attrs.get("case_dealias", 1)) else n // 2 - 1


def _transfer(ds: xr.Dataset) -> tuple:
    """Mean energy transfer ⟨ψ̄Π⟩ and the backscatter share Σ(ψ̄Π)⁻ / Σ|ψ̄Π|."""
    transfer = (ds.psi * ds.pi).values
    transfer = transfer[np.isfinite(transfer)]
    total = float(np.sum(np.abs(transfer)))
    back = float(-np.sum(transfer[transfer < 0]))
    return float(np.mean(transfer)), back / total if total > 0 else float("nan")


def _scalar(value, long_name, units="1"):
    return xr.DataArray(float(value), attrs={"long_name": long_name, "units": units})


def les_metrics(les_ds: xr.Dataset, fdns_ds: xr.Dataset, *, bins: int = 81) -> xr.Dataset:
    """Compare an LES with the filtered DNS: spectra, PDF and its tails, energy, transfer.

    Parameters
    ----------
    les_ds : Dataset
        Output of :func:`xtl.run_les` (``omega``, ``psi`` on ``(time, y, x)``); with
        ``pi`` (the closure's Π on each snapshot, :func:`closure_fields`) the
        energy transfer is compared too.
    fdns_ds : Dataset
        The filtered DNS on the same grid (e.g. from :func:`xtl.coarse_grain`),
        any leading dims (``member``, ``time``).
    bins : int
        Bins of the vorticity PDFs. The edges depend on the filtered DNS only
        (``±max(max|ω̄|, 5.5σ)``, σ its standard deviation), so that runs compared
        with one filtered DNS share them.

    Returns
    -------
    xarray.Dataset
        * ``energy_les``/``energy_fdns``, ``enstrophy_les``/``enstrophy_fdns``:
          time-mean spectra over ``k``;
        * ``spectrum_error``: RMSE of the log10 energy spectra over the shells the
          LES resolves, 1 ≤ k ≤ ``attrs["kmax"]`` (the 2/3-rule cutoff of a
          dealiased LES);
        * ``pdf_les``/``pdf_fdns`` over ``omega_bin``; ``pdf_distance``, their
          Hellinger distance (:func:`pdf_distance`); ``tail_les``/``tail_fdns``,
          the PDFs at ``tail`` = :data:`TAIL_SIGMAS` multiples of σ
          (:func:`tail_density`), and ``tail_error``, the mean
          |log10(tail_les/tail_fdns)| where both are positive;
        * ``kinetic_energy`` and ``enstrophy`` over the LES ``time``, and their
          time means ``mean_energy_les``/``mean_enstrophy_les`` with the filtered
          DNS's ``mean_energy_fdns``/``mean_enstrophy_fdns``;
        * with ``pi`` in both: ``transfer_les``/``transfer_fdns``, the mean energy
          transfer ⟨ψ̄Π⟩ to the subgrid scales (the LES equation's −Π removes it
          from the resolved energy), and ``backscatter_les``/``backscatter_fdns``,
          the share Σ(ψ̄Π < 0)|ψ̄Π| / Σ|ψ̄Π| that goes the other way;
        * attrs ``stable`` (1/0), ``blowup_time`` (NaN if stable), ``kmax``,
          ``sigma_fdns`` and ``closure``.

    Raises
    ------
    ValueError
        If a variable is missing or the grids differ.
    """
    _check_metric_inputs(les_ds, fdns_ds)
    finite, stable, blowup = _stability(les_ds)
    good = les_ds.isel(time=np.flatnonzero(finite)) if not finite.all() else les_ds
    kmax = _resolved_kmax(les_ds)
    fdns_omega = np.asarray(fdns_ds.omega.values, dtype=float)
    sigma = float(np.nanstd(fdns_omega))
    out = xr.Dataset()
    for part in (_spectrum_metrics(good, fdns_ds, kmax),
                 _pdf_metrics(good.omega, fdns_ds.omega, sigma, bins),
                 _tail_metrics(good.omega.values, fdns_omega, sigma),
                 _energy_metrics(good, fdns_ds),
                 _transfer_metrics(good, fdns_ds)):
        for name, value in part.items():
            out[name] = value
    if "tail" in out.coords:
        out["tail"].attrs.update(long_name="multiple of the filtered DNS's sigma of vorticity",
                                 units="1")
    out.attrs.update(stable=int(stable), blowup_time=blowup, kmax=kmax, sigma_fdns=sigma,
                     closure=les_ds.attrs.get("closure", "unknown"))
    return out


def _check_metric_inputs(les_ds: xr.Dataset, fdns_ds: xr.Dataset) -> None:
    """Both datasets have ``omega`` and ``psi`` on one grid."""
    for name, ds in (("les_ds", les_ds), ("fdns_ds", fdns_ds)):
        missing = {"omega", "psi"} - set(ds.data_vars)
        if missing:
            raise ValueError(f"{name} must have variables 'omega' and 'psi'; missing {sorted(missing)}")
    if les_ds.sizes["x"] != fdns_ds.sizes["x"] or les_ds.sizes["y"] != fdns_ds.sizes["y"]:
        raise ValueError(
            f"les_ds and fdns_ds must be on one grid; got {les_ds.sizes['y']}x{les_ds.sizes['x']} "
            f"and {fdns_ds.sizes['y']}x{fdns_ds.sizes['x']}"
        )


def _stability(les_ds: xr.Dataset) -> tuple:
    """``(finite, stable, blowup_time)``: which snapshots are finite, whether the run
    completed without a blow-up, and when it blew up (NaN if it did not)."""
    finite = np.isfinite(les_ds.omega).all(("y", "x")).values
    stable = bool(finite.all()) and les_ds.attrs.get("complete", 1) == 1
    blowup = float("nan")
    if not finite.all():
        blowup = float(les_ds.time.values[np.argmin(finite)])
    elif not stable:
        blowup = float(les_ds.attrs.get("blowup_time", les_ds.time.values[-1]))
    return finite, stable, blowup


def _spectrum_metrics(good: xr.Dataset, fdns_ds: xr.Dataset, kmax: int) -> dict:
    """Time-mean energy and enstrophy spectra and the log-spectrum error up to ``kmax``."""
    mean_dims = [d for d in fdns_ds.omega.dims if d not in ("y", "x")]
    out = {}
    for kind in ("energy", "enstrophy"):
        out[f"{kind}_les"] = spectrum(good, kind=kind).mean("time")
        out[f"{kind}_fdns"] = spectrum(fdns_ds, kind=kind).mean(mean_dims)
    error = log_spectrum_rmse(out["energy_les"], out["energy_fdns"], kmax=kmax)
    out["spectrum_error"] = error.assign_attrs(
        long_name=f"RMSE of log10 energy spectra (LES vs filtered DNS), 1 <= k <= {kmax}",
        units="1")
    return out


def _pdf_metrics(les_omega: xr.DataArray, fdns_omega: xr.DataArray, sigma: float,
                 bins: int) -> dict:
    """Vorticity PDFs on bins set by the filtered DNS alone, and their Hellinger distance."""
    fdns_values = np.asarray(fdns_omega.values, dtype=float)
    span = max(float(np.nanmax(np.abs(fdns_values))), 5.5 * sigma)
    edges = np.linspace(-span, span, bins + 1)
    return {"pdf_les": _pdf(les_omega, edges), "pdf_fdns": _pdf(fdns_omega, edges),
            "pdf_distance": _scalar(pdf_distance(les_omega.values, fdns_values, edges),
                                    "Hellinger distance of the vorticity PDFs")}


def _tail_metrics(les_omega: np.ndarray, fdns_omega: np.ndarray, sigma: float) -> dict:
    """The PDFs at :data:`TAIL_SIGMAS` multiples of σ and their mean |log10| ratio."""
    tails = {"les": tail_density(les_omega, sigma), "fdns": tail_density(fdns_omega, sigma)}
    out = {f"tail_{label}": xr.DataArray(
        density, dims="tail", coords={"tail": list(TAIL_SIGMAS)},
        attrs={"long_name": "PDF of vorticity at tail sigmas of the filtered DNS", "units": "1"})
        for label, density in tails.items()}
    both = (tails["les"] > 0) & (tails["fdns"] > 0)
    error = (np.mean(np.abs(np.log10(tails["les"][both] / tails["fdns"][both])))
             if both.any() else np.nan)
    out["tail_error"] = _scalar(error, "mean |log10| ratio of the PDFs at 3-5 sigma")
    return out


def _energy_metrics(good: xr.Dataset, fdns_ds: xr.Dataset) -> dict:
    """Energy and enstrophy series of the LES and the means of both flows."""
    out = {
        "kinetic_energy": (0.5 * (good.omega * good.psi).mean(("y", "x"))).assign_attrs(
            long_name="kinetic energy of the LES", units="1"),
        "enstrophy": (0.5 * (good.omega ** 2).mean(("y", "x"))).assign_attrs(
            long_name="enstrophy of the LES", units="1"),
    }
    for label, ds in (("les", good), ("fdns", fdns_ds)):
        out[f"mean_energy_{label}"] = _scalar((0.5 * ds.omega * ds.psi).mean(),
                                              f"mean kinetic energy ({label})")
        out[f"mean_enstrophy_{label}"] = _scalar((0.5 * ds.omega ** 2).mean(),
                                                 f"mean enstrophy ({label})")
    return out


def _transfer_metrics(good: xr.Dataset, fdns_ds: xr.Dataset) -> dict:
    """Mean energy transfer ⟨ψ̄Π⟩ and backscatter share of both (empty without ``pi``)."""
    if "pi" not in good or "pi" not in fdns_ds:
        return {}
    out = {}
    for label, ds in (("les", good), ("fdns", fdns_ds)):
        transfer, back = _transfer(ds)
        out[f"transfer_{label}"] = _scalar(
            transfer, f"mean energy transfer <psi Pi> to the subgrid scales ({label})")
        out[f"backscatter_{label}"] = _scalar(
            back, f"share of |psi Pi| that is backscatter (psi Pi < 0) ({label})")
    return out
