"""Experiment configs: the demo default, the example file, and errors named by key."""
import copy
import re
import tomllib
from pathlib import Path

import pytest

from xtl.experiment.config import DEMO_CONFIG, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo.toml"


def test_example_file_is_the_embedded_demo():
    assert load_config(EXAMPLE) == load_config(None)
    assert tomllib.loads(EXAMPLE.read_text()) == DEMO_CONFIG


def test_demo_config_has_a_base_and_two_differing_targets():
    cfg = load_config()
    assert cfg.base.make_case().name == "small-base"
    assert [t.make_case().kf for t in cfg.targets] == [12.0, 4.0]
    assert [t.make_case().beta for t in cfg.targets] == [0.0, 20.0]
    assert cfg.seeds == [0, 1] and not any(t.control for t in cfg.targets)
    assert cfg.recommend.default == "probe" and len(cfg.recommend.methods) == 4


def _with(path, value):
    raw = copy.deepcopy(DEMO_CONFIG)
    where = raw
    for key in path[:-1]:
        where = where[key]
    if value is None:
        del where[path[-1]]
    else:
        where[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("network", "depth"), 3, "'network.depth': unknown key"),
        (("base", "colour"), "red", "'base.colour': unknown key"),
        (("surprise",), {}, "'surprise': unknown key"),
        (("base", "members"), -2, "'base.members': must be an int >= 1, got -2"),
        (("training", "epochs"), 0, "'training.epochs': must be an int >= 1, got 0"),
        (("targets",), None, "'targets': is missing"),
        (("targets",), [], "'targets': is missing"),
        (("base",), None, "'base': is missing"),
        (("transfer", "fraction"), 1.5, "'transfer.fraction': must be a number in (0, 1], got 1.5"),
        (("base", "n"), -256, "'base.n': must be an even integer >= 8, got -256"),
        (("base", "case"), "nope", "'base.case': unknown preset"),
        (("sweep", "seeds"), 0, "'sweep.seeds': must be a count >= 1 or a list of distinct ints >= 0 "
         "(an int n is n seeds, 0..n-1; [3] is the seed 3), got 0"),
        (("sweep", "seeds"), [1, 1], "'sweep.seeds': must be a count >= 1 or a list of distinct"),
        (("sweep", "baselines"), ["bnn"], "'sweep.baselines': must be among ('scratch', 'full_target')"),
        (("sweep", "alpha"), 2.0, "'sweep.alpha': must be a number in (0, 1)"),
        (("budget",), {"fractions": [0.1], "target": "nope"}, "'budget.target': must name"),
        (("budget",), {"fractions": [0.0]}, "'budget.fractions': must be a number in (0, 1], got 0.0"),
        (("recommend",), {"methods": ["oracle"]}, "'recommend.methods': must be a list among"),
        (("recommend",), {"probe": {"epochs": 0}}, "'recommend.probe.epochs': must be an int >= 1, got 0"),
        (("recommend",), {"probe": {"epoch": 3}}, "'recommend.probe.epoch': unknown key"),
        (("recommend",), {"methods": ["probe"], "default": "spectral"},
         "'recommend.default': must be one of"),
        (("experiment", "min_decades"), -1.0, "'experiment.min_decades': must be >= 0"),
        (("les", "baseline"), "dynamic-smagorinksy",
         "'les.baseline': must be one of ['smagorinsky', 'dynamic-smagorinsky'] or a list of "
         "them (no closure always runs), got 'dynamic-smagorinksy'"),
        (("les", "baseline"), ["smagorinsky", "smag"], "'les.baseline': must be one of"),
        (("les", "initial_states"), 0, "'les.initial_states': must be an int >= 1, got 0"),
        (("les", "initial_states"), 2.5, "'les.initial_states': must be an int, got 2.5"),
        (("les", "dt"), -4e-3, "'les.dt': must be > 0"),
        (("les", "save_interval"), 10.0, "'les.save_interval': must not exceed les.t_end = 3.0"),
        (("les", "enabled"), "yes", "'les.enabled': must be True or False, got 'yes'"),
        (("les", "closures"), ["BNN"], "'les.closures': unknown key"),
    ],
)
def test_config_errors_name_the_key(path, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_with(path, value))


