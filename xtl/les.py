r"""A posteriori LES: the solver on the LES grid with a closure for Π.

The LES equation is the DNS equation for the filtered vorticity with the SGS
term on the right-hand side with a minus sign (docs/conventions.md):

.. math::

    \partial_t\bar\omega + N(\bar\omega,\bar\psi) + \beta\bar v
        = \tfrac{1}{Re}\nabla^2\bar\omega - \mu\bar\omega + F - \Pi .

A *closure* is any callable ``closure(psi, omega) -> Pi`` on the physical LES
grid. xtl's closures are :class:`Closure` objects (an abstract base class, like
pyqg's parameterizations):

* :class:`NoClosure` – Π = 0 (an under-resolved DNS);
* :class:`Smagorinsky` – Π = −∇·(ν_e ∇ω̄), ν_e = (C_s Δ)² |S̄|;
* :class:`DynamicSmagorinsky` – the same with C_s² from the Germano identity
  (test filter of width 2Δ, Lilly's least squares over the domain, clipped at 0);
* :class:`ModelClosure` – a trained network of any backend (its normalization
  applied, the backend's compiled forward once per step);
* :class:`SumClosure` (``a + b``, ``sum([a, b])``) and :class:`ScaledClosure`
  (``0.5 * a``) – closures compose; a plain callable joins as a
  :class:`FunctionClosure` (:func:`as_closure`).

A closure evaluates a :class:`ClosureState` – ψ̄, ω̄ and their spectra, each
transformed once – physically (:meth:`Closure.pi`) or spectrally
(:meth:`Closure.pi_hat`): the Smagorinsky closures work on the state's spectra,
so from a solver's ω̂ (:meth:`Closure.pi_hat_from`) they do not transform the
fields again, and the closures of a sum share the state's transforms. :func:`get_closure` makes a closure by
name (:func:`available_closures`, :func:`register_closure`).

:func:`run_les` runs the LES. (It was called ``les``, which hid this module
behind a function of the same name in the :mod:`xtl` namespace; ``les`` and
calling ``xtl.les(...)`` still work and warn.) :func:`les_metrics` compares a
run with the filtered DNS (spectra, the vorticity PDF and its tails, energy and
enstrophy, the closure's energy transfer, stability); :func:`run_aposteriori`
runs many closures from many initial states as dask tasks and
:func:`aposteriori_summary` gives their means and spreads.
"""
from __future__ import annotations

import abc
import math
import numbers
import sys
import types
import warnings

import numpy as np
import xarray as xr

from .physics.cases import Case
from .physics.fourier import SpectralGrid, transfer_function
from .options import LesSchedule, check_bool, check_float, check_int
from .solver.run import DivergenceError, simulate

__all__ = [
    "run_les",
    "les_case",
    "les_metrics",
    "pdf_distance",
    "tail_density",
    "closure_fields",
    "select_initial_states",
    "aposteriori_run",
    "run_aposteriori",
    "aposteriori_summary",
    "large_eddy_turnover_time",
    "TAIL_SIGMAS",
    "Closure",
    "ClosureState",
    "NoClosure",
    "FunctionClosure",
    "Smagorinsky",
    "DynamicSmagorinsky",
    "ModelClosure",
    "SumClosure",
    "ScaledClosure",
    "as_closure",
    "register_closure",
    "get_closure",
    "available_closures",
]


# --------------------------------------------------------------------------- closures
def _number(value: float) -> str:
    """A float as written in a repr: ``0.17``, ``2`` (not ``2.0``), ``1e-05``."""
    return format(value, ".15g")


