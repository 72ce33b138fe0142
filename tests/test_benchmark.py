"""Tests of xtl/explain/benchmark.py: every method beside the constant guesses, on constructed sweeps."""
import numpy as np
import pytest
import xarray as xr

from xtl.explain.benchmark import (CONSTANTS, benchmark_recommenders, case_name, constant_choice,
                                   recommendation_cost, summarize_benchmark, sweep_cost)


def _sweep(cc, base_cc=0.5, epochs=10, n_samples=20):
    """A single-layer sweep over (layer, seed) with its BNN score, epochs and size."""
    cc = np.asarray(cc, float)
    return xr.Dataset({"cc": (("layer", "seed"), cc), "base_cc": ((), base_cc),
                       "epochs_run": (("layer", "seed"), np.full(cc.shape, float(epochs)))},
                      coords={"layer": np.arange(1, len(cc) + 1), "seed": np.arange(cc.shape[1])},
                      attrs={"n_samples": n_samples})


def _rec(scores, method, sample_epochs=None):
    layers = np.arange(1, len(scores) + 1)
    best = int(layers[np.argmax(scores)])
    ds = xr.Dataset({"score": ("layer", np.asarray(scores, float)),
                     "recommended": ("choice", [best])},
                    coords={"layer": layers}, attrs={"method": method, "recommended": [best]})
    if sample_epochs is not None:
        ds["sample_epochs"] = ((), float(sample_epochs))
    return ds


@pytest.fixture
def cases():
    """Three cases. a: layers 1..4 mean CC 0.6, 0.9, 0.8, 0.55 (BNN 0.5); b (another
    target): 0.7, 0.9, 0.95, 0.6; a@5 (a's other budget): 0.9, 0.7, 0.6, 0.55."""
    noise = np.array([-0.01, 0.0, 0.01])
    a = _sweep([m + noise for m in (0.6, 0.9, 0.8, 0.55)])
    b = _sweep([m + noise for m in (0.7, 0.9, 0.95, 0.6)], epochs=20)
    a5 = _sweep([m + noise for m in (0.9, 0.7, 0.6, 0.55)], n_samples=5)
    return {"a": a, "b": b, case_name("a", 5): a5}


def test_benchmark_by_hand(cases):
    recs = {"a": {"good": _rec([0.1, 0.9, 0.5, 0.0], "good", 60.0),
                  "bad": _rec([0.0, 0.1, 0.2, 0.9], "bad", 0.0)},
            "b": {"good": _rec([0.1, 0.5, 0.9, 0.0], "good", 120.0),
                  "bad": _rec([0.9, 0.1, 0.2, 0.0], "bad", 0.0)},
            "a@5": {"good": _rec([0.9, 0.5, 0.1, 0.0], "good", 15.0)}}
    b = benchmark_recommenders(cases, recs)
    assert b.method.values.tolist() == ["bad", "good", *CONSTANTS]
    assert b.kind.values.tolist() == ["method"] * 2 + ["constant"] * 4
    assert b.case.values.tolist() == ["a", "b", "a@5"]
    assert b["layer"].sel({"method": "good"}).values.tolist() == [2, 3, 1]
    assert b["layer"].sel({"method": "bad"}).values.tolist() == [4, 1, -1]  # none on a@5
    # a: regret of layer 4 = (0.9 - 0.55) / (0.9 - 0.5), capped at 1 -> 0.875; layer 1 on b
    np.testing.assert_allclose(b.regret.sel({"method": "bad"}).values[:2],
                               [0.35 / 0.4, 0.25 / 0.45])
    assert np.isnan(b.regret.sel({"case": "a@5", "method": "bad"}))
    np.testing.assert_allclose(b.regret.sel({"method": "good"}), 0.0, atol=1e-12)
    # constants on a: layer 1 (0.3 / 0.4), layer 2 (0), layer 4 (0.875)
    np.testing.assert_allclose(b.regret.sel({"case": "a", "method": ["shallowest", "layer-2",
                                                               "deepest"]}),
                               [0.75, 0.0, 0.875])
    # the prior of a (and a@5) learns from b only (a@5 is a's own target): b's regrets
    # are (0.25, 0.05, 0, 0.35) / 0.45 -> layer 3; the prior of b from a, (0.75, 0, 0.25,
    # 0.875), and a@5, (0, 0.5, 0.75, 0.875): summed 0.75, 0.5, 1.0, 1.75 -> layer 2
    assert b["layer"].sel({"case": "a", "method": "prior"}) == 3
    assert b["layer"].sel({"case": "a@5", "method": "prior"}) == 3
    assert b["layer"].sel({"case": "b", "method": "prior"}) == 2
    # costs: a full 3-seed sweep of a is 3 * 20 * 4 * 10 = 2400 sample-epochs; of b 4800
    np.testing.assert_allclose(b.cost.sel({"method": "good"}), [60 / 2400, 120 / 4800, 15 / 600])
    assert (b.cost.sel({"method": list(CONSTANTS)}) == 0).all()
    assert b.tau.sel({"method": list(CONSTANTS)}).isnull().all()
    assert float(b.tau.sel({"case": "a", "method": "good"})) == pytest.approx(1.0)
    assert b.hit.sel(case="a").values.tolist() == [False, True, False, True, False, False]
    assert b.best_set.values.tolist() == ["2", "3", "1"] and b.n_seeds.values.tolist() == [3] * 3
    assert b.attrs["default"] and b.attrs["metric"] == "cc"
    assert b.mean_skill.sel(case="b", candidate=3) == pytest.approx(0.95)


