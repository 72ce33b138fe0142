r"""Closures: the SGS term Π of the LES equation, read from the solver's state and grid.

The LES equation is the DNS equation for the filtered vorticity with the SGS
term on the right-hand side with a minus sign (docs/conventions.md):

.. math::

    \partial_t\bar\omega + N(\bar\omega,\bar\psi) + \beta\bar v
        = \tfrac{1}{Re}\nabla^2\bar\omega - \mu\bar\omega + F - \Pi .

A closure has one entry point, like pyqg's parameterizations, which take the
model and read its grid: ``closure.pi_hat(omega_hat, grid)`` is Π's spectrum
from the spectral vorticity ω̂ of the state on the solver's
:class:`~xtl.physics.fourier.SpectralGrid` (ψ̂ = ω̂/k² from the grid). A closure
owns no grid, so one closure runs on any grid and pickles as it is.

* :class:`NoClosure` – Π = 0 (an under-resolved DNS);
* :class:`Smagorinsky` – Π = −∇·(ν_e ∇ω̄), ν_e = (C_s Δ)² |S̄|;
* :class:`DynamicSmagorinsky` – the same with C_s² from the Germano identity
  (test filter of width 2Δ, Lilly's least squares over the domain, clipped at 0);
* :class:`FunctionClosure` – a plain ``f(psi, omega) -> Pi`` on the physical grid
  (:func:`as_closure`);
* :class:`SumClosure` (``a + b``, ``sum([a, b])``) and :class:`ScaledClosure`
  (``0.5 * a``) – closures compose.

The network closure, :class:`xtl.nn.closure.ModelClosure`, sits beside the
networks. :func:`get_closure` makes a closure by name (:func:`available_closures`,
:func:`register_closure`).
"""
from __future__ import annotations

import abc
import math
import numbers

import numpy as np

from ..options import check_bool, check_float
from .fourier import SpectralGrid, transfer_function

__all__ = [
    "Closure",
    "NoClosure",
    "FunctionClosure",
    "Smagorinsky",
    "DynamicSmagorinsky",
    "SumClosure",
    "ScaledClosure",
    "as_closure",
    "register_closure",
    "get_closure",
    "available_closures",
]


def _number(value: float) -> str:
    """A float as written in a repr: ``0.17``, ``2`` (not ``2.0``), ``1e-05``."""
    return format(value, ".15g")


class Closure(abc.ABC):
    """Base class of xtl's closures: ``closure.pi_hat(omega_hat, grid) -> pi_hat``.

    Closures compose: ``a + b`` (:class:`SumClosure`; ``sum([a, b])`` too) and
    ``0.5 * a`` (:class:`ScaledClosure`); a plain callable joins a sum as a
    :class:`FunctionClosure`. Subclasses implement :meth:`pi_hat`; one that
    works on one grid only refuses the others in :meth:`check_grid`.

    Attributes
    ----------
    name : str
        A label (stored as the LES output's ``closure`` attribute).
    """

    name = "closure"
    __array_ufunc__ = None  # numpy scalars defer to __rmul__: np.float64(2) * closure

    @abc.abstractmethod
    def pi_hat(self, omega_hat: np.ndarray, grid: SpectralGrid) -> np.ndarray:
        """Π̂ of the spectral vorticity ω̂ on ``grid``.

        Parameters
        ----------
        omega_hat : ndarray
            ``(..., n, n//2+1)`` as :meth:`SpectralGrid.rfft2` gives it; leading
            axes are snapshots, each closed on its own.
        grid : xtl.physics.fourier.SpectralGrid
            The solver's grid (its wavenumbers, FFTs and ψ̂ = ω̂/k²).

        Returns
        -------
        ndarray
            Π̂, the shape of ``omega_hat``.
        """

    def check_grid(self, grid: SpectralGrid) -> None:
        """Refuse a grid the closure cannot work on (ValueError); any grid by default."""

    def backends(self) -> set:
        """Names of the network backends the closure runs (to pin their threads)."""
        return set()

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __add__(self, other):
        return _sum(self, other, (self, other))

    def __radd__(self, other):  # sum([a, b]) starts from 0
        return _sum(self, other, (other, self))

    def __mul__(self, factor):
        return ScaledClosure(self, factor)

    __rmul__ = __mul__


