"""The `xtl` command, run as a user would (subprocess)."""
import html
import json
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
    from xtl.experiment.report import REPORT_FIGURES

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
        with xr.open_dataset(out / "results" / f"aposteriori-{target}.nc") as post:
            assert post.closure.values.tolist() == ["no closure", "smagorinsky",
                                                    "dynamic-smagorinsky", "BNN", "TLNN"]
            stable = ", ".join(f"{c} {int(post.stable.sel(closure=c).sum())}/1"
                               for c in post.closure.values)
        assert f"    a posteriori, stable runs: {stable}" in first.stdout
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


def test_a_changed_setting_reruns_only_what_depends_on_it(tiny_experiment, tmp_path):
    folder = _copy_of(tiny_experiment, tmp_path)  # the shared folder stays as tiny.toml ran
    changed = TINY_TOML.replace("[les]\nt_end = 0.4", "[les]\nt_end = 0.2")
    (folder / "changed.toml").write_text(changed)
    run = _xtl("run", "changed.toml", "--out", "out", cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    ran = set(re.findall(r"\] (\S+): running", run.stdout))
    assert ran == {"aposteriori-tiny-re", "aposteriori-tiny-kf", "report"}


def test_a_target_too_close_to_the_base_stops_after_the_data(tmp_path):
    # the base's case and time window, Re 100.5 instead of 100: the same flow, in effect
    close = TINY_TOML.replace('name = "tiny-re"\ncase = "tiny"\nRe = 400.0\nspin_up = 1.0\n'
                              't_end = 2.0',
                              'name = "tiny-same"\ncase = "tiny"\nRe = 100.5\nspin_up = 1.0\n'
                              't_end = 3.0')
    assert "tiny-same" in close
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


# --------------------------------------------------------------------------- flags, help, version
def _subparsers():
    import argparse

    from xtl.cli import _parser

    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version_flag(tmp_path):
    import importlib.metadata

    run = _xtl("--version", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == f"xtl {importlib.metadata.version('xtl')}"


def test_every_flag_has_help_and_shows_its_default():
    import argparse

    parser, commands = _subparsers()
    assert {"ensemble", "simulate", "coarse-grain", "train", "explain"} <= set(commands)
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.dest)
            shown = action.default not in (None, False) and action.option_strings
            if shown:
                default = " ".join(map(str, action.default)) if isinstance(action.default, list) \
                    else str(action.default)
                assert f"(default: {default})" in text or f"(default: {action.default})" in text, \
                    (name, action.dest)
    train = " ".join(commands["train"].format_help().split())
    assert "11 layers × 64 channels (default: 11)" in train and "(default: 64)" in train


def test_simulate_writes_on_the_fly_les_data_in_float32(tmp_path):
    run = _xtl("simulate", "tiny", "--out", "les.nc", "--t-end", "0.2", "--save-interval", "0.1",
               "--les", "--dtype", "float32", "--dns-every", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "LES data" in run.stdout and "les.dns.nc" in run.stdout
    with xr.open_dataset(tmp_path / "les.nc") as les, xr.open_dataset(tmp_path / "les.dns.nc") as dns:
        assert les.pi.dtype == np.float32 and les.sizes == {"time": 3, "y": 16, "x": 16}
        assert dns.sizes == {"time": 2, "y": 64, "x": 64} and dns.omega.dtype == np.float32
    bad = _xtl("simulate", "tiny", "--out", "d.nc", "--t-end", "0.2", "--save-interval", "0.1",
               "--dns-every", "2", cwd=tmp_path)
    assert bad.returncode == 2 and "--dns-every only applies with --les" in bad.stderr


def test_simulate_applies_n_and_n_les_before_checking_the_case(tmp_path):
    # tiny's n_les is 16: --n 8 alone is refused, --n 8 --n-les 4 is a valid case
    run = _xtl("simulate", "tiny", "--out", "les.nc", "--t-end", "0.04", "--save-interval",
               "0.02", "--n", "8", "--n-les", "4", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with xr.open_dataset(tmp_path / "les.nc") as les:
        assert les.sizes == {"time": 3, "y": 4, "x": 4}
    bad = _xtl("simulate", "tiny", "--out", "dns.nc", "--t-end", "0.04", "--save-interval",
               "0.02", "--n", "8", cwd=tmp_path)
    assert bad.returncode != 0 and "n_les" in bad.stderr


def test_coarse_grain_defaults_n_les_and_refuses_les_data(tmp_path):
    assert _xtl("simulate", "tiny", "--out", "dns.nc", "--t-end", "0.2", "--save-interval", "0.1",
                cwd=tmp_path).returncode == 0
    run = _xtl("coarse-grain", "dns.nc", "--out", "les.nc", "--dtype", "float32", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with xr.open_dataset(tmp_path / "les.nc") as les:
        assert les.sizes == {"time": 3, "y": 16, "x": 16} and les.pi.dtype == np.float32
        assert les.attrs["n_les"] == 16  # the case's
    again = _xtl("coarse-grain", "les.nc", "--out", "twice.nc", cwd=tmp_path)
    assert again.returncode == 2 and "already coarse-grained LES data" in again.stderr
    assert "Traceback" not in again.stderr and not (tmp_path / "twice.nc").exists()


def test_ensemble_command(tmp_path):
    run = _xtl("ensemble", "tiny", "--seeds", "0", "1", "--directory", "runs", "--t-end", "0.2",
               "--save-interval", "0.1", "--n-les", "16", "--n-workers", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 of 2 members complete in runs" in run.stdout
    import xtl

    ds = xtl.open_ensemble(tmp_path / "runs")
    assert ds.sizes == {"member": 2, "time": 3, "y": 16, "x": 16}
    np.testing.assert_array_equal(ds.seed.values, [0, 1])


def test_train_says_it_trains_the_papers_network(tmp_path, capsys, les_base):
    from xtl.cli import main
    from xtl.data.netcdf import write_dataset

    write_dataset(les_base.isel(time=slice(0, 8)), tmp_path / "les.nc")
    assert main(["train", str(tmp_path / "les.nc"), "--out", str(tmp_path / "m.keras"),
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "training 11 layers × 64 channels, 5×5 kernels, 1 epochs (the paper's network" in out


def test_sweep_and_explain_commands_without_warnings_or_n(tmp_path, trained_model, les_target):
    import warnings

    from xtl.cli import main
    from xtl.data.netcdf import write_dataset

    trained_model.save(tmp_path / "base.keras")
    write_dataset(les_target.isel(time=slice(0, 24)), tmp_path / "train.nc")
    write_dataset(les_target.isel(time=slice(24, 32)), tmp_path / "test.nc")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["sweep", str(tmp_path / "base.keras"), str(tmp_path / "train.nc"),
                     str(tmp_path / "test.nc"), "--epochs", "1", "--out",
                     str(tmp_path / "sweep.nc")]) == 0
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], \
        [str(w.message) for w in caught]
    assert main(["explain", str(tmp_path / "base.keras"), "--out", str(tmp_path / "x.nc")]) == 0
    with xr.open_dataset(tmp_path / "x.nc") as census:
        assert census.attrs["kmax"] == 8  # n = 16, the model's training grid


def test_dry_run_prints_every_stage_and_runs_nothing(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    run = _xtl("run", "tiny.toml", "--dry-run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    for stage in ("data-tiny", "base-model", "sweep-tiny-re", "sweep-tiny-kf",
                  "recommend-tiny-kf", "aposteriori-tiny-re", "total"):
        assert stage in run.stdout, stage
    assert "Measured here: DNS step tiny" in run.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "tiny.toml"]
    no_out = _xtl("run", "tiny.toml", cwd=tmp_path)
    assert no_out.returncode == 2 and "--out" in no_out.stderr


def _copy_of(tiny_experiment, tmp_path):
    """A copy of the tiny experiment's folder, to damage without touching the shared one."""
    import shutil

    folder, _ = tiny_experiment
    shutil.copytree(folder, tmp_path / "copy")
    return tmp_path / "copy"


def test_a_swapped_base_model_reruns_its_stage_to_a_clean_runs_result(tiny_experiment, tmp_path):
    from xtl.nn.files import load_model
    from xtl.nn.model import model_id

    folder = _copy_of(tiny_experiment, tmp_path)
    models = folder / "out" / "models"
    clean = model_id(load_model(models / "base.nc"))
    with xr.open_dataset(folder / "out" / "results" / "base-scores.nc") as scores:
        clean_scores = scores.load()
    other = models / "tl-tiny-re" / "tl_layer1_seed0.keras"  # another network, same shape
    (models / "base.keras").write_bytes(other.read_bytes())
    run = _xtl("run", "tiny.toml", "--out", "out", cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "models/base.keras changed since the stage ran: running base-model again" in run.stdout
    assert "stages run: 1," in run.stdout, run.stdout
    assert model_id(load_model(models / "base.keras")) == clean
    assert model_id(load_model(models / "base.nc")) == clean
    with xr.open_dataset(folder / "out" / "results" / "base-scores.nc") as scores:
        xr.testing.assert_allclose(scores.load(), clean_scores)


def test_a_truncated_member_file_reruns_the_data_stage(tiny_experiment, tmp_path):
    folder = _copy_of(tiny_experiment, tmp_path)
    member = sorted((folder / "out" / "data" / "tiny").glob("*.nc"))[0]
    size = member.stat().st_size
    with open(member, "r+b") as file:
        file.truncate(size // 2)
    run = _xtl("run", "tiny.toml", "--out", "out", cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    name = member.relative_to(folder / "out")
    assert f"{name} changed since the stage ran: running data-tiny again" in run.stdout
    with xr.open_dataset(member) as ds:  # simulated again, whole
        assert int(ds.attrs["complete"]) == 1



def test_report_writes_markdown_with_the_html_findings_and_the_summary_files(
        tiny_experiment, tmp_path):
    folder = _copy_of(tiny_experiment, tmp_path)
    md = _xtl("report", "out", "--format", "md", cwd=folder)
    assert md.returncode == 0, md.stderr[-3000:]
    out = folder / "out"
    assert md.stdout.strip().endswith("report.md")
    text = (out / "report.md").read_text()
    record = json.loads((out / "results" / "summary.json").read_text())
    with xr.open_dataset(out / "results" / "summary.nc") as summary:
        assert summary.target.values.tolist() == ["tiny-re", "tiny-kf"]
        assert summary.n_seeds.values.tolist() == [2, 2]
    html_page = (out / "report.html").read_text()
    for finding in record["findings"]:
        assert finding["text"] in text  # the same sentences in both renderings
        assert html.escape(finding["text"], quote=True) in html_page
    warnings = [line for line in text.splitlines() if line.startswith("> ⚠ ")]
    assert [w.split(":")[0] for w in warnings[:2]] == ["> ⚠ tiny-re", "> ⚠ tiny-kf"]
    assert "rest on fewer than 3 seeds on tiny-re (2), tiny-kf (2)" in warnings[2]
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert f'<a id="{anchor}"></a>' in text, anchor
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image


@pytest.mark.slow
def test_the_report_loads_offline_in_headless_chromium_with_every_anchor_and_image(
        tiny_experiment):
    from browser import check_page

    folder, _ = tiny_experiment
    page = folder / "out" / "report.html"
    text = page.read_text()
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # nothing to fetch online
    result = check_page(page)
    assert result["title"] == "xtl report: tiny"
    assert len(result["images"]) == text.count("<img ") > 10
    assert [i["src"] for i in result["images"] if not i["ok"]] == []
    assert len(result["anchors"]) > 10
    assert [a["href"] for a in result["anchors"] if not a["ok"]] == []
    assert all(url.startswith("file://") for url in result["fetched"])
