"""The experiment report: ``report.html`` with PNG figures beside it, readable offline.

Every figure is drawn from the netCDF results of :mod:`xtl.pipeline` (the filter
census from the saved base model), and has one sentence under it saying what it
shows. Figures are ``matplotlib.figure.Figure`` objects saved directly: writing a
report never touches pyplot or switches the matplotlib backend (of a notebook, say).
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .explain import recommended_layers

__all__ = ["write_report", "REPORT_FIGURES"]

#: Figure kinds every report contains (per target where it says so).
REPORT_FIGURES = (
    "flow-spectra",
    "cc-per-layer",
    "pi-spectra",
    "kernel-changes",
    "filter-census",
    "activation-spectra",
    "recommendation",
    "aposteriori",
)


def _figure(figsize):
    """A new Figure outside pyplot (no backend, no global state), with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _save(fig, path: Path) -> str:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    return path.name


def _open(path):
    with xr.open_dataset(path) as ds:
        return ds.load()


def _resolved(da: xr.DataArray, n_les: int) -> xr.DataArray:
    """Shells k < n_les/2: those the square LES grid holds completely."""
    return da.sel(k=slice(None, n_les // 2 - 1))


def _fig_flow_spectra(explains: dict, folder: Path, n_les: int) -> str:
    """Energy spectra of the base flow and every target (LES level, time means)."""
    from .plotting import plot_spectra

    curves = {}
    for target, ex in explains.items():
        curves.setdefault("base", _resolved(ex["energy_base"], n_les))
        curves[target] = _resolved(ex["energy_target"], n_les)
    fig = _figure((6, 4))
    plot_spectra(curves, title="energy spectra of the filtered flows", ylabel="E(k)",
                 ax=fig.add_subplot())
    return _save(fig, folder / "flow-spectra.png")


def _fig_cc_per_layer(sweeps: dict, recs: dict, folder: Path) -> str:
    """CC of the BNN and of each single-layer TLNN on every target's test data."""
    from .plotting import legend_outside

    fig = _figure((7, 4))
    ax = fig.add_subplot()
    for i, (target, sweep) in enumerate(sweeps.items()):
        color = f"C{i}"
        ax.plot(sweep.layer, sweep.cc, "o-", color=color, label=f"TLNN on {target}")
        ax.axhline(float(sweep.base_cc), color=color, ls="--", lw=1, label=f"BNN on {target}")
        for layer in recommended_layers(recs[target]):
            ax.plot([layer], [float(sweep.cc.sel(layer=layer))], "*", ms=16, color=color,
                    markeredgecolor="k")
    ax.set_xlabel("re-trained layer")
    ax.set_ylabel("CC of Π on held-out target data")
    ax.set_xticks(list(next(iter(sweeps.values())).layer.values))
    legend_outside(ax)
    ax.set_title("single-layer transfer learning (★ recommended)")
    return _save(fig, folder / "cc-per-layer.png")


def _fig_pi_spectra(target: str, ex: xr.Dataset, folder: Path, n_les: int) -> str:
    """Power spectra of Π: truth, BNN and the best TLNN on one target."""
    from .plotting import plot_spectra

    best = ex.attrs.get("best_layer", "?")
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
    base, tgt = _activation_pair(rec)
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


def _fig_recommendation(target: str, rec: xr.Dataset, sweep: xr.Dataset, folder: Path) -> str:
    """The framework's score per layer against the CC measured by the sweep."""
    fig = _figure((7, 3.6))
    ax1 = fig.add_subplot()
    layers = rec.layer.values
    ax1.bar(layers, rec.score.values, color="tab:gray", alpha=0.6, label="score (before TL)")
    ax1.set_xlabel("layer")
    ax1.set_xticks(layers)
    ax1.set_ylabel("recommendation score")
    ax2 = ax1.twinx()
    ax2.plot(sweep.layer, sweep.cc, "o-", color="tab:red", label="measured CC (after TL)")
    ax2.set_ylabel("CC of TLNN", color="tab:red")
    ax1.set_title(f"{target}: recommended layer(s) {recommended_layers(rec)}")
    fig.legend(loc="outside right upper", fontsize=8)
    return _save(fig, folder / f"recommendation-{target}.png")


def _fig_aposteriori(target: str, post: xr.Dataset, folder: Path) -> str:
    """Energy spectra of the LES with each closure against the filtered DNS."""
    from .plotting import legend_outside

    fig = _figure((7, 4))
    ax = fig.add_subplot()
    if "energy_fdns" in post:
        fdns = post.energy_fdns.isel(closure=0)
        fdns = fdns.where(fdns.k >= 1, drop=True)
        ax.loglog(fdns.k, fdns, "k-", lw=2, label="filtered DNS")
    for i, closure in enumerate(post.closure.values):
        stable = bool(post.stable.sel(closure=closure))
        if "energy_les" in post and stable:
            e = post.energy_les.sel(closure=closure)
            e = e.where(e.k >= 1, drop=True)
            style, marker = _LINE_STYLES[i % len(_LINE_STYLES)]
            ax.loglog(e.k, e, linestyle=style, marker=marker, markevery=0.15, ms=4,
                      color=f"C{i}", label=str(closure))
        elif not stable:
            ax.plot([], [], "x", label=f"{closure}: unstable")
    kmax = int(post.attrs.get("kmax", post.k.max()))
    if "energy_fdns" in post:
        ax.set_ylim(bottom=float(fdns.sel(k=slice(1, kmax)).min()) / 10)
    ax.axvline(kmax, color="gray", ls=":", lw=1)
    ax.set_xlabel("k (dotted: the LES cutoff)")
    ax.set_ylabel("E(k)")
    ax.set_title(f"a posteriori LES on {target}")
    legend_outside(ax)
    return _save(fig, folder / f"aposteriori-{target}.png")


#: (line style, marker) of the closures in the a posteriori figure: no two alike, none solid
#: (the filtered DNS is the solid black line).
_LINE_STYLES = (("--", "o"), ("-.", "s"), (":", "^"), ((0, (5, 1, 1, 1)), "D"),
                ((0, (1, 3)), "v"), ((0, (8, 2)), "x"))


def _activation_pair(rec: xr.Dataset):
    """(base, target) activation spectra ``(layer, channel, k)`` of a recommendation."""
    return rec["activation_spectrum_base"], rec["activation_spectrum_target"]


_SENTENCES = {
    "flow-spectra": "Energy spectra of the filtered base and target flows: the targets differ "
                    "from the base where these curves separate.",
    "cc-per-layer": "Correlation coefficient of Π predicted on held-out target data by the base "
                    "network (dashed) and by the network with one layer re-trained (dots); the star "
                    "marks the layer recommended before any re-training.",
    "pi-spectra": "Power spectrum of the SGS term Π on the target: the truth, the base network and "
                  "the best single-layer transfer-learned network.",
    "kernel-changes": "Fourier magnitude of the kernels that transfer learning changed most, "
                      "before and after re-training, over (kx, ky) centred at k = 0, on one "
                      "colour scale.",
    "filter-census": "Which fraction of each base-network layer's kernels (their number under "
                     "the layer) act as low-, high-, band-pass, Gabor or all-pass filters.",
    "activation-spectra": "Spectra of each layer's outputs on base and on target inputs: where they "
                          "start to differ shows which layer first sees the new flow.",
    "recommendation": "The framework's score per layer (bars, computed before any re-training) "
                      "against the CC each single-layer re-training achieved (line).",
    "aposteriori": "Energy spectra of LES run with each closure from the same filtered DNS state, "
                   "against the filtered DNS.",
}


def write_report(experiment) -> Path:
    """Draw every figure and write ``report.html`` into ``experiment.out``.

    Returns
    -------
    Path
        The report's path.
    """
    from .spectral import filter_census

    out = Path(experiment.out)
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    targets = [t.name for t in experiment.config.targets]
    res = out / "results"
    sweeps = {t: _open(res / f"sweep-{t}.nc") for t in targets}
    recs = {t: _open(res / f"recommend-{t}.nc") for t in targets}
    explains = {t: _open(res / f"explain-{t}.nc") for t in targets}
    posts = {t: _open(res / f"aposteriori-{t}.nc") for t in targets
             if (res / f"aposteriori-{t}.nc").exists()}
    base_model = experiment.load_model("base")
    base = base_model.to_dataset()
    n_les = int(base_model.provenance["grid"][-1])  # the LES grid it was trained on

    sections = [("Flows", [(_fig_flow_spectra(explains, folder, n_les),
                                    _SENTENCES["flow-spectra"])]),
                ("Transfer learning per layer",
                 [(_fig_cc_per_layer(sweeps, recs, folder), _SENTENCES["cc-per-layer"])]),
                ("The base network's filters",
                 [(_fig_census(filter_census(base, n=n_les), folder), _SENTENCES["filter-census"])])]
    for t in targets:
        figures = [
            (_fig_pi_spectra(t, explains[t], folder, n_les), _SENTENCES["pi-spectra"]),
            (_fig_kernel_changes(t, explains[t], folder), _SENTENCES["kernel-changes"]),
            (_fig_activation_spectra(t, recs[t], folder), _SENTENCES["activation-spectra"]),
            (_fig_recommendation(t, recs[t], sweeps[t], folder), _SENTENCES["recommendation"]),
        ]
        if t in posts:
            figures.append((_fig_aposteriori(t, posts[t], folder), _SENTENCES["aposteriori"]))
        sections.append((f"Target: {t}", figures))
    summary = experiment.summary()
    path = out / "report.html"
    tmp = out / "report.html.tmp"
    tmp.write_text(_html(experiment, sections, summary))
    os.replace(tmp, path)
    return path


def _summary_table(summary) -> str:
    rows = []
    for t, s in summary["targets"].items():
        best_layer = max(s["cc_tlnn"], key=s["cc_tlnn"].get)
        rows.append(
            f"<tr><td>{html.escape(t)}</td><td>{s['cc_bnn']:.3f}</td>"
            f"<td>{best_layer} ({s['cc_tlnn'][best_layer]:.3f})</td>"
            f"<td>{s['recommended']}</td><td>{s['rank_in_sweep']:.0f}</td>"
            f"<td>{s['spearman']:.2f}</td></tr>")
    return ("<table><tr><th>target</th><th>CC BNN</th><th>best layer (CC TLNN)</th>"
            "<th>recommended</th><th>its rank in the sweep</th><th>Spearman(score, CC)</th></tr>"
            + "".join(rows) + "</table>")


def _html(experiment, sections, summary) -> str:
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
        "small target data set (TLNN); the framework recommends a layer before any re-training.</p>",
        _summary_table(summary),
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
