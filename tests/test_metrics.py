"""Tests of xtl/metrics.py."""
import numpy as np
import pytest
import xarray as xr

from xtl.data.metrics import (
    conditional_correlation,
    correlation,
    relative_l2,
    score,
    spectrum_error,
)


def field(seed=0, nt=5, n=16):
    rng = np.random.default_rng(seed)
    x = np.arange(n) * 2 * np.pi / n
    return xr.DataArray(rng.standard_normal((nt, n, n)), dims=("time", "y", "x"),
                        coords={"time": np.arange(nt), "y": x, "x": x})


def test_correlation_matches_numpy_per_snapshot_mean():
    a, b = field(0), field(1)
    b = 0.6 * a + b  # correlated
    expect = np.mean([np.corrcoef(a[i].values.ravel(), b[i].values.ravel())[0, 1]
                      for i in range(a.sizes["time"])])
    ds = correlation(a, b)
    assert isinstance(ds, xr.Dataset) and ds.cc.dims == ()
    assert float(ds.cc) == pytest.approx(expect, rel=1e-12)
    per = correlation(a, b, average=False).cc
    assert per.dims == ("time",) and float(per.mean()) == pytest.approx(expect)
    assert float(correlation(a, a).cc) == pytest.approx(1.0)
    assert float(correlation(-2 * a + 3, a).cc) == pytest.approx(-1.0)


def test_correlation_of_a_constant_snapshot_is_nan_and_skipped():
    a = field(0, nt=2)
    b = a.copy()
    b[0] = 1.0
    per = correlation(a, b, average=False).cc
    assert np.isnan(per[0]) and per[1] == pytest.approx(1.0)
    assert float(correlation(a, b).cc) == pytest.approx(1.0)


def test_conditional_correlation_masks_by_sign_of_transfer():
    truth, omega, noise = field(0), field(1), field(2)
    # prediction: perfect where forward scatter, noise where backscatter
    forward = truth * omega > 0
    pred = xr.where(forward, truth, noise)
    ds = conditional_correlation(pred, truth, omega)
    assert float(ds.cc_forward) == pytest.approx(1.0)
    assert abs(float(ds.cc_backscatter)) < 0.3
    assert float(ds.backscatter_fraction) == pytest.approx(float((truth * omega < 0).mean()))
    # manual Pearson over backscatter points of snapshot 0
    m = (truth[0] * omega[0] < 0).values
    expect0 = np.corrcoef(pred[0].values[m], truth[0].values[m])[0, 1]
    per = conditional_correlation(pred, truth, omega, average=False)
    assert float(per.cc_backscatter[0]) == pytest.approx(expect0, rel=1e-12)


def test_relative_l2():
    a = field(0)
    assert float(relative_l2(a, a).rel_l2) == 0.0
    assert float(relative_l2(0 * a, a).rel_l2) == pytest.approx(1.0)
    assert float(relative_l2(3 * a, a).rel_l2) == pytest.approx(2.0)


def test_spectrum_error_in_decades():
    a = field(0)
    ds = spectrum_error(a, a)
    assert float(ds.spectrum_error) == 0.0
    # amplitude x10 => power x100 => 2 decades at every k
    assert float(spectrum_error(10 * a, a).spectrum_error) == pytest.approx(2.0)
    assert ds.spectrum_true.dims == ("k",) and ds.spectrum_error.attrs["kmax"] == 8
    # Parseval of the underlying spectra (all shells)
    full = spectrum_error(a, a, kmin=0, kmax=12)
    assert float(full.spectrum_true.sum()) == pytest.approx(float((a ** 2).mean()), rel=1e-10)


def test_score_and_bad_input():
    a, b = field(0), field(1)
    s = score(a + 0.1 * b, a, b)
    assert {"cc", "rel_l2", "spectrum_error", "cc_forward", "cc_backscatter"} <= set(s)
    assert all(s[v].dims == () for v in s)
    with pytest.raises(ValueError, match="same dims and sizes"):
        correlation(a, a.isel(time=slice(0, 2)))
    with pytest.raises(ValueError, match=r"dims \(\.\.\., 'y', 'x'\)"):
        correlation(a.rename(x="lon"), a.rename(x="lon"))
    with pytest.raises(TypeError, match="DataArray"):
        relative_l2(a.values, a)


def test_log_spectrum_rmse_skips_empty_shells():
    import numpy as np
    import xarray as xr

    from xtl.data.metrics import log_spectrum_rmse

    k = np.arange(5)
    a = xr.DataArray([9.0, 1.0, 10.0, 0.0, 100.0], dims="k", coords={"k": k})
    b = xr.DataArray([1.0, 10.0, 10.0, 5.0, 1.0], dims="k", coords={"k": k})
    # shells 1, 2, 4 (k = 0 left out, shell 3 empty in a): errors 1, 0, 2 decades
    assert float(log_spectrum_rmse(a, b)) == pytest.approx(np.sqrt((1 + 0 + 4) / 3))
    assert float(log_spectrum_rmse(a, b, kmax=2)) == pytest.approx(np.sqrt(0.5))
