"""Tests of xtl/training.py: train, transfer, the data pipeline."""
import numpy as np
import pytest
import xarray as xr

from conftest import TINY_SPEC, make_les
from xtl.nn.model import model_id, model_to_dataset
from xtl.nn.training import (
    StreamData,
    check_les_dataset,
    compute_normalization,
    evaluate,
    predict,
    train,
    transfer,
)

FAST = dict(batch_size=8, learning_rate=3e-3, progress=False)


def weights(model):
    return model_to_dataset(model)[["kernel", "bias"]]


# --------------------------------------------------------------------- learning
def test_tiny_network_learns_a_laplacian():
    """Π = 5-point periodic Laplacian of ω̄ is learned to CC > 0.99 on unseen data."""
    spec = dict(n_layers=2, channels=8, kernel_size=3, padding="periodic")
    model = train(make_les(nt=64, seed=0), spec, epochs=20, batch_size=8,
                  learning_rate=1e-2, seed=0, progress=False)
    scores = evaluate(model, make_les(nt=16, seed=9))
    assert float(scores.cc) > 0.99
    assert float(scores.rel_l2) < 0.15
    hist = model.history
    assert hist.loss.values[-1] < 0.1 * hist.loss.values[0]


def test_history_and_provenance(trained_model, les_base):
    h = trained_model.history
    assert isinstance(h, xr.Dataset) and h.epoch.values.tolist() == [1, 2, 3]
    assert {"loss", "val_loss", "epoch_time"} <= set(h.data_vars)
    assert h.loss.values[-1] < h.loss.values[0]
    p = trained_model.provenance
    assert p["training_case"] == "synthetic-base" and p["kind"] == "base"
    assert p["grid"] == [16, 16]
    assert p["n_samples"] + p["n_validation"] == les_base.sizes["time"]
    assert p["n_validation"] == round(0.1 * les_base.sizes["time"])
    norm = trained_model.normalization
    train_part = les_base.isel(time=slice(0, p["n_samples"]))
    for v in ("psi", "omega", "pi"):  # training-set (not validation) std
        assert norm[v] == pytest.approx(float(train_part[v].astype("f8").std()), rel=1e-6)


def test_predict_and_evaluate_return_labeled_data(trained_model, les_base):
    pred = predict(trained_model, les_base)
    assert pred.dims == les_base.pi.dims and pred.name == "pi"
    np.testing.assert_array_equal(pred.time.values, les_base.time.values)
    np.testing.assert_array_equal(
        pred.values, trained_model.predict(les_base.psi.values, les_base.omega.values))
    scores = evaluate(trained_model, les_base)
    assert {"cc", "cc_forward", "cc_backscatter", "rel_l2", "spectrum_error"} <= set(scores)
    assert -1 <= float(scores.cc) <= 1


def test_member_dims_are_stacked_into_samples():
    ds = make_les(nt=6, members=2, seed=3)
    m = train(ds, TINY_SPEC, epochs=1, validation=0.25, **FAST)
    assert m.provenance["n_samples"] == 9 and m.provenance["n_validation"] == 3
    pred = predict(m, ds)
    assert pred.dims == ("member", "time", "y", "x")


def test_validation_dataset(les_base):
    m = train(les_base.isel(time=slice(0, 16)), TINY_SPEC, epochs=1,
              validation=make_les(nt=4, seed=5), **FAST)
    assert m.provenance["n_samples"] == 16 and m.provenance["n_validation"] == 4
    assert np.isfinite(m.history.val_loss.values).all()


# ------------------------------------------------------------------ determinism
def test_same_seed_same_weights_and_different_seed_differs(les_base):
    ds = les_base.isel(time=slice(0, 16))
    a = train(ds, TINY_SPEC, epochs=2, seed=1, **FAST)
    b = train(ds, TINY_SPEC, epochs=2, seed=1, **FAST)
    c = train(ds, TINY_SPEC, epochs=2, seed=2, **FAST)
    xr.testing.assert_identical(weights(a), weights(b))
    assert model_id(a) == model_id(b) != model_id(c)