def _sum(closure, other, terms):
    """``closure + other`` as ``SumClosure(*terms)``: ``closure`` itself when ``other`` is 0."""
    if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
        return closure
    if not (isinstance(other, Closure) or callable(other)):
        return NotImplemented
    return SumClosure(*terms)


def as_closure(closure) -> Closure:
    """``closure`` as a :class:`Closure`: None → :class:`NoClosure`, a plain callable →
    :class:`FunctionClosure`, a Closure as it is.

    Raises
    ------
    TypeError
        ``closure`` is neither a Closure nor callable.
    """
    if closure is None:
        return NoClosure()
    if isinstance(closure, Closure):
        return closure
    if not callable(closure):
        raise TypeError(f"closure must be a Closure, a callable closure(psi, omega) -> Pi or "
                        f"None, got {closure!r}")
    return FunctionClosure(closure)


def grid_mismatch(name: str, n: int, grid: SpectralGrid) -> ValueError:
    """The error of a closure made for an ``n``² grid given another ``grid``."""
    return ValueError(f"{name} closure works on a {n}² grid but the LES grid is {grid.n}²; "
                      f"pass n={n} to run_les to run the LES on the closure's grid")


class FunctionClosure(Closure):
    """A plain callable ``func(psi, omega) -> Pi`` on the physical grid as a :class:`Closure`.

    Its Π̂ is ``rfft2(func(irfft2(ψ̂), irfft2(ω̂)))``, one call per snapshot. Its
    ``name`` is the callable's ``name`` attribute, if any; a callable with an
    ``n`` attribute works on that grid only (:meth:`check_grid`).
    """

    def __init__(self, func):
        if not callable(func):
            raise TypeError(f"func must be a callable func(psi, omega) -> Pi, got {func!r}")
        self.func = func
        self.name = getattr(func, "name", type(func).__name__)

    def __repr__(self):
        return f"FunctionClosure({self.func!r})"

    def check_grid(self, grid):
        n = getattr(self.func, "n", None)
        if n is not None and n != grid.n:
            raise grid_mismatch(self.name, n, grid)

    def pi_hat(self, omega_hat, grid):
        psi, omega = grid.irfft2(np.stack([grid.streamfunction(omega_hat), omega_hat]))
        pi = np.empty_like(omega)
        for index in np.ndindex(*omega.shape[:-2]):
            pi[index] = self._call(psi[index], omega[index])
        return grid.rfft2(pi)

    def _call(self, psi, omega):
        pi = np.asarray(self.func(psi, omega), dtype=float)
        if pi.shape != omega.shape:
            raise ValueError(f"closure returned shape {pi.shape} ({self.name!r}); expected the "
                             f"grid shape {omega.shape} of psi and omega")
        return pi


class NoClosure(Closure):
    """Π = 0."""

    name = "none"

    def pi_hat(self, omega_hat, grid):
        return np.zeros_like(omega_hat, dtype=complex)


class SumClosure(Closure):
    """The sum of several closures' Π (``a + b``; nested sums are flattened).

    Parameters
    ----------
    *closures : Closure or callable
        At least one; plain callables are wrapped in :class:`FunctionClosure`.
    """

    def __init__(self, *closures):
        if not closures:
            raise ValueError("SumClosure needs at least one closure, got none")
        parts = []
        for c in closures:
            c = as_closure(c)
            parts.extend(c.closures if isinstance(c, SumClosure) else (c,))
        self.closures = tuple(parts)
        self.name = " + ".join(c.name for c in parts)

    def check_grid(self, grid):
        for c in self.closures:
            c.check_grid(grid)

    def pi_hat(self, omega_hat, grid):
        return sum(c.pi_hat(omega_hat, grid) for c in self.closures)

    def backends(self):
        return set().union(*(c.backends() for c in self.closures))

    def __repr__(self):
        return " + ".join(repr(c) for c in self.closures)


