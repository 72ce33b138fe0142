"""The report's statements: key findings generated from constructed result files say the
right thing in each case, every number they state is the summary file's, the statistics
are rounded as stated, and both renderings (HTML, Markdown) hold the same content."""
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xtl.experiment import report
from xtl.experiment.document import (Box, Figure, Paragraph, Section, Table, render_html,
                                     render_markdown)
from xtl.experiment.findings import (Finding, format_mean_sem, format_value, key_findings,
                                     report_summary)
from xtl.explain.recommend import compare_recommendation
from xtl.nn.sweep import best_set

sys.path.insert(0, str(Path(__file__).parent))
from test_report_figures import BENCH_METHODS, BENCH_REGRET, aposteriori, benchmark  # noqa: E402

LAYERS = [1, 2, 3, 4]


def sweep(means, base_cc=0.6, n_seeds=3, spread=0.002):
    """A single-layer sweep (results/sweep-*.nc's schema) whose seeds scatter by
    ``spread`` around ``means`` per layer."""
    scale = 1.0 + 0.25 * np.arange(len(means))  # unequal: the paired differences vary
    offsets = spread * np.outer(scale, np.linspace(-1.0, 1.0, n_seeds))  # zero mean per layer
    cc = xr.DataArray(np.asarray(means)[:, None] + offsets, dims=("layer", "seed"),
                      coords={"layer": LAYERS[:len(means)], "seed": np.arange(n_seeds)})
    stats = best_set(cc)
    return xr.Dataset({"cc": cc, "cc_mean": cc.mean("seed"),
                       "cc_sem": cc.std("seed", ddof=1) / np.sqrt(n_seeds),
                       "best_set": stats["in_best_set"], "base_cc": base_cc,
                       "train_seconds": xr.ones_like(cc), "epochs_run": 10 + 0 * cc},
                      attrs={"n_samples": 4})


def recommendation(layer):
    score = np.zeros(len(LAYERS))
    score[LAYERS.index(layer)] = 1.0
    return xr.Dataset({"score": ("layer", score)}, coords={"layer": LAYERS},
                      attrs={"recommended": [layer]})


def explain(r, p):
    return xr.Dataset(attrs={"best_layer": 2, "change_correlation": r, "change_pvalue": p})


def flows(targets, decades=0.8):
    return xr.Dataset({"largest_decades": ("target", [decades] * len(targets))},
                      coords={"target": targets})


def summarize(*, means=(0.70, 0.80, 0.75, 0.65), base_cc=0.6, recommended=2, r=0.7,
              p=0.01, n_seeds=3, post=None, bench=None):
    """Summary and findings of one constructed target ``"t"``."""
    sw = sweep(np.array(means), base_cc, n_seeds)
    cmp = compare_recommendation(recommendation(recommended), sw)
    summary = report_summary(flows(["t"]), {"t": sw}, {"t": explain(r, p)},
                             {} if post is None else {"t": post}, {"t": cmp}, bench)
    return summary, key_findings(summary)


def texts(findings):
    return " ".join(f.text for f in findings)


@pytest.mark.parametrize("means, base_cc, verdict", [
    ((0.70, 0.80, 0.75, 0.65), 0.6, "TL helped a priori"),
    ((0.59, 0.60, 0.58, 0.55), 0.6, "TL made no clear difference a priori"),
    ((0.50, 0.52, 0.45, 0.40), 0.6, "TL hurt a priori"),
])
def test_whether_tl_helped_a_priori_follows_the_gain_against_two_standard_errors(
        means, base_cc, verdict):
    summary, findings = summarize(means=means, base_cc=base_cc)
    assert verdict in texts(findings)
    gain = float(summary.tl_gain.sel(target="t"))
    assert gain == pytest.approx(max(means) - base_cc)
    others = {"TL helped a priori", "TL made no clear difference a priori",
              "TL hurt a priori"} - {verdict}
    assert not any(o in texts(findings) for o in others)


def test_a_hit_and_a_miss_are_stated_with_their_regret():
    summary, findings = summarize(recommended=2)  # layer 2 is the best: regret 0
    one = next(f for f in findings if f.section == "recommenders")
    assert "the recommended layer 2 is in the best set, regret 0." in one.text
    assert float(summary.regret.sel(target="t")) == 0.0
    summary, findings = summarize(recommended=4)  # 0.65: (0.80 - 0.65) / (0.80 - 0.60)
    one = next(f for f in findings if f.section == "recommenders")
    assert "the recommended layer 4 is outside the best set, regret 0.75." in one.text
    assert float(summary.regret.sel(target="t")) == pytest.approx(0.75)
    assert "The best set is layer 2;" in one.text  # one layer: singular
    summary, findings = summarize(means=(0.70, 0.80, 0.80, 0.65))  # a tie: both in it
    one = next(f for f in findings if f.section == "recommenders")
    assert "The best set is layers 2, 3;" in one.text


