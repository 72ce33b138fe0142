"""Files that are not what they claim, file modes, and concurrent writers.

(xtl.data.files, xtl.data.netcdf, xtl.data.stream)

Real files and real processes: truncated netCDF files are written by xarray and cut
in half; second writers are other processes holding the lock, or killed with SIGKILL
while holding it.
"""
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from xtl.data.netcdf import (
    FileFormatError,
    IncompleteFileError,
    load_dataset,
    open_dataset,
    verify_netcdf,
    write_dataset,
)
from xtl.data.files import OutputLockedError, atomic_path, lock_path, output_lock, sweep_stale_temps
from xtl.data.stream import SnapshotStream

ROOT = Path(__file__).resolve().parents[1]


def _dataset(nt=8, n=24, **attrs):
    """A small DNS-like Dataset: omega and pi on (time, y, x)."""
    rng = np.random.default_rng(0)
    x = np.arange(n) * 2 * np.pi / n
    return xr.Dataset(
        {"omega": (("time", "y", "x"), rng.standard_normal((nt, n, n))),
         "pi": (("time", "y", "x"), rng.standard_normal((nt, n, n)))},
        coords={"time": np.arange(nt) * 0.1, "y": x, "x": x}, attrs=attrs)


def _write_classic(ds: xr.Dataset, path: Path, fmt: str) -> None:
    """``ds`` as a classic-format file with an unlimited ``time`` (CDF-5 through netCDF4,
    which xarray does not write)."""
    if fmt != "NETCDF3_64BIT_DATA":
        ds.to_netcdf(path, format=fmt, unlimited_dims=["time"])
        return
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        for dim, size in ds.sizes.items():
            nc.createDimension(dim, None if dim == "time" else size)
        for name, var in ds.variables.items():
            nc.createVariable(name, var.dtype, var.dims)[:] = var.values


