"""The solver against analytic solutions, its order, conservation, restart and errors."""
import math
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import xtl
import xtl.physics.fourier as fourier
from conftest import InterruptingClosure, advective_term
from xtl.solver import (
    DivergenceError,
    SpectralGrid,
    Stepper,
    available_fft_backends,
    initial_state,
    make_stepper,
    nonlinear_term,
    random_initial_condition,
)

FFTS = available_fft_backends()
KERNELS = fourier.available_kernels()


def _mode(grid, kx, ky, amplitude=1.0, phase=0.0):
    x = grid.x[None, :]
    y = grid.y[:, None]
    return amplitude * np.cos(kx * x + ky * y + phase)


def _case(**kw):
    base = dict(name="test", Re=math.inf, kf=4.0, beta=0.0, mu=0.0, n=16, n_les=8,
                dt=1e-3, forcing="none")
    base.update(kw)
    return xtl.Case(**base)


# --------------------------------------------------------------------------- grid
@pytest.mark.parametrize("fft", FFTS)
def test_fft_round_trip_and_derivative(fft):
    grid = SpectralGrid(32, fft=fft)
    field = _mode(grid, 3, -2, 1.5, 0.3) + 0.2 * _mode(grid, 0, 5)
    spec = grid.rfft2(field)
    np.testing.assert_allclose(grid.irfft2(spec), field, atol=1e-13)
    # ∂/∂x of cos(3x − 2y + 0.3) is −3 sin(...)
    dfdx = grid.irfft2(1j * grid.kx * spec)
    expected = -3 * 1.5 * np.sin(3 * grid.x[None, :] - 2 * grid.y[:, None] + 0.3)
    np.testing.assert_allclose(dfdx, expected, atol=1e-12)


@pytest.mark.skipif("pyfftw" not in FFTS, reason="pyfftw not installed")
def test_pyfftw_and_numpy_transforms_agree():
    rng = np.random.default_rng(1)
    field = rng.standard_normal((3, 64, 64))
    a, b = SpectralGrid(64, fft="pyfftw"), SpectralGrid(64, fft="numpy")
    sa, sb = a.rfft2(field), b.rfft2(field)
    assert np.max(np.abs(sa - sb)) <= 1e-12 * np.max(np.abs(sb))
    np.testing.assert_allclose(a.irfft2(sa), b.irfft2(sb), rtol=0, atol=1e-12)


def test_dealias_mask_is_the_two_thirds_rule():
    grid = SpectralGrid(24)
    assert grid.kmax == 7  # 3·7 < 24 ≤ 3·8
    assert grid.mask[0, 0] == 0  # the mean is removed
    assert grid.mask[7, 7] == 1 and grid.mask[0, 8] == 0 and grid.mask[-8, 0] == 0
    # products of kept modes never alias back onto kept modes
    assert 2 * grid.kmax - grid.n < -grid.kmax
    assert SpectralGrid(24, dealias=False).kmax == 11


# even sizes that are not powers of two, among them sizes where fftfreq(n, 1/n) is inexact
ODD_SIZES = [10, 24, 98, 100, 130, 250, 514, 1000, 2050, 3000, 4094]


@pytest.mark.parametrize("n", ODD_SIZES)
def test_wavenumbers_are_exact_integers_and_the_mask_is_symmetric(n):
    grid = SpectralGrid(n, fft="numpy")
    half = n // 2
    expected_ky = np.r_[0:half, -half:0]
    assert np.array_equal(grid.ky[:, 0], expected_ky.astype(float))
    assert np.array_equal(grid.kx[0], np.arange(half + 1, dtype=float))
    assert np.array_equal(fourier.wavenumbers(n)[0], expected_ky)
    # the mask is symmetric in x and y: |kx| = k kept exactly when |ky| = k is (both signs)
    kmax = (n - 1) // 3
    for k in range(half):
        along_x = grid.mask[0, k] if k else grid.mask[0, 1]
        along_y_pos = grid.mask[k, 0] if k else grid.mask[1, 0]
        along_y_neg = grid.mask[-k, 0] if k else grid.mask[-1, 0]
        assert along_x == along_y_pos == along_y_neg == float(k <= kmax), k
    assert grid.mask.sum() == (2 * kmax + 1) * (kmax + 1) - 1  # every kept mode but the mean