@pytest.mark.parametrize("r, p, held", [(0.7, 0.01, True), (0.7, 0.2, False),
                                        (-0.5, 0.01, False)])
def test_whether_the_filters_changed_where_the_flows_differ_needs_r_above_0_and_p_below_alpha(
        r, p, held):
    summary, findings = summarize(r=r, p=p)
    text = texts(findings)
    assert ("\" held for layer 2" in text) is held
    assert ("did not hold" in text) is (not held)
    assert f"r = {format_value(r)}, p = {format_value(p)}" in text
    assert bool(summary.change_held.sel(target="t")) is held


def test_the_shallowest_layer_is_said_best_only_when_it_is():
    _, findings = summarize(means=(0.80, 0.70, 0.65, 0.62))
    assert "The shallowest layer (1) was the best to re-train." in texts(findings)
    _, findings = summarize()
    assert ("The shallowest layer (1) was not the best (layer 2 was); it is not in the best "
            "set.") in texts(findings)


def test_two_seeds_give_the_low_power_warning_and_three_do_not():
    summary, findings = summarize(n_seeds=2)
    warnings = [f for f in findings if f.text.startswith("Warning")]
    assert len(warnings) == 1 and "only 2 seeds" in warnings[0].text
    assert bool(summary.low_power.sel(target="t"))
    grid = render_markdown("r", report._grid_section(
        {"cc": 0.9, "n_test": 5, "learning_curve": {10: 0.9}}, summary,
        {"t": sweep(np.array([0.7, 0.8, 0.75, 0.65]), n_seeds=2)}))
    assert "> ⚠ t: only 2 seeds. The best set comes from a paired t-test with 1 degree of" \
           in grid
    summary, findings = summarize(n_seeds=3)
    assert not [f for f in findings if f.text.startswith("Warning")]
    grid = render_markdown("r", report._grid_section(
        {"cc": 0.9, "n_test": 5, "learning_curve": {10: 0.9}}, summary,
        {"t": sweep(np.array([0.7, 0.8, 0.75, 0.65]))}))
    assert "⚠" not in grid


def test_aposteriori_findings_name_the_closest_closure_and_whether_tl_improved():
    post = aposteriori()  # BNN: spectrum error 0.2 (2 runs); TLNN: 0.1 (its one stable run)
    summary, findings = summarize(post=post)
    one = next(f for f in findings if f.section == "aposteriori")
    assert "closest to the filtered DNS: TLNN by energy spectrum error;" in one.text
    bnn = float(summary.bnn_error.sel(target="t", measure="spectrum_error"))
    tlnn = float(summary.tlnn_error.sel(target="t", measure="spectrum_error"))
    assert (bnn, tlnn) == (pytest.approx(0.2), pytest.approx(0.1))
    improved = int(summary.aposteriori_improved.sel(target="t"))
    expected = sum(float(post[m].sel(closure="TLNN", initial_state=0))
                   < float(post[m].sel(closure="BNN").mean()) for m in
                   ("spectrum_error", "pdf_distance", "tail_error"))
    assert improved == expected
    assert f"TL improved on the BNN on {expected} of 3 measures" in one.text
    _, findings = summarize()  # no a posteriori runs: nothing said about them
    assert not [f for f in findings if f.section == "aposteriori"]


def test_the_benchmark_finding_compares_the_default_with_the_best_constant():
    summary, findings = summarize(bench=benchmark())
    one = findings[-1]
    assert one.section == "benchmark" and one.target == ""
    assert one.text == ("Over 2 benchmark cases the default recommender (probe) has mean regret "
                        "0.10 against 0.20 for the best constant guess (layer-2): it beats it.")


def test_a_constant_default_is_compared_with_the_best_method():
    """The prior as the default is a constant guess: set against the best method (probe,
    mean regret 0.1), not against itself or another constant."""
    summary, findings = summarize(bench=benchmark().assign_attrs(default="prior"))
    assert summary.attrs["benchmark_rival"] == "probe"
    assert summary.attrs["benchmark_rival_kind"] == "method"
    assert findings[-1].text == ("Over 2 benchmark cases the default (prior, a constant guess) "
                                 "has mean regret 0.30 against 0.10 for the best method (probe): "
                                 "that method beats it.")
    regret = np.array(BENCH_REGRET)
    regret[:, BENCH_METHODS.index("prior")] = [0.0, 0.1]  # mean 0.05: below every method
    best = benchmark().assign(regret=(("case", "method"), regret)).assign_attrs(default="prior")
    assert summarize(bench=best)[1][-1].text.endswith(
        "0.050 against 0.10 for the best method (probe): no method beats it.")
    # no method scored: the prior is set against the best other constant, still named a
    # constant guess
    constants = best.isel(method=slice(2, None)).assign_attrs(default="prior")
    assert summarize(bench=constants)[1][-1].text == (
        "Over 2 benchmark cases the default (prior, a constant guess) has mean regret 0.050 "
        "against 0.20 for the best constant guess (layer-2): it beats it.")


