"""A posteriori LES: the run, closure sign, physics baselines in the solver, metrics, the study."""
import math

import numpy as np
import pytest

import xtl
from xtl.data.metrics import les_metrics
from xtl.physics.closures import DynamicSmagorinsky, NoClosure, Smagorinsky
from xtl.solver import SpectralGrid
from xtl.solver.les import les_case, run_les


def _decaying(**kw):
    return xtl.get_case("tiny", forcing="none", mu=0.0, Re=math.inf, n=64, n_les=32, **kw)


def test_les_case_keeps_the_cfl_number():
    case = xtl.get_case("tiny")  # 64² DNS, 16² LES
    lc = les_case(case)
    assert (lc.n, lc.n_les) == (16, 16) and lc.dt == pytest.approx(case.dt * 4)
    assert (lc.Re, lc.kf, lc.beta, lc.mu) == (case.Re, case.kf, case.beta, case.mu)


def test_zero_closure_equals_no_closure_bitwise():
    case = xtl.get_case("tiny", n_les=32)
    a = run_les(case, None, t_end=0.4, save_interval=0.2, seed=1)
    b = run_les(case, NoClosure(), t_end=0.4, save_interval=0.2, seed=1)
    assert np.array_equal(a.omega.values, b.omega.values)
    assert b.attrs["closure"] == "none"


def test_known_closure_enters_with_minus_sign():
    """One step from rest with Π = c·cos(2x + y): ω̄₁ = −dt/(1 − dt L/2)·Π (L = −k²/Re − μ)."""
    case = xtl.get_case("tiny", n_les=16, forcing="none")
    lc = les_case(case)
    grid = SpectralGrid(16)
    pi = 0.3 * np.cos(2 * grid.x[None, :] + grid.y[:, None])
    ds = run_les(case, lambda psi, omega: pi, initial=np.zeros((16, 16)),
                 t_end=lc.dt, save_interval=lc.dt)
    lin = -(5 / case.Re) - case.mu
    expected = -lc.dt / (1 - lc.dt * lin / 2) * pi
    np.testing.assert_allclose(ds.omega.isel(time=-1).values, expected, atol=1e-15)


def _energy(ds):
    return (0.5 * (ds.omega * ds.psi).mean(("y", "x"))).values


@pytest.mark.parametrize("closure_type", [Smagorinsky, DynamicSmagorinsky])
def test_eddy_viscosity_closures_dissipate_energy(closure_type):
    case = _decaying()
    kw = dict(t_end=1.0, save_interval=0.5, seed=3)
    free = run_les(case, None, **kw)
    closure = closure_type()
    damped = run_les(case, closure, **kw)
    e_free, e_damped = _energy(free), _energy(damped)
    assert abs(e_free[-1] / e_free[0] - 1) < 1e-3  # inviscid, dealiased: ~conserved
    assert e_damped[-1] < e_damped[0] * (1 - 1e-3)
    assert e_damped[-1] < e_free[-1]
    if closure_type is DynamicSmagorinsky:
        assert 0 < closure.cs2 < 1


def _smagorinsky_of_fields(cs):
    """Smagorinsky's Π of physical ψ̄ and ω̄ by complex FFTs, written apart from xtl's."""
    def pi(psi, omega):
        n = psi.shape[-1]
        k = np.fft.fftfreq(n, 1 / n)
        kx, ky = k[None, :], k[:, None]

        def d(f, ax, ay):
            return np.real(np.fft.ifft2((1j * kx) ** ax * (1j * ky) ** ay * np.fft.fft2(f)))

        nu = (cs * 2 * np.pi / n) ** 2 * np.sqrt(4 * d(psi, 1, 1) ** 2
                                                  + (d(psi, 0, 2) - d(psi, 2, 0)) ** 2)
        return -(d(nu * d(omega, 1, 0), 1, 0) + d(nu * d(omega, 0, 1), 0, 1))
    return pi