def test_seeds_budget_and_controls():
    raw = _with(("sweep", "seeds"), [3, 5])
    raw["budget"] = {"fractions": [0.5, 0.02]}
    raw["targets"][1]["control"] = True
    cfg = load_config(raw)
    assert cfg.seeds == [3, 5]
    assert cfg.budget.to_table() == {"enabled": True, "target": "small-kf", "fractions": [0.02, 0.5]}
    assert [t.control for t in cfg.targets] == [False, True]
    raw["targets"][1]["control"] = "yes"
    with pytest.raises(ConfigError, match=r"'targets\[1\]\.control': must be True or False, got 'yes'"):
        load_config(raw)


def test_target_keys_are_reported_with_their_index():
    raw = _with(("targets",), [{"case": "small-re"}, {"case": "small-kf", "members": -1}])
    with pytest.raises(ConfigError, match=r"'targets\[1\]\.members'"):
        load_config(raw)


def test_case_errors_surface_with_the_flow(tmp_path):
    raw = _with(("base", "n_les"), 15)
    with pytest.raises(ConfigError, match="base.*n_les"):
        load_config(raw)
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\ncase=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_a_target_reusing_the_base_preset_needs_its_own_name():
    raw = _with(("targets",), [{"case": "small-base", "beta": 20.0}])
    with pytest.raises(ConfigError, match="names .* must be unique"):
        load_config(raw)
    raw = _with(("targets",), [{"case": "small-base", "beta": 20.0, "name": "beta20"}])
    assert load_config(raw).targets[0].make_case().beta == 20.0


def test_every_example_config_is_valid():
    """Every example config of presets loads (qg.toml reads files that its example makes:
    tests/test_qg_data.py runs it on them)."""
    configs = [p for p in sorted(EXAMPLE.parent.glob("*.toml")) if p.name != "qg.toml"]
    assert len(configs) >= 2
    for path in configs:
        cfg = load_config(path)
        assert cfg.targets and cfg.network["n_layers"] >= 1, path


def test_the_paper_config_is_the_papers_setup():
    cfg = load_config(EXAMPLE.parent / "paper.toml")
    base = cfg.base.make_case()
    assert (base.Re, base.kf, base.beta, base.mu, base.n, base.n_les) == \
        (20000.0, 4.0, 0.0, 0.1, 1024, 128)
    snapshots = cfg.base.members * (round((cfg.base.t_end - cfg.base.spin_up)
                                          / cfg.base.save_interval) + 1)
    assert 2000 <= round(snapshots * 0.75) < 2100  # training samples after the test split
    assert cfg.network == {"n_layers": 11, "channels": 64, "kernel_size": 5, "padding": "zeros"}
    assert cfg.training.fit.epochs == 100 and cfg.transfer.fraction == 0.1
    targets = {t.name: t.make_case() for t in cfg.targets}
    assert targets["target-kf25"].kf == 25.0 and targets["target-beta20"].beta == 20.0
    assert (targets["target-re100k"].Re, targets["target-re100k"].n) == (100000.0, 2048)
    assert all(c.n_les == 128 for c in targets.values())
    assert len(cfg.seeds) >= 3 and set(cfg.sweep.options.baselines) == {"scratch", "full_target"}


