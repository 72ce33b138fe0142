"""Any variables and a channel dim: a two-level, QG-like flow on a physical domain.

The data are synthetic and small: ``q`` on ``(time, lev, y, x)`` of a 10⁶ m domain,
its "SGS term" ``pi_q`` a known local map of ``q`` that couples the two levels (so a
network that saw the levels as samples could not learn it).
"""
import numpy as np
import pytest
import xarray as xr

import xtl
from conftest import make_les
from xtl.nn.model import model_id
from xtl.nn.spec import Variables

pytest.importorskip("tensorflow")

L = 1.0e6
TINY = dict(n_layers=3, channels=4, kernel_size=3, padding="periodic")
FIT = dict(epochs=2, batch_size=8, progress=False)
QG = dict(inputs=["q"], outputs=["pi_q"], channels="lev")


def make_two_level(seed=0, nt=24, n=16, coupling=0.5, case="qg-base"):
    """``q`` (two levels of smooth random fields) and ``pi_q`` = its periodic Laplacian
    plus ``coupling`` × the other level, on ``(time, lev, y, x)`` of ``[0, L)²``."""
    a = make_les(n, nt, seed=seed)
    b = make_les(n, nt, seed=seed + 100)
    q = np.stack([a.omega.values, 0.3 * b.omega.values], axis=1).astype(np.float32)
    lap = (np.roll(q, 1, -1) + np.roll(q, -1, -1) + np.roll(q, 1, -2) + np.roll(q, -1, -2)
           - 4 * q)
    pi = lap + coupling * q[:, ::-1]
    x = (np.arange(n) + 0.5) * (L / n)
    dims = ("time", "lev", "y", "x")
    return xr.Dataset({"q": (dims, q, {"units": "s-1"}),
                       "pi_q": (dims, pi.astype(np.float32), {"units": "s-2"})},
                      coords={"time": np.arange(nt) * 3600.0, "lev": [1, 2],
                              "y": ("y", x, {"units": "m"}), "x": ("x", x, {"units": "m"})},
                      attrs={"case_name": case})


@pytest.fixture(scope="module")
def qg_base():
    return make_two_level()


@pytest.fixture(scope="module")
def qg_target():
    return make_two_level(seed=7, coupling=-0.5, case="qg-target")


@pytest.fixture(scope="module")
def qg_model(qg_base):
    return xtl.train(qg_base, TINY, **QG, **FIT)


# ----------------------------------------------------------------- the model's schema
def test_the_model_records_its_variables_and_channels(qg_model, tmp_path):
    assert qg_model.variables == Variables(("q",), ("pi_q",), "lev")
    assert (qg_model.spec.input_channels, qg_model.spec.output_channels) == (2, 2)
    assert qg_model.levels == 2 and set(qg_model.normalization) == {"q", "pi_q"}
    ds = qg_model.to_dataset()
    assert (ds.attrs["inputs"], ds.attrs["outputs"], ds.attrs["channel_dim"]) == \
        ("q", "pi_q", "lev")
    assert ds.n_channels_in.values[0] == 2 and ds.n_channels_out.values[-1] == 2
    back = xtl.model_from_dataset(ds)
    assert back.variables == qg_model.variables
    paths = qg_model.save(tmp_path / "qg.keras")
    loaded = xtl.load_model(paths[0])
    assert loaded.variables == qg_model.variables and model_id(loaded) == \
        model_id(qg_model)


def test_two_levels_are_two_channels_in_order(qg_model, qg_base):
    """predict = std_pi · net(q/std_q) with channels (q lev 1, q lev 2) → (pi lev 1, pi lev 2)."""
    from xtl.nn.backends.base import get_backend

    ds = qg_base.isel(time=slice(0, 3))
    pred = xtl.predict(qg_model, ds)
    assert pred.name == "pi_q" and pred.dims == ("time", "lev", "y", "x")
    np.testing.assert_array_equal(pred.lev.values, [1, 2])
    x = np.moveaxis(ds.q.values, 1, -1) / np.float32(qg_model.normalization["q"])
    out = get_backend("keras").predict_normalized(qg_model, x.astype(np.float32))
    assert out.shape == (3, 16, 16, 2)
    np.testing.assert_allclose(pred.values, np.moveaxis(out, -1, 1)
                               * qg_model.normalization["pi_q"], rtol=1e-6)
    np.testing.assert_array_equal(qg_model.predict(ds.q.values), pred.values)


def test_metrics_per_level(qg_model, qg_base):
    scores = xtl.evaluate(qg_model, qg_base.isel(time=slice(0, 6)))
    assert scores.cc.dims == ("lev",) and scores.lev.values.tolist() == [1, 2]
    one = qg_base.isel(time=slice(0, 6))
    lev2 = xtl.data.metrics.correlation(xtl.predict(qg_model, one).sel(lev=2), one.pi_q.sel(lev=2))
    assert float(scores.cc.sel(lev=2)) == pytest.approx(float(lev2["cc"]), rel=1e-6)


