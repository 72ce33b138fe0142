"""A posteriori LES: closure sign, physics baselines, metrics and errors."""
import math

import numpy as np
import pytest

import xtl
from xtl.les import (
    DynamicSmagorinsky,
    NoClosure,
    Smagorinsky,
    SumClosure,
    les_case,
    les_metrics,
    run_les,
)
from xtl.solver import SpectralGrid


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


def test_smagorinsky_formula_on_a_shear_flow():
    """ψ = sin x sin y: ψ_xy = cos x cos y, ψ_yy − ψ_xx = 0 ⇒ |S| = 2|cos x cos y|."""
    n = 32
    grid = SpectralGrid(n)
    x, y = grid.x[None, :], grid.y[:, None]
    psi = np.sin(x) * np.sin(y)
    omega = 2 * psi
    closure = Smagorinsky(n, cs=0.2)
    nu = (0.2 * 2 * np.pi / n) ** 2 * 2 * np.abs(np.cos(x) * np.cos(y))
    # Π = −∇·(ν ∇ω), by finite differences of a fine analytic evaluation
    wx, wy = 2 * np.cos(x) * np.sin(y), 2 * np.sin(x) * np.cos(y)
    flux_x, flux_y = nu * wx, nu * wy
    div = grid.irfft2(1j * grid.kx * grid.rfft2(flux_x) + 1j * grid.ky * grid.rfft2(flux_y))
    np.testing.assert_allclose(closure(psi, omega), -div, atol=1e-12)


def _energy(ds):
    return (0.5 * (ds.omega * ds.psi).mean(("y", "x"))).values


@pytest.mark.parametrize("closure_type", [Smagorinsky, DynamicSmagorinsky])
def test_eddy_viscosity_closures_dissipate_energy(closure_type):
    case = _decaying()
    kw = dict(t_end=1.0, save_interval=0.5, seed=3)
    free = run_les(case, None, **kw)
    closure = closure_type(32)
    damped = run_les(case, closure, **kw)
    e_free, e_damped = _energy(free), _energy(damped)
    assert abs(e_free[-1] / e_free[0] - 1) < 1e-3  # inviscid, dealiased: ~conserved
    assert e_damped[-1] < e_damped[0] * (1 - 1e-3)
    assert e_damped[-1] < e_free[-1]
    if closure_type is DynamicSmagorinsky:
        assert 0 < closure.cs2 < 1


@pytest.mark.parametrize("closure_type", [Smagorinsky, DynamicSmagorinsky])
def test_solver_reads_the_spectral_state_with_the_same_result(closure_type):
    """An LES with xtl's closure (Π̂ from the solver's ω̂) equals, to round-off, the
    same closure called as a plain function on the physical fields."""
    case, closure = _decaying(), closure_type(32)
    kw = dict(t_end=0.5, save_interval=0.5, seed=3)
    spectral = run_les(case, closure, **kw)
    physical = run_les(case, lambda psi, omega: closure(psi, omega), **kw)
    scale = float(np.abs(physical.omega).max())
    np.testing.assert_allclose(spectral.omega.values, physical.omega.values,
                               rtol=0, atol=1e-10 * scale)
    assert not np.array_equal(spectral.omega.values, run_les(case, None, **kw).omega.values)


def test_closures_compose_by_addition():
    n = 16
    grid = SpectralGrid(n)
    a = lambda psi, omega: np.ones((n, n))
    s = Smagorinsky(n)
    total = s + a
    assert isinstance(total, SumClosure) and total.n == n
    psi = np.sin(grid.x[None, :]) * np.cos(2 * grid.y[:, None])
    np.testing.assert_allclose(total(psi, 5 * psi), s(psi, 5 * psi) + 1)
    with pytest.raises(ValueError, match="different grids"):
        Smagorinsky(16) + Smagorinsky(32)


def test_closure_on_another_grid_is_refused():
    with pytest.raises(ValueError, match="32² grid but the LES grid is 16²"):
        run_les(xtl.get_case("tiny"), Smagorinsky(32), t_end=0.1, save_interval=0.1)
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