def test_interrupted_training_resumes_to_the_same_result(les_base, tmp_path):
    import keras

    ds = les_base.isel(time=slice(0, 24))
    kwargs = dict(epochs=4, seed=3, **FAST)
    reference = train(ds, TINY_SPEC, **kwargs)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                raise KeyboardInterrupt("simulated interruption")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(ds, TINY_SPEC, checkpoint_dir=ckpt, callbacks=[Interrupt()], **kwargs)
    assert (ckpt / "train.ckpt.npz").exists()
    assert not [p for p in ckpt.iterdir() if "tmp" in p.name]
    resumed = train(ds, TINY_SPEC, checkpoint_dir=ckpt, **kwargs)
    xr.testing.assert_identical(weights(resumed), weights(reference))
    np.testing.assert_array_equal(resumed.history.loss.values, reference.history.loss.values)
    assert resumed.history.sizes["epoch"] == 4
    # a checkpoint of another run is refused, not silently resumed
    with pytest.raises(ValueError, match="different training"):
        train(ds, TINY_SPEC, checkpoint_dir=ckpt, **dict(kwargs, seed=4))


def test_checkpoint_of_another_base_model_or_other_data_is_refused(trained_model, les_target,
                                                                   tmp_path):
    """The fingerprint covers the starting weights and the data, not only their sizes."""
    kwargs = dict(layers=[2], n_samples=8, validation=None, epochs=1, **FAST)
    ckpt = tmp_path / "ckpt"
    first = transfer(trained_model, les_target, checkpoint_dir=ckpt, **kwargs)
    # the same call resumes the finished checkpoint (no training) to the same model
    again = transfer(trained_model, les_target, checkpoint_dir=ckpt, **kwargs)
    assert model_id(again) == model_id(first)
    other_base = transfer(trained_model, les_target, **dict(kwargs, layers=[1]))
    with pytest.raises(ValueError, match=r"different training \(it differs in: "
                                         r"initial_weights\)"):
        transfer(other_base, les_target, checkpoint_dir=ckpt, **kwargs)
    other_data = les_target.copy(deep=True)
    other_data["pi"] = -other_data["pi"]  # same sizes, same normalization, other targets
    with pytest.raises(ValueError, match=r"different training \(it differs in: train_data\)"):
        transfer(trained_model, other_data, checkpoint_dir=ckpt, **kwargs)
    # train(): other data of the same sizes
    ds = les_target.isel(time=slice(0, 8))
    train(ds, TINY_SPEC, epochs=1, validation=None, checkpoint_dir=tmp_path / "b", **FAST)
    with pytest.raises(ValueError, match=r"different training .*train_data"):
        train(les_target.isel(time=slice(8, 16)), TINY_SPEC, epochs=1, validation=None,
              checkpoint_dir=tmp_path / "b", **FAST)


def test_data_digest_is_cheap_and_content_sensitive():
    from xtl.nn.backends.loop import data_digest
    from xtl.nn.spec import Variables
    from xtl.nn.training import ArrayData, load_normalized

    def _array_data(fields, norm, idx):
        return ArrayData(*load_normalized(fields, norm, idx, Variables()))

    n = 23
    rng = np.random.default_rng(0)
    fields = {v: rng.standard_normal((n, 1, 4, 4)).astype(np.float32)
              for v in ("psi", "omega", "pi")}
    norm = {"psi": 1.0, "omega": 2.0, "pi": 3.0}
    idx = np.arange(n)
    streamed = StreamData(fields, norm, idx, block=5)
    in_memory = _array_data(fields, norm, idx)
    assert data_digest(streamed, 4) == data_digest(in_memory, 4)  # same samples, same digest
    loaded = []
    streamed.load = lambda i, _load=streamed.load: loaded.append(len(i)) or _load(i)
    data_digest(streamed, 4)
    assert sum(loaded) == 8  # the first and last 4 samples only, never all
    last = {v: a.copy() for v, a in fields.items()}
    last["pi"][-1] += 1
    assert data_digest(StreamData(last, norm, idx, block=5), 4) != data_digest(in_memory, 4)
    assert data_digest(_array_data(fields, dict(norm, psi=2.0), idx), 4) != \
        data_digest(in_memory, 4)


def test_early_stopping_stops_when_nothing_improves(les_base):
    ds = les_base.isel(time=slice(0, 16))
    m = train(ds, TINY_SPEC, epochs=10, patience=2, batch_size=8, learning_rate=0.0,
              progress=False)
    assert m.history.sizes["epoch"] == 3  # best at epoch 1, then 2 without improvement
    assert m.provenance["epochs_run"] == 3 and m.provenance["best_epoch"] == 1
    assert m.provenance["stopped_early"] is True


