"""The spectral grid: wavenumbers, the dealiasing mask and planned real FFTs.

Conventions (see ``docs/conventions.md``):

* physical arrays have shape ``(..., n, n)`` with axes ``(y, x)`` and points
  ``x_i = i·2π/n``;
* spectral arrays are the unnormalized ``rfft2`` of those, shape
  ``(..., n, n//2 + 1)``: ``ky`` runs over ``fftfreq`` order on axis -2 and
  ``kx = 0..n/2`` on axis -1; the inverse divides by ``n²``.

Two FFT backends give the same numbers to ~1e-15: ``"pyfftw"`` (FFTW plans,
threads) and ``"numpy"`` (``numpy.fft``). ``"auto"`` picks pyfftw when it
imports.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SpectralGrid", "available_fft_backends", "FFTPlan"]

try:  # pragma: no cover - exercised where pyfftw is installed
    import pyfftw

    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _HAVE_PYFFTW = False


def available_fft_backends() -> list[str]:
    """Return the FFT backends that work here (``"numpy"`` always)."""
    return (["pyfftw"] if _HAVE_PYFFTW else []) + ["numpy"]


def _resolve_backend(fft: str) -> str:
    if fft == "auto":
        return "pyfftw" if _HAVE_PYFFTW else "numpy"
    if fft not in ("pyfftw", "numpy"):
        raise ValueError(f"fft must be 'auto', 'pyfftw' or 'numpy', got {fft!r}")
    if fft == "pyfftw" and not _HAVE_PYFFTW:
        raise ImportError("fft='pyfftw' was asked for but pyfftw is not installed")
    return fft


class FFTPlan:
    """Forward and inverse real 2D FFTs of a fixed batch shape, with buffers.

    The plan owns input/output arrays: fill :attr:`real` (shape
    ``(*batch, n, n)``) and call :meth:`forward` to get the unnormalized
    spectrum in :attr:`spec`; fill :attr:`spec` and call :meth:`inverse`
    to get ``n²`` times the field in :attr:`real` (unnormalized, like FFTW;
    callers fold ``1/n²`` into their multipliers). The inverse may overwrite
    :attr:`spec`.

    Parameters
    ----------
    n : int
        Grid points per direction.
    batch : tuple of int
        Leading shape, e.g. ``()`` for one field or ``(4,)`` for four.
    fft : {"pyfftw", "numpy"}
        Backend (already resolved).
    threads : int
        FFTW threads.
    planner : str
        FFTW planner flag. The default ``"FFTW_ESTIMATE"`` picks the same plan
        in every process, so a run restarted in a new process is bit-identical
        to an uninterrupted one; ``"FFTW_MEASURE"`` times candidate plans and
        may pick different ones in different processes (different rounding).
    """

    def __init__(self, n: int, batch=(), fft: str = "numpy", threads: int = 1,
                 planner: str = "FFTW_ESTIMATE"):
        self.n = n
        self.backend = fft
        real_shape = tuple(batch) + (n, n)
        spec_shape = tuple(batch) + (n, n // 2 + 1)
        if fft == "pyfftw":
            self.real = pyfftw.empty_aligned(real_shape, dtype="float64")
            self.spec = pyfftw.empty_aligned(spec_shape, dtype="complex128")
            flags = (planner,)
            self._fwd = pyfftw.FFTW(
                self.real, self.spec, axes=(-2, -1), direction="FFTW_FORWARD",
                flags=flags, threads=threads,
            )
            self._inv = pyfftw.FFTW(
                self.spec, self.real, axes=(-2, -1), direction="FFTW_BACKWARD",
                flags=flags, threads=threads,
            )
        else:
            self.real = np.empty(real_shape, dtype="float64")
            self.spec = np.empty(spec_shape, dtype="complex128")
            self._fwd = self._inv = None

    def forward(self) -> np.ndarray:
        """``spec = rfft2(real)`` (unnormalized); returns :attr:`spec`."""
        if self._fwd is not None:
            self._fwd.execute()
        else:
            self.spec[...] = np.fft.rfft2(self.real)
        return self.spec

    def inverse(self) -> np.ndarray:
        """``real = n² · irfft2(spec)`` (unnormalized); returns :attr:`real`."""
        if self._inv is not None:
            self._inv.execute()
        else:
            self.real[...] = np.fft.irfft2(self.spec, s=(self.n, self.n))
            self.real *= self.n * self.n
        return self.real


class SpectralGrid:
    """A doubly periodic ``n × n`` grid on [0, 2π)² with its wavenumbers.

    Parameters
    ----------
    n : int
        Points per direction; even and ≥ 8.
    dealias : bool, default True
        Whether :attr:`mask` applies the 2/3 rule. With or without it the mask
        removes the mean (k = 0) and the Nyquist modes.
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend.
    threads : int, default 1
        FFTW threads. One is the default because FFTW's threads spin and
        collapse when the cores are shared (dask workers, other jobs): on a
        busy 2-core machine two threads made a 256² step ten times slower.
    planner : {"FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"}
        FFTW planning effort; see :class:`FFTPlan` (only ESTIMATE makes
        restarts in a new process bit-identical).

    Attributes
    ----------
    x, y : ndarray
        Cell points ``i·2π/n``.
    kx, ky : ndarray
        Integer radian wavenumbers, broadcastable to the spectral shape
        ``(n, n//2+1)``.
    k2 : ndarray
        ``kx² + ky²``.
    inv_k2 : ndarray
        ``1/k²`` with 0 at k = 0 (so ψ̂ = ω̂·inv_k2 has zero mean).
    mask : ndarray of float
        1 on kept modes, 0 on removed ones (mean, Nyquist, and with
        ``dealias`` every mode with ``max(|kx|, |ky|) > kmax``).
    kmax : int
        Largest kept wavenumber per direction: ``(n-1)//3`` with dealiasing
        (the 2/3 rule, so that products of kept modes never alias onto kept
        modes), ``n/2 - 1`` without.
    """

    def __init__(self, n: int, dealias: bool = True, fft: str = "auto", threads: int = 1,
                 planner: str = "FFTW_ESTIMATE"):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"n must be an int, got {n!r}")
        if n < 8 or n % 2:
            raise ValueError(f"n must be an even integer >= 8, got {n}")
        self.n = int(n)
        self.dealias = bool(dealias)
        self.fft = _resolve_backend(fft)
        if planner not in ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"):
            raise ValueError(
                f"planner must be 'FFTW_ESTIMATE', 'FFTW_MEASURE' or 'FFTW_PATIENT', got {planner!r}"
            )
        self.planner = planner
        self.threads = int(threads)
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.length = 2 * np.pi
        self.dx = self.length / self.n
        self.x = np.arange(self.n) * self.dx
        self.y = self.x.copy()
        self.kx = np.arange(self.n // 2 + 1, dtype=float)[None, :]
        self.ky = np.fft.fftfreq(self.n, 1.0 / self.n)[:, None]
        self.k2 = self.kx**2 + self.ky**2
        self.inv_k2 = np.divide(1.0, self.k2, out=np.zeros_like(self.k2), where=self.k2 > 0)
        self.kmax = (self.n - 1) // 3 if self.dealias else self.n // 2 - 1
        keep = (np.abs(self.kx) <= self.kmax) & (np.abs(self.ky) <= self.kmax)
        keep &= self.k2 > 0
        self.mask = keep.astype(float)
        self._plans = {}

    @property
    def spectral_shape(self) -> tuple:
        """Shape of one spectral field, ``(n, n//2 + 1)``."""
        return (self.n, self.n // 2 + 1)

    def plan(self, batch=()) -> FFTPlan:
        """Return a (cached) :class:`FFTPlan` for ``batch`` fields at once."""
        batch = tuple(batch)
        if batch not in self._plans:
            self._plans[batch] = FFTPlan(self.n, batch, self.fft, self.threads, self.planner)
        return self._plans[batch]

    def rfft2(self, field: np.ndarray) -> np.ndarray:
        """Unnormalized real FFT over the last two axes (returns a new array)."""
        field = np.asarray(field, dtype=float)
        self._check_physical(field, "field")
        plan = self.plan(field.shape[:-2])
        plan.real[...] = field
        return plan.forward().copy()

    def irfft2(self, spec: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`rfft2` (normalized; returns a new array)."""
        spec = np.asarray(spec, dtype=complex)
        if spec.shape[-2:] != self.spectral_shape:
            raise ValueError(
                f"spec must have trailing shape {self.spectral_shape}, got {spec.shape}"
            )
        plan = self.plan(spec.shape[:-2])
        plan.spec[...] = spec
        return plan.inverse() / (self.n * self.n)

    def _check_physical(self, field, name):
        if field.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"{name} must have trailing shape ({self.n}, {self.n}) (y, x), got {field.shape}"
            )

    def streamfunction(self, omega_hat: np.ndarray) -> np.ndarray:
        """ψ̂ from ω̂ by ∇²ψ = −ω (zero-mean ψ)."""
        return omega_hat * self.inv_k2

    def mode_sums(self, spec: np.ndarray) -> np.ndarray:
        """Σ over all modes of a real-field rfft quantity (counts kx>0 twice).

        ``mode_sums(|f̂|²)/n⁴`` is the spatial mean of ``f²`` (Parseval).
        """
        weights = np.full(self.n // 2 + 1, 2.0)
        weights[0] = 1.0
        weights[-1] = 1.0
        return np.sum(spec * weights, axis=(-2, -1))

    def energy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Kinetic energy ½⟨u² + v²⟩ = ½ Σ k²|ψ̂|² / n⁴."""
        return 0.5 * self.mode_sums(self.k2 * np.abs(omega_hat * self.inv_k2) ** 2) / self.n**4

    def enstrophy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Enstrophy ½⟨ω²⟩ = ½ Σ |ω̂|² / n⁴."""
        return 0.5 * self.mode_sums(np.abs(omega_hat) ** 2) / self.n**4
