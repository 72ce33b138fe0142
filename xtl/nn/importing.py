"""Framework-neutral parts of importing a network: the conv layers read from it, batch
normalization folded into them, the spec they make, and the check that the import
computes what the network computes.

A backend's ``from_native`` walks its framework's layers and calls these
(:meth:`xtl.nn.backends.keras.KerasBackend.from_native`,
:meth:`xtl.nn.backends.torch.TorchBackend.from_native`); :func:`xtl.from_keras` and
:func:`xtl.from_torch` are the public entry points (:mod:`xtl.nn.importers`).
Nothing here imports a deep-learning framework.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .spec import ACTIVATIONS, NetworkSpec, Variables, leaky_slope

__all__ = ["ConvRecord", "ImportedLayers", "check_import", "import_variables"]

#: Largest difference, relative to the largest output, that an import may show.
IMPORT_TOLERANCE = 1e-4


@dataclass
class ConvRecord:
    """One conv layer of an imported network, with what follows it.

    Parameters
    ----------
    name : str
        The layer's name in its network (for messages).
    kernel : numpy.ndarray
        ``(out, in, K, K)`` cross-correlation taps (float64).
    bias : numpy.ndarray or None
        ``(out,)``; None for a layer without one.
    padding : str
        One of :data:`xtl.nn.spec.LAYER_PADDINGS`.
    activation : str
        The activation after it (``"linear"`` until one is seen).
    folded : list of str
        The batch normalizations folded into it.
    """

    name: str
    kernel: np.ndarray
    bias: np.ndarray | None
    padding: str
    activation: str = "linear"
    folded: list = field(default_factory=list)
    normalized: bool = False  # a batch normalization follows its convolution (folded)


class ImportedLayers:
    """The conv layers of a network in order, built up layer by layer by a backend.

    Each method names the network layer it is given, so that a layer that cannot be
    represented is refused naming it.
    """

    def __init__(self, framework: str, known=lambda activation: False):
        self.framework = framework
        self.known = known  # activations the framework's backend knows beyond ACTIVATIONS
        self.convs: list = []
        self.pending_pad: tuple | None = None
        self.pending_affine: tuple | None = None  # (name, scale, shift) after an activation

    def add_conv(self, name: str, kernel, bias, padding: str) -> None:
        """A convolution ``kernel (out, in, K, K)``, ``bias (out,)`` or None."""
        kernel = np.asarray(kernel, np.float64)
        size = kernel.shape[-1]
        if kernel.ndim != 4 or kernel.shape[-2] != size or size % 2 == 0:
            raise ValueError(f"layer {name!r} has {kernel.shape[-2]}x{size} kernels; xtl "
                             "represents square kernels of odd size (centred taps) only")
        if self.pending_pad is not None:
            pad_name, mode, width = self.pending_pad
            if padding != "valid" or width != size // 2:
                raise ValueError(f"layer {pad_name!r} pads {width} cells before {name!r}, whose "
                                 f"{size}x{size} kernels need {size // 2} and no padding of "
                                 "their own; xtl cannot represent that")
            padding, self.pending_pad = mode, None
        if self.convs and self.convs[-1].kernel.shape[0] != kernel.shape[1]:
            raise ValueError(f"layer {name!r} takes {kernel.shape[1]} channels, but the conv "
                             f"layer before it gives {self.convs[-1].kernel.shape[0]}")
        record = ConvRecord(name, kernel, None if bias is None else np.asarray(bias, np.float64),
                            padding)
        if self.pending_affine is not None:
            self._fold_into_next(record)
        self.convs.append(record)

    def _fold_into_next(self, record: ConvRecord) -> None:
        """Fold the batch normalization after the last activation into ``record``, the
        convolution after it: ``w'[:, i] = w[:, i]·s_i``, ``b' = b + Σ w[:, i]·c_i``; exact
        when its padding is periodic, reflect or none (padding commutes with ``s·h + c``)."""
        bn, scale, shift = self.pending_affine
        if record.padding not in ("periodic", "reflect", "valid"):
            raise ValueError(
                f"layer {bn!r} normalizes the output of an activation; xtl folds it into the "
                f"next convolution {record.name!r}, which is exact only when that convolution "
                "pads periodically ('circular'), by reflection or not at all, but it pads with "
                "zeros; re-write the network with the batch normalization before the activation")
        bias = record.bias if record.bias is not None else np.zeros(record.kernel.shape[0])
        record.bias = bias + np.einsum("oiyx,i->o", record.kernel, shift)
        record.kernel = record.kernel * scale[None, :, None, None]
        record.folded.append(bn)
        self.pending_affine = None

    def add_pad(self, name: str, mode: str, width: int) -> None:
        """A padding layer (``mode`` zeros, periodic or reflect) before the next conv."""
        self.pending_pad = (name, mode, int(width))

    def add_activation(self, name: str, activation: str) -> None:
        """An activation: a name of :data:`xtl.nn.spec.ACTIVATIONS`, ``"leaky_relu(a)"`` or
        one the framework's backend knows (``known``)."""
        if activation == "linear":
            return
        if activation not in ACTIVATIONS and leaky_slope(activation) is None \
                and not self.known(activation):
            raise ValueError(f"layer {name!r} has the activation {activation!r}; xtl knows "
                             f"{list(ACTIVATIONS)} and 'leaky_relu(a)'"
                             + (" and the Keras activations" if self.framework == "Keras"
                                else ""))
        last = self._last(name, "an activation")
        if last.activation != "linear" or self.pending_affine is not None:
            raise ValueError(f"layer {name!r} applies {activation!r} after {last.activation!r} "
                             f"of conv layer {last.name!r}; xtl represents one activation per "
                             "conv layer")
        last.activation = activation

    def add_batchnorm(self, name: str, gamma, beta, mean, variance, epsilon: float) -> None:
        """Fold an inference-mode batch normalization ``s·h + c`` (``s = γ/√(σ²+ε)``,
        ``c = β − μ·s``) into a convolution (float64): right after a convolution into it,
        ``w' = w·s``, ``b' = b·s + c``; after an activation into the next convolution
        (see :meth:`_fold_into_next`)."""
        last = self._last(name, "a batch normalization")
        scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(variance, np.float64)
                                                         + float(epsilon))
        shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
        if self.pending_affine is not None or (last.normalized and last.activation == "linear"):
            raise ValueError(f"layer {name!r} is a second batch normalization in a row; xtl "
                             "folds one per convolution")
        if last.activation != "linear":  # after the activation: into the next convolution
            self.pending_affine = (name, scale, shift)
            return
        bias = last.bias if last.bias is not None else np.zeros(len(scale))
        last.kernel = last.kernel * scale[:, None, None, None]
        last.bias = bias * scale + shift
        last.folded.append(name)
        last.normalized = True

    def refuse(self, name: str, kind: str) -> None:
        """Raise a ValueError for the layer ``name`` of type ``kind``, which xtl cannot import."""
        raise ValueError(
            f"layer {name!r} ({kind}) cannot be imported: xtl imports a chain of 2D "
            "convolutions (stride 1, no dilation or groups), each optionally followed by a "
            "batch normalization and an activation, with padding layers before them; take "
            "the layer out or re-write the network in that form")

    def _last(self, name: str, what: str) -> ConvRecord:
        if not self.convs:
            raise ValueError(f"layer {name!r} applies {what} before the first conv layer; xtl "
                             "imports networks whose first layer is a convolution")
        return self.convs[-1]

    def spec_and_weights(self, variables: Variables, precision: str = "float32") -> tuple:
        """``(NetworkSpec, [(kernel, bias)] float32)`` of the layers read.

        Raises
        ------
        ValueError
            No conv layer, a padding layer left at the end, or channels that do not fit
            ``variables``.
        """
        if not self.convs:
            raise ValueError(f"the {self.framework} network has no conv layer to import")
        if self.pending_pad is not None:
            raise ValueError(f"layer {self.pending_pad[0]!r} pads the network's output; xtl "
                             "cannot represent that")
        if self.pending_affine is not None:
            raise ValueError(f"layer {self.pending_affine[0]!r} normalizes the network's output "
                             "after an activation; xtl cannot fold it into a convolution")
        convs = self.convs
        sizes = tuple(int(c.kernel.shape[-1]) for c in convs)
        spec = NetworkSpec(
            n_layers=len(convs), channels=tuple(int(c.kernel.shape[0]) for c in convs[:-1]),
            kernel_size=max(sizes), padding="zeros", activation="linear",
            precision=precision, input_channels=int(convs[0].kernel.shape[1]),
            output_channels=int(convs[-1].kernel.shape[0]), kernel_sizes=sizes,
            paddings=tuple(c.padding for c in convs),
            activations=tuple(c.activation for c in convs),
            biases=tuple(c.bias is not None for c in convs))
        variables.levels(spec)
        weights = [(c.kernel.astype(np.float32),
                    np.zeros(c.kernel.shape[0], np.float32) if c.bias is None
                    else c.bias.astype(np.float32)) for c in convs]
        return spec, weights


