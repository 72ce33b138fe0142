"""Tests of xtl/backends: the registry, the Keras CNN, and model <-> Dataset."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

from xtl.nn.backends.base import Backend, available_backends, get_backend, register_backend
from xtl.nn.model import Model, model_from_dataset, model_id, model_to_dataset
from xtl.nn.spec import NetworkSpec
from xtl.nn.files import load_model, save_model
from xtl.nn.backends import base as base_module
from xtl.nn.backends import loop as loop_module


# ------------------------------------------------------------- numpy reference
def np_conv(x, w, b, padding):
    """Cross-correlation written out: x (c_in, ny, nx), w (c_out, c_in, K, K), b (c_out)."""
    p = w.shape[-1] // 2
    mode = "wrap" if padding == "periodic" else "constant"
    xp = np.pad(x.astype(np.float64), ((0, 0), (p, p), (p, p)), mode=mode)
    ny, nx = x.shape[1:]
    out = np.zeros((w.shape[0], ny, nx)) + b[:, None, None]
    for ty in range(w.shape[2]):
        for tx in range(w.shape[3]):
            out += np.einsum("oi,iyx->oyx", w[:, :, ty, tx], xp[:, ty:ty + ny, tx:tx + nx])
    return out


def np_forward(ds, x, padding, upto=None):
    """Run a model Dataset on x (sample, y, x, 2) with numpy; outputs per layer."""
    outs = {}
    L = ds.sizes["layer"]
    for s in range(x.shape[0]):
        a = np.moveaxis(x[s], -1, 0)
        for i in range(L if upto is None else upto):
            co, ci = int(ds.n_channels_out[i]), int(ds.n_channels_in[i])
            w = ds.kernel.values[i, :co, :ci].astype(np.float64)
            b = ds.bias.values[i, :co].astype(np.float64)
            a = np_conv(a, w, b, padding)
            if i < L - 1:
                a = np.maximum(a, 0)
            outs.setdefault(i + 1, []).append(a)
    return {k: np.stack(v) for k, v in outs.items()}


def randomize(backend, model, seed=0):
    """Give every kernel and bias random values (biases are zero at build time)."""
    rng = np.random.default_rng(seed)
    w = [(rng.standard_normal(k.shape).astype(np.float32) * 0.3,
          rng.standard_normal(b.shape).astype(np.float32) * 0.3)
         for k, b in backend.get_weights(model)]
    backend.set_weights(model, w)
    return model


@pytest.fixture(scope="module")
def keras_backend():
    return get_backend("keras")


# ------------------------------------------------------------------- registry
def test_import_xtl_does_not_import_tensorflow():
    code = ("import sys, xtl, xtl.nn.backends, xtl.nn.training, xtl.data.metrics, xtl.explain.activations;"
            "b = xtl.nn.backends.get_backend.__name__;"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            "sorted(m for m in sys.modules if 'tensorflow' in m or 'keras' in m)[:5]")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_get_backend_keras_and_unknown(keras_backend):
    assert keras_backend.name == "keras" and keras_backend.suffix == ".keras"
    assert get_backend() is keras_backend
    assert "keras" in available_backends()
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*available: .*keras"):
        get_backend("nope")


def test_register_backend(keras_backend):
    class Renamed(type(keras_backend)):
        name = "renamed-keras"

    register_backend("renamed-keras", Renamed)
    try:
        assert isinstance(get_backend("renamed-keras"), Renamed)
        with pytest.raises(ValueError, match="already|registered"):
            register_backend("renamed-keras", Renamed)
        with pytest.raises(TypeError, match="Backend"):
            register_backend("bad", 42)
    finally:
        from xtl.nn.backends import base as backends  # the registry lives there

        backends._REGISTRY.pop("renamed-keras", None)
        backends._INSTANCES.pop("renamed-keras", None)


def test_entry_point_group_is_discovered(tmp_path):
    """A package declaring the 'xtl.backends' entry point is found by name."""
    (tmp_path / "xtl_fake_backend.py").write_text(textwrap.dedent("""
        from xtl.nn.backends.keras import KerasBackend
        class FakeBackend(KerasBackend):
            name = "fake"
    """))
    dist = tmp_path / "xtl_fake_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: xtl-fake-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[xtl.backends]\nfake = xtl_fake_backend:FakeBackend\n")
    code = ("import sys; sys.path.insert(0, %r);"
            "import xtl.nn.backends as b;"
            "assert 'fake' in b.available_backends(), b.available_backends();"
            "assert type(b.get_backend('fake')).__name__ == 'FakeBackend'" % str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------- spec
def test_spec_defaults_are_the_paper_network():
    s = NetworkSpec()
    assert (s.n_layers, s.channels, s.kernel_size, s.padding) == (11, 64, 5, "zeros")
    assert s.widths == (64,) * 10 + (1,) and s.in_channels == (2,) + (64,) * 10


@pytest.mark.parametrize("bad, match", [
    (dict(n_layers=0), "n_layers"),
    (dict(kernel_size=4), "kernel_size must be an odd"),
    (dict(padding="reflect"), "padding must be one of"),
    (dict(channels=(4, 4), n_layers=2), "channels"),
    (dict(precision="float64"), "precision"),
    (dict(depth=3), "unknown keys"),
])
def test_spec_bad_values(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        NetworkSpec.from_any(bad)


# ----------------------------------------------------- conv == numpy reference
@pytest.mark.parametrize("padding", ["zeros", "periodic"])
def test_single_tap_kernel_is_a_shift(keras_backend, padding):
    """kernel[tap_y=1, tap_x=-2] = 1 means out[y, x] = in[y+1, x-2]."""
    m = keras_backend.build(dict(n_layers=1, kernel_size=5, padding=padding))
    ds = model_to_dataset(m)
    w = np.zeros((1, 2, 5, 5), np.float32)
    w[0, 1, ds.tap_y.values.tolist().index(1), ds.tap_x.values.tolist().index(-2)] = 1.0
    keras_backend.set_weights(m, [(w, np.zeros(1, np.float32))])
    x = np.random.default_rng(0).standard_normal((2, 12, 16, 2)).astype(np.float32)
    out = keras_backend.predict_normalized(m, x)[..., 0]
    field = x[..., 1]
    expect = np.roll(field, shift=(-1, 2), axis=(1, 2))
    if padding == "zeros":
        expect[:, -1, :] = 0.0  # y+1 leaves the grid on the last row
        expect[:, :, :2] = 0.0  # x-2 leaves it on the first two columns
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("padding", ["zeros", "periodic"])
def test_keras_conv_equals_numpy_cross_correlation(keras_backend, padding):
    """The whole network, from its Dataset's kernels, equals a numpy forward pass."""
    m = keras_backend.build(dict(n_layers=3, channels=(3, 5), kernel_size=5, padding=padding),
                            seed=3)
    randomize(keras_backend, m, seed=4)
    ds = model_to_dataset(m)
    x = np.random.default_rng(1).standard_normal((2, 12, 16, 2)).astype(np.float32)
    ref = np_forward(ds, x, padding)
    acts = keras_backend.activations(m, x, [1, 2, 3])
    for k in (1, 2, 3):
        np.testing.assert_allclose(acts[k], ref[k], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(keras_backend.predict_normalized(m, x)[..., 0], ref[3][:, 0],
                               rtol=1e-4, atol=1e-4)
    if padding == "periodic":  # equivariant to periodic shifts; zero padding is not
        xs = np.roll(x, (3, -5), axis=(1, 2))
        np.testing.assert_allclose(keras_backend.predict_normalized(m, xs)[..., 0],
                                   np.roll(ref[3][:, 0], (3, -5), axis=(1, 2)),
                                   rtol=1e-4, atol=1e-4)


def test_network_works_on_any_grid_size(keras_backend):
    m = keras_backend.build(dict(n_layers=2, channels=2, kernel_size=3, padding="periodic"))
    for n in (8, 20):
        x = np.ones((1, n, n, 2), np.float32)
        assert keras_backend.predict_normalized(m, x).shape == (1, n, n, 1)


# ----------------------------------------------------------- model as Dataset
def test_layer_numbering_in_dataset(keras_backend):
    m = keras_backend.build(dict(n_layers=4, channels=6, kernel_size=3))
    ds = model_to_dataset(m)
    assert ds.kernel.dims == ("layer", "channel_out", "channel_in", "tap_y", "tap_x")
    assert ds.bias.dims == ("layer", "channel_out")
    assert ds.layer.values.tolist() == [1, 2, 3, 4]
    assert ds.tap_y.values.tolist() == [-1, 0, 1]
    k1 = ds.kernel.sel(layer=1)
    assert np.isfinite(k1.isel(channel_in=[0, 1])).all()  # layer 1 takes the 2 inputs
    assert np.isnan(k1.isel(channel_in=slice(2, None))).all()
    kL = ds.kernel.sel(layer=4)
    assert np.isfinite(kL.isel(channel_out=0)).all()  # layer L gives 1 output
    assert np.isnan(kL.isel(channel_out=slice(1, None))).all()
    assert np.isnan(ds.bias.sel(layer=4).values[1:]).all()
    assert ds.n_channels_out.values.tolist() == [6, 6, 6, 1]
    # Keras's own layers agree: conv_1 has 2 input channels, conv_L 1 output channel
    convs = keras_backend.conv_layers(m)
    assert [c.name for c in convs] == ["conv_1", "conv_2", "conv_3", "conv_4"]
    assert tuple(convs[0].kernel.shape) == (3, 3, 2, 6)
    assert tuple(convs[-1].kernel.shape) == (3, 3, 6, 1)


@pytest.mark.parametrize("padding", ["zeros", "periodic"])
def test_model_dataset_model_predicts_identically(keras_backend, padding, tmp_path):
    m = keras_backend.build(dict(n_layers=3, channels=4, kernel_size=3, padding=padding),
                            {"psi": 2.0, "omega": 3.0, "pi": 0.5}, seed=2)
    randomize(keras_backend, m, seed=5)
    m.provenance = {"training_case": "demo", "retrained_layers": [2], "n_samples": 7}
    x = np.random.default_rng(2).standard_normal((3, 16, 16, 2)).astype(np.float32)
    ref = keras_backend.predict_normalized(m, x)

    ds = model_to_dataset(m)
    m2 = model_from_dataset(ds)
    np.testing.assert_array_equal(keras_backend.predict_normalized(m2, x), ref)
    assert m2.spec == m.spec and m2.normalization == m.normalization
    assert m2.provenance == m.provenance
    assert ds.attrs["padding"] == padding and ds.attrs["norm_std_omega"] == 3.0

    path = tmp_path / "model.nc"
    ds.to_netcdf(path)
    with xr.open_dataset(path) as back:
        m3 = model_from_dataset(back.load())
    np.testing.assert_array_equal(keras_backend.predict_normalized(m3, x), ref)
    assert model_id(m3) == model_id(m)


def test_keras_and_netcdf_round_trip(keras_backend, tmp_path, trained_model):
    m = trained_model
    native, nc = save_model(m, tmp_path / "base.keras")
    assert native.exists() and nc == tmp_path / "base.nc" and nc.exists()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]  # atomic: no leftovers
    rng = np.random.default_rng(0)
    psi, omega = rng.standard_normal((2, 4, 16, 16)).astype(np.float32)
    ref = m.predict(psi, omega)
    for p in (native, nc):
        back = load_model(p)
        np.testing.assert_array_equal(back.predict(psi, omega), ref)
        assert back.normalization == m.normalization
        assert back.provenance == m.provenance
        assert back.spec == m.spec
        np.testing.assert_array_equal(back.history.loss.values, m.history.loss.values)


