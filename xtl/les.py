r"""A posteriori LES: the solver on the LES grid with a closure for Π.

The LES equation is the DNS equation for the filtered vorticity with the SGS
term on the right-hand side with a minus sign (docs/conventions.md):

.. math::

    \partial_t\bar\omega + N(\bar\omega,\bar\psi) + \beta\bar v
        = \tfrac{1}{Re}\nabla^2\bar\omega - \mu\bar\omega + F - \Pi .

A *closure* is any callable ``closure(psi, omega) -> Pi`` on the physical LES
grid. xtl provides

* :class:`NoClosure` – Π = 0 (an under-resolved DNS);
* :class:`Smagorinsky` – Π = −∇·(ν_e ∇ω̄), ν_e = (C_s Δ)² |S̄|;
* :class:`DynamicSmagorinsky` – the same with C_s² from the Germano identity
  (test filter of width 2Δ, Lilly's least squares over the domain, clipped at 0);
* :class:`ModelClosure` – a trained network of any backend (its normalization
  applied, batched inference);
* :class:`SumClosure` (``closure_a + closure_b``) – closures compose by addition.

:func:`run_les` runs the LES. (It was called ``les``, which hid this module
behind a function of the same name in the :mod:`xtl` namespace; ``les`` and
calling ``xtl.les(...)`` still work and warn.)
"""
from __future__ import annotations

import math
import sys
import types
import warnings

import numpy as np
import xarray as xr

from .cases import Case
from .fourier import SpectralGrid, transfer_function
from .solver.run import simulate

__all__ = [
    "run_les",
    "les_case",
    "les_metrics",
    "Closure",
    "NoClosure",
    "Smagorinsky",
    "DynamicSmagorinsky",
    "ModelClosure",
    "SumClosure",
]


