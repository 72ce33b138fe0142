"""The experiment report: ``report.html`` with PNG figures beside it, readable offline.

Every figure is drawn from the netCDF results of :mod:`xtl.experiment.stages` (the filter
census from the saved base model), and has one sentence under it saying what it
shows. Figures are ``matplotlib.figure.Figure`` objects saved directly: writing a
report never touches pyplot or switches the matplotlib backend (of a notebook, say).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from ..data.files import atomic_path, write_text_atomically
from ..data.netcdf import load_dataset
from ..explain.kernels import filter_census
from ..explain.recommend import compare_recommendation, recommended_layers
from ..nn.spec import Variables
from .document import Box, Figure, Paragraph, Section, Table, anchor, render_html, render_markdown
from .findings import MIN_SEEDS, format_mean_sem, format_value

__all__ = ["write_report", "write_summary", "REPORT_FIGURES", "OPTIONAL_FIGURES", "REPORT_FORMATS",
           "GLOSSARY"]

#: Figure kinds every report contains (per target where it says so).
REPORT_FIGURES = (
    "flow-spectra",
    "cc-per-layer",
    "pi-spectra",
    "kernel-changes",
    "spectral-change",
    "filter-census",
    "activation-spectra",
    "recommenders",
    "aposteriori",
    "aposteriori-pdf",
    "aposteriori-series",
)
#: Figure kinds of optional results: ``budget`` with a ``[budget]`` section,
#: ``recommend-benchmark`` with ``results/recommend-benchmark.nc``.
OPTIONAL_FIGURES = ("budget", "recommend-benchmark")


def _figure(figsize):
    """A new Figure outside pyplot (no backend, no global state), with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path: Path) -> str:
    with atomic_path(path, suffix=".png") as tmp:  # matplotlib picks the format by suffix
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    return path.name


