"""What a time step chosen from a target CFL number costs in accuracy, and saves in time.

Runs a small preset (default small-base, 256², dt = 5e-4) from one seed with its own dt
and with ``cfl_target`` (the step chosen from the flow after the spin-up), coarse-graining
on the fly to its LES grid and keeping the DNS snapshots; and the preset's dt with a
second seed, whose differences from the first are the sampling noise of the statistics.
For each run it prints the wall time of the whole run and of the part after the spin-up,
the chosen dt and CFL, and against the preset-dt run of the same seed: the RMSE of log10
of the time-mean energy and enstrophy spectra (resolved shells 1..kmax) and of the Π
power spectrum, and the relative differences of Π's standard deviation and kurtosis.

Usage: python benchmarks/dt_from_cfl.py [--case small-base] [--targets 0.22 0.26 0.3]
       [--spin-up 20] [--t-end 30] [--save-interval 0.5]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import xarray as xr

import xtl
from xtl.data.metrics import log_spectrum_rmse


def _run(case, folder, name, seed, spin_up, t_end, save, cfl_target=None):
    start = time.perf_counter()
    ds = xtl.simulate(case, t_end=t_end, save_interval=save, spin_up=spin_up, seed=seed,
                      path=os.path.join(folder, f"{name}.nc"), les=True, dns_every=1,
                      cfl_target=cfl_target, progress=False)
    wall = time.perf_counter() - start
    dns = xr.open_dataset(os.path.join(folder, f"{name}.dns.nc"))
    return ds.load(), dns.load(), wall


def _max_cfl(dns, dt):
    """dt·max(|u| + |v|)/dx over the DNS snapshots (u = ∂ψ/∂y, v = −∂ψ/∂x, spectrally)."""
    n = dns.sizes["x"]
    k = np.fft.fftfreq(n, 1.0 / n)
    psi_hat = np.fft.fft2(dns.psi.values)
    u = np.fft.ifft2(1j * k[:, None] * psi_hat).real
    v = np.fft.ifft2(-1j * k[None, :] * psi_hat).real
    return float(dt * (np.abs(u).max() + np.abs(v).max()) / (2 * np.pi / n))


def _stats(les, dns, kmax):
    out = {
        "E": xtl.spectrum(dns, kind="energy").mean("time"),
        "Z": xtl.spectrum(dns, kind="enstrophy").mean("time"),
        "P": xtl.spectrum(les.pi).mean("time"),
    }
    pi = les.pi.values
    out["std"] = float(pi.std())
    centred = pi - pi.mean()
    out["kurt"] = float(np.mean(centred**4) / np.mean(centred**2) ** 2)
    out["kmax"] = kmax
    return out


def _compare(a, b):
    k_dns, k_les = a["kmax"]
    return {
        "E": float(log_spectrum_rmse(a["E"], b["E"], kmax=k_dns)),
        "Z": float(log_spectrum_rmse(a["Z"], b["Z"], kmax=k_dns)),
        "P": float(log_spectrum_rmse(a["P"], b["P"], kmax=k_les)),
        "std": a["std"] / b["std"] - 1,
        "kurt": a["kurt"] / b["kurt"] - 1,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="small-base")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.22, 0.26, 0.3])
    parser.add_argument("--spin-up", type=float, default=20.0)
    parser.add_argument("--t-end", type=float, default=30.0)
    parser.add_argument("--save-interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    case = xtl.get_case(args.case)
    kmax = ((case.n - 1) // 3, case.n_les // 2 - 1)
    load = os.getloadavg()
    print(f"{case.name}: n={case.n}, dt={case.dt}, spin-up {args.spin_up}, t_end {args.t_end}, "
          f"snapshots every {args.save_interval}; load average {load[0]:.2f}")
    kw = dict(spin_up=args.spin_up, t_end=args.t_end, save=args.save_interval)
    post = (args.t_end - args.spin_up) / args.t_end
    xtl.simulate(case, t_end=20 * case.dt, save_interval=10 * case.dt, progress=False)  # warm-up
    with tempfile.TemporaryDirectory(dir=os.environ.get("XTL_BENCH_DIR")) as folder:
        runs = {}
        les, dns, wall = _run(case, folder, "ref", 0, **kw)
        runs["dt=case, seed 0"] = (_stats(les, dns, kmax), wall, case.dt, dns.attrs,
                                   _max_cfl(dns, case.dt))
        les, dns, wall = _run(case, folder, "noise", 1, **kw)
        runs["dt=case, seed 1 (noise)"] = (_stats(les, dns, kmax), wall, case.dt, dns.attrs,
                                           _max_cfl(dns, case.dt))
        for target in args.targets:
            try:
                les, dns, wall = _run(case, folder, f"cfl{target}", 0, cfl_target=target, **kw)
            except xtl.DivergenceError as exc:
                print(f"cfl_target={target}: {exc}")
                continue
            dt = les.attrs["dt_after_spin_up"]
            runs[f"cfl_target={target}, seed 0"] = (_stats(les, dns, kmax), wall, dt, les.attrs,
                                                    _max_cfl(dns, dt))
    ref, ref_wall = runs["dt=case, seed 0"][0], runs["dt=case, seed 0"][1]
    print("CFL: at the end of the spin-up (where the step is chosen); max CFL: over the "
          "snapshots after it, at the step used there")
    print(f"\n{'run':<26} {'dt after spin-up':>16} {'CFL':>6} {'max CFL':>7} {'wall s':>7} {'post-spin s':>11} "
          f"{'E rmse':>7} {'Z rmse':>7} {'Π spec':>7} {'Π std':>7} {'Π kurt':>7}")
    for name, (stats, wall, dt, attrs, max_cfl) in runs.items():
        cfl = attrs.get("cfl_at_spin_up", float("nan"))
        d = _compare(stats, ref)
        # the post-spin-up part of the wall time: the spin-up costs the same in every run
        post_wall = wall - ref_wall * (1 - post)
        print(f"{name:<26} {dt:16.3e} {cfl:6.3f} {max_cfl:7.3f} {wall:7.1f} {post_wall:11.1f} "
              f"{d['E']:7.4f} {d['Z']:7.4f} {d['P']:7.4f} {d['std']:+7.3f} {d['kurt']:+7.3f}")
    print("\nRMSE: of log10 spectra (resolved shells); Π std/kurt: relative differences; all "
          "against the dt=case run of seed 0. The seed-1 row is the sampling noise. post-spin s: "
          "the wall time less the spin-up's share of the reference run's.")


if __name__ == "__main__":
    main()