def _through_fields(closure):
    """``closure`` as a plain function of the physical fields: Π from ω̄ on a grid of its own."""
    def pi(psi, omega):
        grid = SpectralGrid(omega.shape[-1], dealias=False, fft="numpy")
        return grid.irfft2(closure.pi_hat(grid.rfft2(omega), grid))
    return pi


@pytest.mark.parametrize("closure_type", [Smagorinsky, DynamicSmagorinsky])
def test_solver_reads_the_spectral_state_with_the_same_result(closure_type):
    """An LES with xtl's closure (Π̂ from the solver's ω̂ on its grid) equals, to round-off,
    the LES with a plain function of the physical fields ψ̄, ω̄: Smagorinsky's formula
    written apart, and the dynamic closure on a grid of its own."""
    case, closure = _decaying(), closure_type()
    reference = (_smagorinsky_of_fields(0.17) if closure_type is Smagorinsky
                 else _through_fields(DynamicSmagorinsky()))
    kw = dict(t_end=0.5, save_interval=0.5, seed=3)
    spectral = run_les(case, closure, **kw)
    physical = run_les(case, reference, **kw)
    scale = float(np.abs(physical.omega).max())
    np.testing.assert_allclose(spectral.omega.values, physical.omega.values,
                               rtol=0, atol=1e-10 * scale)
    assert not np.array_equal(spectral.omega.values, run_les(case, None, **kw).omega.values)


def test_closure_on_another_grid_is_refused(tmp_path):
    """A network trained on 32² refuses the 16² LES before the run starts (no file)."""
    from test_closures import linear_model
    from xtl.nn.closure import ModelClosure

    closure = ModelClosure(linear_model(1.0, 1.0, {"psi": 1.0, "omega": 1.0, "pi": 1.0}, grid=32))
    with pytest.raises(ValueError, match=r"32² grid but the LES grid is 16²; .*n=32"):
        run_les(xtl.get_case("tiny"), closure, t_end=0.08, save_interval=0.08,
                path=tmp_path / "les.nc")
    assert not list(tmp_path.glob("les.nc*"))
    assert run_les(xtl.get_case("tiny"), closure, n=32, t_end=0.08, save_interval=0.08,
                   progress=False).sizes["x"] == 32
    with pytest.raises(ValueError, match="initial"):
        run_les(xtl.get_case("tiny"), None, initial=np.zeros((32, 32)), t_end=0.1, save_interval=0.1)


def test_les_metrics_compare_with_filtered_dns():
    case = _decaying()
    run = run_les(case, None, t_end=0.4, save_interval=0.2, seed=2)
    metrics = les_metrics(run, run)  # an LES compared with itself
    assert metrics.attrs["stable"] == 1 and math.isnan(metrics.attrs["blowup_time"])
    assert float(metrics.spectrum_error) == 0.0
    assert metrics.attrs["kmax"] == 10  # the 2/3-rule cutoff of the 32² LES
    np.testing.assert_allclose(metrics.pdf_les, metrics.pdf_fdns)
    np.testing.assert_allclose(metrics.kinetic_energy, _energy(run))
    # the PDF is a density: it integrates to one
    width = float(metrics.omega_bin[1] - metrics.omega_bin[0])
    assert float(metrics.pdf_les.sum()) * width == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one grid"):
        les_metrics(run, run.isel(x=slice(0, 16)))


def test_model_closure_inside_les_matches_the_same_linear_closure():
    """The network Π = c·ω̄ inside the LES equals the analytic closure Π = c·ω̄ run alike."""
    from test_closures import linear_model
    from xtl.nn.closure import ModelClosure

    norm = {"psi": 1.0, "omega": 2.0, "pi": 0.25}  # Π = 0.25·(0.8·ω/2) = 0.1·ω
    case = xtl.get_case("tiny")
    net = run_les(case, ModelClosure(linear_model(0.0, 0.8, norm, grid=16)), t_end=0.4,
                  save_interval=0.2, seed=1)
    ref = run_les(case, lambda psi, omega: 0.1 * omega, t_end=0.4, save_interval=0.2, seed=1)
    none = run_les(case, None, t_end=0.4, save_interval=0.2, seed=1)
    np.testing.assert_allclose(net.omega.values, ref.omega.values, atol=1e-5)
    assert np.max(np.abs(net.omega.values[-1] - none.omega.values[-1])) > 1e-2


