"""xtl: explainable transfer learning of neural-network subgrid-scale closures.

Importing :mod:`xtl` registers the ``.tl`` accessors on xarray objects. It
does not import TensorFlow; the Keras backend loads it when first used.
``xtl.les`` is the a posteriori LES module (its run function is
:func:`xtl.run_les`).
"""
from ._version import __version__  # noqa: F401  (read from the installed metadata)
from . import accessors  # noqa: F401  (registers ds.tl / da.tl)
from .nn.backends import (
    Model,
    NetworkSpec,
    available_backends,
    get_backend,
    load_model,
    model_from_dataset,
    model_to_dataset,
    register_backend,
    save_model,
)
from .physics.cases import Case, get_case, list_cases
from .data.coarse import coarse_grain, filter_transfer_function, sgs_term
from .explain.activations import activation_spectra, activations, flow_difference, spectral_change_correlation
from . import les  # noqa: F401  (the module; its run function is run_les)
from .les import les_metrics, run_les
from .explain.recommend import compare_recommendation, recommend_layers
from .options import CoarseGraining, LesSchedule
from .nn.backends.loop import FitOptions
from .solver.options import Output, Schedule
from .data.metrics import conditional_correlation, correlation, relative_l2, score, spectrum_error
from .solver import DivergenceError, SpectralGrid, ensemble, open_ensemble, simulate
from .nn.sweep import SweepOptions, budget_sweep, layer_sweep
from .nn.training import evaluate, predict, train, transfer
from .data.spectral import (
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
    "Model",
    "get_backend",
    "register_backend",
    "available_backends",
    "model_to_dataset",
    "model_from_dataset",
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
    "run_les",
    "les_metrics",
]
