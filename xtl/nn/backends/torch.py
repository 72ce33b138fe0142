"""PyTorch backend: xtl's CNN closure as a ``torch.nn.Sequential``, and its training.

PyTorch is imported lazily, on the first call that needs it, so that importing this
module (and :mod:`xtl`) does not import it (``pip install "xtl[torch]"`` installs it).

The network (see :class:`~xtl.nn.spec.NetworkSpec`) is an ``nn.Sequential`` of
``Conv2d`` layers named ``conv_1`` .. ``conv_L``, each followed by its activation
module ``activation_k`` (none after a linear layer). Padding is the convolution's own:
``padding=K//2`` with ``padding_mode`` ``"zeros"``, ``"circular"`` (xtl's
``"periodic"``) or ``"reflect"``; ``padding=0`` for ``"valid"``. The module is
channels-first (``(sample, channel, y, x)``), as PyTorch users expect; the backend's
methods take and return xtl's channels-last arrays. Layer numbers count conv layers
only. Weights are float32; the backend computes on the GPU when PyTorch sees one.

Training is the shared loop of :mod:`xtl.nn.backends.loop`; this backend gives it its
primitives, as :mod:`xtl.nn.backends.keras` does: :meth:`TorchBackend.prepare_fit`
(freeze layers, Adam on the MSE with Keras' defaults), :meth:`~TorchBackend.train_epoch`
and :meth:`~TorchBackend.get_state` / :meth:`~TorchBackend.set_state` (weights and
Adam state, for a bitwise resume). Its per-model state (the fit's optimizer) lives in
a weak-keyed table here, not on the Model.
"""
from __future__ import annotations

import functools
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...data.files import atomic_path
from ...data.netcdf import FileFormatError
from ..dataset import file_metadata, history_to_dataset
from ..importing import ImportedLayers, check_import
from ..model import Model
from ..spec import NetworkSpec, Variables, check_layers, leaky_slope, suffix_spec
from .base import Backend, ModelStates, check_normalization, crop_targets
from .loop import FitOptions

__all__ = ["TorchBackend"]

#: Adam's epsilon: Keras' default, so that both backends take the same steps.
ADAM_EPSILON = 1e-7


# --------------------------------------------------------------- lazy imports
def _torch():
    """Import PyTorch, or say how to install it.

    In a process that has imported TensorFlow, importing triton (which PyTorch does
    lazily, e.g. when it makes an optimizer) crashes it (a segmentation fault: both load
    their own LLVM). There, triton is marked as missing before PyTorch reaches for it;
    PyTorch then runs without it (xtl does not use ``torch.compile``, which needs it).
    """
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # an import of it raises ImportError, as if missing
    try:
        import torch
    except ImportError as err:
        raise ImportError("the xtl 'torch' backend needs PyTorch: pip install 'xtl[torch]'") \
            from err
    return torch


@functools.lru_cache(maxsize=None)
def _device():
    """The device PyTorch computes on: the first GPU when it sees one, else the CPU."""
    torch = _torch()
    with warnings.catch_warnings():  # a machine without a usable GPU warns that it has none
        warnings.simplefilter("ignore", UserWarning)
        cuda = torch.cuda.is_available()
    return torch.device("cuda" if cuda else "cpu")


@functools.lru_cache(maxsize=None)
def _pin_torch_threads(n: int) -> None:
    if n < 1:
        raise ValueError(f"threads must be an int >= 1, got {n}")
    torch = _torch()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # fixed once PyTorch ran parallel work
        pass


def _activation_module(torch, activation: str):
    """The ``torch.nn`` module of xtl's activation name (None for ``"linear"``)."""
    nn = torch.nn
    slope = leaky_slope(activation)
    if slope is not None:
        return nn.LeakyReLU(slope)
    modules = {"linear": None, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
               "silu": nn.SiLU, "sigmoid": nn.Sigmoid, "elu": nn.ELU}
    if activation not in modules:
        raise ValueError(f"spec.activation {activation!r} is no activation the torch backend "
                         f"knows; use one of {sorted(modules)} or 'leaky_relu(a)'")
    module = modules[activation]
    return None if module is None else module()