def _truncate_to_half(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


# --------------------------------------------------------------------------- not what they claim
@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT", "NETCDF3_64BIT_DATA"])
def test_a_truncated_classic_file_is_refused_naming_it(tmp_path, fmt):
    path = tmp_path / f"dns-{fmt}.nc"
    _write_classic(_dataset(), path, fmt)
    assert verify_netcdf(path) == "classic"
    with open_dataset(path) as whole:
        assert whole.sizes["time"] == 8
    _truncate_to_half(path)
    with xr.open_dataset(path) as silent:  # what xarray alone does: zeros, no error
        assert silent.sizes["time"] == 8 and float(abs(silent.pi[-1]).max()) == 0.0
    with pytest.raises(FileFormatError, match=rf"{path}: not a readable netCDF file \(truncated\?\)"
                                              r".* it has \d+ bytes, its header describes \d+ "
                                              r"\(8 records of \d+ bytes\)"):
        open_dataset(path)
    with pytest.raises(FileFormatError, match=str(path)):
        load_dataset(path)


@pytest.mark.parametrize("engine", ["netcdf4", "scipy"])
def test_intact_classic_files_of_every_layout_open(tmp_path, engine):
    """The size rule holds for fixed-size variables only, one record variable (unpadded
    records) and several record variables of odd sizes, from both writers."""
    odd = {"a": (("time", "x"), np.ones((5, 3), "i1")), "b": (("time", "x"), np.ones((5, 3), "i2"))}
    for name, ds in {
        "fixed": xr.Dataset({"a": (("y", "x"), np.ones((3, 5), "i2"))}, attrs={"s": "abc"}),
        "one-record": xr.Dataset({"a": odd["a"]}),
        "records": xr.Dataset(odd, coords={"time": np.arange(5.0)}),
    }.items():
        path = tmp_path / f"{name}.nc"
        ds.to_netcdf(path, engine=engine, format="NETCDF3_64BIT",
                     unlimited_dims=["time"] if "time" in ds.dims else None)
        with open_dataset(path) as back:
            assert back.sizes == ds.sizes
        with open(path, "r+b") as f:  # the last record cut off
            f.truncate(path.stat().st_size - (4 if name == "fixed" else 6))
        with pytest.raises(FileFormatError, match="truncated"):
            open_dataset(path)


def test_a_truncated_netcdf4_file_is_refused_naming_it(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "dns.nc")
    assert verify_netcdf(path) == "netcdf4"
    _truncate_to_half(path)
    with pytest.raises(FileFormatError,
                       match=rf"^{path}: not a readable netCDF file \(truncated or corrupt\?\)"):
        open_dataset(path)


@pytest.mark.parametrize("content", [b"omega,pi\n1,2\n", b""])
def test_a_text_or_empty_file_is_refused_naming_it(tmp_path, content):
    path = tmp_path / "dns.nc"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=rf"^{path}: not a netCDF file \(it "):
        open_dataset(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing.nc")):
        open_dataset(tmp_path / "nothing.nc")


def test_an_incomplete_file_is_refused_unless_allowed(tmp_path):
    path = write_dataset(_dataset(complete=0, blowup_time=0.75), tmp_path / "bad.nc")
    with pytest.raises(IncompleteFileError, match=rf"^{path}: its writer did not finish "
                                                  r"\(complete = 0, it diverged at t=0.75\); "
                                                  r"pass allow_incomplete=True"):
        open_dataset(path)
    with pytest.raises(IncompleteFileError):
        load_dataset(path)
    with open_dataset(path, allow_incomplete=True) as ds:
        assert ds.sizes["time"] == 8 and ds.attrs["complete"] == 0
    assert load_dataset(path, allow_incomplete=True).attrs["complete"] == 0
    for complete in ({"complete": 1}, {}):  # finished, or written by something else
        good = write_dataset(_dataset(**complete), tmp_path / f"good{len(complete)}.nc")
        assert load_dataset(good).sizes["time"] == 8


def test_an_unfinished_stream_is_incomplete_and_readable_to_its_last_sync(tmp_path):
    """A run's ``.part`` while it runs: complete = 0, and its header's records are all there."""
    x = np.arange(8.0)
    stream = SnapshotStream(tmp_path / "run.nc", (x, x), ("omega",), {}, dtype="float32")
    try:
        for i in range(3):
            stream.write(i, 0.1 * i, {"omega": np.full((8, 8), i + 1.0)})
        stream.sync()
        part = tmp_path / "run.nc.part"
        assert verify_netcdf(part) == "classic"
        with pytest.raises(IncompleteFileError, match=str(part)):
            open_dataset(part)
        with open_dataset(part, allow_incomplete=True) as ds:
            assert ds.sizes["time"] == 3 and float(ds.omega[-1].min()) == 3.0
    finally:
        stream.close()


def test_missing_variables_and_dims_are_named(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "dns.nc")
    with open_dataset(path, variables=["omega", "pi", "x"], dims="time") as ds:
        assert "pi" in ds
    with pytest.raises(FileFormatError, match=rf"^{path}: lacks the variables \['psi'\] \(it has "
                                              r"the variables \['omega', 'pi', 'time', 'x', 'y'\]"):
        open_dataset(path, variables=("omega", "psi"))
    with pytest.raises(FileFormatError, match=r"lacks the variables \['psi'\] and the dimensions "
                                              r"\['member'\]"):
        load_dataset(path, variables="psi", dims=["time", "member"])
    with pytest.raises(TypeError, match="variables must be a str or a sequence of str, got"):
        open_dataset(path, variables=[1])


# --------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = write_dataset(_dataset(), tmp_path / "out.nc")
        with atomic_path(tmp_path / "notes.txt") as tmp:
            tmp.write_text("hello")
        with atomic_path(tmp_path / "out.nc", suffix=".nc") as tmp:  # replacing keeps the rule
            _dataset().to_netcdf(tmp)
        plain = tmp_path / "plain.txt"
        plain.write_text("hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == mode
    for written in (path, tmp_path / "notes.txt"):
        assert stat.S_IMODE(written.stat().st_mode) == mode, written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "out.nc", "plain.txt"]


def test_atomic_path_keeps_the_old_file_and_no_temporary_on_error(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(path) as tmp:
            assert tmp.parent == tmp_path and tmp.exists() and tmp.name.startswith("manifest.json.")
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
    with pytest.raises(ValueError, match=r"suffix must be a dot and letters or digits.*got 'keras'"):
        with atomic_path(path, suffix="keras"):
            pass


# --------------------------------------------------------------------------- concurrent writers
_HOLDER = textwrap.dedent(
    """
    import sys, time
    from xtl.data.files import atomic_path, output_lock

    with output_lock(sys.argv[1]):
        with atomic_path(sys.argv[1]) as tmp:
            tmp.write_text("half written")
            print("locked", flush=True)
            time.sleep(300)
    """
)


@pytest.fixture
def holder():
    """Start a process that holds the lock of a path and has a temporary file of it."""
    procs = []

    def start(path):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, holder):
    path = tmp_path / "out.nc"
    proc = holder(path)
    assert lock_path(path).read_text().split()[0] == str(proc.pid)
    start = time.monotonic()
    with pytest.raises(OutputLockedError, match=rf"{path} is being written by process {proc.pid}; "
                                                "wait for it or stop it"):
        write_dataset(_dataset(), path)
    assert time.monotonic() - start < 2.0
    with pytest.raises(OutputLockedError, match=str(proc.pid)):
        with output_lock(path, timeout=0.3):
            pass
    assert not path.exists() and len(list(tmp_path.glob("out.nc.*.tmp"))) == 1  # its own temp
    proc.terminate()  # SIGTERM: the holder dies, its lock with it
    proc.wait(timeout=30)
    write_dataset(_dataset(), path)
    assert load_dataset(path).sizes["time"] == 8


def test_the_lock_of_a_killed_writer_does_not_block(tmp_path, holder):
    path = tmp_path / "out.nc"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert lock_path(path).read_text().split()[0] == str(proc.pid)  # left behind
    assert len(list(tmp_path.glob("out.nc.*.tmp"))) == 1
    with output_lock(path) as lock:
        assert lock.read_text().split()[0] == str(os.getpid())
        assert not list(tmp_path.glob("out.nc.*.tmp"))  # the dead writer's temporary: swept
    assert not lock_path(path).exists()  # released and removed
    write_dataset(_dataset(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nc"]


def test_the_next_write_dataset_sweeps_a_killed_writers_temporary(tmp_path, holder):
    path = tmp_path / "out.nc"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    write_dataset(_dataset(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nc"]


def test_the_lock_is_released_on_error_and_reentrant_in_a_thread(tmp_path):
    path = tmp_path / "out.nc"
    with pytest.raises(KeyError):
        with output_lock(path):
            with output_lock(path):  # the same thread: nested, not refused
                assert lock_path(path).exists()
            assert lock_path(path).exists()  # still held by the outer block
            raise KeyError("boom")
    assert not lock_path(path).exists()
    with output_lock(path):
        pass


def test_another_thread_is_refused_like_another_process(tmp_path):
    import threading

    path, errors = tmp_path / "out.nc", []

    def second():
        try:
            with output_lock(path):
                pass
        except OutputLockedError as err:
            errors.append(str(err))

    with output_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"by process {os.getpid()} (this process)" in errors[0]


def test_a_second_writer_of_an_existing_file_without_overwrite_is_refused(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "out.nc")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        write_dataset(_dataset(nt=3), path)
    assert load_dataset(path).sizes["time"] == 8


# --------------------------------------------------------------------------- stale temporaries
def test_sweep_removes_a_dead_writers_temporary_and_keeps_a_live_ones(tmp_path, holder):
    dead_path, live_path = tmp_path / "dead.nc", tmp_path / "live.nc"
    dead = holder(dead_path)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    live = holder(live_path)
    unlocked = tmp_path / "other.nc.0123abcd.tmp"  # no lock file: its writer may be live
    unlocked.write_text("x")
    part = tmp_path / "dead.nc.part"  # the resumable part of a run: kept unless parts=True
    part.write_text("x")
    dead_temp = next(tmp_path.glob("dead.nc.*.tmp"))
    live_temp = next(tmp_path.glob("live.nc.*.tmp"))

    assert sweep_stale_temps(tmp_path) == [dead_temp]
    assert not dead_temp.exists() and not lock_path(dead_path).exists()
    assert live_temp.exists() and lock_path(live_path).exists() and live.poll() is None
    assert unlocked.exists() and part.exists()
    assert sweep_stale_temps(live_path, parts=True) == []
    assert live_temp.exists()

    live.send_signal(signal.SIGKILL)
    live.wait(timeout=30)
    assert sweep_stale_temps(live_path) == [live_temp]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead.nc.part", "other.nc.0123abcd.tmp"]


def test_sweep_with_parts_removes_a_dead_runs_part_and_checkpoint(tmp_path, holder):
    path = tmp_path / "run.nc"
    proc = holder(path)
    for name in ("run.nc.part", "run.nc.ckpt.npz", "run.nc.final.tmp"):
        (tmp_path / name).write_text("x")
    assert sweep_stale_temps(path, parts=True) == []  # the run is live
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    removed = sweep_stale_temps(path, parts=True)
    assert len(removed) == 4 and {"run.nc.part", "run.nc.ckpt.npz", "run.nc.final.tmp"} < {
        p.name for p in removed}
    assert list(tmp_path.iterdir()) == []


def test_simulate_refuses_a_path_another_run_is_writing_and_loses_nothing(tmp_path, holder):
    """Two runs into one file: the second is refused before it writes anything."""
    import xtl

    path = tmp_path / "run.nc"
    proc = holder(path)
    case = xtl.get_case("tiny")
    with pytest.raises(OutputLockedError, match=rf"being written by process {proc.pid}"):
        xtl.simulate(case, t_end=0.02, save_interval=0.01, path=path, seed=1)
    assert not path.exists() and not list(tmp_path.glob("run.nc.part*"))
    proc.kill()
    proc.wait(timeout=30)
    ds = xtl.simulate(case, t_end=0.02, save_interval=0.01, path=path, seed=1)
    assert ds.attrs["complete"] == 1 and ds.sizes["time"] == 3
    assert not lock_path(path).exists()


def test_a_model_save_killed_midway_is_swept_by_the_next_save(tmp_path, holder):
    """A save killed after it wrote a temporary archive: the next save removes the
    temporary, writes the model, and its file mode follows the umask."""
    import xtl
    from xtl.nn.spec import NetworkSpec
    from xtl.nn.backends.base import get_backend
    from xtl.nn.files import load_model, save_model

    path = tmp_path / "m.keras"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list(tmp_path.glob("m.keras.*.tmp"))) == 1
    model = get_backend("keras").build(NetworkSpec(n_layers=2, channels=2, kernel_size=3),
                                       {"psi": 1.0, "omega": 1.0, "pi": 1.0}, seed=0)
    old = os.umask(0o022)
    try:
        save_model(model, path)
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.nc"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert xtl.nn.model.model_id(load_model(path)) == xtl.nn.model.model_id(model)
