"""Tests of importing networks (xtl/nn/importers.py, importing.py): Keras Sequential and
functional models, PyTorch modules of the FullyCNN shape, batch normalization folded,
mixed kernel sizes, every padding, and the refusals."""
import numpy as np
import pytest
import xarray as xr

import xtl
from xtl.explain.kernels import kernel_change, kernel_filters
from xtl.nn.backends.base import get_backend
from xtl.nn.model import model_from_dataset, model_to_dataset
from xtl.nn.training import transfer

NORM = {"psi": 2.0, "omega": 3.0, "pi": 0.5}
FAST = dict(batch_size=8, learning_rate=3e-3, progress=False)


def _randomize_batchnorm(layer, seed):
    """Give a Keras BatchNormalization statistics and scales far from the identity."""
    rng = np.random.default_rng(seed)
    n = layer.moving_mean.shape[0]
    layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                       rng.uniform(0.5, 2.0, n)])


def keras_sequential():
    """tanh, 5×5 and 3×3 kernels, 'same' and 'valid' padding, a BatchNormalization."""
    import keras

    seq = keras.Sequential([
        keras.Input((None, None, 2)),
        keras.layers.Conv2D(6, 5, padding="same", activation="tanh"),
        keras.layers.Conv2D(5, 3, padding="valid"),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("tanh"),
        keras.layers.Conv2D(1, 3, padding="same", use_bias=False),
    ], name="mine")
    _randomize_batchnorm(seq.layers[2], 0)
    return seq


def keras_functional():
    """Functional: ZeroPadding2D before a 'valid' 5×5, BatchNorm, LeakyReLU, 3×3 'same'."""
    import keras

    x = inputs = keras.Input((None, None, 2))
    x = keras.layers.ZeroPadding2D(2)(x)
    x = keras.layers.Conv2D(4, 5, padding="valid", name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.1)(x)
    x = keras.layers.Conv2D(4, 3, padding="valid", activation="tanh", name="c2")(x)
    x = keras.layers.Conv2D(1, 3, padding="same", name="c3")(x)
    model = keras.Model(inputs, x)
    _randomize_batchnorm(model.get_layer("bn1"), 1)
    return model


def fully_cnn(order=("conv", "relu", "bn"), widths=(8, 6, 4, 4), padding_mode="circular",
              batch_norm=True, seed=0):
    """A FullyCNN-shaped module (pyqg_parameterization_benchmarks): 5×5, 5×5, then 3×3
    blocks of conv, ReLU and BatchNorm2d (in ``order``), the last 3×3 conv linear."""
    import torch

    torch.manual_seed(seed)
    sizes, layers, c_in = (5, 5, 3, 3), [], 2
    for size, width in zip(sizes, widths):
        block = {"conv": torch.nn.Conv2d(c_in, width, size, padding=size // 2,
                                         padding_mode=padding_mode),
                 "relu": torch.nn.ReLU(), "bn": torch.nn.BatchNorm2d(width)}
        layers += [block[k] for k in order if batch_norm or k != "bn"]
        c_in = width
    layers.append(torch.nn.Conv2d(c_in, 1, 3, padding=1, padding_mode=padding_mode))
    module = torch.nn.Sequential(*layers)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module:
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5)
    return module.eval()


def torch_forward(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()


def inputs(n=20, seed=5):
    return np.random.default_rng(seed).standard_normal((3, n, n, 2)).astype(np.float32)


# ----------------------------------------------------------------------- Keras
@pytest.mark.parametrize("make", [keras_sequential, keras_functional])
def test_keras_import_predicts_as_the_network_and_to_keras_gives_it_back(make):
    native = make()
    model = xtl.from_keras(native, normalization=NORM)
    x = inputs()
    reference = np.asarray(native(x, training=False))
    assert np.abs(reference).max() > 0.1
    be = get_backend("keras")
    np.testing.assert_allclose(be.predict_normalized(model, x), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.to_keras()(x)), reference, atol=1e-5)
    assert model.provenance["folded_batchnorm"] and model.provenance["import_error"] < 1e-5
    # physical units: the normalization is applied
    psi, omega = x[..., 0] * 2.0, x[..., 1] * 3.0
    expected = reference[..., 0] * 0.5
    s = model.spec.shrink
    assert model.predict(psi, omega).shape == expected.shape == (3, 20 - 2 * s, 20 - 2 * s)
    np.testing.assert_allclose(model.predict(psi, omega), expected, atol=1e-5)


