"""Tests of xtl/explain.py: activations and streamed activation spectra."""
import dataclasses

import numpy as np
import pytest

from conftest import make_les
from test_backends import np_forward
from xtl.backends import get_backend, model_to_dataset, register_backend
from xtl.backends.base import stack_inputs
from xtl.backends.keras import KerasBackend
from xtl.explain import activation_spectra, activations
from xtl.spectral import spectrum


@pytest.fixture(scope="module")
def inputs():
    return make_les(nt=10, seed=4)


def test_activations_dataset_matches_numpy_forward(trained_model, inputs):
    ds = activations(trained_model, inputs, layers=[1, 3], batch_size=4)
    a = ds.activation
    assert a.dims == ("layer", "sample", "channel", "y", "x")
    assert a.layer.values.tolist() == [1, 3] and a.sizes["channel"] == 4
    assert a.n_channels.values.tolist() == [4, 1]
    np.testing.assert_array_equal(a.time.values, inputs.time.values)  # kept on sample
    np.testing.assert_array_equal(a.x.values, inputs.x.values)
    assert np.isnan(a.sel(layer=3).isel(channel=slice(1, None))).all()
    assert (a.sel(layer=1) >= 0).all()  # after the ReLU
    x = stack_inputs(inputs.psi.values, inputs.omega.values, trained_model.normalization)
    ref = np_forward(model_to_dataset(trained_model), x, "periodic")
    np.testing.assert_allclose(a.sel(layer=1).values, ref[1], rtol=1e-4, atol=1e-5)
    # the last layer's output is the normalized Π
    pred = trained_model.predict(inputs.psi.values, inputs.omega.values)
    np.testing.assert_allclose(a.sel(layer=3, channel=0).values * trained_model.normalization["pi"],
                               pred, rtol=1e-5, atol=1e-6)


def test_activations_bad_input(trained_model, inputs):
    with pytest.raises(ValueError, match=r"layers must be layer numbers in 1\.\.3"):
        activations(trained_model, inputs, layers=[4])
    with pytest.raises(ValueError, match=r"missing \['omega'\]"):
        activations(trained_model, inputs.drop_vars("omega"))
    with pytest.raises(TypeError, match="xtl Model"):
        activations(model_to_dataset(trained_model), inputs)


class RecordingBackend(KerasBackend):
    """The Keras backend, recording how many samples each activations call sees."""

    name = "recording-keras"
    calls = []

    def activations(self, model, x, layers, *, batch_size=32):
        RecordingBackend.calls.append(len(x))
        return super().activations(model, x, layers, batch_size=batch_size)


def test_activation_spectra_streamed_equal_full_spectra(trained_model, inputs):
    register_backend("recording-keras", RecordingBackend, overwrite=True)
    model = dataclasses.replace(trained_model, backend="recording-keras", cache={})
    RecordingBackend.calls.clear()
    lazy = inputs.chunk({"time": 3})
    spec = activation_spectra(model, lazy, layers=[2, 3], batch_size=3)
    assert RecordingBackend.calls == [3, 3, 3, 1]  # never all 10 samples at once
    assert spec.spectrum.dims == ("layer", "channel", "k")
    full = activations(trained_model, inputs, layers=[2, 3]).activation
    expect = spectrum(full.astype("f8"), "power").mean("sample")
    np.testing.assert_allclose(spec.spectrum.values, expect.values, rtol=1e-5, atol=1e-12)
    assert np.isnan(spec.spectrum.sel(layer=3).isel(channel=slice(1, None))).all()
    # Parseval: the sum over k is the spatial mean square, sample-averaged
    ms = (full.astype("f8") ** 2).mean(["y", "x"]).mean("sample")
    np.testing.assert_allclose(spec.spectrum.sum("k", skipna=False).values, ms.values,
                               rtol=1e-5)
    np.testing.assert_allclose(spec.mean_square.values, ms.values, rtol=1e-5)
    assert spec.attrs["n_samples"] == 10
    get_backend("recording-keras")  # still registered; clean up
    from xtl import backends

    backends._REGISTRY.pop("recording-keras")
    backends._INSTANCES.pop("recording-keras")


# ------------------------------------------------------------------------------------
# recommend_layers / compare_recommendation: which layer to re-train
# ------------------------------------------------------------------------------------
import xarray as xr

