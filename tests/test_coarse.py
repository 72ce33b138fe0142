"""Filters, spectral coarse-graining and the SGS term Π (xtl/coarse.py), and simulate(les=...)."""
import math

import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

import xtl
from conftest import InterruptingClosure, advective_term
import xtl.accessors  # noqa: F401  (registers .tl)
from xtl.data.coarse import (
    FILTERS,
    CoarseGraining,
    coarse_grain,
    default_width,
    filter_transfer_function,
    sgs_term,
)
from xtl.physics.cases import check_n_les
from xtl.solver import DivergenceError, SpectralGrid

TWO_PI = 2 * np.pi
N, N_LES = 64, 16


def _points(n):
    x = np.arange(n) * TWO_PI / n
    return x[None, :], x[:, None]  # X (1, n), Y (n, 1)


def _dataset(omega, psi, n=N, lead=()):
    x = np.arange(n) * TWO_PI / n
    dims = tuple(lead) + ("y", "x")
    return xr.Dataset({"omega": (dims, omega), "psi": (dims, psi)}, coords={"x": x, "y": x})


def _psi_of(omega_modes):
    """ψ for ω = Σ a cos(k·x + φ): ψ = Σ a/|k|² cos(k·x + φ)."""
    X, Y = _points(N)
    omega = sum(a * np.cos(kx * X + ky * Y + p) for (kx, ky), a, p in omega_modes)
    psi = sum(a / (kx**2 + ky**2) * np.cos(kx * X + ky * Y + p) for (kx, ky), a, p in omega_modes)
    return omega + 0 * Y, psi + 0 * Y