def test_save_model_refuses_to_overwrite(trained_model, tmp_path):
    path = tmp_path / "m.keras"
    native, nc = save_model(trained_model, path)
    before = (native.stat().st_mtime_ns, nc.stat().st_mtime_ns)
    with pytest.raises(FileExistsError, match=r"m\.keras.*overwrite=True"):
        save_model(trained_model, path)
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        trained_model.save(path)
    assert (native.stat().st_mtime_ns, nc.stat().st_mtime_ns) == before  # nothing written
    native.unlink()  # only the .nc is left: still refused, and the .keras not written
    with pytest.raises(FileExistsError, match=r"m\.nc.*overwrite=True"):
        save_model(trained_model, path)
    assert not native.exists()
    assert trained_model.save(path, overwrite=True) == (native, nc)
    assert native.exists() and nc.stat().st_mtime_ns != before[1]
    assert model_id(load_model(nc)) == model_id(trained_model)
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_model(trained_model, tmp_path / "no" / "m.keras")


def test_array_digest():
    a = [np.zeros((2, 3), np.float32), np.ones(3, np.float32)]
    assert loop_module.array_digest(a) == loop_module.array_digest([x.copy() for x in a])
    assert loop_module.array_digest(a) != loop_module.array_digest([a[0].reshape(3, 2), a[1]])
    b = [a[0], a[1].copy()]
    b[1][2] = 2.0
    assert loop_module.array_digest(a) != loop_module.array_digest(b)