class ClosureState:
    """One LES state as a closure reads it: ψ̄, ω̄ and their spectra, each computed once.

    Give it what you have — the physical fields (:meth:`from_fields`) or the
    solver's spectral vorticity (:meth:`from_spectrum`) — and read the
    attributes :attr:`psi`, :attr:`omega`, :attr:`psi_hat`, :attr:`omega_hat`:
    a missing one is transformed on first use and kept, so closures summed
    into one (:class:`SumClosure`) share the transforms.

    Parameters
    ----------
    grid : xtl.physics.fourier.SpectralGrid, optional
        The grid of the fields (its FFTs and ψ̂ = ω̂/k²); needed only when a
        missing representation has to be computed.
    psi, omega : ndarray, optional
        Physical fields ``(n, n)``.
    psi_hat, omega_hat : ndarray, optional
        Their spectra, as :meth:`xtl.physics.fourier.SpectralGrid.rfft2` gives them.
        Without ``psi`` and ``psi_hat``, ψ̂ is ω̂/k².

    Raises
    ------
    ValueError
        Without ``omega`` and ``omega_hat``.
    """

    _NAMES = ("psi", "omega", "psi_hat", "omega_hat")

    def __init__(self, grid: SpectralGrid | None = None, *, psi=None, omega=None, psi_hat=None,
                 omega_hat=None):
        if omega is None and omega_hat is None:
            raise ValueError("a ClosureState needs omega or omega_hat, got neither")
        self.grid = grid
        self._fields = dict(psi=psi, omega=omega, psi_hat=psi_hat, omega_hat=omega_hat)

    @classmethod
    def from_fields(cls, psi, omega, grid: SpectralGrid | None = None) -> "ClosureState":
        """The state of physical ψ̄ and ω̄ (float arrays of one shape)."""
        return cls(grid, psi=np.asarray(psi, dtype=float), omega=np.asarray(omega, dtype=float))

    @classmethod
    def from_spectrum(cls, omega_hat, grid: SpectralGrid) -> "ClosureState":
        """The state of a spectral vorticity ω̂ on ``grid`` (ψ̂ = ω̂/k²), as the solver holds it."""
        return cls(grid, omega_hat=np.asarray(omega_hat, dtype=complex))

    def __repr__(self):
        have = [k for k in self._NAMES if self._fields[k] is not None]
        return f"ClosureState(n={self.n}, computed={have})"

    @property
    def n(self) -> int:
        """Points per direction."""
        if self.grid is not None:
            return self.grid.n
        known = self._fields["omega"] if self._fields["omega"] is not None else self._fields["psi"]
        return known.shape[-1] if known is not None else self._fields["omega_hat"].shape[-2]

    def _spectral_grid(self) -> SpectralGrid:
        if self.grid is None:
            raise ValueError("this ClosureState has no grid to transform its fields on; "
                             "make it with grid=SpectralGrid(n)")
        return self.grid

    def _get(self, key, compute):
        if self._fields[key] is None:
            self._fields[key] = compute()
        return self._fields[key]

    @property
    def omega(self) -> np.ndarray:
        """Physical ω̄."""
        return self._get("omega", lambda: self._spectral_grid().irfft2(self.omega_hat))

    @property
    def omega_hat(self) -> np.ndarray:
        """Spectral ω̂."""
        return self._get("omega_hat", lambda: self._spectral_grid().rfft2(self.omega))

    @property
    def psi_hat(self) -> np.ndarray:
        """Spectral ψ̂ (the transform of ``psi`` when given, else ω̂/k²)."""
        def compute():
            grid = self._spectral_grid()
            if self._fields["psi"] is not None:
                return grid.rfft2(self._fields["psi"])
            return grid.streamfunction(self.omega_hat)
        return self._get("psi_hat", compute)

    @property
    def psi(self) -> np.ndarray:
        """Physical ψ̄."""
        return self._get("psi", lambda: self._spectral_grid().irfft2(self.psi_hat))