def test_les_file_on_disk_names_its_closure(tmp_path):
    case = xtl.get_case("tiny")
    run_les(case, Smagorinsky(), t_end=0.08, save_interval=0.04, path=tmp_path / "les.nc")
    import xarray as xr

    with xr.open_dataset(tmp_path / "les.nc") as ds:
        assert ds.attrs["closure"] == "smagorinsky" and ds.attrs["complete"] == 1


# --------------------------------------------------------------------------- a posteriori study
def _fdns(t_end=1.4, **kw):
    """Filtered DNS of the tiny case (64² DNS coarse-grained to its 16² LES grid)."""
    return xtl.simulate(xtl.get_case("tiny", **kw), t_end=t_end, save_interval=0.1, spin_up=1.0,
                        les=True, seed=0, progress=False)


def test_the_fdns_pi_of_a_frozen_field_as_closure_gives_zero_spectrum_error_at_t0():
    """Started from a filtered DNS field with a closure returning that field's own Π, the
    LES at t = 0 has the filtered DNS's spectra on every resolved shell, and the Π it
    records is the filtered DNS's."""
    from xtl.solver.les import closure_fields
    from xtl.data.spectra import spectrum

    case = xtl.get_case("tiny")
    fdns = _fdns().isel(time=[-1])
    frozen = fdns.pi.values[0]
    run = run_les(case, lambda psi, omega: frozen, initial=fdns.omega, t_end=0.0,
                  save_interval=les_case(case).dt)
    assert run.sizes["time"] == 1
    run["pi"] = closure_fields(lambda psi, omega: frozen, run)
    m = les_metrics(run, fdns)
    assert m.attrs["stable"] == 1 and m.attrs["kmax"] == 5
    assert float(m.spectrum_error) < 1e-12
    resolved = dict(k=slice(1, m.attrs["kmax"]))
    np.testing.assert_allclose(m.enstrophy_les.sel(resolved), m.enstrophy_fdns.sel(resolved),
                               rtol=1e-12)
    fdns_spectrum = spectrum(fdns.pi).values  # Π through the closure's ω̂ → Π̂ → Π, to round-off
    np.testing.assert_allclose(spectrum(run.pi).values, fdns_spectrum, rtol=1e-12,
                               atol=1e-14 * fdns_spectrum.max())
    # the dealiased LES drops the filtered field's modes beyond the 2/3 cutoff (all of shell 8)
    assert float(m.energy_les.sel(k=8)) < 1e-20 < 1e-6 < float(m.energy_fdns.sel(k=8))


def test_pdf_distance_is_zero_for_one_histogram_and_follows_the_gaussian_closed_form():
    from xtl.data.metrics import pdf_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal(200_000)
    edges = np.linspace(-6, 6, 121)
    assert pdf_distance(a, a.copy(), edges) == 0.0
    assert pdf_distance(a, a[::-1], edges) == 0.0  # the same histogram
    got = [pdf_distance(a, a + d, edges) for d in (0.25, 0.5, 1.0, 2.0)]
    expected = [math.sqrt(1 - math.exp(-d * d / 8)) for d in (0.25, 0.5, 1.0, 2.0)]
    np.testing.assert_allclose(got, expected, atol=5e-3)
    assert np.all(np.diff(got) > 0)
    # mass beyond the bins counts: samples in the two outer cells are disjoint
    assert pdf_distance(np.full(10, -9.0), np.full(10, 9.0), edges) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="edges must be increasing"):
        pdf_distance(a, a, [1.0, 0.0])


