"""Bring your own network: :func:`from_keras` and :func:`from_torch` make an xtl
:class:`~xtl.nn.model.Model` of a trained Keras or PyTorch CNN; :func:`convert` moves a
model to another backend (:meth:`Model.to_keras <xtl.nn.model.Model.to_keras>`,
:meth:`Model.to_torch <xtl.nn.model.Model.to_torch>`).

The network must be a chain of 2D convolutions (stride 1, any odd kernel size per
layer, with or without bias, padding zeros/'same', circular, reflect or 'valid'),
each optionally followed by an inference-mode batch normalization, which is folded
into it, and an activation. See docs/own-network.md.
"""
from __future__ import annotations

from .backends.base import get_backend
from .importing import import_variables
from .model import Model, model_from_dataset, model_to_dataset

__all__ = ["from_keras", "from_torch", "convert"]


def from_keras(model, *, inputs=None, outputs=None, normalization=None,
               channels=None) -> Model:
    """An xtl Model of a trained Keras 3 model (Sequential or functional).

    Parameters
    ----------
    model : keras.Model
        Its learnable layers must be ``Conv2D`` (stride 1, no dilation or groups,
        odd square kernels, ``padding="same"`` or ``"valid"``); ``BatchNormalization``
        right after a convolution is folded into it; activations (a Conv2D's own,
        ``Activation``, ``ReLU``, ``LeakyReLU``, ``ELU``) are read; ``ZeroPadding2D``
        and xtl's periodic and reflect padding layers before a ``"valid"`` convolution
        become its padding. Layers are numbered 1..L from the input.
    inputs, outputs : str or sequence of str
        The variables it maps, in channel order (default ψ̄, ω̄ → Π).
    normalization : mapping
        A standard deviation per variable (inputs and outputs), as the network was
        trained: xtl divides the inputs by theirs and multiplies the outputs by theirs.
        Required.
    channels : str, optional
        A dim of the data whose entries are channels (e.g. ``"lev"``).

    Returns
    -------
    Model
        On the ``"keras"`` backend, rebuilt as xtl's network with the (folded) weights;
        ``provenance`` holds ``kind="imported"``, the folded batch normalizations and
        ``import_error``, the largest relative difference of its output from ``model``'s.

    Raises
    ------
    ValueError
        ``normalization`` missing; a layer xtl cannot represent (named); channels that do
        not fit the variables; an output that differs from ``model``'s (the network is
        not a chain of its layers).
    """
    variables, normalization = import_variables(inputs, outputs, channels, normalization)
    return get_backend("keras").from_native(model, variables, normalization)


def from_torch(module, *, inputs=None, outputs=None, normalization=None,
               channels=None) -> Model:
    """An xtl Model of a trained PyTorch module (an ``nn.Sequential``-style conv net).

    Parameters
    ----------
    module : torch.nn.Module
        Its leaf modules, in order, must be ``Conv2d`` (stride 1, no dilation or groups,
        odd square kernels, padding ``K//2`` or 0, ``padding_mode`` zeros, circular or
        reflect), ``BatchNorm2d`` (with running statistics; folded into the convolution
        before it), ``Identity`` and activations among ``ReLU``, ``Tanh``, ``GELU``,
        ``LeakyReLU``, ``SiLU``, ``Sigmoid``, ``ELU``; its ``forward`` must apply them in
        that order (checked on a random input).
    inputs, outputs, normalization, channels :
        As in :func:`from_keras`; ``normalization`` is required.

    Returns
    -------
    Model
        On the ``"torch"`` backend, as :func:`from_keras`.

    Raises
    ------
    ValueError
        As :func:`from_keras`.
    """
    variables, normalization = import_variables(inputs, outputs, channels, normalization)
    return get_backend("torch").from_native(module, variables, normalization)


def convert(model: Model, backend: str) -> Model:
    """``model`` on another backend (or an independent copy on its own): the same spec,
    weights, normalization, variables and provenance, through the model Dataset.

    Parameters
    ----------
    model : Model
        Any xtl model.
    backend : str
        A registered backend name (``"keras"``, ``"torch"``).
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be an xtl Model, got {type(model).__name__}")
    return model_from_dataset(model_to_dataset(model), backend=backend)
