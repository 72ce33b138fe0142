"""The `xtl` command, run as a user would (subprocess)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr


def _xtl(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "xtl.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


TINY_TOML = """
[experiment]
name = "tiny"
seed = 0

[base]
case = "tiny"
members = 1
spin_up = 1.0
t_end = 3.0
save_interval = 0.1

[[targets]]
name = "tiny-re"
case = "tiny"
Re = 400.0
spin_up = 1.0
t_end = 2.0
save_interval = 0.1

[[targets]]
name = "tiny-kf"
case = "tiny"
kf = 6.0
spin_up = 1.0
t_end = 2.0
save_interval = 0.1

[network]
n_layers = 3
channels = 4
kernel_size = 3

[training]
epochs = 3
batch_size = 8

[transfer]
n_samples = 4
epochs = 2
batch_size = 4

[sweep]
seeds = 2

[recommend.probe]
epochs = 2

[les]
t_end = 0.4
save_interval = 0.2
"""


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiment")
    (folder / "tiny.toml").write_text(TINY_TOML)
    first = _xtl("run", "tiny.toml", "--out", "out", cwd=folder)
    assert first.returncode == 0, first.stderr[-3000:]
    return folder, first


def test_run_writes_every_stage_and_a_report_with_every_figure(tiny_experiment):
    from xtl.report import REPORT_FIGURES

    folder, first = tiny_experiment
    out = folder / "out"
    report = (out / "report.html").read_text()
    for kind in REPORT_FIGURES:
        assert f"figures/{kind}" in report, kind
    for img in re.findall(r"src='(figures/[^']+)'", report):
        assert (out / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", img
    assert report.count("<figcaption>") == len(re.findall(r"<img ", report))
    for target in ("tiny-re", "tiny-kf"):
        with xr.open_dataset(out / "results" / f"sweep-{target}.nc") as sweep:
            assert list(sweep.layer.values) == [1, 2, 3] and list(sweep.seed.values) == [0, 1]
            assert np.all(np.abs(sweep.cc.values) <= 1)
        assert f"{target}: CC BNN" in first.stdout
        for method in ("probe", "spectral", "gauss-newton", "gradient-norm"):
            assert (out / "results" / f"recommend-{target}-{method}.nc").exists()
            assert f"    {method}: recommended" in first.stdout
    with xr.open_dataset(out / "results" / "flows.nc") as flows:
        assert flows.target.values.tolist() == ["tiny-re", "tiny-kf"]
        assert (flows.max_decades >= 0.3).any("variable").all()
    assert (out / "models" / "base.keras").exists() and (out / "models" / "base.nc").exists()


def test_a_second_run_skips_completed_stages(tiny_experiment):
    folder, _ = tiny_experiment
    out = folder / "out"
    model_mtime = (out / "models" / "base.keras").stat().st_mtime_ns
    again = _xtl("run", "tiny.toml", "--out", "out", cwd=folder)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "stages run: 0," in again.stdout
    assert again.stdout.count("unchanged, skipped") >= 10
    assert (out / "models" / "base.keras").stat().st_mtime_ns == model_mtime


def test_a_changed_setting_reruns_only_what_depends_on_it(tiny_experiment):
    folder, _ = tiny_experiment
    changed = TINY_TOML.replace("[les]\nt_end = 0.4", "[les]\nt_end = 0.2")
    (folder / "changed.toml").write_text(changed)
    run = _xtl("run", "changed.toml", "--out", "out", cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    ran = set(re.findall(r"\] (\S+): running", run.stdout))
    assert ran == {"aposteriori-tiny-re", "aposteriori-tiny-kf", "report"}


def test_a_target_too_close_to_the_base_stops_after_the_data(tmp_path):
    close = TINY_TOML.replace('name = "tiny-re"\ncase = "tiny"\nRe = 400.0',
                              'name = "tiny-same"\ncase = "tiny"\nRe = 101.0')
    (tmp_path / "close.toml").write_text(close)
    run = _xtl("run", "close.toml", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "target 'tiny-same' differs from the base 'tiny' by at most 0.0" in run.stderr
    assert "mark it `control = true`" in run.stderr
    assert run.stderr.strip().count("\n") == 0
    assert (tmp_path / "out" / "stages" / "flows.json").exists()
    assert not (tmp_path / "out" / "stages" / "base-model.json").exists()


def test_config_errors_are_reported_by_name(tmp_path):
    (tmp_path / "bad.toml").write_text(TINY_TOML.replace("channels = 4", "channels = -4"))
    run = _xtl("run", "bad.toml", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and "'network.channels'" in run.stderr
    assert "Traceback" not in run.stderr
    (tmp_path / "unknown.toml").write_text(TINY_TOML.replace("[network]", "[network]\ndepth = 3"))
    run = _xtl("run", "unknown.toml", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and "'network.depth': unknown key" in run.stderr
    run = _xtl("run", "missing.toml", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and "missing.toml" in run.stderr


def test_user_errors_are_one_line_and_nonzero(tmp_path):
    run = _xtl("simulate", "nope", "--out", "x.nc", "--t-end", "1", "--save-interval", "1",
               cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "unknown case 'nope'" in run.stderr
    assert "Traceback" not in run.stderr
    bad = _xtl("simulate", "tiny", "--out", "x.nc", "--t-end", "1", "--save-interval", "0.0031",
               cwd=tmp_path)
    assert bad.returncode == 2 and "save_interval" in bad.stderr and "Traceback" not in bad.stderr


def test_simulate_command_writes_netcdf(tmp_path):
    run = _xtl("simulate", "tiny", "--out", "run.nc", "--t-end", "0.2", "--save-interval", "0.1",
               "--seed", "3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with xr.open_dataset(tmp_path / "run.nc") as ds:
        assert ds.sizes["time"] == 3 and ds.attrs["seed"] == 3 and ds.attrs["case_name"] == "tiny"
