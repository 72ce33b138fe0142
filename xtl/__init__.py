"""xtl: explainable transfer learning of neural-network subgrid-scale closures.

Importing :mod:`xtl` registers the ``.tl`` accessors on xarray objects. It
does not import TensorFlow; the Keras backend loads it when first used.
The modules sit in rooms by role: :mod:`xtl.physics` (the mathematics and
the closures), :mod:`xtl.solver` (the 2D turbulence solver and the LES run),
:mod:`xtl.data`, :mod:`xtl.nn`, :mod:`xtl.explain` and :mod:`xtl.experiment`.
"""
from ._version import __version__  # noqa: F401  (read from the installed metadata)
from . import accessors  # noqa: F401  (registers ds.tl / da.tl)
from .nn.model import Model, model_from_dataset, model_to_dataset
from .nn.spec import NetworkSpec, Variables
from .nn.backends.base import available_backends, get_backend, register_backend
from .nn.files import load_model, save_model
from .nn.importers import from_keras, from_torch
from .physics.cases import Case, get_case, list_cases
from .data.coarse import CoarseGraining, coarse_grain, filter_transfer_function, sgs_term
from .explain.activations import activation_spectra, activations, flow_difference, spectral_change_correlation
from .explain.recommend import compare_recommendation, recommend_layers
from .explain.benchmark import benchmark_recommenders
from .nn.backends.loop import FitOptions
from .solver.options import Output, Schedule
from .data.metrics import (conditional_correlation, correlation, les_metrics, relative_l2, score,
                           spectrum_error)
from .solver import DivergenceError, SpectralGrid, ensemble, open_ensemble, simulate
from .solver.les import LesSchedule, run_les
from .nn.sweep import SweepOptions, budget_sweep, layer_sweep
from .nn.training import evaluate, predict, train, transfer
from .data.spectra import spectrum, transfer_spectrum
from .explain.kernels import (
    classify_filters,
    classify_kernels,
    filter_census,
    kernel_change,
    kernel_filters,
    radial_profile,
)

__all__ = [
    "Case",
    "get_case",
    "list_cases",
    "SpectralGrid",
    "simulate",
    "ensemble",
    "open_ensemble",
    "coarse_grain",
    "filter_transfer_function",
    "sgs_term",
    "DivergenceError",
    "spectrum",
    "transfer_spectrum",
    "kernel_filters",
    "radial_profile",
    "classify_filters",
    "classify_kernels",
    "filter_census",
    "kernel_change",
    "FitOptions",
    "SweepOptions",
    "CoarseGraining",
    "Schedule",
    "Output",
    "LesSchedule",
    "NetworkSpec",
    "Variables",
    "Model",
    "get_backend",
    "register_backend",
    "available_backends",
    "model_to_dataset",
    "model_from_dataset",
    "from_keras",
    "from_torch",
    "save_model",
    "load_model",
    "train",
    "transfer",
    "layer_sweep",
    "budget_sweep",
    "predict",
    "evaluate",
    "correlation",
    "conditional_correlation",
    "relative_l2",
    "spectrum_error",
    "score",
    "activations",
    "activation_spectra",
    "flow_difference",
    "spectral_change_correlation",
    "recommend_layers",
    "compare_recommendation",
    "benchmark_recommenders",
    "run_les",
    "les_metrics",
]
