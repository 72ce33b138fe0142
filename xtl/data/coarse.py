r"""LES training data: filters, spectral coarse-graining and the SGS term Π.

A closure is trained on filtered DNS. This module turns a DNS Dataset
(``psi``, ``omega`` on ``(..., "y", "x")``, an ``n × n`` grid) into an LES
Dataset on an ``n_les × n_les`` grid with the filtered fields ψ̄, ω̄ and

.. math::

    \Pi = \overline{N(\omega,\psi)} - N(\bar\omega,\bar\psi),
    \qquad N(\omega,\psi) = u\,\partial_x\omega + v\,\partial_y\omega,

(u = ∂ψ/∂y, v = −∂ψ/∂x), so that the LES equation carries −Π (docs/conventions.md).

Filters
-------
Every filter is a transfer function Ĝ(kx, ky) of the integer radian
wavenumbers, with a width Δ (default ``2·(2π/n_les)``, twice the LES grid
spacing):

``"gaussian"`` (the default)
    Ĝ = exp(−k²Δ²/24), k² = kx² + ky² (isotropic).
``"box"`` (alias ``"top-hat"``)
    the mean over a Δ × Δ square: Ĝ = sinc(kxΔ/2)·sinc(kyΔ/2), sinc z = sin z / z.
``"sharp"``
    a sharp spectral cut-off at kc = π/Δ in each direction: Ĝ = 1 where
    |kx| < kc and |ky| < kc, else 0. It is square, like the LES grid, so with
    Δ = 2π/n_les (kc = n_les/2) it *is* the coarse-graining projection.

Coarse-graining
---------------
``f̄`` on the LES grid is computed spectrally: multiply the Fourier coefficients
by Ĝ, keep the modes with ``|kx| < n_les/2`` and ``|ky| < n_les/2``, and
transform back on the LES grid with the FFT normalization rescaled (by
``(n_les/n)²``), so that a Fourier mode ``cos(k·x + φ)`` with
``|kx|, |ky| < n_les/2`` becomes exactly ``Ĝ(k) cos(k·x + φ)`` sampled at the
LES points. **The LES Nyquist modes** (``|kx| = n_les/2`` or
``|ky| = n_les/2``) are set to zero: on the LES grid ``sin(n_les x/2)``
vanishes at every point and ``cos(n_les x/2)`` is its own alias, so such a
mode cannot be represented faithfully; dropping it keeps the operation a
projection that maps real fields to real fields.

The two nonlinear terms of Π
----------------------------
* ``N(ω, ψ)`` is computed on the DNS grid *like the solver*, by the 4-FFT
  Jacobian of :mod:`xtl.physics.fourier` from ψ̂ (ω = −∇²ψ): ψ̂ is multiplied by the DNS
  grid's mask before the products (the 2/3 rule when the case dealiases —
  ``case_dealias`` in ``ds.attrs`` — otherwise only the mean and the Nyquist
  modes are removed) and ``N̂`` by the mask after. For the solver's output
  (already band-limited) this is the exact, alias-free N.
* ``N(ω̄, ψ̄)`` is computed *alias-free* on the LES grid: the spectra of ψ̄, ω̄
  are zero-padded to ``3·n_les/2`` points (the 3/2 rule), the products are
  formed there, and the result is truncated back to ``|k| < n_les/2``. It is
  the exact N of the filtered fields projected onto the LES grid. Neither an
  aliased product (modes of ``N(ω̄,ψ̄)`` above ``n_les/2`` fold onto resolved
  modes) nor the 2/3 rule (which drops the modes of ω̄ above ``n_les/3``, and
  the modes of N between ``n_les/3`` and ``n_les/2``) would make Π vanish for
  a band-limited field under the sharp filter, which is what an SGS term must
  do; tests/test_coarse.py checks both this and Π of two modes against the
  analytic value. An LES solver that applies the 2/3 rule discards Π at the
  modes it removes, so storing the exact projection loses nothing.

The mean (k = 0) of both nonlinear terms is removed, as in the solver (it
vanishes analytically for periodic incompressible flow).

Everything is lazy and dask-parallel over the leading dims (``time``,
``member``): :func:`coarse_grain` is one :func:`xarray.apply_ufunc` with
``dask="parallelized"`` over blocks whose ``y``, ``x`` are whole; on numpy
input it runs eagerly and gives the same numbers.
"""
from __future__ import annotations

import math
import numbers
import threading

