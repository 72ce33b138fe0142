"""Isotropic spectra of flows: power, energy and enstrophy spectra, the transfer of Π,
and the shell sums they share with the kernel spectra (:mod:`xtl.explain.kernels`).

Everything here is a small pure function on xarray objects; :mod:`xtl.accessors` wraps
them as ``ds.tl.*`` / ``da.tl.*``. The module depends only on numpy, scipy, xarray, dask,
xrft and the Fourier layer :mod:`xtl.physics.fourier` (never on the solver or on a backend).

Conventions (see docs/conventions.md)
-------------------------------------
* Fields live on a doubly periodic square domain of side L with dims ``(..., "y", "x")``
  and evenly spaced points ``x_i = x0 + i·L/N``. L is read from the coordinates ``y``,
  ``x`` or passed as ``L=`` (:func:`xtl.physics.fourier.domain_length`); data without
  coordinates and without ``L`` are refused. xtl's own grids are ``i·2π/N`` (L = 2π).
* Wavenumbers are integers in units of 2π/L: the shell coordinate ``k`` is an integer
  shell index, and the coordinate ``kappa`` on ``k`` is the physical (radian)
  wavenumber ``k·2π/L``.
* The Fourier coefficients of a field f on an ``Ny × Nx`` grid are
  ``c(k) = f̂(k) / (Ny·Nx)`` where ``f̂`` is the unnormalized DFT (``numpy.fft.fft2``), so
  that ``f(x) = Σ_k c(k) exp(i k·x)`` and ``mean(f²) = Σ_k |c(k)|²`` (Parseval).
* Isotropic spectra are *shell sums* over the integer shells ``k = round(|k|)``,
  ``k = 0, 1, …``; the k = 0 mode is in the k = 0 shell. By default every shell that
  contains a grid wavenumber is kept (up to ``round(|(Ny/2, Nx/2)|)``; shells above
  ``min(Ny, Nx)/2`` are only partly filled, the corners of the square grid), so that the
  sums over k are exact.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import xarray as xr
import xrft

from ..physics.fourier import domain_length, wavenumber_units

__all__ = [
    "SPECTRUM_KINDS",
    "TRANSFER_KINDS",
    "SHELL_ATTRS",
    "spectrum",
    "transfer_spectrum",
    "check_kmax",
    "shell_index",
    "shell_matrix",
    "shell_sums",
]

SPECTRUM_KINDS = ("power", "energy", "enstrophy")
TRANSFER_KINDS = ("energy", "enstrophy")
#: Variables a Dataset spectrum reads by default, per kind.
DEFAULT_VARIABLES = {"energy": "psi", "enstrophy": "omega"}

_TWO_PI = 2.0 * np.pi
#: Attributes of the ``k`` coordinate of every isotropic spectrum (shell sums).
SHELL_ATTRS = {
    "long_name": "isotropic wavenumber",
    "units": "1",
    "description": "integer shell index k = round(|k|) of the wavenumbers in units of 2π/L "
                   "(L the domain length); the physical radian wavenumber is k·2π/L "
                   "(coordinate kappa on spectra of fields)",
}
#: Attributes of the ``kappa`` coordinate (on ``k``) of spectra of fields.
KAPPA_ATTRS = {
    "long_name": "physical radian wavenumber of the shell, k·2π/L",
    "standard_name": "wavenumber",
}


# ----------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------
def _check_field(da, name):
    """Validate a gridded field and return it transposed to ``(..., "y", "x")``."""
    if not isinstance(da, xr.DataArray):
        raise TypeError(
            f"{name} must be an xarray.DataArray with dims (..., 'y', 'x'); "
            f"got {type(da).__name__}"
        )
    missing = [d for d in ("y", "x") if d not in da.dims]
    if missing:
        raise ValueError(
            f"{name} must have dims 'y' and 'x' (dims order (..., 'y', 'x') on a "
            f"periodic square domain); it lacks {missing}, dims are {da.dims}"
        )
    if not np.issubdtype(da.dtype, np.number):
        raise TypeError(f"{name} must hold numbers; got dtype {da.dtype}")
    for d in ("y", "x"):
        size = da.sizes[d]
        if size < 2:
            raise ValueError(f"{name}: dim {d!r} must have at least 2 points; got {size}")
    lead = [d for d in da.dims if d not in ("y", "x")]
    da = da.transpose(*lead, "y", "x")
    # xrft refuses coordinates other than y/x that depend on y or x (e.g. 2D lat/lon)
    extra = [c for c in da.coords if c not in ("y", "x") and set(da[c].dims) & {"y", "x"}]
    return da.drop_vars(extra)


def _check_kind(kind, allowed, name="kind"):
    if kind not in allowed:
        raise ValueError(f"{name} must be one of {allowed}; got {kind!r}")


def check_kmax(kmax):
    """``kmax`` (the last shell of a spectrum) as an int >= 0, or None (every shell)."""
    if kmax is None:
        return None
    if isinstance(kmax, bool) or not isinstance(kmax, numbers.Integral) or kmax < 0:
        raise ValueError(f"kmax must be None or a non-negative integer; got {kmax!r}")
    return int(kmax)


# ----------------------------------------------------------------------------------------
# shell binning
# ----------------------------------------------------------------------------------------
def shell_index(ky, kx):
    """Integer shell ``round(|k|)`` of every (ky, kx) point, shape (len(ky), len(kx))."""
    ky = np.asarray(ky, dtype=float)
    kx = np.asarray(kx, dtype=float)
    return np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.intp)


def shell_matrix(idx, nshell, weights=None, dtype=np.float64):
    """Sparse (npoints, nshell) matrix summing points into shells (points past nshell dropped)."""
    flat = idx.ravel()
    keep = flat < nshell
    w = np.ones(flat.size) if weights is None else np.asarray(weights, dtype=float).ravel()
    return sp.csr_array(
        (w[keep].astype(dtype), (np.flatnonzero(keep), flat[keep])),
        shape=(flat.size, nshell),
    )


def shell_sums(values, matrix):
    """Shell-sum the last two axes of ``values`` with a sparse shell matrix."""
    lead = values.shape[:-2]
    flat = np.ascontiguousarray(values).reshape(-1, values.shape[-2] * values.shape[-1])
    out = flat @ matrix
    return np.asarray(out).reshape(*lead, matrix.shape[1])


def _domain(field, L, name):
    """``(L, units of x)`` of a checked field: its domain length and coordinate units."""
    length = domain_length(field, L, name=name)
    units = field["x"].attrs.get("units") if "x" in field.coords else None
    return length, units


def _shell_sum(density, kmax, name, domain):
    """Shell-sum a real DataArray ``(..., ky, kx)`` into ``(..., k)``, lazily on dask,
    with the physical wavenumber ``kappa`` of ``domain = (L, units of x)`` on ``k``."""
    idx = shell_index(density["ky"].values, density["kx"].values)
    nshell = int(idx.max()) + 1 if kmax is None else kmax + 1
    matrix = shell_matrix(idx, nshell, dtype=density.dtype)
    out = xr.apply_ufunc(
        shell_sums,
        density,
        input_core_dims=[["ky", "kx"]],
        output_core_dims=[["k"]],
        dask="parallelized",
        output_dtypes=[density.dtype],
        dask_gufunc_kwargs={"output_sizes": {"k": nshell}},
        kwargs={"matrix": matrix},
    )
    length, units = domain
    kappa = np.arange(nshell) * (_TWO_PI / length)
    out = out.assign_coords(k=("k", np.arange(nshell), SHELL_ATTRS),
                            kappa=("k", kappa, {**KAPPA_ATTRS,
                                                "units": wavenumber_units(units)}))
    out.name = name
    return out


# ----------------------------------------------------------------------------------------
# isotropic spectra of fields
# ----------------------------------------------------------------------------------------
def _fft2(da):
    """Fourier coefficients ``c = f̂/(Ny·Nx)`` of a checked field, dims ``(..., ky, kx)``.

    Uses ``xrft.fft`` (unshifted, no phase/amplitude correction) on the points
    ``i·2π/N``; xrft's frequencies are then in cycles per 2π, converted here to integer
    wavenumbers in units of 2π/L.
    """
    ny, nx = da.sizes["y"], da.sizes["x"]
    # the grid was validated as x0 + i·L/N: the offset only changes phases, and L only
    # the unit of the wavenumbers
    da = da.assign_coords(y=np.arange(ny) * _TWO_PI / ny, x=np.arange(nx) * _TWO_PI / nx)
    if da.chunks is not None:
        da = da.chunk({"y": -1, "x": -1})  # dask FFTs need whole transform axes
    with warnings.catch_warnings():  # xrft's own use of the deprecated `drop`
        warnings.filterwarnings("ignore", message=r"dropping variables using `drop` is deprecated")
        coeffs = xrft.fft(
            da, dim=["y", "x"], shift=False, true_phase=False, true_amplitude=False
        )
    coeffs = coeffs.rename({"freq_y": "ky", "freq_x": "kx"})
    ky = np.rint(coeffs["ky"].values * _TWO_PI).astype(int)
    kx = np.rint(coeffs["kx"].values * _TWO_PI).astype(int)
    coeffs = coeffs.assign_coords(ky=("ky", ky), kx=("kx", kx))
    return coeffs / (ny * nx)


#: ``long_name`` (``{name}``: the field's) and ``normalization`` attributes of each spectrum.
_SPECTRUM_TEXT = {
    "power": ("power spectrum of {name}", "P(k) = sum over shell round(|k|)=k of "
              "|f^(k)|^2/(Ny*Nx)^2; sum_k P(k) = mean(f^2)"),
    "energy": ("kinetic energy spectrum (from streamfunction {name})", "E(k) = sum over shell "
               "of 0.5*|kappa|^2*|psi^(k)|^2/(Ny*Nx)^2, kappa = k*2pi/L the physical "
               "wavenumber; sum_k E(k) = 0.5*mean(|grad psi|^2)"),
    "enstrophy": ("enstrophy spectrum (from vorticity {name})", "Z(k) = sum over shell of "
                  "0.5*|omega^(k)|^2/(Ny*Nx)^2; sum_k Z(k) = 0.5*mean(omega^2)"),
}


def _power_units(units):
    if units in (None, "", "1"):
        return "1"
    return f"({units})^2"


def _dataset_variable(ds, var, kind, role="var"):
    if var is None:
        var = DEFAULT_VARIABLES[kind]
    if not isinstance(var, str):
        raise TypeError(f"{role} must be the name of a variable of the Dataset; got {var!r}")
    if var not in ds.data_vars:
        raise ValueError(
            f"the {kind} spectrum of a Dataset reads the variable {var!r} ({role}={var!r}); "
            f"the Dataset has {sorted(map(str, ds.data_vars))}. Pass {role}='<name>'."
        )
    return ds[var]


def spectrum(obj, kind="power", *, var=None, kmax=None, L=None):
    """Isotropic (shell-summed) spectrum of a field on a periodic square domain of side L.

    The 2D transform is ``xrft.fft``; coefficients ``c(k) = f̂(k)/(Ny·Nx)`` are
    binned in integer shells ``k = round(|k|)`` of the wavenumbers in units of 2π/L
    (the k = 0 mode in shell 0); the physical wavenumber is ``κ = k·2π/L``:

    * ``kind="power"``: ``P(k) = Σ_{shell k} |c|²``, so ``Σ_k P(k) = mean(f²)`` over the
      grid (Parseval; the mean is included, in P(0)).
    * ``kind="energy"``, from the streamfunction ψ: ``E(k) = Σ_{shell k} ½ |κ|² |ψ̂|² / (Ny·Nx)²``
      with the exact physical ``|κ|² = (kx² + ky²)·(2π/L)²``, so ``Σ_k E(k) = ½ mean(|∇ψ|²)``
      (= ½ mean(ψω)) in the units of the data, on any L.
    * ``kind="enstrophy"``, from the vorticity ω: ``Z(k) = Σ_{shell k} ½ |ω̂|² / (Ny·Nx)²``,
      so ``Σ_k Z(k) = ½ mean(ω²)``.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        A field with dims ``(..., "y", "x")`` (any leading dims: time, member, layer,
        channel, ...), in any order. The domain length L is read from evenly spaced
        coordinates ``y``, ``x`` (``L = N·spacing``, any origin) or given as ``L``.
        May be dask-backed; the result is then lazy. For a Dataset, ``var``
        picks the variable; by default ``"psi"`` for energy, ``"omega"`` for enstrophy,
        and, for power, every variable with dims ``y`` and ``x`` (a Dataset of spectra).
    kind : {"power", "energy", "enstrophy"}
        Which spectrum (see above).
    var : str, optional
        Dataset only: the variable to transform.
    kmax : int, optional
        Keep shells ``0..kmax`` only. By default every shell that holds a grid
        wavenumber is kept, so the sums over k are exact.
    L : float, optional
        The domain length, in the units of the coordinates: required when ``obj`` has
        no coordinates ``y``, ``x``; must agree with them when it has.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Spectrum with dims ``(..., "k")``, ``k = 0, 1, ...`` (integer shells) with the
        coordinate ``kappa(k) = k·2π/L`` (physical radian wavenumber, units
        ``rad <x units>-1``, or ``"1"`` when ``x`` has none) and CF attributes.

    Raises
    ------
    TypeError, ValueError
        Wrong object type, missing ``y``/``x``, no coordinates and no ``L``, unevenly
        spaced coordinates, ``Ly != Lx``, an ``L`` that disagrees with the coordinates,
        an unknown ``kind``, a missing Dataset variable or a bad ``kmax``.

    Examples
    --------
    >>> E = ds.tl.spectrum("energy")            # from ds.psi, dims (member, time, k)
    >>> P = ds.pi.tl.spectrum()                 # power spectrum of Π
    """
    _check_kind(kind, SPECTRUM_KINDS)
    kmax = check_kmax(kmax)
    if isinstance(obj, xr.Dataset):
        if var is None and kind == "power":
            names = [v for v in obj.data_vars if {"y", "x"} <= set(obj[v].dims)]
            if not names:
                raise ValueError(
                    "obj: the Dataset has no variable with dims 'y' and 'x' to transform; "
                    f"its variables are {sorted(map(str, obj.data_vars))}"
                )
            return xr.Dataset({v: spectrum(obj[v], kind, kmax=kmax, L=L) for v in names})
        field = _dataset_variable(obj, var, kind)
        return spectrum(field, kind, kmax=kmax, L=L)
    if var is not None:
        raise TypeError("var selects a Dataset variable; it cannot be used with a DataArray")
    field = _check_field(obj, "obj")
    domain = _domain(field, L, "obj")
    coeffs = _fft2(field)
    power = (coeffs * np.conj(coeffs)).real
    name = field.name if field.name is not None else "field"
    units = field.attrs.get("units")
    density = power
    if kind == "energy":
        unit2 = (_TWO_PI / domain[0]) ** 2  # exactly 1 on the 2π domain
        density = 0.5 * ((coeffs["ky"] ** 2 + coeffs["kx"] ** 2).astype(float) * unit2) * power
    elif kind == "enstrophy":
        density = 0.5 * power
    long_name, normalization = _SPECTRUM_TEXT[kind]
    out = _shell_sum(density, kmax, f"{kind}_spectrum", domain)
    out.attrs = {"long_name": long_name.format(name=name),
                 "units": _power_units(units) if kind == "power" else "1",
                 "normalization": normalization}
    return out


def transfer_spectrum(obj, pi=None, *, kind="energy", var=None, kmax=None, L=None):
    """Interscale transfer spectrum of the subgrid-scale term Π.

    ``T(k) = Σ_{shell k} Re[conj(â) Π̂] / (Ny·Nx)²`` with ``a = ψ`` for
    ``kind="energy"`` and ``a = ω`` for ``kind="enstrophy"``. For energy the k = 0
    mode is left out (the mean of ψ is a gauge and carries no energy), so
    ``Σ_k T(k) = mean(ψ'Π')`` (anomalies from the means); for enstrophy
    ``Σ_k T(k) = mean(ω·Π)``. Since the LES equation carries ``-Π``
    (``∂ω̄/∂t = ... - Π``), the tendency that Π gives the energy (enstrophy) spectrum
    of :func:`spectrum` is exactly ``-T(k)``: ``T > 0`` where Π drains the resolved
    scales, ``T < 0`` where it feeds them (backscatter).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        ψ (energy) or ω (enstrophy) with dims ``(..., "y", "x")``; or a Dataset, whose
        variable ``var`` (default ``"psi"`` / ``"omega"``) is used.
    pi : xarray.DataArray or str, optional
        Π on the same grid (broadcast against ``obj`` over leading dims). With a
        Dataset, the name of its Π variable (default ``"pi"``).
    kind : {"energy", "enstrophy"}
        Which transfer.
    var : str, optional
        Dataset only: the ψ or ω variable.
    kmax : int, optional
        Keep shells ``0..kmax`` only (default: all shells, sums exact).
    L : float, optional
        The domain length, as in :func:`spectrum` (required without coordinates).

    Returns
    -------
    xarray.DataArray
        ``T`` with dims ``(..., "k")`` and the coordinate ``kappa`` as in
        :func:`spectrum`; lazy when the inputs are dask-backed.

    Raises
    ------
    TypeError, ValueError
        Bad types, missing variables, grids that differ or are not periodic, no
        coordinates and no ``L``, domains that differ.
    """
    _check_kind(kind, TRANSFER_KINDS)
    kmax = check_kmax(kmax)
    if isinstance(obj, xr.Dataset):
        field = _dataset_variable(obj, var, kind, role="var")
        pi_name = "pi" if pi is None else pi
        if not isinstance(pi_name, str):
            raise TypeError(f"with a Dataset, pi must be the name of its Π variable; got {pi!r}")
        if pi_name not in obj.data_vars:
            raise ValueError(
                f"the transfer spectrum reads Π from the variable {pi_name!r} (pi={pi_name!r}); "
                f"the Dataset has {sorted(map(str, obj.data_vars))}"
            )
        return transfer_spectrum(field, obj[pi_name], kind=kind, kmax=kmax, L=L)
    if var is not None:
        raise TypeError("var selects a Dataset variable; it cannot be used with a DataArray")
    field = _check_field(obj, "obj")
    if pi is None:
        raise TypeError("pi (the SGS term Π, a DataArray on the same grid) is required")
    pi = _check_field(pi, "pi")
    if (pi.sizes["y"], pi.sizes["x"]) != (field.sizes["y"], field.sizes["x"]):
        raise ValueError(
            f"pi must be on the same grid as obj: pi is {pi.sizes['y']}×{pi.sizes['x']}, "
            f"obj is {field.sizes['y']}×{field.sizes['x']}"
        )
    domain = _domain(field, L, "obj")
    if any(c in pi.coords for c in ("y", "x")):
        domain_length(pi, domain[0], name="pi")  # the same domain
    ca = _fft2(field)
    cp = _fft2(pi)
    density = (np.conj(ca) * cp).real
    if kind == "energy":
        density = density.where((density["ky"] != 0) | (density["kx"] != 0), 0.0)
    lead = [d for d in density.dims if d not in ("ky", "kx")]
    density = density.transpose(*lead, "ky", "kx")
    symbol = "psi" if kind == "energy" else "omega"
    out = _shell_sum(density, kmax, f"{kind}_transfer", domain)
    out.attrs = {
        "long_name": f"{kind} transfer spectrum of the SGS term pi",
        "units": "1",
        "normalization": f"T(k) = sum over shell of Re[conj({symbol}^) pi^]/(Ny*Nx)^2"
        + ("; k=0 mode excluded; sum_k T(k) = mean(psi'*pi')" if kind == "energy" else
           "; sum_k T(k) = mean(omega*pi)")
        + f"; the resolved {kind} tendency due to -pi is -T(k)",
    }
    return out