def test_early_stopping_restores_the_weights_of_the_lowest_validation_loss(trained_model,
                                                                            les_target):
    """Validated on data whose Π has the opposite sign, the validation loss rises while
    the network learns the target; the model returned is the one of the epoch with the
    lowest validation loss, not the last one."""
    from xtl.nn.backends.base import get_backend
    from xtl.nn.spec import stack_channels
    from xtl.nn.training import sample_fields

    val = les_target.isel(time=slice(40, 48))
    val = val.assign(pi=-val.pi)
    tl = transfer(trained_model, les_target.isel(time=slice(0, 24)), [2], validation=val,
                  epochs=12, patience=3, batch_size=4, learning_rate=0.01, progress=False)
    val_loss = tl.history["val_loss"].values
    best = int(np.argmin(val_loss))
    assert tl.provenance["best_epoch"] == best + 1
    assert best + 1 < len(val_loss), "the test needs an epoch after the best one"
    assert val_loss[-1] > val_loss[best]
    fields = sample_fields(val)
    x = stack_channels(fields, ("psi", "omega"), tl.normalization)
    pred = get_backend("keras").predict_normalized(tl, x)
    target = stack_channels(fields, ("pi",), tl.normalization)
    mse = float(np.mean((pred - target) ** 2))
    assert mse == pytest.approx(val_loss[best], rel=1e-4)
    assert mse < val_loss[-1]


def test_progress_bar_when_asked(les_base, capsys):
    train(les_base.isel(time=slice(0, 8)), TINY_SPEC, epochs=2, batch_size=4,
          validation=None, progress=True)
    err = capsys.readouterr().err
    assert "train" in err and "batch" in err


def test_mixed_precision_training(les_base):
    """float16 compute with loss scaling; weights and predictions stay float32."""
    m = train(les_base.isel(time=slice(0, 16)), dict(TINY_SPEC, precision="mixed_float16"),
              epochs=2, **FAST)
    assert np.isfinite(m.history.loss.values).all()
    assert m.history.loss.values[1] < m.history.loss.values[0]
    assert m.predict(les_base.psi.values[:2], les_base.omega.values[:2]).dtype == np.float32
    assert model_to_dataset(m).kernel.dtype == np.float32


# -------------------------------------------------------------------- streaming
def test_stream_batches_cover_every_sample_once():
    n = 23
    fields = {v: np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None],
                                 (n, 1, 4, 4)).copy() for v in ("psi", "omega", "pi")}
    norm = {"psi": 1.0, "omega": 2.0, "pi": 1.0}
    data = StreamData(fields, norm, np.arange(n), block=5)
    seen = [b for b in data.batches(0, 4, seed=0)]
    sizes = [len(x) for x, _ in seen]
    assert sizes == [4] * 5 + [3]
    ids = np.concatenate([x[:, 0, 0, 0] for x, _ in seen])
    assert sorted(ids.tolist()) == list(range(n))
    assert ids.tolist() != list(range(n))  # shuffled
    np.testing.assert_array_equal(np.concatenate([x[:, 0, 0, 1] for x, _ in seen]), ids / 2)
    again = np.concatenate([x[:, 0, 0, 0] for x, _ in data.batches(0, 4, seed=0)])
    other = np.concatenate([x[:, 0, 0, 0] for x, _ in data.batches(1, 4, seed=0)])
    np.testing.assert_array_equal(again, ids)
    assert other.tolist() != ids.tolist()


def test_training_streams_from_dask_chunks(les_base):
    ds = les_base.isel(time=slice(0, 24)).chunk({"time": 6})
    m = train(ds, TINY_SPEC, epochs=2, memory_limit=1, block=6, **FAST)  # too big: stream
    assert m.provenance["streamed"] is True
    assert np.isfinite(m.history.loss.values).all() and m.history.sizes["epoch"] == 2
    mem = train(ds, TINY_SPEC, epochs=2, **FAST)  # small: loaded
    assert mem.provenance["streamed"] is False
    # same data, same normalization whether streamed or not
    assert m.normalization == pytest.approx(mem.normalization, rel=1e-6)