def test_wavenumbers_of_n_98_where_fftfreq_is_off():
    assert np.fft.fftfreq(98, 1.0 / 98)[32] != 32  # the float construction is inexact here
    grid = SpectralGrid(98, fft="numpy")
    assert grid.ky[32, 0] == 32.0 and grid.mask[32, 0] == grid.mask[0, 32] == 1.0


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("fft", FFTS)
@pytest.mark.parametrize("n", [16, 48, 98, 128])
def test_four_fft_jacobian_equals_the_advective_form(n, fft, kernels):
    """Basdevant's 4-FFT form equals u∂ω/∂x + v∂ω/∂y (5 FFTs) on a dealiased field."""
    grid = SpectralGrid(n, fft=fft)
    rng = np.random.default_rng(n)
    omega_hat = np.fft.rfft2(rng.standard_normal((n, n))) * grid.mask
    reference = advective_term(grid, omega_hat)
    jac = fourier.Jacobian(grid, kernels)
    got = jac(omega_hat, multiplier=jac.omega_multiplier)
    scale = np.max(np.abs(reference))
    assert scale > 1.0
    assert np.max(np.abs(got - reference)) < 1e-13 * scale
    # from ψ̂ directly (the default multiplier) as well
    np.testing.assert_allclose(jac(grid.streamfunction(omega_hat)), got, rtol=0, atol=1e-13 * scale)


@pytest.mark.skipif(len(KERNELS) < 2, reason="numba is not installed")
@pytest.mark.parametrize("closure", [False, True])
def test_numba_and_numpy_steps_agree_to_round_off(closure):
    case = _case(Re=500.0, beta=6.0, mu=0.05, n=48, n_les=16, forcing="cosine", kf=3.0,
                 dt=2e-3)
    grid = SpectralGrid(48)
    pi = 0.05 * _mode(grid, 2, 3)
    clos = (lambda psi, omega: pi + 1e-3 * omega) if closure else None
    states = {}
    for kernels in ("numba", "numpy"):
        stepper = make_stepper(case, grid, closure=clos, kernels=kernels)
        state = initial_state(case, grid, seed=4)
        for _ in range(60):
            stepper.step(state, measure_cfl=True)
        states[kernels] = (state, stepper.last_cfl)
    (a, cfl_a), (b, cfl_b) = states["numba"], states["numpy"]
    scale = np.max(np.abs(b.omega_hat))
    assert np.max(np.abs(a.omega_hat - b.omega_hat)) < 1e-12 * scale
    assert np.max(np.abs(a.tendency_prev - b.tendency_prev)) < 1e-12 * np.max(np.abs(b.tendency_prev))
    assert cfl_a == pytest.approx(cfl_b, rel=1e-12) and cfl_a > 0
    # the flow moved: agreement is not trivial
    start = initial_state(case, grid, seed=4).omega_hat
    assert np.max(np.abs(a.omega_hat - start)) > 1e-3 * scale


def test_nonlinear_term_of_two_modes_is_analytic():
    # ω = cos x + cos 2y, so ∇²ψ = −ω gives ψ = cos x + cos(2y)/4
    grid = SpectralGrid(32)
    x, y = grid.x[None, :], grid.y[:, None]
    omega = np.cos(x) + np.cos(2 * y)
    psi = np.cos(x) + np.cos(2 * y) / 4
    u = -np.sin(2 * y) / 2  # ∂ψ/∂y
    v = np.sin(x) + 0 * y  # −∂ψ/∂x
    expected = u * (-np.sin(x)) + v * (-2 * np.sin(2 * y))
    got = grid.irfft2(nonlinear_term(grid, grid.rfft2(omega)))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(grid.irfft2(grid.streamfunction(grid.rfft2(omega))), psi, atol=1e-13)
    assert np.max(np.abs(expected)) > 0.5  # not a trivial zero