def test_summary_and_a_deeper_network(cases):
    deep = _sweep([[0.6, 0.6], [0.8, 0.8], [0.7, 0.7], [0.6, 0.6], [0.55, 0.55], [0.9, 0.9]])
    sweeps = {**cases, "deep": deep}
    b = benchmark_recommenders(sweeps, {c: {} for c in sweeps})
    assert b["layer"].sel({"case": "deep", "method": "deepest"}) == 6
    assert b.mean_skill.sel(case="a", candidate=6).isnull() and not b.in_best_set.sel(
        case="a", candidate=6)
    s = summarize_benchmark(b)
    # layer 2 on a, b, a@5, deep: regrets 0, 0.05/0.45, 0.2/0.4, 0.1/0.4; ranks 1, 2, 2, 2
    assert float(s.mean_regret.sel({"method": "layer-2"})) == pytest.approx(
        (0 + 0.05 / 0.45 + 0.5 + 0.25) / 4)
    assert float(s.max_regret.sel({"method": "layer-2"})) == pytest.approx(0.5)
    assert bool(s.top2.sel({"method": "layer-2"}))
    assert not bool(s.top2.sel({"method": "deepest"}))  # last but on deep
    assert int(s.hits.sel({"method": "deepest"})) == 1 and int(s.n_cases) == 4


def test_constant_choice_and_costs():
    assert constant_choice("shallowest", [3, 1, 2]) == 1
    assert constant_choice("deepest", [3, 1, 2]) == 3
    assert constant_choice("layer-2", [1, 3]) == -1
    assert constant_choice("prior", [1, 2]) == -1  # no evidence
    with pytest.raises(ValueError, match="name must be one of"):
        constant_choice("middle", [1, 2])
    assert sweep_cost(_sweep([[0.6, 0.7]] * 3, epochs=7, n_samples=10)) == 3 * 10 * 3 * 7
    with pytest.raises(ValueError, match="sweep must hold 'epochs_run'"):
        sweep_cost(_sweep([[0.6, 0.7]] * 3).drop_vars("epochs_run"))
    probe = xr.Dataset({"score": ("layer", [1.0, 2.0, 3.0]),
                        "val_loss": (("layer", "epoch"), np.ones((3, 5)))},
                       attrs={"method": "probe", "n_target_samples": 40})
    assert recommendation_cost(probe) == 3 * 5 * 40
    gn = probe.drop_vars("val_loss").assign_attrs(method="gauss-newton")
    assert recommendation_cost(gn) == 3 * 16 * 40
    assert recommendation_cost(gn.assign(sample_epochs=7.0)) == 7.0