def _numbers_in(text):
    """The numbers a sentence states (not the digits of a name such as layer-2)."""
    return re.findall(r"(?<![\w.-])-?\d+(?:\.\d+)?(?![\w-])", text.replace(", ", " "))


def test_every_number_in_the_findings_is_the_summary_files(tmp_path):
    summary, findings = summarize(post=aposteriori(), bench=benchmark(), n_seeds=2)

    class Paths:
        def result(self, name):
            return tmp_path / f"{name}.nc"

    nc, js = report.write_summary(summary, findings, Paths())
    stored = xr.load_dataset(nc)
    record = json.loads(js.read_text())
    assert [f["text"] for f in record["findings"]] == [f.text for f in findings]
    for finding in findings:
        allowed = set()
        for key, value in finding.numbers.items():
            name, _, measure = key.rstrip("]").partition("[")
            if name in stored.attrs:
                truth = stored.attrs[name]
            else:
                da = stored[name]
                da = da.sel(target=finding.target) if "target" in da.dims else da
                truth = (da.sel(measure=measure) if measure else da).values.item()
                on_file = record["targets"][finding.target][name] if "target" in stored[
                    name].dims else record["experiment"][name]
                assert (on_file[measure] if measure else on_file) == pytest.approx(truth)
            assert value == (truth if isinstance(truth, str) else pytest.approx(truth)), key
            allowed |= {format_value(value), format_value(value, 3), str(value)} if not \
                isinstance(value, str) else set(value.split(","))
        if "cc_best_mean" in finding.numbers:
            allowed |= set(format_mean_sem(finding.numbers["cc_best_mean"],
                                           finding.numbers["cc_best_sem"]).split(" ± "))
        stated = set(_numbers_in(finding.text))
        assert stated <= allowed, (finding.text, stated - allowed)
        assert stated, finding.text


@pytest.mark.parametrize("mean, sem, text", [
    (0.79132, 0.00013, "0.79132 ± 0.00013"), (26.93, 0.1, "26.93 ± 0.10"),
    (41.0, 0.81, "41.00 ± 0.81"), (0.5012, 0.0996, "0.50 ± 0.10"), (1234.0, 56.0, "1234 ± 56"),
    (0.79, 0.0, "0.790"), (0.79, float("nan"), "0.790"),
])
def test_mean_and_standard_error_keep_two_significant_figures_of_the_error(mean, sem, text):
    assert format_mean_sem(mean, sem) == text


def test_the_grid_marks_the_best_layer_and_highlights_the_best_set():
    summary, _ = summarize()
    blocks = report._grid_section({"cc": 0.9, "n_test": 5, "learning_curve": {10: 0.9}},
                                  summary, {"t": sweep(np.array([0.7, 0.8, 0.75, 0.65]))})
    table = next(b for b in blocks if isinstance(b, Table))
    in_set = summary.in_best_set.sel(target="t").values
    assert table.highlight == {(i, 1) for i in np.flatnonzero(in_set)}
    assert [row[1].startswith("**") for row in table.rows[:4]] == [False, True, False, False]
    assert "Trained on subsets" not in render_markdown("r", blocks)  # a one-point curve


def test_the_benchmark_table_marks_the_lowest_regret_per_case_and_ends_with_the_means():
    table = report._benchmark_table(benchmark())
    assert table.head[3:] == ("probe (method)", "spectral (method)", "shallowest (constant)",
                              "layer-2 (constant)", "deepest (constant)", "prior (constant)")
    first, second, means = table.rows
    assert first[3] == "**layer 2 ✓, regret 0, τ 0.60, cost 5.0%**"
    assert [c.startswith("**") for c in second[3:]] == [False, True, False, False, False, False]
    assert means[3:] == ("**0.10**", "0.30", "0.50", "0.20", "0.90", "0.30")
    assert "τ" not in first[5]  # constants have no rank correlation