def _band_limited(kcut, seed=0, n=N):
    """A random zero-mean ω with modes |kx|, |ky| < kcut only, and its ψ."""
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(n, 1.0 / n)[:, None]
    kx = np.arange(n // 2 + 1)[None, :]
    spec = np.fft.rfft2(rng.standard_normal((n, n)))
    spec *= (np.abs(ky) < kcut) & (kx < kcut)
    spec[0, 0] = 0
    k2 = kx**2 + ky**2
    return np.fft.irfft2(spec, s=(n, n)), np.fft.irfft2(spec / np.where(k2 > 0, k2, 1), s=(n, n))


def _g(name, kx, ky, width):
    """The filter formulas, written out independently of xtl."""
    if name == "gaussian":
        return math.exp(-(kx**2 + ky**2) * width**2 / 24)
    if name == "box":
        def sinc(z):
            return 1.0 if z == 0 else math.sin(z) / z

        return sinc(kx * width / 2) * sinc(ky * width / 2)
    kc = math.pi / width
    return float(abs(kx) < kc - 1e-9 and abs(ky) < kc - 1e-9)


# --------------------------------------------------------------------------- transfer functions
@pytest.mark.parametrize("name", FILTERS)
def test_transfer_functions_equal_their_formulas(name):
    width = default_width(N_LES)
    assert width == pytest.approx(2 * TWO_PI / N_LES)
    G = filter_transfer_function(N_LES, name, n=N)
    assert G.dims == ("ky", "kx") and G.sizes == {"ky": N, "kx": N}
    assert G.kx.values[0] == -N // 2 and G.kx.values[-1] == N // 2 - 1
    assert G.attrs["filter"] == name and G.attrs["filter_width"] == pytest.approx(width)
    for kx, ky in [(0, 0), (1, 0), (3, 4), (-5, 2), (4, 4), (3, -3), (8, 1), (-20, 31)]:
        assert G.sel(kx=kx, ky=ky).item() == pytest.approx(_g(name, kx, ky, width), abs=1e-15)
    assert G.sel(kx=0, ky=0).item() == 1.0


def test_transfer_function_shapes_and_widths():
    gauss = filter_transfer_function(N_LES, "gaussian", n=N, width=0.5)
    assert gauss.sel(kx=6, ky=8).item() == pytest.approx(math.exp(-100 * 0.25 / 24))
    # the box filter's first zero is at 2π/Δ: the LES Nyquist n_les/2 for the default width
    box = filter_transfer_function(N_LES, "top-hat", n=N)
    assert box.attrs["filter"] == "box"
    assert abs(box.sel(kx=N_LES // 2, ky=0).item()) < 1e-15
    # the sharp filter keeps |kx|, |ky| < π/Δ (square, not a disc)
    sharp = filter_transfer_function(N_LES, "sharp", n=N)
    kc = N_LES // 4
    assert sharp.sel(kx=kc - 1, ky=-(kc - 1)).item() == 1.0
    assert sharp.sel(kx=kc, ky=0).item() == 0.0 and sharp.sel(kx=0, ky=-kc).item() == 0.0
    assert filter_transfer_function(N_LES, "sharp").sizes == {"ky": N_LES, "kx": N_LES}


# --------------------------------------------------------------------------- coarse-graining
@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("mode", [(3, -5), (0, 7), (-7, 7), (1, 0)])
def test_single_fourier_mode_coarse_grains_exactly(name, mode):
    kx, ky = mode
    omega, psi = _psi_of([(mode, 1.7, 0.4)])
    les = coarse_grain(_dataset(omega, psi), N_LES, name)
    X, Y = _points(N_LES)
    g = _g(name, kx, ky, default_width(N_LES))
    expected = 1.7 * g * np.cos(kx * X + ky * Y + 0.4)
    np.testing.assert_allclose(les.omega.values, expected, rtol=0, atol=1e-14)
    np.testing.assert_allclose(les.psi.values, expected / (kx**2 + ky**2), rtol=0, atol=1e-14)
    # Π of one Fourier mode is zero (N(ω, ψ) = 0 for a single mode)
    assert np.max(np.abs(les.pi.values)) < 1e-13


@pytest.mark.parametrize("name", FILTERS)
def test_an_les_grid_equal_to_the_dns_grid_still_filters(name):
    # n_les == n: nothing is truncated but every mode is multiplied by its Ĝ (< 1 off k = 0)
    kx, ky = 17, -3  # beyond the sharp filter's cut-off kc = n/4
    omega, psi = _psi_of([((kx, ky), 1.3, 0.2)])
    les = coarse_grain(_dataset(omega, psi), N, name)
    g = _g(name, kx, ky, default_width(N))
    assert les.sizes == {"y": N, "x": N} and les.attrs["n_les"] == les.attrs["n_dns"] == N
    np.testing.assert_allclose(les.omega.values, g * omega, rtol=0, atol=1e-13)
    assert g < 1.0
    # Π of a turbulent field on its own grid is the SGS term of the filter alone: not zero
    omega, psi = _band_limited(N // 3, seed=3)
    pi = coarse_grain(_dataset(omega, psi), N, "gaussian").pi.values
    assert np.abs(pi).max() > 1e-3 * np.abs(omega).max()


def test_one_rule_for_n_les_whoever_checks_it():
    for n_les in (N, N - 2, 4):  # allowed by the case, the coarse-graining and coarse_grain
        assert xtl.get_case("tiny", n_les=n_les).n_les == n_les
        assert CoarseGraining(n_les).for_grid(N).n_les == n_les
    omega, psi = _psi_of([((1, 2), 1.0, 0.0)])
    checks = {
        "Case.n_les": lambda: xtl.get_case("tiny", n_les=N + 2),
        "n_les": lambda: coarse_grain(_dataset(omega, psi), N + 2),
        "n_les ": lambda: CoarseGraining(N + 2).for_grid(N),
    }
    for name, check in checks.items():
        with pytest.raises(ValueError, match=rf"^{name.strip()} must not be larger than the DNS "
                                             rf"grid size n={N} .*got {name.strip()}={N + 2}$"):
            check()
    with pytest.raises(TypeError, match="Case.n_les must be an even int"):
        xtl.get_case("tiny", n_les=16.0)
    assert type(xtl.get_case("tiny", n_les=np.int64(16)).n_les) is int
    assert check_n_les(np.int64(8), 8) == 8


def test_the_coarse_graining_object_is_checked_once_and_does_the_work():
    cg = CoarseGraining(N_LES, "top-hat", 0.7)
    assert (cg.n_les, cg.filter, cg.width) == (N_LES, "box", 0.7)
    assert CoarseGraining(N_LES).width == default_width(N_LES)
    assert CoarseGraining.from_les(cg) is cg and cg.for_grid(N) is cg
    assert CoarseGraining().for_grid(N, N_LES) == CoarseGraining(N_LES)
    with pytest.raises(ValueError, match="needs an 'n_les'"):
        CoarseGraining().for_grid(N)
    omega, psi = _band_limited(20, seed=1)
    ds = _dataset(np.stack([omega, 2 * omega]), np.stack([psi, 2 * psi]), lead=("time",))
    xr.testing.assert_identical(cg.apply(ds), coarse_grain(ds, N_LES, "box", width=0.7))
    fields = cg.block(ds.psi.values, ds.omega.values)
    for name, values in zip(CoarseGraining.variables, fields):
        np.testing.assert_array_equal(values, cg.apply(ds)[name].values)
    spectral = cg.spectral(np.fft.rfft2(2 * omega))
    for name, values in zip(CoarseGraining.variables, fields):
        np.testing.assert_allclose(spectral[name], values[1], rtol=0,
                                   atol=1e-12 * np.abs(values[1]).max())


def test_constant_is_kept_and_modes_at_or_above_the_les_nyquist_are_removed():
    X, Y = _points(N)
    h = N_LES // 2
    field = 2.5 + np.cos(h * X) + np.sin(h * Y + 0.3) + np.cos((h + 3) * X - 2 * Y) + 0 * Y
    les = coarse_grain(_dataset(field, field), N_LES, "gaussian")
    # the mean passes (Ĝ(0) = 1); the LES Nyquist modes and beyond are set to zero
    np.testing.assert_allclose(les.omega.values, 2.5, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "k1, k2, name",
    [
        ((2, 1), (1, -3), "gaussian"),  # k1 ± k2 both resolved on the LES grid
        ((5, 2), (4, -3), "gaussian"),  # k1 + k2 = (9, -1) lies beyond the LES grid
        ((5, 2), (4, -3), "box"),
        ((3, 1), (2, -3), "sharp"),  # Ĝ(k1) = Ĝ(k2) = 1, Ĝ(k1 ± k2) = 0
    ],
)
def test_pi_of_two_modes_equals_its_analytic_value(k1, k2, name):
    a1, a2, p1, p2 = 1.0, 0.7, 0.2, 1.1
    omega, psi = _psi_of([(k1, a1, p1), (k2, a2, p2)])
    les = coarse_grain(_dataset(omega, psi), N_LES, name)
    # N(ω, ψ) = C/2 [cos((k1−k2)·x + p1−p2) − cos((k1+k2)·x + p1+p2)],
    # C = a1 a2 (k1 × k2) (1/|k2|² − 1/|k1|²); ω̄ has amplitudes a_j Ĝ(k_j), so
    # Π = C/2 Σ± ∓ [Ĝ(k1 ± k2) − Ĝ(k1)Ĝ(k2)] cos(...)   (modes kept on the LES grid only)
    width = default_width(N_LES)

    def G(k):
        return _g(name, k[0], k[1], width)

    def kept(k):
        return abs(k[0]) < N_LES // 2 and abs(k[1]) < N_LES // 2

    K1, K2 = k1[0] ** 2 + k1[1] ** 2, k2[0] ** 2 + k2[1] ** 2
    C = a1 * a2 * (k1[0] * k2[1] - k1[1] * k2[0]) * (1 / K2 - 1 / K1)
    km, kp = (k1[0] - k2[0], k1[1] - k2[1]), (k1[0] + k2[0], k1[1] + k2[1])
    X, Y = _points(N_LES)
    g12 = G(k1) * G(k2)
    expected = C / 2 * (
        (G(km) - g12) * kept(km) * np.cos(km[0] * X + km[1] * Y + p1 - p2)
        - (G(kp) - g12) * kept(kp) * np.cos(kp[0] * X + kp[1] * Y + p1 + p2)
    )
    assert np.max(np.abs(expected)) > 1e-3  # not a trivial zero
    np.testing.assert_allclose(les.pi.values, expected, rtol=0, atol=1e-14)


def test_pi_vanishes_for_a_band_limited_field_and_the_sharp_filter():
    # all modes |k| < n_les/2 (the whole LES grid), so ω̄ = ω and Π must vanish when the
    # filter is the sharp cut-off at the LES grid (Δ = 2π/n_les); this fails if N(ω̄, ψ̄)
    # is aliased on the LES grid or 2/3-dealiased there.
    omega, psi = _band_limited(N_LES // 2)
    ds = _dataset(omega, psi)
    les = coarse_grain(ds, N_LES, "sharp", width=TWO_PI / N_LES)
    np.testing.assert_allclose(les.omega.values, omega[:: N // N_LES, :: N // N_LES], atol=1e-14)
    assert np.max(np.abs(les.pi.values)) < 1e-12
    # the same field under the Gaussian filter has a clearly non-zero Π
    assert np.max(np.abs(coarse_grain(ds, N_LES, "gaussian").pi.values)) > 1e-2


@pytest.mark.parametrize("name", FILTERS)
def test_pi_of_a_turbulent_run_equals_an_independent_reference(name):
    """Π against a plain re-implementation on the full DNS grid (numpy FFTs, advective form)."""
    case = xtl.get_case("tiny")
    dns = xtl.simulate(case, t_end=0.2, save_interval=0.2, seed=5, progress=False)
    les = coarse_grain(dns, N_LES, name)
    grid = SpectralGrid(N, fft="numpy")
    ky, kx = grid.ky, grid.kx
    keep = (np.abs(ky) < N_LES // 2) & (kx < N_LES // 2)
    G = np.vectorize(lambda a, b: _g(name, a, b, default_width(N_LES)))(kx + 0 * ky, ky + 0 * kx)
    for t in range(dns.sizes["time"]):
        w_hat = grid.rfft2(dns.omega.values[t])
        nbar = G * keep * advective_term(grid, w_hat)
        wbar = G * keep * w_hat
        n_les = keep * advective_term(grid, wbar)  # exact: products of modes < 8 stay below 16
        n_les[0, 0] = 0
        pi = grid.irfft2(nbar - n_les)[:: N // N_LES, :: N // N_LES]
        np.testing.assert_allclose(les.pi.values[t], pi, rtol=0, atol=1e-11 * np.abs(pi).max())
        np.testing.assert_allclose(les.omega.values[t],
                                   grid.irfft2(wbar)[:: N // N_LES, :: N // N_LES], atol=1e-12)
    assert np.abs(les.pi.values).max() > 0.1


@pytest.mark.parametrize("dealias", [True, False])
def test_dns_nonlinear_term_is_dealiased_like_the_solver(dealias):
    """On a field with every mode, \\overline{N} is the solver's (masked) N of the masked field."""
    n, n_les = 32, 16
    omega, psi = _band_limited(n // 2, seed=9, n=n)  # all modes below the Nyquist
    ds = _dataset(omega, psi, n=n)
    les = coarse_grain(ds, n_les, "sharp", width=TWO_PI / n_les, dealias=dealias)
    grid = SpectralGrid(n, dealias=dealias, fft="numpy")
    stepper = xtl.solver.Stepper(grid, 0.1)  # no forcing, β, drag: tendency = −N̂
    w_hat = grid.rfft2(omega) * grid.mask
    keep = (np.abs(grid.ky) < n_les // 2) & (grid.kx < n_les // 2)
    nbar = -stepper.tendency(w_hat) * grid.mask * keep
    n_les_term = keep * advective_term(grid, keep * grid.rfft2(omega))  # modes < 8: exact
    n_les_term[0, 0] = 0
    expected = grid.irfft2(nbar - n_les_term)[::2, ::2]
    np.testing.assert_allclose(les.pi.values, expected, rtol=0, atol=1e-12)
    other = coarse_grain(ds, n_les, "sharp", width=TWO_PI / n_les, dealias=not dealias)
    assert np.max(np.abs(other.pi.values - les.pi.values)) > 1e-3  # the mask matters here


# --------------------------------------------------------------------------- dask
class _TaskCounter(Callback):
    def __init__(self):
        super().__init__()
        self.tasks = 0

    def _pretask(self, key, dask, state):
        self.tasks += 1


def _ensemble_like():
    rng = np.random.default_rng(3)
    omega = np.empty((2, 3, N, N))
    psi = np.empty_like(omega)
    for i in np.ndindex(2, 3):
        omega[i], psi[i] = _band_limited(20, seed=int(rng.integers(1 << 30)))
    ds = _dataset(omega, psi, lead=("member", "time"))
    return ds.assign_coords(member=[0, 1], time=[0.0, 0.5, 1.0], Re=("member", [100.0, 200.0]))


def test_dask_result_equals_numpy_and_nothing_is_computed_until_asked():
    ds = _ensemble_like()
    eager = coarse_grain(ds, N_LES, "gaussian")
    assert isinstance(eager.pi.data, np.ndarray)
    lazy_in = ds.chunk({"member": 1, "time": 2})
    with _TaskCounter() as counter:
        lazy = coarse_grain(lazy_in, N_LES, "gaussian")
        assert counter.tasks == 0
        assert lazy.pi.chunks == ((1, 1), (2, 1), (N_LES,), (N_LES,))
        computed = lazy.compute(scheduler="threads", num_workers=2)
        assert counter.tasks > 0
    for name in ("psi", "omega", "pi"):
        assert computed[name].dims == ("member", "time", "y", "x")
        np.testing.assert_allclose(computed[name].values, eager[name].values, rtol=0, atol=1e-12)
    assert np.max(np.abs(eager.pi.values)) > 1e-2
    np.testing.assert_array_equal(computed.Re.values, [100.0, 200.0])  # member coords kept
    np.testing.assert_array_equal(computed.time.values, [0.0, 0.5, 1.0])


def test_dims_in_another_order_and_chunked_space_are_handled():
    ds = _ensemble_like()
    ref = coarse_grain(ds, N_LES)
    swapped = ds.transpose("x", "time", "y", "member").chunk({"x": 16, "time": 1})
    got = coarse_grain(swapped, N_LES).compute()
    assert got.pi.dims == ("time", "member", "y", "x")
    xr.testing.assert_allclose(got.pi.transpose(*ref.pi.dims), ref.pi, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- metadata, accessor
def test_output_grid_attributes_and_defaults_from_the_case():
    case = xtl.get_case("tiny")
    dns = xtl.simulate(case, t_end=0.1, save_interval=0.1, dtype="float32", progress=False)
    les = coarse_grain(dns)  # n_les from the case
    assert les.sizes == {"time": 2, "y": case.n_les, "x": case.n_les}
    np.testing.assert_allclose(les.x.values, np.arange(case.n_les) * TWO_PI / case.n_les)
    assert les.attrs["filter"] == "gaussian" and les.attrs["n_les"] == case.n_les
    assert les.attrs["n_dns"] == case.n
    assert les.attrs["filter_width"] == pytest.approx(2 * TWO_PI / case.n_les)
    assert les.attrs["case_name"] == "tiny" and "complete" not in les.attrs
    assert xtl.Case.from_attrs(les.attrs) == case
    for name in ("psi", "omega", "pi"):
        assert les[name].attrs["units"] == "1" and "long_name" in les[name].attrs
        assert les[name].dtype == np.float32
    assert les.x.attrs["axis"] == "X"


def test_accessor_and_sgs_term_equal_coarse_grain():
    ds = _ensemble_like()
    ref = coarse_grain(ds, N_LES, "box", width=0.5)
    xr.testing.assert_identical(ds.tl.coarse_grain(N_LES, "box", width=0.5), ref)
    pi = sgs_term(ds, N_LES, "box", width=0.5)
    np.testing.assert_array_equal(pi.values, ref.pi.values)
    assert pi.attrs["filter"] == "box" and pi.attrs["filter_width"] == 0.5


# --------------------------------------------------------------------------- on the fly
def test_on_the_fly_les_equals_coarse_graining_the_stored_dns(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.5, save_interval=0.1, spin_up=0.1, seed=2, progress=False)
    dns = xtl.simulate(case, **kw)
    offline = coarse_grain(dns, 32, "box")
    path = tmp_path / "les.nc"
    les = xtl.simulate(case, path=path, les=dict(n_les=32, filter="box"), dns_every=2, **kw)
    assert set(les.data_vars) == {"psi", "omega", "pi"} and les.sizes["x"] == 32
    assert les.attrs["complete"] == 1 and les.attrs["filter"] == "box"
    assert les.attrs["dns_file"] == "les.dns.nc"
    for name in ("psi", "omega", "pi"):
        np.testing.assert_allclose(les[name].values, offline[name].values, rtol=0,
                                   atol=1e-12 * np.abs(offline[name].values).max())
    with xr.open_dataset(tmp_path / "les.dns.nc") as kept:
        assert kept.attrs["complete"] == 1 and kept.attrs["dns_every"] == 2
        np.testing.assert_allclose(kept.time.values, [0.1, 0.3, 0.5])
        np.testing.assert_array_equal(kept.omega.values, dns.omega.values[::2])
        np.testing.assert_array_equal(kept.psi.values, dns.psi.values[::2])
    in_memory = xtl.simulate(case, les=True, **kw)  # the case's n_les, Gaussian
    assert in_memory.sizes["x"] == case.n_les
    np.testing.assert_allclose(in_memory.pi.values, coarse_grain(dns).pi.values, rtol=0, atol=1e-11)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.npz"))


def test_on_the_fly_les_takes_the_coarse_graining_object_whole():
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.2, save_interval=0.1, seed=1, progress=False)
    by_object = xtl.simulate(case, les=CoarseGraining(32, "box"), **kw)
    by_dict = xtl.simulate(case, les=dict(n_les=32, filter="box"), **kw)
    # the history attribute starts with the second the run began: compare it without that
    stamps = [ds.attrs.pop("history").split(": ", 1) for ds in (by_object, by_dict)]
    assert stamps[0][1] == stamps[1][1]
    xr.testing.assert_identical(by_object, by_dict)
    # an LES grid equal to the DNS grid is allowed here too: the case's grid, filtered
    same = xtl.simulate(case, les=case.n, **kw)
    assert same.sizes["x"] == case.n and same.attrs["n_les"] == same.attrs["n_dns"] == case.n


def test_on_the_fly_run_resumes_bit_for_bit(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.5, save_interval=0.05, checkpoint_interval=0.1, seed=2, progress=False,
              les=dict(n_les=16), dns_every=3)
    full = xtl.simulate(case, path=tmp_path / "full.nc", **kw)
    with pytest.raises(KeyboardInterrupt):
        xtl.simulate(case, path=tmp_path / "cut.nc", closure=InterruptingClosure(at=170), **kw)
    assert (tmp_path / "cut.dns.nc.part").exists() and (tmp_path / "cut.nc.ckpt.npz").exists()
    resumed = xtl.simulate(case, path=tmp_path / "cut.nc", closure=InterruptingClosure(at=-1), **kw)
    for name in ("psi", "omega", "pi"):
        assert np.array_equal(resumed[name].values, full[name].values)
    with xr.open_dataset(tmp_path / "cut.dns.nc") as a, xr.open_dataset(tmp_path / "full.dns.nc") as b:
        assert a.sizes["time"] == 4 and np.array_equal(a.omega.values, b.omega.values)


def test_on_the_fly_divergence_marks_both_files_incomplete(tmp_path):
    case = xtl.get_case("tiny", dt=0.05)
    with pytest.raises(DivergenceError):
        xtl.simulate(case, t_end=5.0, save_interval=0.5, path=tmp_path / "bad.nc", les=True,
                     dns_every=1, progress=False)
    for name in ("bad.nc", "bad.dns.nc"):
        with xr.open_dataset(tmp_path / name) as ds:
            assert ds.attrs["complete"] == 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(n_les=128), ValueError, "n_les must not be larger than the DNS grid size n=64"),
        (dict(n_les=66), ValueError, "n_les must not be larger"),
        (dict(n_les=15), ValueError, "n_les must be an even integer"),
        (dict(n_les=2), ValueError, "n_les must be an even integer >= 4"),
        (dict(n_les=16.0), TypeError, "n_les must be an even int"),
        (dict(n_les=16, filter="lanczos"), ValueError, r"filter must be one of \['gaussian'"),
        (dict(n_les=16, width=-1.0), ValueError, "width must be a finite number > 0"),
        (dict(n_les=16, dealias="yes"), TypeError, "dealias"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    omega, psi = _psi_of([((1, 2), 1.0, 0.0)])
    with pytest.raises(error, match=message):
        coarse_grain(_dataset(omega, psi), **kwargs)


def test_bad_datasets_are_named():
    omega, psi = _psi_of([((1, 2), 1.0, 0.0)])
    ds = _dataset(omega, psi)
    with pytest.raises(ValueError, match=r"variables 'psi' and 'omega'.*lacks \['omega'\]"):
        coarse_grain(ds.drop_vars("omega"), 16)
    with pytest.raises(ValueError, match=r"lacks \['psi'\]"):
        coarse_grain(ds.drop_vars("psi"), 16)
    with pytest.raises(ValueError, match=r"dims \(\.\.\., 'y', 'x'\).*lacks \['y', 'x'\]"):
        coarse_grain(ds.rename({"y": "lat", "x": "lon"}), 16)
    with pytest.raises(ValueError, match="square grid"):
        coarse_grain(ds.isel(x=slice(0, 32)), 16)
    # a grid that includes both 0 and 2π in x reads as a domain of another length than y's
    with pytest.raises(ValueError, match="domain must be square"):
        coarse_grain(ds.assign_coords(x=np.linspace(0, TWO_PI, N)), 16)
    with pytest.raises(ValueError, match="coordinate 'x' must be evenly spaced"):
        coarse_grain(ds.assign_coords(x=np.geomspace(1, TWO_PI, N)), 16)
    with pytest.raises(TypeError, match="ds must be an xarray.Dataset"):
        coarse_grain(ds.omega, 16)
    with pytest.raises(ValueError, match="n_les must be given"):
        coarse_grain(ds)


def test_bad_on_the_fly_arguments_are_named(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.1, save_interval=0.1, progress=False)
    with pytest.raises(TypeError, match="les must be True, an int n_les, or a dict"):
        xtl.simulate(case, les="big", **kw)
    with pytest.raises(ValueError, match="n_les must not be larger than the DNS grid size n=64"):
        xtl.simulate(case, les=dict(n_les=128), **kw)
    with pytest.raises(ValueError, match=r"les has unknown keys \['kind'\]"):
        xtl.simulate(case, les=dict(kind="gaussian"), **kw)
    with pytest.raises(ValueError, match="dns_every only applies with les"):
        xtl.simulate(case, dns_every=2, path=tmp_path / "a.nc", **kw)
    with pytest.raises(ValueError, match="dns_every needs path"):
        xtl.simulate(case, les=True, dns_every=2, **kw)
    with pytest.raises(ValueError, match="dns_every must be an int >= 1"):
        xtl.simulate(case, les=True, dns_every=0, path=tmp_path / "a.nc", **kw)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_a_registered_filter_is_used_by_name():
    """register_filter: a filter defined by its transfer function is used by name."""
    import numpy as np

    from xtl.physics.fourier import FILTERS, register_filter, transfer_function

    register_filter("gaussian-copy", FILTERS["gaussian"], "exp(-k^2 width^2 / 24)")
    try:
        kx, ky = np.meshgrid(np.arange(-8, 9), np.arange(-8, 9))
        assert np.array_equal(transfer_function("gaussian-copy", kx, ky, 0.4),
                              transfer_function("gaussian", kx, ky, 0.4))
        with pytest.raises(ValueError, match="registered already"):
            register_filter("gaussian-copy", FILTERS["box"], "")
        with pytest.raises(TypeError, match="func must be callable"):
            register_filter("other", "gaussian", "")
    finally:
        FILTERS.pop("gaussian-copy")
    with pytest.raises(ValueError, match="filter must be one of"):
        transfer_function("gaussian-copy", kx, ky, 0.4)


# ----------------------------------------------------------------------------------------
# non-finite input: one policy for every output
# ----------------------------------------------------------------------------------------
def _noisy_dns(n=32, L=2 * np.pi):
    rng = np.random.default_rng(7)
    x = np.arange(n) * L / n
    dims = ("time", "member", "y", "x")
    return xr.Dataset({"psi": (dims, rng.standard_normal((4, 3, n, n))),
                       "omega": (dims, rng.standard_normal((4, 3, n, n)))},
                      coords={"time": [0.0, 0.5, 1.0, 1.5], "member": [10, 11, 12],
                              "x": x, "y": x})


@pytest.mark.parametrize("var", ["omega", "psi"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("L", [2 * np.pi, 5.0])  # the fast path and the general pair
def test_a_nonfinite_sample_is_nan_in_every_output_and_the_others_are_untouched(var, bad, L):
    from xtl.data.coarse import coarse_grain

    ds = _noisy_dns(L=L)
    clean = coarse_grain(ds, 16)
    dirty = ds.copy(deep=True)
    dirty[var].values[2, 1, 3, 4] = bad
    for out in (coarse_grain(dirty, 16), coarse_grain(dirty.chunk(time=1), 16).compute()):
        for name in ("psi", "omega", "pi"):
            assert np.isnan(out[name].values[2, 1]).all(), name
            keep = np.ones((4, 3), bool)
            keep[2, 1] = False
            np.testing.assert_array_equal(out[name].values[keep], clean[name].values[keep])


def test_nonfinite_raise_names_the_variable_the_sample_and_the_count():
    from xtl.data.coarse import CoarseGraining, NonFiniteError

    ds = _noisy_dns()
    ds["omega"].values[2, 1, 3, 4] = np.inf
    ds["omega"].values[2, 1, 5, 5] = np.nan
    with pytest.raises(NonFiniteError, match=r"ds\['omega'\] has 2 non-finite.*time=1\.0, member=11"):
        CoarseGraining(16).apply(ds, nonfinite="raise")
    lazy = CoarseGraining(16).apply(ds.chunk(time=1, member=2), nonfinite="raise")  # no error yet
    with pytest.raises(NonFiniteError, match=r"time=1\.0, member=11"):
        lazy.compute()
    assert np.isfinite(CoarseGraining(16).apply(
        _noisy_dns(), nonfinite="raise").pi.values).all()
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        CoarseGraining(16).apply(ds, nonfinite="ignore")
