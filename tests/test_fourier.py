"""The Fourier layer: FFTW wisdom shared by processes, FFTW's OpenMP threads, plans."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import xtl.physics.fourier as fourier
from xtl.physics.fourier import SpectralGrid

pytestmark = pytest.mark.skipif("pyfftw" not in fourier.available_fft_backends(),
                                reason="pyfftw is not installed")

_TRANSFORM = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    from xtl.physics.fourier import SpectralGrid

    n, out = int(sys.argv[1]), sys.argv[2]
    grid = SpectralGrid(n, fft="pyfftw", planner="FFTW_MEASURE")
    field = np.random.default_rng(0).standard_normal((n, n))
    spec = grid.rfft2(field)
    np.save(out, np.concatenate([spec.view(float).ravel(), grid.irfft2(spec).ravel()]))
    """
)


def _run(script, *args, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def test_processes_planning_at_once_share_one_plan(tmp_path):
    """Three processes plan the same transforms at the same time in an empty cache: one
    measures under the lock, the others load its wisdom; all round identically."""
    cache = tmp_path / "cache"
    env = {**os.environ, "XTL_CACHE_DIR": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", _TRANSFORM, "72", str(tmp_path / f"{i}.npy")],
                              env=env, stderr=subprocess.PIPE, text=True) for i in range(3)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    results = [np.load(tmp_path / f"{i}.npy") for i in range(3)]
    assert all(np.array_equal(results[0], r) for r in results[1:])
    files = sorted(f.name for f in cache.iterdir())
    wisdom = [f for f in files if f.endswith(".json")]
    assert len(wisdom) == 1 and not [f for f in files if f.endswith(".tmp")], files
    data = json.loads((cache / wisdom[0]).read_text())
    assert data["format"] == 1 and data["wisdom"][0].startswith("(fftw-3")
    # a later process plans from the file alone (FFTW_WISDOM_ONLY) and rounds the same way
    again = _run(_TRANSFORM, 72, tmp_path / "again.npy", env={"XTL_CACHE_DIR": str(cache)})
    assert again.returncode == 0, again.stderr
    assert np.array_equal(np.load(tmp_path / "again.npy"), results[0])
    assert json.loads((cache / wisdom[0]).read_text()) == data  # nothing new was measured


def test_an_unwritable_cache_falls_back_to_estimate_with_a_warning(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    script = _TRANSFORM + "\nprint('planned')\n"
    proc = _run(script, 40, tmp_path / "x.npy", env={"XTL_CACHE_DIR": str(blocker / "cache"),
                                                     "PYTHONWARNINGS": "always"})
    assert proc.returncode == 0, proc.stderr
    assert "FFTW_ESTIMATE" in proc.stderr and "XTL_CACHE_DIR" in proc.stderr
    field = np.random.default_rng(0).standard_normal((40, 40))
    values = np.load(tmp_path / "x.npy")
    np.testing.assert_allclose(values[-1600:].reshape(40, 40), field, atol=1e-13)


@pytest.mark.parametrize("content", ['{"wisdom": [1, 2]}', '[1, 2]', '{"wisdom": "abc"}',
                                     '{"wisdom": [' + '"x"' + ']', "\u00ff\u00fe"])
def test_a_wisdom_file_of_the_wrong_form_is_ignored_with_a_warning(tmp_path, content):
    """Wrong types, truncated JSON or non-UTF-8 bytes: the plan is still made (measured
    again), with one warning naming the file, and the transform is right to round-off."""
    cache = tmp_path / "cache"
    first = _run(_TRANSFORM, 40, tmp_path / "a.npy", env={"XTL_CACHE_DIR": str(cache)})
    assert first.returncode == 0, first.stderr
    (wisdom,) = [f for f in cache.iterdir() if f.suffix == ".json"]
    wisdom.write_bytes(content.encode("latin-1"))
    proc = _run(_TRANSFORM, 40, tmp_path / "b.npy",
                env={"XTL_CACHE_DIR": str(cache), "PYTHONWARNINGS": "always"})
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"ignoring unreadable FFTW wisdom '{wisdom}'" in proc.stderr
    # measured again: another FFTW algorithm may round otherwise
    np.testing.assert_allclose(np.load(tmp_path / "b.npy"), np.load(tmp_path / "a.npy"),
                               rtol=1e-12, atol=1e-10)


_THREADS = textwrap.dedent(
    """
    import numpy as np
    import xtl.physics.fourier as fourier

    grid = fourier.SpectralGrid(64, fft="pyfftw", threads=2)
    before = fourier.fftw_openmp_threads()
    grid.rfft2(np.ones((64, 64)))
    print(before, fourier.fftw_openmp_threads())
    """
)


def test_fftw_threads_are_not_capped_by_omp_num_threads():
    """OMP_NUM_THREADS=1 (as dask workers set it) would run a 2-thread plan on one core."""
    proc = _run(_THREADS, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    before, after = map(int, proc.stdout.split())
    assert before == 1 and after == 2


def test_single_field_plans_transform_batches_field_by_field():
    grid = SpectralGrid(32, fft="pyfftw")
    field = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    spec = grid.rfft2(field)
    assert spec.shape == (2, 3, 32, 17)
    np.testing.assert_allclose(spec, np.fft.rfft2(field), rtol=0, atol=1e-12)
    np.testing.assert_allclose(grid.irfft2(spec), field, rtol=0, atol=1e-14)


def test_pruned_forward_transform_is_exact_on_the_kept_columns():
    n = 96
    grid = SpectralGrid(n, fft="pyfftw")
    plan = grid.new_plan(prune=grid.kmax)
    field = np.random.default_rng(3).standard_normal((n, n))
    plan.real[...] = field
    pruned = plan.forward(pruned=True)[:, : grid.kmax + 1].copy()
    reference = np.fft.rfft2(field)
    np.testing.assert_allclose(pruned, reference[:, : grid.kmax + 1], rtol=0, atol=1e-11)
    assert not np.allclose(plan.spec[:, grid.kmax + 1:], reference[:, grid.kmax + 1:])


def test_pruned_inverse_transform_keeps_its_zero_columns():
    n = 96
    grid = SpectralGrid(n, fft="pyfftw")
    plan = grid.new_plan(prune=grid.kmax)
    assert not np.any(plan.spec_in)  # zero after planning
    rng = np.random.default_rng(4)
    for _ in range(2):  # twice: the zero columns must survive the first transform
        spec = np.fft.rfft2(rng.standard_normal((n, n))) * grid.mask
        plan.spec_in[:, : grid.kmax + 1] = spec[:, : grid.kmax + 1]
        field = plan.inverse(pruned=True) / n**2
        np.testing.assert_allclose(field, np.fft.irfft2(spec, s=(n, n)), rtol=0, atol=1e-14)
        assert not np.any(plan.spec_in[:, grid.kmax + 1:])


def test_bad_grid_arguments_are_named():
    with pytest.raises(ValueError, match="planner must be one of"):
        SpectralGrid(16, planner="FFTW_EXHAUSTIVE")
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        SpectralGrid(16, threads=0)
    with pytest.raises(ValueError, match="kernels must be"):
        fourier.resolve_kernels("cython")
    with pytest.raises(ValueError, match="filter must be one of"):
        fourier.transfer_function("lanczos", 1.0, 1.0, 0.5)


@pytest.mark.parametrize("fft", fourier.available_fft_backends())
def test_operators_on_an_analytic_field(fft):
    """ψ = sin x cos 2y: ω = 5ψ, u = ∂ψ/∂y, v = −∂ψ/∂x, and ∇·(u, v) = 0."""
    grid = SpectralGrid(32, fft=fft)
    x, y = grid.x[None, :], grid.y[:, None]
    psi = np.sin(x) * np.cos(2 * y)
    omega_hat = grid.rfft2(5 * psi)
    psi_hat = grid.streamfunction(omega_hat)
    np.testing.assert_allclose(grid.irfft2(psi_hat), psi, atol=1e-14)
    u_hat, v_hat = grid.velocity(psi_hat)
    np.testing.assert_allclose(grid.irfft2(u_hat), -2 * np.sin(x) * np.sin(2 * y), atol=1e-13)
    np.testing.assert_allclose(grid.irfft2(v_hat), -np.cos(x) * np.cos(2 * y), atol=1e-13)
    gx, gy = grid.gradient(psi_hat)
    np.testing.assert_allclose(grid.irfft2(gx), -grid.irfft2(v_hat), atol=1e-13)
    np.testing.assert_allclose(grid.irfft2(gy), grid.irfft2(u_hat), atol=1e-13)
    assert np.max(np.abs(grid.divergence(u_hat, v_hat))) < 1e-10
    assert grid.energy(omega_hat) == pytest.approx(0.5 * np.mean(psi * 5 * psi), rel=1e-12)
