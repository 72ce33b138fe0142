"""The experiment report: ``report.html`` with PNG figures beside it, readable offline.

Every figure is drawn from the netCDF results of :mod:`xtl.experiment.stages` (the filter
census from the saved base model), and has one sentence under it saying what it
shows. Figures are ``matplotlib.figure.Figure`` objects saved directly: writing a
report never touches pyplot or switches the matplotlib backend (of a notebook, say).
"""
from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import xarray as xr

from ..data.files import atomic_path, write_text_atomically
from ..data.netcdf import load_dataset
from ..explain.recommend import compare_recommendation, recommended_layers
from ..nn.spec import Variables

__all__ = ["write_report", "REPORT_FIGURES", "OPTIONAL_FIGURES"]

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
#: Figure kinds of optional stages: ``budget`` with a ``[budget]`` section.
OPTIONAL_FIGURES = ("budget",)


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


def _fig_cc_per_layer(sweeps: dict, recs: dict, folder: Path, symbol: str = "Π") -> str:
    """Mean CC ± s.e. over seeds of each single-layer TLNN, with the BNN and the baselines
    (``symbol``: the network's output)."""
    from matplotlib.lines import Line2D

    fig = _figure((7.5, 4.2))
    ax = fig.add_subplot()
    for i, (target, sweep) in enumerate(sweeps.items()):
        color = f"C{i}"
        layers = sweep.layer.values
        ax.errorbar(layers, sweep.cc_mean, yerr=sweep.cc_sem, fmt="o-", color=color,
                    capsize=3, mfc="white", label=f"TLNN on {target}")
        best = sweep.best_set.values.astype(bool)
        ax.plot(layers[best], sweep.cc_mean.values[best], "o", color=color, zorder=3)
        ax.axhline(float(sweep.base_cc), color=color, ls="--", lw=1)
        for b, style in (("scratch", ":"), ("full_target", "-.")):
            if "baseline" in sweep.dims and b in sweep.baseline.values:
                ax.axhline(float(sweep.baseline_cc_mean.sel(baseline=b)), color=color, ls=style,
                           lw=1)
        for layer in recommended_layers(recs[target]):
            ax.plot([layer], [float(sweep.cc_mean.sel(layer=layer))], "*", ms=15, color=color,
                    markeredgecolor="k", zorder=4)
    handles = [Line2D([], [], color="k", ls=ls, label=lab) for ls, lab in
               (("--", "BNN"), (":", "from scratch (small set)"), ("-.", "full target set"))]
    handles.append(Line2D([], [], marker="*", ms=12, color="w", markeredgecolor="k",
                          label="recommended"))
    leg1 = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.add_artist(leg1)
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8)
    ax.set_xlabel("re-trained layer")
    ax.set_ylabel(f"CC of {symbol} on held-out target data")
    ax.set_xticks(list(next(iter(sweeps.values())).layer.values))
    ax.set_title("single-layer transfer learning: mean ± s.e. over seeds (filled: best set)")
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
                    "shuffle): each layer re-trained alone (filled dots: the best set, not "
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