def test_keras_import_reads_the_architecture():
    model = xtl.from_keras(keras_sequential(), normalization=NORM)
    spec = model.spec
    assert spec.layer_kernel_sizes == (5, 3, 3) and spec.kernel_size == 5
    assert spec.layer_paddings == ("zeros", "valid", "zeros") and spec.shrink == 1
    assert spec.layer_activations == ("tanh", "tanh", "linear")
    assert spec.layer_biases == (True, True, False) and spec.widths == (6, 5, 1)
    functional = xtl.from_keras(keras_functional(), normalization=NORM).spec
    assert functional.layer_paddings == ("zeros", "valid", "zeros")
    assert functional.layer_activations == ("leaky_relu(0.1)", "tanh", "linear")


def test_transfer_of_an_imported_network_changes_only_its_layer_and_keeps_the_activation(
        les_target):
    model = xtl.from_keras(keras_sequential(), normalization={"psi": 1.0, "omega": 1.0, "pi": 1.0})
    tl = transfer(model, les_target, [2], n_samples=16, epochs=2, **FAST)
    assert tl.spec == model.spec and tl.spec.layer_activations[0] == "tanh"
    before, after = model_to_dataset(model), model_to_dataset(tl)
    for k in (1, 3):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(before[name].sel(layer=k), after[name].sel(layer=k))
    assert not np.array_equal(before.kernel.sel(layer=2), after.kernel.sel(layer=2))
    # the 3×3 layer stays 3×3: its zero-padded taps stay zero
    rim = after.kernel.sel(layer=2, tap_y=[-2, 2]).fillna(0)
    assert float(np.abs(rim).max()) == 0.0
    assert np.isfinite(tl.history.loss.values).all()


def test_the_dataset_of_mixed_kernels_round_trips_and_explains(tmp_path):
    model = xtl.from_keras(keras_functional(), normalization=NORM)
    ds = model_to_dataset(model)
    assert ds.layer_kernel_size.values.tolist() == [5, 3, 3] and ds.sizes["tap_y"] == 5
    ds.to_netcdf(tmp_path / "m.nc")
    with xr.open_dataset(tmp_path / "m.nc") as saved:
        again = model_from_dataset(saved.load())
    x = inputs()
    be = get_backend("keras")
    np.testing.assert_array_equal(be.predict_normalized(again, x), be.predict_normalized(model, x))
    filters = kernel_filters(ds, 16).compute()
    assert np.isfinite(filters.sel(layer=2)).all()
    # a 3×3 kernel zero-padded to 5×5 keeps its gain at k = 0: the sum of its taps
    w = ds.kernel.sel(layer=2, channel_out=0, channel_in=0).values
    gain = float(filters.sel(layer=2, channel_out=0, channel_in=0, ky=0, kx=0))
    assert gain == pytest.approx(abs(w.sum()), rel=1e-5)
    changed = ds.copy(deep=True)
    changed["kernel"] = changed.kernel.where(changed.layer != 3, changed.kernel * 2)
    change = kernel_change(ds, changed, pad_to=16)
    moved = change.physical_change.max(("channel_out", "channel_in"))
    assert float(moved.sel(layer=3)) > 0 and float(moved.sel(layer=[1, 2]).max()) == 0
    tampered = ds.copy(deep=True)
    tampered.kernel[1, 0, 0, 0, 0] = 1.0  # a tap outside layer 2's 3×3
    del tampered.attrs["model_id"]
    with pytest.raises(ValueError, match=r"layer 2: its spec says 3x3 taps.*non-zero taps"):
        model_from_dataset(tampered)