def _build_native(spec: NetworkSpec, seed: int):
    """The ``nn.Sequential`` of ``spec`` with seeded Glorot-uniform weights (layer ``k``
    from ``seed * 1000 + k``) and zero biases, on the backend's device."""
    torch = _torch()
    from collections import OrderedDict

    modes = {"zeros": "zeros", "valid": "zeros", "periodic": "circular", "reflect": "reflect"}
    parts = OrderedDict()
    layers = zip(spec.in_channels, spec.widths, spec.layer_kernel_sizes, spec.layer_paddings,
                 spec.layer_activations, spec.layer_biases)
    for k, (c_in, c_out, size, padding, activation, bias) in enumerate(layers, 1):
        conv = torch.nn.Conv2d(c_in, c_out, size, padding=0 if padding == "valid" else size // 2,
                               padding_mode=modes[padding], bias=bool(bias))
        limit = float(np.sqrt(6.0 / ((c_in + c_out) * size * size)))
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        with torch.no_grad():
            conv.weight.uniform_(-limit, limit, generator=generator)
            if conv.bias is not None:
                conv.bias.zero_()
        parts[f"conv_{k}"] = conv
        module = _activation_module(torch, activation)
        if module is not None:
            parts[f"activation_{k}"] = module
    return torch.nn.Sequential(parts).to(_device()).eval()


def _check_input(x, spec: NetworkSpec) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != spec.input_channels:
        raise ValueError(f"x must be normalized inputs (sample, y, x, {spec.input_channels}), "
                         f"got shape {x.shape}")
    return x


def _to_tensor(torch, x: np.ndarray):
    """A channels-last numpy batch as a channels-first float32 tensor on the device."""
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(_device()).permute(0, 3, 1, 2)


def _to_numpy(y) -> np.ndarray:
    """A channels-first tensor as a channels-last float32 numpy array."""
    return y.detach().permute(0, 2, 3, 1).cpu().numpy().astype(np.float32, copy=False)