def test_save_model_wrong_suffix(trained_model, tmp_path):
    with pytest.raises(ValueError, match=r"must end with '.keras'"):
        save_model(trained_model, tmp_path / "model.h5")


def test_model_from_dataset_rejects_non_model():
    with pytest.raises(ValueError, match="'kernel' and 'bias'"):
        model_from_dataset(xr.Dataset({"psi": ("x", [1.0])}, attrs={"backend": "keras"}))


def test_predict_applies_the_stored_normalization(keras_backend):
    """predict(psi, omega) = std_pi * net(psi/std_psi, omega/std_omega)."""
    m = keras_backend.build(dict(n_layers=2, channels=3, kernel_size=3, padding="periodic"),
                            {"psi": 2.0, "omega": 4.0, "pi": 10.0}, seed=1)
    randomize(keras_backend, m, seed=1)
    rng = np.random.default_rng(3)
    psi, omega = rng.standard_normal((2, 2, 3, 12, 12)).astype(np.float32)
    out = m.predict(psi, omega)
    assert out.shape == psi.shape
    x = np.stack([psi / 2.0, omega / 4.0], axis=-1).reshape(6, 12, 12, 2)
    np.testing.assert_allclose(out.reshape(6, 12, 12),
                               10.0 * keras_backend.predict_normalized(m, x)[..., 0], rtol=1e-6)
    with pytest.raises(ValueError, match="of one shape"):
        m.predict(psi, omega[..., :5])


