"""The network closure: a trained model of any backend as a :class:`~xtl.physics.closures.Closure`."""
from __future__ import annotations

import numpy as np

from ..physics.closures import Closure, grid_mismatch
from .backends.base import get_backend
from .model import model_from_dataset, model_to_dataset
from .spec import Variables, stack_channels

__all__ = ["ModelClosure"]


class ModelClosure(Closure):
    """A trained network as a closure: Π = model(ψ̄, ω̄) in physical units.

    :meth:`pi_hat` transforms ψ̂ = ω̂/k² and ω̂ to the physical grid, runs the
    network and transforms Π back. One field (an LES step) runs the backend's
    :meth:`compiled_forward` (for Keras a ``tf.function`` traced once per
    model: an eager call per LES step costs several times the convolutions on
    a small grid); many snapshots run batched (``model.predict``). A
    ModelClosure pickles as its model's Dataset and rebuilds the network on
    its first call, so a dask worker can pin the backend's threads before that.

    Parameters
    ----------
    model : xtl.nn.backends.base.Model
        A network of any backend; its normalization is applied (see :class:`~xtl.nn.model.Model`).

    Attributes
    ----------
    n_les : int or None
        The LES grid the network was trained on (``model.n_les``, from its
        provenance; None: unknown): :meth:`check_grid` refuses any other.
    """

    name = "model"

    def __init__(self, model):
        for attr in ("predict", "normalization"):
            if not hasattr(model, attr):
                raise TypeError(f"model must be an xtl Model (with .{attr}), got {type(model).__name__}")
        variables = getattr(model, "variables", Variables())
        if variables != Variables():
            raise ValueError(
                f"model maps {list(variables.inputs)} -> {list(variables.outputs)}"
                + (f" over the channels of {variables.channels!r}" if variables.channels else "")
                + "; the a posteriori LES is xtl's 2D solver, whose closure is a model of "
                "(psi, omega) -> pi (explain and re-train other models a priori)")
        spec = getattr(model, "spec", None)
        if spec is not None and spec.shrink:
            raise ValueError(f"model has 'valid' layers: its output is {spec.shrink} cells "
                             "smaller than its input on each side, so it cannot close an LES "
                             "on its grid (import it with 'same' or periodic padding)")
        self.normalization = {k: float(v) for k, v in model.normalization.items()}
        self.n_les = model.n_les
        prov = getattr(model, "provenance", {}) or {}
        self.name = (f"{prov.get('kind', 'network')} network "
                     f"({prov.get('training_case', 'unknown case')})")
        self._model, self._dataset, self._forward = model, None, None

    def __repr__(self):
        return f"ModelClosure({self.name!r})"

    @property
    def model(self):
        """The network (rebuilt from its Dataset on first use after unpickling)."""
        if self._model is None:
            self._model = model_from_dataset(self._dataset)
        return self._model

    @property
    def backend(self) -> str:
        """Name of the model's backend (to pin its threads on a worker)."""
        return self._model.backend if self._model is not None else self._dataset.attrs["backend"]

    def backends(self) -> set:
        return {self.backend}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_dataset"] = self._dataset if self._model is None else model_to_dataset(self._model)
        state["_model"] = state["_forward"] = None
        return state

    def check_grid(self, grid):
        """Refuse a grid other than the one the network was trained on (:attr:`n_les`)."""
        if self.n_les is not None and self.n_les != grid.n:
            raise grid_mismatch(self.name, self.n_les, grid)

    def pi_hat(self, omega_hat, grid):
        self.check_grid(grid)
        psi, omega = grid.irfft2(np.stack([grid.streamfunction(omega_hat), omega_hat]))
        if omega.ndim > 2:
            return grid.rfft2(np.asarray(self.model.predict(psi, omega), dtype=float))
        if self._forward is None:
            self._forward = get_backend(self.model.backend).compiled_forward(self.model)
        fields = {"psi": psi[None, None], "omega": omega[None, None]}
        out = self._forward(stack_channels(fields, ("psi", "omega"), self.normalization))[0, ..., 0]
        return grid.rfft2((out * np.float32(self.normalization["pi"])).astype(float))