# ----------------------------------------------------------------- the backend
class TorchBackend(Backend):
    """The PyTorch backend (registered as ``"torch"``).

    See :class:`xtl.nn.backends.base.Backend` for the methods' contracts.
    """

    name = "torch"
    suffix = ".pt"

    # -- building -------------------------------------------------------------
    def build(self, spec, normalization=None, *, seed: int = 0, variables=None) -> Model:
        """Build an untrained network from ``spec`` with seeded Glorot-uniform weights.

        Parameters
        ----------
        spec : NetworkSpec, mapping or None
            The architecture (None: the paper's); float32 only.
        normalization : dict, optional
            A standard deviation per variable; default all 1.
        seed : int
            Seed of the initial weights (layer ``k`` uses ``seed * 1000 + k``).
        variables : Variables, mapping, optional
            What the network maps (default ψ̄, ω̄ → Π).

        Raises
        ------
        ValueError
            A mixed precision (the torch backend computes in float32), an unknown activation.
        """
        spec = NetworkSpec.from_any(spec)
        if spec.precision != "float32":
            raise ValueError(f"spec.precision {spec.precision!r}: the torch backend computes in "
                             "float32; use precision='float32' or the keras backend")
        variables = Variables.from_any(variables)
        variables.levels(spec)
        normalization = check_normalization(normalization, variables)
        return Model(self.name, _build_native(spec, int(seed)), spec, normalization,
                     provenance={"seed": int(seed)}, variables=variables)

    def clone(self, model: Model) -> Model:
        """An independent copy of ``model`` with bitwise equal weights."""
        native = _build_native(model.spec, 0)
        native.load_state_dict(model.native.state_dict())
        return Model(self.name, native, model.spec, dict(model.normalization),
                     provenance=json.loads(json.dumps(model.provenance)),
                     history=None if model.history is None else model.history.copy(deep=True),
                     variables=model.variables)

    def set_threads(self, n: int) -> None:
        """Use ``n`` intra-op threads and one inter-op thread (``torch.set_num_threads``)."""
        _pin_torch_threads(int(n))

    def device(self) -> str:
        """``"GPU"`` when PyTorch sees a CUDA device (it then computes there), else ``"CPU"``."""
        return "GPU" if _device().type == "cuda" else "CPU"

    def suffix_model(self, model: Model, first: int) -> Model:
        """Layers ``first..L`` of ``model`` as an ``nn.Sequential`` of the same modules, so
        the same parameters, renumbered from 1 (see :meth:`Backend.suffix_model`)."""
        from collections import OrderedDict

        torch = _torch()
        spec = suffix_spec(model.spec, first)
        parts = OrderedDict()
        for name, module in model.native.named_children():
            kind, _, k = name.partition("_")
            if int(k) >= first:
                parts[f"{kind}_{int(k) - first + 1}"] = module
        return Model(self.name, torch.nn.Sequential(parts), spec, dict(model.normalization),
                     provenance={"suffix_of_layer": int(first)}, variables=model.variables)

    # -- weights --------------------------------------------------------------
    def conv_layers(self, model: Model) -> list:
        """The ``Conv2d`` modules of ``model``, numbered 1..L from the input."""
        torch = _torch()
        return [m for m in model.native if isinstance(m, torch.nn.Conv2d)]

    def get_weights(self, model: Model) -> list:
        """Per layer, ``(kernel (out, in, K, K), bias (out,))`` float32 numpy arrays."""
        out = []
        for conv in self.conv_layers(model):
            w = conv.weight.detach().cpu().numpy().astype(np.float32, copy=True)
            b = (np.zeros(w.shape[0], np.float32) if conv.bias is None
                 else conv.bias.detach().cpu().numpy().astype(np.float32, copy=True))
            out.append((w, b))
        return out

    def set_weights(self, model: Model, weights) -> None:
        """Set weights given in :meth:`get_weights`' layout."""
        torch = _torch()
        convs = self.conv_layers(model)
        if len(weights) != len(convs):
            raise ValueError(f"weights must hold {len(convs)} layers, got {len(weights)}")
        for k, (conv, (w, b)) in enumerate(zip(convs, weights), 1):
            w, b = np.asarray(w, np.float32), np.asarray(b, np.float32)
            if w.shape != tuple(conv.weight.shape):
                raise ValueError(f"layer {k}: kernel of shape {w.shape} does not fit "
                                 f"{tuple(conv.weight.shape)}")
            if conv.bias is None and np.any(b != 0):
                raise ValueError(f"layer {k} has no bias, but its weights give one that is not 0")
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(w))
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(b))

    # -- training steps (the loop is xtl.nn.backends.loop's) ------------------------
    def prepare_fit(self, model: Model, layers, options: FitOptions) -> None:
        """Freeze the layers not in ``layers``, make Adam (Keras' defaults, its state
        made now) on the MSE (see :meth:`Backend.prepare_fit`).

        ``options.deterministic`` makes cuDNN's convolutions deterministic (process-wide;
        on the CPU they are); ``options.callbacks`` must be empty (PyTorch has no callbacks).
        """
        torch = _torch()
        if tuple(options.callbacks):
            raise ValueError("callbacks are Keras callbacks; the torch backend takes none")
        if options.deterministic:  # convolutions: the only ops here that may not be
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        trainable = set(layers)
        params = []
        for k, conv in enumerate(self.conv_layers(model), 1):
            for p in conv.parameters():
                p.requires_grad_(k in trainable)
                params += [p] if k in trainable else []
        optimizer = torch.optim.Adam(params, lr=float(options.learning_rate), eps=ADAM_EPSILON)
        for p in params:  # the state exists before the first step, so get_state holds it
            optimizer.state[p] = {"step": torch.tensor(0.0),
                                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        model.native.train()
        _model_state(model)["fit"] = _FitSession(optimizer, params)

    def train_epoch(self, model: Model, batches, epoch: int, on_batch=None) -> float:
        """One epoch of Adam steps over ``batches`` (see :meth:`Backend.train_epoch`).

        The running loss stays on the device; ``on_batch`` gets it as a tensor
        (``float()`` converts it).
        """
        torch = _torch()
        session = _fit_session(model)
        native, optimizer, shrink = model.native, session.optimizer, model.spec.shrink
        total, count = None, 0
        for i, (x, y) in enumerate(batches):
            xb, yb = _to_tensor(torch, x), _to_tensor(torch, crop_targets(y, shrink))
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(native(xb), yb)
            loss.backward()
            optimizer.step()
            step = loss.detach() * len(x)
            total, count = step if total is None else total + step, count + len(x)
            if on_batch is not None:
                on_batch(i, total / count)
        if total is None:
            raise ValueError("batches must yield at least one (x, y) batch, got none")
        return float(total / count)

    def end_fit(self, model: Model) -> None:
        """Drop the fit's optimizer and put the network back in inference mode."""
        _model_state(model).pop("fit", None)
        model.native.eval()

    def get_state(self, model: Model) -> list:
        """All weights (frozen ones too), then Adam's ``step``, ``exp_avg`` and
        ``exp_avg_sq`` of each trained weight, as numpy arrays."""
        session = _fit_session(model)
        arrays = [p.detach().cpu().numpy().copy() for p in model.native.parameters()]
        for p in session.params:
            state = session.optimizer.state[p]
            arrays += [np.asarray(state[k].detach().cpu().numpy()).copy()
                       for k in ("step", "exp_avg", "exp_avg_sq")]
        return arrays

    def set_state(self, model: Model, state) -> None:
        """Restore :meth:`get_state`'s arrays."""
        torch = _torch()
        session = _fit_session(model)
        params = list(model.native.parameters())
        slots = [session.optimizer.state[p][k] for p in session.params
                 for k in ("step", "exp_avg", "exp_avg_sq")]
        if len(state) != len(params) + len(slots):
            raise ValueError(f"state must hold {len(params) + len(slots)} arrays ({len(params)} "
                             f"weights and {len(slots)} optimizer variables), got {len(state)}")
        with torch.no_grad():
            for target, value in zip(params + slots, state):
                target.copy_(torch.as_tensor(np.asarray(value)).to(target.device))

    # -- inference ------------------------------------------------------------
    def predict_normalized(self, model: Model, x: np.ndarray, *,
                           batch_size: int = 32) -> np.ndarray:
        """Network output ``(sample, y, x, c_out)`` for normalized inputs ``(sample, y, x, c_in)``."""
        x = _check_input(x, model.spec)
        forward = self.compiled_forward(model)
        out = [forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        if not out:
            s = model.spec.shrink
            return np.zeros((0, x.shape[1] - 2 * s, x.shape[2] - 2 * s,
                             model.spec.output_channels), np.float32)
        return np.concatenate(out, axis=0)

    def compiled_forward(self, model: Model):
        """:meth:`predict_normalized` of one batch without autograd (``torch.inference_mode``),
        for many small calls (an a posteriori LES calls it once per time step)."""
        torch = _torch()
        native, spec = model.native, model.spec

        def forward(x):
            with torch.inference_mode():
                return _to_numpy(native(_to_tensor(torch, _check_input(x, spec))))

        return forward

    def _layer_function(self, model: Model, layer: int):
        """``(f(kernel, bias, x), kernel, bias)``: the network output as a function of one
        layer's weights (``torch.func.functional_call``), and those weights."""
        torch = _torch()
        k = check_layers(layer, model.n_layers)[0]
        params = {n: p.detach() for n, p in model.native.named_parameters()}
        conv = self.conv_layers(model)[k - 1]
        bias = conv.bias.detach() if conv.bias is not None else None

        def f(w, b, x):
            new = {**params, f"conv_{k}.weight": w}
            if b is not None:
                new[f"conv_{k}.bias"] = b
            return torch.func.functional_call(model.native, new, (x,))

        return f, conv.weight.detach(), bias

    def jvp(self, model: Model, x: np.ndarray, layer: int, tangent, *,
            batch_size: int = 32) -> np.ndarray:
        """Change of the network output along a direction ``tangent = (kernel, bias)`` of
        one layer's weights (``torch.func.jvp``), as :meth:`KerasBackend.jvp
        <xtl.nn.backends.keras.KerasBackend.jvp>`: ``(sample, y, x, c_out)``."""
        torch = _torch()
        f, w, b = self._layer_function(model, layer)
        tw = torch.as_tensor(np.asarray(tangent[0], np.float32), device=w.device)
        tb = None if b is None else torch.as_tensor(np.asarray(tangent[1], np.float32),
                                                    device=w.device)
        x = _check_input(x, model.spec)
        out = []
        for i in range(0, len(x), batch_size):
            xb = _to_tensor(torch, x[i:i + batch_size])
            if b is None:
                _, t = torch.func.jvp(lambda w_: f(w_, None, xb), (w,), (tw,))
            else:
                _, t = torch.func.jvp(lambda w_, b_: f(w_, b_, xb), (w, b), (tw, tb))
            out.append(_to_numpy(t))
        return np.concatenate(out, axis=0)

    def vjp(self, model: Model, x: np.ndarray, layer: int, cotangent, *,
            batch_size: int = 32) -> tuple:
        """Pull an output cotangent ``(sample, y, x, c_out)`` back onto one layer's weights
        (``torch.autograd.grad``): ``(kernel (out, in, K, K), bias (out,))`` float64."""
        torch = _torch()
        f, w, b = self._layer_function(model, layer)
        x = _check_input(x, model.spec)
        u = np.asarray(cotangent, np.float32)
        s = model.spec.shrink
        shape = (x.shape[0], x.shape[1] - 2 * s, x.shape[2] - 2 * s, model.spec.output_channels)
        if u.shape != shape:
            raise ValueError(f"cotangent must have the output's shape {shape}, got {u.shape}")
        # torch.autograd.grad, not torch.func.vjp: that imports triton, which crashes a
        # process that imported TensorFlow first
        leaves = [w.clone().requires_grad_(True)]
        if b is not None:
            leaves.append(b.clone().requires_grad_(True))
        gk, gb = 0.0, np.zeros(w.shape[0])
        for i in range(0, len(x), batch_size):
            xb, ub = _to_tensor(torch, x[i:i + batch_size]), _to_tensor(torch, u[i:i + batch_size])
            out = f(leaves[0], leaves[1] if b is not None else None, xb)
            grads = torch.autograd.grad(torch.sum(out * ub), leaves)
            gk = gk + grads[0].cpu().numpy().astype(np.float64)
            if b is not None:
                gb = gb + grads[1].cpu().numpy().astype(np.float64)
        return np.asarray(gk), gb

    def activations(self, model: Model, x: np.ndarray, layers, *,
                    batch_size: int = 32) -> dict:
        """Outputs ``{layer: (sample, channel, y, x)}`` of conv layers (after their
        activation), float32; the last layer's is the normalized network output."""
        torch = _torch()
        layers = check_layers(layers, model.n_layers)
        x = _check_input(x, model.spec)
        parts = {k: [] for k in layers}
        ends = _layer_ends(model.native)
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                h = _to_tensor(torch, x[i:i + batch_size])
                for j, module in enumerate(model.native):
                    h = module(h)
                    if ends.get(j) in parts:
                        parts[ends[j]].append(h.cpu().numpy().astype(np.float32))
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    # -- importing ------------------------------------------------------------
    def from_native(self, native, variables, normalization) -> Model:
        """An xtl Model of a PyTorch module's conv layers (see :func:`xtl.from_torch`).

        The module's leaf modules are read in order (an ``nn.Sequential``, nested ones
        opened); batch normalizations are folded into the convolutions before them;
        the rebuilt network must predict what ``native`` predicts on a random input.
        """
        torch = _torch()
        if not isinstance(native, torch.nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(native).__name__}")
        layers = ImportedLayers("PyTorch")
        for name, module in native.named_modules():
            if not list(module.children()):
                _read_module(torch, name, module, layers)
        spec, weights = layers.spec_and_weights(variables)
        model = self.build(spec, normalization, variables=variables)
        self.set_weights(model, weights)
        x = np.random.default_rng(0).standard_normal(
            (2, 24 + 2 * spec.shrink, 24 + 2 * spec.shrink, spec.input_channels)).astype(np.float32)
        error = check_import(_reference_output(torch, native, x), self.predict_normalized(model, x),
                             "PyTorch")
        model.provenance = {"kind": "imported", "framework": "torch",
                            "source": type(native).__name__,
                            "folded_batchnorm": [n for c in layers.convs for n in c.folded],
                            "import_error": error}
        return model

    # -- persistence ----------------------------------------------------------
    def save(self, model: Model, path) -> None:
        """Save as a ``.pt`` file (``torch.save`` of the weights and xtl's metadata, atomic)."""
        torch = _torch()
        path = Path(path)
        if path.suffix != self.suffix:
            raise ValueError(f"path must end with '.pt', got {path}")
        state = {k: v.detach().cpu() for k, v in model.native.state_dict().items()}
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save({"xtl": json.dumps(file_metadata(model)), "state_dict": state}, tmp)

    def load(self, path) -> Model:
        """Load a ``.pt`` file written by :meth:`save` (tensors only: ``weights_only``).

        A file that is not one raises :class:`xtl.data.netcdf.FileFormatError` naming it.
        """
        torch = _torch()
        path = Path(path)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            meta = json.loads(saved["xtl"])
            spec = NetworkSpec.from_any(meta["spec"])
            native = _build_native(spec, 0)
            native.load_state_dict(saved["state_dict"])
        except Exception as err:  # a damaged or foreign file: torch raises many kinds
            raise FileFormatError(f"{path} is not a model file of xtl's torch backend "
                                  f"({type(err).__name__}: {err})") from err
        history = history_to_dataset(meta["history"]) if meta.get("history") else None
        return Model(self.name, native, spec, meta["normalization"], meta.get("provenance", {}),
                     history, Variables.from_any(meta.get("variables")))


# ------------------------------------------------------------------ internals
def _layer_ends(native) -> dict:
    """``{index in the Sequential: layer number}`` of the module ending each conv layer."""
    names = [name for name, _ in native.named_children()]
    ends = {}
    for j, name in enumerate(names):
        kind, _, k = name.partition("_")
        if kind in ("conv", "activation"):
            ends = {i: v for i, v in ends.items() if v != int(k)}
            ends[j] = int(k)
    return ends


def _reference_output(torch, native, x: np.ndarray) -> np.ndarray:
    """``native``'s channels-last output for ``x`` in inference mode (its mode restored)."""
    was_training = native.training
    native.eval()
    try:
        device = next(native.parameters()).device
        with torch.inference_mode():
            y = native(torch.from_numpy(x).permute(0, 3, 1, 2).to(device))
    finally:
        native.train(was_training)
    return _to_numpy(y)


def _read_module(torch, name: str, module, out: ImportedLayers) -> None:
    """Add one PyTorch leaf module to ``out`` (refusing what xtl cannot represent, naming it)."""
    nn, kind = torch.nn, type(module).__name__
    if isinstance(module, nn.Conv2d) and type(module) is nn.Conv2d:
        out.add_conv(name, module.weight.detach().cpu().numpy(),
                     None if module.bias is None else module.bias.detach().cpu().numpy(),
                     _conv_padding(module, name, out))
    elif isinstance(module, nn.BatchNorm2d):
        if not module.track_running_stats or module.running_mean is None:
            out.refuse(name, f"{kind} without running statistics")
        n = module.num_features
        gamma = module.weight.detach().cpu().numpy() if module.affine else np.ones(n)
        beta = module.bias.detach().cpu().numpy() if module.affine else np.zeros(n)
        out.add_batchnorm(name, gamma, beta, module.running_mean.cpu().numpy(),
                          module.running_var.cpu().numpy(), module.eps)
    elif isinstance(module, nn.Identity):
        return
    else:
        out.add_activation(name, _activation_of(torch, name, module, out))


def _conv_padding(conv, name: str, out: ImportedLayers) -> str:
    """xtl's padding name of a ``Conv2d`` (refusing strides, dilations, groups, others)."""
    size = conv.kernel_size[0]
    padding = conv.padding
    if isinstance(padding, str):
        padding = (0, 0) if padding == "valid" else (size // 2, size // 2)
    modes = {"zeros": "zeros", "circular": "periodic", "reflect": "reflect"}
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1 \
            or padding[0] != padding[1] or padding[0] not in (0, size // 2) \
            or conv.padding_mode not in modes:
        out.refuse(name, f"Conv2d with stride {conv.stride}, dilation {conv.dilation}, groups "
                         f"{conv.groups}, padding {conv.padding} ({conv.padding_mode!r})")
    if padding[0] == 0 and size > 1:
        return "valid"
    return modes[conv.padding_mode]


def _activation_of(torch, name: str, module, out: ImportedLayers) -> str:
    """xtl's name of a PyTorch activation module (refusing other modules, naming them)."""
    nn = torch.nn
    plain = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.SiLU: "silu", nn.Sigmoid: "sigmoid"}
    if type(module) in plain:
        return plain[type(module)]
    if type(module) is nn.GELU and module.approximate == "none":
        return "gelu"
    if type(module) is nn.ELU and float(module.alpha) == 1.0:
        return "elu"
    if type(module) is nn.LeakyReLU:
        return f"leaky_relu({float(module.negative_slope)!r})"
    out.refuse(name, type(module).__name__)


#: PyTorch state of each Model (the fit's optimizer).
_STATES = ModelStates()
_model_state = _STATES.of
_fit_session = _STATES.fit_session


@dataclass
class _FitSession:
    """What :meth:`TorchBackend.prepare_fit` makes for the steps of one fit."""

    optimizer: object
    params: list
