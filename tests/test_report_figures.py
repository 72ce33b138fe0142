"""The report's figures: drawn without pyplot, comparable panels, labelled axes, legends off
the data. Inputs are small synthetic results with the schema of xtl.experiment.stages's files."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xtl.experiment import report
from xtl.experiment.document import render_html
from xtl.explain.kernels import FILTER_TYPES

K = np.arange(12)
N_LES = 16  # shells k <= 7 are drawn


def _spectrum(scale, slope):
    return xr.DataArray(scale * np.maximum(K, 1.0) ** slope, dims="k", coords={"k": K})


def results():
    """Synthetic inputs of every figure function (one target)."""
    rng = np.random.default_rng(0)
    kk = np.arange(-4, 4)
    explain = xr.Dataset(
        {
            "energy_base": _spectrum(1.0, -3.0), "energy_target": _spectrum(2.0, -3.0),
            "pi_truth": _spectrum(1.0, -1.0), "pi_bnn": _spectrum(0.5, -1.0),
            "pi_tlnn": _spectrum(0.9, -1.0),
            "top_filter_base": (("top", "ky", "kx"), rng.random((3, 8, 8))),
            "top_filter_tl": (("top", "ky", "kx"), 4 * rng.random((3, 8, 8))),
            "top_layer": ("top", [1, 2, 2]), "top_channel_out": ("top", [0, 1, 3]),
            "top_channel_in": ("top", [0, 0, 2]),
        },
        coords={"ky": kk, "kx": kk}, attrs={"best_layer": 2},
    )
    explain["change_profile"] = ("shell", np.linspace(0.1, 0.5, 7))
    explain["change_weight"] = ("shell", np.linspace(0.0, 1.0, 7))
    explain = explain.assign_coords(shell=np.arange(1, 8))
    explain.attrs.update(change_correlation=0.9, change_pvalue=0.01)
    layers = [1, 2, 3]
    sweep = xr.Dataset(
        {"cc_mean": ("layer", [0.5, 0.7, 0.6]), "cc_sem": ("layer", [0.01, 0.02, 0.01]),
         "best_set": ("layer", [False, True, True]), "base_cc": 0.4,
         "baseline_cc_mean": ("baseline", [0.3, 0.8])},
        coords={"layer": layers, "baseline": ["scratch", "full_target"]})
    act = np.abs(rng.standard_normal((3, 4, K.size))) + 0.1
    rec = xr.Dataset(
        {"score": ("layer", [0.2, 0.9, 0.4]),
         "activation_spectrum_base": (("layer", "channel", "k"), act),
         "activation_spectrum_target": (("layer", "channel", "k"), 2 * act)},
        coords={"layer": layers, "k": K}, attrs={"recommended": [2]},
    )
    census = xr.DataArray([[20, 4, 0, 0, 0], [300, 100, 100, 50, 26], [10, 14, 0, 0, 0]],
                          dims=("layer", "filter_type"),
                          coords={"layer": layers, "filter_type": list(FILTER_TYPES[:-1])})
    post = aposteriori()
    budget = xr.concat([sweep.assign(fraction=f, best_layer=b) for f, b in ((0.02, 1), (0.1, 2))],
                       dim="budget").assign_coords(budget=[2, 10])
    return explain, sweep, rec, census, post, budget


CLOSURES = ["BNN", "TLNN", "dynamic-smagorinsky", "no closure", "unstable one"]
#: stable runs per closure and initial state: TLNN blew up from its second state
STABLE = [[1, 1], [1, 0], [1, 1], [1, 1], [0, 0]]
SIGMA = 2.0


def aposteriori():
    """Synthetic output of xtl.experiment.aposteriori.run_aposteriori: 5 closures x 2 initial states."""
    rng = np.random.default_rng(1)
    shape = (len(CLOSURES), 2)
    scale = 1.0 + 0.1 * rng.random(shape + (1,))
    energy = _spectrum(1.0, -3.0).values * scale
    bins = np.linspace(-6, 6, 25) * SIGMA
    gauss = np.exp(-0.5 * (bins / SIGMA) ** 2) / (SIGMA * np.sqrt(2 * np.pi))
    time = np.arange(6) * 0.5
    stable = np.array(STABLE)
    blowup = np.where(stable == 1, np.nan, 1.2)
    series = 1.0 + 0.1 * rng.random(shape + (time.size,))
    series[stable == 0, 3:] = np.nan  # runs end at their blow-up
    scalars = {name: (("closure", "initial_state"), rng.random(shape)) for name in (
        "pdf_distance", "tail_error", "mean_energy_les", "mean_enstrophy_les", "transfer_les",
        "backscatter_les")}
    scalars["spectrum_error"] = (("closure", "initial_state"),
                                 np.array([[0.1, 0.3]] * len(CLOSURES)))
    return xr.Dataset(
        {"energy_les": (("closure", "initial_state", "k"), energy),
         "enstrophy_les": (("closure", "initial_state", "k"), energy * K ** 2),
         "energy_fdns": ("k", _spectrum(1.0, -3.0).values),
         "enstrophy_fdns": ("k", _spectrum(1.0, -1.0).values),
         "pdf_les": (("closure", "initial_state", "omega_bin"), gauss * scale),
         "pdf_fdns": ("omega_bin", gauss),
         "kinetic_energy": (("closure", "initial_state", "time"), series),
         "enstrophy": (("closure", "initial_state", "time"), 10 * series),
         "stable": (("closure", "initial_state"), stable),
         "blowup_time": (("closure", "initial_state"), blowup),
         "mean_energy_fdns": 1.0, "mean_enstrophy_fdns": 10.0, "transfer_fdns": 0.05,
         "backscatter_fdns": 0.3, **scalars},
        coords={"closure": CLOSURES, "initial_state": [0, 1], "k": K, "omega_bin": bins,
                "time": time},
        attrs={"kmax": 5, "sigma_fdns": SIGMA, "t_end": 80.0, "turnovers": 91.4})


BENCH_METHODS = ["probe", "spectral", "shallowest", "layer-2", "deepest", "prior"]
#: regret per case (rows) and method: probe's mean 0.1, the best constant (layer-2) 0.2
BENCH_REGRET = [[0.0, 0.5, 0.6, 0.2, 1.0, 0.3], [0.2, 0.1, 0.4, 0.2, 0.8, 0.3]]


def benchmark():
    """A recommender benchmark (results/recommend-benchmark.nc's schema): 2 cases, 2 methods
    and 4 constants."""
    shape = (2, len(BENCH_METHODS))
    tau = np.array([[0.6, -0.2] + [np.nan] * 4, [0.4, 0.8] + [np.nan] * 4])
    return xr.Dataset(
        {"layer": (("case", "method"), [[2, 5, 1, 2, 6, 3], [2, 3, 1, 2, 6, 3]]),
         "hit": (("case", "method"), np.array(BENCH_REGRET) == 0.0),
         "regret": (("case", "method"), BENCH_REGRET), "tau": (("case", "method"), tau),
         "cost": (("case", "method"), np.full(shape, 0.05)),
         "n_seeds": ("case", [3, 3]), "best_set": ("case", ["2,3", "3"])},
        coords={"case": ["beta@15", "kf@15"], "method": BENCH_METHODS,
                "kind": ("method", ["method"] * 2 + ["constant"] * 4)},
        attrs={"default": "probe", "metric": "cc"})


def draw_all(folder: Path) -> dict:
    """Draw every report figure into ``folder``; {kind: file name}."""
    explain, sweep, rec, census, post, budget = results()
    t = "target"
    recs = {"probe": rec, "spectral": rec.assign(score=-rec.score)}
    return {
        "flow-spectra": report._fig_flow_spectra({t: explain}, folder, N_LES),
        "cc-per-layer": report._fig_cc_per_layer({t: sweep}, {t: rec}, folder),
        "pi-spectra": report._fig_pi_spectra(t, explain, folder, N_LES),
        "kernel-changes": report._fig_kernel_changes(t, explain, folder),
        "spectral-change": report._fig_spectral_change(t, explain, folder),
        "filter-census": report._fig_census(census, folder),
        "activation-spectra": report._fig_activation_spectra(t, rec, folder),
        "recommenders": report._fig_recommenders(t, recs, sweep, folder),
        "aposteriori": report._fig_aposteriori(t, post, folder),
        "aposteriori-pdf": report._fig_aposteriori_pdf(t, post, folder),
        "aposteriori-series": report._fig_aposteriori_series(t, post, folder),
        "budget": report._fig_budget(t, budget, folder),
        "recommend-benchmark": report._fig_benchmark(benchmark(), folder),
    }


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """{kind: Figure} of every report figure, captured as they are saved."""
    captured = {}
    save = report._save

    def keep(fig, path):
        captured[path.stem.replace("-target", "")] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_save", keep)
        names = draw_all(tmp_path_factory.mktemp("figures"))
    assert set(captured) == set(names) == set(report.REPORT_FIGURES + report.OPTIONAL_FIGURES)
    for fig in captured.values():
        fig.draw_without_rendering()  # lay it out (no pyplot canvas needed)
    return captured


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def _overlaps(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_report_figures_are_drawn_without_pyplot_or_a_backend_switch(tmp_path):
    """In a process whose pyplot cannot be imported and whose backend is 'pdf', every figure
    is written as a PNG and the backend is still 'pdf' (a notebook's would be kept too)."""
    script = textwrap.dedent(f"""
        import sys
        sys.modules["matplotlib.pyplot"] = None  # any pyplot import fails
        import matplotlib
        matplotlib.use("pdf")
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_report_figures as t
        names = t.draw_all(Path(sys.argv[1]))
        assert matplotlib.get_backend() == "pdf", matplotlib.get_backend()
        print(len(names))
    """)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    kinds = len(report.REPORT_FIGURES + report.OPTIONAL_FIGURES)
    assert run.stdout.strip() == str(kinds)
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == kinds
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_kernel_changes_compare_before_and_after_on_one_colour_scale(figures):
    fig = figures["kernel-changes"]
    panels = _panels(fig)
    assert len(panels) == 6  # 3 kernels, before and after
    limits = {ax.get_images()[0].get_clim() for ax in panels}
    assert len(limits) == 1
    _, top = limits.pop()
    explain = results()[0]
    assert top == pytest.approx(float(max(explain.top_filter_base.max(), explain.top_filter_tl.max())))
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    assert {ax.get_xlabel() for ax in panels[-4:]} == {"kx"}
    assert {ax.get_ylabel() for ax in panels[::4]} == {"ky"}


def test_activation_panels_have_axis_labels(figures):
    for ax in _panels(figures["activation-spectra"]):
        assert ax.get_xlabel() == "k" and ax.get_ylabel()


def test_aposteriori_closures_have_distinct_line_styles(figures):
    ax = figures["aposteriori"].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_label() in
             ("BNN", "TLNN (1/2 stable)", "dynamic-smagorinsky", "no closure")}
    assert len(lines) == 4
    looks = {(str(ln.get_linestyle()), ln.get_marker()) for ln in lines.values()}
    assert len(looks) == 4  # BNN and TLNN no longer share a style
    assert all(ln.get_linestyle() != "-" for ln in lines.values())  # solid: the filtered DNS


def test_cc_per_layer_shows_error_bars_and_baselines(figures):
    ax = figures["cc-per-layer"].axes[0]
    assert ax.containers, "no error bars"
    _, caps, bars = ax.containers[0].lines
    np.testing.assert_allclose([seg[1, 1] - seg[0, 1] for seg in bars[0].get_segments()],
                               [0.02, 0.04, 0.02])  # 2 x s.e.
    levels = {round(ln.get_ydata()[0], 6) for ln in ax.get_lines() if len(ln.get_ydata()) == 2
              and ln.get_ydata()[0] == ln.get_ydata()[1]}
    assert {0.4, 0.3, 0.8} <= levels  # BNN, scratch, full target


def test_census_is_drawn_as_fractions_per_layer(figures):
    ax = figures["filter-census"].axes[0]
    heights = np.array([p.get_height() for p in ax.patches]).reshape(5, 3)
    np.testing.assert_allclose(heights.sum(axis=0), 1.0)
    assert "fraction" in ax.get_ylabel()


def test_aposteriori_spectra_are_means_over_the_stable_runs_with_the_cutoff_marked(figures):
    post = aposteriori()
    for ax, kind in zip(figures["aposteriori"].axes[:2], ("energy", "enstrophy")):
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        # TLNN: only its first initial state stayed stable; its line is that run's spectrum
        tl = lines["TLNN (1/2 stable)"]
        np.testing.assert_allclose(tl.get_ydata(), post[f"{kind}_les"].sel(
            closure="TLNN", initial_state=0).values[1:])
        bnn = lines["BNN"]
        np.testing.assert_allclose(bnn.get_ydata(), post[f"{kind}_les"].sel(
            closure="BNN").mean("initial_state").values[1:])
        assert any(label.startswith("unstable one: unstable (first blow-up at t = 1.2")
                   for label in lines)
        assert len(lines["unstable one: unstable (first blow-up at t = 1.2)"].get_xdata()) == 0
        cutoff = [ln for ln in lines.values() if ln.get_xdata() is not None
                  and len(ln.get_xdata()) == 2 and ln.get_xdata()[0] == ln.get_xdata()[1]]
        assert [float(ln.get_xdata()[0]) for ln in cutoff] == [5.0]


def test_aposteriori_pdfs_are_drawn_on_a_log_scale_in_sigma_units(figures):
    ax = figures["aposteriori-pdf"].axes[0]
    assert ax.get_yscale() == "log"
    post = aposteriori()
    fdns = next(ln for ln in ax.get_lines() if ln.get_label() == "filtered DNS")
    np.testing.assert_allclose(fdns.get_xdata(), post.omega_bin / SIGMA)
    np.testing.assert_allclose(fdns.get_ydata(), post.pdf_fdns * SIGMA)  # the PDF of ω/σ


def test_aposteriori_series_mark_every_blowup(figures):
    for ax in figures["aposteriori-series"].axes[:2]:
        marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
        assert len(marks) == 3  # TLNN once, the unstable closure twice
        assert ax.get_yscale() == "log"


def test_aposteriori_table_gives_stability_and_spreads_over_the_stable_runs():
    table = render_html("t", report._aposteriori_table({"target": aposteriori()}))
    assert table.count("<tr>") == 1 + 1 + len(CLOSURES)  # head, filtered DNS, closures
    assert "<td>BNN</td><td>2/2</td><td>0.20 ± 0.14</td>" in table  # sample s.d. of 0.1, 0.3
    # one run, the smallest spectrum error of the stable closures: in bold
    assert "<td>TLNN</td><td>1/2 (first blow-up t = 1.2)</td><td><b>0.100</b></td>" in table
    assert "<td>unstable one</td><td>0/2 (first blow-up t = 1.2)</td>" in table
    assert "<td>filtered DNS</td><td>—</td><td>—</td>" in table  # no spectrum error of itself
    assert "target 80 time units = 91 large-eddy turnover times" in table


@pytest.mark.parametrize("kind", ["flow-spectra", "cc-per-layer", "pi-spectra", "filter-census",
                                  "aposteriori", "aposteriori-pdf", "aposteriori-series",
                                  "recommenders", "activation-spectra", "budget",
                                  "recommend-benchmark"])
def test_legends_sit_off_the_data(figures, kind):
    fig = figures[kind]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends, kind
    for legend in legends:
        box = legend.get_window_extent()
        for ax in _panels(fig):
            assert not _overlaps(box, ax.get_window_extent()), (kind, ax.get_title())


def test_pairs_section_names_the_best_single_layer_and_the_pairs_that_beat_it():
    import numpy as np
    import xarray as xr

    from xtl.experiment.report import pairs_section

    seeds = {"seed": [0, 1, 2]}
    subset = (("seed", "draw"), np.zeros((3, 2), int))
    single = xr.Dataset({"cc": (("layer", "seed"), [[0.80, 0.82, 0.81], [0.90, 0.91, 0.92]]),
                         "subset": subset}, coords={"layer": [1, 2], **seeds})
    d = np.array([0.01, 0.03, 0.02])  # 1+2 beats layer 2 by 0.02 ± 0.0058: p = 0.037
    pairs = xr.Dataset({"cc": (("pair", "seed"), [single.cc.sel(layer=2).values + d,
                                                  single.cc.sel(layer=2).values - 0.1]),
                        "subset": subset}, coords={"pair": ["1+2", "1+3"], **seeds})
    table = pairs_section({"kf8": pairs}, {"kf8": single})[-1]
    (row,) = table.rows
    assert row[:2] == ("kf8", "L2: 0.9100 ± 0.0058")
    assert row[2].index("1+2: 0.9300 (+0.0200 ± 0.0058, p = 0.037)") < row[2].index("1+3:")
    # p = 0.037 passes alone, but Holm's correction for the two pairs makes it 0.074
    assert row[3] == "0 of 2 (1 uncorrected)"
    assert pairs_section({"kf8": pairs}, {"kf8": single}, alpha=0.1)[-1].rows[0][3] == \
        "1 of 2 (1 uncorrected)"
    assert pairs_section({"kf8": pairs}, {"kf8": single}, alpha=0.01)[-1].rows[0][3] == \
        "0 of 2 (0 uncorrected)"
