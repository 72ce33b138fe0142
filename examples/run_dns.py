"""Run a small DNS, look at it, and check that it is resolved.

    python examples/run_dns.py            # ~1 minute on 2 cores
"""
from matplotlib.figure import Figure

import xtl
from xtl.experiment.plotting import plot_spectra, plot_vorticity


def main():
    case = xtl.get_case("small-base")
    print(case)
    ds = xtl.simulate(case, spin_up=20.0, t_end=30.0, save_interval=1.0, path="small-base.nc",
                      overwrite=True, seed=1)

    # spectra are accessor calls on the Dataset
    energy = ds.tl.spectrum(kind="energy").mean("time")
    enstrophy = ds.tl.spectrum(kind="enstrophy").mean("time")
    cutoff = (case.n - 1) // 3
    print(f"Z(k_c={cutoff}) / max Z = {float(enstrophy.sel(k=cutoff) / enstrophy.max()):.1e}")

    # figures drawn on Figure objects: no pyplot, no backend switch
    fig = Figure(figsize=(6, 4), layout="constrained")
    plot_spectra({"E(k)": energy, "Z(k)": enstrophy}, title=case.name, ax=fig.add_subplot())
    fig.savefig("small-base-spectra.png", dpi=100)
    fig = Figure(figsize=(5, 4.4), layout="constrained")
    plot_vorticity(ds.omega.isel(time=-1), ax=fig.add_subplot())
    fig.savefig("small-base-vorticity.png", dpi=100)


if __name__ == "__main__":
    main()