import numpy as np
import xarray as xr

from ..physics.fourier import (
    FILTER_FORMULAS,
    FILTERS,
    Jacobian,
    SpectralGrid,
    axis_wavenumbers,
    resize_spectrum,
    transfer_function,
    wavenumbers,
)
from .cf import CF_ATTRS, append_history
from ..options import CoarseGraining, check_filter, check_n_les, check_width, default_width
from ..solver.run import register_les_output

__all__ = [
    "FILTERS",
    "default_width",
    "filter_transfer_function",
    "coarse_grain",
    "sgs_term",
    "Coarsener",
    "resolve_les_options",
]

_PI_DEFINITION = (
    "pi = bar(N(omega, psi)) - N(bar(omega), bar(psi)), N = u domega/dx + v domega/dy, "
    "u = dpsi/dy, v = -dpsi/dx; the LES equation carries -pi"
)
_COARSE_GRAINING = (
    "spectral: multiply by the filter transfer function, keep |kx|, |ky| < n_les/2 "
    "(LES Nyquist modes set to 0), inverse FFT on the n_les grid"
)
_NONLINEAR = (
    "N(omega, psi): on the DNS grid with the DNS grid's mask (2/3 rule when dealias_dns=1); "
    "N(bar(omega), bar(psi)): alias-free on the LES grid (3/2-rule zero padding)"
)


# ----------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------
# public: transfer functions as DataArrays
# ----------------------------------------------------------------------------------------
def filter_transfer_function(n_les, filter="gaussian", *, n=None, width=None) -> xr.DataArray:
    """The transfer function Ĝ(ky, kx) of a filter, as a DataArray over wavenumber.

    Parameters
    ----------
    n_les : int
        LES grid size; sets the default width ``Δ = 2·(2π/n_les)``.
    filter : {"gaussian", "box", "sharp"}
        The filter (see the module docstring for the formulas).
    n : int, optional
        Grid whose wavenumbers to evaluate on: ``ky, kx = −n/2 … n/2−1``
        (full plane, k = 0 in the middle). Default ``n_les``; pass the DNS
        grid size to see the whole DNS range.
    width : float, optional
        Filter width Δ (domain length units); default ``2·(2π/n_les)``.

    Returns
    -------
    xarray.DataArray
        Real values, dims ``("ky", "kx")`` with integer radian wavenumbers,
        attrs ``filter``, ``filter_width``, ``n_les`` and ``formula``.

    Examples
    --------
    >>> G = filter_transfer_function(128, "gaussian", n=1024)
    >>> G.sel(ky=0).plot()                                   # doctest: +SKIP
    """
    name = check_filter(filter)
    n_les = check_n_les(n_les)
    n = n_les if n is None else n
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 2 or n % 2:
        raise ValueError(f"n must be an even integer >= 2 (a grid size), got {n!r}")
    width = check_width(width, n_les)
    k = np.fft.fftshift(axis_wavenumbers(n)).astype(float)  # -n/2 … n/2-1
    values = transfer_function(name, k[None, :], k[:, None], width)
    k_attrs = {"long_name": "integer radian wavenumber", "units": "1"}
    return xr.DataArray(
        values,
        dims=("ky", "kx"),
        coords={"ky": ("ky", k.astype(int), k_attrs), "kx": ("kx", k.astype(int), k_attrs)},
        name="transfer_function",
        attrs={
            "long_name": f"{name} filter transfer function",
            "units": "1",
            "filter": name,
            "filter_width": width,
            "n_les": n_les,
            "formula": FILTER_FORMULAS[name],
        },
    )


def resolve_les_options(les, case=None) -> dict:
    """Normalize an ``les=`` argument of :func:`~xtl.solver.simulate`/``ensemble``.

    Parameters
    ----------
    les : True, int or dict
        ``True``: the case's ``n_les`` with the default Gaussian filter; an
        int: that ``n_les``; a dict with keys ``n_les`` (default: the case's),
        ``filter`` (default ``"gaussian"``) and ``width`` (default
        ``2·(2π/n_les)``).
    case : Case, optional
        Supplies the default ``n_les`` and the DNS grid size it must be below.

    Returns
    -------
    dict
        ``{"n_les": int, "filter": str, "width": float}``.
    """
    cg = CoarseGraining.from_les(les)
    return (cg.for_grid(None) if case is None else cg.for_case(case)).to_dict()