# --------------------------------------------------------------------------- analytic solutions
def test_kolmogorov_laminar_steady_state():
    """From rest, the forced flow converges to ω = kf/(ν kf² + μ)·(cos kf x + cos kf y)."""
    case = _case(Re=10.0, kf=4.0, mu=0.1, n=32, dt=0.01, forcing="cosine")
    ds = xtl.simulate(case, t_end=30.0, save_interval=30.0, initial=np.zeros((32, 32)))
    grid = SpectralGrid(32)
    amplitude = case.kf / (case.nu * case.kf**2 + case.mu)
    expected = amplitude * (_mode(grid, 4, 0) + _mode(grid, 0, 4))
    omega = ds.omega.isel(time=-1).values
    assert np.max(np.abs(omega - expected)) < 1e-10
    np.testing.assert_allclose(ds.psi.isel(time=-1).values, expected / 16, atol=1e-11)
    assert ds.time.values[-1] == pytest.approx(30.0)


@pytest.mark.parametrize("fft", FFTS)
def test_single_mode_decays_exponentially(fft):
    """cos(3x + 4y) decays as exp(−(ν k² + μ) t); dt is small enough that the
    Crank–Nicolson error (L dt)³/12 per step is below round-off."""
    case = _case(Re=1000.0, mu=0.1, dt=1e-4)
    grid = SpectralGrid(16, fft=fft)
    omega0 = _mode(grid, 3, 4, 2.0, 0.7)
    ds = xtl.simulate(case, t_end=0.2, save_interval=0.1, initial=omega0, fft=fft)
    rate = case.nu * 25 + case.mu
    for t in ds.time.values:
        expected = omega0 * math.exp(-rate * t)
        err = np.max(np.abs(ds.omega.sel(time=t).values - expected)) / 2.0
        assert err < 1e-11, (t, err)


def test_crank_nicolson_amplification_factor():
    """At a large dt the decay per step is exactly CN's (1 + L dt/2)/(1 − L dt/2)."""
    case = _case(Re=50.0, mu=0.3, dt=0.05)
    grid = SpectralGrid(16)
    omega0 = _mode(grid, 1, 2)
    ds = xtl.simulate(case, t_end=1.0, save_interval=1.0, initial=omega0)
    lin = -(5 / 50.0 + 0.3) * case.dt
    factor = (1 + lin / 2) / (1 - lin / 2)
    np.testing.assert_allclose(ds.omega.isel(time=-1).values, omega0 * factor**20, atol=1e-13)
    assert abs(factor**20 - math.exp(lin * 20)) > 1e-6  # CN differs from exp at this dt


def test_rossby_wave_frequency():
    """ω = cos(kx x + ky y − σ t) with σ = −β kx / k² (westward phase speed)."""
    beta, kx, ky = 10.0, 2, 1
    sigma = -beta * kx / (kx**2 + ky**2)
    case = _case(beta=beta, dt=2e-4)
    grid = SpectralGrid(16)
    ds = xtl.simulate(case, t_end=1.0, save_interval=0.25, initial=_mode(grid, kx, ky))
    # measured phase of the (kx, ky) Fourier coefficient: cos(θ − σt) ⇒ phase −σt
    spec = grid.rfft2(ds.omega.values)[:, ky, kx]
    phase = np.unwrap(np.angle(spec))
    measured_sigma = -np.polyfit(ds.time.values, phase, 1)[0]
    assert measured_sigma == pytest.approx(sigma, rel=1e-6)
    expected = _mode(grid, kx, ky, phase=-sigma * 1.0)
    # AB2 phase error ≈ (5/12)|σ|³dt²·t ≈ 1e-6 here
    np.testing.assert_allclose(ds.omega.isel(time=-1).values, expected, atol=5e-6)


def test_closure_enters_with_minus_sign():
    """One step from rest with a constant closure Π: ω₁ = −dt/(1 − dt L/2) · Π."""
    case = _case(Re=100.0, mu=0.2, dt=0.01)
    grid = SpectralGrid(16)
    pi = 0.5 * _mode(grid, 2, 1)
    calls = []

    def closure(psi, omega):
        calls.append(psi.shape)
        return pi

    stepper = make_stepper(case, grid, closure=closure)
    state = initial_state(case, grid, initial=np.zeros((16, 16)))
    stepper.step(state)
    lin = -(5 / 100.0 + 0.2)
    expected = -case.dt / (1 - case.dt * lin / 2) * pi
    np.testing.assert_allclose(grid.irfft2(state.omega_hat), expected, atol=1e-15)
    assert calls and calls[0] == (16, 16)