class ScaledClosure(Closure):
    """A closure's Π times a real factor (``0.5 * closure``; nested factors multiply).

    Parameters
    ----------
    closure : Closure or callable
    factor : float
        A finite real number.

    Raises
    ------
    TypeError
        ``factor`` is not a real number (a bool, a complex, a string, an array).
    ValueError
        ``factor`` is NaN or infinite.
    """

    def __init__(self, closure, factor):
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            raise TypeError(f"a closure can be multiplied by a real number only, got "
                            f"{factor!r} ({type(factor).__name__})")
        factor = check_float(factor, "factor")
        closure = as_closure(closure)
        if isinstance(closure, ScaledClosure):
            closure, factor = closure.closure, closure.factor * factor
        self.closure, self.factor = closure, factor
        self.name = f"{_number(factor)} * {self._wrap(closure.name, closure)}"

    @staticmethod
    def _wrap(text, closure):
        return f"({text})" if isinstance(closure, SumClosure) else text

    def check_grid(self, grid):
        self.closure.check_grid(grid)

    def pi_hat(self, omega_hat, grid):
        return self.factor * self.closure.pi_hat(omega_hat, grid)

    def backends(self):
        return self.closure.backends()

    def __repr__(self):
        return f"{_number(self.factor)} * {self._wrap(repr(self.closure), self.closure)}"


# --------------------------------------------------------------------------- eddy viscosity
def grid_width(grid: SpectralGrid) -> float:
    """The LES grid spacing Δ = 2π/n."""
    return 2 * math.pi / grid.n


def _eddy_divergence_hat(grid: SpectralGrid, psi_hat, omega_hat, width: float):
    r"""Spectral ∇·(width² |S̄| ∇ω̄), |S̄| = √(4ψ_xy² + (ψ_yy − ψ_xx)²), of spectral ψ̂, ω̂."""
    kx, ky = grid.kx, grid.ky
    psi_xy = grid.irfft2(-kx * ky * psi_hat)
    psi_diff = grid.irfft2((kx**2 - ky**2) * psi_hat)  # ψ_yy − ψ_xx
    wx, wy = grid.irfft2(np.stack(grid.gradient(omega_hat)))
    nu = width**2 * np.sqrt(4 * psi_xy**2 + psi_diff**2)
    return grid.divergence(grid.rfft2(nu * wx), grid.rfft2(nu * wy))


class Smagorinsky(Closure):
    """Π = −∇·(ν_e ∇ω̄), ν_e = (C_s Δ)² |S̄|, |S̄| = √(4ψ_xy² + (ψ_yy − ψ_xx)²), Δ = 2π/n.

    Parameters
    ----------
    cs : float, default 0.17
        Smagorinsky coefficient (>= 0).
    """

    name = "smagorinsky"

    def __init__(self, cs: float = 0.17):
        if not (isinstance(cs, (int, float)) and cs >= 0):
            raise ValueError(f"cs must be a number >= 0, got {cs!r}")
        self.cs = float(cs)

    def __repr__(self):
        return f"Smagorinsky(cs={_number(self.cs)})"

    def pi_hat(self, omega_hat, grid):
        width = self.cs * grid_width(grid)
        return -_eddy_divergence_hat(grid, grid.streamfunction(omega_hat), omega_hat, width)


