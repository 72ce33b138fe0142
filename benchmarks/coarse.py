"""Benchmark: coarse-graining 1024² DNS snapshots to 128² (ψ̄, ω̄ and Π), against the FFTs
the coarse-graining has to compute.

    python benchmarks/coarse.py [--n 1024] [--n-les 128] [--repeats 7] [--snapshots 16]

Per snapshot, Π needs on the DNS grid 2 forward rfft2 (ψ, ω) and the 4-FFT Jacobian
(2 inverse for u, v and 2 forward for uv, v² − u², pruned to the kept columns); on the
LES grid 3 inverse (ψ̄, ω̄, Π) and, for the alias-free N(ω̄, ψ̄), the Jacobian's 2 inverse
and 2 forward on the 3/2-padded grid. "FFT time" is the median time of exactly those
transforms (the same planned pyfftw/numpy objects), with nothing else. Times are
medians of ``--repeats`` runs measured in this one process; the goal is
coarse-graining time / FFT time <= 1.5.

Also reported: snapshots per second through the xarray path, ``coarse_grain`` on a
dask-chunked Dataset (one snapshot per chunk), computed with the synchronous scheduler
and with 2 threads.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from _timing import median_ms


def _median_time(func, repeats):
    """Median seconds of one call of ``func``."""
    return median_ms(func, calls=1, repeats=repeats, warmup=0) / 1e3


def _field(n, seed):
    """A random ω with a k⁻³-like enstrophy-cascade spectrum, and its ψ."""
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(n, 1.0 / n)[:, None]
    kx = np.arange(n // 2 + 1)[None, :]
    k2 = kx**2 + ky**2
    amp = np.where(k2 > 0, (k2 + 1.0) ** -0.75, 0.0)
    spec = amp * np.exp(2j * np.pi * rng.uniform(size=k2.shape))
    omega = np.fft.irfft2(spec, s=(n, n))
    omega /= omega.std()
    psi = np.fft.irfft2(np.fft.rfft2(omega) / np.where(k2 > 0, k2, 1), s=(n, n))
    return psi, omega


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--n-les", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--snapshots", type=int, default=16)
    args = parser.parse_args(argv)

    import xarray as xr

    from xtl.data.coarse import CoarseGraining, coarse_grain

    n, n_les = args.n, args.n_les
    coarsener = CoarseGraining(n_les).kernel(n)
    psi, omega = _field(n, 0)
    coarsener.physical(psi, omega)  # plans, caches

    t_kernel = _median_time(lambda: coarsener.physical(psi, omega), args.repeats)

    p2 = coarsener._plan2
    dns = (coarsener._jacobian._a, coarsener._jacobian._b)
    padded = (coarsener._padded_jacobian._a, coarsener._padded_jacobian._b)
    les_spec3 = np.zeros((3, n_les, n_les // 2 + 1), complex)

    def ffts():
        p2.forward()
        for plan in dns + padded:
            plan.inverse(pruned=True)
            plan.forward(pruned=True)
        np.fft.irfft2(les_spec3, s=(n_les, n_les))

    t_fft = _median_time(ffts, args.repeats)

    snaps = args.snapshots
    x = np.arange(n) * 2 * np.pi / n
    data = np.stack([_field(n, s) for s in range(snaps)])  # (snap, 2, n, n)
    ds = xr.Dataset(
        {"psi": (("time", "y", "x"), data[:, 0]), "omega": (("time", "y", "x"), data[:, 1])},
        coords={"time": np.arange(snaps, dtype=float), "x": x, "y": x},
    ).chunk({"time": 1})
    lazy = coarse_grain(ds, n_les)
    lazy.compute(scheduler="synchronous")  # warm: the per-thread kernel, its plans
    t_sync = _median_time(lambda: lazy.compute(scheduler="synchronous"), max(3, args.repeats // 2))
    t_threads = _median_time(
        lambda: lazy.compute(scheduler="threads", num_workers=2), max(3, args.repeats // 2)
    )

    print(f"coarse-graining {n}² -> {n_les}² (psi, omega, pi), gaussian filter, "
          f"FFT backend {coarsener.grid.fft}, 1 FFTW thread")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          "(shared with other jobs: timings are noisy)")
    print(f"  kernel, one snapshot:           {t_kernel * 1e3:8.1f} ms  "
          f"({1 / t_kernel:6.2f} snapshots/s)   median of {args.repeats}")
    print(f"  its FFTs alone:                 {t_fft * 1e3:8.1f} ms   median of {args.repeats}")
    print(f"  ratio kernel / FFT time:        {t_kernel / t_fft:8.2f}   (goal <= 1.5)")
    print(f"  coarse_grain (dask, 1 thread):  {snaps / t_sync:8.2f} snapshots/s "
          f"({snaps} snapshots, one per chunk)")
    print(f"  coarse_grain (dask, 2 threads): {snaps / t_threads:8.2f} snapshots/s")
    print(f"  ratio dask (1 thread) / FFT:    {t_sync / (snaps * t_fft):8.2f}")
    return 0


if __name__ == "__main__":
    with np.errstate(all="ignore"):
        raise SystemExit(main())