def write_report(experiment) -> Path:
    """Draw every figure and write ``report.html`` into ``experiment.out``; returns its path."""
    from ..explain.kernels import filter_census

    paths = experiment.paths
    folder = paths.figures
    folder.mkdir(exist_ok=True)
    cfg = experiment.config
    targets = [t.name for t in cfg.targets]
    sweeps = {t: load_dataset(paths.sweep(t)) for t in targets}
    recs = {t: {m: experiment.recommendation(t, m) for m in cfg.recommend.methods}
            for t in targets}  # the main budget's
    default = {t: recs[t][cfg.recommend.default] for t in targets}
    explains = {t: load_dataset(paths.explain(t)) for t in targets}
    posts = {t: load_dataset(paths.aposteriori(t)) for t in targets
             if paths.aposteriori(t).exists()}
    base_model = experiment.load_model("base")
    base = base_model.to_dataset()
    n_les = base_model.n_les  # the LES grid it was trained on

    captions = _captions(base_model.variables)
    symbol = "Π" if base_model.variables == Variables() else ", ".join(base_model.variables.outputs)
    sections = [("Flows", [(_fig_flow_spectra(explains, folder, n_les),
                            captions["flow-spectra"])]),
                ("Transfer learning per layer",
                 [(_fig_cc_per_layer(sweeps, default, folder, symbol), captions["cc-per-layer"])]),
                ("The base network's filters",
                 [(_fig_census(filter_census(base, pad_to=n_les), folder),
                   captions["filter-census"])])]
    for t in targets:
        figures = [
            (_fig_pi_spectra(t, explains[t], folder, n_les), captions["pi-spectra"]),
            (_fig_kernel_changes(t, explains[t], folder), captions["kernel-changes"]),
            (_fig_spectral_change(t, explains[t], folder), captions["spectral-change"]),
            (_fig_recommenders(t, recs[t], sweeps[t], folder), captions["recommenders"]),
        ]
        if "spectral" in recs[t]:
            figures.append((_fig_activation_spectra(t, recs[t]["spectral"], folder),
                            captions["activation-spectra"]))
        if t in posts:
            figures += [(_fig_aposteriori(t, posts[t], folder), captions["aposteriori"]),
                        (_fig_aposteriori_pdf(t, posts[t], folder),
                         captions["aposteriori-pdf"]),
                        (_fig_aposteriori_series(t, posts[t], folder),
                         captions["aposteriori-series"])]
        sections.append((f"Target: {t}", figures))
    tables = [_summary_table(experiment.summary()),
              _recommender_table(experiment, sweeps)]
    pairs = {t: load_dataset(paths.pairs(t)) for t in targets if paths.pairs(t).exists()}
    if pairs:
        tables.append(pairs_table(pairs, sweeps, alpha=cfg.sweep.options.alpha))
    if posts:
        tables.append(_aposteriori_table(posts))
    if cfg.budget.enabled:
        t = cfg.budget.target
        budget = load_dataset(paths.budget(t))
        sections.append((f"Re-training budget: {t}", [(_fig_budget(t, budget, folder, symbol),
                                                        captions["budget"])]))
        tables.append(_budget_table(experiment, t, budget))
    return write_text_atomically(paths.report, _html(experiment, sections, "".join(tables)))


def _pm(mean, sem) -> str:
    return f"{mean:.3f}" if not np.isfinite(sem) else f"{mean:.3f} ± {sem:.3f}"


def _summary_table(summary) -> str:
    """Per target: flows in decades, CC of BNN, every layer, baselines; best set; epochs."""
    base = summary["base"]
    curve = ", ".join(f"{n} samples: {c:.3f}" for n, c in base["learning_curve"].items())
    head = (f"<p>The base network's CC on held-out base data ({base['n_test']} samples, the "
            f"latest times): <b>{base['cc']:.3f}</b>. Trained on subsets of the base training "
            f"set: {curve}.</p>")
    rows = []
    for t, s in summary["targets"].items():
        decades = ", ".join(f"{v} {d:.2f}" for v, d in s["decades"].items())
        layers = "<br>".join(f"L{k}: {_pm(*v)} ({s['epochs'][k]:.0f} ep.)"
                             for k, v in s["cc_tlnn"].items())
        baselines = "<br>".join(f"{b}: {_pm(*v)}" for b, v in s["baselines"].items()) or "—"
        rows.append(f"<tr><td>{html.escape(t)}</td><td>{decades}</td><td>{s['cc_bnn']:.3f}</td>"
                    f"<td>{layers}</td><td>{baselines}</td><td>{s['best_set']}</td></tr>")
    return ("<h2>Summary</h2>" + head + "<p>CC on held-out target data, mean ± standard error over seeds "
            "(epochs: mean epochs each re-training ran before early stopping). The best set "
            "holds the layers not significantly worse than the best by a one-sided paired "
            "t-test across seeds (α = 0.05).</p><table><tr><th>target</th><th>flows differ "
            "(largest |log10 S_t/S_b|, decades)</th><th>CC BNN</th><th>CC TLNN per layer</th>"
            "<th>baselines</th><th>best set</th></tr>" + "".join(rows) + "</table>")


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