# ----------------------------------------------------------------------------------------
# the numerical kernel
# ----------------------------------------------------------------------------------------
def _les_attrs(n, n_les, filter, width, dealias) -> dict:
    """Global attributes describing a coarse-graining."""
    return {
        "filter": filter,
        "filter_width": float(width),
        "n_dns": int(n),
        "n_les": int(n_les),
        "dealias_dns": int(dealias),
        "pi_definition": _PI_DEFINITION,
        "coarse_graining": _COARSE_GRAINING,
        "nonlinear_terms": _NONLINEAR,
    }


class Coarsener:
    """Filter, coarse-grain and compute Π for snapshots of one DNS grid.

    The workhorse of :func:`coarse_grain` and of ``simulate(..., les=...)``;
    it holds planned FFTs and precomputed multipliers, so create one per
    thread (they are not thread-safe) and reuse it.

    Parameters
    ----------
    n : int
        DNS grid size (even, >= 8).
    n_les : int
        LES grid size (even, >= 4, < n).
    filter : {"gaussian", "box", "sharp"}
    width : float, optional
        Filter width Δ; default ``2·(2π/n_les)``.
    dealias : bool, default True
        Apply the 2/3 rule to ``N(ω, ψ)`` on the DNS grid (as the solver does).
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend of the DNS-grid transforms.

    Attributes
    ----------
    attrs : dict
        The netCDF attributes describing the coarse-graining.
    x : ndarray
        LES grid points ``i·2π/n_les``.
    """

    #: output variables (the protocol of ``simulate(les=...)``)
    names = ("psi", "omega", "pi")
    #: what the output of ``simulate(les=...)`` is
    title = "LES training data (coarse-grained on the fly)"

    def __init__(self, n, n_les, filter="gaussian", width=None, dealias=True, fft="auto"):
        self.grid = g = SpectralGrid(n, dealias=dealias, fft=fft, threads=1)
        self.n = g.n
        self.n_les = check_n_les(n_les, self.n)
        self.filter = check_filter(filter)
        self.width = check_width(width, self.n_les)
        self.dealias = bool(dealias)
        self.x = np.arange(self.n_les) * (2 * np.pi / self.n_les)
        # DNS side: N(ω, ψ) from ψ̂ by the 4-FFT Jacobian, masked like the solver
        self._jacobian = Jacobian(g)
        self._plan2 = g.new_plan((2,))
        # LES side (normalized coefficients on the n_les rfft layout): the filter, and the
        # alias-free N(ω̄, ψ̄) on a grid of 3·n_les/2 points (the 3/2 rule)
        ky, kx = wavenumbers(self.n_les)
        self._G = transfer_function(self.filter, kx[None, :], ky[:, None], self.width)
        m = 3 * self.n_les // 2 + (3 * self.n_les // 2) % 2
        self._padded = SpectralGrid(max(m, 8), dealias=False, fft=fft)
        self._padded_jacobian = Jacobian(self._padded)

    @property
    def attrs(self) -> dict:
        """netCDF attributes of the LES output (filter, width, both grid sizes, definitions)."""
        return _les_attrs(self.n, self.n_les, self.filter, self.width, self.dealias)

    @property
    def options(self) -> dict:
        """``{"n_les", "filter", "width"}``: what :func:`resolve_les_options` returns."""
        return {"n_les": self.n_les, "filter": self.filter, "width": self.width}

    @property
    def signature(self) -> str:
        """The options a checkpoint of ``simulate(les=self)`` must match."""
        return repr(sorted(self.options.items()))

    # -- one snapshot -----------------------------------------------------------------------
    def physical(self, psi, omega) -> dict:
        """ψ̄, ω̄ and Π on the LES grid from physical ψ, ω ``(n, n)`` on the DNS grid.

        Parameters
        ----------
        psi, omega : ndarray
            Shape ``(n, n)``, axes ``(y, x)``.

        Returns
        -------
        dict
            ``{"psi", "omega", "pi"}``, float64 arrays ``(n_les, n_les)``.
        """
        p2 = self._plan2
        p2.real[0] = psi
        p2.real[1] = omega
        spec = p2.forward()
        return self._from_spectra(spec[0], spec[1])

    def spectral(self, omega_hat, psi_hat=None) -> dict:
        """As :meth:`physical`, from the DNS rfft2 spectra (``psi_hat`` default ``ω̂/k²``)."""
        if psi_hat is None:
            psi_hat = self.grid.streamfunction(omega_hat)
        return self._from_spectra(psi_hat, omega_hat)

    def _from_spectra(self, psi_hat, omega_hat):
        n, n_les = self.n, self.n_les
        inv_n2 = 1.0 / (n * n)
        # N(ω, ψ) on the DNS grid, dealiased like the solver (kept modes only)
        c_n = resize_spectrum(self._jacobian(psi_hat), n_les) * inv_n2
        c_psi = resize_spectrum(psi_hat, n_les) * inv_n2
        c_omega = resize_spectrum(omega_hat, n_les) * inv_n2
        # filter (the filter is diagonal, so filtering after truncation is the same)
        G = self._G
        c_psi *= G
        c_omega *= G
        c_n *= G
        c_pi = c_n - self._nonlinear_les(c_psi)
        fields = np.fft.irfft2(np.stack([c_psi, c_omega, c_pi]) * (n_les * n_les), s=(n_les, n_les))
        return {"psi": fields[0], "omega": fields[1], "pi": fields[2]}

    def _nonlinear_les(self, c_psi):
        """Normalized coefficients of N(ω̄, ψ̄) (ω̄ = −∇²ψ̄), alias-free (3/2 rule), on the LES modes."""
        big = self._padded
        # normalized coefficients: the unnormalized inverse FFT then gives the field itself
        c_n = self._padded_jacobian(resize_spectrum(c_psi, big.n), multiplier=big.mask)
        return resize_spectrum(c_n, self.n_les) / (big.n * big.n)

    def block(self, psi, omega, dtype=np.float64):
        """Apply :meth:`physical` over the leading axes of ``(..., n, n)`` arrays.

        Returns
        -------
        tuple of ndarray
            ``(psi, omega, pi)``, each ``(..., n_les, n_les)`` of ``dtype``.
        """
        lead = np.broadcast_shapes(psi.shape[:-2], omega.shape[:-2])
        psi = np.broadcast_to(psi, lead + psi.shape[-2:])
        omega = np.broadcast_to(omega, lead + omega.shape[-2:])
        out = [np.empty(lead + (self.n_les, self.n_les), dtype=dtype) for _ in range(3)]
        for index in np.ndindex(*lead):
            fields = self.physical(psi[index], omega[index])
            for o, name in zip(out, ("psi", "omega", "pi")):
                o[index] = fields[name]
        return tuple(out)


