"""Tests of xtl/nn/backends/prefix.py: training layers l..L on the cached output of layers 1..l-1."""
import tempfile

import numpy as np
import pytest
import xarray as xr

from conftest import TINY_SPEC
from xtl.nn.backends import get_backend
from xtl.nn.backends.prefix import prefix_bytes
from xtl.nn.model import model_to_dataset
from xtl.nn.spec import NetworkSpec, suffix_spec
from xtl.nn.training import ArrayData, StreamData, evaluate, transfer

FAST = dict(batch_size=5, learning_rate=3e-3, progress=False)


def weights(model):
    return model_to_dataset(model)[["kernel", "bias"]]


def channel_probe():
    """A Keras callback recording the input channels of the network it trains (2 for the
    whole network, the width of layer l-1 for a cached prefix's suffix) in ``.seen``."""
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_begin(self, logs=None):
            self.seen.append(int(self.model.inputs[0].shape[-1]))

    return Probe()


# ------------------------------------------------------- same result as uncached
@pytest.mark.parametrize("layers", [[2], [3], [2, 3], [1], [1, 3]])
def test_cached_transfer_equals_uncached(trained_model, les_target, layers):
    """A single layer, a pair, the last layer, and layer 1 (empty prefix: not cached)."""
    kwargs = dict(n_samples=12, epochs=3, patience=2, **FAST)
    probe = channel_probe()
    cached = transfer(trained_model, les_target, layers, callbacks=[probe], **kwargs)
    plain = transfer(trained_model, les_target, layers, cache_prefix=False, **kwargs)
    # the cache was used exactly when no layer 1 is trained: the suffix takes 4 channels
    assert probe.seen == [2 if 1 in layers else 4]
    xr.testing.assert_allclose(weights(cached), weights(plain), rtol=0, atol=1e-6)
    if 1 in layers:  # the same path: bitwise
        xr.testing.assert_equal(weights(cached), weights(plain))
    cc_cached, cc_plain = float(evaluate(cached, les_target).cc), float(evaluate(plain, les_target).cc)
    assert abs(cc_cached - cc_plain) < 1e-6
    np.testing.assert_allclose(cached.history.loss, plain.history.loss, rtol=1e-6)
    # frozen layers stay bitwise the base's
    frozen = [k for k in range(1, 4) if k not in layers]
    xr.testing.assert_equal(weights(cached).sel(layer=frozen),
                                weights(trained_model).sel(layer=frozen))
    # training moved the trained layers
    assert not weights(cached).sel(layer=layers).equals(weights(trained_model).sel(layer=layers))


def test_suffix_model_shares_weights_and_equals_the_network(trained_model, les_target):
    be = get_backend("keras")
    model = be.clone(trained_model)
    x = np.random.default_rng(0).standard_normal((3, 16, 16, 2)).astype(np.float32)
    suffix = be.suffix_model(model, 2)
    assert suffix.spec == suffix_spec(model.spec, 2) and suffix.n_layers == 2
    entering = np.moveaxis(be.activations(model, x, [1])[1], 1, -1)
    np.testing.assert_allclose(be.predict_normalized(suffix, entering),
                               be.predict_normalized(model, x), rtol=1e-5, atol=1e-6)
    # shared, not copied: setting the suffix's weights sets the network's layers 2..3
    new = [(k * 0 + 0.5, b * 0 - 1.0) for k, b in be.get_weights(suffix)]
    be.set_weights(suffix, new)
    for (k, b), (k2, b2) in zip(be.get_weights(model)[1:], new):
        np.testing.assert_array_equal(k, k2)
        np.testing.assert_array_equal(b, b2)


