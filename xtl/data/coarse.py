r"""LES training data: filters, spectral coarse-graining and the SGS term Π.

A closure is trained on filtered DNS. This module turns a DNS Dataset
(``psi``, ``omega`` on ``(..., "y", "x")``, an ``n × n`` grid) into an LES
Dataset on an ``n_les × n_les`` grid with the filtered fields ψ̄, ω̄ and

.. math::

    \Pi = \overline{N(\omega,\psi)} - N(\bar\omega,\bar\psi),
    \qquad N(\omega,\psi) = u\,\partial_x\omega + v\,\partial_y\omega,

(u = ∂ψ/∂y, v = −∂ψ/∂x), so that the LES equation carries −Π (docs/conventions.md).

Any advected scalar
-------------------
``coarse_grain(ds, ..., scalar="q", streamfunction="psi")`` gives the SGS term of
any scalar q advected by the flow of ψ, with the same N and the same sign:

.. math::

    \Pi_q = \overline{N(q,\psi)} - N(\bar q,\bar\psi),
    \qquad N(q,\psi) = u\,\partial_x q + v\,\partial_y q,

so that the LES equation of q̄ carries −Π_q (∂q̄/∂t + N(q̄, ψ̄) = ... − Π_q). q
need not be −∇²ψ (in QG it is the potential vorticity). It is stored as
``"pi"`` for ``scalar="omega"`` and ``f"pi_{scalar}"`` otherwise (:func:`sgs_name`).
Leading dims (``time``, ``member``, ``lev``, ...) are carried, each level on its own.

The domain
----------
Data live on a periodic square domain of side L, read from evenly spaced
coordinates ``y``, ``x`` (``L = N·spacing``, any origin x0) or passed as ``L=``;
without either, the data are refused. Derivatives are in the units of the
coordinates, the filter width Δ too (default ``2·L/n_les``), and the LES points
are ``x0 + i·L/n_les``. Internally everything runs on the 2π domain: Π on a
domain of side L is (2π/L)² times Π of the same values on [0, 2π)² with the
width Δ·2π/L. On the 2π domain, N(ω, ψ) of the default pair is formed from ψ
alone (ω = −∇²ψ, the solver's fast path below); for any other scalar or domain
it is formed from q and ψ as given (advective form, 4 + 1 FFTs).

Filters
-------
Every filter is a transfer function Ĝ(kx, ky) of the radian wavenumbers,
with a width Δ (default ``2·(L/n_les)``, twice the LES grid spacing; on the 2π
domain the wavenumbers are integers):

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

import dataclasses
import math
import numbers
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import xarray as xr

from ..options import Options, check_bool
from ..physics.cases import check_n_les
from ..physics.fourier import (
    FILTER_FORMULAS,
    FILTERS,
    Jacobian,
    SpectralGrid,
    axis_wavenumbers,
    check_length,
    domain_length,
    resize_spectrum,
    transfer_function,
    wavenumbers,
)
from .cf import CF_ATTRS, append_history

__all__ = [
    "FILTERS",
    "sgs_name",
    "FILTER_ALIASES",
    "CoarseGraining",
    "check_filter",
    "check_width",
    "default_width",
    "filter_transfer_function",
    "coarse_grain",
    "sgs_term",
    "NONFINITE",
    "NonFiniteError",
    "check_nonfinite",
]

_PI_DEFINITION = (
    "pi = bar(N(omega, psi)) - N(bar(omega), bar(psi)), N = u domega/dx + v domega/dy, "
    "u = dpsi/dy, v = -dpsi/dx; the LES equation carries -pi"
)
_SCALAR_DEFINITION = (
    "{pi} = bar(N({q}, {psi})) - N(bar({q}), bar({psi})), N = u d{q}/dx + v d{q}/dy, "
    "u = d{psi}/dy, v = -d{psi}/dx; the LES equation of {q} carries -{pi}"
)
_TWO_PI = 2.0 * math.pi
_COARSE_GRAINING = (
    "spectral: multiply by the filter transfer function, keep |kx|, |ky| < n_les/2 "
    "(LES Nyquist modes set to 0), inverse FFT on the n_les grid"
)
_NONLINEAR = (
    "N(omega, psi): on the DNS grid with the DNS grid's mask (2/3 rule when dealias_dns=1); "
    "N(bar(omega), bar(psi)): alias-free on the LES grid (3/2-rule zero padding)"
)


# ----------------------------------------------------------------------------------------
# the parameters: filter, LES grid, width
# ----------------------------------------------------------------------------------------
#: Other names of the filters (``"top-hat"`` is the box filter).
FILTER_ALIASES = {"top-hat": "box", "tophat": "box"}


def check_filter(filter) -> str:
    """The registered filter ``filter`` names (case-insensitive, aliases resolved).

    Parameters
    ----------
    filter : str
        A name in :data:`xtl.physics.fourier.FILTERS` or :data:`FILTER_ALIASES`.

    Raises
    ------
    ValueError
        Not a registered filter (the message lists them).
    """
    if isinstance(filter, str):
        name = FILTER_ALIASES.get(filter.lower(), filter.lower())
        if name in FILTERS:
            return name
    raise ValueError(
        f"filter must be one of {list(FILTERS)} (or 'top-hat' for 'box'), got {filter!r}"
    )


def default_width(n_les: int) -> float:
    """The default filter width Δ = 2·(2π/n_les), twice the LES grid spacing, on the 2π
    domain (``n_les``: LES grid points per direction, even, >= 4); on a domain of side L
    the default is ``2·(L/n_les)``, this times L/2π."""
    return 2.0 * (2.0 * math.pi / check_n_les(n_les))


def check_width(width, n_les) -> float:
    """The filter width Δ: ``width`` (finite, > 0), or :func:`default_width` when None."""
    if width is None:
        return default_width(n_les)
    if not isinstance(width, numbers.Real) or isinstance(width, bool):
        raise TypeError(f"width must be a positive number (the filter width Δ), got {width!r}")
    width = float(width)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0 (the filter width Δ), got {width}")
    return width


# ----------------------------------------------------------------------------------------
# the one object
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoarseGraining(Options):
    """How DNS fields become LES fields: the filter and the LES grid, and the work.

    Checked once, when made; then passed whole from the config to
    :func:`xtl.simulate`, :func:`xtl.ensemble` and their workers. :meth:`apply`
    coarse-grains a Dataset, :meth:`spectral` and :meth:`block` arrays.

    Parameters
    ----------
    n_les : int, optional
        LES grid size (even, >= 4, not larger than the DNS grid it meets);
        None: the case's ``n_les`` (:meth:`for_case`) or the Dataset's.
    filter : str
        A registered filter (:data:`xtl.physics.fourier.FILTERS`; ``"top-hat"`` is
        ``"box"``).
    width : float, optional
        Filter width Δ in units of the 2π domain (on data of domain length L the
        filter is ``width·L/2π`` wide); None: ``2·(2π/n_les)``, twice the LES spacing.

    Examples
    --------
    >>> cg = CoarseGraining(32, "box")
    >>> les = cg.apply(dns)                                   # doctest: +SKIP
    >>> xtl.simulate(case, t_end=1.0, save_interval=0.1, les=cg)  # doctest: +SKIP
    """

    n_les: int | None = None
    filter: str = "gaussian"
    width: float | None = None

    #: the variables of the LES output
    variables: ClassVar[tuple] = ("psi", "omega", "pi")

    def __post_init__(self):
        set_ = object.__setattr__
        if self.n_les is not None:
            set_(self, "n_les", check_n_les(self.n_les))
            set_(self, "width", check_width(self.width, self.n_les))
        elif self.width is not None:
            set_(self, "width", check_width(self.width, 4))
        set_(self, "filter", check_filter(self.filter))

    @classmethod
    def from_les(cls, les) -> "CoarseGraining":
        """The coarse-graining an ``les=`` argument asks for.

        Parameters
        ----------
        les : True, int, mapping or CoarseGraining
            ``True``: the defaults; an int: that ``n_les``; a mapping of
            ``n_les``, ``filter``, ``width``; a CoarseGraining: itself.

        Raises
        ------
        TypeError
            Another type.
        ValueError
            An unknown key (the message lists the valid ones) or a bad value.
        """
        if isinstance(les, cls):
            return les
        if les is True:
            return cls()
        if isinstance(les, numbers.Integral) and not isinstance(les, bool):
            return cls(n_les=int(les))
        if isinstance(les, Mapping):
            unknown = sorted(set(les) - set(cls.names()))
            if unknown:
                raise ValueError(f"les has unknown keys {unknown}; allowed are 'n_les', "
                                 "'filter', 'width'")
            return cls.merge(les)
        raise TypeError("les must be True, an int n_les, or a dict(n_les=..., filter=..., "
                        f"width=...) or CoarseGraining, got {les!r}")

    def for_grid(self, n: int | None = None, n_les: int | None = None) -> "CoarseGraining":
        """Itself, completed with ``n_les`` when it has none, checked against a DNS
        grid of ``n`` points (None: any).

        Raises
        ------
        ValueError
            No LES grid size, or one larger than ``n``.
        """
        if self.n_les is None:
            if n_les is None:
                raise ValueError("the coarse-graining needs an 'n_les' (no case to take it from)")
            return dataclasses.replace(self, n_les=n_les).for_grid(n)
        if n is not None:
            check_n_les(self.n_les, n)
        return self

    def for_case(self, case) -> "CoarseGraining":
        """:meth:`for_grid` of a case: its DNS grid ``n`` and, by default, its ``n_les``."""
        return self.for_grid(case.n, case.n_les)

    # -- what the output says ------------------------------------------------------------
    @property
    def x(self) -> np.ndarray:
        """The LES grid points ``i·2π/n_les``."""
        return np.arange(self.n_les) * (2 * np.pi / self.n_les)

    def attrs(self, n: int, dealias: bool = True) -> dict:
        """netCDF attributes of LES data from a DNS grid of ``n`` points (filter, width,
        both grid sizes, definitions)."""
        return {
            "filter": self.filter,
            "filter_width": float(self.width),
            "n_dns": int(n),
            "n_les": int(self.n_les),
            "dealias_dns": int(dealias),
            "pi_definition": _PI_DEFINITION,
            "coarse_graining": _COARSE_GRAINING,
            "nonlinear_terms": _NONLINEAR,
        }

    @property
    def signature(self) -> str:
        """What a checkpoint of ``simulate(les=self)`` must match."""
        return repr(sorted(self.to_dict().items()))

    # -- the work ------------------------------------------------------------------------
    def kernel(self, n: int, dealias: bool = True, fft: str = "auto") -> "_GridKernel":
        """The planned FFTs and multipliers of this coarse-graining of an ``n × n``
        DNS grid, made once per thread (they are not thread-safe) and reused."""
        cache = _LOCAL.__dict__.setdefault("cache", {})
        key = (self, int(n), bool(dealias), fft)
        if key not in cache:
            if len(cache) >= 4:
                cache.clear()
            cache[key] = _GridKernel(self.for_grid(n), n, dealias, fft)
        return cache[key]

    def spectral(self, omega_hat, *, dealias: bool = True, fft: str = "auto") -> dict:
        """ψ̄, ω̄ and Π on the LES grid from the rfft2 spectrum ``omega_hat`` of a DNS
        vorticity (``(n, n//2 + 1)``): what ``simulate(les=...)`` stores.

        Returns
        -------
        dict
            ``{"psi", "omega", "pi"}``, float64 arrays ``(n_les, n_les)``.
        """
        return self.kernel(omega_hat.shape[0], dealias, fft).spectral(omega_hat)

    def block(self, psi, omega, *, dealias: bool = True, dtype=np.float64,
              general: bool = False) -> tuple:
        """ψ̄, ω̄ and Π of physical ``(..., n, n)`` arrays ψ, ω over their leading axes.

        With ``general``, ``omega`` is any advected scalar q and N(q, ψ) is formed from
        q itself (:meth:`_GridKernel.pair`); without, N is formed from ψ alone, which
        presumes ω = −∇²ψ on the 2π domain (the solver's fast path). A sample with
        NaN or ±Inf anywhere in ψ or ω is NaN in all three outputs.

        Returns
        -------
        tuple of ndarray
            ``(psi, omega, pi)``, each ``(..., n_les, n_les)`` of ``dtype``.
        """
        return self.kernel(psi.shape[-1], dealias).block(psi, omega, dtype=dtype, general=general)

    def apply(self, ds: xr.Dataset, *, dealias: bool | None = None, scalar: str = "omega",
              streamfunction: str = "psi", L: float | None = None,
              nonfinite: str = "propagate") -> xr.Dataset:
        """Filter the DNS Dataset ``ds`` and coarse-grain it, with the SGS term of ``scalar``.

        ``n_les`` None takes the case's (``ds.attrs["case_n_les"]``); ``dealias``
        None the case's (``ds.attrs["case_dealias"]``), else True. This object's
        ``width`` is in units of the 2π domain: on data of domain length L the filter
        width is ``width·L/2π`` (:func:`coarse_grain` takes it in the data's units).
        ``nonfinite`` is the policy of a sample holding NaN or ±Inf (the Notes of
        :func:`coarse_grain`). Returns and raises as :func:`coarse_grain`.
        """
        nonfinite = check_nonfinite(nonfinite)
        names = _check_names(scalar, streamfunction)
        psi, q, n, length = _check_dataset(ds, names, L)
        les = self.for_grid(n, _case_n_les(ds) if self.n_les is None else None)
        dealias = check_bool(dealias, "dealias", optional=True)
        if dealias is None:
            dealias = bool(_case_value(ds, "case_dealias", True))
        # the solver's fast path presumes omega = -lap(psi) on the 2π domain
        general = scalar != "omega" or length != _TWO_PI
        fields = _coarse_fields(les, psi, q, dealias, general,
                                names if nonfinite == "raise" else None)
        if length != _TWO_PI:  # N has two derivatives: Π scales as (2π/L)²
            fields = (fields[0], fields[1], fields[2] * (_TWO_PI / length) ** 2)
        result = _les_dataset(fields, ds, names, length, les.n_les)
        attrs = {**result.attrs, **les.attrs(n, dealias), **_domain_attrs(les, names, length)}
        result.attrs = append_history(attrs, _history(les, dealias, names, length))
        return result


def _domain_attrs(coarse_graining, names, length) -> dict:
    """The attributes of LES data that depend on the domain and the scalar pair."""
    streamfunction, scalar, pi = names
    attrs = {"domain_length": float(length),
             "filter_width": float(coarse_graining.width * (length / _TWO_PI))}
    if names != ("psi", "omega", "pi"):
        attrs.update(scalar=scalar, streamfunction=streamfunction, pi_definition=
                     _SCALAR_DEFINITION.format(pi=pi, q=scalar, psi=streamfunction))
    return attrs


def _history(coarse_graining, dealias, names, length) -> str:
    """The history line of :meth:`CoarseGraining.apply`."""
    width = coarse_graining.width * (length / _TWO_PI)
    text = (f"xtl.coarse_grain(n_les={coarse_graining.n_les}, filter={coarse_graining.filter!r}, "
            f"width={width!r}, dealias={dealias}")
    if names[:2] != ("psi", "omega"):
        text += f", scalar={names[1]!r}, streamfunction={names[0]!r}"
    if length != _TWO_PI:
        text += f", L={length!r}"
    return text + ")"


# ----------------------------------------------------------------------------------------
# public: transfer functions as DataArrays
# ----------------------------------------------------------------------------------------
def filter_transfer_function(n_les, filter="gaussian", *, n=None, width=None,
                             L=None) -> xr.DataArray:
    """The transfer function Ĝ(ky, kx) of a filter, as a DataArray over wavenumber.

    Parameters
    ----------
    n_les : int
        LES grid size; sets the default width ``Δ = 2·(L/n_les)``.
    filter : {"gaussian", "box", "sharp"}
        The filter (see the module docstring for the formulas).
    n : int, optional
        Grid whose wavenumbers to evaluate on: ``ky, kx = −n/2 … n/2−1``
        (full plane, k = 0 in the middle). Default ``n_les``; pass the DNS
        grid size to see the whole DNS range.
    width : float, optional
        Filter width Δ in the units of ``L``; default ``2·(L/n_les)``.
    L : float, optional
        The domain length; None: 2π (xtl's own grids). The wavenumbers ``ky``,
        ``kx`` stay integers in units of 2π/L (Ĝ is evaluated at ``k·2π/L``).

    Returns
    -------
    xarray.DataArray
        Real values, dims ``("ky", "kx")`` with integer wavenumbers in units of
        2π/L, attrs ``filter``, ``filter_width`` (in the units of ``L``),
        ``domain_length``, ``n_les`` and ``formula``.

    Examples
    --------
    >>> G = filter_transfer_function(128, "gaussian", n=1024)
    >>> G.sel(ky=0).plot()                                   # doctest: +SKIP
    """
    length = _TWO_PI if L is None else check_length(L)
    if width is not None:
        width = check_width(width, 4) * (_TWO_PI / length)
    cg = CoarseGraining(n_les, filter, width).for_grid()
    n = cg.n_les if n is None else n
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 2 or n % 2:
        raise ValueError(f"n must be an even integer >= 2 (a grid size), got {n!r}")
    k = np.fft.fftshift(axis_wavenumbers(n)).astype(float)  # -n/2 … n/2-1
    values = transfer_function(cg.filter, k[None, :], k[:, None], cg.width)
    k_attrs = {"long_name": "integer wavenumber in units of 2π/L", "units": "1"}
    return xr.DataArray(
        values,
        dims=("ky", "kx"),
        coords={"ky": ("ky", k.astype(int), k_attrs), "kx": ("kx", k.astype(int), k_attrs)},
        name="transfer_function",
        attrs={
            "long_name": f"{cg.filter} filter transfer function",
            "units": "1",
            "filter": cg.filter,
            "filter_width": cg.width * (length / _TWO_PI),
            "domain_length": length,
            "n_les": cg.n_les,
            "formula": FILTER_FORMULAS[cg.filter],
        },
    )


# ----------------------------------------------------------------------------------------
# the numerical kernel
# ----------------------------------------------------------------------------------------
class _GridKernel:
    """The planned FFTs and multipliers of one coarse-graining of one DNS grid.

    Parameters
    ----------
    coarse_graining : CoarseGraining
        Complete (``n_les`` set, not larger than ``n``).
    n : int
        DNS grid size (even, >= 8).
    dealias : bool
        Apply the 2/3 rule to ``N(ω, ψ)`` on the DNS grid (as the solver does).
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend of the DNS-grid transforms.
    """

    def __init__(self, coarse_graining, n, dealias, fft):
        self.grid = g = SpectralGrid(n, dealias=dealias, fft=fft, threads=1)
        self.n, self.n_les = g.n, coarse_graining.n_les
        # DNS side: N(ω, ψ) from ψ̂ by the 4-FFT Jacobian, masked like the solver
        self._jacobian = Jacobian(g)
        self._plan2 = g.new_plan((2,))
        # LES side (normalized coefficients on the n_les rfft layout): the filter, and the
        # alias-free N(ω̄, ψ̄) on a grid of 3·n_les/2 points (the 3/2 rule)
        ky, kx = wavenumbers(self.n_les)
        self._G = transfer_function(coarse_graining.filter, kx[None, :], ky[:, None],
                                    coarse_graining.width)
        m = 3 * self.n_les // 2 + (3 * self.n_les // 2) % 2
        self._padded = SpectralGrid(max(m, 8), dealias=False, fft=fft)
        self._padded_jacobian = Jacobian(self._padded)

    def physical(self, psi, omega) -> dict:
        """ψ̄, ω̄ and Π on the LES grid from physical ψ, ω ``(n, n)`` (axes ``(y, x)``)."""
        p2 = self._plan2
        p2.real[0] = psi
        p2.real[1] = omega
        spec = p2.forward()
        return self._from_spectra(spec[0], spec[1])

    def spectral(self, omega_hat) -> dict:
        """As :meth:`physical`, from the DNS rfft2 spectrum ω̂ (ψ̂ = ω̂/k²)."""
        return self._from_spectra(self.grid.streamfunction(omega_hat), omega_hat)

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

    def pair(self, psi, q) -> dict:
        """ψ̄, q̄ and Π_q = bar(N(q, ψ)) − N(q̄, ψ̄) on the LES grid from physical ψ
        and any scalar q ``(n, n)``: the general pair (q need not be −∇²ψ).

        N(q, ψ) = u ∂q/∂x + v ∂q/∂y in the advective form (4 inverse FFTs, 1 forward),
        on the DNS grid with its mask before and after the products, and alias-free
        (3/2 rule) on the LES grid, as :meth:`physical` does for (ω, ψ).

        Returns
        -------
        dict
            ``{"psi", "omega", "pi"}`` (``"omega"`` holding q̄), float64 ``(n_les, n_les)``.
        """
        n, n_les = self.n, self.n_les
        p2 = self._plan2
        p2.real[0] = psi
        p2.real[1] = q
        spec = p2.forward() * (1.0 / (n * n))  # normalized coefficients
        mask, G = self.grid.mask, self._G
        c_n = resize_spectrum(_advection(spec[0] * mask, spec[1] * mask, n) * mask, n_les) * G
        c_psi = resize_spectrum(spec[0], n_les) * G
        c_q = resize_spectrum(spec[1], n_les) * G
        big = self._padded
        c_les = _advection(resize_spectrum(c_psi, big.n) * big.mask,
                           resize_spectrum(c_q, big.n) * big.mask, big.n) * big.mask
        c_pi = c_n - resize_spectrum(c_les, n_les)
        fields = np.fft.irfft2(np.stack([c_psi, c_q, c_pi]) * (n_les * n_les), s=(n_les, n_les))
        return {"psi": fields[0], "omega": fields[1], "pi": fields[2]}

    def block(self, psi, omega, dtype=np.float64, general=False, finite=None) -> tuple:
        """:meth:`physical` (or, ``general``, :meth:`pair` with ``omega`` any scalar q)
        over the leading axes of ``(..., n, n)`` arrays.

        A sample with a non-finite value (NaN, ±Inf) in ψ or ω is NaN in all three
        outputs; with a :class:`_FiniteCheck` ``finite`` of policy ``"raise"`` it
        raises :class:`NonFiniteError` instead (:meth:`_FiniteCheck.refuse`).
        """
        lead = np.broadcast_shapes(psi.shape[:-2], omega.shape[:-2])
        psi = np.broadcast_to(psi, lead + psi.shape[-2:])
        omega = np.broadcast_to(omega, lead + omega.shape[-2:])
        out = [np.empty(lead + (self.n_les, self.n_les), dtype=dtype) for _ in range(3)]
        work = self.pair if general else self.physical
        for index in np.ndindex(*lead):
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite: handled below
                fields = work(psi[index], omega[index])
            # a non-finite input value reaches every point of the output it feeds through
            # the FFTs, so checking the (small) LES outputs finds it without a pass over ψ, ω
            if not all(np.isfinite(f).all() for f in fields.values()):
                if finite is not None:
                    finite.refuse(index, psi[index], omega[index])
                fields = dict.fromkeys(fields, np.nan)
            for o, name in zip(out, CoarseGraining.variables):
                o[index] = fields[name]
        return tuple(out)


class NonFiniteError(ValueError):
    """A DNS sample holds NaN or ±Inf and the transform was asked to refuse it
    (``nonfinite="raise"``)."""


#: The policies of non-finite input (see :func:`coarse_grain`).
NONFINITE = ("propagate", "raise")


def check_nonfinite(nonfinite) -> str:
    """The policy ``nonfinite`` names: ``"propagate"`` or ``"raise"``."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {list(NONFINITE)}, got {nonfinite!r}")
    return nonfinite


@dataclass(frozen=True)
class _FiniteCheck:
    """What a kernel needs to name a refused sample: the variable names, the leading
    dims and their coordinate values, and (set per block) the block's global positions.
    """

    names: tuple
    dims: tuple
    coords: tuple
    positions: np.ndarray | None = None

    def refuse(self, index, psi, q):
        """Raise :class:`NonFiniteError` naming the variable, the sample and the count."""
        position = int(self.positions[index]) if self.positions is not None else None
        where = self.describe(position, index)
        for name, values in zip(self.names, (psi, q)):
            count = int(values.size - np.count_nonzero(np.isfinite(values)))
            if count:
                raise NonFiniteError(
                    f"ds[{name!r}] has {count} non-finite value(s) (NaN or Inf) in the sample "
                    f"{where}; drop or repair that sample, or pass nonfinite='propagate' to "
                    f"get NaN in every output of it"
                )
        raise NonFiniteError(f"coarse-graining the sample {where} overflowed (its values are "
                             f"finite but too large); rescale the data")

    def describe(self, position, index) -> str:
        """``"dim=value, ..."`` of the sample at global flat ``position`` (else ``index``)."""
        if not self.dims:
            return "(no leading dims)"
        if position is not None:
            index = np.unravel_index(position, [len(c) for c in self.coords])
        parts = []
        for dim, coord, i in zip(self.dims, self.coords, index):
            value = coord[int(i)]
            parts.append(f"{dim}={value.item() if hasattr(value, 'item') else value!r}")
        return ", ".join(parts)


def _advection(c_psi, c_q, n):
    """Normalized rfft coefficients of N(q, ψ) = u ∂q/∂x + v ∂q/∂y, u = ∂ψ/∂y, v = −∂ψ/∂x.

    Parameters
    ----------
    c_psi, c_q : ndarray of complex, shape ``(n, n//2 + 1)``
        Normalized coefficients (``f̂/n²``) of ψ and q on an ``n × n`` grid of the
        2π domain (integer wavenumbers).
    n : int
        The grid on which the products are formed (no dealiasing here).

    Returns
    -------
    ndarray of complex, shape ``(n, n//2 + 1)``
    """
    ky, kx = wavenumbers(n)
    ky = ky.astype(float)[:, None]
    kx = kx.astype(float)[None, :]
    spec = np.stack([1j * ky * c_psi, -1j * kx * c_psi, 1j * kx * c_q, 1j * ky * c_q])
    u, v, qx, qy = np.fft.irfft2(spec * (n * n), s=(n, n))
    return np.fft.rfft2(u * qx + v * qy) / (n * n)


_LOCAL = threading.local()


def _coarse_block(psi, omega, positions=None, *, coarse_graining, dealias, dtype,
                  general=False, finite=None):
    """apply_ufunc kernel: ``(..., n, n)`` ψ, ω (or q) → ``(..., n_les, n_les)`` ψ̄, ω̄, Π
    (``positions``, with ``finite``: the samples' global flat positions, to name them)."""
    n_les = coarse_graining.n_les
    lead = np.broadcast_shapes(psi.shape[:-2], omega.shape[:-2])
    if 0 in lead:  # dask's meta probing: shapes only
        empty = np.empty(lead + (n_les, n_les), dtype=dtype)
        return empty, empty.copy(), empty.copy()
    if finite is not None and positions is not None:
        finite = dataclasses.replace(finite, positions=np.broadcast_to(positions, lead))
    return coarse_graining.kernel(psi.shape[-1], dealias).block(
        psi, omega, dtype=dtype, general=general, finite=finite)


def _finite_check(psi, omega, names):
    """The :class:`_FiniteCheck` of DNS ψ, q and the DataArray of their samples' flat
    positions (chunked like ψ, q along the leading dims)."""
    dims = tuple(dict.fromkeys(d for da in (psi, omega) for d in da.dims[:-2]))
    sizes = {**psi.sizes, **omega.sizes}
    coords = tuple(np.asarray(psi[d].values if d in psi.coords else
                              omega[d].values if d in omega.coords else np.arange(sizes[d]))
                   for d in dims)
    shape = tuple(sizes[d] for d in dims)
    positions = xr.DataArray(np.arange(math.prod(shape)).reshape(shape), dims=dims)
    chunks = {**omega.chunksizes, **psi.chunksizes}
    if chunks:
        positions = positions.chunk({d: chunks[d] for d in dims if d in chunks})
    return _FiniteCheck(names[:2], dims, coords), positions


def _coarse_fields(coarse_graining, psi, omega, dealias, general=False, names=None) -> tuple:
    """ψ̄, ω̄, Π DataArrays of DNS ψ, ω (or any scalar q, ``general``) ``(..., y, x)``:
    lazy on dask input, over whole ``y, x``. With ``names`` (the streamfunction and scalar
    names) a non-finite sample raises :class:`NonFiniteError`; without, it is NaN."""
    dtype = np.result_type(psi.dtype, omega.dtype, np.float32)
    if psi.chunks is not None or omega.chunks is not None:
        psi = psi.chunk({"y": -1, "x": -1})
        omega = omega.chunk({"y": -1, "x": -1})
    n_les = coarse_graining.n_les
    inputs, finite = [psi, omega], None
    if names is not None:
        finite, positions = _finite_check(psi, omega, names)
        inputs.append(positions)
    return xr.apply_ufunc(
        _coarse_block,
        *inputs,
        kwargs={"coarse_graining": coarse_graining, "dealias": dealias, "dtype": dtype,
                "general": general, "finite": finite},
        input_core_dims=[["y", "x"], ["y", "x"]] + [[]] * (len(inputs) - 2),
        output_core_dims=[["y", "x"]] * 3,
        exclude_dims={"y", "x"},
        dask="parallelized",
        output_dtypes=[dtype] * 3,
        dask_gufunc_kwargs={"output_sizes": {"y": n_les, "x": n_les}},
        keep_attrs=False,
    )


def _variable_attrs(var, ds, names) -> dict:
    """CF attributes of the LES variable ``var`` (one of ``names``: ψ, q, Π names)."""
    streamfunction, scalar, pi = names
    if var == pi:
        if var in CF_ATTRS:
            return dict(CF_ATTRS[var])
        return {"long_name": f"subgrid-scale forcing of {scalar}"}
    attrs = dict(CF_ATTRS[var]) if var in CF_ATTRS else {
        k: v for k, v in ds[var].attrs.items() if k in ("long_name", "units", "standard_name")}
    attrs["long_name"] = f"filtered {attrs.get('long_name', var)} on the LES grid"
    return attrs


def _les_coords(ds, n_les, length) -> dict:
    """LES coordinates ``y0 + i·L/n_les``, ``x0 + i·L/n_les`` (the input's origin kept)."""
    points = np.arange(n_les) * (length / n_les)
    coords = {}
    for d in ("y", "x"):
        origin = float(ds[d].values[0]) if d in ds.coords else 0.0
        attrs = dict(ds[d].attrs) if d in ds.coords and ds[d].attrs else dict(CF_ATTRS[d])
        coords[d] = (d, points + origin, attrs)
    return coords


def _les_dataset(fields, ds, names, length, n_les) -> xr.Dataset:
    """The LES Dataset of ``fields`` (ψ̄, q̄, Π) named ``names`` with the coordinates and
    attributes of ``ds`` on the domain of side ``length``."""
    variables = {}
    for var, da in zip(names, fields):
        variables[var] = da.assign_attrs(_variable_attrs(var, ds, names))
    result = xr.Dataset(variables).assign_coords(_les_coords(ds, n_les, length))
    lead = [d for d in result[names[0]].dims if d not in ("y", "x")]
    result = result.transpose(*lead, "y", "x")
    for c in result.coords:  # apply_ufunc drops the attributes of the leading coordinates
        if c not in ("y", "x") and c in ds.coords:
            result[c].attrs = dict(ds[c].attrs)
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("complete", "title")}
    name = ds.attrs.get("case_name")
    title = f"xtl LES training data of case {name!r}" if name else "xtl LES training data"
    result.attrs = {"Conventions": "CF-1.8", "title": title, **attrs}
    return result


# ----------------------------------------------------------------------------------------
# Dataset API
# ----------------------------------------------------------------------------------------
def sgs_name(scalar: str = "omega") -> str:
    """The name of the SGS term of the scalar ``scalar``: ``"pi"`` for the vorticity
    ``"omega"``, else ``f"pi_{scalar}"`` (e.g. ``"pi_q"``)."""
    return "pi" if scalar == "omega" else f"pi_{scalar}"


def _check_names(scalar, streamfunction) -> tuple:
    """``(streamfunction, scalar, SGS name)`` of a checked scalar pair."""
    for arg, value in (("scalar", scalar), ("streamfunction", streamfunction)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{arg} must be the name of a Dataset variable, got {value!r}")
    if scalar == streamfunction:
        raise ValueError(f"scalar and streamfunction must name two variables, got {scalar!r} twice")
    return streamfunction, scalar, sgs_name(scalar)


def _check_dataset(ds, names=("psi", "omega", "pi"), L=None):
    """Return ``(psi, q, n, L)`` of a DNS Dataset, transposed to ``(..., y, x)``
    (``names``: the streamfunction, scalar and SGS names; ``L``: the domain length or None)."""
    streamfunction, scalar, pi = names
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"ds must be an xarray.Dataset with variables {streamfunction!r} and {scalar!r} "
            f"on dims (..., 'y', 'x'); got {type(ds).__name__}"
        )
    _refuse_les_data(ds, pi)
    missing = [v for v in (streamfunction, scalar) if v not in ds.data_vars]
    if missing:
        raise ValueError(
            f"ds must have variables {streamfunction!r} and {scalar!r} (the DNS "
            f"streamfunction and the advected scalar: streamfunction={streamfunction!r}, "
            f"scalar={scalar!r}); it lacks {missing}, variables are {list(ds.data_vars)}"
        )
    fields = []
    for name in (streamfunction, scalar):
        da = ds[name]
        lacking = [d for d in ("y", "x") if d not in da.dims]
        if lacking:
            raise ValueError(
                f"ds[{name!r}] must have dims (..., 'y', 'x') on a periodic square domain; "
                f"it lacks {lacking}, dims are {da.dims}"
            )
        if not np.issubdtype(da.dtype, np.number) or np.issubdtype(da.dtype, np.complexfloating):
            raise TypeError(f"ds[{name!r}] must hold real numbers, got dtype {da.dtype}")
        lead = [d for d in da.dims if d not in ("y", "x")]
        fields.append(da.transpose(*lead, "y", "x"))
    psi, q = fields
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    if ny != nx:
        raise ValueError(f"ds must be on a square grid (y and x of equal size), got y={ny}, x={nx}")
    n = nx
    if n < 8 or n % 2:
        raise ValueError(f"the DNS grid size (dims y, x) must be even and >= 8, got {n}")
    length = domain_length(ds, L, name="ds")
    # coordinates other than y/x that depend on y or x cannot be coarse-grained
    drop = [c for c in ds.coords if c not in ("y", "x") and set(ds[c].dims) & {"y", "x"}]
    return psi.drop_vars(drop, errors="ignore"), q.drop_vars(drop, errors="ignore"), n, length


def _refuse_les_data(ds, pi="pi"):
    """Raise if ``ds`` is already LES data (coarse-graining it again is a mistake):
    it holds the SGS variable ``pi`` or the attrs of coarse-grained data."""
    coarse = "filter" in ds.attrs and "n_les" in ds.attrs
    if pi in ds.data_vars or coarse:
        marks = [f"variable {pi!r}"] if pi in ds.data_vars else []
        marks += [f"attrs {k}={ds.attrs[k]!r}" for k in ("filter", "n_les") if k in ds.attrs]
        raise ValueError(
            "ds is already coarse-grained LES data (" + ", ".join(marks) + "); coarse-grain "
            "the DNS it came from (the streamfunction and scalar on the DNS grid) instead"
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


def _case_n_les(ds) -> int:
    """The LES grid size of the case ``ds`` was run for (``attrs["case_n_les"]``)."""
    n_les = _case_value(ds, "case_n_les", None)
    if n_les is None:
        raise ValueError("n_les must be given (ds.attrs has no 'case_n_les' to default to)")
    return int(n_les)


def coarse_grain(ds, n_les=None, filter="gaussian", *, width=None, dealias=None,
                 scalar="omega", streamfunction="psi", L=None) -> xr.Dataset:
    r"""Filter a DNS Dataset and coarse-grain it to the LES grid, with the SGS term.

    The SGS term of the advected scalar q (``scalar``) with the streamfunction ψ
    (``streamfunction``) is Π_q = \overline{N(q, ψ)} − N(q̄, ψ̄),
    N(q, ψ) = u ∂q/∂x + v ∂q/∂y, u = ∂ψ/∂y, v = −∂ψ/∂x, so that the LES equation of
    q̄ carries −Π_q; for the default pair (ω, ψ) it is the Π of the vorticity equation.

    Parameters
    ----------
    ds : xarray.Dataset
        DNS output: the streamfunction and the scalar with dims ``(..., "y", "x")``
        (any leading dims, e.g. ``time``, ``member``, ``lev``, in any order) on a
        square ``n × n`` grid of a periodic square domain of side L.
        numpy-backed or dask-backed.
    n_les : int, optional
        LES grid size: even, >= 4, not larger than ``n`` (equal: the fields are
        filtered on the DNS grid). Default: the case's (``ds.attrs["case_n_les"]``).
    filter : {"gaussian", "box", "sharp"}, default "gaussian"
        The filter (``"top-hat"`` is an alias of ``"box"``); see the module
        docstring and :func:`filter_transfer_function`.
    width : float, optional
        Filter width Δ in the units of the coordinates; default ``2·(L/n_les)``,
        twice the LES grid spacing.
    dealias : bool, optional
        Whether ``N(q, ψ)`` on the DNS grid uses the 2/3 rule; default the
        case's (``ds.attrs["case_dealias"]``), else True.
    scalar : str, default "omega"
        The variable of the advected scalar q (need not be −∇²ψ, e.g. QG's potential
        vorticity).
    streamfunction : str, default "psi"
        The variable of the streamfunction ψ.
    L : float, optional
        The domain length, in the units of the coordinates: required when ``ds`` has
        no coordinates ``y``, ``x`` (evenly spaced, ``L = N·spacing``); must agree
        with them when it has.

    Returns
    -------
    xarray.Dataset
        The filtered streamfunction and scalar (named ``streamfunction``, ``scalar``)
        and the SGS term (named :func:`sgs_name`: ``"pi"`` for ``"omega"``, else
        ``f"pi_{scalar}"``) on dims ``(..., "y", "x")`` of the ``n_les`` grid
        (leading dims in ``ds``'s order), with points ``y0 + i·L/n_les``,
        ``x0 + i·L/n_les`` (the input's first point kept as the origin), the
        leading coordinates of ``ds``, CF attributes, and global attributes
        ``filter``, ``filter_width`` (Δ in the coordinates' units),
        ``domain_length``, ``n_dns``, ``n_les`` (plus the case's attributes).
        Lazy (dask) when ``ds`` is dask-backed: nothing is computed until
        asked; the result equals the eager one to round-off. Float32 input
        gives float32 output (the arithmetic is float64).

    Raises
    ------
    TypeError, ValueError
        Naming the bad argument: not a Dataset, no streamfunction/scalar variable,
        no ``y``/``x`` dims, a non-square or odd grid, no coordinates and no ``L``,
        coordinates and ``L`` that disagree, ``n_les`` not even or larger than
        ``n``, an unknown ``filter``, a non-positive ``width``, data that are
        already coarse-grained.

    Notes
    -----
    **Non-finite input.** A sample (one index of the leading dims) holding NaN or ±Inf
    anywhere in ψ or q is NaN in *every* output (ψ̄, q̄ and Π), so the three fields of
    a sample always agree; the other samples are untouched (bit-identical to a run
    without the bad sample). Only a cheap ``isfinite`` per sample is added. To refuse
    such data instead, call ``CoarseGraining(n_les, filter, width).apply(ds,
    nonfinite="raise")``: it raises :class:`NonFiniteError` naming the variable, the
    sample (its leading coordinates) and the count of non-finite values. On dask-backed
    input the check runs with the blocks, so the error comes at compute time.

    On the 2π domain, N(ω, ψ) of the default pair is formed from ψ alone (ω = −∇²ψ,
    the solver's fast path); for another scalar or another domain it is formed from q
    and ψ as given. Derivatives are in the units of the coordinates: Π on a domain of
    side L is (2π/L)² times Π of the same values on the 2π domain (with Δ scaled).

    Examples
    --------
    >>> dns = xtl.simulate(xtl.get_case("tiny"), t_end=1.0, save_interval=0.1)
    >>> les = coarse_grain(dns.chunk(time=4), 16)      # lazy
    >>> les.pi.mean("time").compute()                  # doctest: +SKIP
    >>> qg = coarse_grain(qg_run, 64, scalar="q")      # doctest: +SKIP  (x, y in metres)
    """
    names = _check_names(scalar, streamfunction)
    length = _check_dataset(ds, names, L)[3]
    if width is not None:
        width = check_width(width, 4) * (_TWO_PI / length)
    return CoarseGraining(n_les, filter, width).apply(
        ds, dealias=dealias, scalar=scalar, streamfunction=streamfunction, L=length)


def sgs_term(ds, n_les=None, filter="gaussian", *, width=None, dealias=None,
             scalar="omega", streamfunction="psi", L=None) -> xr.DataArray:
    r"""The SGS term Π_q = \overline{N(q, ψ)} − N(q̄, ψ̄) on the LES grid.

    Parameters
    ----------
    ds, n_les, filter, width, dealias, scalar, streamfunction, L
        As in :func:`coarse_grain`.

    Returns
    -------
    xarray.DataArray
        ``coarse_grain(...)[sgs_name(scalar)]`` (lazy on dask input), with the
        global coarse-graining attributes merged into its attrs.
    """
    les = coarse_grain(ds, n_les, filter, width=width, dealias=dealias, scalar=scalar,
                       streamfunction=streamfunction, L=L)
    pi = les[sgs_name(scalar)]
    return pi.assign_attrs({**les.attrs, **pi.attrs})