def test_html_and_markdown_hold_the_same_text_and_every_contents_link_resolves():
    blocks = [Paragraph("intro with <script>alert(1)</script> and a [link](#b)"),
              Box("Key findings: t", ("one **bold** claim [→](#a)",)),
              Section("Part A", "a"), Table(("x", "y|z"), (("1", "**2**"),), frozenset({(0, 1)})),
              Section("Part B", "b"), Figure("figures/f.png", "a caption"),
              Paragraph("careful", warning=True)]
    page = render_html("title", blocks)
    assert "<script>" not in page and "&lt;script&gt;" in page
    ids = set(re.findall(r"id='([^']+)'", page))
    links = set(re.findall(r"href='#([^']+)'", page))
    assert links == {"a", "b"} and links <= ids
    assert "<td class='hl'><b>2</b></td>" in page
    assert "<img src='figures/f.png'" in page and "<figcaption>a caption</figcaption>" in page
    md = render_markdown("title", blocks)
    assert "- [Part A](#a)" in md and '<a id="a"></a>' in md
    assert "| x | y\\|z |" in md and "| 1 | **2** |" in md
    assert "![figures/f.png](figures/f.png)" in md and "> ⚠ careful" in md
    plain = [re.sub(r"<[^>]+>", "", b) for b in ("one <b>bold</b> claim",)]
    assert plain[0] in re.sub(r"<[^>]+>", "", page)


def test_a_finding_carries_its_section_and_numbers():
    summary, findings = summarize()
    assert all(isinstance(f, Finding) and f.section and f.target == "t" for f in findings)
    sections = {f.section for f in findings}
    assert {"flows", "transfer", "recommenders", "target-t"} <= sections


def test_report_summary_refuses_a_target_without_its_explanation():
    sw = sweep(np.array([0.7, 0.8, 0.75, 0.65]))
    with pytest.raises(ValueError, match=r"explains lacks targets \['t'\]"):
        report_summary(flows(["t"]), {"t": sw}, {}, {}, {})
    with pytest.raises(ValueError, match="sweeps is empty"):
        report_summary(flows(["t"]), {}, {}, {}, {})


def test_each_target_gets_its_own_cc_panel_so_a_small_gain_stays_visible(tmp_path):
    """One target gains 0.17 in CC, the other 0.004: on one shared axis the second's layer
    differences would span 2% of the height; on its own panel they span most of it."""
    big = sweep(np.array([0.60, 0.77, 0.70, 0.65]), base_cc=0.60)
    small = sweep(np.array([0.801, 0.804, 0.802, 0.800]), base_cc=0.800, spread=0.0002)
    recs = {"big": recommendation(2), "small": recommendation(2)}
    captured = {}
    save = report._save

    def keep(fig, path):
        captured["fig"] = fig
        return save(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "_save", keep)
        report._fig_cc_per_layer({"big": big, "small": small}, recs, tmp_path)
    panels = [ax for ax in captured["fig"].axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["big", "small"]
    bottom, top = panels[1].get_ylim()
    span = float(small.cc_mean.max() - small.cc_mean.min())
    assert span / (top - bottom) > 0.3
    _, caps, bars = panels[1].containers[0].lines
    heights = [seg[1, 1] - seg[0, 1] for seg in bars[0].get_segments()]
    np.testing.assert_allclose(heights, 2 * small.cc_sem.values)
    assert min(heights) / (top - bottom) > 0.005  # the error bars show at this scale


def test_benchmark_cases_on_fewer_than_three_seeds_are_flagged():
    assert report._benchmark_warning(benchmark()) == []  # 3 seeds each
    few = benchmark().assign(n_seeds=("case", [2, 3]))
    (warning,) = report._benchmark_warning(few)
    assert warning.warning and "beta@15 (2)" in warning.text and "kf@15" not in warning.text


def test_a_benchmark_from_benchmark_recommenders_renders_and_its_finding_holds(tmp_path):
    """The table and the finding read the file xtl.explain.benchmark writes: the lowest
    regret per case is in bold and the finding's regrets are its means."""
    from xtl.explain.benchmark import benchmark_recommenders

    sweeps = {"a@4": sweep(np.array([0.70, 0.80, 0.75, 0.65])),
              "b@4": sweep(np.array([0.82, 0.80, 0.75, 0.65]))}
    recs = {"a@4": {"probe": recommendation(2)}, "b@4": {"probe": recommendation(3)}}
    bench = benchmark_recommenders(sweeps, recs, default="probe")
    table = report._benchmark_table(bench)
    methods = [str(m) for m in bench.method.values]
    for row, case in zip(table.rows, bench.case.values):
        regret = bench.regret.sel(case=case).values
        bold = {i for i, c in enumerate(row[3:]) if c.startswith("**")}
        assert bold == set(np.flatnonzero(regret == np.nanmin(regret)))
    summary, findings = summarize(bench=bench)
    mean = bench.regret.mean("case")
    constants = mean.where(bench.kind == "constant", drop=True)
    assert float(summary.benchmark_default_regret) == pytest.approx(
        float(mean.sel({"method": "probe"})))
    assert float(summary.benchmark_rival_regret) == pytest.approx(float(constants.min()))
    assert summary.attrs["benchmark_rival"] in methods
    assert summary.attrs["benchmark_rival_kind"] == "constant"
    assert findings[-1].text.startswith("Over 2 benchmark cases the default recommender (probe)")
