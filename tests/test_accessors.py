"""Tests of xtl/accessors.py: the `.tl` accessors are thin wrappers over xtl.spectral."""
import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

import xtl.accessors  # noqa: F401  (registers .tl)
from xtl import spectral as S

TWO_PI = 2 * np.pi


def flow():
    rng = np.random.default_rng(0)
    n = 16
    coords = {"member": [0, 1], "time": [0.0, 1.0, 2.0], "y": np.arange(n) * TWO_PI / n,
              "x": np.arange(n) * TWO_PI / n}
    dims = ("member", "time", "y", "x")
    psi = rng.standard_normal((2, 3, n, n))
    return xr.Dataset(
        {"psi": (dims, psi), "omega": (dims, 3 * psi), "pi": (dims, rng.standard_normal(psi.shape))},
        coords=coords,
    ).chunk({"time": 1})


def models():
    rng = np.random.default_rng(1)
    shape = (2, 3, 2, 5, 5)

    def make(w):
        return xr.Dataset(
            {"kernel": (S.KERNEL_DIMS, w.astype(np.float32))}, coords={"layer": [1, 2]}
        )

    w = rng.standard_normal(shape)
    return make(w), make(w + 0.1 * rng.standard_normal(shape))


def test_accessor_is_registered_on_dataset_and_dataarray():
    ds = flow()
    assert isinstance(ds.tl, xtl.accessors.TLDatasetAccessor)
    assert isinstance(ds.psi.tl, xtl.accessors.TLDataArrayAccessor)


def test_dataset_spectra_match_functions():
    ds = flow()
    E = ds.tl.spectrum("energy")
    assert isinstance(E.data, dsa.Array) and E.dims == ("member", "time", "k")
    xr.testing.assert_allclose(E.compute(), S.spectrum(ds.psi, "energy").compute())
    xr.testing.assert_allclose(
        ds.tl.spectrum("enstrophy").compute(), S.spectrum(ds.omega, "enstrophy").compute()
    )
    P = ds.tl.spectrum()
    assert set(P.data_vars) == {"psi", "omega", "pi"}
    xr.testing.assert_allclose(ds.tl.spectrum(var="pi").compute(), P.pi.compute())
    xr.testing.assert_allclose(
        ds.tl.transfer_spectrum(kind="energy").compute(),
        S.transfer_spectrum(ds.psi, ds.pi, kind="energy").compute(),
    )
    TZ = ds.tl.transfer_spectrum(kind="enstrophy")
    np.testing.assert_allclose(
        TZ.sum("k").values, (ds.omega * ds.pi).mean(["y", "x"]).values, rtol=1e-12
    )


def test_dataarray_spectra_match_functions():
    ds = flow()
    P = ds.pi.tl.spectrum()
    np.testing.assert_allclose(P.sum("k").values, (ds.pi**2).mean(["y", "x"]).values, rtol=1e-12)
    xr.testing.assert_allclose(
        ds.psi.tl.transfer_spectrum(ds.pi, kind="energy").compute(),
        S.transfer_spectrum(ds.psi, ds.pi, kind="energy").compute(),
    )
    with pytest.raises(ValueError, match="'y' and 'x'"):
        ds.psi.isel(x=0).tl.spectrum()


def test_model_accessors_match_functions():
    base, tl = models()
    F = base.tl.kernel_filters(n=16)
    xr.testing.assert_allclose(F.compute(), S.kernel_filters(base, 16).compute())
    prof = F.tl.radial_profile()
    xr.testing.assert_allclose(prof.compute(), S.radial_profile(F).compute())
    c = base.tl.classify_kernels(n=16)
    xr.testing.assert_identical(c, S.classify_kernels(base, 16))
    xr.testing.assert_allclose(F.tl.classify_filters(), c, rtol=1e-4)  # full grid vs rfft2
    census = base.tl.filter_census(n=16)
    xr.testing.assert_identical(census, S.filter_census(base, n=16))
    xr.testing.assert_identical(c.tl.filter_census(), census)
    xr.testing.assert_identical(c.filter_type.tl.filter_census(), census)
    assert int(census.sum()) == 2 * 3 * 2
    change = base.tl.kernel_change(tl, n=16, percentile=90)
    xr.testing.assert_identical(change, S.kernel_change(base, tl, n=16, percentile=90))
    with pytest.raises(ValueError, match="'kernel'"):
        base.drop_vars("kernel").tl.kernel_filters(n=16)