@pytest.mark.parametrize("layer, match", [
    ("dense", r"layer 'dense' \(Dense\) cannot be imported"),
    ("depthwise", r"layer 'dw' \(DepthwiseConv2D\) cannot be imported"),
    ("strided", r"layer 'strided' \(Conv2D with strides"),
    ("add", r"layer 'add' \(Add\) cannot be imported"),
    ("skip", r"differs from that of its layers in sequence.*computes something else"),
])
def test_keras_networks_xtl_cannot_represent_are_refused_naming_the_layer(layer, match):
    import keras

    x = inputs_ = keras.Input((16, 16, 2))
    h = keras.layers.Conv2D(2, 3, padding="same", name="c1")(x)
    if layer == "dense":
        h = keras.layers.Dense(1, name="dense")(h)
    elif layer == "depthwise":
        h = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(h)
    elif layer == "strided":
        h = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="strided")(h)
    elif layer == "add":
        h = keras.layers.Add(name="add")([h, keras.layers.Conv2D(2, 3, padding="same")(x)])
    else:
        class Residual(keras.Model):  # its layers are a chain, its call is not
            def __init__(self):
                super().__init__()
                self.c1 = keras.layers.Conv2D(2, 3, padding="same")
                self.c2 = keras.layers.Conv2D(2, 3, padding="same")

            def call(self, x):
                return self.c2(self.c1(x)) + x

        residual = Residual()
        residual(np.zeros((1, 16, 16, 2), np.float32))
        with pytest.raises(ValueError, match=match):
            xtl.from_keras(residual, inputs=["psi", "omega"], outputs=["a", "b"],
                           normalization={"psi": 1, "omega": 1, "a": 1, "b": 1})
        return
    with pytest.raises(ValueError, match=match):
        xtl.from_keras(keras.Model(inputs_, h), normalization=NORM)


def test_import_refuses_a_missing_normalization_and_channels_that_do_not_fit():
    native = keras_sequential()
    with pytest.raises(ValueError, match=r"normalization must be given.*\['psi', 'omega', 'pi'\]"):
        xtl.from_keras(native)
    with pytest.raises(ValueError, match=r"does not map inputs \['q'\]"):
        xtl.from_keras(native, inputs=["q"], outputs=["pi_q"], normalization={"q": 1, "pi_q": 1})


# --------------------------------------------------------------------- PyTorch
def test_fully_cnn_without_batchnorm_has_the_modules_weights_in_its_dataset():
    module = fully_cnn(batch_norm=False)
    model = xtl.from_torch(module, normalization=NORM)
    ds = model_to_dataset(model)
    convs = [m for m in module if type(m).__name__ == "Conv2d"]
    for k, conv in enumerate(convs, 1):
        w = conv.weight.detach().numpy()
        size = w.shape[-1]
        p = (5 - size) // 2
        held = ds.kernel.sel(layer=k).values[:w.shape[0], :w.shape[1], p:p + size, p:p + size]
        np.testing.assert_array_equal(held, w)
        np.testing.assert_array_equal(ds.bias.sel(layer=k).values[:w.shape[0]],
                                      conv.bias.detach().numpy())
    assert model.spec.layer_paddings == ("periodic",) * 5
    assert model.spec.layer_activations == ("relu",) * 4 + ("linear",)


@pytest.mark.parametrize("order", [("conv", "relu", "bn"), ("conv", "bn", "relu")],
                         ids=["relu-then-bn", "bn-then-relu"])
def test_fully_cnn_import_predicts_as_the_module_in_both_backends(order):
    module = fully_cnn(order)
    model = xtl.from_torch(module, normalization=NORM)
    x = inputs()
    reference = torch_forward(module, x)
    assert np.abs(reference).max() > 0.1
    np.testing.assert_allclose(get_backend("torch").predict_normalized(model, x), reference,
                               atol=1e-5)
    np.testing.assert_allclose(torch_forward(model.to_torch(), x), reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.to_keras()(x)), reference, atol=1e-5)
    assert len(model.provenance["folded_batchnorm"]) == 4