_LOCAL = threading.local()


def _coarsener(key) -> Coarsener:
    """A per-thread cached :class:`Coarsener` for ``key = (n, n_les, filter, width, dealias)``."""
    cache = getattr(_LOCAL, "cache", None)
    if cache is None:
        cache = _LOCAL.cache = {}
    if key not in cache:
        if len(cache) >= 4:
            cache.clear()
        n, n_les, filter, width, dealias = key
        cache[key] = Coarsener(n, n_les, filter, width, dealias)
    return cache[key]


def _coarse_block(psi, omega, *, key, dtype):
    """apply_ufunc kernel: ``(..., n, n)`` ψ, ω → ``(..., n_les, n_les)`` ψ̄, ω̄, Π."""
    n_les = key[1]
    lead = np.broadcast_shapes(psi.shape[:-2], omega.shape[:-2])
    if 0 in lead:  # dask's meta probing: shapes only
        empty = np.empty(lead + (n_les, n_les), dtype=dtype)
        return empty, empty.copy(), empty.copy()
    return _coarsener(key).block(psi, omega, dtype=dtype)


# ----------------------------------------------------------------------------------------
# Dataset API
# ----------------------------------------------------------------------------------------
def _check_dataset(ds):
    """Return ``(psi, omega, n)`` of a DNS Dataset, transposed to ``(..., y, x)``."""
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            "ds must be an xarray.Dataset with variables 'psi' and 'omega' on dims "
            f"(..., 'y', 'x'); got {type(ds).__name__}"
        )
    _refuse_les_data(ds)
    missing = [v for v in ("psi", "omega") if v not in ds.data_vars]
    if missing:
        raise ValueError(
            f"ds must have variables 'psi' and 'omega' (the DNS streamfunction and "
            f"vorticity); it lacks {missing}, variables are {list(ds.data_vars)}"
        )
    fields = []
    for name in ("psi", "omega"):
        da = ds[name]
        lacking = [d for d in ("y", "x") if d not in da.dims]
        if lacking:
            raise ValueError(
                f"ds[{name!r}] must have dims (..., 'y', 'x') on the periodic domain [0, 2π)²; "
                f"it lacks {lacking}, dims are {da.dims}"
            )
        if not np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.complexfloating):
            raise TypeError(f"ds[{name!r}] must hold real numbers, got dtype {da.dtype}")
        lead = [d for d in da.dims if d not in ("y", "x")]
        fields.append(da.transpose(*lead, "y", "x"))
    psi, omega = fields
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if ny != nx:
        raise ValueError(f"ds must be on a square grid (y and x of equal size), got y={ny}, x={nx}")
    n = nx
    if n < 8 or n % 2:
        raise ValueError(f"the DNS grid size (dims y, x) must be even and >= 8, got {n}")
    for d in ("y", "x"):
        if d in ds.coords:
            c = np.asarray(ds[d].values, dtype=float)
            expected = np.arange(n) * (2 * np.pi / n)
            if not np.allclose(c, expected, rtol=0, atol=1e-6 * (2 * np.pi / n)):
                raise ValueError(
                    f"ds coordinate {d!r} must be the points i·2π/n of the periodic domain "
                    f"[0, 2π) (n={n}); got values from {c[0]:.6g} to {c[-1]:.6g}"
                )
    # coordinates other than y/x that depend on y or x cannot be coarse-grained
    drop = [c for c in ds.coords if c not in ("y", "x") and set(ds[c].dims) & {"y", "x"}]
    return psi.drop_vars(drop, errors="ignore"), omega.drop_vars(drop, errors="ignore"), n