def test_the_study_config_meets_its_design():
    cfg = load_config(EXAMPLE.parent / "study.toml")
    snapshots = cfg.base.members * (round((cfg.base.t_end - cfg.base.spin_up)
                                          / cfg.base.save_interval) + 1)
    n_base = round(snapshots * 0.75)
    assert n_base >= 1000
    assert len(cfg.targets) >= 3 and not any(t.control for t in cfg.targets)
    cases = [t.make_case() for t in cfg.targets]
    base = cfg.base.make_case()
    assert {"kf", "beta", "Re"} == {next(f for f in ("kf", "beta", "Re")
                                         if getattr(c, f) != getattr(base, f)) for c in cases}
    assert cfg.transfer.fraction == 0.1 and cfg.transfer.fit.patience >= 5
    assert len(cfg.seeds) >= 3
    assert set(cfg.sweep.options.baselines) == {"scratch", "full_target"}
    assert list(cfg.budget.fractions) == [0.02, 0.1, 0.5]
    budget_target = cfg.target(cfg.budget.target)
    pool = round(budget_target.members * (round((budget_target.t_end - budget_target.spin_up)
                                                / budget_target.save_interval) + 1) * 0.75)
    assert pool >= 0.5 * n_base  # the 50 % budget fits in the target's pool


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("base", "filter"), "gausian", "'base.filter': must be one of "
                                        "['gaussian', 'box', 'sharp']"),
        (("targets", 1, "filter"), "lowpass", "'targets[1].filter': must be one of"),
        (("training", "seed"), -1, "'training.seed': must be an int >= 0, got -1"),
        (("training", "validation"), 1.0, "'training.validation': must be a fraction in [0, 1)"),
        (("transfer", "renormalize"), 1, "'transfer.renormalize': must be True or False, got 1"),
        (("sweep", "layers"), [0, 2], "'sweep.layers': must be layer numbers in 1..6 (1 takes the inputs, 6 gives the "
                                          "output), got [0]"),
        (("sweep", "enabled"), "no", "'sweep.enabled': must be True or False, got 'no'"),
    ],
)
def test_keys_checked_once_when_the_config_is_read(path, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_with(path, value))


def test_filters_follow_the_coarse_graining():
    from xtl.data.coarse import FILTERS

    for name in (*FILTERS, "top-hat", "Gaussian"):  # coarse's names and aliases pass
        assert load_config(_with(("base", "filter"), name)).base.filter == name


def test_the_config_parses_into_typed_sections():
    from xtl.experiment.config import LesConfig, TrainingConfig, les_closure_names
    from xtl.nn.backends.loop import FitOptions

    cfg = load_config()
    assert isinstance(cfg.training, TrainingConfig) and isinstance(cfg.training.fit, FitOptions)
    assert cfg.training.fit == FitOptions(epochs=30, batch_size=16, seed=0,
                                          learning_rate=1e-3, patience=None)
    assert cfg.training.validation == 0.1
    assert cfg.transfer.fit == FitOptions(epochs=40, batch_size=4, learning_rate=2e-3,
                                          patience=6)
    assert (cfg.transfer.validation, cfg.transfer.renormalize) == (0.2, False)
    # the sweep gets the transfer's fit whole, with its seeds, baselines and alpha
    sweep = cfg.sweep.options
    assert sweep.fit == cfg.transfer.fit and (sweep.validation, sweep.renormalize) == (0.2, False)
    assert (sweep.seeds, sweep.baselines, sweep.alpha) == ((0, 1), ("scratch",), 0.05)
    # the [les] defaults live in LesConfig only: an absent table is all of them
    les = load_config(_with(("les",), None)).les
    assert les == LesConfig() and les.baseline == les_closure_names()
    assert (les.schedule.t_end, les.schedule.save_interval, les.initial_states, les.schedule.dt) == (
        5.0, 0.5, 1, None)
    assert load_config(_with(("les", "baseline"), "smagorinsky")).les.baseline == \
        ("smagorinsky",)
    # sections are Options: replace validates again and keeps the fit options
    assert cfg.training.replace(validation=0.2).fit == cfg.training.fit
    with pytest.raises(ConfigError, match=r"'training\.validation'"):
        cfg.training.replace(validation=2.0)
    # the tables as written are kept for config.json and the stage keys
    assert cfg.table("training") == DEMO_CONFIG["training"] and cfg.table("budget") == {}


def test_a_misspelled_baseline_is_refused_however_the_section_is_made():
    from xtl.experiment.config import LesConfig

    with pytest.raises(ConfigError, match=r"'les\.baseline': must be one of \['smagorinsky', "
                                          r"'dynamic-smagorinsky'\].*got \('smagorinksy',\)"):
        LesConfig(baseline=("smagorinksy",))
    with pytest.raises(ConfigError, match=r"'les\.initial_states': must be an int >= 1, got 0"):
        LesConfig().replace(initial_states=0)


