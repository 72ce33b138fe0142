r"""The vorticity equation of forced β-plane 2D turbulence and its time stepper.

.. math::

    \partial_t\omega + N(\omega,\psi) + \beta v
        = \tfrac{1}{Re}\nabla^2\omega - \mu\omega + F - \Pi,
    \qquad \nabla^2\psi = -\omega,

with :math:`u = \partial_y\psi`, :math:`v = -\partial_x\psi` and
:math:`N(\omega,\psi) = u\,\partial_x\omega + v\,\partial_y\omega`. The
closure term :math:`\Pi` is zero in a DNS; an LES passes a closure
(:mod:`xtl.physics.closures`), which reads Π̂ from the state: ``closure.pi_hat(omega_hat, grid)``.

Time stepping is AB2 for the explicit terms :math:`T = -N - \beta v + F - \Pi`
and Crank–Nicolson for the linear terms :math:`L = -k^2/Re - \mu`:

.. math::

    \hat\omega^{n+1} = \frac{1 + \Delta t L/2}{1 - \Delta t L/2}\hat\omega^n
        + \frac{\Delta t}{1 - \Delta t L/2}\left(\tfrac32 T^n - \tfrac12 T^{n-1}\right).

The first step (no :math:`T^{n-1}` yet) is a Heun (RK2) predictor–corrector
with the same Crank–Nicolson factor, so the scheme is second order from the
start and conserves energy and enstrophy to O(Δt³) per step from step one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..physics.closures import as_closure
from ..physics.fourier import HAVE_NUMBA, Jacobian, SpectralGrid, float_view, numba, resolve_kernels

__all__ = [
    "FORCINGS",
    "register_forcing",
    "forcing_field",
    "random_initial_condition",
    "Stepper",
    "SolverState",
    "nonlinear_term",
]


# --------------------------------------------------------------------------- forcing
def _cosine_forcing(grid: SpectralGrid, kf: float) -> np.ndarray:
    """F = kf [cos(kf x) + cos(kf y)]."""
    x = grid.x[None, :]
    y = grid.y[:, None]
    return kf * (np.cos(kf * x) + np.cos(kf * y))


def _no_forcing(grid: SpectralGrid, kf: float) -> np.ndarray:
    return np.zeros((grid.n, grid.n))


#: Registered forcings: name -> ``f(grid, kf) -> F`` on the physical grid.
FORCINGS: dict[str, Callable] = {"cosine": _cosine_forcing, "none": _no_forcing}


def register_forcing(name: str, func: Callable) -> None:
    """Register a forcing under ``name`` (cases refer to forcings by name).

    Parameters
    ----------
    name : str
        The name a :class:`~xtl.Case` gives as ``forcing``.
    func : callable
        ``func(grid, kf) -> ndarray (n, n)``: the physical forcing field F.
    """
    if not callable(func):
        raise TypeError(f"func must be callable, got {func!r}")
    FORCINGS[str(name)] = func


def forcing_field(grid: SpectralGrid, name: str, kf: float) -> np.ndarray:
    """The physical forcing field ``F`` of the forcing called ``name``.

    Parameters
    ----------
    name : str
        A registered forcing (:data:`FORCINGS`).
    kf : float
        Forcing wavenumber.

    Returns
    -------
    ndarray
        ``F`` on the grid, shape ``(n, n)``.
    """
    if name not in FORCINGS:
        raise ValueError(f"forcing must be one of {sorted(FORCINGS)}, got {name!r}")
    field = np.asarray(FORCINGS[name](grid, kf), dtype=float)
    if field.shape != (grid.n, grid.n):
        raise ValueError(
            f"forcing {name!r} returned shape {field.shape}, expected ({grid.n}, {grid.n})"
        )
    return field


# --------------------------------------------------------------------------- initial condition
def random_initial_condition(
    grid: SpectralGrid, seed: int, peak: float = 10.0, energy: float = 0.5
) -> np.ndarray:
    """A random-phase vorticity field with energy spectrum ∝ k⁴ exp(−(k/kp)²).

    Parameters
    ----------
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed gives the same field.
    peak : float
        ``kp``; the spectrum peaks at ``k = sqrt(2)·kp``.
    energy : float
        Kinetic energy ``½⟨u²+v²⟩`` of the result.

    Returns
    -------
    ndarray
        ω̂, the (dealiased, zero-mean) spectral vorticity.
    """
    rng = np.random.default_rng(seed)
    k = np.sqrt(grid.k2)
    # E(k) ~ k^4 exp(-(k/kp)^2) spread over ~2πk modes of a shell, each with
    # energy ½ k² |ψ̂|²  =>  |ψ̂|² ~ k exp(-(k/kp)^2).
    amplitude = np.sqrt(k * np.exp(-((k / peak) ** 2)))
    phase = rng.uniform(0.0, 2 * np.pi, size=grid.spectral_shape)
    psi_hat = amplitude * np.exp(1j * phase)
    # project onto real fields (Hermitian symmetry on the kx = 0 column)
    psi_hat = grid.rfft2(grid.irfft2(psi_hat)) * grid.mask
    omega_hat = grid.k2 * psi_hat
    current = grid.energy(omega_hat)
    if current > 0:
        omega_hat *= math.sqrt(energy / current)
    return omega_hat


# --------------------------------------------------------------------------- state
@dataclass
class SolverState:
    """Everything needed to continue a run bit for bit.

    Attributes
    ----------
    omega_hat : ndarray
        Spectral vorticity (unnormalized rfft2).
    tendency_prev : ndarray or None
        The explicit tendency ``T`` of the previous step (AB2 memory); None
        before the first step.
    step : int
        Steps taken; the time is ``step · dt``.
    """

    omega_hat: np.ndarray
    tendency_prev: Optional[np.ndarray]
    step: int = 0

    def copy(self) -> "SolverState":
        """A deep copy."""
        return SolverState(
            self.omega_hat.copy(),
            None if self.tendency_prev is None else self.tendency_prev.copy(),
            self.step,
        )


# --------------------------------------------------------------------------- stepper
def nonlinear_term(grid: SpectralGrid, omega_hat: np.ndarray) -> np.ndarray:
    """N̂ = FFT[u ∂ω/∂x + v ∂ω/∂y] of ω̂ on the grid's kept modes.

    The 4-FFT form of :class:`xtl.physics.fourier.Jacobian` (the solver's), with ψ̂ = ω̂/k².

    Parameters
    ----------
    omega_hat : ndarray
        Spectral vorticity ``(..., n, n//2 + 1)``.

    Returns
    -------
    ndarray
        The unnormalized spectrum of N(ω, ψ), zero outside the grid's mask.
    """
    return grid.advection(omega_hat)


if HAVE_NUMBA:  # pragma: no branch

    @numba.njit(cache=True, nogil=True, error_model="numpy")
    def _ab2_cn_nb(P, Q, w, tprev, F, pi, modes, coef):  # pragma: no cover
        """One fused pass: N̂ from the products' spectra, T, and the AB2–CN update.

        Complex arrays come as float64 views ``(n, 2m)`` (real and imaginary parts side by
        side); the operations are numpy's, in numpy's order. ``F`` (forcing) and ``pi``
        (closure) may be None (compiled away). ``modes`` is ``(ky, kx, kmax)``, ``coef``
        ``[β, ν, μ, dt]``. Only the kept modes (``|ky|, kx <= kmax``) are touched:
        elsewhere ω̂ and the stored tendency stay 0.

        The Crank–Nicolson and β factors of a mode are computed here, not read from
        per-mode arrays made once: from n = 512 on this pass is memory-bound, and three
        more float64 planes made it 7–12 % slower (faster by as much below n = 256).
        """
        ky, kx, kmax = modes
        beta, nu, mu, dt = coef[0], coef[1], coef[2], coef[3]
        n = w.shape[0]
        for i in range(n):
            kyi = ky[i]
            if abs(kyi) > kmax:
                continue
            for j in range(kmax + 1):
                kxj = kx[j]
                k2 = kxj * kxj + kyi * kyi
                a = kyi * kyi - kxj * kxj
                b = kxj * kyi
                re, im = 2 * j, 2 * j + 1
                wr, wi = w[i, re], w[i, im]
                tr = -(a * P[i, re] - b * Q[i, re])
                ti = -(a * P[i, im] - b * Q[i, im])
                if F is not None:
                    tr += F[i, re]
                    ti += F[i, im]
                c = beta * kxj * (1.0 / max(k2, 1.0))  # kx = 0 at k = 0: no 1/0
                tr += -c * wi
                ti += c * wr
                if pi is not None:
                    tr -= pi[i, re]
                    ti -= pi[i, im]
                lin = -nu * k2 - mu
                denom = 1.0 - 0.5 * dt * lin
                keep = (1.0 + 0.5 * dt * lin) / denom
                gain = dt / denom
                w[i, re] = keep * wr + gain * (1.5 * tr - 0.5 * tprev[i, re])
                w[i, im] = keep * wi + gain * (1.5 * ti - 0.5 * tprev[i, im])
                tprev[i, re] = tr
                tprev[i, im] = ti


class Stepper:
    """AB2–Crank–Nicolson stepper of the vorticity equation on one grid.

    Parameters
    ----------
    grid : SpectralGrid
    dt : float
        Time step.
    nu : float
        Viscosity ``1/Re``.
    mu : float
        Linear drag.
    beta : float
        β-plane parameter.
    forcing : ndarray, optional
        Physical forcing field ``F`` (n, n); None for no forcing.
    closure : Closure or callable, optional
        A :class:`~xtl.physics.closures.Closure` (``closure.pi_hat(omega_hat, grid)``)
        or a plain ``closure(psi, omega) -> Pi`` on the physical grid (wrapped by
        :func:`~xtl.physics.closures.as_closure`); it must accept ``grid``
        (:meth:`~xtl.physics.closures.Closure.check_grid`). The equation carries
        ``−Π``. None for a DNS.
    kernels : {"auto", "numba", "numpy"}
        The elementwise work of a step fused and compiled with numba (one pass for
        N̂, the tendency and the AB2–CN update), or numpy's passes; the two give the
        same numbers to round-off. ``"auto"``: numba when it imports.

    Notes
    -----
    A step costs 4 FFTs (:class:`xtl.physics.fourier.Jacobian`: u and v inverse, uv and
    v² − u² forward); a plain-callable closure adds 2 inverse and 1 forward. The state only ever
    holds the kept modes of the 2/3 rule (the tendency kept for AB2 too).
    """

    def __init__(self, grid, dt, nu=0.0, mu=0.0, beta=0.0, forcing=None, closure=None,
                 kernels="auto"):
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a finite number > 0, got {dt}")
        closure = None if closure is None else as_closure(closure)
        if closure is not None:
            closure.check_grid(grid)
        self.grid = grid
        self.dt = float(dt)
        self.nu, self.mu, self.beta = float(nu), float(mu), float(beta)
        self.closure = closure
        self.kernels = resolve_kernels(kernels)
        g = grid
        self.jacobian = Jacobian(g, self.kernels)
        # −βv̂ = iβ kx ω̂ / k²
        self._beta_mult = (self.beta * g.kx * g.inv_k2 + 0 * g.ky) if self.beta else None
        self._beta_i = None if self._beta_mult is None else 1j * self._beta_mult
        if forcing is None:
            self._forcing_hat = None
        else:
            self._forcing_hat = g.rfft2(forcing) * g.mask
        lin = -self.nu * g.k2 - self.mu
        denom = 1.0 - 0.5 * self.dt * lin
        self._cn_keep = (1.0 + 0.5 * self.dt * lin) / denom * g.mask
        self._cn_gain = self.dt / denom * g.mask
        self._forcing_floats = None if forcing is None else float_view(self._forcing_hat)
        # the fused pass's arguments
        self._modes = (self.jacobian.ky, self.jacobian.kx, int(g.kmax))
        self._coef = np.array([self.beta, self.nu, self.mu, self.dt])
        # scratch of the numpy step: the tendency, and a product
        self._work = np.empty(g.spectral_shape, dtype=complex)
        self._scratch = np.empty(g.spectral_shape, dtype=complex)
        self.last_cfl = float("nan")

    # -- the explicit tendency ------------------------------------------------
    def tendency(self, omega_hat: np.ndarray, out=None, measure_cfl=False) -> np.ndarray:
        """The explicit tendency ``T = −N̂ − βv̂ + F̂ − Π̂`` of ω̂ on the kept modes.

        Parameters
        ----------
        omega_hat : ndarray
            Spectral vorticity.
        out : ndarray, optional
            Where to write T, which is returned (a new array by default); zero outside
            the grid's mask.
        measure_cfl : bool
            Also set :attr:`last_cfl` ``= dt·(max|u| + max|v|)/dx``.
        """
        out = np.empty(self.grid.spectral_shape, dtype=complex) if out is None else out
        self._nonlinear_products(omega_hat, measure_cfl)
        pi_hat = self._closure_hat(omega_hat) if self.closure is not None else None
        self._assemble(omega_hat, pi_hat, out)
        out *= self.grid.mask
        return out

    def _assemble(self, omega_hat, pi_hat, out):
        """T from the Jacobian's transformed products (numpy; the reference of the fused pass).

        Zero outside the kept modes where ``omega_hat`` is (the state always is): the
        products' spectrum, the forcing and the closure's Π̂ are.
        """
        nonlinear = self.jacobian.combine(out)
        np.negative(nonlinear, out=out)
        if self._forcing_hat is not None:
            out += self._forcing_hat
        if self._beta_i is not None:
            out += np.multiply(self._beta_i, omega_hat, out=self._scratch)
        if pi_hat is not None:
            out -= pi_hat
        return out

    def cfl(self, omega_hat: np.ndarray) -> float:
        """The CFL number ``dt·(max|u| + max|v|)/dx`` of ω̂ (also kept in :attr:`last_cfl`)."""
        jac = self.jacobian
        jac.load(omega_hat, jac.omega_multiplier)
        umax, vmax = jac.products(True)
        self.last_cfl = float(self.dt * (umax + vmax) / self.grid.dx)
        return self.last_cfl

    def _nonlinear_products(self, omega_hat, measure_cfl):
        """The Jacobian's FFTs and products for ω̂ (leaves FFT(uv), FFT(v²−u²) in its plans)."""
        jac = self.jacobian
        jac.load(omega_hat, jac.omega_multiplier)
        umax, vmax = jac.products(measure_cfl)
        if measure_cfl:
            self.last_cfl = float(self.dt * (umax + vmax) / self.grid.dx)
        jac.transform()

    def _closure_hat(self, omega_hat):
        """Π̂ of the closure from the spectral state, on the kept modes."""
        pi_hat = np.asarray(self.closure.pi_hat(omega_hat, self.grid))
        if pi_hat.shape != omega_hat.shape:
            raise ValueError(f"closure {self.closure!r} returned a spectrum of shape "
                             f"{pi_hat.shape}; expected {omega_hat.shape}")
        return pi_hat * self.grid.mask

    # -- stepping ----------------------------------------------------------------
    def step(self, state: SolverState, measure_cfl=False) -> SolverState:
        """Advance ``state`` by one AB2–CN step (Heun for the first) in place.

        Parameters
        ----------
        measure_cfl : bool
            Measure the CFL number of the state before the step (:attr:`last_cfl`).
        """
        if state.tendency_prev is None:
            self._heun_first_step(state, self.tendency(state.omega_hat, measure_cfl=measure_cfl))
            state.step += 1
            return state
        w = state.omega_hat
        self._nonlinear_products(w, measure_cfl)
        pi_hat = self._closure_hat(w) if self.closure is not None else None
        jac = self.jacobian
        prev = state.tendency_prev
        if self.kernels == "numba":  # updated in place through float views: C order needed
            if not (w.flags.c_contiguous and prev.flags.c_contiguous):
                state.omega_hat = w = np.ascontiguousarray(w)
                state.tendency_prev = prev = np.ascontiguousarray(prev)
            P, Q = jac.transformed
            _ab2_cn_nb(float_view(P), float_view(Q), float_view(w), float_view(prev),
                       self._forcing_floats, None if pi_hat is None else float_view(pi_hat),
                       self._modes, self._coef)
        else:
            self._ab2_update(w, prev, self._assemble(w, pi_hat, self._work))
            self._work, state.tendency_prev = prev, self._work
        state.step += 1
        return state

    def _ab2_update(self, w, prev, T):
        """``w = keep·w + gain·(1.5 T − 0.5 prev)`` in place, without temporaries
        (``prev`` is overwritten; it becomes the next step's scratch)."""
        diff = np.multiply(T, 1.5, out=self._scratch)
        prev *= 0.5
        diff -= prev
        diff *= self._cn_gain
        w *= self._cn_keep
        w += diff

    def _heun_first_step(self, state, T0):
        w0 = state.omega_hat
        predictor = self._cn_keep * w0 + self._cn_gain * T0
        T1 = self.tendency(predictor)
        state.omega_hat = self._cn_keep * w0 + self._cn_gain * (0.5 * (T0 + T1))
        state.tendency_prev = T0
