"""The files xtl writes: CF-1.8 (checked by cfchecks), history, encoding, crash safety,
self-describing ensemble members."""
import importlib.util
import multiprocessing
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster, get_task_stream

import xtl
from xtl.data.cf import append_history
from xtl.data.netcdf import chunk_shape, write_dataset
from xtl.solver.ensemble import ensemble, open_ensemble

RUN = dict(t_end=0.3, save_interval=0.1)
#: One line of a CF/NCO history: "<ctime>: <operation>".
HISTORY_LINE = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}: \S")


# --------------------------------------------------------------------------- the CF checker
def _cf_tables(folder: Path) -> list:
    """cfchecks arguments for offline tables: the standard-name table that ships in the
    compliance-checker package, and minimal area-type and region tables (xtl uses neither)."""
    spec = importlib.util.find_spec("compliance_checker")
    assert spec is not None, "the test extra installs compliance-checker (its CF table)"
    names = Path(spec.submodule_search_locations[0]) / "data" / "cf-standard-name-table.xml"
    assert names.is_file(), names
    area, region = folder / "area-types.xml", folder / "regions.xml"
    area.write_text("<?xml version='1.0'?><area_type_table><version_number>0</version_number>"
                    "<date>2024-01-01</date></area_type_table>")
    region.write_text("<?xml version='1.0'?><standardized_region_list><version_number>0"
                      "</version_number><date>2024-01-01</date></standardized_region_list>")
    return ["-s", str(names), "-a", str(area), "-r", str(region)]