# ------------------------------------------------------------------ values that would fail late
def _edited(*edits):
    """DEMO_CONFIG with every ``(path, value)`` of ``edits`` applied."""
    raw = copy.deepcopy(DEMO_CONFIG)
    for path, value in edits:
        where = raw
        for key in path[:-1]:
            where = where[key]
        where[path[-1]] = value
    return raw


# the demo's flows: small-* cases, DNS dt = 0.0005 on 256², LES dt = 0.002 on 64²,
# 101 snapshots (76 training, 25 test times); targets of 1 member each
@pytest.mark.parametrize("edits, message", [
    # the DNS: save_interval and spin_up whole numbers of the flow's time step
    ([(("base", "save_interval"), 0.10025)],
     "'base.save_interval': 0.10025 is not a multiple of the DNS time step 0.0005 of flow "
     "'small-base' (base.dt); use a multiple, e.g. 0.1"),
    ([(("targets", 1, "save_interval"), 0.0002)],
     "'targets[1].save_interval': 0.0002 is not a multiple of the DNS time step 0.0005 of flow "
     "'small-beta' (targets[1].dt); use a multiple, e.g. 0.0005"),
    ([(("base", "spin_up"), 20.0001)],
     "'base.spin_up': 20.0001 is not a multiple of the DNS time step 0.0005"),
    ([(("targets", 0, "dt"), 0.0003)],
     "'targets[0].save_interval': 0.1 is not a multiple of the DNS time step 0.0003 of flow "
     "'small-kf' (targets[0].dt); use a multiple, e.g. 0.0999"),
    # at least two snapshots to split into training and test times
    ([(("base", "t_end"), 20.05)],
     "'base.t_end': gives 1 snapshot from spin_up = 20.0 to t_end = 20.05 every 0.1; a flow "
     "needs at least 2 (training and test times): make t_end >= spin_up + 0.2"),
    ([(("targets", 0, "t_end"), 20.0)], "'targets[0].t_end': gives 1 snapshot"),
    # the LES: save_interval a whole number of every target's LES time step
    ([(("les", "save_interval"), 0.2501)],
     "'les.save_interval': 0.2501 is not a multiple of the LES time step 0.002 of target "
     "'small-kf' (its DNS dt · n / n_les; les.dt sets another); use a multiple, e.g. 0.25"),
    ([(("les", "save_interval"), 0.001)],
     "'les.save_interval': 0.001 is not a multiple of the LES time step 0.002"),
    ([(("les", "dt"), 0.003)],
     "'les.save_interval': 0.25 is not a multiple of the LES time step les.dt = 0.003; use a "
     "multiple, e.g. 0.249"),
    ([(("targets", 1, "n_les"), 32)],  # that target's LES step is 0.004
     "'les.save_interval': 0.25 is not a multiple of the LES time step 0.004 of target "
     "'small-beta'"),
    # no more initial states than a target's held-out samples
    ([(("les", "initial_states"), 26)],
     "'les.initial_states': 26 initial states asked for, but target 'small-kf' holds 25 "
     "held-out samples (1 member(s) x 25 test time(s), the last 25% of its snapshots)"),
    ([(("targets", 0, "t_end"), 20.3), (("les", "initial_states"), 2)],
     "'les.initial_states': 2 initial states asked for, but target 'small-kf' holds 1"),
    # layers the network has
    ([(("sweep", "layers"), [2, 7])],
     "'sweep.layers': must be layer numbers in 1..6 (1 takes the inputs, 6 gives the output), "
     "got [7]"),
    ([(("network", "n_layers"), 4), (("sweep", "layers"), [5, 9])],
     "'sweep.layers': must be layer numbers in 1..4 (1 takes the inputs, 4 gives"),
    ([(("network", "channels"), [24, 24])], "'network.channels': must be an int or 5 ints"),
    ([(("network", "kernel_size"), 4)], "'network.kernel_size': must be an odd int"),
    ([(("network", "padding"), "reflect")], "'network.padding': must be one of"),
])
def test_values_that_would_fail_late_are_refused_when_the_config_is_read(edits, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_edited(*edits))


