"""Two-layer quasi-geostrophic (QG) flows as xarray data: a base flow and target flows.

Runs the two-layer QG model of ``pyqg-jax`` (``pip install xtl[qg]``) for each flow,
spins it up, and writes snapshots of the potential vorticity ``q`` and the streamfunction
``p`` (pyqg's names) as netCDF files, one per ensemble member::

    runs/<flow>/member_<i>.nc      q, p, psi = -p on (time, lev, y, x); x, y in m; time in s

These are the "DNS" that ``xtl.coarse_grain(ds, n_les, scalar="q", streamfunction="psi")``
filters to LES data (``psi = -p`` is the streamfunction in xtl's sign). Usage::

    python examples/qg_data.py                      # base + beta, 3 members each: ~2 min on 2 cores
    python examples/qg_data.py --flows base --members 2 --snapshots 50
    python examples/qg_data.py --nx 128 --directory runs128

The module can be imported (``from qg_data import simulate, to_dataset, ...``); nothing
runs on import.

Conventions (pyqg's): ``q`` is the PV anomaly of each layer and ``p`` its streamfunction,
with velocities ``u = −∂p/∂y``, ``v = ∂p/∂x`` and

    ∂q/∂t + J(p, q) + (U_i ∂q/∂x + Q_y,i ∂p/∂x) = −δ_i2 r_ek ∇²p + (filter),
    q̂_1 = −(κ² + F_1) p̂_1 + F_1 p̂_2,   q̂_2 = F_2 p̂_1 − (κ² + F_2) p̂_2,

``J(a, b) = ∂a/∂x ∂b/∂y − ∂a/∂y ∂b/∂x``, ``F_1 = rd⁻²/(1 + δ)``, ``F_2 = δ F_1``,
``Q_y,1 = β + F_1 (U_1 − U_2)``, ``Q_y,2 = β − F_2 (U_1 − U_2)``. xtl's velocity is
``u = ∂ψ/∂y``, ``v = −∂ψ/∂x`` (docs/conventions.md), so pyqg's ``p`` is ``−ψ`` in xtl's
convention (see docs/qg.md).
"""
from __future__ import annotations

import argparse
import time as _time
from pathlib import Path

import numpy as np
import xarray as xr

#: pyqg's default two-layer parameters (its "eddy" configuration), the base flow.
BASE = dict(L=1.0e6, beta=1.5e-11, rd=15000.0, delta=0.25, H1=500.0, U1=0.025, U2=0.0,
            rek=5.787e-7, filterfac=23.6, g=9.81)

#: The flows: the base flow and target flows that differ from it in one parameter
#: (the planetary vorticity gradient β or the deformation radius rd).
FLOWS = dict(
    base=dict(BASE),
    beta=dict(BASE, beta=0.5e-11),
    rd=dict(BASE, rd=25000.0),
)

#: Spin-up (years) per flow: the kinetic energy of every member has levelled off by then
#: at 64² (rd = 25 km grows from pyqg's small initial PV more slowly).
SPIN_UP = dict(base=5.0, beta=5.0, rd=10.0)

#: Time step (s), pyqg's default.
DT = 7200.0

#: Seconds in a day and a (365-day) year.
DAY = 86400.0
YEAR = 365.0 * DAY