def _cfchecks(folder: Path, *files) -> dict:
    """Run cfchecks (CF-1.8, offline) on ``files``: {file name: (errors, warnings, output)}."""
    exe = Path(sys.executable).with_name("cfchecks")
    assert exe.exists(), "the test extra installs cfchecker (the cfchecks command)"
    run = subprocess.run([str(exe), "-v", "1.8", *_cf_tables(folder), *map(str, files)],
                         capture_output=True, text=True, timeout=120)
    assert "CHECKING NetCDF FILE" in run.stdout, (
        "cfchecks did not run (it needs Debian's libudunits2-0: `make system-deps`)\n"
        + run.stdout + run.stderr)
    out = {}
    for block in run.stdout.split("CHECKING NetCDF FILE: ")[1:]:
        name = block.split()[0]
        errors = int(re.search(r"ERRORS detected: (\d+)", block).group(1))
        warnings_ = int(re.search(r"WARNINGS given: (\d+)", block).group(1))
        out[Path(name).name] = (errors, warnings_, block)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A DNS file, an on-the-fly LES file and a coarse_grain output of the tiny case."""
    folder = tmp_path_factory.mktemp("files")
    case = xtl.get_case("tiny")
    dns = xtl.simulate(case, path=folder / "dns.nc", seed=1, progress=False, **RUN)
    les = xtl.simulate(case, path=folder / "les.nc", seed=1, progress=False, les=True, **RUN)
    coarse = xtl.coarse_grain(dns.chunk(time=2), 16)
    write_dataset(coarse, folder / "coarse.nc")
    dns.close()
    les.close()
    return folder


def test_cfchecks_finds_no_error_and_no_warning(files):
    report = _cfchecks(files, files / "dns.nc", files / "les.nc", files / "coarse.nc")
    assert set(report) == {"dns.nc", "les.nc", "coarse.nc"}
    for name, (errors, warnings_, text) in report.items():
        assert (errors, warnings_) == (0, 0), f"{name}:\n{text}"


def test_cfchecks_of_ensemble_member_files(tmp_path):
    ensemble("tiny", seeds=[0], directory=tmp_path, n_workers=1, progress=False,
             les=dict(n_les=16), dns_every=2, **RUN)
    dns = next(tmp_path.glob("*.dns.nc"))
    report = _cfchecks(tmp_path, tmp_path / dns.name.replace(".dns.nc", ".nc"), dns)
    assert len(report) == 2
    for name, (errors, warnings_, text) in report.items():
        assert (errors, warnings_) == (0, 0), f"{name}:\n{text}"


def test_the_checker_does_catch_a_time_axis_without_reference_time(files, tmp_path):
    """The check above is not vacuous: cfchecks flags the encoding xtl used to write."""
    with xr.open_dataset(files / "dns.nc") as ds:
        old = ds.load()
    old["time"].attrs["axis"] = "T"
    old.to_netcdf(tmp_path / "old.nc")
    errors, warnings_, _ = _cfchecks(tmp_path, tmp_path / "old.nc")["old.nc"]
    assert errors >= 1 and warnings_ >= 1


def test_model_time_decodes_as_numbers(files):
    with xr.open_dataset(files / "dns.nc") as ds:
        assert ds.time.dtype == np.float64
        np.testing.assert_allclose(ds.time.values, [0.0, 0.1, 0.2, 0.3])
        assert ds.time.attrs == {"long_name": "model time (nondimensional)", "units": "1"}


# --------------------------------------------------------------------------- attrs, history
def test_coarse_grain_keeps_attributes_and_appends_history(files):
    with xr.open_dataset(files / "dns.nc") as dns, xr.open_dataset(files / "coarse.nc") as out:
        for name in ("time", "y", "x"):
            assert out[name].attrs == dns[name].attrs, name
        kept = {k: v for k, v in dns.attrs.items() if k not in ("title", "complete", "history")}
        for key, value in kept.items():
            assert np.array_equal(out.attrs[key], value), key
        lines = out.attrs["history"].splitlines()
        assert len(lines) == 2 and all(HISTORY_LINE.match(line) for line in lines)
        assert "xtl.coarse_grain(n_les=16, filter='gaussian'" in lines[0]  # newest first
        assert lines[1] == dns.attrs["history"]
        assert "xtl.simulate(case='tiny', seed=1" in lines[1]


def test_append_history_is_nco_style():
    attrs = append_history({"history": "Mon Jan  1 00:00:00 2024: ncks -O a.nc b.nc"}, "step two")
    first, second = attrs["history"].splitlines()
    assert HISTORY_LINE.match(first) and first.endswith(": step two")
    assert second == "Mon Jan  1 00:00:00 2024: ncks -O a.nc b.nc"
    assert append_history({}, "only")["history"].count("\n") == 0
    with pytest.raises(ValueError, match="one-line"):
        append_history({}, "two\nlines")


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_sgs_term_and_accessor_keep_attributes(files):
    with xr.open_dataset(files / "dns.nc", chunks={"time": 2}) as dns:
        pi = xtl.sgs_term(dns, 16)
        assert pi.time.attrs == dns.time.attrs and pi.attrs["case_name"] == "tiny"
        via_accessor = dns.tl.coarse_grain(16)
        assert via_accessor.time.attrs == dns.time.attrs
        assert "xtl.coarse_grain(n_les=16" in via_accessor.attrs["history"].splitlines()[0]


# --------------------------------------------------------------------------- encoding
def test_output_is_chunked_compressed_netcdf4(files):
    for name in ("dns.nc", "les.nc", "coarse.nc"):
        with netCDF4.Dataset(files / name) as nc:
            assert nc.data_model == "NETCDF4", name
            for var in ("psi", "omega"):
                v = nc.variables[var]
                assert v.filters()["zlib"] and v.filters()["shuffle"], (name, var)
                chunks = v.chunking()
                assert chunks != "contiguous" and tuple(chunks[-2:]) == v.shape[-2:]
                assert v.dtype == np.float64


def test_chunk_shape_keeps_snapshots_whole():
    assert chunk_shape((1000, 64, 64), 8) == (128, 64, 64)  # 4 MiB of whole snapshots
    assert chunk_shape((10, 2048, 2048), 8) == (1, 256, 2048)  # a snapshot over 4 MiB is cut
    assert chunk_shape((3, 16, 16), 4) == (3, 16, 16)
    assert chunk_shape((1, 5, 7, 11), 8, target=8 * 77) == (1, 1, 7, 11)


def test_float32_storage_on_request_from_the_api(tmp_path):
    case = xtl.get_case("tiny")
    full = xtl.simulate(case, seed=2, progress=False, **RUN)
    ds = xtl.simulate(case, path=tmp_path / "f32.nc", seed=2, progress=False, dtype="float32",
                      **RUN)
    assert ds.omega.dtype == np.float32 and ds.time.dtype == np.float64
    np.testing.assert_array_equal(ds.omega.values, full.omega.values.astype(np.float32))
    ds.close()
    write_dataset(full, tmp_path / "w32.nc", dtype="float32")
    with xr.open_dataset(tmp_path / "w32.nc") as back:
        assert back.psi.dtype == np.float32 and back.x.dtype == np.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        write_dataset(full, tmp_path / "bad.nc", dtype="float16")
    with pytest.raises(ValueError, match="dtype must be"):
        xtl.simulate(case, dtype="int8", **RUN)


_KILL_IN_FINISH = textwrap.dedent(
    """
    import os, signal, sys
    import xtl
    import xtl.data.stream

    copy = xtl.data.stream._copy_records

    def copy_then_die(src, dst, name, lead, t0, t1):  # SIGKILL halfway through the netCDF4 copy
        copy(src, dst, name, lead, t0, t1)
        os.kill(os.getpid(), signal.SIGKILL)

    xtl.data.stream._copy_records = copy_then_die
    xtl.simulate(xtl.get_case("tiny"), t_end=1.0, save_interval=0.1, checkpoint_interval=0.2,
                 path=sys.argv[1], seed=7, progress=False)
    """
)


def test_sigkill_while_writing_the_netcdf4_file_keeps_the_run(tmp_path):
    """Killed while the finished run is copied to netCDF4: no half-written file appears, the
    classic ``.part`` holds every snapshot, and resuming gives the uninterrupted run."""
    path = tmp_path / "killed.nc"
    proc = subprocess.run([sys.executable, "-c", _KILL_IN_FINISH, str(path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists()
    with xr.open_dataset(tmp_path / "killed.nc.part") as part:
        assert part.sizes["time"] == 11 and part.attrs["complete"] == 0
    kw = dict(t_end=1.0, save_interval=0.1, checkpoint_interval=0.2, seed=7, progress=False)
    resumed = xtl.simulate(xtl.get_case("tiny"), path=path, **kw).load()
    full = xtl.simulate(xtl.get_case("tiny"), **kw)
    assert np.array_equal(resumed.omega.values, full.omega.values)
    assert np.array_equal(resumed.psi.values, full.psi.values)
    assert not list(tmp_path.glob("killed.nc.*"))  # no .part, checkpoint or temporary left
    with netCDF4.Dataset(path) as nc:
        assert nc.data_model == "NETCDF4" and nc.complete == 1


# --------------------------------------------------------------------------- ensembles as files
@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _no_scheduler_env(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_member_files_combine_by_coords_and_reopen_as_the_ensemble(cluster, tmp_path):
    cases = [xtl.get_case("tiny"), xtl.get_case("tiny", Re=300.0, name="tiny-re")]
    with Client(cluster, set_as_default=False) as client:
        ds = ensemble(cases, seeds=[3, 4], directory=tmp_path, client=client, progress=False,
                      les=dict(n_les=16), dns_every=3, **RUN)
    np.testing.assert_array_equal(ds.member.values, [0, 1, 2, 3])
    files = sorted(tmp_path.glob("*[!s].nc"))  # the member files, not the *.dns.nc
    assert len(files) == 4
    for f in files:
        with xr.open_dataset(f) as one:
            assert one.pi.dims == ("member", "time", "y", "x")
            assert {"seed", "case_name", "Re", "kf", "beta", "mu"} <= set(one.coords)
    with xr.open_mfdataset(files, combine="by_coords") as mf:
        np.testing.assert_array_equal(mf.member.values, [0, 1, 2, 3])
        np.testing.assert_array_equal(mf.seed.values, [3, 4, 3, 4])
        assert list(mf.case_name.values) == ["tiny", "tiny", "tiny-re", "tiny-re"]
        np.testing.assert_array_equal(mf.pi.values, ds.pi.values)
        assert mf.time.attrs == ds.time.attrs
    again = open_ensemble(tmp_path, chunks={"time": 2})
    assert again.pi.chunks[1] == (2, 2)
    xr.testing.assert_identical(again.drop_attrs().load(), ds.drop_attrs().load())
    assert {k: v for k, v in again.attrs.items() if k != "history"} == \
        {k: v for k, v in ds.attrs.items() if k != "history"}
    assert "xtl.open_ensemble(" in again.attrs["history"].splitlines()[0]
    kept = open_ensemble(tmp_path, dns=True)
    assert kept.sizes == {"member": 4, "time": 2, "y": 64, "x": 64}
    np.testing.assert_array_equal(kept.Re.values, [100.0, 100.0, 300.0, 300.0])


def test_member_numbers_are_stable_across_calls(cluster, tmp_path):
    with Client(cluster, set_as_default=False) as client:
        kw = dict(directory=tmp_path, client=client, progress=False, **RUN)
        first = ensemble("tiny", seeds=[1, 2], **kw)
        added = ensemble("tiny", seeds=[5], **kw)
        both = ensemble("tiny", seeds=[2, 5, 1], **kw)
    np.testing.assert_array_equal(first.member.values, [0, 1])
    np.testing.assert_array_equal(added.member.values, [2])
    np.testing.assert_array_equal(both.member.values, [1, 2, 0])
    np.testing.assert_array_equal(open_ensemble(tmp_path).seed.values, [1, 2, 5])


def test_simulate_member_coordinates_are_checked_and_kept_in_memory():
    case = xtl.get_case("tiny")
    ds = xtl.simulate(case, t_end=0.1, save_interval=0.1, progress=False,
                      member={"member": 4, "seed": 0, "case_name": "tiny"})
    assert ds.omega.dims == ("member", "time", "y", "x") and ds.member.item() == 4
    assert ds.case_name.item() == "tiny" and ds.member.attrs["long_name"] == "ensemble member number"
    with pytest.raises(TypeError, match="member must be a dict of coordinates with an int"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, member={"seed": 1})
    with pytest.raises(TypeError, match=r"member\['x'\] must be a number or a str"):
        xtl.simulate(case, t_end=0.1, save_interval=0.1, member={"member": 0, "x": [1]})


def test_open_ensemble_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        open_ensemble(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no member files"):
        open_ensemble(tmp_path)
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(tmp_path / "other.nc")
    with pytest.raises(ValueError, match=r"other\.nc.* is not an xtl run.*pattern="):
        open_ensemble(tmp_path)
    with pytest.raises(TypeError, match="chunks must be a dict"):
        open_ensemble(tmp_path, chunks=3)


def test_ensemble_uses_the_default_client_of_the_process(cluster, tmp_path):
    """A notebook's ``client = Client(cluster)``: the members run there, no new cluster starts."""
    with Client(cluster) as client:  # the default client, as in a notebook's first cell
        before = len(multiprocessing.active_children())
        with get_task_stream(client) as stream:
            ds = ensemble("tiny", seeds=[0, 1], directory=tmp_path, progress=False, **RUN)
        tasks = [t for t in stream.data if str(t["key"]).startswith("xtl-member-")]
        assert len(tasks) == 2
        assert len(multiprocessing.active_children()) == before
        assert client.status == "running"  # left open
    assert list(ds.status.values) == ["complete", "complete"]


