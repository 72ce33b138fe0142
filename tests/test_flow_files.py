"""Flows read from files in a config (``path``) and the ``[data]`` table: parsing, errors
named by key, LES data used as is, DNS coarse-grained, stage keys that hash the files.

Real files (netCDF and zarr) written to a temporary folder; no mocks.
"""
import copy
import re
import json
import os
import time

import numpy as np
import pytest
import xarray as xr

import xtl
from conftest import make_les
from xtl.data.netcdf import write_dataset
from xtl.experiment.config import DEMO_CONFIG, ConfigError, FileFlowConfig, load_config
from xtl.experiment.stages import FlowData, flow_from_files, open_flow_files, stage_inputs
from xtl.experiment.workspace import ExperimentPaths, StageCache


def _raw(base=None, targets=None, **tables):
    raw = copy.deepcopy(DEMO_CONFIG)
    if base is not None:
        raw["base"] = base
    if targets is not None:
        raw["targets"] = targets
    raw.update(tables)
    return raw


def _toml(folder, text):
    path = folder / "exp.toml"
    path.write_text(text)
    return path


@pytest.fixture
def les_files(tmp_path):
    """Two LES member files (netCDF) of a flow in runs/base/ and one zarr store of a target."""
    runs = tmp_path / "runs"
    (runs / "base").mkdir(parents=True)
    for seed in (0, 1):
        write_dataset(make_les(nt=8, seed=seed), runs / "base" / f"m{seed}.nc")
    write_dataset(make_les(nt=8, seed=2, pi_map="laplacian+omega"), runs / "target.zarr")
    return tmp_path


_FILE_FLOWS = """
[experiment]
name = "files"

[base]
name = "base"
path = "runs/base/*.nc"

[[targets]]
name = "target"
path = "runs/target.zarr"

[les]
t_end = 1.0
save_interval = 0.5
"""