# --------------------------------------------------------------------- transfer
def test_transfer_changes_only_the_chosen_layer(trained_model, les_target):
    base_before = model_id(trained_model)
    tl = transfer(trained_model, les_target, layers=[2], epochs=2, **FAST)
    assert model_id(trained_model) == base_before  # the base model is untouched
    a, b = weights(trained_model), weights(tl)
    for k in (1, 3):
        np.testing.assert_array_equal(a.kernel.sel(layer=k).values, b.kernel.sel(layer=k).values)
        np.testing.assert_array_equal(a.bias.sel(layer=k).values, b.bias.sel(layer=k).values)
    changed = np.abs(a.kernel.sel(layer=2) - b.kernel.sel(layer=2)).max()
    assert float(changed) > 0
    assert tl.normalization == trained_model.normalization
    p = tl.provenance
    assert p["base_model"] == base_before and p["retrained_layers"] == [2]
    assert p["target_case"] == "synthetic-target" and p["base_case"] == "synthetic-base"
    assert p["n_samples"] == les_target.sizes["time"]
    attrs = model_to_dataset(tl).attrs
    assert attrs["base_model"] == base_before and attrs["retrained_layers"] == "[2]"


def test_transfer_first_and_last_layer(trained_model, les_target):
    """Layer 1 is the one taking the 2 inputs; layer L the one giving 1 output."""
    a = weights(trained_model)
    for k, shape_check in ((1, ("channel_in", 2)), (3, ("channel_out", 1))):
        tl = transfer(trained_model, les_target, layers=k, n_samples=8, epochs=1, **FAST)
        b = weights(tl)
        diff = (a.kernel != b.kernel) & np.isfinite(a.kernel)
        assert diff.any(["channel_out", "channel_in", "tap_y", "tap_x"]).values.tolist() == \
            [i == k for i in (1, 2, 3)]
        dim, size = shape_check
        assert int(np.isfinite(b.kernel.sel(layer=k)).any(
            [d for d in b.kernel.dims if d not in ("layer", dim)]).sum()) == size


def test_transfer_sample_selection(trained_model, les_target):
    n = les_target.sizes["time"]
    tl = transfer(trained_model, les_target, [3], fraction=0.25, epochs=1, **FAST)
    assert tl.provenance["n_samples"] == round(0.25 * n)
    assert tl.provenance["fraction"] == pytest.approx(round(0.25 * n) / n)
    tl = transfer(trained_model, les_target, [3], n_samples=10, epochs=1, **FAST)
    assert tl.provenance["n_samples"] == 10
    with pytest.raises(ValueError, match="not both"):
        transfer(trained_model, les_target, [3], n_samples=5, fraction=0.1)
    with pytest.raises(ValueError, match="exceeds"):
        transfer(trained_model, les_target, [3], n_samples=n + 1)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        transfer(trained_model, les_target, [3], fraction=1.5)


@pytest.mark.parametrize("bad", [0, 4, [1, 5], -1])
def test_transfer_layer_out_of_range(trained_model, les_target, bad):
    with pytest.raises(ValueError, match=r"layers must be layer numbers in 1\.\.3"):
        transfer(trained_model, les_target, layers=bad)


# -------------------------------------------------------------------- bad input
def test_dataset_without_variables(les_base):
    for var in ("psi", "omega", "pi"):
        with pytest.raises(ValueError, match=f"missing \\['{var}'\\]"):
            train(les_base.drop_vars(var), TINY_SPEC, epochs=1)
    with pytest.raises(TypeError, match="LES xarray.Dataset"):
        train(les_base.pi, TINY_SPEC)
    with pytest.raises(ValueError, match=r"lacks \['y', 'x'\]"):
        check_les_dataset(les_base.transpose("time", "x", "y").rename(x="a", y="b"))


def test_nans_are_refused(les_base):
    ds = les_base.isel(time=slice(0, 8)).copy(deep=True)
    ds["omega"][3, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"ds\['omega'\] contains 1 NaN"):
        train(ds, TINY_SPEC, epochs=1)
    with pytest.raises(ValueError, match=r"\['omega'\] contains 1 NaN"):  # lazily too
        compute_normalization(ds.chunk({"time": 2}))


def test_unknown_backend_and_bad_arguments(les_base):
    with pytest.raises(ValueError, match="unknown backend 'pytorch'"):
        train(les_base, TINY_SPEC, backend="pytorch")
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        train(les_base, TINY_SPEC, epochs=0)
    with pytest.raises(ValueError, match="validation must be a fraction"):
        train(les_base, TINY_SPEC, validation=1.5)
    with pytest.raises(ValueError, match="spec.padding"):
        train(les_base, dict(TINY_SPEC, padding="reflect"))
