"""Tests of xtl/explain.py: activations and streamed activation spectra."""
import dataclasses

import numpy as np
import pytest

from conftest import make_les
from test_backends import np_forward
from xtl.nn.backends.base import get_backend, register_backend
from xtl.nn.model import model_to_dataset
from xtl.nn.spec import stack_channels
from xtl.nn.backends.keras import KerasBackend
from xtl.explain.activations import activation_spectra, activations
from xtl.data.spectra import spectrum


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
    x = stack_channels({"psi": inputs.psi.values[:, None], "omega": inputs.omega.values[:, None]},
                       ("psi", "omega"), trained_model.normalization)
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
    model = dataclasses.replace(trained_model, backend="recording-keras")
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
    from xtl.nn.backends import base as backends  # the registry lives there

    backends._REGISTRY.pop("recording-keras")
    backends._INSTANCES.pop("recording-keras")


# ------------------------------------------------------------------------------------
# recommend_layers / compare_recommendation: which layer to re-train
# ------------------------------------------------------------------------------------
import xarray as xr

from xtl.explain.activations import flow_difference, spectral_change_correlation, spectral_distance

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


def test_flow_difference_where_small_scales_were_added(flows):
    diff = flow_difference(*flows)
    # the flows differ only at high wavenumbers, where the small scales were added
    lr = diff.log_ratio.sel(k=slice(1, KMIN_SMALL - 1))
    np.testing.assert_allclose(lr.values, 0.0, atol=1e-3)
    assert not diff.differs.sel(k=slice(0, KMIN_SMALL - 1)).any()
    assert diff.flows_differ.sel(k=slice(KMIN_SMALL + 1, None)).all()
    assert (diff.log_ratio.sel(variable="omega", k=slice(KMIN_SMALL + 1, None)) > 0.5).all()
    np.testing.assert_array_equal(diff.flows_differ.values,
                                  ((abs(diff.log_ratio) > 0.3) & (diff.k >= 1)).any("variable"))
    # psi barely feels small scales (ψ̂ = ω̂/k²), omega and pi do
    d = diff.spectral_difference
    assert d.sel(variable="psi") < 0.1 < d.sel(variable="omega") < d.sel(variable="pi")
    # the shell weight and the largest difference, by hand
    w = np.abs(diff.log_ratio.values).max(axis=0)
    np.testing.assert_allclose(diff.shell_weight.values[1:], w[1:], rtol=1e-12)
    assert float(diff.shell_weight.sel(k=0)) == 0.0
    np.testing.assert_allclose(diff.max_decades.values,
                               np.abs(diff.log_ratio.values[:, 1:]).max(axis=1))
    assert float(diff.largest_decades) == pytest.approx(w[1:].max())
    assert diff.attrs["kmax"] == 8 and diff.attrs["target_case"] == "synthetic-small-scales"


def test_flow_difference_of_a_flow_with_itself_is_zero(flows):
    diff = flow_difference(flows[0], flows[0].copy())
    assert float(diff.largest_decades) == 0.0 and not diff.flows_differ.any()


def test_flow_difference_bad_input(flows):
    base, target = flows
    with pytest.raises(ValueError, match=r"target_ds must be on the same LES grid .*16×16.*32×32"):
        flow_difference(base, make_les(n=32, nt=2))
    with pytest.raises(ValueError, match=r"kmax must be an int in 1\.\.8"):
        flow_difference(base, target, kmax=9)
    with pytest.raises(ValueError, match="threshold must be"):
        flow_difference(base, target, threshold=0)
    with pytest.raises(ValueError, match=r"target_ds must hold variables .*missing \['omega'\]"):
        flow_difference(base, target.drop_vars("omega"))


def test_filter_profile_matches_numpy(trained_model):
    from xtl.explain.activations import filter_profile

    model_ds = model_to_dataset(trained_model)
    np.testing.assert_allclose(filter_profile(model_ds, 16).values,
                               _np_filter_profile(model_ds, 16), rtol=1e-5)


def test_spectral_change_correlation_known_profiles(trained_model):
    base = model_to_dataset(trained_model)
    k = np.arange(0, 9)
    weight = xr.DataArray(np.r_[0.0, np.linspace(0, 1, 8)], dims="k", coords={"k": k})
    # a change equal to the base kernels times (1 + ε): |ΔŴ| = ε|Ŵ|, the base's own profile
    scaled = base.copy(deep=True)
    scaled["kernel"] = scaled.kernel * 1.1
    out = spectral_change_correlation(base, scaled, 2, weight, n_permutations=199)
    from xtl.explain.activations import filter_profile
    prof = 0.1 * filter_profile(base.sel(layer=[2]), 16, 8).squeeze("layer").sel(k=slice(1, 8))
    np.testing.assert_allclose(out.change_profile.values, prof.values, rtol=1e-4)
    r = np.corrcoef(prof.values, weight.values[1:])[0, 1]
    assert float(out.correlation) == pytest.approx(r, rel=1e-4)  # float32 kernels
    # the correlation with the profile itself is 1, and significant
    same = spectral_change_correlation(base, scaled, 2, xr.DataArray(
        np.r_[0.0, prof.values], dims="k", coords={"k": k}), n_permutations=999)
    assert float(same.correlation) == pytest.approx(1.0)
    assert float(same.pvalue) <= 0.01
    # weights permuted at random over the shells: under this null the p-values are
    # uniform, so they are not small on average (one draw alone may be)
    rng = np.random.default_rng(3)
    pvalues = [float(spectral_change_correlation(
        base, scaled, 2, xr.DataArray(np.r_[0.0, rng.permutation(prof.values)], dims="k",
                                      coords={"k": k}), n_permutations=199, seed=i).pvalue)
        for i in range(20)]
    assert 0.3 < np.mean(pvalues) < 0.7 and np.median(pvalues) > 0.2
    # an unchanged layer has no change profile: correlation NaN
    none = spectral_change_correlation(base, base, 1, weight, n_permutations=9)
    assert np.isnan(float(none.correlation))


def test_spectral_change_correlation_bad_input(trained_model):
    base = model_to_dataset(trained_model)
    weight = xr.DataArray(np.zeros(9), dims="k", coords={"k": np.arange(9)})
    with pytest.raises(TypeError, match="tl_model_ds"):
        spectral_change_correlation(base, [1], 1, weight)
    with pytest.raises(TypeError, match="shell_weight"):
        spectral_change_correlation(base, base, 1, weight.values)
    with pytest.raises(ValueError, match="n_permutations"):
        spectral_change_correlation(base, base, 1, weight, n_permutations=0)