def test_same_seed_same_weights(keras_backend):
    spec = dict(n_layers=3, channels=4, kernel_size=3)
    a = model_to_dataset(keras_backend.build(spec, seed=7))
    b = model_to_dataset(keras_backend.build(spec, seed=7))
    c = model_to_dataset(keras_backend.build(spec, seed=8))
    xr.testing.assert_identical(a.kernel, b.kernel)
    assert not np.array_equal(a.kernel.values, c.kernel.values, equal_nan=True)


def test_clone_is_independent(keras_backend):
    m = keras_backend.build(dict(n_layers=2, channels=2, kernel_size=3), seed=1)
    c = keras_backend.clone(m)
    assert model_id(c) == model_id(m)
    randomize(keras_backend, c, seed=9)
    assert model_id(c) != model_id(m)


def test_mixed_precision_builds_and_predicts_float32(keras_backend):
    m = keras_backend.build(dict(n_layers=2, channels=4, kernel_size=3,
                                 precision="mixed_bfloat16"), seed=0)
    randomize(keras_backend, m)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2)).astype(np.float32)
    out = keras_backend.predict_normalized(m, x)[..., 0]
    assert out.dtype == np.float32
    ref = np_forward(model_to_dataset(m), x, "zeros")[2][:, 0]
    np.testing.assert_allclose(out, ref, rtol=0.05, atol=0.05)  # bfloat16 compute
    assert model_to_dataset(m).kernel.dtype == np.float32