def _refuse_les_data(ds):
    """Raise if ``ds`` is already LES data (coarse-graining it again is a mistake)."""
    coarse = "filter" in ds.attrs and "n_les" in ds.attrs
    if "pi" in ds.data_vars or coarse:
        marks = ["variable 'pi'"] if "pi" in ds.data_vars else []
        marks += [f"attrs {k}={ds.attrs[k]!r}" for k in ("filter", "n_les") if k in ds.attrs]
        raise ValueError(
            "ds is already coarse-grained LES data (" + ", ".join(marks) + "); coarse-grain "
            "the DNS it came from (psi and omega on the DNS grid) instead"
        )


def _case_value(ds, key, default):
    """A case parameter from attrs, or from a constant coordinate along ``member``."""
    if key in ds.attrs:
        return ds.attrs[key]
    if key in ds.coords:
        values = np.unique(np.asarray(ds[key].values))
        if values.size == 1:
            return values.item()
        raise ValueError(
            f"ds[{key!r}] varies across members ({values.tolist()}); coarse-grain the "
            f"groups separately or pass the argument explicitly"
        )
    return default


def coarse_grain(ds, n_les=None, filter="gaussian", *, width=None, dealias=None) -> xr.Dataset:
    r"""Filter a DNS Dataset and coarse-grain it to the LES grid, with the SGS term Π.

    Parameters
    ----------
    ds : xarray.Dataset
        DNS output: ``psi`` and ``omega`` with dims ``(..., "y", "x")`` on a
        square ``n × n`` grid of the [0, 2π)² domain (any leading dims:
        ``time``, ``member``, ...). numpy-backed or dask-backed.
    n_les : int, optional
        LES grid size: even, >= 4, smaller than ``n``. Default: the case's
        (``ds.attrs["case_n_les"]``).
    filter : {"gaussian", "box", "sharp"}, default "gaussian"
        The filter (``"top-hat"`` is an alias of ``"box"``); see the module
        docstring and :func:`filter_transfer_function`.
    width : float, optional
        Filter width Δ; default ``2·(2π/n_les)``, twice the LES grid spacing.
    dealias : bool, optional
        Whether ``N(ω, ψ)`` on the DNS grid uses the 2/3 rule; default the
        case's (``ds.attrs["case_dealias"]``), else True.

    Returns
    -------
    xarray.Dataset
        ``psi`` (ψ̄), ``omega`` (ω̄) and ``pi`` (Π = \overline{N(ω,ψ)} − N(ω̄,ψ̄))
        on dims ``(..., "y", "x")`` of the ``n_les`` grid, with the leading
        coordinates of ``ds``, CF attributes, and global attributes ``filter``,
        ``filter_width``, ``n_dns``, ``n_les`` (plus the case's attributes).
        Lazy (dask) when ``ds`` is dask-backed: nothing is computed until
        asked; the result equals the eager one to round-off. Float32 input
        gives float32 output (the arithmetic is float64).

    Raises
    ------
    TypeError, ValueError
        Naming the bad argument: not a Dataset, no ``psi``/``omega``, no
        ``y``/``x`` dims, a non-square or odd grid, ``n_les`` not even or not
        smaller than ``n``, an unknown ``filter``, a non-positive ``width``.

    Examples
    --------
    >>> dns = xtl.simulate(xtl.get_case("tiny"), t_end=1.0, save_interval=0.1)
    >>> les = coarse_grain(dns.chunk(time=4), 16)      # lazy
    >>> les.pi.mean("time").compute()                  # doctest: +SKIP
    """
    psi, omega, n = _check_dataset(ds)
    if n_les is None:
        n_les = _case_value(ds, "case_n_les", None)
        if n_les is None:
            raise ValueError("n_les must be given (ds.attrs has no 'case_n_les' to default to)")
        n_les = int(n_les)
    n_les = check_n_les(n_les, n)
    name = check_filter(filter)
    width = check_width(width, n_les)
    if dealias is None:
        dealias = bool(_case_value(ds, "case_dealias", True))
    elif not isinstance(dealias, (bool, np.bool_)):
        raise TypeError(f"dealias must be True, False or None, got {dealias!r}")
    dtype = np.result_type(psi.dtype, omega.dtype, np.float32)
    if psi.chunks is not None or omega.chunks is not None:
        psi = psi.chunk({"y": -1, "x": -1})
        omega = omega.chunk({"y": -1, "x": -1})
    key = (n, n_les, name, width, bool(dealias))
    out = xr.apply_ufunc(
        _coarse_block,
        psi,
        omega,
        kwargs={"key": key, "dtype": dtype},
        input_core_dims=[["y", "x"], ["y", "x"]],
        output_core_dims=[["y", "x"]] * 3,
        exclude_dims={"y", "x"},
        dask="parallelized",
        output_dtypes=[dtype] * 3,
        dask_gufunc_kwargs={"output_sizes": {"y": n_les, "x": n_les}},
        keep_attrs=False,
    )
    x = np.arange(n_les) * (2 * np.pi / n_les)
    variables = {}
    for var, da in zip(("psi", "omega", "pi"), out):
        attrs = dict(CF_ATTRS[var])
        if var != "pi":
            attrs["long_name"] = f"filtered {attrs['long_name']} on the LES grid"
        variables[var] = da.assign_attrs(attrs)
    result = xr.Dataset(variables).assign_coords(
        y=("y", x, CF_ATTRS["y"]), x=("x", x.copy(), CF_ATTRS["x"])
    )
    lead = [d for d in result.psi.dims if d not in ("y", "x")]
    result = result.transpose(*lead, "y", "x")
    for c in result.coords:  # apply_ufunc drops the attributes of the leading coordinates
        if c not in ("y", "x") and c in ds.coords:
            result[c].attrs = dict(ds[c].attrs)
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("complete", "title")}
    name_attr = ds.attrs.get("case_name")
    title = f"xtl LES training data of case {name_attr!r}" if name_attr else "xtl LES training data"
    attrs = {"Conventions": "CF-1.8", "title": title, **attrs, **_les_attrs(*key)}
    result.attrs = append_history(
        attrs, f"xtl.coarse_grain(n_les={n_les}, filter={name!r}, width={width!r}, "
               f"dealias={bool(dealias)})")
    return result


def sgs_term(ds, n_les=None, filter="gaussian", *, width=None, dealias=None) -> xr.DataArray:
    r"""The SGS term Π = \overline{N(ω, ψ)} − N(ω̄, ψ̄) on the LES grid.

    Parameters
    ----------
    ds, n_les, filter, width, dealias
        As in :func:`coarse_grain`.

    Returns
    -------
    xarray.DataArray
        ``coarse_grain(...)["pi"]`` (lazy on dask input), with the global
        coarse-graining attributes merged into its attrs.
    """
    les = coarse_grain(ds, n_les, filter, width=width, dealias=dealias)
    return les["pi"].assign_attrs({**les.attrs, **les["pi"].attrs})


def _les_output(les, case, fft="auto") -> Coarsener:
    """The transform of ``simulate(les=...)``: a :class:`Coarsener` of the case's DNS grid."""
    return Coarsener(case.n, dealias=case.dealias, fft=fft, **resolve_les_options(les, case))


register_les_output(_les_output)
