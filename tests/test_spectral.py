"""Tests of xtl/data/spectra.py (isotropic spectra) and xtl/explain/kernels.py (kernel filters,
classification, census, changes)."""
import tracemalloc

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from xtl.data import spectra as S
from xtl.explain import kernels as K

TWO_PI = 2 * np.pi


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def grid(ny, nx=None):
    nx = ny if nx is None else nx
    return np.arange(ny) * TWO_PI / ny, np.arange(nx) * TWO_PI / nx


def field(values, **lead):
    """A DataArray (..., y, x) on the conventional grid."""
    ny, nx = values.shape[-2:]
    y, x = grid(ny, nx)
    dims = tuple(lead) + ("y", "x")
    coords = {"y": y, "x": x, **{d: np.arange(n) for d, n in lead.items()}}
    return xr.DataArray(values, dims=dims, coords=coords)


class CountTasks(Callback):
    """Counts dask tasks executed while active (a real dask callback, not a mock)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def _pretask(self, key, dask, state):
        self.count += 1


def reference_spectrum(f, kind):
    """Independent numpy implementation: explicit loops over the grid wavenumbers."""
    ny, nx = f.shape[-2:]
    c = np.fft.fft2(f) / (ny * nx)
    ky = np.fft.fftfreq(ny) * ny
    kx = np.fft.fftfreq(nx) * nx
    kmag = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    shells = np.floor(kmag + 0.5).astype(int)
    out = np.zeros(f.shape[:-2] + (shells.max() + 1,))
    for i in range(ny):
        for j in range(nx):
            p = np.abs(c[..., i, j]) ** 2
            if kind == "energy":
                p = 0.5 * kmag[i, j] ** 2 * p
            elif kind == "enstrophy":
                p = 0.5 * p
            out[..., shells[i, j]] += p
    return out


T = np.arange(5) - 2
TY, TX = np.meshgrid(T, T, indexing="ij")  # tap_y (rows, y), tap_x (columns, x)


def gaussian(sigma):
    g = np.exp(-(TX**2 + TY**2) / (2 * sigma**2))
    return g / g.sum()


def gabor(theta_deg, wavelength=3.0, sigma=1.2):
    th = np.deg2rad(theta_deg)
    return np.exp(-(TX**2 + TY**2) / (2 * sigma**2)) * np.cos(
        TWO_PI / wavelength * (TX * np.cos(th) + TY * np.sin(th))
    )


LAPLACIAN = np.array(
    [[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, -4, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], float
)
DELTA = np.zeros((5, 5))
DELTA[2, 2] = 1.0


def model(kernels, dtype=np.float32):
    """Model Dataset from an array (layer, channel_out, channel_in, tap_y, tap_x)."""
    kernels = np.asarray(kernels, dtype=dtype)
    L, co, ci = kernels.shape[:3]
    return xr.Dataset(
        {
            "kernel": (K.KERNEL_DIMS, kernels),
            "bias": (("layer", "channel_out"), np.zeros((L, co), dtype)),
        },
        coords={"layer": np.arange(1, L + 1), "channel_out": np.arange(co), "channel_in": np.arange(ci)},
    )


def random_model(L, co, ci, seed=0):
    return model(np.random.default_rng(seed).standard_normal((L, co, ci, 5, 5)))


# ----------------------------------------------------------------------------------------
# isotropic spectra
# ----------------------------------------------------------------------------------------
def test_power_parseval_nonsquare_leading_dims_dask():
    rng = np.random.default_rng(1)
    f = field(rng.standard_normal((2, 3, 24, 32)) + 0.7, member=2, time=3).chunk({"time": 1})
    P = S.spectrum(f)
    assert isinstance(P.data, dsa.Array)
    assert P.dims == ("member", "time", "k")
    assert P["k"].values[0] == 0 and np.all(np.diff(P["k"].values) == 1)
    assert P.sizes["k"] == int(round(np.hypot(12, 16))) + 1
    np.testing.assert_allclose(P.sum("k").values, (f**2).mean(["y", "x"]).values, rtol=1e-12)
    # the mean is in the k = 0 bin
    np.testing.assert_allclose(P.sel(k=0).values, f.mean(["y", "x"]).values ** 2, rtol=1e-12)
    assert P["k"].attrs["units"] == "1" and "long_name" in P.attrs


def test_energy_spectrum_of_known_modes_is_exact():
    N = 32
    y, x = grid(N)
    X, Y = np.meshgrid(x, y)
    A, B, C = 2.0, 0.5, 1.5
    psi = A * np.cos(3 * X) + B * np.sin(4 * Y) + C * np.cos(2 * X + 5 * Y) + 0.3
    E = S.spectrum(field(psi), "energy")
    expected = np.zeros(E.sizes["k"])
    expected[3] = A**2 * 9 / 4
    expected[4] = B**2 * 16 / 4
    expected[5] = C**2 * 29 / 4  # |(2, 5)| = 5.39 -> shell 5, exact |k|^2 = 29
    np.testing.assert_allclose(E.values, expected, atol=1e-12)
    # sum = 1/2 mean |grad psi|^2 with the analytic gradient
    dpsidx = -3 * A * np.sin(3 * X) - 2 * C * np.sin(2 * X + 5 * Y)
    dpsidy = 4 * B * np.cos(4 * Y) - 5 * C * np.sin(2 * X + 5 * Y)
    np.testing.assert_allclose(E.sum(), 0.5 * np.mean(dpsidx**2 + dpsidy**2), rtol=1e-12)


def test_enstrophy_spectrum_of_known_modes_is_exact():
    N = 16
    y, x = grid(N)
    X, Y = np.meshgrid(x, y)
    omega = 3.0 * np.sin(X + Y) - 1.0 * np.cos(6 * Y)
    Z = S.spectrum(field(omega), "enstrophy")
    expected = np.zeros(Z.sizes["k"])
    expected[1] = 0.5 * 9 / 2  # |(1, 1)| = 1.41 -> shell 1
    expected[6] = 0.5 * 1 / 2
    np.testing.assert_allclose(Z.values, expected, atol=1e-12)
    np.testing.assert_allclose(Z.sum(), 0.5 * np.mean(omega**2), rtol=1e-12)


@pytest.mark.parametrize("kind", S.SPECTRUM_KINDS)
def test_xrft_path_agrees_with_independent_numpy(kind):
    rng = np.random.default_rng(2)
    values = rng.standard_normal((3, 12, 10))
    got = S.spectrum(field(values, time=3).chunk({"time": 2}), kind).compute()
    ref = reference_spectrum(values, kind)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.values, ref, rtol=1e-10, atol=1e-14)


def test_spectrum_transposes_to_trailing_yx_and_keeps_coords():
    rng = np.random.default_rng(3)
    f = field(rng.standard_normal((4, 8, 8)), time=4)
    g = f.transpose("y", "time", "x").assign_coords(time=[0.0, 0.5, 1.0, 1.5])
    P = S.spectrum(g)
    assert P.dims == ("time", "k")
    np.testing.assert_array_equal(P["time"].values, [0.0, 0.5, 1.0, 1.5])
    np.testing.assert_allclose(P.values, S.spectrum(f).values, rtol=1e-12)


def test_spectrum_is_lazy_on_dask():
    rng = np.random.default_rng(4)
    f = field(rng.standard_normal((4, 16, 16)), time=4)
    lazy = f.chunk({"time": 1, "y": 8})  # chunked y must be handled too
    with CountTasks() as counter:
        P = S.spectrum(lazy, "enstrophy")
        Pi = S.transfer_spectrum(lazy, lazy, kind="enstrophy")
    assert counter.count == 0
    assert isinstance(P.data, dsa.Array) and isinstance(Pi.data, dsa.Array)
    with CountTasks() as counter:
        values = P.compute()
    assert counter.count > 0
    np.testing.assert_allclose(values, S.spectrum(f, "enstrophy").values, rtol=1e-12)


def test_kmax_truncates():
    rng = np.random.default_rng(5)
    f = field(rng.standard_normal((16, 16)))
    full = S.spectrum(f)
    cut = S.spectrum(f, kmax=8)
    assert cut.sizes["k"] == 9
    np.testing.assert_allclose(cut.values, full.values[:9])
    assert full.sizes["k"] == 12  # round(|(8, 8)|) = 11 -> shells 0..11


def test_transfer_spectrum_sums_and_sign():
    rng = np.random.default_rng(6)
    N = 16
    psi = field(rng.standard_normal((2, N, N)) + 0.5, time=2)
    pi = field(rng.standard_normal((2, N, N)) + 0.2, time=2)
    T = S.transfer_spectrum(psi, pi, kind="energy")
    # the k = 0 (gauge) mode of psi is left out: the sum is the covariance of psi and pi
    anom = lambda f: f - f.mean(["y", "x"])  # noqa: E731
    cov = (anom(psi) * anom(pi)).mean(["y", "x"]).values
    np.testing.assert_allclose(T.sum("k").values, cov, rtol=1e-12)
    assert T.sel(k=0).values.tolist() == [0.0, 0.0]
    # the resolved-energy tendency due to the -pi term of the LES equation is -T(k):
    # d omega/dt = -pi  =>  d psi^/dt = -pi^/|k|^2
    eps = 1e-6
    k = np.fft.fftfreq(N) * N
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    k2[0, 0] = np.inf
    dpsi = np.real(np.fft.ifft2(-np.fft.fft2(pi.values) / k2))
    E0 = S.spectrum(psi, "energy")
    E1 = S.spectrum(psi + eps * dpsi, "energy")
    np.testing.assert_allclose((E1 - E0).values / eps, -T.values, rtol=1e-4, atol=1e-8)
    # enstrophy: Z(omega - eps pi) - Z(omega) = -eps T_Z
    omega = psi
    TZ = S.transfer_spectrum(omega, pi, kind="enstrophy")
    Z0 = S.spectrum(omega, "enstrophy")
    Z1 = S.spectrum(omega - eps * pi, "enstrophy")
    np.testing.assert_allclose((Z1 - Z0).values / eps, -TZ.values, rtol=1e-4, atol=1e-8)


def flow_dataset():
    rng = np.random.default_rng(7)
    shape = (2, 3, 16, 16)
    psi = field(rng.standard_normal(shape), member=2, time=3)
    return xr.Dataset(
        {
            "psi": psi,
            "omega": psi * 2 + 1,
            "pi": psi * 0.1 - 0.3,
        },
        attrs={"Re": 1000.0},
    ).chunk({"time": 1})


def test_dataset_spectrum_reads_natural_variables():
    ds = flow_dataset()
    E = S.spectrum(ds, "energy")
    np.testing.assert_allclose(E.values, S.spectrum(ds.psi, "energy").values)
    Z = S.spectrum(ds, "enstrophy")
    np.testing.assert_allclose(Z.values, S.spectrum(ds.omega, "enstrophy").values)
    P = S.spectrum(ds)
    assert isinstance(P, xr.Dataset) and set(P.data_vars) == {"psi", "omega", "pi"}
    assert P.pi.dims == ("member", "time", "k")
    np.testing.assert_allclose(P.pi.sum("k").values, (ds.pi**2).mean(["y", "x"]).values)
    Ppi = S.spectrum(ds, var="pi")
    np.testing.assert_allclose(Ppi.values, P.pi.values)
    TE = S.transfer_spectrum(ds, kind="energy")
    np.testing.assert_allclose(TE.values, S.transfer_spectrum(ds.psi, ds.pi).values)
    TZ = S.transfer_spectrum(ds, kind="enstrophy")
    np.testing.assert_allclose(
        TZ.sum("k").values, (ds.omega * ds.pi).mean(["y", "x"]).values, rtol=1e-12
    )


def test_spectrum_bad_input():
    f = field(np.ones((8, 8)))
    with pytest.raises(ValueError, match="'y' and 'x'"):
        S.spectrum(f.rename(x="lon"))
    with pytest.raises(TypeError, match="DataArray"):
        S.spectrum(np.ones((8, 8)))
    with pytest.raises(ValueError, match="kind must be one of"):
        S.spectrum(f, "vorticity")
    with pytest.raises(ValueError, match="kmax"):
        S.spectrum(f, kmax=-1)
    # unevenly spaced points are no periodic grid
    uneven = f.assign_coords(x=np.geomspace(1, TWO_PI, 8))
    with pytest.raises(ValueError, match=r"'x' must be evenly spaced"):
        S.spectrum(uneven)
    # a grid that includes both 0 and 2π reads as a domain of 8·2π/7 in x, 2π in y
    with pytest.raises(ValueError, match="must be square"):
        S.spectrum(f.assign_coords(x=np.linspace(0, TWO_PI, 8)))
    with pytest.raises(ValueError, match="must be square"):
        S.spectrum(f.assign_coords(y=np.arange(8.0)))  # unit spacing: Ly = 8, Lx = 2π
    with pytest.raises(ValueError, match="no variable with dims 'y' and 'x'"):
        S.spectrum(xr.Dataset({"a": ("time", [1.0, 2.0])}))
    with pytest.raises(ValueError, match="'y' and 'x'"):
        S.spectrum(xr.Dataset({"psi": ("time", [1.0, 2.0])}), "energy")
    ds = flow_dataset().drop_vars("psi")
    with pytest.raises(ValueError, match="'psi'"):
        S.spectrum(ds, "energy")
    with pytest.raises(ValueError, match="'pi'"):
        S.transfer_spectrum(flow_dataset().drop_vars("pi"), kind="energy")
    with pytest.raises(ValueError, match="same grid"):
        S.transfer_spectrum(f, field(np.ones((8, 4))))
    with pytest.raises(ValueError, match="kind must be one of"):
        S.transfer_spectrum(f, f, kind="power")


# ----------------------------------------------------------------------------------------
# kernel filters
# ----------------------------------------------------------------------------------------
def test_kernel_filters_values_dims_and_ordering():
    rng = np.random.default_rng(8)
    m = model(rng.standard_normal((2, 3, 2, 5, 5)), dtype=np.float64)
    n = 16
    F = K.kernel_filters(m, n)
    assert F.dims == ("layer", "channel_out", "channel_in", "ky", "kx")
    assert isinstance(F.data, dsa.Array)
    np.testing.assert_array_equal(F["ky"].values, np.arange(-8, 8))
    np.testing.assert_array_equal(F["layer"].values, [1, 2])
    ref = np.abs(np.fft.fftshift(np.fft.fft2(m.kernel.values, s=(n, n)), axes=(-2, -1)))
    np.testing.assert_allclose(F.values, ref, rtol=1e-12, atol=1e-12)
    # centre is k = 0: the sum of the taps
    np.testing.assert_allclose(
        F.sel(ky=0, kx=0).values, np.abs(m.kernel.sum(["tap_y", "tap_x"]).values), rtol=1e-12
    )
    U = K.kernel_filters(m, 15, shift=False)  # odd n, numpy fftfreq order
    np.testing.assert_array_equal(U["kx"].values, np.rint(np.fft.fftfreq(15, 1 / 15)))
    np.testing.assert_allclose(
        U.values, np.abs(np.fft.fft2(m.kernel.values, s=(15, 15))), rtol=1e-12, atol=1e-12
    )
    assert K.kernel_filters(model(m.kernel.values), n).dtype == np.float32


def test_kernel_filters_is_lazy_and_chunked():
    m = random_model(3, 8, 4)
    kernel = m.kernel.chunk({"layer": 1})
    lazy_model = m.assign(kernel=kernel)
    with CountTasks() as counter:
        F = K.kernel_filters(lazy_model, 32, chunks={"layer": 1, "channel_out": 2})
        prof = K.radial_profile(F)
    assert counter.count == 0
    assert F.data.chunksize == (1, 2, 4, 32, 32)
    assert isinstance(prof.data, dsa.Array)
    with CountTasks() as counter:
        prof.compute()
    assert counter.count > 0


def test_radial_profile():
    n = 16
    F = K.kernel_filters(model(DELTA[None, None, None]), n)
    prof = K.radial_profile(F)
    assert prof.dims == ("layer", "channel_out", "channel_in", "k")
    np.testing.assert_array_equal(prof["k"].values, np.arange(n // 2 + 1))
    np.testing.assert_allclose(prof.values, 1.0, rtol=1e-6)
    # hand computation for a random kernel: mean of |W^| over each shell
    w = np.random.default_rng(9).standard_normal((5, 5))
    F = K.kernel_filters(model(w[None, None, None], dtype=np.float64), n, shift=False)
    mag = np.abs(np.fft.fft2(w, s=(n, n)))
    k = np.fft.fftfreq(n) * n
    shells = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    ref = [mag[shells == s].mean() for s in range(n // 2 + 1)]
    np.testing.assert_allclose(K.radial_profile(F).values.ravel(), ref, rtol=1e-12)
    # a Gaussian blur decays monotonically
    g = K.radial_profile(K.kernel_filters(model(gaussian(1.0)[None, None, None]), n))
    assert np.all(np.diff(g.values.ravel()) < 0)


GABOR_ANGLES = (0.0, 30.0, 45.0, 60.0, 100.0, 135.0, 170.0)


@pytest.mark.parametrize("n", [32, 64])
def test_known_kernels_are_classified_right(n):
    kernels = [
        gaussian(1.0),
        LAPLACIAN,
        gaussian(0.6) - gaussian(1.2),  # difference of Gaussians
        DELTA,
        *[gabor(a) for a in GABOR_ANGLES],
        np.full((5, 5), np.nan),  # NaN padding
    ]
    m = model(np.stack(kernels)[None, :, None])
    c = K.classify_kernels(m, n)
    types = c.filter_type.values.ravel().tolist()
    assert types == ["low-pass", "high-pass", "band-pass", "all-pass"] + ["gabor"] * len(
        GABOR_ANGLES
    ) + ["absent"]
    theta = c.orientation.values.ravel()[4:-1]
    err = np.abs((theta - np.array(GABOR_ANGLES) + 90) % 180 - 90)  # circular in [0, 180)
    assert np.all(err < 3.0), (theta, err)
    assert np.all((theta >= 0) & (theta < 180))
    assert np.isnan(c.orientation.values.ravel()[:4]).all()  # orientation only for gabor
    assert c.peak_k.values.ravel()[0] == 0 and c.peak_k.values.ravel()[1] == n // 2


def test_fast_kernel_path_equals_full_grid_classification():
    # classify_kernels works on the rfft2 half plane; classify_filters on the full grid
    m = random_model(2, 8, 8, seed=11)
    for n in (16, 17):
        fast = K.classify_kernels(m, n, chunks={"channel_out": 3})
        filters = K.kernel_filters(m, n, shift=False).compute()
        before = filters.copy(deep=True)
        full = K.classify_filters(filters)
        xr.testing.assert_identical(filters, before)  # the input is not modified
        np.testing.assert_array_equal(fast.filter_type.values, full.filter_type.values)
        for v in ("orientation", "anisotropy", "flatness", "peak_k"):
            np.testing.assert_allclose(fast[v].values, full[v].values, rtol=1e-4, atol=1e-3)
        assert fast.attrs == full.attrs


def test_classification_thresholds_are_the_documented_ones():
    # a mild blur is flat enough to be all-pass at a loose threshold only
    m = model(gaussian(0.55)[None, None, None])
    c = K.classify_kernels(m, 32)
    flat = c.flatness.item()
    assert c.filter_type.item() == "low-pass" and flat > 2.0
    loose = K.classify_kernels(m, 32, flat_ratio=flat * 1.01)
    assert loose.filter_type.item() == "all-pass"
    # a Gabor is band-pass when the anisotropy threshold is above its anisotropy
    g = model(gabor(30.0)[None, None, None])
    cg = K.classify_kernels(g, 32)
    assert cg.filter_type.item() == "gabor" and 0.5 < cg.anisotropy.item() <= 1
    strict = K.classify_kernels(g, 32, min_anisotropy=cg.anisotropy.item() + 0.01)
    assert strict.filter_type.item() in ("band-pass", "high-pass")
    assert np.isnan(strict.orientation.item())


def test_classify_filters_on_analytic_spectra():
    # classification needs only |W^| on an integer grid: build spectra by hand
    k = np.arange(-16, 16)
    KY, KX = np.meshgrid(k, k, indexing="ij")
    kk = np.hypot(KX, KY)
    ring = np.exp(-((kk - 8) ** 2) / 4)  # isotropic band at k = 8
    blob = np.exp(-((KX - 6) ** 2 + (KY - 6) ** 2) / 4) + np.exp(-((KX + 6) ** 2 + (KY + 6) ** 2) / 4)
    F = xr.DataArray(
        np.stack([ring + 1e-3, blob + 1e-3]), dims=("case", "ky", "kx"), coords={"ky": k, "kx": k}
    )
    c = K.classify_filters(F)
    assert c.filter_type.values.tolist() == ["band-pass", "gabor"]
    assert abs(c.orientation.values[1] - 45.0) < 1.0


def test_random_paper_like_model_classifies_without_error_and_census_counts():
    kernels = np.random.default_rng(10).standard_normal((3, 6, 5, 5, 5))
    kernels[0, :, 2:] = np.nan  # first layer has 2 input channels
    kernels[2, 1:] = np.nan  # last layer has 1 output channel
    m = model(kernels)
    c = K.classify_kernels(m, 32)
    types = c.filter_type.values
    assert set(np.unique(types)) <= set(K.FILTER_TYPES)
    assert (types == "absent").sum() == 6 * 3 + 5 * 5
    assert (types[np.isfinite(kernels).all(axis=(-1, -2))] != "absent").all()
    census = K.filter_census(c)
    assert census.dims == ("layer", "filter_type")
    assert census["filter_type"].values.tolist() == list(K.FILTER_TYPES[:-1])
    np.testing.assert_array_equal(census.sum("filter_type").values, [12, 30, 5])
    for lay, t in [(1, "gabor"), (2, "band-pass"), (3, "low-pass")]:
        assert census.sel(layer=lay, filter_type=t) == (c.filter_type.sel(layer=lay) == t).sum()
    # the census straight from the model and from the DataArray agree
    xr.testing.assert_equal(K.filter_census(m, pad_to=32), census)
    xr.testing.assert_equal(K.filter_census(c.filter_type), census)


def test_chunked_classification_keeps_memory_bounded():
    n = 64
    m = random_model(6, 32, 32)
    materialized = 6 * 32 * 32 * n * n * 4  # 96 MiB of float32 |W^|
    K.classify_kernels(random_model(1, 2, 2), n)  # warm up imports and caches
    tracemalloc.start()
    try:
        c = K.classify_kernels(m, n, chunks={"layer": 1, "channel_out": 4})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert c.filter_type.shape == (6, 32, 32)
    assert peak < 0.4 * materialized, peak / 2**20


def test_kernel_filter_bad_input():
    m = random_model(1, 2, 2)
    with pytest.raises(ValueError, match="variable 'kernel'"):
        K.kernel_filters(m.drop_vars("kernel"), 16)
    with pytest.raises(TypeError, match="model xarray.Dataset"):
        K.kernel_filters(m.kernel, 16)
    with pytest.raises(ValueError, match="at least the kernel size"):
        K.kernel_filters(m, 4)
    with pytest.raises(TypeError, match="integer grid size"):
        K.kernel_filters(m, 16.0)
    with pytest.raises(ValueError, match="dims"):
        K.kernel_filters(m.rename(tap_x="tx"), 16)
    with pytest.raises(ValueError, match="'ky', 'kx'"):
        K.radial_profile(xr.DataArray(np.ones((4, 4)), dims=("a", "b")))
    with pytest.raises(ValueError, match="edge"):
        K.classify_kernels(m, 16, edge=0.7)
    with pytest.raises(ValueError, match=r"pad_to \(the grid .* must be given.*records no square"):
        K.filter_census(m)


# ----------------------------------------------------------------------------------------
# kernel changes
# ----------------------------------------------------------------------------------------
def test_kernel_change_hand_computed():
    n = 8
    a = np.arange(9, dtype=float).reshape(3, 3) / 10
    delta = np.zeros((3, 3))
    delta[1, 1] = 1.0
    base = np.zeros((2, 2, 1, 3, 3))
    tl = np.zeros_like(base)
    base[0, 0, 0] = a
    tl[0, 0, 0] = 2 * a  # |W^| doubles: spectral change = n ||a||, physical ||a||
    base[0, 1, 0] = delta
    tl[0, 1, 0] = -delta  # same |W^|: spectral change 0, physical 2
    base[1, 0, 0] = delta
    tl[1, 0, 0] = delta  # unchanged
    tl[1, 1, 0] = 0.5 * delta  # from zero: |W^| = 0.5 everywhere -> spectral 0.5 n
    mb, mt = model(base, np.float64), model(tl, np.float64)
    out = K.kernel_change(mb, mt, pad_to=n, percentile=50)
    na = np.linalg.norm(a)
    np.testing.assert_allclose(out.physical_change.values[..., 0], [[na, 2.0], [0.0, 0.5]], atol=1e-12)
    np.testing.assert_allclose(
        out.spectral_change.values[..., 0], [[n * na, 0.0], [0.0, 0.5 * n]], atol=1e-12
    )
    # per layer: ||dW||_F / ||W_base||_F and || |W^_TL| - |W^_base| ||_F / ||W^_base||_F
    np.testing.assert_allclose(
        out.relative_physical_change.values,
        [np.sqrt(na**2 + 4) / np.sqrt(na**2 + 1), 0.5 / 1.0],
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        out.relative_spectral_change.values,
        [n * na / (n * np.sqrt(na**2 + 1)), 0.5 * n / n],
        rtol=1e-12,
    )
    # percentile 50 of spectral changes [n||a||, 0, 0, 4] -> the two non-zero ones, sorted
    thr = np.percentile([n * na, 0, 0, 0.5 * n], 50)
    assert out.attrs["threshold"] == pytest.approx(thr)
    assert out.sizes["top"] == 2
    np.testing.assert_array_equal(out.top_layer.values, [1, 2])
    np.testing.assert_array_equal(out.top_channel_out.values, [0, 1])
    np.testing.assert_allclose(out.top_change.values, [n * na, 0.5 * n])
    np.testing.assert_allclose(
        out.top_filter_tl.values[0], np.abs(np.fft.fftshift(np.fft.fft2(2 * a, s=(n, n)))), atol=1e-12
    )
    np.testing.assert_allclose(out.top_filter_base.values[1], 0.0)
    np.testing.assert_allclose(out.top_filter_tl.values[1], 0.5)
    # ranking by the physical change picks the sign flip first
    phys = K.kernel_change(mb, mt, pad_to=n, percentile=75, by="physical")
    assert (phys.top_layer.item(), phys.top_channel_out.item()) == (1, 1)


def test_kernel_change_bounds_on_random_models():
    mb, mt = random_model(2, 4, 3, seed=1), random_model(2, 4, 3, seed=2)
    n = 16
    out = K.kernel_change(mb, mt, pad_to=n)
    assert out.sizes["top"] == 1  # the 99.9th percentile of 24 kernels: only the max
    assert np.all(out.spectral_change <= n * out.physical_change * (1 + 1e-5))
    assert out.top_change.item() == pytest.approx(float(out.spectral_change.max()))


def test_kernel_change_bad_input():
    mb = random_model(2, 2, 2)
    with pytest.raises(ValueError, match="same shape"):
        K.kernel_change(mb, random_model(3, 2, 2), pad_to=8)
    with pytest.raises(ValueError, match="percentile"):
        K.kernel_change(mb, mb, pad_to=8, percentile=120)
    with pytest.raises(ValueError, match="by must be"):
        K.kernel_change(mb, mb, pad_to=8, by="both")
    with pytest.raises(ValueError, match="'kernel'"):
        K.kernel_change(mb, mb.drop_vars("kernel"), pad_to=8)
    with pytest.raises(ValueError, match="at least the kernel size"):
        K.kernel_change(mb, mb, pad_to=3)