def test_activations_bad_layer(keras_backend):
    m = keras_backend.build(dict(n_layers=2, channels=2, kernel_size=3))
    x = np.zeros((1, 8, 8, 2), np.float32)
    for bad in (0, 3):
        with pytest.raises(ValueError, match=r"layer numbers in 1\.\.2"):
            keras_backend.activations(m, x, [bad])


def test_backend_base_is_framework_neutral():
    """The neutral layer declares the protocol without a framework import."""
    assert issubclass(get_backend("keras").__class__, Backend)
    assert "tensorflow" not in base_module.__dict__ and "keras" not in base_module.__dict__
    assert isinstance(Model("keras", None, NetworkSpec(n_layers=1), {}).n_layers, int)


# ------------------------------------------- the shared loop with a toy backend
class ToyBackend(Backend):
    """A numpy 1x1-conv linear network (Π = w·(ψ, ω) + b), trained by SGD with momentum.

    It implements only the primitives; the epochs, early stopping, checkpoints and
    history come from the shared loop. ``options.callbacks`` are its native callbacks:
    ``cb(epoch, batch)`` after each batch.
    """

    name = "toy"

    class Net:
        def __init__(self, w, b):
            self.w, self.b, self.opt = w, b, None

    def build(self, spec, normalization=None, *, seed=0, variables=None):
        spec = NetworkSpec.from_any(spec)
        assert spec.n_layers == 1 and spec.kernel_size == 1, "the toy is one 1x1 layer"
        rng = np.random.default_rng(seed)
        net = self.Net(rng.standard_normal((1, 2, 1, 1)).astype(np.float32),
                       np.zeros(1, np.float32))
        norm = normalization or {"psi": 1.0, "omega": 1.0, "pi": 1.0}
        return Model(self.name, net, spec, dict(norm), {"seed": seed})

    def clone(self, model):
        return Model(self.name, self.Net(model.native.w.copy(), model.native.b.copy()),
                     model.spec, dict(model.normalization), dict(model.provenance))

    def get_weights(self, model):
        return [(model.native.w.copy(), model.native.b.copy())]

    def set_weights(self, model, weights):
        (w, b), = weights
        model.native.w, model.native.b = np.array(w, np.float32), np.array(b, np.float32)

    def predict_normalized(self, model, x, *, batch_size=32):
        return (np.asarray(x, np.float32) @ model.native.w[0, :, 0, 0] + model.native.b[0])[..., None]

    def activations(self, model, x, layers, *, batch_size=32):
        return {1: np.moveaxis(self.predict_normalized(model, x), -1, 1)}

    def save(self, model, path):
        raise NotImplementedError("the toy backend does not save")

    def load(self, path):
        raise NotImplementedError("the toy backend does not load")

    def prepare_fit(self, model, layers, options):
        net = model.native
        net.opt = {"lr": np.float32(options.learning_rate), "callbacks": options.callbacks,
                   "m": [np.zeros_like(net.w), np.zeros_like(net.b)]}

    def train_epoch(self, model, batches, epoch, on_batch=None):
        net, total, count = model.native, 0.0, 0
        for i, (x, y) in enumerate(batches):
            err = self.predict_normalized(model, x) - y
            gw = (2 * np.einsum("syxo,syxc->c", err, x) / err.size).reshape(net.w.shape)
            gb = np.array([2 * err.mean()], np.float32)
            m = net.opt["m"]
            m[0], m[1] = np.float32(0.9) * m[0] + gw, np.float32(0.9) * m[1] + gb
            net.w = (net.w - net.opt["lr"] * m[0]).astype(np.float32)
            net.b = (net.b - net.opt["lr"] * m[1]).astype(np.float32)
            total, count = total + float(np.sum(err.astype(np.float64) ** 2)), count + err.size
            for callback in net.opt["callbacks"]:
                callback(epoch, i)
            if on_batch is not None:
                on_batch(i, total / count)
        return total / count

    def get_state(self, model):
        net = model.native
        return [net.w.copy(), net.b.copy(), net.opt["m"][0].copy(), net.opt["m"][1].copy()]

    def set_state(self, model, state):
        net = model.native
        net.w, net.b, m0, m1 = (np.array(a) for a in state)
        net.opt["m"] = [m0, m1]


