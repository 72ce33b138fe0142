"""The `xtl` command, run as a user would (subprocess)."""
import os
import subprocess
import sys

import xarray as xr


def _xtl(*args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "xtl.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_demo_writes_data_and_figures_then_reuses_them(tmp_path):
    out = tmp_path / "demo"
    run = _xtl("demo", "--case", "tiny", "--spin-up", "1", "--t-end", "2", "--out", str(out),
               cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with xr.open_dataset(out / "dns-tiny.nc") as ds:
        assert ds.sizes["time"] == 2 and ds.attrs["complete"] == 1
    for figure in ("vorticity.png", "enstrophy-spectrum.png"):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mtime = (out / "dns-tiny.nc").stat().st_mtime_ns
    again = _xtl("demo", "--case", "tiny", "--spin-up", "1", "--t-end", "2", "--out", str(out),
                 cwd=tmp_path)
    assert again.returncode == 0 and "reusing" in again.stdout
    assert (out / "dns-tiny.nc").stat().st_mtime_ns == mtime


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
