"""Closures: Π̂ from the solver's ω̂ and grid, the formulas, composition, the registry, networks."""
import math
import pickle

import numpy as np
import pytest

from xtl.nn.closure import ModelClosure
from xtl.physics import closures as registry
from xtl.physics.closures import (
    Closure,
    DynamicSmagorinsky,
    FunctionClosure,
    NoClosure,
    ScaledClosure,
    Smagorinsky,
    SumClosure,
    as_closure,
    available_closures,
    get_closure,
    register_closure,
)
from xtl.solver import SpectralGrid


def physical_pi(closure, omega, grid=None):
    """Physical Π of a closure on physical ω̄ (ψ̂ = ω̂/k²), through its one entry point."""
    grid = SpectralGrid(np.shape(omega)[-1], dealias=False) if grid is None else grid
    return grid.irfft2(as_closure(closure).pi_hat(grid.rfft2(omega), grid))


def _state_fields(n=32, seed=0, snapshots=()):
    """A dealiased random ω̂ on the solver's grid and its physical ψ̄, ω̄ (as the solver makes them)."""
    grid = SpectralGrid(n)
    rng = np.random.default_rng(seed)
    omega_hat = grid.rfft2(rng.standard_normal((*snapshots, n, n))) * grid.mask
    psi, omega = grid.irfft2(np.stack([grid.streamfunction(omega_hat), omega_hat]))
    return grid, omega_hat, psi, omega


def linear_model(a_psi, a_omega, norm, grid=None):
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
    del ds.attrs["model_id"]  # edited on purpose: the saved content hash no longer holds
    out = model_from_dataset(ds)
    if grid is not None:
        out.provenance = {"grid": [grid, grid], "kind": "base", "training_case": "linear"}
    return out


# --------------------------------------------------------------------------- the formulas
def test_smagorinsky_formula_on_a_shear_flow():
    """ψ = sin x sin y: ψ_xy = cos x cos y, ψ_yy − ψ_xx = 0 ⇒ |S| = 2|cos x cos y|."""
    n = 32
    grid = SpectralGrid(n)
    x, y = grid.x[None, :], grid.y[:, None]
    psi = np.sin(x) * np.sin(y)
    omega = 2 * psi  # ψ̂ = ω̂/k², k² = 2
    closure = Smagorinsky(cs=0.2)
    nu = (0.2 * 2 * np.pi / n) ** 2 * 2 * np.abs(np.cos(x) * np.cos(y))
    # Π = −∇·(ν ∇ω), by finite differences of a fine analytic evaluation
    wx, wy = 2 * np.cos(x) * np.sin(y), 2 * np.sin(x) * np.cos(y)
    flux_x, flux_y = nu * wx, nu * wy
    div = grid.irfft2(1j * grid.kx * grid.rfft2(flux_x) + 1j * grid.ky * grid.rfft2(flux_y))
    np.testing.assert_allclose(physical_pi(closure, omega, grid), -div, atol=1e-12)


def test_closures_read_the_grid_they_are_given_and_close_each_snapshot():
    """One closure on any grid; leading axes of ω̂ are snapshots, each closed alone (the
    dynamic coefficient too); the grid's 2/3 rule does not change Π̂."""
    closures = [Smagorinsky(), DynamicSmagorinsky(), NoClosure(),
                0.5 * Smagorinsky(cs=0.3) + DynamicSmagorinsky() + (lambda p, w: 0.1 * w)]
    for n in (16, 32):
        grid, omega_hat, _, _ = _state_fields(n, snapshots=(3,))
        plain = SpectralGrid(n, dealias=False)
        for closure in closures:
            batch = closure.pi_hat(omega_hat, grid)
            assert batch.shape == omega_hat.shape
            one = np.stack([closure.pi_hat(w, grid) for w in omega_hat])
            scale = max(np.max(np.abs(one)), 1.0)
            np.testing.assert_allclose(batch, one, rtol=0, atol=1e-13 * scale, err_msg=repr(closure))
            np.testing.assert_array_equal(closure.pi_hat(omega_hat, plain), batch)
    # the dynamic coefficient of a batch is each snapshot's own
    grid, omega_hat, _, _ = _state_fields(32, seed=0, snapshots=(8,))
    omega_hat = omega_hat * np.exp(-grid.k2 / 4) * np.sqrt(grid.inv_k2)  # a red spectrum
    dynamic = DynamicSmagorinsky()
    dynamic.pi_hat(omega_hat, grid)
    batch = np.array(dynamic.cs2)
    each = [dynamic.pi_hat(w, grid) is not None and dynamic.cs2 for w in omega_hat]
    np.testing.assert_allclose(batch, each, rtol=1e-12)
    assert len({c for c in each if c > 0}) >= 3  # positive and different
    assert np.max(np.abs(Smagorinsky().pi_hat(omega_hat, grid))) > 1e-3