class DynamicSmagorinsky(Closure):
    """Smagorinsky with C_s² from the Germano identity (Lilly's least squares).

    With the test filter G̃ (Gaussian of width 2Δ, Ĝ = exp(−k²(2Δ)²/24), from
    :func:`xtl.physics.fourier.transfer_function`),
    ``L = (N(ω̄, ψ̄))~ − N(ω̄~, ψ̄~)`` and
    ``M = (∇·(Δ²|S̄|∇ω̄))~ − ∇·((2Δ)²|S̄~|∇ω̄~)``, the coefficient is
    ``C_s² = max(0, ⟨L M⟩ / ⟨M M⟩)`` (domain averages, one per snapshot), and
    ``Π = −C_s² ∇·(Δ²|S̄|∇ω̄)``. The last coefficient is kept in :attr:`cs2`.
    """

    name = "dynamic-smagorinsky"

    def __init__(self):
        self.cs2 = float("nan")
        self._per_grid = {}

    def __getstate__(self):  # the FFT plans stay behind; a copy makes its own
        return {**vars(self), "_per_grid": {}}

    def _for_grid(self, grid: SpectralGrid) -> tuple:
        """``(plain, test)`` for ``grid``, made once per grid: a non-dealiased grid like it,
        whose fused :class:`~xtl.physics.fourier.Jacobian` gives N̂ without dealiasing
        (the products of all modes but the Nyquist ones) whatever ``grid.dealias`` is,
        and the test filter's Ĝ on ``grid``."""
        key = (grid.n, grid.fft, grid.threads, grid.planner)
        if key not in self._per_grid:
            plain = SpectralGrid(grid.n, dealias=False, fft=grid.fft, threads=grid.threads,
                                 planner=grid.planner)
            test = transfer_function("gaussian", grid.kx, grid.ky, 2 * grid_width(grid))
            self._per_grid[key] = plain, test
        return self._per_grid[key]

    def pi_hat(self, omega_hat, grid):
        delta = grid_width(grid)
        plain, test = self._for_grid(grid)
        psi_hat = grid.streamfunction(omega_hat)
        model_hat = _eddy_divergence_hat(grid, psi_hat, omega_hat, delta)
        leonard = test * plain.advection(omega_hat) - plain.advection(test * omega_hat)
        m_hat = test * model_hat - _eddy_divergence_hat(grid, test * psi_hat, test * omega_hat,
                                                        2 * delta)
        L, M = grid.irfft2(leonard), grid.irfft2(m_hat)
        lm, mm = np.mean(L * M, axis=(-2, -1)), np.mean(M * M, axis=(-2, -1))
        cs2 = np.where(mm > 0, np.maximum(0.0, lm / np.where(mm > 0, mm, 1.0)), 0.0)
        self.cs2 = float(cs2) if cs2.ndim == 0 else cs2
        return -cs2[..., None, None] * model_hat


# --------------------------------------------------------------------------- the registry
_REGISTRY: dict = {}


def _closure_key(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    return " ".join(name.strip().lower().split())


def register_closure(name: str, factory, overwrite: bool = False) -> None:
    """Register a closure factory under ``name`` for :func:`get_closure`.

    Parameters
    ----------
    name : str
        The name (case and surrounding blanks do not matter).
    factory : callable
        ``factory(**params) -> closure``, e.g. a :class:`Closure` subclass.
    overwrite : bool, default False
        Replace a factory already registered under ``name``.

    Raises
    ------
    TypeError
        ``name`` is not a non-empty string or ``factory`` is not callable.
    ValueError
        ``name`` is taken and ``overwrite`` is False.
    """
    key = _closure_key(name)
    if not callable(factory):
        raise TypeError(f"factory must be callable factory(**params) -> closure, got {factory!r}")
    if key in _REGISTRY and not check_bool(overwrite, "overwrite"):
        raise ValueError(f"a closure named {key!r} is registered already "
                         f"({_REGISTRY[key]!r}); pass overwrite=True to replace it")
    _REGISTRY[key] = factory


def available_closures() -> tuple:
    """The names :func:`get_closure` knows, in the order they were registered."""
    return tuple(_REGISTRY)


def get_closure(name: str, **params) -> Closure:
    """The closure registered as ``name``, made with ``params`` (a factory's plain callable
    is wrapped by :func:`as_closure`).

    Parameters
    ----------
    name : str
        One of :func:`available_closures` (case does not matter): ``"none"`` or
        ``"no closure"`` (:class:`NoClosure`), ``"smagorinsky"``,
        ``"dynamic-smagorinsky"``, and any :func:`register_closure` added.
    **params
        The factory's arguments, e.g. ``cs=0.2``.

    Raises
    ------
    ValueError
        ``name`` is not registered (the message lists the valid names).
    TypeError
        ``params`` do not fit the factory.
    """
    key = _closure_key(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown closure {name!r}; valid names: "
                         f"{', '.join(repr(n) for n in available_closures())}")
    try:
        closure = _REGISTRY[key](**params)
    except TypeError as err:
        raise TypeError(f"closure {key!r} cannot be made with params {sorted(params)}: "
                        f"{err}") from err
    return as_closure(closure)


register_closure("none", NoClosure)
register_closure("no closure", NoClosure)
register_closure("smagorinsky", Smagorinsky)
register_closure("dynamic-smagorinsky", DynamicSmagorinsky)