def toy_data(n, seed, sign=1.0):
    from xtl.nn.training import ArrayData

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4, 4, 2)).astype(np.float32)
    y = sign * (0.7 * x[..., :1] - 0.3 * x[..., 1:] + 0.1)
    y = (y + 0.01 * rng.standard_normal(y.shape)).astype(np.float32)
    return ArrayData(x, y)


TOY_SPEC = dict(n_layers=1, kernel_size=1, channels=1)


def toy_fit(data, val, callbacks=(), **options):
    from xtl.nn.backends.loop import FitOptions

    backend = ToyBackend()
    model = backend.build(TOY_SPEC, seed=0)
    options = FitOptions.merge(dict(epochs=8, batch_size=8, learning_rate=0.02,
                                    progress=False, callbacks=callbacks), **options)
    return model, backend.fit(model, data, val, options)


def test_toy_backend_learns_with_the_shared_loop():
    model, history = toy_fit(toy_data(40, 0), toy_data(10, 1), epochs=15)
    assert list(history) == ["loss", "val_loss", "epoch_time"]
    assert all(len(v) == 15 for v in history.values())
    assert history["loss"][-1] < 0.01 * history["loss"][0]
    (w, b), = ToyBackend().get_weights(model)
    np.testing.assert_allclose(w.ravel(), [0.7, -0.3], atol=0.02)
    np.testing.assert_allclose(b, [0.1], atol=0.02)
    assert ToyBackend().device() == "unknown"


def test_toy_backend_early_stopping_restores_the_best_epoch_bitwise():
    """Validated on targets of the opposite sign, the validation loss rises while the
    toy learns; the weights returned are those after the best epoch, bitwise."""
    data, val = toy_data(40, 0), toy_data(10, 1, sign=-1.0)
    stopped, history = toy_fit(data, val, epochs=30, patience=3)
    best = int(np.argmin(history["val_loss"]))
    assert len(history["loss"]) == best + 1 + 3 < 30  # stopped 3 epochs after the best
    again, _ = toy_fit(data, val, epochs=best + 1)  # the same run, up to the best epoch
    assert ToyBackend().get_weights(stopped)[0][0].tobytes() == \
        ToyBackend().get_weights(again)[0][0].tobytes()
    flat, flat_history = toy_fit(data, val, epochs=10, patience=2, learning_rate=0.0)
    assert len(flat_history["loss"]) == 3  # nothing improves after epoch 1


def test_toy_backend_resumes_an_interrupted_fit_bitwise(tmp_path):
    data, val = toy_data(40, 0), toy_data(10, 1)
    reference, ref_history = toy_fit(data, val, epochs=5)

    def interrupt(epoch, batch):
        if (epoch, batch) == (2, 1):
            raise KeyboardInterrupt("simulated interruption")

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        toy_fit(data, val, callbacks=[interrupt], epochs=5, checkpoint_dir=ckpt)
    assert (ckpt / "train.ckpt.npz").exists()
    resumed, history = toy_fit(data, val, epochs=5, checkpoint_dir=ckpt)
    for a, b in zip(ToyBackend().get_weights(resumed)[0], ToyBackend().get_weights(reference)[0]):
        assert a.tobytes() == b.tobytes()  # momentum restored too, or this differs
    assert history["loss"] == ref_history["loss"] and len(history["epoch_time"]) == 5
    with pytest.raises(ValueError, match=r"different training \(it differs in: seed\)"):
        toy_fit(data, val, epochs=5, seed=1, checkpoint_dir=ckpt)


def test_toy_backend_through_xtl_train():
    from conftest import make_les
    from xtl.nn.training import train

    register_backend("toy", ToyBackend, overwrite=True)
    try:
        m = train(make_les(nt=16, seed=0), TOY_SPEC, backend="toy", epochs=2, batch_size=4,
                  learning_rate=0.01, progress=False)
        assert m.backend == "toy" and m.provenance["device"] == "unknown"
        assert m.history.sizes["epoch"] == 2
        assert model_to_dataset(m).kernel.shape == (1, 1, 2, 1, 1)
    finally:
        from xtl.nn.backends import base as backends  # the registry lives there

        backends._REGISTRY.pop("toy", None)
        backends._INSTANCES.pop("toy", None)