def test_a_plain_function_closes_the_physical_fields():
    grid, omega_hat, psi, omega = _state_fields(16)
    seen = []

    def func(p, w):
        seen.append((p, w))
        return 0.1 * w + p

    pi_hat = as_closure(func).pi_hat(omega_hat, grid)
    np.testing.assert_allclose(seen[0][0], psi, atol=1e-14)  # ψ̄ = irfft2(ω̂/k²)
    np.testing.assert_allclose(grid.irfft2(pi_hat), 0.1 * omega + psi, atol=1e-14)
    with pytest.raises(ValueError, match=r"closure returned shape \(8, 8\)"):
        as_closure(lambda p, w: np.zeros((8, 8))).pi_hat(omega_hat, grid)
    with pytest.raises(TypeError, match="closure must be a Closure, a callable"):
        as_closure(3)
    func.n = 32  # a function made for a 32² grid refuses another
    with pytest.raises(ValueError, match="32² grid but the LES grid is 16²; .*n=32"):
        as_closure(func).check_grid(grid)


# --------------------------------------------------------------------------- composition
def test_closure_is_an_abstract_base_class():
    with pytest.raises(TypeError, match="abstract"):
        Closure()

    class Incomplete(Closure):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_closures_compose_by_addition():
    grid = SpectralGrid(16)
    a = lambda psi, omega: np.ones((16, 16))
    s = Smagorinsky()
    total = s + a
    assert isinstance(total, SumClosure) and isinstance(total.closures[1], FunctionClosure)
    omega = 5 * np.sin(grid.x[None, :]) * np.cos(2 * grid.y[:, None])
    np.testing.assert_allclose(physical_pi(total, omega), physical_pi(s, omega) + 1, atol=1e-14)


def test_sum_of_closures_equals_the_explicit_sum():
    _, _, _, omega = _state_fields()
    parts = [Smagorinsky(), DynamicSmagorinsky(), lambda p, w: 0.1 * w]
    total = sum(parts)
    assert isinstance(total, SumClosure) and len(total.closures) == 3
    expected = physical_pi(parts[0], omega) + physical_pi(parts[1], omega) + 0.1 * omega
    np.testing.assert_allclose(physical_pi(total, omega), expected, rtol=0, atol=1e-14)
    assert 0 + parts[0] is parts[0] and parts[0] + 0 is parts[0]  # sum() starts from 0
    # nested sums flatten; a callable on the left joins too
    assert len(((parts[0] + parts[1]) + (parts[2] + parts[0])).closures) == 4
    np.testing.assert_allclose(physical_pi(parts[2] + parts[0], omega),
                               0.1 * omega + physical_pi(parts[0], omega), rtol=0, atol=1e-14)


def test_scalar_multiples_of_closures():
    _, _, _, omega = _state_fields()
    s = Smagorinsky(cs=0.2)
    ref = physical_pi(s, omega)
    assert np.max(np.abs(ref)) > 1e-3
    pi = lambda closure: physical_pi(closure, omega)  # noqa: E731
    np.testing.assert_allclose(pi(2 * s), pi(s + s), rtol=0, atol=1e-15)
    np.testing.assert_allclose(pi(0.5 * s), 0.5 * ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pi(s * 3), 3 * ref, rtol=0, atol=1e-15)
    np.testing.assert_allclose(pi(np.float64(2.0) * s), 2 * ref, rtol=0, atol=1e-15)
    nested = 3 * (0.5 * s)  # factors multiply: one ScaledClosure of s
    assert isinstance(nested, ScaledClosure) and nested.closure is s and nested.factor == 1.5
    assert (0.5 * s).name == "0.5 * smagorinsky"
    np.testing.assert_allclose(pi(2 * (s + s)), 4 * ref, rtol=0, atol=1e-14)
    for bad in (1j, "2", True, None, np.ones(2), s):
        with pytest.raises(TypeError, match="multiplied by a real number only"):
            bad * s
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="factor must be a finite number"):
            s * bad


def test_closures_have_readable_reprs():
    s, d = Smagorinsky(), DynamicSmagorinsky()
    assert repr(s) == "Smagorinsky(cs=0.17)" and repr(Smagorinsky(cs=0.2)) == "Smagorinsky(cs=0.2)"
    assert repr(d) == "DynamicSmagorinsky()" and repr(NoClosure()) == "NoClosure()"
    assert repr(0.5 * s + d) == "0.5 * Smagorinsky(cs=0.17) + DynamicSmagorinsky()"
    assert repr(2 * (s + d)) == "2 * (Smagorinsky(cs=0.17) + DynamicSmagorinsky())"
    assert (2 * (s + d)).name == "2 * (smagorinsky + dynamic-smagorinsky)"
    model = ModelClosure(linear_model(1.0, 1.0, {"psi": 1.0, "omega": 1.0, "pi": 1.0}, grid=16))
    assert repr(0.5 * model) == "0.5 * ModelClosure('base network (linear)')"