# --------------------------------------------------------------------------- model closures
def _linear_model(a_psi, a_omega, norm, grid=None):
    """A 1-layer, 1×1-kernel network: out = a_psi·ψ_n + a_omega·ω_n (normalized units)."""
    from xtl.nn.backends.base import get_backend
    from xtl.nn.model import model_from_dataset, model_to_dataset
    from xtl.nn.spec import NetworkSpec

    model = get_backend("keras").build(NetworkSpec(n_layers=1, kernel_size=1), norm, seed=0)
    ds = model_to_dataset(model)
    kernel = ds.kernel.values.copy()
    kernel[0, 0, 0, 0, 0], kernel[0, 0, 1, 0, 0] = a_psi, a_omega
    ds["kernel"] = (ds.kernel.dims, kernel)
    ds["bias"] = (ds.bias.dims, np.zeros_like(ds.bias.values))
    out = model_from_dataset(ds)
    if grid is not None:
        out.provenance = {"grid": [grid, grid], "kind": "base", "training_case": "linear"}
    return out


def test_model_closure_normalizes_inputs_and_denormalizes_output():
    from xtl.les import ModelClosure

    norm = {"psi": 0.5, "omega": 4.0, "pi": 3.0}
    closure = ModelClosure(_linear_model(2.0, -1.0, norm, grid=16))
    assert closure.n == 16 and "linear" in closure.name
    rng = np.random.default_rng(0)
    psi, omega = rng.standard_normal((16, 16)), rng.standard_normal((16, 16))
    expected = 3.0 * (2.0 * psi / 0.5 - 1.0 * omega / 4.0)
    got = closure(psi, omega)
    assert got.shape == (16, 16) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_model_closure_inside_les_matches_the_same_linear_closure():
    """The network Π = c·ω̄ inside the LES equals the analytic closure Π = c·ω̄ run alike."""
    from xtl.les import ModelClosure

    norm = {"psi": 1.0, "omega": 2.0, "pi": 0.25}  # Π = 0.25·(0.8·ω/2) = 0.1·ω
    case = xtl.get_case("tiny")
    net = run_les(case, ModelClosure(_linear_model(0.0, 0.8, norm, grid=16)), t_end=0.4,
                  save_interval=0.2, seed=1)
    ref = run_les(case, lambda psi, omega: 0.1 * omega, t_end=0.4, save_interval=0.2, seed=1)
    none = run_les(case, None, t_end=0.4, save_interval=0.2, seed=1)
    np.testing.assert_allclose(net.omega.values, ref.omega.values, atol=1e-5)
    assert np.max(np.abs(net.omega.values[-1] - none.omega.values[-1])) > 1e-2


def test_model_closure_rejects_other_grids_and_variables():
    from xtl.les import ModelClosure

    norm = {"psi": 1.0, "omega": 1.0, "pi": 1.0}
    with pytest.raises(ValueError, match="trained on a 32² grid"):
        ModelClosure(_linear_model(1.0, 1.0, norm, grid=32), n=16)
    with pytest.raises(ValueError, match="32² grid but the LES grid is 16²"):
        run_les(xtl.get_case("tiny"), ModelClosure(_linear_model(1.0, 1.0, norm, grid=32)),
                t_end=0.1, save_interval=0.1)
    model = _linear_model(1.0, 1.0, norm, grid=16)
    model.normalization = {"u": 1.0, "v": 1.0, "tau": 1.0}
    with pytest.raises(ValueError, match="trained on variables"):
        ModelClosure(model)


def test_les_file_on_disk_names_its_closure(tmp_path):
    case = xtl.get_case("tiny")
    run_les(case, Smagorinsky(16), t_end=0.08, save_interval=0.04, path=tmp_path / "les.nc")
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
    from xtl.les import closure_fields
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
    np.testing.assert_array_equal(spectrum(run.pi).values, spectrum(fdns.pi).values)
    # the dealiased LES drops the filtered field's modes beyond the 2/3 cutoff (all of shell 8)
    assert float(m.energy_les.sel(k=8)) < 1e-20 < 1e-6 < float(m.energy_fdns.sel(k=8))


