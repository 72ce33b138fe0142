"""xtl's :class:`Model`: one trained network, framework-neutral, and the model as a Dataset.

A :class:`Model` holds the backend's name, the native object, the spec, the
normalization and the provenance, so that analysis code never touches a
deep-learning framework. :func:`model_to_dataset` / :func:`model_from_dataset`
turn it into the model-as-Dataset schema ``kernel(layer, channel_out,
channel_in, tap_y, tap_x)`` and ``bias(layer, channel_out)`` and back
(:mod:`xtl.nn.dataset`; docs/training.md, "The model as data").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from .backends.base import get_backend
from .spec import NetworkSpec, Variables

__all__ = ["Model", "model_to_dataset", "model_from_dataset", "model_id"]


@dataclass(eq=False)
class Model:
    """A trained (or freshly built) closure network, framework-neutral.

    Parameters
    ----------
    backend : str
        Registered name of the backend that owns ``native``.
    native : object
        The framework's model object (a ``keras.Model`` for ``"keras"``).
    spec : NetworkSpec
        The architecture.
    normalization : dict
        Training-set standard deviations per variable (``{"psi": s, "omega": s,
        "pi": s}`` by default): inputs are divided by theirs, each output
        channel is multiplied by its variable's.
    provenance : dict
        Where the model comes from (training case, sample count, base model,
        re-trained layers, seed, ...); JSON-safe values.
    history : xarray.Dataset, optional
        Training history over ``epoch`` (``loss``, ``val_loss``, ``epoch_time``).
    variables : Variables
        The input and output variables and the channel dim (default ψ̄, ω̄ → Π).

    Notes
    -----
    A backend keeps its framework state of a model (compiled functions, the
    optimizer) itself, not here, so that a Model pickles (to dask workers) and
    deep-copies like plain data.
    """

    backend: str
    native: Any
    spec: NetworkSpec
    normalization: dict
    provenance: dict = field(default_factory=dict)
    history: xr.Dataset | None = None
    variables: Variables = field(default_factory=Variables)

    @property
    def n_layers(self) -> int:
        """Number of conv layers ``L``."""
        return self.spec.n_layers

    @property
    def n_les(self) -> int | None:
        """The LES grid the network was trained on (``provenance["grid"]``, square),
        or None when unknown (a network not trained by xtl)."""
        grid = (self.provenance or {}).get("grid")
        if isinstance(grid, (list, tuple)) and len(grid) == 2 and grid[0] == grid[1]:
            return int(grid[0])
        return None

    @property
    def levels(self) -> int:
        """Entries of the channel dim (1 without one)."""
        return self.variables.levels(self.spec)

    def predict(self, *inputs, batch_size: int = 32) -> np.ndarray:
        """The outputs in physical units from physical inputs (see :meth:`Backend.predict`)."""
        return get_backend(self.backend).predict(self, *inputs, batch_size=batch_size)

    def to_dataset(self) -> xr.Dataset:
        """The model as a Dataset (see :func:`model_to_dataset`)."""
        return model_to_dataset(self)

    def to_keras(self):
        """The network as a plain ``keras.Model`` (channels-last ``(sample, y, x, c)``,
        normalized inputs and outputs), independent of this model.

        An imported network comes back with its batch normalizations folded into its
        convolutions. Periodic and reflect padding are xtl's Keras layers
        ``PeriodicPad2D`` / ``ReflectPad2D`` (registered serializable).
        """
        return model_from_dataset(model_to_dataset(self), backend="keras").native

    def to_torch(self):
        """The network as a ``torch.nn.Sequential`` of ``Conv2d`` and activation modules
        (channels-first ``(sample, c, y, x)``, normalized inputs and outputs),
        independent of this model; needs ``pip install "xtl[torch]"``."""
        return model_from_dataset(model_to_dataset(self), backend="torch").native

    def save(self, path, *, overwrite: bool = False) -> tuple:
        """Save natively and as netCDF beside it: :func:`xtl.nn.files.save_model`
        (its parameters, return value and errors)."""
        from .files import save_model  # files.py builds on this module (same rank)

        return save_model(self, path, overwrite=overwrite)


def model_to_dataset(model: Model) -> xr.Dataset:
    """The model as a labeled Dataset (xtl's model schema).

    Returns
    -------
    xarray.Dataset
        ``kernel(layer, channel_out, channel_in, tap_y, tap_x)`` and
        ``bias(layer, channel_out)`` (float32, NaN-padded where a layer has
        fewer channels), coordinates ``n_channels_out``/``n_channels_in`` per
        layer, the training history on ``epoch`` when known, and attrs with
        the architecture, the normalization (``norm_std_psi`` ...), the
        provenance and a content hash ``model_id``. Kernels are
        cross-correlations with centred taps (see :mod:`xtl.nn.dataset`).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    return get_backend(model.backend).to_dataset(model)


def model_from_dataset(ds: xr.Dataset, *, backend: str | None = None) -> Model:
    """Rebuild a model from :func:`model_to_dataset`'s output (e.g. read from netCDF).

    Parameters
    ----------
    backend : str, optional
        Backend to rebuild with; default ``ds.attrs["backend"]``.

    Returns
    -------
    Model
        A model that predicts identically to the one ``ds`` was made from
        (optimizer state is not part of the Dataset).
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"ds must be an xarray.Dataset, got {type(ds).__name__}")
    name = backend or ds.attrs.get("backend")
    if not name:
        raise ValueError("ds.attrs has no 'backend'; pass backend='keras' (or another name)")
    return get_backend(name).from_dataset(ds)


def model_id(model: Model) -> str:
    """A short content hash of the model's weights, spec and normalization: 16 hex
    digits, equal for models with bitwise equal weights, spec and normalization."""
    return model_to_dataset(model).attrs["model_id"]