# --------------------------------------------------------------------------- closures
class Closure:
    """Base class of xtl's closures: a callable on one grid, composable with ``+``.

    Attributes
    ----------
    name : str
        A label (stored as the LES output's ``closure`` attribute).
    n : int or None
        The grid the closure works on (None: any); :func:`run_les` checks it
        against the LES grid.
    """

    name = "closure"
    n = None

    def __call__(self, psi: np.ndarray, omega: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __add__(self, other):
        return SumClosure(self, other)

    def _check(self, psi, omega):
        if psi.shape != omega.shape or psi.ndim != 2:
            raise ValueError(
                f"{self.name}: psi and omega must be 2D arrays of one shape, got "
                f"{psi.shape} and {omega.shape}"
            )
        if self.n is not None and psi.shape != (self.n, self.n):
            raise ValueError(
                f"{self.name} closure works on a {self.n}² grid, got fields of shape {psi.shape}"
            )


class NoClosure(Closure):
    """Π = 0."""

    name = "none"

    def __call__(self, psi, omega):
        return np.zeros_like(np.asarray(omega, dtype=float))


class SumClosure(Closure):
    """The sum of several closures' Π."""

    def __init__(self, *closures):
        for c in closures:
            if not callable(c):
                raise TypeError(f"closures must be callables closure(psi, omega) -> Pi, got {c!r}")
        self.closures = closures
        sizes = {getattr(c, "n", None) for c in closures} - {None}
        if len(sizes) > 1:
            raise ValueError(f"closures work on different grids: {sorted(sizes)}")
        self.n = sizes.pop() if sizes else None
        self.name = " + ".join(getattr(c, "name", type(c).__name__) for c in closures)

    def __call__(self, psi, omega):
        return sum(np.asarray(c(psi, omega), dtype=float) for c in self.closures)


def _gradients(grid: SpectralGrid, psi_hat, omega_hat):
    """Physical |S̄|, ∂ω/∂x, ∂ω/∂y from spectral ψ̂ and ω̂."""
    kx, ky = grid.kx, grid.ky
    psi_xy = grid.irfft2(-kx * ky * psi_hat)
    psi_diff = grid.irfft2((kx**2 - ky**2) * psi_hat)  # ψ_yy − ψ_xx
    strain = np.sqrt(4 * psi_xy**2 + psi_diff**2)
    wx, wy = grid.irfft2(np.stack(grid.gradient(omega_hat)))
    return strain, wx, wy


def _divergence(grid: SpectralGrid, fx, fy):
    """Spectral ∂fx/∂x + ∂fy/∂y of physical fluxes."""
    return grid.divergence(grid.rfft2(fx), grid.rfft2(fy))


def _eddy_divergence_hat(grid, psi_hat, omega_hat, width):
    """Spectral ∇·(width² |S| ∇ω) of a spectral state."""
    strain, wx, wy = _gradients(grid, psi_hat, omega_hat)
    nu = width**2 * strain
    return _divergence(grid, nu * wx, nu * wy)


class Smagorinsky(Closure):
    """Π = −∇·(ν_e ∇ω̄), ν_e = (C_s Δ)² |S̄|, |S̄| = √(4ψ_xy² + (ψ_yy − ψ_xx)²).

    Parameters
    ----------
    n : int
        LES grid size; Δ = 2π/n.
    cs : float, default 0.17
        Smagorinsky coefficient.
    """

    name = "smagorinsky"

    def __init__(self, n: int, cs: float = 0.17):
        if not (isinstance(cs, (int, float)) and cs >= 0):
            raise ValueError(f"cs must be a number >= 0, got {cs!r}")
        self.grid = SpectralGrid(n, dealias=False)
        self.n = self.grid.n
        self.cs = float(cs)
        self.delta = 2 * math.pi / self.n

    def __call__(self, psi, omega):
        psi, omega = np.asarray(psi, float), np.asarray(omega, float)
        self._check(psi, omega)
        g = self.grid
        div = _eddy_divergence_hat(g, g.rfft2(psi), g.rfft2(omega), self.cs * self.delta)
        return -g.irfft2(div)


class DynamicSmagorinsky(Closure):
    """Smagorinsky with C_s² from the Germano identity (Lilly's least squares).

    With the test filter G̃ (Gaussian of width 2Δ, Ĝ = exp(−k²(2Δ)²/24), from
    :func:`xtl.fourier.transfer_function`),
    ``L = (N(ω̄, ψ̄))~ − N(ω̄~, ψ̄~)`` and
    ``M = (∇·(Δ²|S̄|∇ω̄))~ − ∇·((2Δ)²|S̄~|∇ω̄~)``, the coefficient is
    ``C_s² = max(0, ⟨L M⟩ / ⟨M M⟩)`` (domain averages), and
    ``Π = −C_s² ∇·(Δ²|S̄|∇ω̄)``. The last coefficient is kept in :attr:`cs2`.

    Parameters
    ----------
    n : int
        LES grid size; Δ = 2π/n.
    """

    name = "dynamic-smagorinsky"

    def __init__(self, n: int):
        self.grid = SpectralGrid(n, dealias=False)
        self.n = self.grid.n
        self.delta = 2 * math.pi / self.n
        self.test_filter = transfer_function("gaussian", self.grid.kx, self.grid.ky, 2 * self.delta)
        self.cs2 = float("nan")

    def __call__(self, psi, omega):
        psi, omega = np.asarray(psi, float), np.asarray(omega, float)
        self._check(psi, omega)
        g, G = self.grid, self.test_filter
        w_hat = g.rfft2(omega)
        p_hat = g.rfft2(psi)
        model_hat = _eddy_divergence_hat(g, p_hat, w_hat, self.delta)
        leonard = G * g.advection(w_hat) - g.advection(G * w_hat)
        m_hat = G * model_hat - _eddy_divergence_hat(g, G * p_hat, G * w_hat, 2 * self.delta)
        L, M = g.irfft2(leonard), g.irfft2(m_hat)
        mm = float(np.mean(M * M))
        self.cs2 = max(0.0, float(np.mean(L * M)) / mm) if mm > 0 else 0.0
        return -self.cs2 * g.irfft2(model_hat)


class ModelClosure(Closure):
    """A trained network as a closure: Π = model(ψ̄, ω̄) in physical units.

    Parameters
    ----------
    model : xtl.backends.base.Model
        A network of any backend; its ``predict(psi, omega)`` applies the stored
        normalization (inputs divided by the training standard deviations of
        ψ̄ and ω̄, output multiplied by that of Π).
    n : int, optional
        The LES grid; default the grid the model was trained on (its
        provenance), which :func:`run_les` then checks.
    """

    name = "model"

    def __init__(self, model, n=None):
        for attr in ("predict", "normalization"):
            if not hasattr(model, attr):
                raise TypeError(f"model must be an xtl Model (with .{attr}), got {type(model).__name__}")
        needed = {"psi", "omega", "pi"}
        have = set(getattr(model, "normalization", {}) or {})
        if not needed <= have:
            raise ValueError(
                f"model was trained on variables {sorted(have)}; a closure needs a model of "
                f"(psi, omega) -> pi"
            )
        self.model = model
        trained = _trained_grid(model)
        if n is not None and trained is not None and int(n) != trained:
            raise ValueError(f"model was trained on a {trained}² grid, not n={n}")
        self.n = int(n) if n is not None else trained
        prov = getattr(model, "provenance", {}) or {}
        self.name = f"{prov.get('kind', 'network')} network ({prov.get('training_case', 'unknown case')})"

    def __call__(self, psi, omega):
        psi, omega = np.asarray(psi), np.asarray(omega)
        self._check(psi, omega)
        return np.asarray(self.model.predict(psi[None], omega[None])[0], dtype=float)


def _trained_grid(model):
    prov = getattr(model, "provenance", {}) or {}
    for key in ("grid", "n", "n_les", "grid_size"):
        value = prov.get(key)
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
            return int(value[0])
    return None


# --------------------------------------------------------------------------- the LES run
def les_case(case: Case, n: int | None = None, dt: float | None = None) -> Case:
    """The LES version of a DNS case: grid ``n`` (default ``case.n_les``).

    Parameters
    ----------
    case : Case
        The DNS case.
    n : int, optional
        LES grid size (default ``case.n_les``).
    dt : float, optional
        LES time step (default ``case.dt · case.n / n``, which keeps the CFL
        number of the DNS).

    Returns
    -------
    Case
        With ``n = n_les = n`` and the name suffixed ``-les``.
    """
    n = case.n_les if n is None else n
    if dt is None:
        dt = case.dt * case.n / n
    return case.replace(name=f"{case.name}-les", n=int(n), n_les=int(n), dt=float(dt))


def _initial_field(initial, n):
    """A 2D ω̄ field on the ``n`` grid from an array, DataArray or LES Dataset."""
    if isinstance(initial, xr.Dataset):
        if "omega" not in initial:
            raise ValueError("initial Dataset must have an 'omega' variable (filtered DNS)")
        initial = initial["omega"]
    if isinstance(initial, xr.DataArray):
        extra = [d for d in initial.dims if d not in ("y", "x")]
        if extra:
            initial = initial.isel({d: 0 for d in extra})
        initial = initial.transpose("y", "x").values
    initial = np.asarray(initial, dtype=float)
    if initial.shape != (n, n):
        raise ValueError(
            f"initial must be a filtered vorticity on the LES grid ({n}, {n}), got {initial.shape}"
        )
    return initial


def run_les(case: Case, closure=None, initial=None, *, t_end: float, save_interval: float,
            n: int | None = None, dt: float | None = None, **simulate_kwargs) -> xr.Dataset:
    """Run an LES of ``case`` on its LES grid with ``closure``.

    Parameters
    ----------
    case : Case
        The DNS case; the LES uses :func:`les_case` (grid ``case.n_les`` and a
        time step with the DNS's CFL number unless ``n``/``dt`` are given).
    closure : callable or Closure, optional
        ``closure(psi, omega) -> Pi``; None runs with no closure.
    initial : array, DataArray or Dataset, optional
        Filtered DNS vorticity on the LES grid (an LES Dataset's first
        snapshot is used when it has a ``time``/``member`` dim); None for the
        seeded random field.
    t_end, save_interval : float
        As in :func:`xtl.simulate`.
    **simulate_kwargs
        Passed to :func:`xtl.simulate` (``path``, ``spin_up``, ``seed``,
        ``progress``, ``cfl_limit``, ...).

    Returns
    -------
    xarray.Dataset
        The schema of :func:`xtl.simulate`, with ``closure`` in attrs.

    Raises
    ------
    ValueError
        If the closure works on another grid than the LES grid.
    """
    lcase = les_case(case, n, dt)
    if closure is not None:
        if not callable(closure):
            raise TypeError(f"closure must be callable closure(psi, omega) -> Pi, got {closure!r}")
        grid_n = getattr(closure, "n", None)
        if grid_n is not None and grid_n != lcase.n:
            raise ValueError(
                f"closure works on a {grid_n}² grid but the LES grid is {lcase.n}² (case "
                f"{case.name!r} coarse-grains to n_les={case.n_les}); pass n={grid_n} to run the "
                f"LES on the closure's grid"
            )
    if initial is not None:
        initial = _initial_field(initial, lcase.n)
    name = getattr(closure, "name", "none" if closure is None else type(closure).__name__)
    return simulate(lcase, t_end=t_end, save_interval=save_interval, initial=initial,
                    closure=closure, attrs={"closure": name}, **simulate_kwargs)


def les(*args, **kwargs) -> xr.Dataset:
    """Deprecated name of :func:`run_les` (it hid the :mod:`xtl.les` module)."""
    warnings.warn("xtl.les.les is deprecated; call xtl.run_les", DeprecationWarning, stacklevel=2)
    return run_les(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """This module, callable as the function it used to be shadowed by (deprecated)."""

    def __call__(self, *args, **kwargs):
        warnings.warn("calling xtl.les(...) is deprecated (xtl.les is the module); call "
                      "xtl.run_les(...)", DeprecationWarning, stacklevel=2)
        return run_les(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


# --------------------------------------------------------------------------- metrics
def _pdf(omega: xr.DataArray, edges: np.ndarray) -> xr.DataArray:
    values = omega.values.ravel()
    density, _ = np.histogram(values[np.isfinite(values)], bins=edges, density=True)
    centers = 0.5 * (edges[1:] + edges[:-1])
    return xr.DataArray(density, dims="omega_bin", coords={"omega_bin": centers},
                        attrs={"long_name": "PDF of vorticity", "units": "1"})


def _resolved_kmax(les_ds: xr.Dataset) -> int:
    """Largest wavenumber the LES carries: the 2/3-rule cutoff when it dealiases."""
    n = les_ds.sizes["x"]
    return (n - 1) // 3 if int(les_ds.attrs.get("case_dealias", 1)) else n // 2 - 1


def les_metrics(les_ds: xr.Dataset, fdns_ds: xr.Dataset, *, bins: int = 81) -> xr.Dataset:
    """Compare an LES with the filtered DNS.

    Parameters
    ----------
    les_ds : Dataset
        Output of :func:`run_les` (``omega``, ``psi`` on ``(time, y, x)``).
    fdns_ds : Dataset
        The filtered DNS on the same grid (e.g. from :func:`xtl.coarse_grain`).
    bins : int
        Bins of the vorticity PDFs (common edges spanning both data sets).

    Returns
    -------
    xarray.Dataset
        ``energy_les``/``energy_fdns`` spectra (time means over ``k``),
        ``enstrophy_les``/``enstrophy_fdns``, ``spectrum_error`` (RMSE of the log10
        energy spectra over the shells the LES resolves, 1 ≤ k ≤ ``attrs["kmax"]``:
        the 2/3-rule cutoff of a dealiased LES), ``pdf_les``/``pdf_fdns`` over ``omega_bin``,
        ``kinetic_energy`` over the LES ``time``, and attrs ``stable`` (1/0) and
        ``blowup_time`` (NaN if stable).
    """
    from .metrics import log_spectrum_rmse
    from .spectral import spectrum

    for name, ds in (("les_ds", les_ds), ("fdns_ds", fdns_ds)):
        missing = {"omega", "psi"} - set(ds.data_vars)
        if missing:
            raise ValueError(f"{name} must have variables 'omega' and 'psi'; missing {sorted(missing)}")
    if les_ds.sizes["x"] != fdns_ds.sizes["x"] or les_ds.sizes["y"] != fdns_ds.sizes["y"]:
        raise ValueError(
            f"les_ds and fdns_ds must be on one grid; got {les_ds.sizes['y']}x{les_ds.sizes['x']} "
            f"and {fdns_ds.sizes['y']}x{fdns_ds.sizes['x']}"
        )
    finite = np.isfinite(les_ds.omega).all(("y", "x")).values
    stable = bool(finite.all()) and les_ds.attrs.get("complete", 1) == 1
    blowup = float("nan")
    if not finite.all():
        blowup = float(les_ds.time.values[np.argmin(finite)])
    elif not stable:
        blowup = float(les_ds.time.values[-1])
    good = les_ds.isel(time=np.flatnonzero(finite)) if not finite.all() else les_ds
    mean_dims = [d for d in fdns_ds.omega.dims if d not in ("y", "x")]
    out = xr.Dataset()
    for kind in ("energy", "enstrophy"):
        out[f"{kind}_les"] = spectrum(good, kind=kind).mean("time")
        out[f"{kind}_fdns"] = spectrum(fdns_ds, kind=kind).mean(mean_dims)
    kmax = _resolved_kmax(les_ds)
    out["spectrum_error"] = log_spectrum_rmse(out.energy_les, out.energy_fdns, kmax=kmax).assign_attrs(
        long_name=f"RMSE of log10 energy spectra (LES vs filtered DNS), 1 <= k <= {kmax}",
        units="1")
    span = float(max(np.nanmax(np.abs(good.omega.values)), np.nanmax(np.abs(fdns_ds.omega.values))))
    edges = np.linspace(-span, span, bins + 1)
    out["pdf_les"] = _pdf(good.omega, edges)
    out["pdf_fdns"] = _pdf(fdns_ds.omega, edges)
    out["kinetic_energy"] = (0.5 * (good.omega * good.psi).mean(("y", "x"))).assign_attrs(
        long_name="kinetic energy of the LES", units="1")
    out.attrs.update(stable=int(stable), blowup_time=blowup, kmax=kmax,
                     closure=les_ds.attrs.get("closure", "unknown"))
    return out
