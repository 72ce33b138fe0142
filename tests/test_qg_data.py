"""examples/qg_data.py: two-layer QG flows (pyqg-jax) as xarray Datasets and netCDF files."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("pyqg_jax")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def qg():
    spec = importlib.util.spec_from_file_location("qg_data", ROOT / "examples" / "qg_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["qg_data"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("qg_data", None)


TINY = dict(nx=16, members=2, spin_up=20 * 7200.0, snapshots=3, interval=2 * 7200.0, seed=3)


@pytest.fixture(scope="module")
def tiny(qg, tmp_path_factory):
    directory = tmp_path_factory.mktemp("runs")
    paths, run = qg.write_flow("base", qg.FLOWS["base"], directory, **TINY)
    return paths, run


def test_files_have_the_layout(qg, tiny):
    paths, run = tiny
    assert [p.relative_to(p.parents[1]).as_posix() for p in paths] == [
        "base/member_0.nc", "base/member_1.nc"]
    ds = xr.open_dataset(paths[0])
    assert ds.q.dims == ds.p.dims == ("time", "lev", "y", "x")
    np.testing.assert_array_equal(ds.psi.values, -ds.p.values)  # xtl's sign
    assert ds.q.shape == (3, 2, 16, 16) and ds.q.dtype == np.float64
    assert ds.lev.values.tolist() == [1, 2]
    # time in seconds, not decoded into timedeltas; snapshots every 2 steps after the spin-up
    assert ds.time.dtype == np.float64 and ds.time.attrs["units"] == "s"
    np.testing.assert_allclose(ds.time.values, 7200.0 * np.array([22, 24, 26]))
    model = run["model"]
    for name in ("x", "y"):
        c = ds[name].values
        dx = np.diff(c)
        np.testing.assert_allclose(dx, dx[0], rtol=1e-12)
        assert ds[name].attrs["units"] == "m"
        # pyqg's grid: cell centres, n·dx = L
        np.testing.assert_allclose(c.size * dx[0], float(model.L), rtol=1e-12)
    np.testing.assert_allclose(ds.x.values, np.asarray(model.x)[0], rtol=1e-12)
    np.testing.assert_allclose(ds.y.values, np.asarray(model.y)[:, 0], rtol=1e-12)
    assert ds.attrs["L"] == 1e6 and ds.attrs["beta"] == 1.5e-11 and ds.attrs["nx"] == 16
    assert ds.attrs["dt"] == 7200.0 and ds.attrs["pyqg_jax_version"]


def test_fields_are_finite_and_not_trivial(tiny):
    _, run = tiny
    for name in ("q", "p"):
        assert np.isfinite(run[name]).all()
        assert np.abs(run[name]).max() > 0
    # the two members differ (their own keys)
    assert not np.allclose(run["q"][0], run["q"][1])


def test_q_is_pyqgs_inversion_of_p(qg, tiny):
    """q̂₁ = −(κ² + F₁)p̂₁ + F₁p̂₂, q̂₂ = F₂p̂₁ − (κ² + F₂)p̂₂ from the file's own attributes."""
    paths, _ = tiny
    ds = xr.open_dataset(paths[1])
    assert qg.inversion_residual(ds) < 1e-12
    # the relation is not trivially satisfied: another rd breaks it
    wrong = ds.assign_attrs(rd=2 * ds.attrs["rd"])
    assert qg.inversion_residual(wrong) > 1e-3


def test_advection_sign_is_pyqgs(qg):
    """pyqg's tendency is −J(p, q) − U ∂q/∂x − Q_y ∂p/∂x (+ bottom drag): u = −∂p/∂y, v = ∂p/∂x."""
    import jax

    stepped = qg.make_model(16, **qg.FLOWS["base"])
    model = stepped.model
    state = stepped.create_initial_state(jax.random.key(0))
    for _ in range(5):
        state = stepped.step_model(state)
    full = stepped.get_full_state(state)
    q, p = np.asarray(full.q), np.asarray(full.p)
    L, n = float(model.L), 16
    # real-FFT derivatives, as pyqg (its Nyquist column is treated as irfft2 does)
    kx = 2 * np.pi * np.fft.rfftfreq(n, L / n)[None, :]
    ky = 2 * np.pi * np.fft.fftfreq(n, L / n)[:, None]

    def dx(f):
        return np.fft.irfft2(1j * kx * np.fft.rfft2(f), s=f.shape[-2:])

    def dy(f):
        return np.fft.irfft2(1j * ky * np.fft.rfft2(f), s=f.shape[-2:])

    u, v = -dy(p), dx(p)
    np.testing.assert_allclose(u, np.asarray(full.u), atol=1e-12 * np.abs(u).max())
    # flux form, as pyqg computes it: ∂x(uq) + ∂y(vq) = J(p, q) for a divergence-free u
    advection = dx(u * q) + dy(v * q)
    U = np.array([model.U1, model.U2])[:, None, None]
    Qy = np.array([float(model.Qy1), float(model.Qy2)])[:, None, None]
    expected = -(advection + U * dx(q) + Qy * dx(p))
    expected[1] += float(model.rek) * np.fft.irfft2((kx ** 2 + ky ** 2) * np.fft.rfft2(p[1]), s=(n, n))
    dqdt = np.asarray(full.dqdt)
    np.testing.assert_allclose(dqdt, expected, atol=1e-9 * np.abs(dqdt).max())
    # and the opposite sign of the Jacobian does not fit
    assert np.abs(dqdt - (expected + 2 * advection)).max() > 1e-3 * np.abs(dqdt).max()