class Closure(abc.ABC):
    """Base class of xtl's closures: ``closure(psi, omega) -> Pi`` on one grid.

    Closures compose: ``a + b`` (:class:`SumClosure`; ``sum([a, b])`` too) and
    ``0.5 * a`` (:class:`ScaledClosure`); a plain callable joins a sum as a
    :class:`FunctionClosure`. Every closure evaluates a :class:`ClosureState`
    (:meth:`pi`, :meth:`pi_hat`), so closures that work on spectra use the
    state's instead of transforming the fields again, and many snapshots at
    once (:meth:`fields`).

    Subclasses implement :meth:`__call__`; spectral closures override
    :meth:`pi_hat` (and :meth:`pi`), a network :meth:`fields`.

    Attributes
    ----------
    name : str
        A label (stored as the LES output's ``closure`` attribute).
    n : int or None
        The grid the closure works on (None: any); :func:`run_les` checks it
        against the LES grid.
    grid : xtl.physics.fourier.SpectralGrid or None
        The grid whose FFTs the closure uses (None: it uses none).
    """

    name = "closure"
    n = None
    grid = None
    __array_ufunc__ = None  # numpy scalars defer to __rmul__: np.float64(2) * closure

    @abc.abstractmethod
    def __call__(self, psi: np.ndarray, omega: np.ndarray) -> np.ndarray:
        """Π of physical ψ̄ and ω̄ ``(n, n)``."""

    def __repr__(self):
        return f"{type(self).__name__}()"

    # -- composition -------------------------------------------------------------------
    def __add__(self, other):
        if _is_zero(other):
            return self
        if not callable(other):
            return NotImplemented
        return SumClosure(self, other)

    def __radd__(self, other):
        if _is_zero(other):  # sum([a, b]) starts from 0
            return self
        if not callable(other):
            return NotImplemented
        return SumClosure(other, self)

    def __mul__(self, factor):
        return ScaledClosure(self, factor)

    __rmul__ = __mul__

    # -- evaluation ----------------------------------------------------------------------
    def state(self, psi, omega) -> ClosureState:
        """The :class:`ClosureState` of physical fields on this closure's grid (checked)."""
        psi, omega = np.asarray(psi, dtype=float), np.asarray(omega, dtype=float)
        self._check(psi, omega)
        return ClosureState.from_fields(psi, omega, self.grid)

    def pi(self, state: ClosureState) -> np.ndarray:
        """Physical Π of a :class:`ClosureState`."""
        return np.asarray(self(state.psi, state.omega), dtype=float)

    def pi_hat(self, state: ClosureState) -> np.ndarray:
        """Spectral Π̂ of a :class:`ClosureState` (the rfft2 of :meth:`pi` unless overridden)."""
        return state._spectral_grid().rfft2(self.pi(state))

    def pi_hat_from(self, omega_hat, grid: SpectralGrid) -> np.ndarray:
        """Spectral Π̂ of a spectral vorticity ω̂ on ``grid``, as a solver holds its state.

        The solver's entry to :meth:`pi_hat`: ``closure.pi_hat_from(omega_hat, grid)``
        needs no :class:`ClosureState` (whose module sits above the solver).
        """
        return self.pi_hat(ClosureState.from_spectrum(omega_hat, grid))

    def fields(self, psi, omega) -> np.ndarray:
        """Π of many snapshots ``(..., y, x)`` (one call per snapshot unless overridden)."""
        psi, omega = np.asarray(psi, dtype=float), np.asarray(omega, dtype=float)
        shape = omega.shape[-2:]
        flat = [np.asarray(self(p, w), dtype=float)
                for p, w in zip(psi.reshape((-1,) + shape), omega.reshape((-1,) + shape))]
        return np.stack(flat).reshape(omega.shape) if flat else np.zeros_like(omega)

    def backends(self) -> set:
        """Names of the network backends the closure runs (to pin their threads)."""
        return set()

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

    def _check_state(self, state):
        if self.n is not None and state.n != self.n:
            raise ValueError(f"{self.name} closure works on a {self.n}² grid, got a state on "
                             f"a {state.n}² grid")


def _is_zero(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool) and value == 0


def as_closure(closure) -> Closure:
    """``closure`` as a :class:`Closure`: None → :class:`NoClosure`, a plain callable →
    :class:`FunctionClosure`, a Closure as it is.

    Parameters
    ----------
    closure : Closure, callable or None

    Returns
    -------
    Closure

    Raises
    ------
    TypeError
        ``closure`` is not callable.
    """
    if closure is None:
        return NoClosure()
    if isinstance(closure, Closure):
        return closure
    if not callable(closure):
        raise TypeError(f"closure must be a callable closure(psi, omega) -> Pi, a Closure or "
                        f"None, got {closure!r}")
    return FunctionClosure(closure)


class FunctionClosure(Closure):
    """A plain callable ``func(psi, omega) -> Pi`` as a :class:`Closure`.

    Its ``name`` and ``n`` are the callable's attributes of those names, if any.

    Parameters
    ----------
    func : callable
    """

    def __init__(self, func):
        if not callable(func):
            raise TypeError(f"func must be a callable func(psi, omega) -> Pi, got {func!r}")
        self.func = func
        self.name = getattr(func, "name", type(func).__name__)
        self.n = getattr(func, "n", None)

    def __call__(self, psi, omega):
        return self.func(psi, omega)

    def __repr__(self):
        return f"FunctionClosure({self.func!r})"


class NoClosure(Closure):
    """Π = 0.

    Parameters
    ----------
    n : int, optional
        The grid (None: any).
    """

    name = "none"

    def __init__(self, n: int | None = None):
        self.n = None if n is None else check_int(n, "n", minimum=1)

    def __call__(self, psi, omega):
        return np.zeros_like(np.asarray(omega, dtype=float))

    def pi_hat(self, state):
        return np.zeros_like(state.omega_hat, dtype=complex)

    def fields(self, psi, omega):
        return np.zeros_like(np.asarray(omega, dtype=float))

    def __repr__(self):
        return "NoClosure()" if self.n is None else f"NoClosure(n={self.n})"