def test_register_backend_refuses_what_is_not_a_backend():
    class NotABackend:
        name = "nope"

    class Partial(Backend):  # abstract methods left out
        name = "partial"

    with pytest.raises(TypeError, match="Backend"):
        register_backend("nope", NotABackend)
    with pytest.raises(TypeError, match=r"abstract Backend methods \[.*'train_epoch'"):
        register_backend("partial", Partial)
    with pytest.raises(TypeError):
        Backend()
    assert "nope" not in available_backends() and "partial" not in available_backends()


def test_prefetch_keeps_order_raises_and_stops():
    from xtl.nn.backends.loop import Prefetch

    with Prefetch(iter(range(50)), depth=2) as p:
        assert list(p) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError("bad block")

    with pytest.raises(RuntimeError, match="bad block"), Prefetch(failing()) as p:
        list(p)
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with Prefetch(endless(), depth=2) as p:
        assert next(iter(p)) == 0
    p._thread.join(timeout=5)
    assert not p._thread.is_alive() and len(produced) < 10


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_model_pickles_and_deep_copies_after_keras_use(keras_backend):
    """The Keras state (compiled functions) is the backend's, not the Model's."""
    import copy
    import dataclasses
    import pickle

    m = keras_backend.build(dict(n_layers=2, channels=3, kernel_size=3, padding="periodic"),
                            seed=1)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 2)).astype(np.float32)
    ref = keras_backend.compiled_forward(m)(x)
    keras_backend.activations(m, x, [1])
    assert "cache" not in {f.name for f in dataclasses.fields(Model)}
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert other.native is not m.native
        np.testing.assert_array_equal(keras_backend.compiled_forward(other)(x), ref)


# --------------------------------------------------------------------------- checked whole on load
def _small_model_dataset(channels=4):
    model = get_backend("keras").build(NetworkSpec(n_layers=3, kernel_size=3, channels=channels),
                                       {"psi": 1.0, "omega": 1.0, "pi": 1.0}, seed=0)
    return model_to_dataset(model)


def test_model_whose_spec_says_fewer_channels_than_its_kernel_holds_is_refused(tmp_path):
    import json

    from xtl.nn.dataset import SPEC_ATTR

    ds = _small_model_dataset(channels=4)
    spec = json.loads(ds.attrs[SPEC_ATTR])
    spec["channels"] = 2  # the spec shrinks; the kernel still holds 4 finite channels
    ds.attrs[SPEC_ATTR] = json.dumps(spec)
    del ds.attrs["model_id"]
    with pytest.raises(ValueError, match=r"layer 1: its spec says 2 output .* numbers in 4 output"):
        model_from_dataset(ds)
    ds.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(ValueError, match=r"bad\.nc.*layer 1: its spec says 2 output"):
        load_model(tmp_path / "bad.nc")


def test_model_with_a_tampered_weight_and_its_old_model_id_is_refused(tmp_path):
    ds = _small_model_dataset()
    kernel = ds.kernel.values.copy()
    kernel[1, 0, 0, 1, 1] += 0.5
    ds["kernel"] = (ds.kernel.dims, kernel, ds.kernel.attrs)
    with pytest.raises(ValueError, match="model_id"):
        model_from_dataset(ds)
    ds.to_netcdf(tmp_path / "tampered.nc")
    with pytest.raises(ValueError, match=r"tampered\.nc.*model_id"):
        load_model(tmp_path / "tampered.nc")
    del ds.attrs["model_id"]  # a change made on purpose loads without the stale id
    assert model_id(model_from_dataset(ds)) != _small_model_dataset().attrs["model_id"]


def test_good_model_dataset_round_trips_through_the_checks(tmp_path):
    ds = _small_model_dataset()
    ds.to_netcdf(tmp_path / "good.nc")
    back = load_model(tmp_path / "good.nc")
    assert model_id(back) == ds.attrs["model_id"]
    np.testing.assert_array_equal(model_to_dataset(back).kernel.values, ds.kernel.values)