def test_suffix_spec():
    spec = NetworkSpec(n_layers=4, channels=(3, 5, 7), kernel_size=3, input_channels=2)
    tail = suffix_spec(spec, 3)
    assert (tail.n_layers, tail.input_channels, tail.widths) == (2, 5, (7, 1))
    last = suffix_spec(spec, 4)
    assert (last.n_layers, last.input_channels, last.widths) == (1, 7, (1,))
    for bad in (1, 5, 2.0):
        with pytest.raises(ValueError, match=r"first must be a layer in 2..4 .*got"):
            suffix_spec(spec, bad)
    # activations entering layer 3 (5 channels) and the target (1): 32² samples of 4 bytes
    assert prefix_bytes(spec, 3, 10, (32, 32)) == 10 * 32 * 32 * 6 * 4


# ------------------------------------------------------------ the sample order
@pytest.mark.parametrize("shuffle", [True, False])
def test_order_is_the_order_of_the_batches(shuffle):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 4, 4, 2)).astype(np.float32)
    y = rng.standard_normal((23, 4, 4, 1)).astype(np.float32)
    held = ArrayData(x, y)
    streamed = StreamData({"psi": x[:, None, :, :, 0], "omega": x[:, None, :, :, 1],
                           "pi": y[:, None, :, :, 0]}, {"psi": 1.0, "omega": 1.0, "pi": 1.0},
                          np.arange(23), block=6)
    for data in (held, streamed):
        order = data.order(3, 7, shuffle)
        assert sorted(order.tolist()) == list(range(23))
        batches = list(data.batches(3, 5, 7, shuffle))
        np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x[order])
        np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y[order])
        assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
    assert (held.order(3, 7, shuffle) == np.arange(23)).all() != shuffle


def test_streamed_data_train_the_same_cached(trained_model, les_target):
    kwargs = dict(n_samples=12, epochs=2, **FAST)
    streamed = transfer(trained_model, les_target.chunk({"time": 4}), [2], in_memory=False,
                        block=4, **kwargs)
    plain = transfer(trained_model, les_target.chunk({"time": 4}), [2], in_memory=False,
                     block=4, cache_prefix=False, **kwargs)
    xr.testing.assert_allclose(weights(streamed), weights(plain), rtol=0, atol=1e-6)


# --------------------------------------------------------- bound and spill file
def test_cache_above_the_memory_limit_spills_to_a_removed_file(trained_model, les_target,
                                                                tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []

    class Look(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.extend(sorted(p.name for d in tmp_path.glob("xtl-prefix-*")
                               for p in d.iterdir()))

    kwargs = dict(n_samples=12, epochs=2, **FAST)
    spilled = transfer(trained_model, les_target, [2], memory_limit=1000, callbacks=[Look()],
                       **kwargs)
    held = transfer(trained_model, les_target, [2], **kwargs)
    assert seen == ["part0.f32", "part1.f32", "part2.f32", "part3.f32"]  # train x, y; val x, y
    assert not list(tmp_path.glob("xtl-prefix-*"))  # removed afterwards
    xr.testing.assert_equal(weights(spilled), weights(held))


# ------------------------------------------------------------------ checkpoints
def test_cached_fit_resumes_bitwise(trained_model, les_target, tmp_path):
    import keras

    kwargs = dict(n_samples=12, epochs=4, seed=3, **FAST)
    reference = transfer(trained_model, les_target, [2, 3], **kwargs)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                raise KeyboardInterrupt("simulated interruption")

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        transfer(trained_model, les_target, [2, 3], checkpoint_dir=ckpt,
                 callbacks=[Interrupt()], **kwargs)
    assert not list(tmp_path.glob("xtl-prefix-*"))
    resumed = transfer(trained_model, les_target, [2, 3], checkpoint_dir=ckpt, **kwargs)
    xr.testing.assert_equal(weights(resumed), weights(reference))
    np.testing.assert_array_equal(resumed.history.loss.values, reference.history.loss.values)
    # the uncached training is another training: its checkpoint is not this one
    with pytest.raises(ValueError, match=r"different training \(it differs in: prefix_cache\)"):
        transfer(trained_model, les_target, [2, 3], checkpoint_dir=ckpt, cache_prefix=False,
                 **kwargs)
