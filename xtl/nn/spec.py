"""The closure network's architecture (:class:`NetworkSpec`), the variables it maps
(:class:`Variables`), and layer numbers.

Nothing here imports a deep-learning framework.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

__all__ = ["INPUTS", "OUTPUTS", "PADDINGS", "LAYER_PADDINGS", "ACTIVATIONS", "PRECISIONS",
           "NetworkSpec", "Variables", "check_layers", "leaky_slope", "suffix_spec",
           "stack_channels", "unstack_channels"]

#: The default input variables (ψ̄, ω̄), in channel order.
INPUTS = ("psi", "omega")
#: The default output variable (Π).
OUTPUTS = ("pi",)
#: Dims that hold the grid, never a channel or sample dim.
GRID_DIMS = ("y", "x")
#: Supported padding modes: zeros (the paper) and periodic (the doubly periodic domain).
PADDINGS = ("zeros", "periodic")
#: Padding modes a single layer of an imported network may have: ``"reflect"`` mirrors
#: the field at its edges; ``"valid"`` does not pad (the layer's output is ``K - 1``
#: cells smaller than its input).
LAYER_PADDINGS = PADDINGS + ("reflect", "valid")
#: Activations a layer of an imported network may have (``"leaky_relu(a)"`` with slope
#: ``a`` too; ``"linear"`` is none). The names mean the same in every backend.
ACTIVATIONS = ("linear", "relu", "tanh", "gelu", "silu", "sigmoid", "elu")
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
    input_channels, output_channels : int
        Channels of the network's input and output: 2 and 1 for (ψ̄, ω̄) → Π.
        :func:`xtl.train` sets them from the data (:meth:`Variables.channel_count`),
        so a spec written by hand need not name them.
    kernel_sizes, paddings, activations, biases : tuple, optional
        Per layer 1..L (an imported network, :func:`xtl.from_keras`): the odd kernel
        size, the padding (one of :data:`LAYER_PADDINGS`), the activation after the
        convolution (one of :data:`ACTIVATIONS` or ``"leaky_relu(a)"``; the last layer's
        too) and whether it has a bias. None (the default, xtl's own networks):
        ``kernel_size``, ``padding``, ``activation`` (the last layer linear) and a bias
        for every layer. ``kernel_size`` is then the largest kernel size.
    """

    n_layers: int = 11
    channels: Any = 64
    kernel_size: int = 5
    padding: str = "zeros"
    activation: str = "relu"
    precision: str = "float32"
    # set by train() from the data's variables and channels; out of repr, so that a
    # spec's printed form (and the experiment stage keys hashed from it) stays the same
    input_channels: int = field(default=2, repr=False)
    output_channels: int = field(default=1, repr=False)
    # per layer, read from an imported network; None for xtl's own (out of repr and of
    # to_dict when None, so that the existing specs' printed and JSON forms stay the same)
    kernel_sizes: Any = field(default=None, repr=False)
    paddings: Any = field(default=None, repr=False)
    activations: Any = field(default=None, repr=False)
    biases: Any = field(default=None, repr=False)

    def __post_init__(self):
        _validate_spec(self)
        if not isinstance(self.channels, int):
            object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        for name in _LAYER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        _validate_layer_fields(self)

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
        """Output channels of layers 1..L (the last is ``output_channels``)."""
        if isinstance(self.channels, int):
            hidden = (self.channels,) * (self.n_layers - 1)
        else:
            hidden = tuple(self.channels)
        return hidden + (self.output_channels,)

    @property
    def in_channels(self) -> tuple:
        """Input channels of layers 1..L (the first is ``input_channels``)."""
        return (self.input_channels,) + self.widths[:-1]

    @property
    def layer_kernel_sizes(self) -> tuple:
        """The kernel size of each layer 1..L."""
        return self.kernel_sizes or (self.kernel_size,) * self.n_layers

    @property
    def layer_paddings(self) -> tuple:
        """The padding of each layer 1..L (one of :data:`LAYER_PADDINGS`)."""
        return self.paddings or (self.padding,) * self.n_layers

    @property
    def layer_activations(self) -> tuple:
        """The activation after each layer 1..L (the last ``"linear"`` in xtl's networks)."""
        return self.activations or (self.activation,) * (self.n_layers - 1) + ("linear",)

    @property
    def layer_biases(self) -> tuple:
        """Whether each layer 1..L has a bias."""
        return self.biases or (True,) * self.n_layers

    @property
    def shrink(self) -> int:
        """Cells the output loses on each side to ``"valid"`` layers (0: same grid)."""
        return sum(k // 2 for k, p in zip(self.layer_kernel_sizes, self.layer_paddings)
                   if p == "valid")

    def to_dict(self) -> dict:
        """Return the spec as a JSON-safe dict (tuples become lists; the per-layer
        fields only when set)."""
        d = dataclasses.asdict(self)
        if not isinstance(d["channels"], int):
            d["channels"] = list(d["channels"])
        for name in _LAYER_FIELDS:
            if d[name] is None:
                del d[name]
            else:
                d[name] = list(d[name])
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
    for name in ("input_channels", "output_channels"):
        c = getattr(spec, name)
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 1:
            raise ValueError(f"spec.{name} must be an int >= 1, got {c!r}")