def test_pdf_distance_is_zero_for_one_histogram_and_follows_the_gaussian_closed_form():
    from xtl.les import pdf_distance

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
    from xtl.les import tail_density

    values = np.array([-3.0, 3.0, 3.1, 0.0]) * 2.0  # σ = 2: two values near +3σ, one at −3σ
    got = tail_density(values, 2.0, (-3.0, 3.0, 4.0), half_width=0.25)
    np.testing.assert_allclose(got, np.array([1, 2, 0]) / 4 / (2 * 0.25 * 2.0))
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        tail_density(values, 0.0)


def test_initial_states_spread_over_the_samples():
    from xtl.les import select_initial_states

    fdns = _fdns()  # 5 snapshots, t = 1.0 .. 1.4
    states = select_initial_states(fdns, 3)
    assert states.dims == ("initial_state", "y", "x")
    np.testing.assert_allclose(states.time, [1.0, 1.2, 1.4])
    np.testing.assert_array_equal(states.values[1], fdns.omega.sel(time=1.2, method="nearest"))
    with pytest.raises(ValueError, match="count=6 initial states asked for, but the data hold 5"):
        select_initial_states(fdns, 6)


def test_model_closure_pickles_as_its_weights_and_rebuilds_on_first_call():
    import pickle

    from xtl.les import ModelClosure

    norm = {"psi": 0.5, "omega": 4.0, "pi": 3.0}
    closure = ModelClosure(_linear_model(2.0, -1.0, norm, grid=16))
    copy = pickle.loads(pickle.dumps(closure))
    assert copy._model is None and copy.n == 16 and copy.backend == "keras"
    rng = np.random.default_rng(1)
    psi, omega = rng.standard_normal((2, 16, 16))
    np.testing.assert_array_equal(copy(psi, omega), closure(psi, omega))
    # the per-step path (compiled forward) agrees with the batched one
    np.testing.assert_allclose(closure.fields(psi[None], omega[None])[0], closure(psi, omega),
                               rtol=1e-6, atol=1e-6)


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
    from xtl.les import aposteriori_summary, run_aposteriori, select_initial_states
    from xtl.solver.run import DivergenceError

    case = xtl.get_case("tiny")
    fdns = _fdns()
    states = select_initial_states(fdns, 2)
    anti = _anti_diffusion(0.5)
    closures = {"no closure": None, "smagorinsky": Smagorinsky(16), "anti-diffusion": anti}
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


# --------------------------------------------------------------------------- composing closures
def _state_fields(n=32, seed=0):
    """A dealiased random ω̂ on the solver's grid and its physical ψ̄, ω̄ (as the solver makes them)."""
    grid = SpectralGrid(n)
    rng = np.random.default_rng(seed)
    omega_hat = grid.rfft2(rng.standard_normal((n, n))) * grid.mask
    psi, omega = grid.irfft2(np.stack([grid.streamfunction(omega_hat), omega_hat]))
    return grid, omega_hat, psi, omega


def test_closure_is_an_abstract_base_class():
    from xtl.les import Closure

    with pytest.raises(TypeError, match="abstract"):
        Closure()

    class Incomplete(Closure):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_sum_of_closures_equals_the_explicit_sum():
    _, _, psi, omega = _state_fields()
    parts = [Smagorinsky(32), DynamicSmagorinsky(32), lambda p, w: 0.1 * w]
    total = sum(parts)
    assert isinstance(total, SumClosure) and total.n == 32 and len(total.closures) == 3
    expected = parts[0](psi, omega) + parts[1](psi, omega) + 0.1 * omega
    np.testing.assert_allclose(total(psi, omega), expected, rtol=0, atol=1e-14)
    assert 0 + parts[0] is parts[0] and parts[0] + 0 is parts[0]  # sum() starts from 0
    # nested sums flatten; a callable on the left joins too
    assert len(((parts[0] + parts[1]) + (parts[2] + parts[0])).closures) == 4
    np.testing.assert_allclose((parts[2] + parts[0])(psi, omega), 0.1 * omega + parts[0](psi, omega),
                               rtol=0, atol=1e-14)