def test_default_ensemble_chunks_are_whole_chunks_of_the_files():
    from xtl.solver.ensemble import _default_chunks

    ds = xr.Dataset({"pi": (("time", "y", "x"), np.zeros((1, 100, 128)))})  # 100 KiB a snapshot
    ds.pi.encoding["chunksizes"] = (40, 100, 128)
    time = _default_chunks(ds)["time"]
    assert time % 40 == 0 and abs(time * 100 * 128 * 8 - 64 * 2**20) <= 40 * 100 * 128 * 8


_OPEN_FROM_THREADS = textwrap.dedent(
    """
    import sys, threading
    from xtl.solver.ensemble import _is_complete, open_ensemble

    def work():
        for _ in range(30):
            ds = open_ensemble(sys.argv[1], chunks={"time": 2})
            _is_complete(ds.file.values[0])
            ds.omega.sum().compute()

    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print("ok")
    """
)


def test_ensembles_opened_from_several_threads_at_once(cluster, tmp_path):
    """netCDF4/HDF5 are not thread-safe: opening member files from several threads at once
    (as an experiment does with its flows) while other threads read crashed the process
    (in about half of these runs) before xtl held one lock around opens and reads."""
    with Client(cluster, set_as_default=False) as client:
        ensemble("tiny", seeds=[0, 1, 2], directory=tmp_path, client=client, progress=False,
                 **RUN)
    run = subprocess.run([sys.executable, "-c", _OPEN_FROM_THREADS, str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_the_netcdf_lock_is_reentrant_and_one_per_process_through_pickle():
    import pickle
    import threading

    from xtl.data.netcdf import NETCDF_IO_LOCK, NetCDFLock

    copy = pickle.loads(pickle.dumps(NETCDF_IO_LOCK))
    assert isinstance(copy, NetCDFLock)
    got = []
    with NETCDF_IO_LOCK, copy:  # re-entrant in one thread, across the pickled copy
        other = threading.Thread(target=lambda: got.append(copy.acquire(blocking=False)))
        other.start()
        other.join()
    assert got == [False]        # held: another thread can't take it
    assert copy.acquire(blocking=False)  # released by both exits: free again
    copy.release()
