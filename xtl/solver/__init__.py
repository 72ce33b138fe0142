"""Pseudo-spectral solver of forced β-plane 2D turbulence."""
from .equations import (
    SolverState,
    Stepper,
    forcing_field,
    nonlinear_term,
    random_initial_condition,
    register_forcing,
)
from .options import Cluster, Execution, Output, Schedule
from .grid import SpectralGrid, available_fft_backends
from .run import DivergenceError, initial_state, make_stepper, simulate

# the function shadows its submodule as an attribute of xtl.solver; import the module's
# other names with ``from xtl.solver.ensemble import ...``
from .ensemble import EnsembleError, MemberFailedWarning, ensemble, open_ensemble  # noqa: E402

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
    "Schedule",
    "Output",
    "Execution",
    "Cluster",
    "DivergenceError",
    "initial_state",
    "make_stepper",
    "ensemble",
    "open_ensemble",
    "EnsembleError",
    "MemberFailedWarning",
]