def test_scalar_multiples_of_closures():
    from xtl.les import ScaledClosure

    _, _, psi, omega = _state_fields()
    s = Smagorinsky(32, cs=0.2)
    ref = s(psi, omega)
    assert np.max(np.abs(ref)) > 1e-3
    np.testing.assert_allclose((2 * s)(psi, omega), (s + s)(psi, omega), rtol=0, atol=1e-15)
    np.testing.assert_allclose((0.5 * s)(psi, omega), 0.5 * ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose((s * 3)(psi, omega), 3 * ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose((np.float64(2.0) * s)(psi, omega), 2 * ref, rtol=0, atol=1e-15)
    nested = 3 * (0.5 * s)  # factors multiply: one ScaledClosure of s
    assert isinstance(nested, ScaledClosure) and nested.closure is s and nested.factor == 1.5
    assert (0.5 * s).n == 32 and (0.5 * s).name == "0.5 * smagorinsky"
    np.testing.assert_allclose((2 * (s + s))(psi, omega), 4 * ref, rtol=0, atol=1e-14)
    for bad in (1j, "2", True, None, np.ones(2), s):
        with pytest.raises(TypeError, match="multiplied by a real number only"):
            bad * s
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="factor must be a finite number"):
            s * bad


def test_closures_have_readable_reprs():
    from xtl.les import ModelClosure

    s, d = Smagorinsky(32), DynamicSmagorinsky(32)
    assert repr(s) == "Smagorinsky(n=32, cs=0.17)"
    assert repr(Smagorinsky(16, cs=0.2)) == "Smagorinsky(n=16, cs=0.2)"
    assert repr(d) == "DynamicSmagorinsky(n=32)"
    assert repr(NoClosure()) == "NoClosure()" and repr(NoClosure(n=32)) == "NoClosure(n=32)"
    assert repr(0.5 * s + d) == "0.5 * Smagorinsky(n=32, cs=0.17) + DynamicSmagorinsky(n=32)"
    assert repr(2 * (s + d)) == "2 * (Smagorinsky(n=32, cs=0.17) + DynamicSmagorinsky(n=32))"
    assert (2 * (s + d)).name == "2 * (smagorinsky + dynamic-smagorinsky)"
    model = ModelClosure(_linear_model(1.0, 1.0, {"psi": 1.0, "omega": 1.0, "pi": 1.0}, grid=16))
    assert repr(0.5 * model) == "0.5 * ModelClosure('base network (linear)', n=16)"


def test_closure_registry():
    from xtl.les import available_closures, get_closure, register_closure

    assert {"none", "no closure", "smagorinsky", "dynamic-smagorinsky"} <= set(available_closures())
    s = get_closure("smagorinsky", n=32, cs=0.25)
    assert type(s) is Smagorinsky and (s.n, s.cs) == (32, 0.25)
    assert type(get_closure("Dynamic-Smagorinsky", n=16)) is DynamicSmagorinsky
    assert get_closure("dynamic-smagorinsky", n=16).n == 16
    assert type(get_closure("none")) is NoClosure and type(get_closure("no closure")) is NoClosure
    with pytest.raises(ValueError, match="unknown closure 'smag'; valid names: .*'smagorinsky'.*"
                                         "'dynamic-smagorinsky'"):
        get_closure("smag", n=32)
    with pytest.raises(TypeError, match="'smagorinsky' cannot be made with params"):
        get_closure("smagorinsky", n=32, width=2)
    with pytest.raises(ValueError, match="'smagorinsky' is registered already"):
        register_closure("smagorinsky", DynamicSmagorinsky)
    assert type(get_closure("smagorinsky", n=16)) is Smagorinsky  # the refused one did not replace it
    with pytest.raises(TypeError, match="factory must be callable"):
        register_closure("twice-smagorinsky", 2)
    register_closure("twice-smagorinsky", lambda n: 2 * Smagorinsky(n))
    try:
        assert repr(get_closure("twice-smagorinsky", n=16)) == "2 * Smagorinsky(n=16, cs=0.17)"
        register_closure("twice-smagorinsky", lambda n: 3 * Smagorinsky(n), overwrite=True)
        assert get_closure("twice-smagorinsky", n=16).factor == 3
    finally:
        from xtl import les

        les._REGISTRY.pop("twice-smagorinsky")  # leave the registry as the other tests expect
    assert "twice-smagorinsky" not in available_closures()


def test_composed_closure_pickles():
    import pickle

    _, _, psi, omega = _state_fields(16)
    closure = 0.5 * Smagorinsky(16, cs=0.2) + DynamicSmagorinsky(16) + 2 * NoClosure()
    copy = pickle.loads(pickle.dumps(closure))
    assert repr(copy) == repr(closure)
    np.testing.assert_array_equal(copy(psi, omega), closure(psi, omega))


def test_spectral_state_path_equals_the_physical_path():
    """From the solver's ω̂ the closures give the Π̂ the solver gets from their physical call
    (ψ̄, ω̄ transformed back, Π transformed forward), to round-off."""
    from xtl.les import ClosureState

    grid, omega_hat, psi, omega = _state_fields()
    closures = [Smagorinsky(32), DynamicSmagorinsky(32), NoClosure(),
                0.5 * Smagorinsky(32, cs=0.3) + DynamicSmagorinsky(32) + (lambda p, w: 0.1 * w)]
    for closure in closures:
        physical = closure(psi, omega)
        cs2 = getattr(closure, "cs2", None)
        expected = grid.rfft2(physical) * grid.mask
        got = closure.pi_hat_from(omega_hat, grid) * grid.mask
        scale = max(np.max(np.abs(expected)), 1.0)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13 * scale, err_msg=repr(closure))
        if cs2 is not None:
            assert closure.cs2 == pytest.approx(cs2, rel=1e-12)
        state = ClosureState.from_spectrum(omega_hat, grid)
        np.testing.assert_allclose(closure.pi(state), physical, rtol=0, atol=1e-13 * scale)
    assert np.max(np.abs(closures[0](psi, omega))) > 1e-3
    # one state of a sum transforms each field once: the parts read the same arrays
    state = ClosureState.from_spectrum(omega_hat, grid)
    assert state.psi_hat is state.psi_hat and state.omega is state.omega
    np.testing.assert_allclose(state.psi, psi, atol=1e-14)
    with pytest.raises(ValueError, match="smagorinsky closure works on a 16² grid, got a state on "
                                         "a 32² grid"):
        Smagorinsky(16).pi_hat_from(omega_hat, grid)


