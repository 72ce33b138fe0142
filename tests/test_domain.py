"""Physical domains (side L, read from the coordinates or passed as L=) and the SGS
term of any advected scalar."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xtl.data import spectra as S
from xtl.data.coarse import coarse_grain, sgs_term

TWO_PI = 2 * np.pi
L_QG = 1.0e6  # a QG run's domain, in metres


def _points(n, length, origin=0.0):
    return origin + np.arange(n) * (length / n)


def _field(values, length, origin=0.0, units="m"):
    n = values.shape[-1]
    x = _points(n, length, origin)
    return xr.DataArray(values, dims=("y", "x"),
                        coords={"y": ("y", x, {"units": units}), "x": ("x", x, {"units": units})})


def _band_limited(n, seed, kmax=4):
    """A random real field of the modes |kx|, |ky| <= kmax on an n × n index grid."""
    rng = np.random.default_rng(seed)
    spec = np.zeros((n, n // 2 + 1), complex)
    for ky in range(-kmax, kmax + 1):
        for kx in range(kmax + 1):
            spec[ky % n, kx] = rng.standard_normal() + 1j * rng.standard_normal()
    spec[0, 0] = 0
    return np.fft.irfft2(spec * n * n, s=(n, n))


def _flow(n, length, seed=0, lead=()):
    """ψ and ω = −∇²ψ (in the units of a domain of side ``length``) on (..., y, x)."""
    shape = tuple(s for _, s in lead)
    psi = np.stack([_band_limited(n, seed + i) for i in range(int(np.prod(shape)))])
    psi = psi.reshape(shape + (n, n))
    ky = np.fft.fftfreq(n, 1 / n)[:, None] * (TWO_PI / length)
    kx = np.fft.rfftfreq(n, 1 / n)[None, :] * (TWO_PI / length)
    omega = np.fft.irfft2((kx**2 + ky**2) * np.fft.rfft2(psi), s=(n, n))
    x = _points(n, length)
    dims = tuple(d for d, _ in lead) + ("y", "x")
    coords = {"y": x, "x": x, **{d: np.arange(s) for d, s in lead}}
    return xr.Dataset({"psi": (dims, psi), "omega": (dims, omega)}, coords=coords)


# ----------------------------------------------------------------------------------------
# spectra
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", [0.0, 0.5 * L_QG / 16])  # cell corners, cell centres
def test_parseval_on_a_physical_domain(origin):
    ds = _flow(16, L_QG)
    ds = ds.assign_coords(y=ds.y + origin, x=ds.x + origin)
    psi = ds.psi
    P = S.spectrum(psi, "power")
    np.testing.assert_allclose(P.sum("k"), (psi**2).mean(), rtol=1e-12)
    E = S.spectrum(psi, "energy")
    kx = np.fft.fftfreq(16, 1 / 16) * (TWO_PI / L_QG)
    u = np.fft.ifft(1j * kx[None, :] * np.fft.fft(psi.values, axis=1), axis=1).real
    v = np.fft.ifft(1j * kx[:, None] * np.fft.fft(psi.values, axis=0), axis=0).real
    np.testing.assert_allclose(E.sum("k"), 0.5 * np.mean(u**2 + v**2), rtol=1e-12)
    # an agreeing L changes nothing; the same values on 2π have (L/2π)² times more energy
    np.testing.assert_array_equal(S.spectrum(psi, "energy", L=L_QG), E)
    E2pi = S.spectrum(psi.drop_vars(["y", "x"]), "energy", L=TWO_PI)
    np.testing.assert_allclose(E2pi.sum("k"), E.sum("k") * (L_QG / TWO_PI) ** 2, rtol=1e-12)


def test_a_single_mode_lands_in_its_shell_with_its_physical_wavenumber():
    n = 16
    x = _points(n, L_QG)
    f = _field(np.broadcast_to(np.cos(TWO_PI * 3 * x / L_QG), (n, n)).copy(), L_QG)
    P = S.spectrum(f, "power")
    assert int(P.argmax("k")) == 3
    np.testing.assert_allclose(P.sel(k=3), 0.5, rtol=1e-12)
    assert float(P.drop_sel(k=3).sum()) < 1e-20
    np.testing.assert_allclose(P["kappa"].sel(k=3), 3 * TWO_PI / L_QG, rtol=1e-15)
    assert P["kappa"].attrs["units"] == "rad m-1"
    # xtl's own grid: kappa is k itself, with the units of its coordinates ("1")
    g = _field(np.cos(3 * _points(n, TWO_PI))[None, :].repeat(n, 0), TWO_PI, units="1")
    np.testing.assert_array_equal(S.spectrum(g)["kappa"], np.arange(P.sizes["k"]))


def test_no_coordinates_and_no_L_is_refused_naming_L():
    f = xr.DataArray(np.ones((8, 8)), dims=("y", "x"))
    with pytest.raises(ValueError, match=r"assign evenly spaced coordinates y, x or pass L="):
        S.spectrum(f)
    with pytest.raises(ValueError, match=r"pass L="):
        S.transfer_spectrum(f, f)
    with pytest.raises(ValueError, match=r"pass L="):
        coarse_grain(_flow(16, TWO_PI).drop_vars(["y", "x"]), 8)
    P = S.spectrum(f, L=L_QG)  # with L it is accepted
    np.testing.assert_allclose(P["kappa"].values[1], TWO_PI / L_QG)


def test_coordinates_and_a_disagreeing_L_are_refused():
    f = _field(np.ones((8, 8)), L_QG)
    with pytest.raises(ValueError, match=r"L=.* disagrees with the domain length"):
        S.spectrum(f, L=TWO_PI)
    with pytest.raises(ValueError, match=r"disagrees"):
        coarse_grain(_flow(16, L_QG), 8, L=2 * L_QG)
    with pytest.raises(ValueError, match="L must be a finite number > 0"):
        S.spectrum(f, L=-1.0)
    S.spectrum(f, L=L_QG)  # agreeing: fine


def test_a_transposed_dataset_gives_the_same_spectrum():
    ds = _flow(16, L_QG, lead=(("time", 3),))
    a = S.spectrum(ds, "energy")
    b = S.spectrum(ds.transpose("y", "x", "time"), "energy")
    xr.testing.assert_allclose(a, b.transpose(*a.dims), rtol=1e-14)


# ----------------------------------------------------------------------------------------
# coarse-graining
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("filter", ["gaussian", "box"])
def test_coarse_grain_on_L_is_the_2pi_result_scaled(filter):
    two_pi = _flow(32, TWO_PI, lead=(("time", 2),))
    physical = two_pi.assign_coords(y=_points(32, L_QG), x=_points(32, L_QG))
    width = 0.4  # on the 2π domain; L/2π times that on L
    a = coarse_grain(two_pi, 16, filter, width=width)
    b = coarse_grain(physical, 16, filter, width=width * L_QG / TWO_PI)
    for v in ("psi", "omega"):
        np.testing.assert_allclose(b[v], a[v], rtol=1e-12, atol=1e-13 * float(abs(a[v]).max()))
    scale = (TWO_PI / L_QG) ** 2
    np.testing.assert_allclose(b.pi, a.pi * scale, rtol=1e-9,
                               atol=1e-10 * scale * float(abs(a.pi).max()))
    np.testing.assert_allclose(b.x, _points(16, L_QG))
    assert b.attrs["domain_length"] == L_QG
    np.testing.assert_allclose(b.attrs["filter_width"], width * L_QG / TWO_PI)
    # the default width is twice the LES spacing, in the units of the coordinates
    c = coarse_grain(physical, 16, filter)
    np.testing.assert_allclose(c.attrs["filter_width"], 2 * L_QG / 16)
    np.testing.assert_allclose(c.pi, coarse_grain(two_pi, 16, filter).pi * scale, rtol=1e-9,
                               atol=1e-10 * scale * float(abs(a.pi).max()))


def test_les_points_keep_the_origin():
    ds = _flow(16, L_QG)
    dx = L_QG / 16
    shifted = ds.assign_coords(y=ds.y + dx / 2, x=ds.x + dx / 2)  # cell centres
    les = coarse_grain(shifted, 8)
    np.testing.assert_allclose(les.x, dx / 2 + _points(8, L_QG))
    np.testing.assert_allclose(les.pi, coarse_grain(ds, 8).pi, rtol=1e-12)


def test_scalar_pair_matches_the_analytic_jacobian():
    """ψ = cos(κ1·x), q = cos(κ2·x) (q is not −∇²ψ): N(q, ψ) = u q_x + v q_y with
    u = ψ_y, v = −ψ_x is C sinθ1 sinθ2, C = κ1y κ2x − κ1x κ2y, and under an isotropic
    Gaussian filter Ĝ(κ) = exp(−|κ|²Δ²/24)

        Π_q = C/2 [(Ĝ(κ1−κ2) − Ĝ1Ĝ2) cos(θ1−θ2) − (Ĝ(κ1+κ2) − Ĝ1Ĝ2) cos(θ1+θ2)].
    """
    n, n_les, length, width = 32, 16, L_QG, 3 * L_QG / 16
    s = TWO_PI / length
    k1, k2 = np.array([1.0, 1.0]) * s, np.array([2.0, -1.0]) * s  # (kx, ky)
    x = _points(n, length)
    X, Y = np.meshgrid(x, x)  # (y, x)
    theta1, theta2 = k1[0] * X + k1[1] * Y, k2[0] * X + k2[1] * Y
    ds = xr.Dataset({"psi": (("y", "x"), np.cos(theta1)), "q": (("y", "x"), 3.0 * np.cos(theta2))},
                    coords={"y": x, "x": x})
    les = coarse_grain(ds, n_les, "gaussian", width=width, scalar="q")
    assert set(les.data_vars) == {"psi", "q", "pi_q"}
    assert les.pi_q.attrs["long_name"] == "subgrid-scale forcing of q"

    def G(k):
        return np.exp(-(k @ k) * width**2 / 24)

    C = 3.0 * (k1[1] * k2[0] - k1[0] * k2[1])
    xl = _points(n_les, length)
    Xl, Yl = np.meshgrid(xl, xl)
    t1, t2 = k1[0] * Xl + k1[1] * Yl, k2[0] * Xl + k2[1] * Yl
    g12 = G(k1) * G(k2)
    expected = 0.5 * C * ((G(k1 - k2) - g12) * np.cos(t1 - t2) - (G(k1 + k2) - g12) * np.cos(t1 + t2))
    assert np.abs(expected).max() > 1e-3 * abs(C)  # the test can fail
    np.testing.assert_allclose(les.pi_q.values, expected, rtol=0, atol=1e-12 * abs(C))
    np.testing.assert_allclose(les.q.values, 3.0 * G(k2) * np.cos(t2), atol=1e-12)
    np.testing.assert_allclose(sgs_term(ds, n_les, width=width, scalar="q"), les.pi_q)
    # already coarse data is refused by its SGS name
    with pytest.raises(ValueError, match="variable 'pi_q'"):
        coarse_grain(les.drop_attrs(), n_les, scalar="q")


def test_per_level_equals_each_level_alone():
    ds = _flow(16, L_QG, lead=(("lev", 2), ("member", 2)))
    ds = ds.rename(omega="q").transpose("member", "y", "lev", "x")
    les = coarse_grain(ds, 8, scalar="q")
    assert les.pi_q.dims == ("member", "lev", "y", "x")
    for i in range(2):
        alone = coarse_grain(ds.isel(lev=i), 8, scalar="q")
        np.testing.assert_allclose(les.pi_q.isel(lev=i), alone.pi_q.transpose(*les.pi_q.isel(lev=i).dims),
                                   rtol=1e-13, atol=1e-25)
        np.testing.assert_allclose(les.q.isel(lev=i), alone.q.transpose("member", "y", "x"))


def test_the_accessors_take_L():
    import xtl  # noqa: F401  (registers .tl)

    ds = _flow(16, L_QG).drop_vars(["y", "x"])
    with pytest.raises(ValueError, match="pass L="):
        ds.tl.spectrum("energy")
    E = ds.tl.spectrum("energy", L=L_QG)
    np.testing.assert_allclose(E, S.spectrum(_flow(16, L_QG), "energy"), rtol=1e-14)
    les = ds.tl.coarse_grain(8, L=L_QG)
    np.testing.assert_allclose(les.x, _points(8, L_QG))