def _aposteriori_table(posts: dict) -> str:
    """Every a posteriori metric per target and closure: mean ± s.d. over the stable runs."""
    from .aposteriori import aposteriori_summary

    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in _APOSTERIORI_COLUMNS)
    rows, lengths = [], []
    for target, post in posts.items():
        if "turnovers" in post.attrs:
            lengths.append(f"{html.escape(target)} {float(post.attrs['t_end']):g} time units = "
                           f"{float(post.attrs['turnovers']):.0f} large-eddy turnover times")
        summary = aposteriori_summary(post)
        fdns = {m: float(post[m.replace("_les", "_fdns")]) if m.endswith("_les") and
                m.replace("_les", "_fdns") in post else None for m, _ in _APOSTERIORI_COLUMNS}
        cells = "".join(f"<td>{'—' if v is None else f'{v:.3g}'}</td>" for v in fdns.values())
        rows.append(f"<tr><td>{html.escape(target)}</td><td>filtered DNS</td><td>—</td>"
                    f"{cells}</tr>")
        for closure in post.closure.values:
            one = summary.sel(closure=closure)
            n_stable, n_runs = int(one.n_stable), int(one.n_runs)
            stable = f"{n_stable}/{n_runs}"
            if n_stable < n_runs:
                stable += f" (first blow-up t = {float(one.first_blowup):.3g})"
            cells = "".join(
                f"<td>{_mean_sd(one, m)}</td>" for m, _ in _APOSTERIORI_COLUMNS)
            rows.append(f"<tr><td>{html.escape(target)}</td><td>{html.escape(str(closure))}"
                        f"</td><td>{stable}</td>{cells}</tr>")
    length = f" Each run lasts: {'; '.join(lengths)}." if lengths else ""
    return ("<h2>A posteriori LES</h2><p>Each closure run from several held-out filtered "
            f"DNS states.{length} The table gives how many runs stayed stable, and every "
            "metric as mean ± standard "
            "deviation over the stable runs (over all runs, up to their blow-ups, for a "
            "closure none of whose runs was stable). The filtered DNS row gives the reference "
            "values. Energy transfer: the mean of ψ̄Π, the energy the closure takes from the "
            "resolved scales; backscatter share: the part of |ψ̄Π| where it gives energy "
            "back.</p><table><tr><th>target</th><th>closure</th><th>stable runs</th>"
            + head + "</tr>" + "".join(rows) + "</table>")


def _mean_sd(summary: xr.Dataset, metric: str) -> str:
    if f"{metric}_mean" not in summary:
        return "—"
    mean, sd = float(summary[f"{metric}_mean"]), float(summary[f"{metric}_std"])
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.3g}" if not np.isfinite(sd) else f"{mean:.3g} ± {sd:.2g}"


def _recommender_rows(experiment, target, sweep, n=None) -> list:
    rows = []
    for method in experiment.config.recommend.methods:
        rec = experiment.recommendation(target, method, n)
        cmp = compare_recommendation(rec, sweep)
        rows.append((method, int(cmp.attrs["recommended"]), bool(cmp.hit),
                     int(cmp.recommended_rank), float(cmp.spearman), float(cmp.cost_ratio)))
    return rows


def _rows_html(label, rows) -> str:
    return "".join(
        f"<tr><td>{label}</td><td>{html.escape(m)}</td><td>{r}</td>"
        f"<td>{'yes' if h else 'no'}</td><td>{k}</td><td>{rho:.2f}</td>"
        f"<td>{100 * c:.1f}%</td></tr>" for m, r, h, k, rho, c in rows)


_RECOMMENDER_HEAD = ("<table><tr><th>target / budget</th><th>method</th><th>recommended</th>"
                     "<th>in best set</th><th>rank by mean CC</th><th>Spearman(score, CC)</th>"
                     "<th>cost / sweep</th></tr>")