class SumClosure(Closure):
    """The sum of several closures' Π (``a + b``; nested sums are flattened).

    Parameters
    ----------
    *closures : Closure or callable
        At least one; plain callables are wrapped in :class:`FunctionClosure`.

    Raises
    ------
    ValueError
        If the closures work on different grids.
    """

    def __init__(self, *closures):
        if not closures:
            raise ValueError("SumClosure needs at least one closure, got none")
        parts = []
        for c in closures:
            c = as_closure(c)
            parts.extend(c.closures if isinstance(c, SumClosure) else (c,))
        self.closures = tuple(parts)
        sizes = {c.n for c in parts} - {None}
        if len(sizes) > 1:
            raise ValueError(f"closures work on different grids: {sorted(sizes)}")
        self.n = sizes.pop() if sizes else None
        self.name = " + ".join(c.name for c in parts)

    @property
    def grid(self):
        """The first part's grid (the state's FFTs), None if no part has one."""
        return next((c.grid for c in self.closures if c.grid is not None), None)

    def __call__(self, psi, omega):
        return self.pi(self.state(psi, omega))

    def pi(self, state):
        return sum(c.pi(state) for c in self.closures)

    def pi_hat(self, state):
        return sum(c.pi_hat(state) for c in self.closures)

    def fields(self, psi, omega):
        return sum(c.fields(psi, omega) for c in self.closures)

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
        self.n = closure.n
        self.name = f"{_number(factor)} * {self._wrap(closure.name, closure)}"

    @staticmethod
    def _wrap(text, closure):
        return f"({text})" if isinstance(closure, SumClosure) else text

    @property
    def grid(self):
        """The scaled closure's grid."""
        return self.closure.grid

    def __call__(self, psi, omega):
        return self.pi(self.state(psi, omega))

    def pi(self, state):
        return self.factor * self.closure.pi(state)

    def pi_hat(self, state):
        return self.factor * self.closure.pi_hat(state)

    def fields(self, psi, omega):
        return self.factor * self.closure.fields(psi, omega)

    def backends(self):
        return self.closure.backends()

    def __repr__(self):
        return f"{_number(self.factor)} * {self._wrap(repr(self.closure), self.closure)}"


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

    Works on the state's spectra (:meth:`pi_hat`): from the solver's ω̂ it
    transforms only the strain, the gradients and the fluxes.

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

    def __reduce__(self):  # rebuilt from its arguments (its FFT plans do not pickle)
        return type(self), (self.n, self.cs)

    def __repr__(self):
        return f"Smagorinsky(n={self.n}, cs={_number(self.cs)})"

    def __call__(self, psi, omega):
        return self.pi(self.state(psi, omega))

    def pi(self, state):
        return self.grid.irfft2(self.pi_hat(state))

    def pi_hat(self, state):
        self._check_state(state)
        width = self.cs * self.delta
        return -_eddy_divergence_hat(self.grid, state.psi_hat, state.omega_hat, width)


