"""The spectral grid of the solver: a re-export of :mod:`xtl.physics.fourier` (kept for old imports)."""
from ..physics.fourier import FFTPlan, SpectralGrid, available_fft_backends

__all__ = ["SpectralGrid", "available_fft_backends", "FFTPlan"]