def test_tail_density_reads_the_pdf_at_sigma_multiples():
    from xtl.data.metrics import tail_density

    values = np.array([-3.0, 3.0, 3.1, 0.0]) * 2.0  # σ = 2: two values near +3σ, one at −3σ
    got = tail_density(values, 2.0, (-3.0, 3.0, 4.0), half_width=0.25)
    np.testing.assert_allclose(got, np.array([1, 2, 0]) / 4 / (2 * 0.25 * 2.0))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        tail_density(values, 0.0)


def test_initial_states_spread_over_the_samples():
    from xtl.experiment.aposteriori import select_initial_states

    fdns = _fdns()  # 5 snapshots, t = 1.0 .. 1.4
    states = select_initial_states(fdns, 3)
    assert states.dims == ("initial_state", "y", "x")
    np.testing.assert_allclose(states.time, [1.0, 1.2, 1.4])
    np.testing.assert_array_equal(states.values[1], fdns.omega.sel(time=1.2, method="nearest"))
    with pytest.raises(ValueError, match="count=6 initial states asked for, but the data hold 5"):
        select_initial_states(fdns, 6)


@pytest.fixture(scope="module")
def client():
    """A real two-worker LocalCluster (one thread each) for the module; closed after."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster,
                                                                 set_as_default=False) as c:
        yield c


def _anti_diffusion(c):
    """Π = c∇²ω̄: a negative viscosity c (the LES equation's −Π adds c k² ω̂)."""
    class AntiDiffusion:
        name, n = "anti-diffusion", 16

        def __call__(self, psi, omega):
            grid = SpectralGrid(16, dealias=False, fft="numpy")
            return grid.irfft2(-c * grid.k2 * grid.rfft2(omega))

    return AntiDiffusion()


def test_an_unstable_closure_is_recorded_with_its_blowup_time_and_the_others_are_kept(client):
    from xtl.experiment.aposteriori import aposteriori_summary, run_aposteriori, select_initial_states
    from xtl.solver.run import DivergenceError

    case = xtl.get_case("tiny")
    fdns = _fdns()
    states = select_initial_states(fdns, 2)
    anti = _anti_diffusion(0.5)
    closures = {"no closure": None, "smagorinsky": Smagorinsky(), "anti-diffusion": anti}
    ds = run_aposteriori(case, closures, states, fdns, t_end=1.6, save_interval=0.16,
                         client=client, progress=False)
    assert ds.stable.dims == ("closure", "initial_state")
    np.testing.assert_array_equal(ds.stable.values, [[1, 1], [1, 1], [0, 0]])
    # the blow-up time is where the same run, not kept, raises
    with pytest.raises(DivergenceError) as err, np.errstate(over="ignore", invalid="ignore"):
        run_les(case, anti, initial=states.isel(initial_state=0), t_end=1.6, save_interval=0.16)
    blowup = float(ds.blowup_time.sel(closure="anti-diffusion", initial_state=0))
    assert blowup == pytest.approx(err.value.time) and 0 < blowup < 1.6
    assert np.isnan(ds.blowup_time.sel(closure=["no closure", "smagorinsky"])).all()
    # the stable runs are whole; the unstable one keeps its snapshots before the blow-up
    ke = ds.kinetic_energy
    assert int(ke.sel(closure="no closure").notnull().sum("time").min()) == 11
    kept = int(ke.sel(closure="anti-diffusion", initial_state=0).notnull().sum())
    assert 1 <= kept <= int(blowup / 0.16) + 1
    # the closure's energy transfer: Smagorinsky only drains energy, no closure has none
    assert (ds.transfer_les.sel(closure="smagorinsky") > 0).all()
    assert (ds.transfer_les.sel(closure="no closure") == 0).all()
    # (2π/kf)/√(2E) of the filtered DNS, and the run's length in those
    energy = float((0.5 * fdns.omega * fdns.psi).mean())
    assert ds.attrs["turnover_time"] == pytest.approx(2 * math.pi / 4 / math.sqrt(2 * energy))
    assert ds.attrs["turnovers"] == pytest.approx(1.6 / ds.attrs["turnover_time"])
    summary = aposteriori_summary(ds)
    np.testing.assert_array_equal(summary.n_stable, [2, 2, 0])
    assert float(summary.first_blowup.sel(closure="anti-diffusion")) == pytest.approx(
        float(ds.blowup_time.sel(closure="anti-diffusion").min()))
    assert float(summary.spectrum_error_std.sel(closure="no closure")) == pytest.approx(
        float(ds.spectrum_error.sel(closure="no closure").std(ddof=1)))


def test_closure_fields_of_composed_closures():
    from test_closures import linear_model, physical_pi
    from xtl.nn.closure import ModelClosure
    from xtl.solver.les import closure_fields

    case = xtl.get_case("tiny")
    run = run_les(case, Smagorinsky(), t_end=0.08, save_interval=0.04, seed=1)
    model = ModelClosure(linear_model(0.0, 0.8, {"psi": 1.0, "omega": 2.0, "pi": 0.25}, grid=16))
    closure = 2 * Smagorinsky() + 0.5 * model  # Π = 2 Π_smag + 0.05 ω
    assert closure.backends() == {"keras"} and (0.5 * model).backends() == {"keras"}
    pi = closure_fields(closure, run)
    assert pi.dims == ("time", "y", "x")
    for t in range(run.sizes["time"]):
        omega = run.omega.values[t]
        np.testing.assert_allclose(pi.values[t], 2 * physical_pi(Smagorinsky(), omega) + 0.05 * omega,
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(closure_fields(None, run).values, 0)


def test_aposteriori_schedule_is_validated_and_the_keywords_still_work():
    from xtl.experiment.aposteriori import run_aposteriori, select_initial_states
    from xtl.solver.les import LesSchedule

    case = xtl.get_case("tiny")
    fdns = _fdns(t_end=1.2)
    states = select_initial_states(fdns, 1)
    closures = {"smagorinsky": Smagorinsky(), "halves": 0.5 * Smagorinsky() + Smagorinsky() * 0.5}
    by_keywords = run_aposteriori(case, closures, states, fdns, t_end=0.16, save_interval=0.08,
                                  dt=None, progress=False)
    by_options = run_aposteriori(case, closures, states, fdns,
                                 LesSchedule(t_end=0.16, save_interval=0.04), save_interval=0.08,
                                 progress=False)
    drop = ["wall_seconds"]
    import xarray as xr

    xr.testing.assert_identical(by_keywords.drop_vars(drop), by_options.drop_vars(drop))
    assert by_keywords.attrs["t_end"] == 0.16 and math.isnan(by_keywords.attrs["dt"])
    # ½Π + ½Π is Π exactly: the sum runs as the closure itself
    for name in ("kinetic_energy", "spectrum_error", "transfer_les"):
        np.testing.assert_array_equal(by_keywords[name].sel(closure="halves"),
                                      by_keywords[name].sel(closure="smagorinsky"))
    for kwargs, error, match in (
            (dict(t_end=-1.0, save_interval=0.08), ValueError, "t_end must be > 0, got -1.0"),
            (dict(t_end=math.inf, save_interval=0.08), ValueError, "t_end must be a finite number"),
            (dict(t_end=0.16, save_interval=0.0), ValueError, "save_interval must be > 0"),
            (dict(t_end=0.16, save_interval=0.08, dt=0.0), ValueError, "dt must be > 0"),
            (dict(t_end=0.16, save_interval=0.08, steps=3), TypeError,
             r"unknown LesSchedule option\(s\) \['steps'\]; valid: t_end, save_interval, dt")):
        with pytest.raises(error, match=match):
            run_aposteriori(case, closures, states, fdns, progress=False, **kwargs)
