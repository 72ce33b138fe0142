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