from xtl.explain import compare_recommendation, recommend_layers, spectral_distance
from xtl.spectral import filter_census

KMIN_SMALL = 5  # first shell of the small-scale energy added to the target


def add_small_scales(ds, *, amp=1.0, kmin=KMIN_SMALL, seed=9):
    """``ds`` plus random vorticity on the shells kmin..N/2 only; ψ̄ and Π recomputed.

    The large scales (shells < kmin) are untouched, so the target differs from the
    base only at high wavenumbers; Π keeps the base's map (the 5-point Laplacian).
    """
    n = ds.sizes["x"]
    k = np.fft.fftfreq(n, 1.0 / n)
    kk = np.hypot(*np.meshgrid(k, k))
    band = (np.rint(kk) >= kmin) & (np.rint(kk) <= n // 2)
    om = ds.omega.values.astype(np.float64)
    rng = np.random.default_rng(seed)
    extra = np.real(np.fft.ifft2((rng.standard_normal(om.shape)
                                  + 1j * rng.standard_normal(om.shape)) * band))
    om = om + amp * om.std() / extra.std() * extra
    psi = np.real(np.fft.ifft2(np.fft.fft2(om) / np.where(kk == 0, 1.0, kk ** 2)))
    pi = (np.roll(om, 1, -1) + np.roll(om, -1, -1) + np.roll(om, 1, -2)
          + np.roll(om, -1, -2) - 4 * om)
    out = ds.copy()
    for v, a in (("psi", psi), ("omega", om), ("pi", pi)):
        out[v] = (ds[v].dims, a.astype(np.float32), ds[v].attrs)
    out.attrs["case_name"] = "synthetic-small-scales"
    return out


@pytest.fixture(scope="module")
def flows():
    base = make_les(nt=12, seed=5)
    return base, add_small_scales(base)


@pytest.fixture(scope="module")
def recommendation(trained_model, flows):
    return recommend_layers(trained_model, *flows, batch_size=6)


def _np_filter_profile(model_ds, n):
    """Per layer: mean over its kernels of the shell-mean |FFT| of the kernel padded to n."""
    k = np.fft.fftfreq(n, 1.0 / n)
    shell = np.rint(np.hypot(*np.meshgrid(k, k))).astype(int)
    out = []
    for layer in model_ds.layer.values:
        w = model_ds.kernel.sel(layer=layer).values.reshape(-1, *model_ds.kernel.shape[-2:])
        w = w[np.isfinite(w).all(axis=(1, 2))]
        mag = np.abs(np.fft.fft2(w, s=(n, n))).mean(axis=0)
        out.append([mag[shell == s].mean() for s in range(n // 2 + 1)])
    return np.asarray(out)


def test_spectral_distance_properties():
    k = np.arange(5)
    a = xr.DataArray([0.0, 1.0, 2.0, 0.0, 0.0], dims="k", coords={"k": k})
    b = xr.DataArray([0.0, 0.0, 0.0, 3.0, 1.0], dims="k", coords={"k": k})
    assert float(spectral_distance(a, a)) == 0.0
    assert float(spectral_distance(a, b)) == 1.0  # disjoint shells
    assert float(spectral_distance(7 * a, 7 * (a + b))) == pytest.approx(4 / 10)  # scale-free
    assert np.isnan(float(spectral_distance(0 * a, 0 * a)))  # a dead channel
    with pytest.raises(ValueError, match="wavenumber dim 'k'"):
        spectral_distance(a.rename(k="q"), b)


def test_recommend_layers_small_scale_target_picks_shallow_layer(trained_model, recommendation):
    rec = recommendation
    # (a) the flows differ only at high wavenumbers, where the small scales were added
    lr = rec.log_ratio.sel(k=slice(1, KMIN_SMALL - 1))
    np.testing.assert_allclose(lr.values, 0.0, atol=1e-3)
    assert not rec.differs.sel(k=slice(0, KMIN_SMALL - 1)).any()
    assert rec.flows_differ.sel(k=slice(KMIN_SMALL + 1, None)).all()
    assert (rec.log_ratio.sel(variable="omega", k=slice(KMIN_SMALL + 1, None)) > 0.5).all()
    np.testing.assert_array_equal(rec.flows_differ.values,
                                  ((abs(rec.log_ratio) > 0.3) & (rec.k >= 1)).any("variable"))
    # psi barely feels small scales (ψ̂ = ω̂/k²), omega and pi do
    d = rec.spectral_difference
    assert d.sel(variable="psi") < 0.1 < d.sel(variable="omega") < d.sel(variable="pi")
    # (b) divergence by hand from the returned activation spectra, k >= 1, live channels
    sb = rec.activation_spectrum_base.sel(k=slice(1, None)).values
    st = rec.activation_spectrum_target.sel(k=slice(1, None)).values
    with np.errstate(invalid="ignore"):
        per_channel = np.abs(st - sb).sum(-1) / (st + sb).sum(-1)
    np.testing.assert_allclose(rec.channel_divergence.values, per_channel, rtol=1e-12)
    divergence = np.nanmean(per_channel, axis=1)
    np.testing.assert_allclose(rec.divergence.values, divergence, rtol=1e-12)
    assert (divergence > 0.05).all()
    ins = (np.abs(rec.target_spectrum - rec.base_spectrum).sel(k=slice(1, None)).sum("k")
           / (rec.target_spectrum + rec.base_spectrum).sel(k=slice(1, None)).sum("k"))
    assert float(rec.input_divergence) == pytest.approx(float(ins.sel(variable=["psi", "omega"]).mean()))
    # (c) the filters: an independent numpy profile, the census
    model_ds = model_to_dataset(trained_model)
    np.testing.assert_allclose(rec.filter_profile.values, _np_filter_profile(model_ds, 16),
                               rtol=1e-5)
    # the overlap: the profile-weighted mean over k >= 1 of w(k) = max_var |log_ratio|
    w = np.abs(rec.log_ratio.values).max(axis=0)[1:]
    np.testing.assert_allclose(rec.shell_weight.values[1:], w, rtol=1e-12)
    assert float(rec.shell_weight.sel(k=0)) == 0.0
    prof = rec.filter_profile.values[:, 1:]
    overlap = (prof * w).sum(1) / prof.sum(1)
    np.testing.assert_allclose(rec.overlap.values, overlap, rtol=1e-12)
    assert ((overlap > 0) & (overlap <= w.max())).all()
    counts = filter_census(model_ds, n=16)
    np.testing.assert_array_equal(rec.filter_count.values, counts.values)
    np.testing.assert_allclose(rec.filter_fraction.sum("filter_type").values, 1.0)
    # (d) the documented score, and the ranking it gives
    reach = (3 - np.arange(1, 4) + 1) / 3
    score = divergence * overlap * reach
    np.testing.assert_allclose(rec.score.values, score, rtol=1e-12)
    np.testing.assert_array_equal(rec["rank"].values, np.argsort(np.argsort(-score)) + 1)
    # the answer: a shallow layer first, the output layer not
    assert rec.attrs["recommended"] == rec.recommended.values.tolist()
    assert rec.attrs["recommended"][0] in (1, 2)
    assert int(rec["rank"].sel(layer=3)) != 1
    assert rec.recommended.values.tolist() == rec.layer.values[rec["rank"].values == 1].tolist()
    for v in ("score", "rank", "divergence", "overlap", "reach", "filter_fraction",
              "base_spectrum", "log_ratio"):
        assert "long_name" in rec[v].attrs, v
    assert "D(l) * O(l) * R(l)" in rec.attrs["formula"]
    assert "sum_{k>=1} p_l(k) w(k) / sum_{k>=1} p_l(k)" in rec.attrs["formula"]


def test_recommend_layers_subset_and_top(trained_model, flows, recommendation):
    rec = recommend_layers(trained_model, *flows, layers=[3, 2], top=2)
    assert rec.layer.values.tolist() == [2, 3]
    np.testing.assert_allclose(rec.reach.values, [2 / 3, 1 / 3])  # reach counts all 3 layers
    np.testing.assert_allclose(rec.score.values, recommendation.score.sel(layer=[2, 3]).values,
                               rtol=1e-10)
    assert sorted(rec.recommended.values.tolist()) == [2, 3] and rec["rank"].values.min() == 1


def tilt_spectrum(ds, decades):
    """``ds`` with each Fourier mode of ψ̄, ω̄, Π times ``10**(decades·|k|/kmax / 2)``.

    The power spectra of the three variables then differ by about ``decades · k/kmax``
    decades at shell k (a smooth tilt, largest at ``kmax = N/2``; shells round |k|).
    """
    n = ds.sizes["x"]
    k = np.fft.fftfreq(n, 1.0 / n)
    gain = 10.0 ** (0.5 * decades * np.hypot(*np.meshgrid(k, k)) / (n // 2))
    out = ds.copy()
    for v in ("psi", "omega", "pi"):
        a = np.real(np.fft.ifft2(np.fft.fft2(ds[v].values.astype(np.float64)) * gain))
        out[v] = (ds[v].dims, a.astype(np.float32), ds[v].attrs)
    out.attrs["case_name"] = "synthetic-tilt"
    return out


def test_recommend_layers_small_difference_everywhere_no_cliff(trained_model, flows):
    # the flows differ by less than the threshold (0.3 decades) at every shell: the
    # warning is given, the band is empty, but the overlap and the score do not collapse
    base = flows[0]
    with pytest.warns(UserWarning, match="differ by less than threshold"):
        rec = recommend_layers(trained_model, base, tilt_spectrum(base, 0.2), batch_size=6)
    assert not rec.flows_differ.any()
    assert 0.0 < float(rec.shell_weight.max()) < 0.3
    assert (rec.overlap > 0).all() and (rec.overlap < 0.3).all()
    assert (rec.score > 0).all()
    assert np.ptp(rec.score.values) > 0  # informative: not one constant score
    prof, w = rec.filter_profile.values[:, 1:], rec.shell_weight.values[1:]
    np.testing.assert_allclose(rec.overlap.values, (prof * w).sum(1) / prof.sum(1),
                               rtol=1e-12)
    np.testing.assert_allclose(rec.score.values,
                               rec.divergence * rec.overlap * rec.reach, rtol=1e-12)


def test_recommend_layers_identical_flows_score_zero_and_warn(trained_model, flows):
    base = flows[0]
    with pytest.warns(UserWarning, match="differ by less than threshold"):
        rec = recommend_layers(trained_model, base, base.copy(), layers=[1, 2])
    assert not rec.flows_differ.any()
    np.testing.assert_allclose(rec.divergence.values, 0.0, atol=1e-12)
    np.testing.assert_array_equal(rec.score.values, 0.0)
    assert rec["rank"].values.tolist() == [1, 2]  # ties go to the shallower layer


def test_recommend_layers_bad_input(trained_model, flows):
    base, target = flows
    with pytest.raises(ValueError, match=r"base_ds must hold variables .*missing \['pi'\]"):
        recommend_layers(trained_model, base.drop_vars("pi"), target)
    with pytest.raises(ValueError, match=r"target_ds must hold variables .*missing \['omega'\]"):
        recommend_layers(trained_model, base, target.drop_vars("omega"))
    with pytest.raises(ValueError, match=r"target_ds must be on the same LES grid .*16×16.*32×32"):
        recommend_layers(trained_model, base, make_les(n=32, nt=2))
    with pytest.raises(ValueError, match=r"layers must be layer numbers in 1\.\.3"):
        recommend_layers(trained_model, base, target, layers=[0, 2])
    with pytest.raises(ValueError, match=r"layers must be layer numbers in 1\.\.3.*\[4\]"):
        recommend_layers(trained_model, base, target, layers=4)
    with pytest.raises(ValueError, match=r"top must be an int in 1\.\.2"):
        recommend_layers(trained_model, base, target, layers=[1, 2], top=3)
    with pytest.raises(ValueError, match="threshold must be"):
        recommend_layers(trained_model, base, target, threshold=0)
    with pytest.raises(ValueError, match=r"kmax must be an int in 1\.\.8"):
        recommend_layers(trained_model, base, target, kmax=9)
    with pytest.raises(ValueError, match="n must be None"):
        recommend_layers(trained_model, base, target, n=2)
    with pytest.raises(TypeError, match="base_model must be an xtl Model"):
        recommend_layers(model_to_dataset(trained_model), base, target)


def _rec(scores, recommended=(1,)):
    layers = np.arange(1, len(scores) + 1)
    return xr.Dataset({"score": ("layer", np.asarray(scores, float)),
                       "recommended": ("choice", np.asarray(recommended))},
                      coords={"layer": layers})


def _sweep(**metrics):
    n = len(next(iter(metrics.values())))
    return xr.Dataset({k: ("layer", np.asarray(v, float)) for k, v in metrics.items()},
                      coords={"layer": np.arange(1, n + 1)})


def test_compare_recommendation_hand_computed():
    rec = _rec([0.4, 0.3, 0.2, 0.1])
    out = compare_recommendation(rec, _sweep(cc=[0.80, 0.90, 0.70, 0.60]))
    # measured ranks 2, 1, 3, 4; d = rank differences (1, -1, 0, 0): rho = 1 - 6*2/(4*15)
    assert out.measured_rank.values.tolist() == [2, 1, 3, 4]
    assert out.predicted_rank.values.tolist() == [1, 2, 3, 4]
    assert out.recommended_measured_rank.values.tolist() == [2]
    assert out.attrs["recommended_measured_rank"] == 2
    assert float(out.spearman) == pytest.approx(0.8)
    assert int(out.best_measured_layer) == 2
    np.testing.assert_array_equal(out.cc.values, [0.80, 0.90, 0.70, 0.60])
    # perfectly anti-correlated: the recommended layer is measured worst
    anti = compare_recommendation(rec, _sweep(cc=[0.6, 0.7, 0.8, 0.9]))
    assert float(anti.spearman) == pytest.approx(-1.0)
    assert anti.recommended_measured_rank.values.tolist() == [4]
    # perfect, and a lower-is-better metric (rel_l2) with two recommended layers
    rec2 = _rec([0.4, 0.3, 0.2, 0.1], recommended=(1, 2))
    good = compare_recommendation(rec2, _sweep(rel_l2=[0.1, 0.2, 0.3, 0.4]), metric="rel_l2")
    assert float(good.spearman) == pytest.approx(1.0)
    assert good.recommended_measured_rank.values.tolist() == [1, 2]
    assert good.attrs["higher_is_better"] == 0
    # ties in the metric share the best rank; spearman uses average ranks (scipy's)
    tied = compare_recommendation(_rec([0.1, 0.4, 0.3, 0.2], (2,)),
                                  _sweep(cc=[0.5, 0.9, 0.9, 0.6]))
    assert tied.measured_rank.values.tolist() == [4, 1, 1, 3]
    assert tied.recommended_measured_rank.values.tolist() == [1]
    from scipy.stats import spearmanr
    assert float(tied.spearman) == pytest.approx(
        spearmanr([0.1, 0.4, 0.3, 0.2], [0.5, 0.9, 0.9, 0.6]).statistic)
    # a constant metric has no ranking: NaN, not an error
    assert np.isnan(float(compare_recommendation(rec, _sweep(cc=[0.5] * 4)).spearman))


def test_compare_recommendation_bad_input():
    rec = _rec([0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="metric must name a variable of sweep"):
        compare_recommendation(rec, _sweep(cc=[1, 2, 3]), metric="accuracy")
    with pytest.raises(ValueError, match="single-layer sweep"):
        compare_recommendation(rec, _sweep(cc=[1, 2, 3]).rename(layer="pair"))
    with pytest.raises(ValueError, match="higher_is_better"):
        compare_recommendation(rec, _sweep(skill=[1, 2, 3]), metric="skill")
    with pytest.raises(ValueError, match=r"did not re-train the recommended layer\(s\) \[1\]"):
        compare_recommendation(rec, _sweep(cc=[1, 2, 3]).assign_coords(layer=[2, 3, 4]))
    with pytest.raises(ValueError, match="at least 2 layers"):
        compare_recommendation(rec, _sweep(cc=[1.0]))
    with pytest.raises(TypeError, match="recommendation must be"):
        compare_recommendation(xr.Dataset(), _sweep(cc=[1, 2, 3]))


def test_compare_recommendation_with_a_real_sweep(trained_model, flows, recommendation):
    from xtl.training import layer_sweep

    target = flows[1]
    sweep = layer_sweep(trained_model, target, add_small_scales(make_les(nt=4, seed=8)),
                        epochs=1, batch_size=6, validation=None, progress=False)
    out = compare_recommendation(recommendation, sweep)
    assert out.layer.values.tolist() == [1, 2, 3]
    assert -1.0 <= float(out.spearman) <= 1.0
    assert 1 <= int(out.recommended_measured_rank[0]) <= 3
    np.testing.assert_array_equal(out.cc.values, sweep.cc.values)