def test_fully_cnn_folded_kernels_are_the_formula():
    module = fully_cnn(("conv", "bn", "relu"))
    ds = model_to_dataset(xtl.from_torch(module, normalization=NORM))
    conv, bn = module[0], module[1]
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
    expected = conv.weight.detach().numpy() * scale[:, None, None, None]
    np.testing.assert_allclose(ds.kernel.sel(layer=1).values[:, :2], expected, rtol=1e-6)
    shift = (bn.bias - bn.running_mean * bn.weight / (bn.running_var + bn.eps).sqrt()).detach()
    np.testing.assert_allclose(ds.bias.sel(layer=1).values,
                               conv.bias.detach().numpy() * scale + shift.numpy(), rtol=1e-5,
                               atol=1e-6)


def test_torch_modules_xtl_cannot_represent_are_refused_naming_them():
    import torch

    with pytest.raises(ValueError, match=r"layer '1' \(Linear\) cannot be imported"):
        xtl.from_torch(torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1),
                                           torch.nn.Linear(2, 1)), normalization=NORM)
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d with stride"):
        xtl.from_torch(torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1, groups=2)),
                       normalization=NORM)
    zero_padded = fully_cnn(padding_mode="zeros")  # BN after ReLU, then a zero-padded conv
    with pytest.raises(ValueError, match=r"layer '2' normalizes the output of an activation.*"
                                         r"pads with zeros"):
        xtl.from_torch(zero_padded, normalization=NORM)
    with pytest.raises(ValueError, match=r"layer '1' \(Softplus\) cannot be imported"):
        xtl.from_torch(torch.nn.Sequential(torch.nn.Conv2d(2, 1, 3, padding=1),
                                           torch.nn.Softplus()), normalization=NORM)


def test_valid_layers_predict_the_interior_and_refuse_scores_and_the_les(les_target):
    from xtl.nn.closure import ModelClosure
    from xtl.nn.training import evaluate, predict

    model = xtl.from_keras(keras_sequential(), normalization={"psi": 1.0, "omega": 1.0, "pi": 1.0})
    pi = predict(model, les_target.isel(time=slice(0, 2)))
    assert pi.sizes == {"time": 2, "y": 14, "x": 14}
    np.testing.assert_array_equal(pi.x.values, les_target.x.values[1:-1])
    x = np.stack([les_target.psi.values[:2], les_target.omega.values[:2]], -1)
    np.testing.assert_allclose(pi.values, get_backend("keras").predict_normalized(model, x)[..., 0])
    with pytest.raises(ValueError, match="'valid' layers.*a priori scores"):
        evaluate(model, les_target)
    with pytest.raises(ValueError, match="'valid' layers.*cannot close an LES"):
        ModelClosure(model)


def test_the_own_network_example_runs_and_its_imports_agree():
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "own_network.py"))
    results = example["main"](["--epochs", "1"])
    assert results["keras_parity"] < 1e-4 and results["torch_parity"] < 1e-4
    assert results["cross_parity"] < 1e-4
    for name in ("keras", "torch"):
        moved = results[name]["moved"]
        assert moved[1] > 0 and moved[0] == 0 and moved[2:].max() == 0


def test_any_keras_activation_is_kept_and_the_torch_backend_refuses_one_it_lacks():
    import keras

    net = keras.Sequential([keras.Input((None, None, 2)),
                            keras.layers.Conv2D(3, 3, padding="same", activation="softplus"),
                            keras.layers.Conv2D(1, 3, padding="same")])
    model = xtl.from_keras(net, normalization=NORM)
    assert model.spec.layer_activations == ("softplus", "linear")
    x = inputs()
    np.testing.assert_allclose(get_backend("keras").predict_normalized(model, x),
                               np.asarray(net(x)), atol=1e-5)
    with pytest.raises(ValueError, match=r"'softplus' is no activation the torch backend knows"):
        model.to_torch()
    with pytest.raises(ValueError, match=r"layer 'c' has the activation '<lambda>'"):
        xtl.from_keras(keras.Sequential([
            keras.Input((None, None, 2)),
            keras.layers.Conv2D(1, 3, padding="same", name="c", activation=lambda t: t * 2)]),
            normalization=NORM)
