"""Tests of the PyTorch backend (xtl/nn/backends/torch.py) against numpy, finite
differences and the Keras backend on the same weights."""
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from conftest import TINY_SPEC
from xtl.nn.backends.base import get_backend
from xtl.nn.files import load_model, save_model
from xtl.nn.importers import convert
from xtl.nn.model import model_to_dataset
from xtl.nn.training import ArrayData, evaluate, train, transfer

FAST = dict(batch_size=8, learning_rate=3e-3, progress=False)
#: One spec of every padding and a leaky activation, mixed kernel sizes, a layer without bias.
MIXED = dict(n_layers=4, channels=(5, 4, 3), kernel_size=5, padding="zeros", activation="linear",
             kernel_sizes=(5, 3, 1, 3), paddings=("periodic", "reflect", "zeros", "zeros"),
             activations=("tanh", "leaky_relu(0.1)", "gelu", "linear"),
             biases=(True, False, True, True))


def weights(model):
    return model_to_dataset(model)[["kernel", "bias"]]


def randomized(backend_name, spec, seed=0):
    """A model of ``spec`` with random weights and biases (biases where it has them)."""
    be = get_backend(backend_name)
    model = be.build(spec, seed=seed)
    rng = np.random.default_rng(seed)
    be.set_weights(model, [(rng.normal(0, 0.4, w.shape).astype(np.float32),
                            rng.normal(0, 0.2, b.shape).astype(np.float32) * (b.size > 0)
                            * bias) for (w, b), bias in zip(be.get_weights(model),
                                                             model.spec.layer_biases)])
    return model


