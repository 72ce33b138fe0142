"""Pipeline building blocks: the train/test split and the stage cache."""
import json

import numpy as np
import pytest
import xarray as xr

from xtl.config import load_config
from xtl.pipeline import (
    Experiment,
    TargetsTooClose,
    check_targets_differ,
    n_samples,
    split_train_test,
)


def _les(nt, members=None):
    dims = ("time", "y", "x") if members is None else ("member", "time", "y", "x")
    shape = (nt, 4, 4) if members is None else (members, nt, 4, 4)
    return xr.Dataset({v: (dims, np.zeros(shape)) for v in ("psi", "omega", "pi")},
                      coords={"time": np.arange(nt) * 0.1})


def test_split_keeps_the_latest_times_for_testing():
    train, test = split_train_test(_les(8), test_fraction=0.25)
    assert list(train.time.values) == list(np.arange(6) * 0.1)
    assert np.allclose(test.time.values, [0.6, 0.7])
    train, test = split_train_test(_les(3), test_fraction=0.01)  # at least one test time
    assert (train.sizes["time"], test.sizes["time"]) == (2, 1)
    with pytest.raises(ValueError, match="at least 2 snapshots"):
        split_train_test(_les(1))


def test_n_samples_counts_members_times_times():
    assert n_samples(_les(5)) == 5
    assert n_samples(_les(5, members=3)) == 15


def test_a_stage_runs_once_per_inputs_and_again_when_they_change(tmp_path):
    exp = Experiment(load_config(), tmp_path)
    calls = []

    def work():
        calls.append(1)
        (tmp_path / "results" / "a.nc").write_text("x")

    exp.stage("a", [1], ["results/a.nc"], work)
    exp.stage("a", [1], ["results/a.nc"], work)
    assert len(calls) == 1 and exp.skipped == ["a"]
    exp.stage("a", [2], ["results/a.nc"], work)  # another input
    assert len(calls) == 2
    (tmp_path / "results" / "a.nc").unlink()  # a lost artifact
    exp.stage("a", [2], ["results/a.nc"], work)
    assert len(calls) == 3
    # a downstream stage's key follows its upstream's
    exp.stage("b", ["@a"], [], lambda: calls.append("b"))
    key_b = json.loads((tmp_path / "stages" / "b.json").read_text())["key"]
    exp.stage("a", [3], ["results/a.nc"], work)
    exp.stage("b", ["@a"], [], lambda: calls.append("b"))
    assert calls.count("b") == 2
    assert json.loads((tmp_path / "stages" / "b.json").read_text())["key"] != key_b
    assert json.loads((tmp_path / "config.json").read_text())["base"]["case"] == "small-base"


def _flows_file(tmp_path, decades):
    names = list(decades)
    ds = xr.Dataset({"max_decades": (("target", "variable"), np.array([decades[n] for n in names]))},
                    coords={"target": names, "variable": ["psi", "omega", "pi"]})
    path = tmp_path / "flows.nc"
    ds.to_netcdf(path)
    return path


def test_targets_that_do_not_differ_stop_the_experiment_unless_controls(tmp_path):
    raw = load_config().to_dict()
    cfg = load_config(None)
    names = [t.name for t in cfg.targets]
    close = _flows_file(tmp_path, {names[0]: [1.4, 1.3, 1.0], names[1]: [0.1, 0.12, 0.29]})
    with pytest.raises(TargetsTooClose, match=rf"target '{names[1]}' differs from the base "
                       r"'small-base' by at most 0.29 decades .*psi 0.10, omega 0.12, pi 0.29"):
        check_targets_differ(close, cfg)
    from xtl.config import DEMO_CONFIG
    import copy
    as_control = copy.deepcopy(DEMO_CONFIG)
    as_control["targets"][1]["control"] = True
    check_targets_differ(close, load_config(as_control))  # a control passes
    stricter = copy.deepcopy(DEMO_CONFIG)
    stricter["experiment"]["min_decades"] = 1.5
    with pytest.raises(TargetsTooClose, match=f"'{names[0]}'.*; target '{names[1]}'"):
        check_targets_differ(close, load_config(stricter))
    assert raw["min_decades"] == 0.3