def _recommender_table(experiment, sweeps) -> str:
    """Every recommender against every target's sweep, and the default's hit rate."""
    body, hits = [], []
    default = experiment.config.recommend.default
    for t, sweep in sweeps.items():
        rows = _recommender_rows(experiment, t, sweep)
        hits += [h for m, _, h, *_ in rows if m == default]
        body.append(_rows_html(html.escape(t), rows))
    return (f"<h2>Recommenders against the sweeps</h2><p>The default method "
            f"(<b>{html.escape(default)}</b>) recommended a layer in the best set on "
            f"<b>{sum(hits)} of {len(hits)}</b> targets.</p>" + _RECOMMENDER_HEAD
            + "".join(body) + "</table>")


def pairs_table(pairs: dict, sweeps: dict, *, alpha: float = 0.05, top: int = 5) -> str:
    """HTML: per target, the best single layer and the ``top`` pairs by their gain over it
    (:func:`xtl.nn.sweep.pair_gains`), and how many pairs beat it significantly.

    Parameters
    ----------
    pairs, sweeps : dict
        ``{target: pair sweep}`` and ``{target: single-layer sweep}`` (same seeds, subsets).
    alpha : float
        A pair beats the best single layer when the one-sided paired test's p < alpha.
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
        better = int((gains.pvalue < alpha).sum())
        listed = "<br>".join(
            f"{p}: {float(sweep.cc.sel(pair=p).mean()):.4f} ({float(g.gain):+.4f} ± "
            f"{float(g.gain_sem):.4f}, p = {float(g.pvalue):.2g})"
            for p, g in ((str(p), gains.sel(pair=p)) for p in gains.pair.values[:top]))
        rows.append(f"<tr><td>{html.escape(t)}</td><td>L{best}: {_pm(float(cc.mean()), sem)}"
                    f"</td><td>{listed}</td><td>{better} of {gains.sizes['pair']}</td></tr>")
    return ("<h2>Pairs of layers</h2><p>Every pair re-trained together under the sweep's "
            "seeds and subsets; gain: the pair's CC minus the best single layer's, mean ± "
            "standard error of the paired differences over seeds; p: one-sided paired t-test "
            f"that the pair is better (significant below α = {alpha}).</p><table><tr>"
            "<th>target</th><th>best single layer</th><th>best pairs (CC, gain, p)</th>"
            "<th>pairs significantly better</th></tr>" + "".join(rows) + "</table>")


def _budget_table(experiment, target, budget) -> str:
    body = []
    for n in budget.budget.values:
        one = budget.sel(budget=n)
        label = f"{html.escape(target)} / {int(n)} samples (best layer {int(one.best_layer)})"
        body.append(_rows_html(label, _recommender_rows(experiment, target, one, int(n) if int(
            n) != int(experiment.sweep_size(target)) else None)))
    return "<h2>Recommenders at every budget</h2>" + _RECOMMENDER_HEAD + "".join(body) + \
        "</table>"


def _html(experiment, sections, tables) -> str:
    cfg = experiment.config
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>xtl report: {html.escape(cfg.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:auto;padding:1em}"
        "img{max-width:100%}figure{margin:1.5em 0}figcaption{color:#333}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px}</style>",
        "</head><body>",
        f"<h1>xtl report: {html.escape(cfg.name)}</h1>",
        f"<p>Base flow <b>{html.escape(cfg.base.name)}</b>; targets "
        f"{', '.join('<b>' + html.escape(t.name) + '</b>' for t in cfg.targets)}. "
        "A CNN closure trained on the base flow (BNN) is re-trained one layer at a time on a "
        "small target data set (TLNN) under several seeds; recommenders choose a layer before "
        "any re-training.</p>",
        tables,
    ]
    for title, figures in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for name, sentence in figures:
            parts.append(f"<figure><img src='figures/{html.escape(name)}' alt='{html.escape(name)}'>"
                         f"<figcaption>{html.escape(sentence)}</figcaption></figure>")
    parts.append("<h2>Configuration</h2><pre>"
                 + html.escape(json.dumps(cfg.to_dict(), indent=1)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