def test_import_xtl_does_not_import_torch():
    code = "import sys, xtl; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pytorch_runs_in_a_process_where_xtl_loaded_tensorflow_first():
    # triton (which PyTorch imports lazily, e.g. for an optimizer) crashes a process that
    # loaded TensorFlow first; xtl marks it missing when it loads TensorFlow
    code = ("import xtl, torch; xtl.get_backend('keras').device(); "
            "torch.optim.Adam(torch.nn.Linear(2, 2).parameters()); print('alive')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "alive", out.stderr[-2000:]


def test_torch_is_registered_and_saves_pt_files(tmp_path):
    import xtl

    assert "torch" in xtl.available_backends()
    model = randomized("torch", MIXED)
    native, dataset = save_model(model, tmp_path / "net.pt")
    assert native.suffix == ".pt"
    loaded = load_model(tmp_path / "net.pt")
    assert loaded.backend == "torch" and loaded.spec == model.spec
    xr.testing.assert_identical(weights(loaded), weights(model))
    again = load_model(dataset, backend="torch")
    xr.testing.assert_identical(weights(again), weights(model))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(Exception, match=r"junk.pt is not a model file of xtl's torch backend"):
        load_model(tmp_path / "junk.pt")


@pytest.mark.parametrize("spec", [dict(TINY_SPEC), MIXED], ids=["tiny", "mixed"])
def test_same_weights_predict_the_same_in_keras_and_torch(spec):
    torch_model = randomized("torch", spec)
    keras_model = convert(torch_model, "keras")
    x = np.random.default_rng(1).standard_normal((3, 16, 16, 2)).astype(np.float32)
    tb, kb = get_backend("torch"), get_backend("keras")
    ref = kb.predict_normalized(keras_model, x)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(tb.predict_normalized(torch_model, x), ref, atol=1e-5)
    for k in (1, 2, 3):
        a = tb.activations(torch_model, x, [k])[k]
        np.testing.assert_allclose(a, kb.activations(keras_model, x, [k])[k], atol=1e-5)
    back = convert(keras_model, "torch")
    xr.testing.assert_identical(weights(back), weights(torch_model))


def test_jvp_and_vjp_agree_with_finite_differences_and_with_keras():
    be = get_backend("torch")
    # smooth activations: a central difference of a kinked one errs where a kink is crossed
    model = randomized("torch", dict(MIXED, activations=("tanh", "gelu", "tanh", "linear")), 2)
    x = np.random.default_rng(3).standard_normal((2, 12, 12, 2)).astype(np.float32)
    rng = np.random.default_rng(4)
    for layer in (1, 2, 4):
        w, b = be.get_weights(model)[layer - 1]
        tw, tb = rng.normal(size=w.shape), rng.normal(size=b.shape) * model.spec.layer_biases[layer - 1]
        jvp = be.jvp(model, x, layer, (tw, tb))
        eps = 1e-3
        plus, minus = be.clone(model), be.clone(model)
        for m, sign in ((plus, 1), (minus, -1)):
            ws = be.get_weights(m)
            ws[layer - 1] = (w + sign * eps * tw, b + sign * eps * tb)
            be.set_weights(m, ws)
        fd = (be.predict_normalized(plus, x) - be.predict_normalized(minus, x)) / (2 * eps)
        np.testing.assert_allclose(jvp, fd, atol=1e-3 * np.abs(fd).max())
        u = rng.normal(size=jvp.shape).astype(np.float32)
        gk, gb = be.vjp(model, x, layer, u)
        # <u, J t> = <J^T u, t>
        assert np.sum(u * jvp) == pytest.approx(np.sum(gk * tw) + np.sum(gb * tb), rel=1e-4)
        keras_model, kb = convert(model, "keras"), get_backend("keras")
        np.testing.assert_allclose(jvp, kb.jvp(keras_model, x, layer, (tw, tb)), atol=1e-4)
        kk, kbias = kb.vjp(keras_model, x, layer, u)
        np.testing.assert_allclose(gk, kk, atol=1e-3 * np.abs(kk).max())


def test_torch_training_learns_and_transfer_changes_only_the_chosen_layer(les_base, les_target):
    model = train(les_base, TINY_SPEC, backend="torch", epochs=4, seed=0, **FAST)
    assert model.backend == "torch" and model.provenance["device"] in ("CPU", "GPU")
    loss = model.history.loss.values
    assert loss[-1] < loss[0]
    tl = transfer(model, les_target, [2], n_samples=16, epochs=2, **FAST)
    before, after = weights(model), weights(tl)
    for k in (1, 3):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(before[name].sel(layer=k), after[name].sel(layer=k))
    assert not before.kernel.sel(layer=2).equals(after.kernel.sel(layer=2))
    assert float(evaluate(tl, les_target).cc) > float(evaluate(model, les_target).cc) - 0.05


class Interrupting(type(get_backend("torch"))):
    """The torch backend, interrupted in epoch 2 after one batch."""

    def train_epoch(self, model, batches, epoch, on_batch=None):
        if epoch == 2:
            batches = iter(batches)
            super().train_epoch(model, [next(batches)], epoch)
            raise KeyboardInterrupt("simulated interruption")
        return super().train_epoch(model, batches, epoch, on_batch)


def test_torch_checkpoint_resumes_bitwise(les_base, tmp_path):
    ds = les_base.isel(time=slice(0, 24))
    kwargs = dict(epochs=4, seed=3, **FAST)
    reference = train(ds, TINY_SPEC, backend="torch", **kwargs)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(ds, TINY_SPEC, backend=Interrupting(), checkpoint_dir=ckpt, **kwargs)
    assert (ckpt / "train.ckpt.npz").exists()
    resumed = train(ds, TINY_SPEC, backend="torch", checkpoint_dir=ckpt, **kwargs)
    xr.testing.assert_identical(weights(resumed), weights(reference))
    np.testing.assert_array_equal(resumed.history.loss.values, reference.history.loss.values)


def test_torch_refuses_mixed_precision_and_keras_callbacks(les_base):
    with pytest.raises(ValueError, match="torch backend computes in float32"):
        get_backend("torch").build(dict(TINY_SPEC, precision="mixed_float16"))
    with pytest.raises(ValueError, match="callbacks are Keras callbacks"):
        train(les_base, TINY_SPEC, backend="torch", epochs=1, callbacks=[object()], **FAST)


def test_torch_closure_equals_its_keras_twin_in_an_les_step():
    from test_closures import _state_fields, physical_pi
    from xtl.nn.closure import ModelClosure

    model = randomized("torch", TINY_SPEC)
    model.normalization = {"psi": 0.5, "omega": 4.0, "pi": 3.0}
    model.provenance = {"grid": [16, 16]}
    twin = convert(model, "keras")
    grid, _, psi, omega = _state_fields(16, seed=0)
    got, expected = (physical_pi(ModelClosure(m), omega, grid) for m in (model, twin))
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    batched = model.predict(np.stack([psi, psi]), np.stack([omega, omega]))
    np.testing.assert_allclose(batched[1], got, atol=1e-5 * np.abs(expected).max())


def test_a_two_seed_sweep_agrees_across_the_backends_within_the_seeds_spread(les_base,
                                                                              les_target,
                                                                              tmp_path):
    from xtl.nn.sweep import layer_sweep

    base = train(les_base, TINY_SPEC, backend="torch", epochs=3, seed=0, **FAST)
    twin = convert(base, "keras")
    pool, test = les_target.isel(time=slice(0, 24)), les_target.isel(time=slice(40, 46))
    kwargs = dict(layers=[1, 3], seeds=[0, 1], n_samples=8, epochs=2, batch_size=8,
                  learning_rate=3e-3)
    sweeps = {m.backend: layer_sweep(m, pool, test, save_dir=tmp_path / m.backend, **kwargs)
              for m in (base, twin)}
    saved = load_model(tmp_path / "torch" / "tl_layer3_seed1.pt")
    assert saved.backend == "torch" and saved.provenance["retrained_layers"] == [3]
    torch_cc, keras_cc = sweeps["torch"].cc, sweeps["keras"].cc
    assert float(sweeps["torch"].base_cc) == pytest.approx(float(sweeps["keras"].base_cc),
                                                           abs=1e-5)
    spread = np.maximum(torch_cc.max("seed") - torch_cc.min("seed"),
                        keras_cc.max("seed") - keras_cc.min("seed"))
    gap = np.abs(torch_cc.mean("seed") - keras_cc.mean("seed"))
    assert (gap <= spread).all(), (gap.values, spread.values)
    # same weights, subsets, batch order and Adam: the backends differ by round-off only
    assert (gap < 1e-4).all(), gap.values


@pytest.mark.parametrize("method", ["gauss-newton", "gradient-norm"])
def test_recommenders_rank_alike_on_the_torch_and_keras_twins(les_base, les_target, method):
    from xtl.explain.recommend import recommend_layers

    model = train(les_base, TINY_SPEC, backend="torch", epochs=2, seed=0, **FAST)
    twin = convert(model, "keras")
    base, target = les_base.isel(time=slice(0, 8)), les_target.isel(time=slice(0, 8))
    scores = [recommend_layers(m, base, target, method=method, top=1) for m in (model, twin)]
    # the same weights, the same ranks; the scores to float32 round-off, which the
    # conjugate-gradient solve of an undamped Gauss-Newton step amplifies on the output
    # layer (measured 1.2 % and 2.1 % in two runs; layers 1-2 agree to 6 digits)
    np.testing.assert_array_equal(scores[0]["rank"], scores[1]["rank"])
    rtol = {"gauss-newton": 5e-2, "gradient-norm": 1e-3}[method]
    np.testing.assert_allclose(scores[0].score, scores[1].score, rtol=rtol)


# ------------------------------------------------------------ the frozen-prefix cache
@pytest.mark.parametrize("backend_name", ["keras", "torch"])
def test_suffix_of_a_network_with_per_layer_fields_continues_it(backend_name):
    """The suffix keeps each layer's own kernel size, padding, activation and bias."""
    from xtl.nn.spec import NetworkSpec, suffix_spec

    be = get_backend(backend_name)
    model = randomized(backend_name, NetworkSpec(**MIXED))
    x = np.random.default_rng(1).standard_normal((3, 12, 12, 2)).astype(np.float32)
    for first in (2, 3, 4):
        suffix = be.suffix_model(model, first)
        assert suffix.spec == suffix_spec(model.spec, first)
        assert suffix.spec.layer_paddings == model.spec.layer_paddings[first - 1:]
        entering = np.moveaxis(be.activations(model, x, [first - 1])[first - 1], 1, -1)
        np.testing.assert_allclose(be.predict_normalized(suffix, entering),
                                   be.predict_normalized(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers", [[2], [2, 3]])
def test_torch_fit_on_the_cached_prefix_equals_the_uncached_fit(les_base, layers):
    from xtl.nn.backends.loop import FitOptions, fit
    from xtl.nn.backends.prefix import fit_cached

    be = get_backend("torch")
    base = randomized("torch", TINY_SPEC)
    rng = np.random.default_rng(2)
    data = ArrayData(rng.standard_normal((16, 16, 16, 2)).astype(np.float32),
                     rng.standard_normal((16, 16, 16, 1)).astype(np.float32))
    held = ArrayData(data.x[:4] * 0.5, data.y[:4])
    options = FitOptions(epochs=3, seed=1, **FAST)
    cached, plain = be.clone(base), be.clone(base)
    suffix_calls = []
    original = be.suffix_model
    be.suffix_model = lambda m, first: suffix_calls.append(first) or original(m, first)
    try:
        history = fit_cached(be, cached, data, held, options, layers)
    finally:
        del be.suffix_model
    assert suffix_calls == [min(layers)]
    reference = fit(be, plain, data, held, options, layers=tuple(layers))
    xr.testing.assert_allclose(weights(cached), weights(plain), rtol=0, atol=1e-6)
    np.testing.assert_allclose(history["loss"], reference["loss"], rtol=1e-5)
    frozen = [k for k in range(1, 4) if k not in layers]
    xr.testing.assert_equal(weights(cached).sel(layer=frozen), weights(base).sel(layer=frozen))
    assert not weights(cached).sel(layer=layers).equals(weights(base).sel(layer=layers))