_LAYER_FIELDS = ("kernel_sizes", "paddings", "activations", "biases")


def leaky_slope(activation: str):
    """The slope ``a`` of ``"leaky_relu(a)"``, else None."""
    match = re.fullmatch(r"leaky_relu\((.+)\)", activation)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def _validate_layer_fields(spec: NetworkSpec) -> None:
    """Raise a ValueError naming the first bad per-layer field of ``spec``."""
    n = spec.n_layers
    checks = {
        "kernel_sizes": lambda k: isinstance(k, (int, np.integer)) and k >= 1 and k % 2 == 1,
        "paddings": lambda p: p in LAYER_PADDINGS,
        "activations": lambda a: isinstance(a, str) and (
            re.fullmatch(r"[a-z][a-z0-9_]*", a) is not None or leaky_slope(a) is not None),
        "biases": lambda b: isinstance(b, (bool, np.bool_)),
    }
    forms = {"kernel_sizes": "odd ints >= 1", "paddings": f"one of {LAYER_PADDINGS}",
             "activations": "activation names ('relu', 'leaky_relu(0.2)', ...)", "biases": "bools"}
    for name, ok in checks.items():
        value = getattr(spec, name)
        if value is None:
            continue
        bad = [v for v in value if not ok(v)]
        if len(value) != n or bad:
            raise ValueError(f"spec.{name} must be {n} {forms[name]} (one per layer), got "
                             f"{list(value)!r}")
    if spec.kernel_sizes is not None and spec.kernel_size != max(spec.kernel_sizes):
        raise ValueError(f"spec.kernel_size must be the largest of spec.kernel_sizes "
                         f"({max(spec.kernel_sizes)}), got {spec.kernel_size}")


def suffix_spec(spec: NetworkSpec, first: int) -> NetworkSpec:
    """The architecture of layers ``first..L`` of ``spec`` alone: the network that maps
    the activations entering layer ``first`` to the output.

    Parameters
    ----------
    spec : NetworkSpec
        The whole network.
    first : int
        The suffix's first layer, in 2..L (layer 1's suffix is the network itself).

    Returns
    -------
    NetworkSpec
        ``L - first + 1`` layers, taking ``spec.in_channels[first - 1]`` channels,
        with the same precision and output channels; each layer keeps its kernel size,
        padding, activation and bias (an imported network's per-layer fields are sliced).

    Raises
    ------
    ValueError
        ``first`` outside 2..L.
    """
    n = spec.n_layers
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or not 2 <= first <= n:
        raise ValueError(f"first must be a layer in 2..{n} (the suffix of layer 1 is the whole "
                         f"network), got {first!r}")
    hidden = spec.widths[first - 1:-1]
    per_layer = {name: getattr(spec, name) for name in _LAYER_FIELDS}
    per_layer = {name: None if v is None else tuple(v)[first - 1:] for name, v in per_layer.items()}
    kernel_size = max(per_layer["kernel_sizes"]) if per_layer["kernel_sizes"] else spec.kernel_size
    return dataclasses.replace(spec, n_layers=n - first + 1,
                               channels=hidden if hidden else spec.output_channels,
                               input_channels=spec.in_channels[first - 1],
                               kernel_size=kernel_size, **per_layer)


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