class DynamicSmagorinsky(Closure):
    """Smagorinsky with C_s² from the Germano identity (Lilly's least squares).

    With the test filter G̃ (Gaussian of width 2Δ, Ĝ = exp(−k²(2Δ)²/24), from
    :func:`xtl.physics.fourier.transfer_function`),
    ``L = (N(ω̄, ψ̄))~ − N(ω̄~, ψ̄~)`` and
    ``M = (∇·(Δ²|S̄|∇ω̄))~ − ∇·((2Δ)²|S̄~|∇ω̄~)``, the coefficient is
    ``C_s² = max(0, ⟨L M⟩ / ⟨M M⟩)`` (domain averages), and
    ``Π = −C_s² ∇·(Δ²|S̄|∇ω̄)``. The last coefficient is kept in :attr:`cs2`.
    Works on the state's spectra like :class:`Smagorinsky`.

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

    def __reduce__(self):  # rebuilt from its arguments (its FFT plans do not pickle)
        return type(self), (self.n,)

    def __repr__(self):
        return f"DynamicSmagorinsky(n={self.n})"

    def __call__(self, psi, omega):
        return self.pi(self.state(psi, omega))

    def pi(self, state):
        model_hat = self._model_hat(state)
        return -self.cs2 * self.grid.irfft2(model_hat)

    def pi_hat(self, state):
        model_hat = self._model_hat(state)
        return -self.cs2 * model_hat

    def _model_hat(self, state):
        """∇·(Δ²|S̄|∇ω̄) spectrally; sets :attr:`cs2` from the Germano identity."""
        self._check_state(state)
        g, G = self.grid, self.test_filter
        w_hat, p_hat = state.omega_hat, state.psi_hat
        model_hat = _eddy_divergence_hat(g, p_hat, w_hat, self.delta)
        leonard = G * g.advection(w_hat) - g.advection(G * w_hat)
        m_hat = G * model_hat - _eddy_divergence_hat(g, G * p_hat, G * w_hat, 2 * self.delta)
        L, M = g.irfft2(leonard), g.irfft2(m_hat)
        mm = float(np.mean(M * M))
        self.cs2 = max(0.0, float(np.mean(L * M)) / mm) if mm > 0 else 0.0
        return model_hat


class ModelClosure(Closure):
    """A trained network as a closure: Π = model(ψ̄, ω̄) in physical units.

    Each call runs the backend's :meth:`compiled_forward` on the one field (for
    Keras a ``tf.function`` traced once per model: an eager call per LES step
    costs several times the convolutions on a small grid). A ModelClosure
    pickles as its model's Dataset and rebuilds the network on its first call,
    so a dask worker can pin the backend's threads before that.

    Parameters
    ----------
    model : xtl.nn.model.Model
        A network of any backend; the stored normalization is applied (inputs
        divided by the training standard deviations of ψ̄ and ω̄, output
        multiplied by that of Π).
    n : int, optional
        The LES grid; default the grid the model was trained on (its
        provenance), which :func:`run_les` then checks.
    """

    name = "model"

    def __init__(self, model, n=None):
        for attr in ("predict", "normalization"):
            if not hasattr(model, attr):
                raise TypeError(f"model must be an xtl Model (with .{attr}), got {type(model).__name__}")
        have = set(model.normalization or {})
        if not {"psi", "omega", "pi"} <= have:
            raise ValueError(
                f"model was trained on variables {sorted(have)}; a closure needs a model of "
                f"(psi, omega) -> pi"
            )
        self.normalization = {k: float(v) for k, v in model.normalization.items()}
        prov = getattr(model, "provenance", {}) or {}
        trained = model.n_les
        if n is not None and trained is not None and int(n) != trained:
            raise ValueError(f"model was trained on a {trained}² grid, not n={n}")
        self.n = int(n) if n is not None else trained
        self.name = (f"{prov.get('kind', 'network')} network "
                     f"({prov.get('training_case', 'unknown case')})")
        self._model, self._dataset, self._forward = model, None, None

    def __repr__(self):
        return f"ModelClosure({self.name!r}, n={self.n})"

    @property
    def model(self):
        """The network (rebuilt from its Dataset on first use after unpickling)."""
        if self._model is None:
            from .nn.model import model_from_dataset

            self._model = model_from_dataset(self._dataset)
        return self._model

    @property
    def backend(self) -> str:
        """Name of the model's backend (to pin its threads on a worker)."""
        return self._model.backend if self._model is not None else self._dataset.attrs["backend"]

    def backends(self) -> set:
        return {self.backend}

    def __getstate__(self):
        from .nn.model import model_to_dataset

        state = dict(self.__dict__)
        state["_dataset"] = self._dataset if self._model is None else model_to_dataset(self._model)
        state["_model"] = state["_forward"] = None
        return state

    def __call__(self, psi, omega):
        from .nn.backends.base import get_backend
        from .nn.spec import OUTPUT, stack_inputs

        psi, omega = np.asarray(psi), np.asarray(omega)
        self._check(psi, omega)
        if self._forward is None:
            model = self.model
            self._forward = get_backend(model.backend).compiled_forward(model)
        out = self._forward(stack_inputs(psi[None], omega[None], self.normalization))[0]
        return (out * np.float32(self.normalization[OUTPUT])).astype(float)

    def fields(self, psi, omega) -> np.ndarray:
        """Π of many snapshots ``(..., y, x)`` at once (batched inference)."""
        return np.asarray(self.model.predict(psi, omega), dtype=float)


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
    """The closure registered as ``name``, made with ``params``.

    Parameters
    ----------
    name : str
        One of :func:`available_closures` (case does not matter): ``"none"`` or
        ``"no closure"`` (:class:`NoClosure`), ``"smagorinsky"``,
        ``"dynamic-smagorinsky"``, and any :func:`register_closure` added.
    **params
        The factory's arguments, e.g. ``n=32`` or ``cs=0.2``.

    Returns
    -------
    Closure
        (A factory's plain callable is wrapped by :func:`as_closure`.)

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


def run_les(case: Case, closure=None, initial=None, schedule=None, *, n: int | None = None,
            dt: float | None = None, keep_blowup: bool = False,
            **simulate_kwargs) -> xr.Dataset:
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
    schedule : Schedule, optional
        The run's times (``t_end``, ``save_interval``, ...), as in
        :func:`xtl.simulate`; single times may be given as keywords instead.
    n : int, optional
        LES grid size (default ``case.n_les``).
    dt : float, optional
        LES time step (default: the DNS's CFL number, see :func:`les_case`).
    keep_blowup : bool, default False
        When the run blows up, return its snapshots before the blow-up (with
        ``attrs["complete"] = 0`` and ``attrs["blowup_time"]``) instead of
        raising :class:`~xtl.solver.run.DivergenceError`. Only for runs kept
        in memory (no ``path``; a file keeps them anyway).
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
    try:
        return simulate(lcase, schedule, initial=initial, closure=closure,
                        attrs={"closure": name}, **simulate_kwargs)
    except DivergenceError as err:
        if not keep_blowup or err.snapshots is None:
            raise
        return err.snapshots


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


def _check_edges(edges) -> np.ndarray:
    edges = np.asarray(edges, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError(f"edges must be increasing bin edges (at least 2), got {edges!r}")
    return edges


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

    Returns
    -------
    float
    """
    edges = _check_edges(edges)
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
    values = omega.values.ravel()
    density, _ = np.histogram(values[np.isfinite(values)], bins=edges)
    density = density / max(np.count_nonzero(np.isfinite(values)), 1) / np.diff(edges)
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
        Output of :func:`run_les` (``omega``, ``psi`` on ``(time, y, x)``); with
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
    from .data.metrics import log_spectrum_rmse
    from .data.spectra import spectrum

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