def test_closure_with_wrong_shape_is_an_error():
    grid = SpectralGrid(16)
    stepper = Stepper(grid, 0.01, closure=lambda psi, omega: np.zeros((8, 8)))
    state = initial_state(_case(), grid)
    with pytest.raises(ValueError, match="closure returned shape"):
        stepper.step(state)


# --------------------------------------------------------------------------- order and conservation
def test_temporal_order_is_two():
    case = _case(Re=100.0, beta=5.0, mu=0.1, n=32, forcing="cosine", kf=3.0, ic_peak=3.0)
    finals = []
    for dt in (0.02, 0.01, 0.005):
        ds = xtl.simulate(case.replace(dt=dt), t_end=1.0, save_interval=1.0, seed=3)
        finals.append(ds.omega.isel(time=-1).values)
    e1 = np.linalg.norm(finals[0] - finals[1])
    e2 = np.linalg.norm(finals[1] - finals[2])
    order = math.log2(e1 / e2)
    assert 1.9 < order < 2.1, order


@pytest.mark.parametrize("beta", [0.0, 7.0])
def test_inviscid_unforced_run_conserves_energy_and_enstrophy(beta):
    case = _case(n=32, beta=beta, dt=1e-4, ic_peak=4.0)
    grid = SpectralGrid(32)
    stepper = make_stepper(case, grid)
    state = initial_state(case, grid, seed=5)
    e0, z0 = grid.energy(state.omega_hat), grid.enstrophy(state.omega_hat)
    for _ in range(100):
        stepper.step(state)
    e1, z1 = grid.energy(state.omega_hat), grid.enstrophy(state.omega_hat)
    assert abs(e1 / e0 - 1) < 1e-8 and abs(z1 / z0 - 1) < 1e-8
    # the flow did evolve: the check is not trivially satisfied
    assert np.max(np.abs(state.omega_hat - initial_state(case, grid, seed=5).omega_hat)) > 1e-6


def test_random_initial_condition_spectrum_and_seed():
    grid = SpectralGrid(64)
    w1 = random_initial_condition(grid, seed=1, peak=5.0, energy=0.7)
    w2 = random_initial_condition(grid, seed=1, peak=5.0, energy=0.7)
    w3 = random_initial_condition(grid, seed=2, peak=5.0, energy=0.7)
    assert np.array_equal(w1, w2) and not np.allclose(w1, w3)
    assert grid.energy(w1) == pytest.approx(0.7, rel=1e-12)
    # shell energy spectrum peaks near sqrt(2)·kp ≈ 7
    k = np.rint(np.sqrt(grid.k2)).astype(int)
    weights = np.where((grid.kx == 0) | (grid.kx == 32), 1.0, 2.0) + 0 * grid.ky
    e = np.bincount(k.ravel(), (0.5 * grid.k2 * np.abs(w1 * grid.inv_k2) ** 2 * weights).ravel())
    assert 5 <= np.argmax(e) <= 9
    assert np.all(w1[grid.mask == 0] == 0)  # dealiased, zero mean


# --------------------------------------------------------------------------- backends, restart
@pytest.mark.skipif("pyfftw" not in FFTS, reason="pyfftw not installed")
def test_pyfftw_and_numpy_runs_agree():
    case = xtl.get_case("tiny")
    a = xtl.simulate(case, t_end=0.1, save_interval=0.1, fft="pyfftw").omega.values
    b = xtl.simulate(case, t_end=0.1, save_interval=0.1, fft="numpy").omega.values
    assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))