@dataclass(frozen=True)
class Variables:
    """Which variables a network maps, and which dim (if any) becomes channels.

    Parameters
    ----------
    inputs : sequence of str
        Input variables, in channel order (default ψ̄, ω̄).
    outputs : sequence of str
        Output variables (default Π).
    channels : str, optional
        A dim of the data whose entries become channels (e.g. ``"lev"`` of a
        two-layer QG model: 2 levels of ``q`` in, 2 levels of its SGS term out).
        None: every dim other than ``y``, ``x`` is stacked into samples.

    Notes
    -----
    Channels are ordered variable-major: ``(q, lev 1), (q, lev 2), (p, lev 1), ...``.
    Each variable is normalized by one standard deviation over all its levels.

    Examples
    --------
    >>> Variables()
    Variables(inputs=('psi', 'omega'), outputs=('pi',), channels=None)
    >>> Variables(["q"], ["pi_q"], channels="lev").channel_count(2)
    (2, 2)
    """

    inputs: tuple = INPUTS
    outputs: tuple = OUTPUTS
    channels: str | None = None

    def __post_init__(self):
        inputs = _check_names(self.inputs, "inputs")
        outputs = _check_names(self.outputs, "outputs")
        both = sorted(set(inputs) & set(outputs))
        if both:
            raise ValueError(f"outputs must differ from the inputs; {both} are in both")
        if self.channels is not None and (not isinstance(self.channels, str)
                                          or self.channels in GRID_DIMS or not self.channels):
            raise ValueError(f"channels must be the name of a dim other than 'y' and 'x', or "
                             f"None, got {self.channels!r}")
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "outputs", outputs)

    @classmethod
    def from_any(cls, value=None, **names) -> "Variables":
        """A :class:`Variables` from None (the default), a mapping, or itself, with
        the keyword arguments ``inputs``, ``outputs``, ``channels`` (None: unchanged)
        replacing its fields.

        Raises
        ------
        TypeError
            An unknown key or another type.
        """
        if value is None:
            value = cls()
        elif isinstance(value, Mapping):
            unknown = sorted(set(value) - {"inputs", "outputs", "channels"})
            if unknown:
                raise TypeError(f"variables has unknown keys {unknown}; expected inputs, "
                                "outputs, channels")
            value = cls(**dict(value))
        elif not isinstance(value, cls):
            raise TypeError(f"variables must be None, a mapping or Variables, got "
                            f"{type(value).__name__}")
        names = {k: v for k, v in names.items() if v is not None}
        return dataclasses.replace(value, **names) if names else value

    @property
    def names(self) -> tuple:
        """Inputs then outputs."""
        return self.inputs + self.outputs

    def channel_count(self, levels: int = 1) -> tuple:
        """``(input channels, output channels)`` with ``levels`` entries of the channel dim."""
        return len(self.inputs) * levels, len(self.outputs) * levels

    def levels(self, spec: "NetworkSpec") -> int:
        """Entries of the channel dim a network of ``spec`` was built for (1 without one).

        Raises
        ------
        ValueError
            The spec's channels are not a whole number of levels of these variables.
        """
        n_in, n_out = spec.input_channels, spec.output_channels
        levels = n_in // len(self.inputs)
        if levels * len(self.inputs) != n_in or levels * len(self.outputs) != n_out \
                or (self.channels is None and levels != 1):
            raise ValueError(
                f"a network of {n_in} input and {n_out} output channels does not map "
                f"inputs {list(self.inputs)} to outputs {list(self.outputs)}"
                + (f" over the levels of {self.channels!r}" if self.channels else ""))
        return levels

    def to_attrs(self) -> dict:
        """netCDF attributes (comma-joined names; ``channel_dim`` "" for none)."""
        return {"inputs": ",".join(self.inputs), "outputs": ",".join(self.outputs),
                "channel_dim": self.channels or ""}

    @classmethod
    def from_attrs(cls, attrs: Mapping) -> "Variables":
        """The inverse of :meth:`to_attrs`; attrs without them give the default."""
        if "inputs" not in attrs:
            return cls()
        outputs = attrs.get("outputs", attrs.get("output", ",".join(OUTPUTS)))
        return cls(tuple(str(attrs["inputs"]).split(",")), tuple(str(outputs).split(",")),
                   str(attrs.get("channel_dim", "")) or None)


def _check_names(names, argument) -> tuple:
    """``names`` as a non-empty tuple of distinct variable names."""
    if isinstance(names, str):
        names = (names,)
    if not hasattr(names, "__iter__"):
        raise TypeError(f"{argument} must be a variable name or a list of them, got {names!r}")
    names = tuple(names)
    if not names or not all(isinstance(n, str) and n and "," not in n for n in names):
        raise ValueError(f"{argument} must name at least one variable (names without "
                         f"commas), got {list(names)!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{argument} names a variable twice: {list(names)!r}")
    return names


def stack_channels(fields: Mapping, names, normalization: Mapping) -> np.ndarray:
    """Normalized float32 channels-last array ``(sample, y, x, channel)`` of variables.

    Parameters
    ----------
    fields : mapping
        ``{name: array}`` in physical units, each ``(sample, level, y, x)`` (one
        level without a channel dim).
    names : sequence of str
        The variables, in channel order.
    normalization : mapping
        A standard deviation per variable.
    """
    first = np.asarray(fields[names[0]])
    n, levels = first.shape[:2]
    out = np.empty((n,) + first.shape[2:] + (len(names) * levels,), dtype=np.float32)
    for i, name in enumerate(names):
        scaled = np.asarray(fields[name], dtype=np.float32) / np.float32(normalization[name])
        out[..., i * levels:(i + 1) * levels] = np.moveaxis(scaled, 1, -1)
    return out


def unstack_channels(out: np.ndarray, names, normalization: Mapping) -> dict:
    """The inverse of :func:`stack_channels`: ``{name: (sample, level, y, x)}`` in
    physical units from a channels-last network output ``(sample, y, x, channel)``."""
    levels = out.shape[-1] // len(names)
    return {name: np.moveaxis(out[..., i * levels:(i + 1) * levels], -1, 1)
            * np.float32(normalization[name]) for i, name in enumerate(names)}