def closure_fields(closure, les_ds: xr.Dataset) -> xr.DataArray:
    """The closure's Π on every snapshot of an LES run.

    Parameters
    ----------
    closure : Closure, callable or None
        ``closure(psi, omega) -> Pi`` (:meth:`Closure.fields`: a
        :class:`ModelClosure` runs batched, in a sum too); None for no closure
        (Π = 0).
    les_ds : Dataset
        ``psi`` and ``omega`` on ``(time, y, x)``.

    Returns
    -------
    xarray.DataArray
        ``pi`` like ``les_ds.omega``.
    """
    psi = les_ds.psi.transpose(..., "y", "x").values.astype(float)
    omega = les_ds.omega.transpose(..., "y", "x").values.astype(float)
    pi = as_closure(closure).fields(psi, omega)
    return xr.DataArray(pi, dims=les_ds.omega.transpose(..., "y", "x").dims,
                        coords=les_ds.omega.coords, name="pi",
                        attrs={"long_name": "SGS term of the closure", "units": "1"})


# --------------------------------------------------------------------------- a posteriori study
def select_initial_states(ds: xr.Dataset, count: int) -> xr.DataArray:
    """``count`` filtered vorticity fields spread evenly over the samples of LES data.

    Parameters
    ----------
    ds : Dataset
        LES data with ``omega`` on ``(member, time, y, x)`` or ``(time, y, x)``
        (e.g. a flow's held-out test times).
    count : int
        How many (>= 1, at most the number of samples).

    Returns
    -------
    xarray.DataArray
        ``omega`` on ``(initial_state, y, x)`` with the samples' ``time`` (and
        ``member``) along ``initial_state``.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    lead = [d for d in ("member", "time") if d in ds.omega.dims]
    sizes = [ds.sizes[d] for d in lead]
    total = int(np.prod(sizes))
    if count > total:
        raise ValueError(f"count={count} initial states asked for, but the data hold {total} "
                         f"samples ({dict(zip(lead, sizes))})")
    flat = np.round(np.linspace(0, total - 1, count)).astype(int)
    picks = np.unravel_index(flat, sizes)
    omega = ds.omega.transpose(*lead, "y", "x")
    values = np.stack([omega[tuple(int(i[j]) for i in picks)].values for j in range(count)])
    coords = {"initial_state": np.arange(count), "y": ds.y, "x": ds.x}
    coords.update({d: ("initial_state", ds[d].values[i]) for d, i in zip(lead, picks)})
    return xr.DataArray(values, dims=("initial_state", "y", "x"), coords=coords, name="omega",
                        attrs=ds.omega.attrs)


def _backends_of(closure) -> set:
    return as_closure(closure).backends()


def aposteriori_run(case: Case, closure, initial, fdns: xr.Dataset,
                    schedule: LesSchedule | None = None, **schedule_kwargs) -> xr.Dataset:
    """One a posteriori run and its :func:`les_metrics` (a blow-up is a result).

    Runs on a dask worker in :func:`run_aposteriori` (it then pins a network
    closure's backend to the worker's threads first).

    Parameters
    ----------
    case : Case
        The DNS case of the flow.
    closure : Closure, callable or None
    initial : array or DataArray
        Filtered vorticity on the LES grid.
    fdns : Dataset
        The filtered DNS to compare with (with ``pi`` for the energy transfer).
    schedule : xtl.options.LesSchedule or dict, optional
        ``t_end``, ``save_interval`` and ``dt`` of the run.
    **schedule_kwargs
        Single schedule options (``t_end=``, ``save_interval=``, ``dt=``),
        merged into ``schedule`` (:meth:`xtl.options.Options.merge`).

    Returns
    -------
    xarray.Dataset
        :func:`les_metrics` with ``stable``, ``blowup_time`` and ``wall_seconds``
        as variables.
    """
    import time

    from .nn.backends import pin_worker_threads

    schedule = LesSchedule.merge(schedule, **schedule_kwargs)
    pin_worker_threads(_backends_of(closure))
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # a blow-up overflows on its way
        run = run_les(case, closure, initial=initial, t_end=schedule.t_end,
                      save_interval=schedule.save_interval, dt=schedule.dt, keep_blowup=True,
                      progress=False)
    seconds = time.perf_counter() - start
    run["pi"] = closure_fields(closure, run)
    metrics = les_metrics(run, fdns)
    for key in ("stable", "blowup_time"):
        metrics[key] = xr.DataArray(metrics.attrs.pop(key))
    metrics["stable"].attrs.update(long_name="1: the run did not blow up", units="1")
    metrics["blowup_time"].attrs.update(long_name="time of the blow-up (NaN: stable)",
                                        units="1")
    metrics["wall_seconds"] = _scalar(seconds, "wall time of the LES run", "s")
    return metrics


def run_aposteriori(case: Case, closures: dict, initials: xr.DataArray, fdns: xr.Dataset,
                    schedule: LesSchedule | None = None, *, client=None, progress=None,
                    **schedule_kwargs) -> xr.Dataset:
    """LES with every closure from every initial state, against the filtered DNS.

    One task per (closure, initial state), on ``client`` when given (network
    closures first: they take longest), else one after the other here. A run
    that blows up is recorded as unstable with its blow-up time; the other runs
    are kept.

    Parameters
    ----------
    case : Case
        The DNS case of the flow (the LES runs on its ``n_les`` grid).
    closures : dict
        ``{label: closure}``; a closure is a callable, a :class:`Closure` or
        None (no closure). Closures are pickled to the workers.
    initials : xarray.DataArray
        ``omega`` on ``(initial_state, y, x)`` (:func:`select_initial_states`).
    fdns : Dataset
        The filtered DNS (``psi``, ``omega``, ``pi``; any leading dims).
    schedule : xtl.options.LesSchedule or dict, optional
        ``t_end`` and ``save_interval`` of each run (finite, > 0) and the LES
        time step ``dt`` (default None: the DNS's CFL number, :func:`les_case`).
    client : distributed.Client, optional
    progress : bool, optional
    **schedule_kwargs
        Single schedule options, merged into ``schedule``:
        ``run_aposteriori(..., t_end=5.0, save_interval=0.5, dt=None)`` works
        as before.

    Returns
    -------
    xarray.Dataset
        :func:`les_metrics` over ``(closure, initial_state)`` (the filtered DNS's
        variables without these dims; runs that blew up padded with NaN in
        ``time``), ``stable``, ``blowup_time`` and ``wall_seconds`` per run;
        attrs ``t_end``, ``save_interval``, ``dt`` (NaN: the default),
        ``turnover_time`` of the filtered DNS (:func:`large_eddy_turnover_time`)
        and ``turnovers``, how many of them a run lasts.

    Raises
    ------
    ValueError
        No closures, ``initials`` without ``initial_state``, or a schedule
        option out of range.
    TypeError
        An unknown schedule option.
    """
    schedule = LesSchedule.merge(schedule, **schedule_kwargs)
    if not closures:
        raise ValueError("closures must name at least one closure, {label: closure}")
    if "initial_state" not in initials.dims:
        raise ValueError(f"initials must have an 'initial_state' dim (select_initial_states), "
                         f"got dims {initials.dims}")
    labels = list(closures)
    order = sorted(range(len(labels)), key=lambda i: not _backends_of(closures[labels[i]]))
    fields = [initials.isel(initial_state=j).transpose("y", "x").values
              for j in range(initials.sizes["initial_state"])]
    jobs = {(labels[i], j): (case, closures[labels[i]], field)
            for i in order for j, field in enumerate(fields)}
    fdns = fdns[[v for v in ("psi", "omega", "pi") if v in fdns]].load()
    results = _run_jobs(jobs, fdns, schedule, client, progress)
    out = _combine_runs(results, labels, initials, schedule.to_dict())
    turnover = large_eddy_turnover_time(case, float(out.mean_energy_fdns))
    out.attrs.update(turnover_time=turnover, turnovers=schedule.t_end / turnover)
    return out


def _run_jobs(jobs: dict, fdns: xr.Dataset, schedule: LesSchedule, client, progress) -> dict:
    """``{key: aposteriori_run(case, closure, field, fdns, schedule)}`` for ``jobs``
    ``{key: (case, closure, field)}``: here one after the other, or on ``client`` as
    tasks prioritized in the order of ``jobs`` (the filtered DNS scattered once)."""
    from ._progress import run_calls

    shared = fdns if client is None else client.scatter(fdns, broadcast=True)
    calls = {key: (*job, shared, schedule) for key, job in jobs.items()}
    return run_calls(aposteriori_run, calls, client=client, progress=progress,
                     desc="a posteriori", unit="run")


def large_eddy_turnover_time(case: Case, energy: float) -> float:
    """``(2π/kf) / u_rms``, with ``u_rms = √⟨u² + v²⟩ = √(2E)``: the forcing scale's turnover.

    Parameters
    ----------
    case : Case
        Its forcing wavenumber ``kf`` sets the large-eddy scale.
    energy : float
        Mean kinetic energy E = ½⟨u² + v²⟩ of the flow (> 0).

    Returns
    -------
    float
    """
    if not (np.isfinite(energy) and energy > 0):
        raise ValueError(f"energy must be a finite number > 0, got {energy!r}")
    return 2 * math.pi / case.kf / math.sqrt(2 * energy)


def _combine_runs(results: dict, labels: list, initials: xr.DataArray, kwargs: dict):
    first = results[labels[0], 0]
    fdns_vars = [v for v in first.data_vars if v.endswith("_fdns")]
    rows = [[results[label, j].drop_vars(fdns_vars) for j in range(initials.sizes["initial_state"])]
            for label in labels]
    out = xr.combine_nested(rows, concat_dim=["closure", "initial_state"], join="outer",
                            combine_attrs="drop_conflicts")
    out = out.assign_coords(closure=labels, initial_state=initials.initial_state.values)
    out = out.transpose("closure", "initial_state", ...)
    extra = {c: initials[c] for c in initials.coords if c not in ("initial_state", "y", "x")
             and initials[c].dims == ("initial_state",)}
    out = out.assign_coords({f"initial_{c}": ("initial_state", v.values) for c, v in extra.items()})
    for v in fdns_vars:
        out[v] = first[v]
    out.attrs.pop("closure", None)
    out.attrs.update({k: (np.nan if v is None else v) for k, v in kwargs.items()})
    return out


def aposteriori_summary(ds: xr.Dataset) -> xr.Dataset:
    """Means and spreads over initial states of :func:`run_aposteriori`'s metrics.

    Statistics of a closure are taken over its stable runs, or over all its
    runs (up to their blow-ups) when none was stable.

    Parameters
    ----------
    ds : Dataset
        :func:`run_aposteriori`'s output.

    Returns
    -------
    xarray.Dataset
        Over ``closure``: ``n_runs``, ``n_stable``, ``first_blowup`` (earliest
        blow-up time, NaN if none), and for every metric ``<name>_mean`` and
        ``<name>_std`` (the sample standard deviation over the initial states
        used; NaN for one) — scalars, spectra, PDFs and tails alike.
    """
    if "initial_state" not in ds.dims or "stable" not in ds:
        raise ValueError("ds must be run_aposteriori's output (dims closure, initial_state)")
    stable = ds.stable.astype(bool)
    use = stable | ~stable.any("initial_state")
    out = xr.Dataset(coords={"closure": ds.closure})
    out["n_runs"] = ds.stable.count("initial_state")
    out["n_stable"] = stable.sum("initial_state")
    out["first_blowup"] = ds.blowup_time.min("initial_state")
    skip = {"stable", "blowup_time", "kinetic_energy", "enstrophy"}
    for name, da in ds.data_vars.items():
        if name in skip or "initial_state" not in da.dims:
            continue
        picked = da.where(use)
        out[f"{name}_mean"] = picked.mean("initial_state")
        out[f"{name}_std"] = picked.std("initial_state", ddof=1)
    return out