def test_streamed_file_equals_in_memory_run(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.4, save_interval=0.1, spin_up=0.2, seed=4)
    mem = xtl.simulate(case, **kw)
    disk = xtl.simulate(case, path=tmp_path / "run.nc", **kw)
    assert disk.sizes["time"] == 3 and disk.attrs["complete"] == 1
    xr.testing.assert_identical(mem.drop_attrs(), disk.drop_attrs())
    np.testing.assert_allclose(disk.time.values, [0.2, 0.3, 0.4])
    assert disk.omega.attrs["units"] == "1" and "long_name" in disk.psi.attrs
    assert xtl.Case.from_attrs(disk.attrs) == case
    assert not (tmp_path / "run.nc.part").exists()
    assert not (tmp_path / "run.nc.ckpt.npz").exists()


def test_restart_after_interruption_is_bit_identical(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.5, save_interval=0.05, checkpoint_interval=0.1, seed=2)
    full = xtl.simulate(case, path=tmp_path / "full.nc", **kw)
    path = tmp_path / "cut.nc"
    with pytest.raises(KeyboardInterrupt):
        xtl.simulate(case, path=path, closure=InterruptingClosure(at=170), **kw)
    assert (tmp_path / "cut.nc.part").exists() and (tmp_path / "cut.nc.ckpt.npz").exists()
    resumed = xtl.simulate(case, path=path, closure=InterruptingClosure(at=-1), **kw)
    assert resumed.sizes["time"] == full.sizes["time"] == 11
    assert np.array_equal(resumed.omega.values, full.omega.values)
    assert np.array_equal(resumed.psi.values, full.psi.values)


_KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    import xtl

    calls = 0

    def kill_at_call_300(psi, omega):  # a zero closure that SIGKILLs its process
        global calls
        calls += 1
        if calls == 300:
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros_like(psi)

    xtl.simulate(xtl.get_case("tiny"), t_end=1.0, save_interval=0.1, checkpoint_interval=0.2,
                 path=sys.argv[1], seed=7, progress=False, closure=kill_at_call_300)
    """
)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """A process killed with SIGKILL mid-run resumes, in this process, bit for bit."""
    path = tmp_path / "killed.nc"
    proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists() and (tmp_path / "killed.nc.ckpt.npz").exists()
    with xr.open_dataset(tmp_path / "killed.nc.part") as part:  # readable after the kill
        assert part.sizes["time"] >= 3
    kw = dict(t_end=1.0, save_interval=0.1, checkpoint_interval=0.2, seed=7)
    resumed = xtl.simulate(xtl.get_case("tiny"), path=path, **kw).load()
    full = xtl.simulate(xtl.get_case("tiny"), path=tmp_path / "full.nc", **kw).load()
    assert resumed.sizes["time"] == 11
    assert np.array_equal(resumed.omega.values, full.omega.values)
    assert np.array_equal(resumed.psi.values, full.psi.values)


# --------------------------------------------------------------------------- divergence, bad input
def test_divergence_is_reported_and_earlier_snapshots_kept(tmp_path):
    case = xtl.get_case("tiny", dt=0.05)
    path = tmp_path / "bad.nc"
    with pytest.raises(DivergenceError, match=r"t=.*step \d+.*CFL number.*smaller dt") as info:
        xtl.simulate(case, t_end=50.0, save_interval=0.5, path=path, check_every=1)
    assert info.value.cfl > 2.0 or math.isnan(info.value.cfl)
    with xr.open_dataset(path) as ds:
        assert ds.attrs["complete"] == 0
        assert ds.sizes["time"] >= 1
        assert np.all(np.isfinite(ds.omega.values))
        assert ds.time.values[-1] <= info.value.time


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(n=63), "Case.n"),
        (dict(n=4), "Case.n"),
        (dict(Re=0.0), "Case.Re"),
        (dict(Re=-5.0), "Case.Re"),
        (dict(dt=0.0), "Case.dt"),
        (dict(dt=-1e-3), "Case.dt"),
        (dict(mu=-0.1), "Case.mu"),
        (dict(n_les=128), "Case.n_les"),
        (dict(n_les=15), "Case.n_les"),
    ],
)
def test_bad_case_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        xtl.get_case("tiny", **changes)


def test_bad_case_types_are_rejected():
    with pytest.raises(TypeError, match="Case.n"):
        xtl.get_case("tiny", n=64.0)
    with pytest.raises(TypeError, match="Case.Re"):
        xtl.get_case("tiny", Re="big")
    with pytest.raises(KeyError, match="unknown case"):
        xtl.get_case("nope")


def test_bad_simulate_arguments(tmp_path):
    case = xtl.get_case("tiny")
    with pytest.raises(ValueError, match="save_interval"):
        xtl.simulate(case, t_end=1.0, save_interval=0.0031)
    with pytest.raises(ValueError, match="spin_up"):
        xtl.simulate(case, t_end=1.0, save_interval=0.1, spin_up=0.0013)
    with pytest.raises(ValueError, match="t_end"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, spin_up=0.2)
    with pytest.raises(ValueError, match="initial"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, initial=np.zeros((8, 8)))
    with pytest.raises(ValueError, match="forcing"):
        xtl.simulate(case.replace(forcing="sine"), t_end=0.1, save_interval=0.1)
    with pytest.raises(TypeError, match="case"):
        xtl.simulate("tiny", t_end=0.1, save_interval=0.1)


def test_existing_or_unwritable_output_is_refused(tmp_path):
    case = xtl.get_case("tiny")
    path = tmp_path / "out.nc"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, path=path)
    assert path.read_bytes() == b"precious"
    ds = xtl.simulate(case, t_end=0.1, save_interval=0.1, path=path, overwrite=True)
    assert ds.sizes["time"] == 2
    with pytest.raises(FileNotFoundError, match="path="):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, path=tmp_path / "no" / "dir" / "x.nc")


def test_grid_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n must be an even"):
        SpectralGrid(31)
    with pytest.raises(ValueError, match="n must be an even"):
        SpectralGrid(6)
    with pytest.raises(ValueError, match="fft"):
        SpectralGrid(16, fft="mkl")


def test_a_checkpoint_of_another_initial_field_is_not_resumed(tmp_path):
    case = xtl.get_case("tiny")
    grid = SpectralGrid(64)
    kw = dict(t_end=0.5, save_interval=0.05, checkpoint_interval=0.1, path=tmp_path / "r.nc")
    start = _mode(grid, 1, 2) + 0.5 * _mode(grid, 3, 1)
    with pytest.raises(KeyboardInterrupt):
        xtl.simulate(case, initial=start, closure=InterruptingClosure(at=120), **kw)
    with pytest.raises(ValueError, match="checkpoint .* other settings"):
        xtl.simulate(case, initial=2 * start, **kw)


# --------------------------------------------------------------------------- dt from a target CFL
def test_dt_for_cfl_divides_the_save_interval():
    dt = xtl.solver.run.dt_for_cfl(1e-3, 0.2, 0.5, 0.1)  # raw 2.5e-3 -> 0.1/40
    assert dt == pytest.approx(0.0025) and abs(round(0.1 / dt) * dt - 0.1) < 1e-15
    dt = xtl.solver.run.dt_for_cfl(1e-3, 0.2, 0.45, 0.1)  # raw 2.25e-3 -> 0.1/45
    assert dt == pytest.approx(0.1 / 45) and dt <= 2.25e-3
    assert xtl.solver.run.dt_for_cfl(1e-3, 0.0, 0.5, 0.1) == 1e-3  # no flow: keep dt


def test_dt_from_a_target_cfl_is_chosen_after_spin_up_and_recorded():
    case = xtl.get_case("tiny", dt=1e-3)
    kw = dict(t_end=0.6, save_interval=0.1, spin_up=0.2, seed=3, progress=False)
    ds = xtl.simulate(case, cfl_target=0.2, **kw)
    dt1, cfl0 = ds.attrs["dt_after_spin_up"], ds.attrs["cfl_at_spin_up"]
    assert ds.attrs["cfl_target"] == 0.2 and 0 < cfl0 < 0.2
    assert dt1 > 2 * case.dt  # the tiny flow is slow: a larger step
    assert dt1 <= case.dt * 0.2 / cfl0 < 0.1 / (round(0.1 / dt1) - 1)
    np.testing.assert_allclose(ds.time.values, [0.2, 0.3, 0.4, 0.5, 0.6], rtol=0, atol=1e-12)
    assert xtl.Case.from_attrs(ds.attrs) == case
    # after the spin-up it is the run of dt1 from the spun-up field (AB2 restarted by Heun)
    spun = xtl.simulate(case, t_end=0.2, save_interval=0.2, seed=3, progress=False)
    after = xtl.simulate(case.replace(dt=dt1), t_end=0.4, save_interval=0.1,
                         initial=spun.omega.isel(time=-1), progress=False)
    np.testing.assert_allclose(ds.omega.values, after.omega.values, rtol=0,
                               atol=1e-10 * np.abs(after.omega.values).max())
    fixed = xtl.simulate(case, **kw)
    assert np.max(np.abs(fixed.omega.values[-1] - ds.omega.values[-1])) > 1e-8  # dt changed


@pytest.mark.parametrize("at", [150, 290])  # interrupted in the spin-up, and after the switch
def test_a_run_with_cfl_target_resumes_bit_for_bit(tmp_path, at):
    case = xtl.get_case("tiny", dt=1e-3)
    kw = dict(t_end=0.8, save_interval=0.1, spin_up=0.2, checkpoint_interval=0.1, seed=3,
              cfl_target=0.2, progress=False)
    full = xtl.simulate(case, path=tmp_path / "full.nc", **kw)
    path = tmp_path / "cut.nc"
    with pytest.raises(KeyboardInterrupt):
        xtl.simulate(case, path=path, closure=InterruptingClosure(at=at), **kw)
    resumed = xtl.simulate(case, path=path, closure=InterruptingClosure(at=-1), **kw)
    assert np.array_equal(resumed.omega.values, full.omega.values)
    assert np.array_equal(resumed.time.values, full.time.values)
    assert resumed.attrs["dt_after_spin_up"] == full.attrs["dt_after_spin_up"]


def test_bad_cfl_targets_are_refused():
    case = xtl.get_case("tiny")
    with pytest.raises(ValueError, match="cfl_target needs spin_up > 0"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, cfl_target=0.3)
    with pytest.raises(ValueError, match="cfl_target must be a number > 0"):
        xtl.simulate(case, t_end=0.2, save_interval=0.1, spin_up=0.1, cfl_target=-1.0)


# --------------------------------------------------------------------------- typed options
@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(t_end=math.inf), ValueError, r"t_end must be a finite number, got inf"),
        (dict(t_end=math.nan), ValueError, r"t_end must be a finite number"),
        (dict(t_end=-0.1), ValueError, r"t_end must be >= 0"),
        (dict(t_end="1"), TypeError, r"t_end must be a number"),
        (dict(save_interval=0.0), ValueError, r"save_interval must be > 0, got 0.0"),
        (dict(save_interval=-0.1), ValueError, r"save_interval must be > 0"),
        (dict(save_interval=math.inf), ValueError, r"save_interval must be a finite number"),
        (dict(spin_up=-0.1), ValueError, r"spin_up must be >= 0"),
        (dict(checkpoint_interval=0.0), ValueError, r"checkpoint_interval must be > 0"),
        (dict(cfl_limit=math.nan), ValueError, r"cfl_limit must be a finite number, got nan"),
        (dict(cfl_limit=0.0), ValueError, r"cfl_limit must be > 0"),
        (dict(check_every=0), ValueError, r"check_every must be an int >= 1"),
        (dict(check_every=2.0), TypeError, r"check_every must be an int"),
        (dict(cfl_target=math.nan, spin_up=0.1), ValueError, r"cfl_target must be a number > 0"),
        (dict(dtype="float16"), ValueError, r"dtype must be 'float64' or 'float32'"),
        (dict(overwrite=1), TypeError, r"overwrite must be True or False"),
        (dict(threads=0), ValueError, r"threads must be an int >= 1"),
        (dict(kernels="fast"), ValueError, r"kernels must be one of 'auto', 'numba', 'numpy'"),
        (dict(seed=-1), ValueError, r"seed must be an int >= 0, got -1"),
        (dict(seed=1.5), TypeError, r"seed must be an int, got 1.5"),
        (dict(sav_interval=0.1), TypeError, r"unexpected keyword argument 'sav_interval'.*"
                                            r"save_interval"),
    ],
)
def test_bad_options_are_refused_naming_the_option(tmp_path, changes, error, message):
    kw = dict(t_end=0.2, save_interval=0.1, path=tmp_path / "run.nc", progress=False)
    kw.update(changes)
    with pytest.raises(error, match=message):
        xtl.simulate(xtl.get_case("tiny"), **kw)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_schedule_options_are_checked_where_they_are_made():
    from xtl.solver.options import Schedule

    with pytest.raises(ValueError, match="t_end must be a finite number, got inf"):
        Schedule(t_end=math.inf, save_interval=0.1)
    with pytest.raises(ValueError, match=r"t_end=0.1 must not be smaller than spin_up=0.2"):
        Schedule(t_end=0.1, save_interval=0.1, spin_up=0.2)
    with pytest.raises(ValueError, match="cfl_target needs spin_up > 0"):
        Schedule(t_end=1.0, save_interval=0.1, cfl_target=0.3)
    with pytest.raises(TypeError, match="unknown Schedule option.*'dt'.*valid: t_end"):
        Schedule.merge(dict(t_end=1.0, save_interval=0.1), dt=0.1)
    schedule = Schedule(t_end=1, save_interval=0.5, cfl_limit=3)
    assert (schedule.t_end, schedule.cfl_limit) == (1.0, 3.0)
    assert isinstance(schedule.t_end, float)


def test_a_save_interval_beyond_t_end_and_t_end_zero_give_one_snapshot():
    """Not errors (as before the typed options): the run's start is its only snapshot."""
    case = xtl.get_case("tiny")
    for kw in (dict(t_end=0.1, save_interval=0.5), dict(t_end=0.0, save_interval=0.1)):
        ds = xtl.simulate(case, seed=1, progress=False, **kw)
        assert ds.sizes["time"] == 1 and ds.time.values[0] == 0.0