def import_variables(inputs, outputs, channels, normalization) -> tuple:
    """``(Variables, normalization)`` of an import, the normalization required.

    Raises
    ------
    ValueError
        ``normalization`` missing (xtl does not guess how a network was trained).
    """
    variables = Variables.from_any(None, inputs=inputs, outputs=outputs, channels=channels)
    if normalization is None:
        raise ValueError(
            "normalization must be given: a standard deviation per variable "
            f"{list(variables.names)} (inputs are divided by theirs before the network, its "
            "outputs multiplied by theirs), as the network was trained; pass 1.0 for a "
            "variable the network takes or gives unscaled")
    return variables, normalization


def check_import(reference: np.ndarray, imported: np.ndarray, framework: str) -> float:
    """The largest difference of the imported network's output from the original's on the
    same input, relative to the original's largest output.

    Raises
    ------
    ValueError
        Shapes differ, or the difference exceeds ``IMPORT_TOLERANCE``: the network computes
        something its layers in sequence do not (a skip connection, a custom layer).
    """
    reference = np.asarray(reference, np.float64)
    imported = np.asarray(imported, np.float64)
    if reference.shape != imported.shape:
        raise ValueError(f"the {framework} network's output has the shape {reference.shape}, "
                         f"its layers in sequence give {imported.shape}: it is not a plain "
                         "chain of its layers (a skip connection, a custom layer?)")
    scale = max(float(np.max(np.abs(reference))), 1e-30)
    error = float(np.max(np.abs(reference - imported))) / scale
    if not error <= IMPORT_TOLERANCE:
        raise ValueError(
            f"the {framework} network's output differs from that of its layers in sequence by "
            f"{error:.2e} of its largest value: it computes something else (a skip connection, "
            "a custom layer or operation) and cannot be imported")
    return error
