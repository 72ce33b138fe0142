"""Shared test configuration."""
import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
# FFTW wisdom of the test session (and of the processes it starts) in a folder of its own
if "XTL_CACHE_DIR" not in os.environ:
    os.environ["XTL_CACHE_DIR"] = tempfile.mkdtemp(prefix="xtl-test-cache-")
    atexit.register(shutil.rmtree, os.environ["XTL_CACHE_DIR"], True)


# --- model backend / training fixtures (tests/test_backends.py, test_training.py,
# test_explain.py). TensorFlow is imported only by the fixtures that need a model.
import numpy as _np
import pytest as _pytest
import xarray as _xr


def make_les(n=16, nt=48, *, seed=0, members=None, case="synthetic-base", pi_map="laplacian",
             kpeak=3.0):
    """A small synthetic LES Dataset with the LES schema (psi, omega, pi on (time, y, x)).

    ω̄ is a random smooth periodic field (spectrum peaked at ``kpeak``), ψ̄ solves
    ∇²ψ̄ = −ω̄ spectrally, and Π is a known local map of ω̄:
    ``"laplacian"``: 5-point periodic Laplacian of ω̄ (times h²);
    ``"laplacian+omega"``: that plus 0.5 ω̄ (a different "target flow").
    Dims are (time, y, x), or (member, time, y, x) with ``members``.
    """
    rng = _np.random.default_rng(seed)
    lead = (nt,) if members is None else (members, nt)
    k = _np.fft.fftfreq(n, 1.0 / n)
    kx, ky = _np.meshgrid(k, k)
    k2 = kx ** 2 + ky ** 2
    amp = _np.sqrt(k2) * _np.exp(-0.5 * (_np.sqrt(k2) / kpeak) ** 2)
    noise = rng.standard_normal(lead + (n, n)) + 1j * rng.standard_normal(lead + (n, n))
    omega = _np.real(_np.fft.ifft2(noise * amp))
    omega /= omega.std()
    k2s = _np.where(k2 == 0, 1.0, k2)
    psi = _np.real(_np.fft.ifft2(_np.fft.fft2(omega) / k2s))
    lap = (_np.roll(omega, 1, -1) + _np.roll(omega, -1, -1) + _np.roll(omega, 1, -2)
           + _np.roll(omega, -1, -2) - 4 * omega)
    pi = lap if pi_map == "laplacian" else lap + 0.5 * omega
    dims = ("time", "y", "x") if members is None else ("member", "time", "y", "x")
    x = _np.arange(n) * 2 * _np.pi / n
    coords = {"time": _np.arange(nt) * 0.1, "y": x, "x": x}
    if members is not None:
        coords["member"] = _np.arange(members)
    ds = _xr.Dataset(
        {
            "psi": (dims, psi.astype(_np.float32), {"long_name": "filtered streamfunction", "units": "1"}),
            "omega": (dims, omega.astype(_np.float32), {"long_name": "filtered vorticity", "units": "1"}),
            "pi": (dims, pi.astype(_np.float32), {"long_name": "SGS term", "units": "1"}),
        },
        coords=coords,
        attrs={"case_name": case},
    )
    return ds


#: A tiny network for fast tests: 3 conv layers, 4 channels, 3×3 kernels.
TINY_SPEC = dict(n_layers=3, channels=4, kernel_size=3, padding="periodic")


@_pytest.fixture(scope="session")
def les_base():
    """Synthetic base-flow LES Dataset (48 snapshots of 16²)."""
    return make_les(seed=0)


@_pytest.fixture(scope="session")
def les_target():
    """Synthetic target-flow LES Dataset (a different Π map)."""
    return make_les(seed=1, pi_map="laplacian+omega", case="synthetic-target")


@_pytest.fixture(scope="session")
def trained_model(les_base):
    """One small trained model per session (3 layers, 4 channels, 3 epochs)."""
    from xtl.nn.training import train

    return train(les_base, TINY_SPEC, epochs=3, batch_size=8, learning_rate=3e-3, seed=0,
                 progress=False)


def advective_term(grid, omega_hat):
    """N̂ = FFT[u ∂ω/∂x + v ∂ω/∂y] in the advective form (5 plain numpy FFTs), on the mask.

    An independent reference of the solver's 4-FFT Jacobian: ψ̂ = ω̂/k², u = ∂ψ/∂y,
    v = −∂ψ/∂x, products formed on the grid, the result multiplied by ``grid.mask``.
    """
    n = grid.n
    ky = _np.fft.fftfreq(n, 1.0 / n).round()[:, None]
    kx = _np.arange(n // 2 + 1)[None, :]
    k2 = kx**2 + ky**2
    psi = omega_hat / _np.where(k2 > 0, k2, 1) * (k2 > 0)

    def phys(spec):
        return _np.fft.irfft2(spec, s=(n, n))

    u, v = phys(1j * ky * psi), phys(-1j * kx * psi)
    wx, wy = phys(1j * kx * omega_hat), phys(1j * ky * omega_hat)
    return _np.fft.rfft2(u * wx + v * wy) * grid.mask


class InterruptingClosure:
    """A zero closure that raises KeyboardInterrupt at its ``at``-th call (a simulated Ctrl-C).

    Subtracting its zero Π leaves every bit of the run unchanged, so an interrupted run can
    be compared bit for bit with an uninterrupted one.
    """

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, psi, omega):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return _np.zeros_like(psi)