def test_keyword_and_options_object_calls_write_identical_files(tmp_path):
    from xtl.solver import Execution, Output, Schedule

    case = xtl.get_case("tiny")
    kw = dict(t_end=0.4, save_interval=0.1, spin_up=0.1, checkpoint_interval=0.2,
              check_every=5)
    old_style = xtl.simulate(case, seed=3, path=tmp_path / "a.nc", dtype="float32",
                             attrs={"note": "x"}, progress=False, kernels="auto", **kw)
    typed = xtl.simulate(case, Schedule(**kw),
                         Output(path=tmp_path / "b.nc", dtype="float32", attrs={"note": "x"}),
                         Execution(progress=False), seed=3)
    # an options object with single options replacing some of its values
    mixed = xtl.simulate(case, Schedule(t_end=9.0, save_interval=0.1), progress=False, seed=3,
                         **{**kw, "t_end": 0.4})
    with old_style, typed:
        history = [ds.attrs.pop("history").split(": ", 1)[1] for ds in (old_style, typed)]
        assert history[0] == history[1]  # the same call recorded (after its time stamp)
        assert old_style.omega.dtype == np.float32
        xr.testing.assert_identical(old_style.load(), typed.load())
    assert np.array_equal(mixed.omega.values.astype(np.float32), typed.omega.values)
    assert mixed.sizes["time"] == 4


def test_output_chunks_return_a_dask_backed_dataset(tmp_path):
    case = xtl.get_case("tiny")
    kw = dict(t_end=0.3, save_interval=0.1, seed=2, progress=False)
    assert xtl.simulate(case, path=tmp_path / "plain.nc", **kw).omega.chunks is None
    disk = xtl.simulate(case, path=tmp_path / "r.nc", chunks={"time": 4}, **kw)
    mem = xtl.simulate(case, chunks={"time": 4}, **kw)
    for ds in (disk, mem):
        assert ds.omega.chunks == ((4,), (64,), (64,))
    xr.testing.assert_identical(disk.drop_attrs().compute(), mem.drop_attrs().compute())