def test_closure_fields_of_composed_closures():
    from xtl.les import ModelClosure, closure_fields

    case = xtl.get_case("tiny")
    run = run_les(case, Smagorinsky(16), t_end=0.08, save_interval=0.04, seed=1)
    model = ModelClosure(_linear_model(0.0, 0.8, {"psi": 1.0, "omega": 2.0, "pi": 0.25}, grid=16))
    closure = 2 * Smagorinsky(16) + 0.5 * model  # Π = 2 Π_smag + 0.05 ω
    assert closure.backends() == {"keras"} and (0.5 * model).backends() == {"keras"}
    pi = closure_fields(closure, run)
    assert pi.dims == ("time", "y", "x")
    for t in range(run.sizes["time"]):
        psi, omega = run.psi.values[t], run.omega.values[t]
        np.testing.assert_allclose(pi.values[t], 2 * Smagorinsky(16)(psi, omega) + 0.05 * omega,
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(closure_fields(None, run).values, 0)


def test_aposteriori_schedule_is_validated_and_the_keywords_still_work():
    from xtl.les import LesSchedule, run_aposteriori, select_initial_states

    case = xtl.get_case("tiny")
    fdns = _fdns(t_end=1.2)
    states = select_initial_states(fdns, 1)
    closures = {"smagorinsky": Smagorinsky(16), "halves": 0.5 * Smagorinsky(16) + Smagorinsky(16) * 0.5}
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