# --------------------------------------------------------------------------- parsing
def test_a_flow_path_is_resolved_against_the_config_files_folder(les_files, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_config(_toml(les_files, _FILE_FLOWS))
    assert isinstance(cfg.base, FileFlowConfig) and isinstance(cfg.targets[0], FileFlowConfig)
    assert cfg.base.path == str(les_files / "runs" / "base" / "*.nc")
    assert [p.name for p in cfg.base.files()] == ["m0.nc", "m1.nc"]
    assert cfg.tables()["base"]["path"] == cfg.base.path  # config.json reopens them anywhere
    assert load_config(cfg.tables()) == cfg
    assert cfg.data.is_default and "aposteriori-target" not in stage_inputs(cfg)


@pytest.mark.parametrize("table, key, message", [
    ({"name": "b", "path": "runs/none/*.nc"}, "base.path", r"no file matches '.*runs/none/\*\.nc'"),
    ({"name": "b", "path": "runs/base/*.nc", "case": "small-base"}, "base.case",
     r"a flow read from files \(path\) takes only"),
    ({"name": "b", "path": "runs/base/*.nc", "members": 2}, "base.members", "a preset's keys"),
    ({"path": "runs/base/*.nc"}, "base.name", "is missing"),
    ({"name": "b", "path": 3}, "base.path", "must be a path or a glob"),
    ({"name": "b", "path": "runs/base/*.nc", "n_les": 7}, "base.n_les", "even"),
    ({"name": "b", "path": "runs/base/*.nc", "filter": "nope"}, "base.filter", "nope"),
])
def test_bad_file_flows_are_named_by_key(les_files, table, key, message):
    with pytest.raises(ConfigError, match=rf"config key '{key}': .*{message}"):
        from xtl.experiment.config import parse_config
        parse_config(_raw(base=table), folder=les_files)


def test_the_data_table_parses_into_the_variables_and_the_pair():
    cfg = load_config(_raw(data={"inputs": ["q"], "outputs": "pi_q", "channels": "lev",
                                 "scalar": "q", "streamfunction": "p"}))
    data = cfg.data
    assert (data.inputs, data.outputs, data.channels) == (("q",), ("pi_q",), "lev")
    assert data.coarse_keywords() == {"scalar": "q", "streamfunction": "p"}
    assert data.train_keywords() == {"inputs": ["q"], "outputs": ["pi_q"], "channels": "lev"}
    assert not data.is_default
    variables = data.variables()
    assert (variables.inputs, variables.outputs, variables.channels) == (("q",), ("pi_q",), "lev")
    default = load_config().data
    assert default.is_default and default.train_keywords() == {} == default.coarse_keywords()


@pytest.mark.parametrize("table, key", [
    ({"inputs": []}, "data.inputs"), ({"inputs": ["q", "q"]}, "data.inputs"),
    ({"outputs": [1]}, "data.outputs"), ({"inputs": ["q"], "outputs": ["q"]}, "data.outputs"),
    ({"channels": "x"}, "data.channels"), ({"scalar": ""}, "data.scalar"),
    ({"scalar": "q", "streamfunction": "q"}, "data.streamfunction"), ({"level": 2}, "data.level"),
])
def test_bad_data_tables_are_named_by_key(table, key):
    with pytest.raises(ConfigError, match=rf"config key '{re.escape(key)}'"):
        load_config(_raw(data=table))


def test_a_default_data_table_keeps_the_stage_keys_and_another_changes_them():
    cache = StageCache(ExperimentPaths("unused"))
    keys = {}
    for label, raw in (("none", _raw()), ("default", _raw(data={"inputs": ["psi", "omega"]})),
                       ("omega", _raw(data={"inputs": ["omega"]}))):
        inputs = stage_inputs(load_config(raw))
        keys[label] = {name: cache.key(name, parts) for name, parts in inputs.items()}
    assert keys["default"] == keys["none"]
    changed = {n for n in keys["omega"] if keys["omega"][n] != keys["none"][n]}
    assert changed == {"base-model"}  # the simulated flows' data do not depend on it
    # an omega -> pi network is no closure of xtl's 2D LES: no a posteriori stages
    assert set(keys["none"]) - set(keys["omega"]) == {
        n for n in keys["none"] if n.startswith("aposteriori-")} != set()


# --------------------------------------------------------------------------- reading
def test_les_files_combine_one_member_per_file_lazily(les_files):
    cfg = load_config(_toml(les_files, _FILE_FLOWS))
    ds = open_flow_files(cfg.base)
    assert ds.omega.dims == ("member", "time", "y", "x") and ds.omega.chunks is not None
    np.testing.assert_array_equal(ds.member.values, [0, 1])
    np.testing.assert_array_equal(ds.pi.isel(member=1).values, make_les(nt=8, seed=1).pi.values)
    les, coarse = flow_from_files(cfg.targets[0], cfg.data)
    assert not coarse and sorted(les.data_vars) == ["omega", "pi", "psi"]
    np.testing.assert_array_equal(les.pi.isel(member=0).values,
                                  make_les(nt=8, seed=2, pi_map="laplacian+omega").pi.values)


def test_files_that_are_neither_les_nor_dns_are_refused_naming_what_they_lack(les_files):
    cfg = load_config(_toml(les_files, _FILE_FLOWS + '\n[data]\ninputs = ["omega"]\n'
                                                      'outputs = ["pi_q"]\nscalar = "q"\n'
                                                      'streamfunction = "p"\n'))
    with pytest.raises(ValueError, match=r"lack \['pi_q'\] of the \[data\] inputs and outputs.*"
                                         r"lack \['q', 'p'\] of the pair"):
        flow_from_files(cfg.base, cfg.data)


def test_files_of_other_sizes_are_refused_naming_them(les_files):
    write_dataset(make_les(nt=5, seed=4), les_files / "runs" / "base" / "m2.nc")
    cfg = load_config(_toml(les_files, _FILE_FLOWS))
    with pytest.raises(ValueError, match=r"m2\.nc' has the sizes .*'time': 5.*must share"):
        open_flow_files(cfg.base)


def test_dns_files_are_coarse_grained_once_and_kept_until_a_file_changes(tmp_path):
    case = xtl.get_case("tiny")
    (tmp_path / "dns").mkdir()
    for seed in (1, 2):
        xtl.simulate(case, path=tmp_path / "dns" / f"run{seed}.nc", seed=seed, progress=False,
                     t_end=0.3, save_interval=0.1).close()
    cfg = load_config(_toml(tmp_path, _FILE_FLOWS.replace("runs/base/*.nc", "dns/*.nc")
                           .replace('runs/target.zarr', 'dns/run1.nc') + "\n"))
    les, coarse = flow_from_files(cfg.base, cfg.data)
    assert coarse and les.pi.dims == ("member", "time", "y", "x")
    assert les.sizes["x"] == case.n_les  # the files' case_n_les
    paths = ExperimentPaths(tmp_path / "out")
    data = FlowData(cfg, paths, cluster=None)
    first = data.les(cfg.base)
    cached = paths.data("base") / "les.nc"
    assert cached.is_file() and first.pi.chunks is not None
    xr.testing.assert_allclose(first.pi.load(), les.pi.load())
    stamp = cached.stat().st_mtime_ns
    key = StageCache(paths).key("data-base", stage_inputs(cfg)["data-base"])
    assert FlowData(cfg, paths, cluster=None).les(cfg.base) is not None
    assert cached.stat().st_mtime_ns == stamp  # the files unchanged: not coarse-grained again
    sources = json.loads((paths.data("base") / "sources.json").read_text())
    assert [os.path.basename(f[0]) for f in sources["files"]] == ["run1.nc", "run2.nc"]
    time.sleep(0.01)
    edited = tmp_path / "dns" / "run2.nc"
    os.utime(edited, ns=(edited.stat().st_atime_ns, edited.stat().st_mtime_ns + 10**9))
    assert StageCache(paths).key("data-base", stage_inputs(cfg)["data-base"]) != key
    FlowData(cfg, paths, cluster=None).les(cfg.base)
    assert cached.stat().st_mtime_ns != stamp  # coarse-grained again


def test_the_base_model_is_trained_on_files_with_the_data_tables_variables(les_files):
    from xtl.experiment.stages import train_base
    from xtl.nn.files import load_model

    cfg = load_config(_toml(les_files, _FILE_FLOWS + """
[network]
n_layers = 2
channels = 4
kernel_size = 3

[training]
epochs = 1

[data]
inputs = ["omega"]
"""))
    paths = ExperimentPaths(les_files / "out")
    paths.make_folders()
    train_base(cfg, paths, FlowData(cfg, paths, cluster=None), progress=False)
    model = load_model(paths.model("base"))
    assert (model.variables.inputs, model.variables.outputs) == (("omega",), ("pi",))
    assert model.spec.input_channels == 1