def test_benchmark_refuses_bad_input(cases):
    with pytest.raises(TypeError, match="sweeps must be a non-empty mapping"):
        benchmark_recommenders({}, {})
    single = {"a": cases["a"].isel(seed=0)}
    with pytest.raises(ValueError, match=r"sweeps\['a'\]\['cc'\] must be over \(layer, seed\)"):
        benchmark_recommenders(single, {})


# ------------------------------------------------------------ the experiment's stage
def test_a_benchmark_table_adds_a_stage_and_keeps_every_other_key():
    import copy

    from xtl.experiment.config import DEMO_CONFIG, ConfigError, load_config
    from xtl.experiment.stages import stage_inputs
    from xtl.experiment.workspace import ExperimentPaths, StageCache

    def keys(raw):
        cache = StageCache(ExperimentPaths("unused"))
        return {name: cache.key(name, parts) for name, parts in
                stage_inputs(load_config(raw)).items()}

    plain = load_config(copy.deepcopy(DEMO_CONFIG))
    assert not plain.benchmark.enabled and "benchmark" not in stage_inputs(plain)
    assert plain.recommend.methods == ("gauss-newton", "gradient-norm", "probe", "spectral")
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["benchmark"] = {"strength": 2.0}
    config = load_config(raw)
    assert config.benchmark.enabled and config.benchmark.strength == 2.0
    assert "prior" not in config.benchmark.methods and {"halving", "ntk"} <= set(
        config.benchmark.methods)
    with_stage, without = keys(raw), keys(copy.deepcopy(DEMO_CONFIG))
    assert {k: v for k, v in with_stage.items() if not k.startswith("benchmark")} == without
    assert set(with_stage) - set(without) == {"benchmark", "benchmark-small-kf",
                                              "benchmark-small-beta"}
    inputs = stage_inputs(config)["benchmark"]
    assert {"@sweep-small-kf", "@recommend-small-beta", "@benchmark-small-kf"} <= set(
        i for i in inputs if isinstance(i, str))
    raw["recommend"]["ntk"] = {"n_points": 16}  # options of a method the benchmark alone runs
    changed = keys(raw)
    assert changed["benchmark-small-kf"] != with_stage["benchmark-small-kf"]
    assert {k: v for k, v in changed.items() if not k.startswith("benchmark")} == without
    raw["benchmark"] = {"methods": ["ntk"]}  # another table, another key
    assert keys(raw)["benchmark"] != changed["benchmark"]
    for bad in ({"methods": ["prior"]}, {"methods": "ntk"}, {"strength": 0},
                {"history": [3]}, {"bogus": 1}):
        raw["benchmark"] = bad
        with pytest.raises(ConfigError, match=r"config key 'benchmark"):
            load_config(raw)


def test_the_default_is_a_method_that_meets_the_goal_or_the_prior(cases):
    from xtl.explain.benchmark import choose_default

    recs = {c: {"cheap": _rec(np.where(np.arange(4) + 1 == best, 1.0, 0.0), "cheap", 10.0),
                "dear": _rec(np.where(np.arange(4) + 1 == best, 1.0, 0.0), "dear", 1e6),
                "wrong": _rec([0, 0, 0, 1.0], "wrong", 0.0)}
            for c, best in (("a", 2), ("b", 3), ("a@5", 1))}
    s = summarize_benchmark(benchmark_recommenders(cases, recs))
    # every case's best layer at a small cost: regret 0, top 2, 10 / 2400 of a sweep
    assert s.meets_goal.sel({"method": "cheap"}) and not s.meets_goal.sel({"method": "dear"})
    assert not s.meets_goal.sel({"method": "wrong"}) and choose_default(s) == "cheap"
    # layer 2 gives up 0, 0.05 / 0.45 and 0.5 on a, b, a@5: the best constant, 0.204
    assert float(s.best_constant_regret) == pytest.approx((0.05 / 0.45 + 0.5) / 3)
    wrong = {c: {"wrong": r["wrong"]} for c, r in recs.items()}
    only_wrong = summarize_benchmark(benchmark_recommenders(cases, wrong))
    assert choose_default(only_wrong) == "prior"
