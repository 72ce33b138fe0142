"""The closure network's architecture: :class:`NetworkSpec`, its inputs and output, layer numbers.

Nothing here imports a deep-learning framework.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["INPUTS", "OUTPUT", "PADDINGS", "PRECISIONS", "NetworkSpec", "check_layers",
           "stack_inputs"]

#: The network's input variables, in channel order.
INPUTS = ("psi", "omega")
#: The network's output variable.
OUTPUT = "pi"
#: Supported padding modes: zeros (the paper) and periodic (the doubly periodic domain).
PADDINGS = ("zeros", "periodic")
#: Supported compute precisions ("mixed_*" keep float32 weights and a float32 output).
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class NetworkSpec:
    """Architecture of a fully convolutional closure network.

    The default is the network of Guan et al. (2022) / Subel et al. (2023):
    11 conv layers of 5×5 kernels, 64 filters, ReLU, the last layer linear
    with one filter; inputs (ψ̄, ω̄), output Π.

    Parameters
    ----------
    n_layers : int
        Number of conv layers ``L`` (>= 1). Layers are numbered 1..L from the
        input: layer 1 takes the 2 input channels, layer L gives 1 output channel.
    channels : int or tuple of int
        Output channels of the hidden layers 1..L-1: one int for all of them,
        or a tuple of ``L-1`` ints.
    kernel_size : int
        Odd kernel size ``K`` (square kernels, stride 1).
    padding : {"zeros", "periodic"}
        ``"zeros"`` pads with zeros (the paper); ``"periodic"`` wraps the
        field around, which is consistent with the doubly periodic domain.
    activation : str
        Activation of the hidden layers (a backend-known name, e.g. ``"relu"``);
        the last layer is linear.
    precision : {"float32", "mixed_float16", "mixed_bfloat16"}
        Compute precision. Mixed precision keeps float32 weights and output.
    """

    n_layers: int = 11
    channels: Any = 64
    kernel_size: int = 5
    padding: str = "zeros"
    activation: str = "relu"
    precision: str = "float32"

    def __post_init__(self):
        _validate_spec(self)
        if not isinstance(self.channels, int):
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @classmethod
    def from_any(cls, spec=None) -> "NetworkSpec":
        """Return a :class:`NetworkSpec` from ``None`` (the paper), a mapping or a spec.

        Parameters
        ----------
        spec : None, mapping or NetworkSpec
            ``None`` gives the paper's network; a mapping gives its keys as
            fields (unknown keys raise).
        """
        if spec is None:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, Mapping):
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise TypeError(
                    f"spec has unknown keys {unknown}; expected a subset of {sorted(known)}"
                )
            return cls(**dict(spec))
        raise TypeError(
            f"spec must be None, a mapping or an xtl NetworkSpec, got {type(spec).__name__}"
        )

    @property
    def widths(self) -> tuple:
        """Output channels of layers 1..L (the last is always 1)."""
        if isinstance(self.channels, int):
            hidden = (self.channels,) * (self.n_layers - 1)
        else:
            hidden = tuple(self.channels)
        return hidden + (1,)

    @property
    def in_channels(self) -> tuple:
        """Input channels of layers 1..L (the first is always 2)."""
        return (len(INPUTS),) + self.widths[:-1]

    def to_dict(self) -> dict:
        """Return the spec as a JSON-safe dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if not isinstance(d["channels"], int):
            d["channels"] = list(d["channels"])
        return d

    def to_json(self) -> str:
        """Return the spec as a JSON string (stable key order)."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _validate_spec(spec: NetworkSpec) -> None:
    """Raise a TypeError/ValueError naming the first bad field of ``spec``."""
    n = spec.n_layers
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"spec.n_layers must be an int >= 1, got {n!r}")
    ch = spec.channels
    if isinstance(ch, (int, np.integer)) and not isinstance(ch, bool):
        if ch < 1:
            raise ValueError(f"spec.channels must be >= 1, got {ch!r}")
    else:
        try:
            chs = [int(c) for c in ch]
        except TypeError:
            raise TypeError(
                f"spec.channels must be an int or a sequence of {n - 1} ints, got {ch!r}"
            ) from None
        if len(chs) != n - 1 or any(c < 1 for c in chs):
            raise ValueError(
                f"spec.channels must be an int or {n - 1} ints >= 1 (one per hidden "
                f"layer), got {ch!r}"
            )
    k = spec.kernel_size
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1 or k % 2 == 0:
        raise ValueError(f"spec.kernel_size must be an odd int >= 1, got {k!r}")
    if spec.padding not in PADDINGS:
        raise ValueError(f"spec.padding must be one of {PADDINGS}, got {spec.padding!r}")
    if not isinstance(spec.activation, str) or not spec.activation:
        raise TypeError(f"spec.activation must be an activation name, got {spec.activation!r}")
    if spec.precision not in PRECISIONS:
        raise ValueError(f"spec.precision must be one of {PRECISIONS}, got {spec.precision!r}")


def check_layers(layers, n_layers: int, *, name: str = "layers") -> tuple:
    """Validate layer numbers against ``1..n_layers``.

    Parameters
    ----------
    layers : int or sequence of int
        Layer numbers (1 = the layer taking the inputs, ``n_layers`` = the output layer).
    n_layers : int
        Number of conv layers ``L`` of the network.
    name : str
        Argument name used in error messages.

    Returns
    -------
    tuple of int
        The sorted, de-duplicated layer numbers.

    Raises
    ------
    ValueError
        If a layer is outside ``1..n_layers`` or none are given.
    """
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(
            f"{name} must be an int or a sequence of ints in 1..{n_layers}, got {layers!r}")
    layers = list(layers)
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) for k in layers):
        raise TypeError(f"{name} must hold ints in 1..{n_layers}, got {layers!r}")
    out = [int(k) for k in layers]
    if not out:
        raise ValueError(f"{name} must name at least one layer in 1..{n_layers}")
    bad = [k for k in out if not 1 <= k <= n_layers]
    if bad:
        raise ValueError(
            f"{name} must be layer numbers in 1..{n_layers} (1 takes the inputs, "
            f"{n_layers} gives the output), got {bad}"
        )
    return tuple(sorted(set(out)))


def stack_inputs(psi: np.ndarray, omega: np.ndarray, normalization: Mapping) -> np.ndarray:
    """Normalized float32 channels-last network input ``(sample, y, x, 2)`` from ψ̄ and ω̄.

    Parameters
    ----------
    psi, omega : numpy.ndarray
        ``(sample, y, x)`` fields in physical units.
    normalization : mapping
        Standard deviations with keys ``"psi"`` and ``"omega"``.
    """
    x = np.empty(psi.shape + (len(INPUTS),), dtype=np.float32)
    x[..., 0] = psi / np.float32(normalization["psi"])
    x[..., 1] = omega / np.float32(normalization["omega"])
    return x

