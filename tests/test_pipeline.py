"""Pipeline building blocks: the train/test split and the stage cache."""
import contextlib
import json
import os
import threading

import numpy as np
import pytest
import xarray as xr

from xtl.experiment.config import load_config
from xtl.data.netcdf import load_dataset
from xtl.experiment.stages import (
    Experiment,
    TargetsTooClose,
    check_targets_differ,
    n_samples,
    split_train_test,
    stage_inputs,
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
    from xtl.experiment.config import DEMO_CONFIG
    import copy
    as_control = copy.deepcopy(DEMO_CONFIG)
    as_control["targets"][1]["control"] = True
    check_targets_differ(close, load_config(as_control))  # a control passes
    stricter = copy.deepcopy(DEMO_CONFIG)
    stricter["experiment"]["min_decades"] = 1.5
    with pytest.raises(TargetsTooClose, match=f"'{names[0]}'.*; target '{names[1]}'"):
        check_targets_differ(close, load_config(stricter))
    assert raw["min_decades"] == 0.3


# ------------------------------------------------------------------ the stage cache
def _cache(tmp_path, lines=None):
    from xtl.experiment.workspace import ExperimentPaths, StageCache

    paths = ExperimentPaths(tmp_path)
    paths.make_folders()
    return StageCache(paths, log=(lines.append if lines is not None else lambda _: None))


def test_stage_cache_skips_while_key_and_outputs_are_unchanged(tmp_path):
    lines, calls = [], []
    cache = _cache(tmp_path, lines)
    out = tmp_path / "results" / "a.nc"

    def work():
        calls.append(1)
        out.write_text("x")

    assert cache.run("a", [{"epochs": 3}], [out], work) is True
    assert cache.run("a", [{"epochs": 3}], [out], work) is False
    assert calls == [1] and cache.ran == ["a"] and cache.skipped == ["a"]
    assert lines[0] == "a: running" and lines[-1] == "a: unchanged, skipped"
    manifest = json.loads((tmp_path / "stages" / "a.json").read_text())
    assert manifest["outputs"] == ["results/a.nc"] and manifest["key"] == cache.keys["a"]
    # a new cache (a second run of the experiment) skips it too
    again = _cache(tmp_path)
    assert again.run("a", [{"epochs": 3}], [out], work) is False and calls == [1]
    assert again.run("a", [{"epochs": 4}], [out], work) is True and len(calls) == 2
    out.unlink()
    assert again.run("a", [{"epochs": 4}], [out], work) is True and len(calls) == 3


def test_stage_cache_with_a_relative_output_folder(tmp_path, monkeypatch):
    """`xtl run --out out`: the paths of the scheme and the cache agree on where outputs lie."""
    from xtl.experiment.workspace import ExperimentPaths, StageCache

    monkeypatch.chdir(tmp_path)
    calls = []
    for _ in range(2):
        paths = ExperimentPaths("out")
        paths.make_folders()
        cache = StageCache(paths, log=lambda _: None)
        cache.run("data-x", [1], [paths.data("x")], lambda: (calls.append(1),
                                                             paths.data("x").mkdir()))
    assert calls == [1] and cache.skipped == ["data-x"]
    manifest = json.loads((tmp_path / "out" / "stages" / "data-x.json").read_text())
    assert manifest["outputs"] == ["data/x"]


def test_stage_cache_keys_follow_upstream_stages(tmp_path):
    cache = _cache(tmp_path)
    cache.run("a", [1], [], lambda: None)
    key_b = cache.key("b", ["@a", 2])
    cache.run("a", [5], [], lambda: None)
    assert cache.key("b", ["@a", 2]) != key_b
    assert cache.key("b", [{"x": 1, "y": 2}]) == cache.key("b", [{"y": 2, "x": 1}])


def test_stage_cache_writes_no_manifest_when_a_stage_fails(tmp_path):
    cache = _cache(tmp_path)

    def fail():
        (tmp_path / "results" / "half.nc").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.run("a", [1], ["results/half.nc"], fail)
    assert not (tmp_path / "stages" / "a.json").exists() and "a" not in cache.keys
    assert list((tmp_path / "stages").iterdir()) == []  # no temporary file left either
    calls = []
    cache.run("a", [1], ["results/half.nc"], lambda: calls.append(1))
    assert calls == [1]  # the interrupted stage runs again


def _anti_diffusion(psi, omega):
    """A closure that feeds ω back on itself: a tiny LES blows up within 0.16."""
    return -50.0 * omega


@pytest.mark.parametrize("on_cluster", [False, True])
def test_an_aposteriori_error_stops_its_stage_while_a_blowup_is_data(tmp_path, on_cluster):
    """An exception in a run (a save_interval the LES step does not divide) fails the
    stage, which records nothing and runs again; a run that blows up is a result."""
    import xtl
    from xtl.data.coarse import coarse_grain
    from xtl.experiment.aposteriori import run_aposteriori, select_initial_states
    from xtl.data.netcdf import write_dataset

    case = xtl.get_case("tiny")  # LES: 16², dt = 0.008
    fdns = coarse_grain(xtl.simulate(case, t_end=0.3, save_interval=0.1, progress=False),
                        case.n_les)
    initials = select_initial_states(fdns, 1)
    cache, out = _cache(tmp_path), tmp_path / "results" / "aposteriori-tiny.nc"
    with contextlib.ExitStack() as stack:
        client = None
        if on_cluster:
            from distributed import Client, LocalCluster

            cluster = stack.enter_context(LocalCluster(
                n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"))
            client = stack.enter_context(Client(cluster, set_as_default=False))

        def stage(save_interval, closures):
            def run():
                ds = run_aposteriori(case, closures, initials, fdns, t_end=0.32,
                                     save_interval=save_interval, client=client,
                                     progress=False)
                write_dataset(ds, out, overwrite=True)
            return cache.run("aposteriori-tiny", [save_interval], [out], run)

        with pytest.raises(ValueError, match=r"save_interval=0.3 is not a multiple of dt=0.008"):
            stage(0.3, {"no closure": None})
        assert not cache.has_run("aposteriori-tiny") and not out.exists()
        assert stage(0.16, {"no closure": None, "unstable": _anti_diffusion})
    assert cache.has_run("aposteriori-tiny")
    ds = load_dataset(out)
    assert ds.stable.sel(closure="no closure").values.tolist() == [1]
    assert ds.stable.sel(closure="unstable").values.tolist() == [0]
    assert 0 < ds.blowup_time.sel(closure="unstable").values.item() < 0.32


def test_stage_keys_are_those_of_earlier_versions():
    """Existing output folders keep skipping their stages: the keys hash the same inputs."""
    from xtl.experiment.workspace import ExperimentPaths, StageCache

    cache = StageCache(ExperimentPaths("unused"))
    for name, parts in stage_inputs(load_config()).items():
        cache.keys[name] = cache.key(name, parts)
    assert cache.keys == {
        "data-small-base": "1925c0864df3c38f", "data-small-kf": "363a68e5083d5f24",
        "data-small-beta": "1cd7afec4e5c611b", "flows": "9380b18b0a9c83de",
        "base-model": "ffaea82a7ed14c5a", "recommend-small-kf": "2d571d9ec650c335",
        "sweep-small-kf": "8cf80f85fbec9039", "explain-small-kf": "5fcc39d56201198d",
        "aposteriori-small-kf": "c01c8f52c3f2f023", "recommend-small-beta": "c97f08d928b21c6a",
        "sweep-small-beta": "1e3b8882e56a9ef8", "explain-small-beta": "3f2eb3c561455f8a",
        "aposteriori-small-beta": "b3c4ed13ad0e2a18"}
    assert cache.key("report", [dict(cache.keys)]) == "281d01f392ebd5a3"


def test_a_sweep_of_some_layers_depends_on_the_recommendation():
    import copy

    from xtl.experiment.config import DEMO_CONFIG

    raw = copy.deepcopy(DEMO_CONFIG)
    raw["sweep"]["layers"] = [2]
    raw["budget"] = {"fractions": [0.5]}
    inputs = stage_inputs(load_config(raw))
    assert inputs["sweep-small-kf"][-1] == "@recommend-small-kf"
    assert "budget-small-kf" in inputs
    assert "@recommend-small-kf" not in stage_inputs(load_config())["sweep-small-kf"]


def test_pairs_are_a_stage_of_their_own():
    """[sweep] pairs = true adds the stage pairs-<target>; the single-layer sweep keeps its key."""
    import copy

    from xtl.experiment.config import DEMO_CONFIG

    raw = copy.deepcopy(DEMO_CONFIG)
    raw["sweep"]["pairs"] = True
    with_pairs, without = stage_inputs(load_config(raw)), stage_inputs(load_config())
    assert with_pairs["sweep-small-kf"] == without["sweep-small-kf"]
    assert "pairs-small-kf" in with_pairs and "pairs-small-kf" not in without
    assert with_pairs["pairs-small-kf"][:2] == ["@base-model", "@data-small-kf"]
    raw["sweep"]["pairs"] = ["small-beta"]  # only the targets named
    inputs = stage_inputs(load_config(raw))
    assert "pairs-small-beta" in inputs and "pairs-small-kf" not in inputs
    for bad, match in (("yes", "must be true, false or a list of target names"),
                       (["kf9"], r"must name targets, among \['small-kf', 'small-beta'\]")):
        raw["sweep"]["pairs"] = bad
        with pytest.raises(ValueError, match=match):
            load_config(raw)


# ------------------------------------------------------------------ paths and the cluster
def test_one_path_scheme(tmp_path):
    from xtl.experiment.workspace import ExperimentPaths

    paths = ExperimentPaths(tmp_path)
    rel = {k: str(p.relative_to(tmp_path)) for k, p in {
        "tl": paths.tl_model("kf", 3, 1), "scratch": paths.sweep_model("kf", "scratch", 0),
        "rec": paths.recommendation("kf", "probe"), "rec_n": paths.recommendation("kf", "probe", 7),
        "sweep": paths.sweep("kf"), "budget": paths.budget("kf"), "explain": paths.explain("kf"),
        "post": paths.aposteriori("kf"), "flows": paths.flows, "base": paths.model("base"),
        "data": paths.data("kf"), "report": paths.report}.items()}
    assert rel == {"tl": "models/tl-kf/tl_layer3_seed1.keras",
                   "scratch": "models/tl-kf/scratch_seed0.keras",
                   "rec": "results/recommend-kf-probe.nc",
                   "rec_n": "results/recommend-kf-n7-probe.nc", "sweep": "results/sweep-kf.nc",
                   "budget": "results/budget-kf.nc", "explain": "results/explain-kf.nc",
                   "post": "results/aposteriori-kf.nc", "flows": "results/flows.nc",
                   "base": "models/base.keras", "data": "data/kf", "report": "report.html"}


def test_the_cluster_is_started_on_first_use_and_closed_on_error(monkeypatch):
    import importlib

    from xtl.experiment.workspace import ExperimentCluster

    ensemble = importlib.import_module("xtl.solver.ensemble")  # the module, not the function

    closed = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def close(self):
            closed.append(self.name)

    started = []
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setattr(ensemble, "local_cluster",
                        lambda n: started.append(n) or (Fake("cluster"), Fake("client")))
    with ExperimentCluster() as cluster:
        assert started == [] and not cluster.started  # lazily
    with pytest.raises(RuntimeError):
        with ExperimentCluster() as cluster:
            assert cluster.client.name == "client" and cluster.client.name == "client"
            raise RuntimeError("a stage failed")
    assert len(started) == 1 and sorted(closed) == ["client", "cluster"]
    given = Fake("given")
    with ExperimentCluster(client=given) as cluster:
        assert cluster.client is given
    assert "given" not in closed  # a given client is the caller's to close


def test_a_second_experiment_in_the_same_folder_is_refused(tmp_path):
    from xtl.data.files import OutputLockedError

    config = load_config()
    first = Experiment(config, tmp_path / "exp")
    errors = []

    def second():  # another thread is refused like another process
        try:
            Experiment(config, tmp_path / "exp")
        except OutputLockedError as err:
            errors.append(str(err))

    try:
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
        assert len(errors) == 1 and f"being written by process {os.getpid()}" in errors[0]
        assert (tmp_path / "exp" / "config.json").exists()  # the first one's, intact
    finally:
        first.close()
    with Experiment(config, tmp_path / "exp") as again:  # free once the first is closed
        assert again.paths.config.exists()


def test_a_control_target_equal_to_the_base_gets_its_own_member_files(tmp_path):
    """A target that is the base's case under another name (a control) runs beside the
    base on one cluster: its members are their own dask tasks and files, equal to the
    base's (same case, same seeds)."""
    from distributed import Client, LocalCluster

    from xtl.experiment.stages import FlowData
    from xtl.experiment.workspace import ExperimentCluster, ExperimentPaths

    flow = {"case": "tiny", "members": 2, "spin_up": 0.02, "t_end": 0.1,
            "save_interval": 0.02}
    cfg = load_config({"base": dict(flow), "les": {"enabled": False},
                       "targets": [dict(flow, name="tiny-control", control=True)]})
    base, control = cfg.base, cfg.targets[0]
    paths = ExperimentPaths(tmp_path)
    paths.make_folders()
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=":0") as cluster, \
            Client(cluster, set_as_default=False) as client, \
            ExperimentCluster(client=client) as shared:
        data = FlowData(cfg, paths, shared, progress=False)
        data.run_concurrently([base, control])
        assert data.les(control).sizes["member"] == 2
    base_files = sorted(p.name for p in paths.data(base.name).glob("*.nc"))
    control_files = sorted(p.name for p in paths.data(control.name).glob("*.nc"))
    assert len(base_files) == 2 and control_files == base_files
    for name in base_files:
        with xr.open_dataset(paths.data(base.name) / name) as a, \
                xr.open_dataset(paths.data(control.name) / name) as b:
            assert a.sizes["time"] == 5
            xr.testing.assert_equal(a[["psi", "omega", "pi"]], b[["psi", "omega", "pi"]])


# ------------------------------------------------------------------ the cache checks its outputs
def test_stage_cache_reruns_a_stage_whose_output_changed_or_vanished(tmp_path):
    lines, calls = [], []
    cache = _cache(tmp_path, lines)
    folder = tmp_path / "data" / "flow"

    def work():
        calls.append(1)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "m0.nc").write_bytes(b"member 0" * 100)
        (folder / "m1.nc").write_bytes(b"member 1" * 100)

    assert cache.run("d", [1], [folder], work) is True
    manifest = json.loads((tmp_path / "stages" / "d.json").read_text())
    assert manifest["files"]["data/flow/m0.nc"]["size"] == 800
    assert _cache(tmp_path).run("d", [1], [folder], work) is False
    with open(folder / "m1.nc", "r+b") as file:  # truncated: same name, fewer bytes
        file.truncate(10)
    again = _cache(tmp_path, lines)
    assert again.run("d", [1], [folder], work) is True and len(calls) == 2
    assert lines[-2] == "data/flow/m1.nc changed since the stage ran: running d again"
    (folder / "m1.nc").write_bytes(b"member 2" * 100)  # the same size, other content
    assert _cache(tmp_path, lines).run("d", [1], [folder], work) is True and len(calls) == 3
    assert lines[-2].startswith("data/flow/m1.nc changed")
    (folder / "m0.nc").unlink()
    assert _cache(tmp_path, lines).run("d", [1], [folder], work) is True and len(calls) == 4
    assert lines[-2] == "data/flow/m0.nc vanished since the stage ran: running d again"
    (folder / "extra.nc").write_bytes(b"x")
    assert _cache(tmp_path, lines).run("d", [1], [folder], work) is True
    assert lines[-2].startswith("data/flow/extra.nc appeared")
    assert _cache(tmp_path, lines).run("d", [1], [folder], work) is False


def test_stage_cache_reruns_a_stage_whose_output_cannot_be_read(tmp_path):
    """An output that cannot be opened (a symlink loop: unreadable even to root)."""
    lines = []
    out = tmp_path / "results" / "a.nc"
    assert _cache(tmp_path).run("a", [1], [out], lambda: out.write_text("x")) is True
    out.unlink()
    out.symlink_to(out)

    def work():
        out.unlink()
        out.write_text("x")

    assert _cache(tmp_path, lines).run("a", [1], [out], work) is True
    assert lines[0].startswith("results/a.nc ") and lines[0].endswith("running a again")


@pytest.mark.parametrize("damage", [lambda text: text[:len(text) // 2], lambda text: "[1, 2]",
                                    lambda text: ""])
def test_a_corrupt_manifest_reruns_its_stage_naming_the_file(tmp_path, damage):
    lines, calls = [], []
    out = tmp_path / "results" / "a.nc"

    def work():
        calls.append(1)
        out.write_text("x")

    assert _cache(tmp_path).run("a", [1], [out], work) is True
    manifest = tmp_path / "stages" / "a.json"
    manifest.write_text(damage(manifest.read_text()))
    assert _cache(tmp_path, lines).run("a", [1], [out], work) is True and len(calls) == 2
    assert lines[0].startswith("stages/a.json ") and lines[0].endswith(": running a again")
    assert _cache(tmp_path).run("a", [1], [out], work) is False  # rewritten whole


def test_a_manifest_without_hashes_is_trusted_on_key_and_existence_then_upgraded(tmp_path):
    """Manifests written before the hashes were recorded keep their stages skipped."""
    from xtl.experiment.workspace import file_sha256

    lines, calls = [], []
    cache = _cache(tmp_path, lines)
    out = tmp_path / "results" / "a.nc"
    out.write_text("made before")
    manifest = tmp_path / "stages" / "a.json"
    manifest.write_text(json.dumps({"key": cache.key("a", [1]), "outputs": ["results/a.nc"],
                                    "seconds": 1.0}))
    assert cache.run("a", [1], [out], lambda: calls.append(1)) is False and calls == []
    record = json.loads(manifest.read_text())
    assert record["files"] == {"results/a.nc": {"size": 11, "sha256": file_sha256(out)}}
    assert record["seconds"] == 1.0
    out.write_text("changed now")  # from now on a change is seen
    assert _cache(tmp_path, lines).run("a", [1], [out], lambda: calls.append(1)) is True


def test_an_output_folder_with_missing_parents_is_made(tmp_path):
    config = load_config()
    with Experiment(config, tmp_path / "new folder" / "exp") as experiment:
        assert experiment.paths.config.exists()
    assert (tmp_path / "new folder" / "exp" / "stages").is_dir()