def test_composed_closure_pickles_as_it_is():
    grid, omega_hat, _, _ = _state_fields(16)
    closure = 0.5 * Smagorinsky(cs=0.2) + DynamicSmagorinsky() + 2 * NoClosure()
    assert "__reduce__" not in vars(Smagorinsky) and "__reduce__" not in vars(DynamicSmagorinsky)
    copy = pickle.loads(pickle.dumps(closure))
    assert repr(copy) == repr(closure)
    np.testing.assert_array_equal(copy.pi_hat(omega_hat, grid), closure.pi_hat(omega_hat, grid))


# --------------------------------------------------------------------------- the registry
def test_closure_registry():
    assert {"none", "no closure", "smagorinsky", "dynamic-smagorinsky"} <= set(available_closures())
    s = get_closure("smagorinsky", cs=0.25)
    assert type(s) is Smagorinsky and s.cs == 0.25
    assert type(get_closure("Dynamic-Smagorinsky")) is DynamicSmagorinsky
    assert type(get_closure("none")) is NoClosure and type(get_closure("no closure")) is NoClosure
    with pytest.raises(ValueError, match="unknown closure 'smag'; valid names: .*'smagorinsky'.*"
                                         "'dynamic-smagorinsky'"):
        get_closure("smag")
    with pytest.raises(TypeError, match="'smagorinsky' cannot be made with params"):
        get_closure("smagorinsky", width=2)
    with pytest.raises(TypeError, match=r"'smagorinsky' cannot be made with params \['n'\]"):
        get_closure("smagorinsky", n=32)  # closures read the solver's grid
    with pytest.raises(ValueError, match="'smagorinsky' is registered already"):
        register_closure("smagorinsky", DynamicSmagorinsky)
    assert type(get_closure("smagorinsky")) is Smagorinsky  # the refused one did not replace it
    with pytest.raises(TypeError, match="factory must be callable"):
        register_closure("twice-smagorinsky", 2)
    register_closure("twice-smagorinsky", lambda: 2 * Smagorinsky())
    try:
        assert repr(get_closure("twice-smagorinsky")) == "2 * Smagorinsky(cs=0.17)"
        register_closure("twice-smagorinsky", lambda: 3 * Smagorinsky(), overwrite=True)
        assert get_closure("twice-smagorinsky").factor == 3
    finally:
        registry._REGISTRY.pop("twice-smagorinsky")  # leave the registry as the other tests expect
    assert "twice-smagorinsky" not in available_closures()


# --------------------------------------------------------------------------- networks
def test_model_closure_normalizes_inputs_and_denormalizes_output():
    norm = {"psi": 0.5, "omega": 4.0, "pi": 3.0}
    closure = ModelClosure(linear_model(2.0, -1.0, norm, grid=16))
    assert closure.n_les == 16 and "linear" in closure.name
    grid, _, psi, omega = _state_fields(16, seed=0)
    expected = 3.0 * (2.0 * psi / 0.5 - 1.0 * omega / 4.0)
    got = physical_pi(closure, omega, grid)
    assert got.shape == (16, 16) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_model_closure_refuses_other_grids_and_variables():
    norm = {"psi": 1.0, "omega": 1.0, "pi": 1.0}
    closure = ModelClosure(linear_model(1.0, 1.0, norm, grid=32))
    closure.check_grid(SpectralGrid(32))
    with pytest.raises(ValueError, match=r"network \(linear\) closure works on a 32² grid but "
                                         r"the LES grid is 16²; pass n=32 to run_les"):
        closure.check_grid(SpectralGrid(16))
    with pytest.raises(ValueError, match="32² grid but the LES grid is 16²"):
        closure.pi_hat(np.zeros(SpectralGrid(16).spectral_shape, complex), SpectralGrid(16))
    model = linear_model(1.0, 1.0, norm, grid=16)
    from xtl.nn.spec import Variables

    model.normalization = {"u": 1.0, "v": 1.0, "tau": 1.0}
    model.variables = Variables(("u", "v"), ("tau",))
    with pytest.raises(ValueError, match=r"model maps \['u', 'v'\] -> \['tau'\]; the a "
                                         "posteriori LES is xtl's 2D solver"):
        ModelClosure(model)


def test_model_closure_pickles_as_its_weights_and_rebuilds_on_first_call():
    norm = {"psi": 0.5, "omega": 4.0, "pi": 3.0}
    closure = ModelClosure(linear_model(2.0, -1.0, norm, grid=16))
    copy = pickle.loads(pickle.dumps(closure))
    assert copy._model is None and copy.n_les == 16 and copy.backend == "keras"
    grid, omega_hat, _, _ = _state_fields(16, seed=1, snapshots=(2,))
    np.testing.assert_array_equal(copy.pi_hat(omega_hat[0], grid), closure.pi_hat(omega_hat[0], grid))
    # the per-step path (compiled forward) agrees with the batched one
    one = closure.pi_hat(omega_hat[0], grid)
    np.testing.assert_allclose(closure.pi_hat(omega_hat, grid)[0], one, rtol=0,
                               atol=1e-6 * np.max(np.abs(one)))
    assert closure.backends() == {"keras"} and (0.5 * closure + Smagorinsky()).backends() == {"keras"}