def test_another_beta_gives_another_flow(qg, tiny):
    _, run = tiny
    same = qg.simulate(qg.FLOWS["base"], **TINY)
    np.testing.assert_array_equal(same["q"], run["q"])  # deterministic
    other = qg.simulate(dict(qg.FLOWS["base"], beta=0.5e-11), **TINY)
    assert np.isfinite(other["q"]).all()
    change = np.abs(other["q"] - run["q"]).max() / np.abs(run["q"]).max()
    assert change > 1e-3


def test_spectral_difference_is_zero_for_one_flow_and_parseval_holds(qg, tiny):
    paths, _ = tiny
    ds = xr.open_dataset(paths[0])
    spec = qg.isotropic_spectrum(ds.isel(time=[0]))
    # all shells up to the corners would hold the whole mean square; shells 1 … n/2 hold most
    total = (ds.q.isel(time=0) ** 2).mean(("x", "y")).values
    assert (spec.sum("k").values <= total * (1 + 1e-12)).all()
    assert (spec.sum("k").values > 0.5 * total).all()
    assert float(qg.spectral_difference(ds, ds).max()) == 0.0


# ------------------------------------------------------- the example, end to end
def _shrunk(text: str) -> str:
    """examples/qg.toml with a tiny network, 2 epochs and 2 seeds (each change checked)."""
    import re

    for pattern, value in ((r"n_layers = 9", "n_layers = 3"), (r"channels = 24", "channels = 4"),
                           (r"kernel_size = 5", "kernel_size = 3"), (r"epochs = 40", "epochs = 2"),
                           (r"seeds = 5", "seeds = 2"), (r"epochs = 4\b", "epochs = 1")):
        text, n = re.subn(pattern, value, text)
        assert n >= 1, f"examples/qg.toml no longer has {pattern!r}"
    return text


@pytest.mark.slow  # 51 s: the QG pieces have their own fast tests (test_variables, above)
def test_the_qg_example_runs_end_to_end(qg, tmp_path):
    """`xtl run` on examples/qg.toml (shrunk) with tiny QG flows made by qg_data: the
    files are coarse-grained to q and pi_q; a 2-in/2-out network is trained, swept,
    explained and recommended; no a posteriori stage (xtl's LES is 2D)."""
    import os
    import subprocess

    import xtl
    from xtl.nn.spec import Variables

    tiny = dict(nx=32, members=2, spin_up=40 * 7200.0, snapshots=10, interval=2 * 7200.0)
    for name in ("base", "beta"):
        qg.write_flow(name, qg.FLOWS[name], tmp_path / "runs", seed=1, **tiny)
    (tmp_path / "qg.toml").write_text(_shrunk((ROOT / "examples" / "qg.toml").read_text()))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}

    def xtl_run(*args):
        return subprocess.run([sys.executable, "-m", "xtl.cli", "run", "qg.toml", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)

    dry = xtl_run("--dry-run")  # the estimate counts the files' samples; no LES stage
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "sweep-beta" in dry.stdout and "aposteriori" not in dry.stdout
    from xtl.experiment.config import TEST_FRACTION

    n_fit = int(int(2 * 10 * (1 - TEST_FRACTION)) * 0.9)  # 2 members x 10 times, held out
    assert f"{n_fit} samples x 2 epochs" in dry.stdout
    run = xtl_run("--out", "out")
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out"
    les = xr.open_dataset(out / "data" / "base" / "les.nc")
    assert set(les.data_vars) == {"q", "pi_q"} and les.pi_q.sizes["lev"] == 2
    assert les.sizes["x"] == 16 and les.attrs["domain_length"] == pytest.approx(1e6)
    model = xtl.load_model(out / "models" / "base.keras")
    assert model.variables == Variables(("q",), ("pi_q",), "lev")
    sweep = xr.open_dataset(out / "results" / "sweep-beta.nc")
    assert sweep.layer.values.tolist() == [1, 2, 3] and sweep.sizes["seed"] == 2
    assert np.isfinite(sweep.cc).all()
    explain = xr.open_dataset(out / "results" / "explain-beta.nc")
    assert explain.output.values.tolist() == ["pi_q[1]", "pi_q[2]"]
    assert explain.variable.values.tolist() == ["q[1]", "q[2]"]
    flows = xr.open_dataset(out / "results" / "flows.nc")
    assert float(flows.largest_decades.max()) > 0
    assert not list((out / "results").glob("aposteriori*"))
    assert (out / "report.html").exists()
