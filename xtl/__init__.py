"""xtl: explainable transfer learning of neural-network subgrid-scale closures.

Importing :mod:`xtl` registers the ``.tl`` accessors on xarray objects. It
does not import TensorFlow; the Keras backend loads it when first used.
"""
__version__ = "0.1.0"

from . import accessors  # noqa: F401  (registers ds.tl / da.tl)
from .cases import Case, get_case, list_cases
from .solver import DivergenceError, SpectralGrid, simulate
from .spectral import (
    classify_filters,
    classify_kernels,
    filter_census,
    kernel_change,
    kernel_filters,
    radial_profile,
    spectrum,
    transfer_spectrum,
)

__all__ = [
    "Case",
    "get_case",
    "list_cases",
    "SpectralGrid",
    "simulate",
    "DivergenceError",
    "spectrum",
    "transfer_spectrum",
    "kernel_filters",
    "radial_profile",
    "classify_filters",
    "classify_kernels",
    "filter_census",
    "kernel_change",
]