@pytest.mark.parametrize("edits", [
    [(("base", "spin_up"), 0.0), (("base", "t_end"), 10.0)],      # no spin-up
    [(("base", "save_interval"), 0.0005)],                        # every step
    [(("base", "t_end"), 30.05)],              # t_end need not be on a snapshot
    [(("base", "t_end"), 20.1)],               # exactly two snapshots
    [(("targets", 0, "dt"), 0.00025)],         # a finer step that divides the intervals
    [(("les", "save_interval"), 0.002)],       # every LES step
    [(("les", "save_interval"), 0.3)],         # 150 LES steps of 0.002
    [(("les", "dt"), 0.0025)],                 # 100 steps of les.dt
    [(("les", "t_end"), 3.001)],               # t_end need not be on a snapshot
    [(("targets", 1, "n_les"), 32), (("les", "save_interval"), 0.248)],
    [(("les", "initial_states"), 25)],         # every held-out sample
    [(("les", "enabled"), False), (("les", "save_interval"), 0.2501),
     (("les", "initial_states"), 1000)],       # a disabled stage is not checked
    [(("sweep", "layers"), [1, 6])],
    [(("network", "n_layers"), 8), (("sweep", "layers"), [7, 8])],
])
def test_their_neighbours_pass(edits):
    load_config(_edited(*edits))


def test_the_brief_example_names_the_key_the_step_and_a_multiple():
    raw = _edited((("targets",), [{"name": "kf8", "case": "tiny", "kf": 8.0, "spin_up": 0.0,
                                   "t_end": 1.0, "save_interval": 0.1}]),
                  (("base",), {"case": "tiny", "spin_up": 0.0, "t_end": 1.0,
                               "save_interval": 0.1}),
                  (("les", "save_interval"), 0.3), (("les", "initial_states"), 1))
    with pytest.raises(ConfigError, match=re.escape(
            "config key 'les.save_interval': 0.3 is not a multiple of the LES time step 0.008 of "
            "target 'kf8' (its DNS dt · n / n_les; les.dt sets another); use a multiple, e.g. "
            "0.304")):
        load_config(raw)


def test_the_split_sizes_are_the_pipelines():
    import numpy as np
    import xarray as xr

    from xtl.experiment.config import n_snapshots, split_sizes
    from xtl.experiment.stages import split_train_test

    cfg = load_config()
    assert n_snapshots(cfg.base) == 101 and split_sizes(101) == (76, 25)
    for nt in (2, 3, 4, 5, 8, 101):
        ds = xr.Dataset({"pi": ("time", np.arange(nt))})
        train, test = split_train_test(ds)
        assert (train.sizes["time"], test.sizes["time"]) == split_sizes(nt)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        split_sizes(1)


def test_a_config_saved_with_a_byte_order_mark_loads_as_without(tmp_path):
    text = EXAMPLE.read_text(encoding="utf-8").replace('name = "demo"', 'name = "démo"')
    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_bytes(text.encode("utf-8"))
    marked.write_bytes(text.encode("utf-8-sig"))
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_config(marked) == load_config(plain)
    assert load_config(marked).name == "démo"


def test_a_config_not_in_utf8_is_refused_naming_the_file(tmp_path):
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[experiment]\nname = "démo"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"config file {str(latin)!r} is not UTF-8")
                       + r".*0xe9"):
        load_config(latin)


def test_a_flow_too_large_for_memory_is_refused_at_once_with_its_size():
    import time

    raw = copy.deepcopy(DEMO_CONFIG)
    raw["base"]["members"] = 1_000_000_000
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"config key 'base.members': flow .* would hold "
                                          r"≈ [\d.]+ [PT]iB \(1000000000 member\(s\) ×"):
        load_config(raw)
    assert time.perf_counter() - start < 2
    raw["base"]["members"] = 4
    raw["targets"][1]["members"] = 10**9
    with pytest.raises(ConfigError, match=r"'targets\[1\].members'"):
        load_config(raw)