def make_model(nx: int = 64, dt: float = DT, **parameters):
    """A pyqg-jax two-layer QG model stepped by third-order Adams–Bashforth.

    Enables JAX's 64-bit mode (pyqg-jax needs it for its double-precision inversion).

    Parameters
    ----------
    nx : int, optional
        Grid points per side (``ny = nx``, square domain).
    dt : float, optional
        Time step in seconds.
    **parameters
        Keyword arguments of ``pyqg_jax.qg_model.QGModel`` (``L``, ``beta``, ``rd``,
        ``delta``, ``H1``, ``U1``, ``U2``, ``rek``, ``filterfac``, ``g``); missing ones are
        pyqg's defaults.

    Returns
    -------
    pyqg_jax.steppers.SteppedModel
        The model (``.model`` is the ``QGModel``) with its stepper.
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import pyqg_jax

    model = pyqg_jax.qg_model.QGModel(nx=nx, precision=pyqg_jax.state.Precision.DOUBLE,
                                      **parameters)
    return pyqg_jax.steppers.SteppedModel(model, pyqg_jax.steppers.AB3Stepper(dt=dt))


def simulate(parameters: dict, *, nx: int = 64, dt: float = DT, members: int = 3,
             spin_up: float = 5 * YEAR, snapshots: int = 300, interval: float = 10 * DAY,
             seed: int = 0, ke_records: int = 40) -> dict:
    """Spin up ``members`` independent runs of one flow and record snapshots of q and p.

    The members are stepped together (``jax.vmap``), each from pyqg's random initial
    PV (a small perturbation of the upper layer, its mean removed) with its own key.

    Parameters
    ----------
    parameters : dict
        ``QGModel`` parameters of the flow (e.g. ``FLOWS["base"]``).
    nx : int, optional
        Grid points per side.
    dt : float, optional
        Time step (s).
    members : int, optional
        Number of ensemble members.
    spin_up : float, optional
        Spin-up time (s) before the first snapshot; rounded to whole steps.
    snapshots : int, optional
        Number of snapshots per member.
    interval : float, optional
        Time between snapshots (s); rounded to whole steps (at least one).
    seed : int, optional
        Seed of the members' keys (member ``i`` uses key ``fold_in(key(seed), i)``).
    ke_records : int, optional
        Number of records of the kinetic energy during the spin-up.

    Returns
    -------
    dict
        ``q``, ``p``: float64 arrays ``(members, snapshots, 2, nx, nx)``; ``time``: the
        snapshot times (s); ``spin_up_time``, ``spin_up_ke``: the kinetic energy (m² s⁻²,
        pyqg's layer-weighted mean) of each member during the spin-up, ``(members,
        ke_records)``, and ``ke``: during the snapshots, ``(members, snapshots)``;
        ``model``: the ``QGModel``; ``dt``; ``seconds``: the wall time.
    """
    import jax
    import jax.numpy as jnp
    from pyqg_jax.diagnostics import total_ke

    stepped = make_model(nx, dt, **parameters)
    model, grid = stepped.model, stepped.model.get_grid()
    spin_steps = max(int(round(spin_up / dt)), 0)
    per_record = max(spin_steps // max(ke_records, 1), 1)
    records, rest = (spin_steps // per_record, spin_steps % per_record) if spin_steps else (0, 0)
    every = max(int(round(interval / dt)), 1)

    def initial(key):
        state = model.create_initial_state(key)
        q = state.q - jnp.mean(state.q, axis=(-1, -2), keepdims=True)
        return stepped.initialize_stepper_state(state.update(q=q))

    def steps(state, n):
        return jax.lax.fori_loop(0, n, lambda _, s: stepped.step_model(s), state)

    def fields(state):
        full = stepped.get_full_state(state)
        return full.q, full.p, total_ke(full, grid)

    def run_member(key):
        state = initial(key)
        state = steps(state, rest)

        def spin(s, _):
            s = steps(s, per_record)
            return s, fields(s)[2]

        state, spin_ke = jax.lax.scan(spin, state, None, length=records)

        def record(s, _):
            s = steps(s, every)
            return s, fields(s)

        _, (q, p, ke) = jax.lax.scan(record, state, None, length=snapshots)
        return q, p, ke, spin_ke

    keys = jnp.stack([jax.random.fold_in(jax.random.key(seed), i) for i in range(members)])
    start = _time.perf_counter()
    q, p, ke, spin_ke = jax.jit(jax.vmap(run_member))(keys)
    q.block_until_ready()
    seconds = _time.perf_counter() - start
    t0 = (rest + records * per_record) * dt
    return dict(q=np.asarray(q), p=np.asarray(p), ke=np.asarray(ke),
                time=t0 + dt * every * np.arange(1, snapshots + 1),
                spin_up_time=(rest + per_record * np.arange(1, records + 1)) * dt,
                spin_up_ke=np.asarray(spin_ke).reshape(members, records),
                model=model, dt=dt, seconds=seconds)


def to_dataset(q, p, time, model, *, dt: float = DT, flow: str = "", member: int | None = None,
               seed: int | None = None, dtype="float64") -> xr.Dataset:
    """The xarray Dataset of one member's snapshots.

    Parameters
    ----------
    q, p : array_like
        PV and streamfunction, ``(time, 2, nx, nx)`` (pyqg's ``(lev, y, x)`` order).
    time : array_like
        Snapshot times (s).
    model : pyqg_jax.qg_model.QGModel
        The model that made them (its grid and parameters go into the coordinates and
        attributes).
    dt : float, optional
        The time step (s), recorded in the attributes.
    flow : str, optional
        Name of the flow, recorded in the attributes.
    member, seed : int, optional
        Member index and seed, recorded in the attributes.
    dtype : str, optional
        ``"float64"`` (the model's precision) or ``"float32"`` for ``q`` and ``p``.

    Returns
    -------
    xarray.Dataset
        ``q`` (s⁻¹), ``p`` and ``psi = −p`` (m² s⁻¹, pyqg's and xtl's sign of the
        streamfunction) on ``(time, lev, y, x)``; coordinates ``x``, ``y``
        (m, pyqg's cell centres ``(i + ½) L / nx``), ``lev`` = [1, 2] (upper, lower layer),
        ``time`` (s).
    """
    import pyqg_jax

    nx = model.nx
    dx = model.L / nx
    x = (np.arange(nx) + 0.5) * dx
    y = (np.arange(model.ny) + 0.5) * (model.W / model.ny)
    coords = dict(
        time=("time", np.asarray(time, dtype=float), {"long_name": "model time", "units": "s"}),
        lev=("lev", np.array([1, 2], dtype=np.int32),
             {"long_name": "layer (1 = upper, 2 = lower)", "units": "1"}),
        y=("y", y, {"long_name": "northward distance", "units": "m", "axis": "Y"}),
        x=("x", x, {"long_name": "eastward distance", "units": "m", "axis": "X"}),
    )
    dims = ("time", "lev", "y", "x")
    data = dict(
        q=(dims, np.asarray(q, dtype=dtype),
           {"long_name": "potential vorticity anomaly", "units": "s-1"}),
        p=(dims, np.asarray(p, dtype=dtype),
           {"long_name": "streamfunction (pyqg sign: u = -dp/dy, v = dp/dx)", "units": "m2 s-1"}),        psi=(dims, -np.asarray(p, dtype=dtype),
             {"long_name": "streamfunction in xtl's sign (psi = -p: u = dpsi/dy, "
                           "v = -dpsi/dx)", "units": "m2 s-1"}),
    )
    names = ("L", "W", "beta", "rd", "delta", "H1", "U1", "U2", "rek", "filterfac", "g")
    attrs = {name: float(getattr(model, name)) for name in names}
    attrs.update(nx=int(nx), ny=int(model.ny), dt=float(dt), F1=float(model.F1),
                 F2=float(model.F2), model="pyqg_jax.qg_model.QGModel (two-layer QG)",
                 pyqg_jax_version=pyqg_jax.__version__, flow=flow,
                 title=f"two-layer QG flow {flow!r}".strip(),
                 equations="dq/dt + J(p, q) + U dq/dx + Qy dp/dx = friction (layer 2) + filter; "
                           "u = -dp/dy, v = dp/dx, J(a, b) = a_x b_y - a_y b_x")
    if member is not None:
        attrs["member"] = int(member)
    if seed is not None:
        attrs["seed"] = int(seed)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def write_flow(name: str, parameters: dict, directory="runs", *, dtype="float64",
               **options) -> tuple[list[Path], dict]:
    """Simulate one flow and write ``<directory>/<name>/member_<i>.nc``.

    Parameters
    ----------
    name : str
        The flow's name (its folder).
    parameters : dict
        ``QGModel`` parameters of the flow.
    directory : str or Path, optional
        Folder of the flows.
    dtype : str, optional
        Precision written (``"float64"`` or ``"float32"``).
    **options
        Arguments of :func:`simulate` (``nx``, ``dt``, ``members``, ``spin_up``,
        ``snapshots``, ``interval``, ``seed``).

    Returns
    -------
    tuple
        The files written, and the result of :func:`simulate`.
    """
    run = simulate(parameters, **options)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(run["q"].shape[0]):
        ds = to_dataset(run["q"][i], run["p"][i], run["time"], run["model"], dt=run["dt"],
                        flow=name, member=i, seed=options.get("seed", 0), dtype=dtype)
        path = folder / f"member_{i}.nc"
        ds.to_netcdf(path)
        paths.append(path)
    return paths, run


def inversion_residual(ds: xr.Dataset) -> float:
    """Largest relative misfit of pyqg's PV inversion, from the Dataset's own attributes.

    Computes q̂ from p̂ as ``q̂_1 = −(κ² + F_1) p̂_1 + F_1 p̂_2``,
    ``q̂_2 = F_2 p̂_1 − (κ² + F_2) p̂_2`` (κ in rad m⁻¹ from ``L``, ``nx``) and compares it
    with ``q``.

    Parameters
    ----------
    ds : xarray.Dataset
        A Dataset of :func:`to_dataset`.

    Returns
    -------
    float
        ``max |q − q(p)| / max |q|``.
    """
    F1 = ds.attrs["rd"] ** -2 / (1 + ds.attrs["delta"])
    F2 = ds.attrs["delta"] * F1
    nx, ny = ds.sizes["x"], ds.sizes["y"]
    k = 2 * np.pi * np.fft.fftfreq(nx, ds.attrs["L"] / nx)
    l = 2 * np.pi * np.fft.fftfreq(ny, ds.attrs["W"] / ny)
    k2 = l[:, None] ** 2 + k[None, :] ** 2
    ph = np.fft.fft2(ds.p.transpose("time", "lev", "y", "x").values.astype(float))
    q1 = -(k2 + F1) * ph[:, 0] + F1 * ph[:, 1]
    q2 = F2 * ph[:, 0] - (k2 + F2) * ph[:, 1]
    qp = np.real(np.fft.ifft2(np.stack([q1, q2], axis=1)))
    q = ds.q.transpose("time", "lev", "y", "x").values
    return float(np.max(np.abs(q - qp)) / np.max(np.abs(q)))


def isotropic_spectrum(ds: xr.Dataset, name: str = "q") -> xr.DataArray:
    """Time-mean isotropic power spectrum of a variable, per level.

    Shells of integer wavenumber index ``round(|k| L / 2π)``; the sum over shells is the
    spatial mean square (Parseval).

    Parameters
    ----------
    ds : xarray.Dataset
        Snapshots on ``(time, lev, y, x)`` (DNS or coarse-grained).
    name : str, optional
        The variable.

    Returns
    -------
    xarray.DataArray
        ``(lev, k)``, ``k`` the shell index (``k · 2π/L`` in rad m⁻¹), shells 1 … n/2.
    """
    field = ds[name].transpose(..., "lev", "y", "x").values.astype(float)
    ny, nx = field.shape[-2:]
    power = np.abs(np.fft.fft2(field)) ** 2 / (nx * ny) ** 2
    lead = tuple(range(power.ndim - 3))
    power = power.mean(axis=lead) if lead else power
    kx = np.fft.fftfreq(nx, 1.0 / nx)
    ky = np.fft.fftfreq(ny, 1.0 / ny)
    shell = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(int).ravel()
    kmax = min(nx, ny) // 2
    spec = np.stack([np.bincount(shell, level.ravel(), minlength=kmax + 1)[1:kmax + 1]
                     for level in power])
    return xr.DataArray(spec, dims=("lev", "k"),
                        coords={"lev": ds["lev"].values, "k": np.arange(1, kmax + 1)},
                        name=f"{name}_spectrum")


def spectral_difference(base: xr.Dataset, target: xr.Dataset, name: str = "q",
                        n_les: int | None = None) -> xr.DataArray:
    """How far apart two flows' spectra are: max over shells of |log10(S_target / S_base)|.

    Parameters
    ----------
    base, target : xarray.Dataset
        Snapshots of the two flows on the same grid.
    name : str, optional
        The variable.
    n_les : int, optional
        Only the shells ``1..n_les/2`` that the flows sharply truncated to ``n_les``
        points a side keep (a stand-in for the spectra of coarse-grained data);
        default every shell.

    Returns
    -------
    xarray.DataArray
        Per level, in decades.
    """
    ratio = np.log10(isotropic_spectrum(target, name) / isotropic_spectrum(base, name))
    if n_les is not None:
        ratio = ratio.sel(k=slice(1, n_les // 2))
    return abs(ratio).max("k")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Two-layer QG flows (pyqg-jax) as netCDF: runs/<flow>/member_<i>.nc")
    parser.add_argument("--flows", nargs="+", default=["base", "beta"], choices=sorted(FLOWS),
                        help="flows to simulate (default: base beta)")
    parser.add_argument("--directory", default="runs", help="output folder (default: runs)")
    parser.add_argument("--nx", type=int, default=64, help="grid points a side (default: 64)")
    parser.add_argument("--dt", type=float, default=DT, help="time step in s (default: 7200)")
    parser.add_argument("--members", type=int, default=3, help="members per flow (default: 3)")
    parser.add_argument("--spin-up", type=float, default=None,
                        help="spin-up in years (default: SPIN_UP[flow], 5 for base and beta)")
    parser.add_argument("--snapshots", type=int, default=300,
                        help="snapshots per member (default: 300)")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="days between snapshots (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--float32", action="store_true", help="write float32 (default float64)")
    parser.add_argument("--n-les", type=int, default=16,
                        help="coarse grid for the printed spectral difference (default: 16)")
    return parser


def main(argv=None):
    """Command line: simulate the flows, write their files, print checks."""
    args = _parser().parse_args(argv)
    datasets = {}
    for i, name in enumerate(args.flows):
        paths, run = write_flow(
            name, FLOWS[name], args.directory, dtype="float32" if args.float32 else "float64",
            nx=args.nx, dt=args.dt, members=args.members, spin_up=(args.spin_up or SPIN_UP[name]) * YEAR,
            snapshots=args.snapshots, interval=args.interval * DAY, seed=args.seed + 1000 * i)
        finite = bool(np.isfinite(run["q"]).all() and np.isfinite(run["p"]).all())
        ke = run["spin_up_ke"].mean(0)
        quarter = max(len(ke) // 4, 1)
        drift = ke[-quarter:].mean() / ke[-2 * quarter:-quarter].mean() - 1 if len(ke) > 1 else np.nan
        print(f"{name}: {len(paths)} files in {paths[0].parent} ({run['seconds']:.1f} s), "
              f"finite={finite}, KE at end of spin-up {ke[-1]:.3e} m2/s2 "
              f"(last quarter vs the one before: {100 * drift:+.1f} %), "
              f"KE over the snapshots {run['ke'].mean():.3e} ± {run['ke'].std():.1e}")
        datasets[name] = xr.concat([xr.open_dataset(p) for p in paths], "member")
    if "base" in datasets:
        for name, ds in datasets.items():
            if name == "base":
                continue
            full = spectral_difference(datasets["base"], ds).values
            coarse = spectral_difference(datasets["base"], ds, n_les=args.n_les).values
            print(f"{name} vs base: max |log10(S_q ratio)| per level = "
                  f"{np.round(full, 2).tolist()} decades (k ≤ {args.nx // 2}), "
                  f"{np.round(coarse, 2).tolist()} (1 ≤ k ≤ {args.n_les // 2})")


if __name__ == "__main__":
    main()
