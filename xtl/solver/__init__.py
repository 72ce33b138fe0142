"""Pseudo-spectral solver of forced β-plane 2D turbulence."""
from .equations import (
    SolverState,
    Stepper,
    forcing_field,
    nonlinear_term,
    random_initial_condition,
    register_forcing,
)
from .grid import SpectralGrid, available_fft_backends
from .run import DivergenceError, initial_state, make_stepper, simulate

__all__ = [
    "SpectralGrid",
    "available_fft_backends",
    "Stepper",
    "SolverState",
    "forcing_field",
    "nonlinear_term",
    "random_initial_condition",
    "register_forcing",
    "simulate",
    "DivergenceError",
    "initial_state",
    "make_stepper",
]