def _resolved(da: xr.DataArray, n_les: int) -> xr.DataArray:
    """Shells k < n_les/2: those the square LES grid holds completely."""
    return da.sel(k=slice(None, n_les // 2 - 1))


def _fig_flow_spectra(explains: dict, folder: Path, n_les: int) -> str:
    """Energy spectra of the base flow and every target (LES level, time means); the
    power spectra of each input variable (and level) for other variables."""
    from .plotting import plot_spectra

    first = next(iter(explains.values()))
    if "energy_base" not in first:
        return _fig_variable_spectra(
            {"base": first.flow_spectrum_base,
             **{t: ex.flow_spectrum_target for t, ex in explains.items()}},
            "variable", "power spectra of the filtered flows' inputs", folder / "flow-spectra.png",
            n_les)
    curves = {}
    for target, ex in explains.items():
        curves.setdefault("base", _resolved(ex["energy_base"], n_les))
        curves[target] = _resolved(ex["energy_target"], n_les)
    fig = _figure((6, 4))
    plot_spectra(curves, title="energy spectra of the filtered flows", ylabel="E(k)",
                 ax=fig.add_subplot())
    return _save(fig, folder / "flow-spectra.png")


def _fig_variable_spectra(curves: dict, dim: str, title: str, path: Path, n_les: int) -> str:
    """One panel per entry of ``dim`` (a variable at a level), a curve per entry of
    ``curves`` (``{label: DataArray over (dim, k)}``)."""
    from matplotlib.ticker import NullFormatter

    from .plotting import plot_spectra

    names = list(next(iter(curves.values()))[dim].values)
    fig = _figure((4.2 * len(names), 3.8))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        plot_spectra({label: _resolved(da.sel({dim: name}), n_les)
                      for label, da in curves.items()}, title=str(name), ylabel="power", ax=ax)
        if n_les // 2 <= 16:  # a small grid spans about a decade: label its shells
            ax.set_xticks(range(1, n_les // 2), [str(k) for k in range(1, n_les // 2)])
            ax.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle(title)
    return _save(fig, path)


def _cc_panel(ax, sweep, recommended, color) -> None:
    """One target's mean CC ± s.e. per layer (filled: best set), its BNN and baselines
    (lines) and the recommended layers (stars), on its own scale."""
    layers = sweep.layer.values
    ax.errorbar(layers, sweep.cc_mean, yerr=sweep.cc_sem, fmt="o-", color=color,
                capsize=3, mfc="white", label="TLNN")
    best = sweep.best_set.values.astype(bool)
    ax.plot(layers[best], sweep.cc_mean.values[best], "o", color=color, zorder=3)
    ax.axhline(float(sweep.base_cc), color="k", ls="--", lw=1)
    for layer in recommended:
        ax.plot([layer], [float(sweep.cc_mean.sel(layer=layer))], "*", ms=15, color=color,
                markeredgecolor="k", zorder=4)
    ax.set_xticks(list(layers))
    ax.set_xlabel("re-trained layer")
    sem = np.nan_to_num(sweep.cc_sem.values.astype(float))
    low = min(float(np.min(sweep.cc_mean.values - sem)), float(sweep.base_cc))
    high = max(float(np.max(sweep.cc_mean.values + sem)), float(sweep.base_cc))
    pad = 0.08 * (high - low) or 0.01
    ax.set_ylim(low - pad, high + pad)  # the layers and the BNN, not a far baseline
    for b, style in (("scratch", ":"), ("full_target", "-.")):
        if "baseline" in sweep.dims and b in sweep.baseline.values:
            level = float(sweep.baseline_cc_mean.sel(baseline=b))
            ax.axhline(level, color="k", ls=style, lw=1)
            if not low - pad <= level <= high + pad:
                ax.annotate(f"{b.replace('_', ' ')}: {level:.3g} "
                            f"{'below' if level < low else 'above'}", (0.02, 0.03 if level < low
                                                                        else 0.93),
                            xycoords="axes fraction", fontsize=7, color="0.3")


def _fig_cc_per_layer(sweeps: dict, recs: dict, folder: Path, symbol: str = "Π") -> str:
    """Mean CC ± s.e. over seeds of each single-layer TLNN, with the BNN and the baselines
    (``symbol``: the network's output): one panel per target, each on its own scale so
    that a large gain on one target does not flatten the others."""
    from matplotlib.lines import Line2D

    n = len(sweeps)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig = _figure((3.6 * ncols + 2.2, 3.2 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, (ax, (target, sweep)) in enumerate(zip(axes.ravel(), sweeps.items())):
        _cc_panel(ax, sweep, recommended_layers(recs[target]), f"C{i}")
        ax.set_title(target, fontsize=10)
        if i % ncols == 0:
            ax.set_ylabel(f"CC of {symbol} on held-out target data")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    handles = [Line2D([], [], marker="o", mfc="white", color="k", label="TLNN, mean ± s.e."),
               Line2D([], [], marker="o", ls="", color="k", label="best set")]
    handles += [Line2D([], [], color="k", ls=ls, label=lab) for ls, lab in
                (("--", "BNN"), (":", "from scratch (small set)"), ("-.", "full target set"))]
    handles.append(Line2D([], [], marker="*", ms=12, color="w", markeredgecolor="k",
                          label="recommended"))
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("single-layer transfer learning, one scale per target")
    return _save(fig, folder / "cc-per-layer.png")


def _fig_recommenders(target: str, recs: dict, sweep: xr.Dataset, folder: Path) -> str:
    """Each recommender's score (scaled to [0, 1]) against the measured mean CC."""
    fig = _figure((8, 3.8))
    ax1 = fig.add_subplot()
    layers = sweep.layer.values
    width = 0.8 / max(1, len(recs))
    for i, (method, rec) in enumerate(recs.items()):
        score = rec.score.sel(layer=layers).values.astype(float)
        span = np.ptp(score)
        scaled = (score - score.min()) / span if span > 0 else np.zeros_like(score)
        ax1.bar(layers - 0.4 + width * (i + 0.5), scaled, width, color=f"C{i}", alpha=0.7,
                label=f"{method} → {recommended_layers(rec)}")
    ax1.set_xlabel("layer")
    ax1.set_ylabel("score, scaled to [0, 1]")
    ax2 = ax1.twinx()
    ax2.errorbar(layers, sweep.cc_mean, yerr=sweep.cc_sem, fmt="ko-", capsize=3,
                 label="measured CC ± s.e.")
    ax2.set_ylabel("mean CC of the TLNN")
    ax1.set_xticks(layers)
    ax1.set_title(f"{target}: recommenders (before TL) vs the sweep (after TL)")
    fig.legend(loc="outside right upper", fontsize=8)
    return _save(fig, folder / f"recommenders-{target}.png")


def _fig_budget(target: str, budget: xr.Dataset, folder: Path, symbol: str = "Π") -> str:
    """Mean CC ± s.e. per layer at every re-training set size; the best layer marked
    (``symbol``: the network's output)."""
    from .plotting import legend_outside

    fig = _figure((7.5, 4))
    ax = fig.add_subplot()
    for i, n in enumerate(budget.budget.values):
        one = budget.sel(budget=n)
        frac = float(one.fraction)
        ax.errorbar(one.layer, one.cc_mean, yerr=one.cc_sem, fmt="o-", color=f"C{i}",
                    capsize=3, label=f"{int(n)} samples ({100 * frac:.0f}% of the pool)")
        best = int(one.best_layer)
        ax.plot([best], [float(one.cc_mean.sel(layer=best))], "s", ms=10, mfc="none",
                color=f"C{i}")
        ax.axhline(float(one.base_cc), color="k", ls="--", lw=1)
    ax.set_xlabel("re-trained layer")
    ax.set_ylabel(f"CC of {symbol} on held-out target data")
    ax.set_xticks(budget.layer.values)
    ax.set_title(f"{target}: the best layer (square) at each re-training budget; dashed: BNN")
    legend_outside(ax)
    return _save(fig, folder / f"budget-{target}.png")


def _fig_spectral_change(target: str, ex: xr.Dataset, folder: Path) -> str:
    """The best layer's spectral change against how much the flows differ, per shell."""
    fig = _figure((6, 3.6))
    ax1 = fig.add_subplot()
    k = ex.shell.values
    ax1.plot(k, ex.change_profile, "o-", color="tab:blue", label="Δ|Ŵ| of the re-trained layer")
    ax1.set_xlabel("k")
    ax1.set_ylabel("mean ||Ŵ_TL| − |Ŵ_base||", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(k, ex.change_weight, "s--", color="tab:red", label="w(k)")
    ax2.set_ylabel("w(k): flows differ (decades)", color="tab:red")
    ax1.set_title(f"{target}, layer {ex.attrs['best_layer']}: r = "
                  f"{ex.attrs['change_correlation']:.2f}, permutation p = "
                  f"{ex.attrs['change_pvalue']:.3f}")
    return _save(fig, folder / f"spectral-change-{target}.png")


def _fig_pi_spectra(target: str, ex: xr.Dataset, folder: Path, n_les: int) -> str:
    """Power spectra of Π: truth, BNN and the best TLNN on one target."""
    from .plotting import plot_spectra

    best = ex.attrs.get("best_layer", "?")
    if "pi_truth" not in ex:
        return _fig_variable_spectra(
            {"truth": ex.output_truth, "BNN": ex.output_bnn,
             f"TLNN (layer {best})": ex.output_tlnn}, "output",
            f"output spectra on {target}", folder / f"pi-spectra-{target}.png", n_les)
    curves = {"truth": ex.pi_truth, "BNN": ex.pi_bnn, f"TLNN (layer {best})": ex.pi_tlnn}
    fig = _figure((6, 4))
    plot_spectra({label: _resolved(da, n_les) for label, da in curves.items()},
                 title=f"Π spectra on {target}", ylabel="power of Π", ax=fig.add_subplot())
    return _save(fig, folder / f"pi-spectra-{target}.png")


def _fig_kernel_changes(target: str, ex: xr.Dataset, folder: Path) -> str:
    """Spectra of the most-changed kernels before (base) and after (TL)."""
    from .plotting import plot_kernel_spectra

    both = xr.concat([ex.top_filter_base, ex.top_filter_tl], dim=xr.DataArray(
        ["before", "after"], dims="model", name="model"))
    labels = [f"L{int(l)} out{int(o)} in{int(i)}" for l, o, i in
              zip(ex.top_layer.values, ex.top_channel_out.values, ex.top_channel_in.values)]
    both = both.assign_coords(top=labels).rename(top="kernel").transpose("kernel", "model", "ky", "kx")
    ncols = 4
    nrows = -(-both.sizes["kernel"] * both.sizes["model"] // ncols)
    fig = plot_kernel_spectra(both, ncols=ncols, fig=_figure((2.2 * ncols + 1.0, 2.2 * nrows)))
    fig.suptitle(f"most-changed kernels on {target}: |Ŵ| before / after (one colour scale)")
    return _save(fig, folder / f"kernel-changes-{target}.png")


def _fig_census(census: xr.DataArray, folder: Path) -> str:
    """Filter types of the base network's kernels, per layer."""
    from .plotting import plot_census

    fig = _figure((7, 3.8))
    plot_census(census, title="filter census of the base network", ax=fig.add_subplot())
    return _save(fig, folder / "filter-census.png")


def _fig_activation_spectra(target: str, rec: xr.Dataset, folder: Path) -> str:
    """Per-layer activation spectra of the base network on base vs target inputs."""
    base, tgt = rec["activation_spectrum_base"], rec["activation_spectrum_target"]
    layers = base.layer.values
    ncols = min(4, len(layers))
    nrows = int(np.ceil(len(layers) / ncols))
    fig = _figure((3.2 * ncols, 2.8 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, layer in zip(axes.ravel(), layers):
        for da, label, style in ((base, "base inputs", "-"), (tgt, "target inputs", "--")):
            curve = da.sel(layer=layer)
            if "channel" in curve.dims:
                curve = curve.mean("channel")
            curve = curve.where(curve.k >= 1, drop=True)
            ax.loglog(curve.k, curve, style, label=label)
        ax.set_title(f"layer {int(layer)}", fontsize=9)
        ax.set_xlabel("k", fontsize=8)
        ax.set_ylabel("channel-mean power", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(layers):]:
        ax.set_visible(False)
    fig.legend(*axes.ravel()[0].get_legend_handles_labels(), loc="outside upper right",
               fontsize=8)
    fig.suptitle(f"activation spectra of the base network: base vs {target}")
    return _save(fig, folder / f"activation-spectra-{target}.png")


def _closure_label(summary: xr.Dataset, closure) -> str:
    """The closure's legend label, with how many of its runs stayed stable when not all."""
    n_stable = int(summary.n_stable.sel(closure=closure))
    n_runs = int(summary.n_runs.sel(closure=closure))
    return str(closure) if n_stable == n_runs else f"{closure} ({n_stable}/{n_runs} stable)"


def _unstable_entry(ax, summary, closure, color) -> bool:
    """A legend entry for a closure none of whose runs stayed stable; whether it was one."""
    if int(summary.n_stable.sel(closure=closure)) > 0:
        return False
    ax.plot([], [], "x", color=color, label=f"{closure}: unstable (first blow-up at t = "
                                            f"{float(summary.first_blowup.sel(closure=closure)):.3g})")
    return True


def _fig_aposteriori(target: str, post: xr.Dataset, folder: Path) -> str:
    """Energy and enstrophy spectra of the LES with each closure against the filtered DNS.

    Lines are means over the initial states whose runs stayed stable, bands ± one
    standard deviation; the LES cutoff is dotted.
    """
    from .aposteriori import aposteriori_summary
    from .plotting import legend_outside

    summary = aposteriori_summary(post)
    kmax = int(post.attrs.get("kmax", post.k.max()))
    fig = _figure((10, 4))
    axes = fig.subplots(1, 2)
    for ax, kind, ylabel in zip(axes, ("energy", "enstrophy"), ("E(k)", "Z(k)")):
        fdns = post[f"{kind}_fdns"]
        fdns = fdns.where(fdns.k >= 1, drop=True)
        ax.loglog(fdns.k, fdns, "k-", lw=2, label="filtered DNS")
        for i, closure in enumerate(post.closure.values):
            if _unstable_entry(ax, summary, closure, f"C{i}"):
                continue
            mean = summary[f"{kind}_les_mean"].sel(closure=closure)
            std = summary[f"{kind}_les_std"].sel(closure=closure)
            k = mean.k.values >= 1
            style, marker = _LINE_STYLES[i % len(_LINE_STYLES)]
            ax.loglog(mean.k[k], mean[k], linestyle=style, marker=marker, markevery=0.15, ms=4,
                      color=f"C{i}", label=_closure_label(summary, closure))
            ax.fill_between(mean.k[k], (mean - std)[k], (mean + std)[k], color=f"C{i}",
                            alpha=0.15, lw=0)
        ax.set_ylim(bottom=float(fdns.sel(k=slice(1, kmax)).min()) / 10)
        ax.axvline(kmax, color="gray", ls=":", lw=1)
        ax.set_xlabel("k (dotted: the LES cutoff)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{kind} spectra")
    fig.suptitle(f"a posteriori LES on {target}: mean ± s.d. over initial states")
    legend_outside(axes[1])
    return _save(fig, folder / f"aposteriori-{target}.png")


def _fig_aposteriori_pdf(target: str, post: xr.Dataset, folder: Path) -> str:
    """PDFs of ω̄/σ (σ: the filtered DNS's) on a log scale; the 3–5σ tails shaded."""
    from .aposteriori import aposteriori_summary
    from .plotting import legend_outside

    summary = aposteriori_summary(post)
    sigma = float(post.attrs["sigma_fdns"])
    x = post.omega_bin.values / sigma
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    fdns = post.pdf_fdns.values * sigma
    ax.semilogy(x, np.where(fdns > 0, fdns, np.nan), "k-", lw=2, label="filtered DNS")
    for i, closure in enumerate(post.closure.values):
        if _unstable_entry(ax, summary, closure, f"C{i}"):
            continue
        pdf = summary.pdf_les_mean.sel(closure=closure).values * sigma
        style, marker = _LINE_STYLES[i % len(_LINE_STYLES)]
        ax.semilogy(x, np.where(pdf > 0, pdf, np.nan), linestyle=style, marker=marker,
                    markevery=0.1, ms=3, color=f"C{i}", label=_closure_label(summary, closure))
    for side in (-1, 1):
        ax.axvspan(3 * side, 5 * side, color="0.9", zorder=0)
    positive = fdns[fdns > 0]
    if positive.size:
        ax.set_ylim(bottom=float(positive.min()) / 10)
    ax.set_xlabel("ω̄ / σ of the filtered DNS (shaded: 3–5 σ)")
    ax.set_ylabel("PDF")
    ax.set_title(f"vorticity PDFs on {target} (mean over initial states)")
    legend_outside(ax)
    return _save(fig, folder / f"aposteriori-pdf-{target}.png")


def _fig_aposteriori_series(target: str, post: xr.Dataset, folder: Path) -> str:
    """Kinetic energy and enstrophy over time, every run; blow-ups marked, FDNS means dashed."""
    from .plotting import legend_outside

    fig = _figure((10, 4))
    axes = fig.subplots(1, 2)
    for ax, var, ref, ylabel in zip(axes, ("kinetic_energy", "enstrophy"),
                                    ("mean_energy_fdns", "mean_enstrophy_fdns"),
                                    ("kinetic energy", "enstrophy")):
        for i, closure in enumerate(post.closure.values):
            style, _ = _LINE_STYLES[i % len(_LINE_STYLES)]
            for j, state in enumerate(post.initial_state.values):
                run = post[var].sel(closure=closure, initial_state=state).dropna("time")
                ax.semilogy(run.time, run, linestyle=style, color=f"C{i}", lw=1,
                            label=str(closure) if j == 0 else None)
                blowup = float(post.blowup_time.sel(closure=closure, initial_state=state))
                if np.isfinite(blowup) and run.size:
                    ax.plot([float(run.time[-1])], [float(run[-1])], "x", color=f"C{i}", ms=8)
        ax.axhline(float(post[ref]), color="k", ls="--", lw=1.5, label="filtered DNS (mean)")
        ax.set_xlabel("time (x: blow-up)")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel)
    fig.suptitle(f"a posteriori LES on {target}: every closure from every initial state")
    legend_outside(axes[1])
    return _save(fig, folder / f"aposteriori-series-{target}.png")


#: (line style, marker) of the closures in the a posteriori figures: no two alike, none solid
#: (the filtered DNS is the solid black line).
_LINE_STYLES = (("--", "o"), ("-.", "s"), (":", "^"), ((0, (5, 1, 1, 1)), "D"),
                ((0, (1, 3)), "v"), ((0, (8, 2)), "x"), ((0, (3, 1, 1, 1, 1, 1)), "P"))


_SENTENCES = {
    "flow-spectra": "Energy spectra of the filtered base and target flows: the targets differ "
                    "from the base where these curves separate.",
    "cc-per-layer": "Correlation coefficient of Π predicted on held-out target data, mean ± "
                    "standard error over seeds (each seed another re-training subset and "
                    "shuffle), one panel per target on its own scale (a baseline beyond it is "
                    "named at the panel's edge): each layer re-trained alone (filled dots: the best set, not "
                    "significantly worse than the best layer), the base network (dashed), a "
                    "network trained from scratch on the same small set (dotted) and one "
                    "trained on the whole target pool (dash-dotted); the star marks the layer "
                    "recommended before any re-training.",
    "pi-spectra": "Power spectrum of the SGS term Π on the target: the truth, the base network and "
                  "the best single-layer transfer-learned network.",
    "kernel-changes": "Fourier magnitude of the kernels that transfer learning changed most, "
                      "before and after re-training, over (kx, ky) centred at k = 0, on one "
                      "colour scale.",
    "spectral-change": "Per wavenumber shell: how much re-training changed the best layer's "
                       "filters (averaged over seeds) and how much the flows differ; r is their "
                       "correlation, p its permutation p-value (shells shuffled).",
    "filter-census": "Which fraction of each base-network layer's kernels (their number under "
                     "the layer) act as low-, high-, band-pass, Gabor or all-pass filters.",
    "activation-spectra": "Spectra of each layer's outputs on base and on target inputs: where they "
                          "start to differ shows which layer first sees the new flow.",
    "recommenders": "Every recommender's score per layer (bars, computed before any "
                    "re-training, scaled to [0, 1]) against the mean CC each single-layer "
                    "re-training achieved (line, ± standard error).",
    "benchmark": "Mean regret of each recommender and constant guess over the benchmark's "
                 "cases (± standard error over the cases); hatched: the constant guesses.",
    "budget": "Mean CC ± standard error per re-trained layer at each re-training set size; the "
              "square marks the best layer at that size.",
    "aposteriori": "Energy and enstrophy spectra of LES run with each closure from several "
                   "held-out filtered DNS states (mean ± standard deviation over the runs that "
                   "stayed stable), against the filtered DNS's; dotted: the LES cutoff.",
    "aposteriori-pdf": "PDF of the LES vorticity in units of the filtered DNS's standard "
                       "deviation, on a log scale, against the filtered DNS's; the tails "
                       "between 3 and 5 σ are shaded.",
    "aposteriori-series": "Kinetic energy and enstrophy of every LES run over time (x: where "
                          "a run blew up), with the filtered DNS's means (dashed).",
}


def _captions(variables) -> dict:
    """The figure captions for a network of ``variables``: :data:`_SENTENCES` for
    (ψ̄, ω̄) → Π, else with the output variables in place of Π and power spectra of
    the inputs in place of energy spectra."""
    if variables == Variables():
        return dict(_SENTENCES)
    outputs = ", ".join(variables.outputs)
    out = {k: v.replace("the SGS term Π", outputs).replace("Π", outputs)
           for k, v in _SENTENCES.items()}
    out["flow-spectra"] = ("Power spectra of the filtered base and target flows' inputs ("
                           + ", ".join(variables.inputs) + (f", each level of {variables.channels}"
                                                           if variables.channels else "")
                           + "): the targets differ from the base where these curves separate.")
    return out


#: Formats :func:`write_report` writes: the file name of each.
REPORT_FORMATS = {"html": "report.html", "md": "report.md"}


def _load_results(experiment) -> dict:
    """Every result file the report reads, loaded (a posteriori and benchmark when there)."""
    paths, cfg = experiment.paths, experiment.config
    targets = [t.name for t in cfg.targets]
    sweeps = {t: load_dataset(paths.sweep(t)) for t in targets}
    recs = {t: {m: experiment.recommendation(t, m) for m in cfg.recommend.methods}
            for t in targets}  # the main budget's
    bench = paths.benchmark
    return {
        "targets": targets, "sweeps": sweeps, "recs": recs,
        "comparisons": {t: compare_recommendation(recs[t][cfg.recommend.default], sweeps[t])
                        for t in targets if sweeps[t].sizes["layer"] >= 2},
        "explains": {t: load_dataset(paths.explain(t)) for t in targets},
        "posts": {t: load_dataset(paths.aposteriori(t)) for t in targets
                  if paths.aposteriori(t).exists()},
        "flows": load_dataset(paths.flows),
        "benchmark": load_dataset(bench) if bench.exists() else None,
    }


def write_summary(summary: xr.Dataset, findings: list, paths) -> tuple:
    """Write ``results/summary.nc`` and ``results/summary.json`` (the same numbers and the
    findings' sentences); returns both paths."""
    from ..data.netcdf import write_dataset
    from .findings import summary_record

    nc, js = paths.result("summary"), paths.result("summary").with_suffix(".json")
    write_dataset(summary, nc, overwrite=True)
    write_text_atomically(js, json.dumps(summary_record(summary, findings), indent=1))
    return nc, js


def write_report(experiment, format: str = "html") -> Path:
    """Draw every figure, write ``results/summary.nc`` and ``results/summary.json``, and the
    report (``report.html``, or ``report.md`` with ``format="md"``) into
    ``experiment.out``; returns the report's path.

    Raises
    ------
    ValueError
        ``format`` not one of :data:`REPORT_FORMATS`.
    """
    from .findings import key_findings, report_summary

    if format not in REPORT_FORMATS:
        raise ValueError(f"format must be one of {sorted(REPORT_FORMATS)}; got {format!r}")
    results = _load_results(experiment)
    summary = report_summary(results["flows"], results["sweeps"], results["explains"],
                             results["posts"], results["comparisons"], results["benchmark"])
    findings = key_findings(summary)
    write_summary(summary, findings, experiment.paths)
    blocks = _document(experiment, results, summary, findings)
    title = f"xtl report: {experiment.config.name}"
    text = (render_markdown if format == "md" else render_html)(title, blocks)
    return write_text_atomically(experiment.paths.root / REPORT_FORMATS[format], text)


def _document(experiment, results, summary, findings) -> list:
    """The report's blocks, findings first."""
    cfg = experiment.config
    base_model = experiment.load_model("base")
    captions = _captions(base_model.variables)
    symbol = "Π" if base_model.variables == Variables() else ", ".join(base_model.variables.outputs)
    folder = experiment.paths.figures
    folder.mkdir(exist_ok=True)
    blocks = [Paragraph(
        f"Base flow **{cfg.base.name}**; targets "
        f"{', '.join('**' + t.name + '**' for t in cfg.targets)}. A CNN closure trained on "
        "the base flow (BNN) is re-trained one layer at a time on a small target data set "
        "(TLNN) under several seeds; recommenders choose a layer before any re-training. "
        "All quantities are nondimensional (model units); the [glossary](#glossary) defines "
        "every measure.")]
    blocks += _finding_boxes(findings)
    blocks += _grid_section(experiment.summary()["base"], summary, results["sweeps"])
    blocks += [Section("Transfer learning per layer", "transfer"),
               _figure_block(_fig_cc_per_layer(results["sweeps"], {
                   t: r[cfg.recommend.default] for t, r in results["recs"].items()}, folder,
                   symbol), captions["cc-per-layer"])]
    blocks += _flows_section(results, folder, base_model.n_les, captions)
    blocks += _recommender_section(experiment, results["sweeps"], results["comparisons"])
    if results["benchmark"] is not None:
        blocks += _benchmark_section(results["benchmark"], folder)
    pairs = {t: load_dataset(experiment.paths.pairs(t)) for t in results["targets"]
             if experiment.paths.pairs(t).exists()}
    if pairs:
        blocks += pairs_section(pairs, results["sweeps"], alpha=cfg.sweep.options.alpha)
    if results["posts"]:
        blocks += _aposteriori_table(results["posts"])
    census = filter_census(base_model.to_dataset(), pad_to=base_model.n_les)
    blocks += [Section("The base network's filters", "filters"),
               _figure_block(_fig_census(census, folder), captions["filter-census"])]
    for t in results["targets"]:
        blocks += _target_section(t, results, folder, base_model.n_les, captions)
    if cfg.budget.enabled:
        blocks += _budget_section(experiment, folder, captions, symbol)
    return blocks + _glossary() + _metadata(experiment) + _config_section(cfg)


def _figure_block(name: str, caption: str) -> Figure:
    return Figure(f"figures/{name}", caption)


def _finding_boxes(findings) -> list:
    """The key findings, one box per target (then one for the whole experiment); each
    sentence links to its section."""
    targets = list(dict.fromkeys(f.target for f in findings))
    return [Box(f"Key findings: {t}" if t else "Key findings: all targets",
                tuple(f"{f.text} [→](#{f.section})" for f in findings if f.target == t))
            for t in targets]


def _flows_section(results, folder, n_les, captions) -> list:
    """The flows' spectra and, per target and variable, how much they differ."""
    flows = results["flows"]
    variables = [str(v) for v in flows.variable.values]
    rows = tuple((str(t), *(format_value(float(flows.max_decades.sel(target=t, variable=v)))
                            for v in variables)) for t in results["targets"])
    return [Section("Flows", "flows"),
            Paragraph("How much each target differs from the base: the largest |log10 "
                      "S_target(k)/S_base(k)| over the resolved shells, in decades, per "
                      "input or output variable."),
            Table(("target", *variables), rows),
            _figure_block(_fig_flow_spectra(results["explains"], folder, n_les),
                          captions["flow-spectra"])]


def _target_section(t, results, folder, n_les, captions) -> list:
    """A target's figures: Π spectra, kernel changes, spectral change, recommenders,
    activation spectra and the a posteriori figures."""
    explain, recs, sweep = results["explains"][t], results["recs"][t], results["sweeps"][t]
    figures = [(_fig_pi_spectra(t, explain, folder, n_les), captions["pi-spectra"]),
               (_fig_kernel_changes(t, explain, folder), captions["kernel-changes"]),
               (_fig_spectral_change(t, explain, folder), captions["spectral-change"]),
               (_fig_recommenders(t, recs, sweep, folder), captions["recommenders"])]
    if "spectral" in recs:
        figures.append((_fig_activation_spectra(t, recs["spectral"], folder),
                        captions["activation-spectra"]))
    post = results["posts"].get(t)
    if post is not None:
        figures += [(_fig_aposteriori(t, post, folder), captions["aposteriori"]),
                    (_fig_aposteriori_pdf(t, post, folder), captions["aposteriori-pdf"]),
                    (_fig_aposteriori_series(t, post, folder), captions["aposteriori-series"])]
    return [Section(f"Target: {t}", anchor(f"target {t}"))] + [
        _figure_block(name, caption) for name, caption in figures]


def _budget_section(experiment, folder, captions, symbol) -> list:
    t = experiment.config.budget.target
    budget = load_dataset(experiment.paths.budget(t))
    return [Section(f"Re-training budget: {t}", "budget"),
            _figure_block(_fig_budget(t, budget, folder, symbol), captions["budget"]),
            *_budget_table(experiment, t, budget)]


def _base_paragraph(base: dict) -> Paragraph:
    """The base network's CC on held-out base data; its learning curve when there is one."""
    text = (f"The base network's CC on held-out base data ({base['n_test']} samples, the "
            f"latest times): **{format_value(base['cc'], 3)}**.")
    curve = base["learning_curve"]
    if len(curve) > 1:
        text += " Trained on subsets of the base training set: " + ", ".join(
            f"{n} samples: {format_value(c, 3)}" for n, c in curve.items()) + "."
    return Paragraph(text)


def _grid_section(base: dict, summary: xr.Dataset, sweeps: dict) -> list:
    """The layer × target grid of mean CC ± s.e. (best set highlighted, best in bold), the
    BNN and baselines under it, and a warning per target with too few seeds."""
    targets = summary.target.values.tolist()
    rows, highlight = [], set()
    for i, layer in enumerate(summary.layer.values.tolist()):
        row = [f"layer {layer}"]
        for j, t in enumerate(targets):
            one = summary.sel(target=t, layer=layer)
            cell = format_mean_sem(float(one.cc_mean), float(one.cc_sem))
            if int(summary.best_layer.sel(target=t)) == layer:
                cell = f"**{cell}**"
            if bool(one.in_best_set):
                highlight.add((i, j + 1))
                cell += " ✓"
            row.append(cell)
        rows.append(tuple(row))
    rows.append(("BNN (no re-training)",
                 *(format_value(float(summary.cc_bnn.sel(target=t)), 3) for t in targets)))
    for b in sorted({str(b) for s in sweeps.values() if "baseline" in s.dims
                     for b in s.baseline.values}):
        rows.append((b, *(format_mean_sem(float(s.baseline_cc_mean.sel(baseline=b)),
                                          float(s.baseline_cc_sem.sel(baseline=b)))
                          if "baseline" in s.dims and b in s.baseline.values else "—"
                          for s in (sweeps[t] for t in targets))))
    blocks = [Section("CC per layer and target", "cc-grid"), _base_paragraph(base),
              Paragraph("CC on held-out target data, mean ± standard error over seeds (two "
                        "significant figures of the s.e.). Bold: the best layer; ✓ and "
                        "highlighted: the best set, the layers not significantly worse than "
                        "the best by a one-sided paired t-test across seeds (α = 0.05)."),
              Table(("", *targets), tuple(rows), frozenset(highlight))]
    for t in targets:
        if bool(summary.low_power.sel(target=t)):
            n = int(summary.n_seeds.sel(target=t))
            blocks.append(Paragraph(
                f"{t}: only {n} seeds. The best set comes from a paired t-test with {n - 1} "
                f"degree{'s' if n != 2 else ''} of freedom and each ± from {n} values; run at least "
                f"{summary.attrs['min_seeds']} seeds ([sweep] seeds) before citing them.",
                warning=True))
    return blocks


def _best(values, lower: bool = True) -> set:
    """Indices of the best finite values (every one tied with it)."""
    values = np.asarray(values, float)
    finite = np.isfinite(values)
    if not finite.any():
        return set()
    best = np.nanmin(values) if lower else np.nanmax(values)
    return {int(i) for i in np.flatnonzero(finite & (values == best))}


def _bold_best(cells: list, values, lower: bool = True) -> list:
    best = _best(values, lower)
    return [f"**{c}**" if i in best else c for i, c in enumerate(cells)]


#: Columns of the a posteriori table: (metric of :func:`xtl.les_metrics`, heading).
_APOSTERIORI_COLUMNS = (
    ("spectrum_error", "energy spectrum error (decades)"),
    ("pdf_distance", "PDF Hellinger distance"),
    ("tail_error", "PDF error at 3–5σ (decades)"),
    ("mean_energy_les", "mean kinetic energy"),
    ("mean_enstrophy_les", "mean enstrophy"),
    ("transfer_les", "energy transfer ⟨ψ̄Π⟩"),
    ("backscatter_les", "backscatter share"),
)


def _mean_sd(summary: xr.Dataset, metric: str) -> str:
    if f"{metric}_mean" not in summary:
        return "—"
    return format_mean_sem(float(summary[f"{metric}_mean"]), float(summary[f"{metric}_std"]))


def _aposteriori_cell_values(post, summary, metric) -> np.ndarray:
    """What 'best' means in a column: the error itself, or the distance to the filtered DNS;
    closures none of whose runs stayed stable are never best."""
    if f"{metric}_mean" not in summary:
        return np.full(summary.sizes["closure"], np.nan)
    values = summary[f"{metric}_mean"].where(summary.n_stable > 0).values.astype(float)
    reference = metric.replace("_les", "_fdns")
    if metric.endswith("_les") and reference in post:
        values = np.abs(values - float(post[reference]))
    return values


def _aposteriori_rows(target, post) -> list:
    """The filtered DNS's row and one per closure, the best per column in bold."""
    from .aposteriori import aposteriori_summary

    summary = aposteriori_summary(post)
    fdns = [format_value(float(post[m.replace("_les", "_fdns")]), 3)
            if m.endswith("_les") and m.replace("_les", "_fdns") in post else "—"
            for m, _ in _APOSTERIORI_COLUMNS]
    columns = []
    for metric, _ in _APOSTERIORI_COLUMNS:
        cells = [_mean_sd(summary.sel(closure=c), metric) for c in post.closure.values]
        columns.append(_bold_best(cells, _aposteriori_cell_values(post, summary, metric)))
    rows = [(target, "filtered DNS", "—", *fdns)]
    for i, closure in enumerate(post.closure.values):
        one = summary.sel(closure=closure)
        stable = f"{int(one.n_stable)}/{int(one.n_runs)}"
        if int(one.n_stable) < int(one.n_runs):
            stable += f" (first blow-up t = {float(one.first_blowup):.3g})"
        rows.append((target, str(closure), stable, *(col[i] for col in columns)))
    return rows


def _aposteriori_table(posts: dict) -> list:
    """Every a posteriori metric per target and closure: mean ± s.d. over the stable runs."""
    rows, lengths = [], []
    for target, post in posts.items():
        if "turnovers" in post.attrs:
            lengths.append(f"{target} {float(post.attrs['t_end']):g} time units = "
                           f"{float(post.attrs['turnovers']):.0f} large-eddy turnover times")
        rows += _aposteriori_rows(target, post)
    length = f" Each run lasts: {'; '.join(lengths)}." if lengths else ""
    return [Section("A posteriori LES", "aposteriori"), Paragraph(
        f"Each closure run from several held-out filtered DNS states.{length} The table gives "
        "how many runs stayed stable, and every metric as mean ± standard deviation over the "
        "stable runs (over all runs, up to their blow-ups, for a closure none of whose runs "
        "was stable). The filtered DNS row gives the reference values. Bold: the best stable "
        "closure per target (the smallest error, or the closest to the filtered DNS). Energy "
        "transfer: the mean of ψ̄Π, the energy the closure takes from the resolved scales; "
        "backscatter share: the part of |ψ̄Π| where it gives energy back."),
        Table(("target", "closure", "stable runs", *(h for _, h in _APOSTERIORI_COLUMNS)),
              tuple(rows))]


def _recommender_rows(experiment, target, sweep, n=None) -> list:
    """Per method: the comparison with the sweep's cells (best rank, regret, ρ in bold)."""
    records = []
    for method in experiment.config.recommend.methods:
        cmp = compare_recommendation(experiment.recommendation(target, method, n), sweep)
        records.append((method, int(cmp.attrs["recommended"]), bool(cmp.hit),
                        int(cmp.recommended_rank), float(cmp.spearman),
                        float(cmp["regret"]) if "regret" in cmp else float("nan"),
                        float(cmp.cost_ratio)))
    columns = [
        [str(r[1]) for r in records], ["yes" if r[2] else "no" for r in records],
        _bold_best([str(r[3]) for r in records], [r[3] for r in records]),
        _bold_best([format_value(r[4]) for r in records], [r[4] for r in records], lower=False),
        _bold_best([format_value(r[5]) for r in records], [r[5] for r in records]),
        [f"{format_value(100 * r[6])}%" for r in records]]
    return [(r[0], *(col[i] for col in columns)) for i, r in enumerate(records)]


_RECOMMENDER_HEAD = ("target / budget", "method", "recommended", "in best set",
                     "rank by mean CC", "Spearman(score, CC)", "regret", "cost / sweep")


def _recommender_section(experiment, sweeps, comparisons) -> list:
    """Every recommender against every target's sweep, and the default's hit rate."""
    rows = []
    default = experiment.config.recommend.default
    for t, sweep in sweeps.items():
        rows += [(t, *r) for r in _recommender_rows(experiment, t, sweep)]
    hits = [bool(c.hit) for c in comparisons.values()]
    few = [f"{t} ({int(s.sizes.get('seed', 1))})" for t, s in sweeps.items()
           if int(s.sizes.get("seed", 1)) < MIN_SEEDS]
    warning = [Paragraph(f"The best sets behind 'in best set' rest on fewer than {MIN_SEEDS} "
                         f"seeds on {', '.join(few)}: tentative.", warning=True)] if few else []
    return [Section("Recommenders against the sweeps", "recommenders"), Paragraph(
        f"The default method (**{default}**) recommended a layer in the best set on "
        f"**{sum(hits)} of {len(hits)}** targets. Bold: the best per target (rank, "
        "Spearman, regret)."), *warning, Table(_RECOMMENDER_HEAD, tuple(rows))]


def pairs_section(pairs: dict, sweeps: dict, *, alpha: float = 0.05, top: int = 5) -> list:
    """Report blocks: per target, the best single layer and the ``top`` pairs by their gain
    over it (:func:`xtl.nn.sweep.pair_gains`), and how many pairs beat it significantly,
    after Holm's correction for the number of pairs (and before it).

    Parameters
    ----------
    pairs, sweeps : dict
        ``{target: pair sweep}`` and ``{target: single-layer sweep}`` (same seeds, subsets).
    alpha : float
        A pair beats the best single layer when the one-sided paired test's
        Holm-adjusted p < alpha.
    """
    from ..nn.sweep import pair_gains

    rows = []
    for t, sweep in pairs.items():
        single = sweeps[t]
        gains = pair_gains(sweep, single)
        best = gains.attrs["best_single"]
        cc = single.cc.sel(layer=best)
        n = cc.sizes["seed"]
        sem = float(cc.std(ddof=1)) / np.sqrt(n) if n > 1 else np.nan
        better, uncorrected = (int((gains[v] < alpha).sum()) for v in ("pvalue_holm", "pvalue"))
        listed = "; ".join(
            f"{p}: {float(sweep.cc.sel(pair=p).mean()):.4f} ({float(g.gain):+.4f} ± "
            f"{float(g.gain_sem):.4f}, p = {float(g.pvalue):.2g})"
            for p, g in ((str(p), gains.sel(pair=p)) for p in gains.pair.values[:top]))
        rows.append((t, f"L{best}: {format_mean_sem(float(cc.mean()), sem)}", listed,
                     f"{better} of {gains.sizes['pair']} ({uncorrected} uncorrected)"))
    return [Section("Pairs of layers", "pairs"),
            Paragraph("Every pair re-trained together under the sweep's seeds and subsets; "
                      "gain: the pair's CC minus the best single layer's, mean ± standard "
                      "error of the paired differences over seeds; p: one-sided paired "
                      "t-test that the pair is better. A pair counts as significantly better "
                      "when its p, Holm-adjusted for the number of pairs, is below "
                      f"α = {alpha}; uncorrected, a share α of pairs no better than the best "
                      "single layer would pass by chance."),
            Table(("target", "best single layer", "best pairs (CC, gain, p)",
                   "pairs significantly better"), tuple(rows))]


def _budget_table(experiment, target, budget) -> list:
    rows = []
    for n in budget.budget.values:
        one = budget.sel(budget=n)
        label = f"{target} / {int(n)} samples (best layer {int(one.best_layer)})"
        main = int(n) == int(experiment.sweep_size(target))
        rows += [(label, *r) for r in _recommender_rows(experiment, target, one,
                                                         None if main else int(n))]
    return [Section("Recommenders at every budget", "budget-recommenders", level=3),
            Table(_RECOMMENDER_HEAD, tuple(rows))]


def _benchmark_cell(one: xr.Dataset) -> str:
    tau = float(one.tau)
    if int(one.layer) < 0:
        return "— (not run)"
    return (f"layer {int(one.layer)}{' ✓' if bool(one.hit) else ''}, regret "
            f"{format_value(float(one.regret))}"
            + (f", τ {format_value(tau)}" if np.isfinite(tau) else "")
            + f", cost {format_value(100 * float(one.cost))}%")


def _benchmark_table(benchmark: xr.Dataset) -> Table:
    """Cases × methods (constants after the methods): choice, regret, τ, cost; the lowest
    regret per case in bold; the mean regret per method as the last row."""
    methods = [str(m) for m in benchmark.method.values]
    rows = []
    for case in benchmark.case.values:
        one = benchmark.sel(case=case)
        cells = [_benchmark_cell(one.sel({"method": m})) for m in methods]
        rows.append((str(case), str(int(one.n_seeds)), str(one.best_set.item()),
                     *_bold_best(cells, one.regret.values)))
    mean = benchmark.regret.mean("case").values
    rows.append(("mean regret", "", "", *_bold_best([format_value(v) for v in mean], mean)))
    head = [f"{m} ({k})" for m, k in zip(methods, benchmark.kind.values)]
    return Table(("case", "seeds", "best set", *head), tuple(rows))


def _fig_benchmark(benchmark: xr.Dataset, folder: Path) -> str:
    """Mean regret per method over the benchmark's cases; constants hatched in grey."""
    fig = _figure((7, 3.6))
    ax = fig.add_subplot()
    mean = benchmark.regret.mean("case")
    sem = benchmark.regret.std("case", ddof=1) / np.sqrt(benchmark.sizes["case"]) \
        if benchmark.sizes["case"] > 1 else xr.zeros_like(mean)
    constant = (benchmark.kind == "constant").values
    x = np.arange(mean.size)
    ax.bar(x[~constant], mean.values[~constant], yerr=sem.values[~constant], capsize=3,
           color="C0", label="recommender")
    ax.bar(x[constant], mean.values[constant], yerr=sem.values[constant], capsize=3,
           color="0.75", hatch="//", label="constant guess")
    ax.set_xticks(x, [str(m) for m in benchmark.method.values], rotation=30, ha="right")
    ax.set_ylabel("mean regret over cases (0 = best layer)")
    ax.set_title(f"recommenders against constant guesses: {benchmark.sizes['case']} cases")
    from .plotting import legend_outside

    legend_outside(ax)
    return _save(fig, folder / "recommend-benchmark.png")


def _benchmark_warning(benchmark: xr.Dataset) -> list:
    few = [f"{c} ({int(n)})" for c, n in zip(benchmark.case.values, benchmark.n_seeds.values)
           if int(n) < MIN_SEEDS]
    return [Paragraph(f"The best sets of {', '.join(few)} rest on fewer than {MIN_SEEDS} "
                      "seeds: their hits and regrets are tentative.", warning=True)] if few else []


def _benchmark_section(benchmark: xr.Dataset, folder: Path) -> list:
    return [Section("Recommender benchmark", "benchmark"), Paragraph(
        f"Every method and constant guess on every benchmark case (a target at a re-training "
        f"set size): the layer chosen (✓ in the best set), its regret, Kendall's τ of the "
        f"scores against the measured {benchmark.attrs.get('metric', 'cc')} (methods only) "
        f"and its cost as a fraction of a 3-seed single-layer sweep. Bold: the lowest regret "
        f"per case and the lowest mean. Default method: "
        f"**{benchmark.attrs.get('default', '?')}**."),
        *_benchmark_warning(benchmark), _benchmark_table(benchmark),
        _figure_block(_fig_benchmark(benchmark, folder), _SENTENCES["benchmark"])]


#: The glossary: (term, definition).
GLOSSARY = (
    ("CC", "Pearson correlation coefficient between the predicted and the true SGS term over "
           "every grid point and sample of held-out target data (the latest times); 1 is a "
           "perfect prediction, 0 none. Nondimensional."),
    ("s.e.", "Standard error of a mean over seeds: the sample standard deviation over √n. "
             "Given with two significant figures, the mean rounded to match."),
    ("seed", "One re-training: its own random subset of the target pool, shuffle and "
             "initialization."),
    ("best set", "The layers whose mean CC is not significantly below the best layer's: a "
                 "one-sided paired t-test across seeds (α = 0.05, no multiple-comparison "
                 "correction); with n seeds it has n − 1 degrees of freedom, so fewer than 3 "
                 "seeds make it tentative."),
    ("regret", "(CC_best − CC_recommended) / (CC_best − CC_BNN), means over seeds: 0 when the "
               "recommended layer is the best, 1 when it does no better than not re-training; "
               "undefined when no layer beats the BNN."),
    ("τ", "Kendall's rank correlation between a recommender's scores and the layers' measured "
          "mean CC; +1 is the measured order."),
    ("flows differ (decades)", "The largest |log10 S_target(k)/S_base(k)| over the resolved "
                               "wavenumber shells of an input's (or the output's) power "
                               "spectrum."),
    ("r, p (spectral change)", "Pearson correlation, across wavenumber shells, of how much "
                               "re-training changed the best layer's kernel spectra and how "
                               "much the flows differ; p is its permutation p-value (shells "
                               "shuffled). It holds when r > 0 and p < 0.05."),
    ("energy spectrum error", "Root mean square over the resolved shells of log10 E_LES(k) − "
                              "log10 E_FDNS(k), in decades."),
    ("Hellinger distance", "Between the vorticity PDFs of the LES and the filtered DNS: H² = "
                           "½ Σ (√p_i − √q_i)²; 0 for equal histograms, 1 for disjoint ones."),
    ("tails", "The PDF error at 3–5σ: mean |log10 p_LES/p_FDNS| at ±3, ±4 and ±5 standard "
              "deviations of the filtered DNS's vorticity, in decades."),
)


def _glossary() -> list:
    return [Section("Glossary", "glossary"), Table(("term", "definition"), GLOSSARY)]


def _machine() -> str:
    """This machine: CPU cores and the GPUs TensorFlow sees (when it is loaded)."""
    import os
    import platform
    import sys

    gpus = 0
    if "tensorflow" in sys.modules:
        gpus = len(sys.modules["tensorflow"].config.list_physical_devices("GPU"))
    return (f"{platform.node() or 'unknown host'}, {os.cpu_count()} CPU cores, "
            + (f"{gpus} GPU(s)" if gpus else "no GPU"))


def _stage_rows(paths) -> tuple:
    """Per stage manifest: the stage, its wall time and when it finished (if recorded)."""
    rows = []
    for manifest in sorted(paths.root.joinpath("stages").glob("*.json")):
        try:
            record = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        seconds = record.get("seconds")
        rows.append((manifest.stem, "—" if seconds is None else f"{float(seconds):.1f}",
                     str(record.get("finished", "—"))))
    return tuple(rows)


def _metadata(experiment) -> list:
    """xtl's version, the date, the machine and the wall time of every stage."""
    import datetime

    from .._version import __version__

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = _stage_rows(experiment.paths)
    total = sum(float(r[1]) for r in rows if r[1] != "—")
    return [Section("Run metadata", "metadata"), Table(("item", "value"), (
        ("xtl version", __version__), ("report written", now),
        ("machine (report)", _machine()), ("stages' wall time", f"{total:.0f} s"))),
        Paragraph("Wall time per stage, as its manifest records it (a stage skipped as "
                  "unchanged keeps the time of the run that made its outputs; the DNS "
                  "ensembles of several flows run together before their data stages)."),
        Table(("stage", "wall time (s)", "finished"), rows)]


def _flatten(prefix: str, value) -> list:
    """``(dotted key, value)`` rows of a nested config dict (lists of scalars joined)."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flatten(f"{prefix}.{k}"
                                                                  if prefix else k, v)]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [row for i, v in enumerate(value) for row in _flatten(f"{prefix}[{i}]", v)]
    if isinstance(value, list):
        return [(prefix, ", ".join(str(v) for v in value))]
    return [(prefix, str(value))]


def _config_section(cfg) -> list:
    """The configuration, every setting (defaults included), one row per key."""
    rows = _flatten("", cfg.to_dict())
    return [Section("Configuration", "configuration"),
            Paragraph("Every setting of the run, defaults included (config.json in the "
                      "output folder holds the tables as written)."),
            Table(("setting", "value"), tuple(rows))]