def test_dims_in_any_order_train_alike(qg_base):
    a = xtl.train(qg_base.isel(time=slice(0, 12)), TINY, **QG, epochs=1, batch_size=4,
                  progress=False, validation=None)
    b = xtl.train(qg_base.isel(time=slice(0, 12)).transpose("y", "lev", "x", "time"), TINY,
                  **QG, epochs=1, batch_size=4, progress=False, validation=None)
    assert model_id(a) == model_id(b)
    transposed = qg_base.isel(time=slice(0, 2)).transpose("x", "lev", "time", "y")
    pred = xtl.predict(a, transposed)
    assert pred.dims == transposed.q.dims
    xr.testing.assert_allclose(pred.transpose(*qg_base.q.dims),
                               xtl.predict(a, qg_base.isel(time=slice(0, 2))))


# ------------------------------------------------------------------ downstream of train
def test_transfer_sweep_recommend_and_explain_read_the_model(qg_model, qg_target):
    train_part, test_part = qg_target.isel(time=slice(0, 16)), qg_target.isel(time=slice(16, 24))
    tl = xtl.transfer(qg_model, train_part, [2], **FIT)
    assert tl.variables == qg_model.variables
    before, after = qg_model.to_dataset(), tl.to_dataset()
    changed = [int(k) for k in before.layer.values
               if not np.array_equal(before.kernel.sel(layer=k), after.kernel.sel(layer=k),
                                     equal_nan=True)]
    assert changed == [2]
    sweep = xtl.layer_sweep(qg_model, train_part, test_part, layers=[1, 3], seeds=[0, 1],
                            n_samples=8, **FIT)
    assert sweep.cc.dims == ("layer", "seed") and np.isfinite(sweep.cc).all()
    for method in ("spectral", "gradient-norm", "gauss-newton", "probe"):
        rec = xtl.recommend_layers(qg_model, qg_target.isel(time=slice(0, 8)),
                                   train_part, method=method)
        assert rec.attrs["recommended"][0] in (1, 2, 3)
    spectra = xtl.explain.activations.activation_spectra(qg_model, test_part, [1])
    assert spectra.spectrum.sizes["channel"] == 4
    filters = xtl.explain.kernels.kernel_filters(qg_model.to_dataset())
    assert filters.sizes["channel_in"] == 4  # layer 1 has 2 of them, NaN-padded
    assert np.isfinite(filters.sel(layer=1).isel(channel_in=slice(0, 2))).all()


def test_flow_difference_compares_each_level(qg_base, qg_target):
    diff = xtl.explain.activations.flow_difference(qg_base, qg_target, variables=dict(QG))
    assert diff.variable.values.tolist() == ["q[1]", "q[2]", "pi_q[1]", "pi_q[2]"]
    same = xtl.explain.activations.flow_difference(qg_base, qg_base, variables=dict(QG))
    assert float(same.largest_decades) == 0.0 < float(diff.largest_decades)


# ------------------------------------------------------------------------- refusals
def test_data_without_the_variables_or_channel_dim_is_refused(qg_base, qg_model):
    with pytest.raises(ValueError, match=r"missing \['q'\].*inputs="):
        xtl.train(qg_base.rename(q="pv"), TINY, **QG, **FIT)
    with pytest.raises(ValueError, match=r"lacks \['lev'\]"):
        xtl.train(qg_base.isel(lev=0), TINY, **QG, **FIT)
    three = xr.concat([qg_base, qg_base.isel(lev=[0])], "lev")
    with pytest.raises(ValueError, match="3 entries of the channel dim 'lev'; the network "
                                         "was built for 2"):
        xtl.predict(qg_model, three)
    with pytest.raises(ValueError, match=r"outputs must differ from the inputs; \['q'\] are in both"):
        Variables(["q"], ["q"])
    with pytest.raises(ValueError, match="channels must be the name of a dim other than"):
        Variables(channels="x")
    from xtl.nn.closure import ModelClosure

    with pytest.raises(ValueError, match=r"model maps \['q'\] -> \['pi_q'\] over the "
                                         "channels of 'lev'; the a posteriori LES is xtl's 2D"):
        ModelClosure(qg_model)


def test_a_transposed_dataset_is_treated_alike_by_spectrum_and_train():
    ds = make_les(16, 12)
    flipped = ds.transpose("y", "x", "time")
    xr.testing.assert_allclose(xtl.data.spectra.spectrum(flipped.omega).transpose("time", "k"),
                               xtl.data.spectra.spectrum(ds.omega))
    fit = dict(epochs=1, batch_size=4, progress=False, validation=None)
    assert model_id(xtl.train(flipped, TINY, **fit)) == model_id(xtl.train(ds, TINY, **fit))
