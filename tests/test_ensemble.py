"""Ensembles on a real dask.distributed LocalCluster (xtl/solver/ensemble.py)."""
import multiprocessing
import os

import dask
import netCDF4
import numpy as np
import pytest
import xarray as xr
from distributed import Client, LocalCluster, get_task_stream

import xtl
from xtl.data.coarse import coarse_grain
from xtl.solver import Cluster, Execution, Output, Schedule
from xtl.solver.ensemble import (
    EnsembleError,
    MemberFailedWarning,
    _task_key,
    default_n_workers,
    ensemble,
    local_cluster,
)

RUN = dict(t_end=0.3, save_interval=0.1)


@pytest.fixture(scope="module")
def cluster():
    """One real two-worker LocalCluster (one thread each) for the module; closed after."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        yield cluster


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(autouse=True)
def _no_scheduler_env(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


def _serial(case, seed, **kw):
    return xtl.simulate(case, seed=seed, progress=False, **RUN, **kw)


def _member_tasks(stream):
    return sorted(t["key"] for t in stream.data if str(t["key"]).startswith("xtl-member-"))


def _complete_attr(path):
    with netCDF4.Dataset(path) as nc:
        return int(nc.complete)


def test_two_members_equal_the_serial_runs_bit_for_bit(client, tmp_path, capsys):
    case = xtl.get_case("tiny")
    with get_task_stream(client) as stream:
        ds = ensemble(case, seeds=[1, 2], directory=tmp_path, client=client, progress=True, **RUN)
    assert len(_member_tasks(stream)) == 2
    assert {t["worker"] for t in stream.data} <= set(client.scheduler_info()["workers"])
    assert ds.omega.dims == ("member", "time", "y", "x")
    assert ds.sizes == {"member": 2, "time": 4, "y": case.n, "x": case.n}
    assert ds.omega.chunks is not None  # opened lazily
    np.testing.assert_array_equal(ds.seed.values, [1, 2])
    assert list(ds.status.values) == ["complete", "complete"]
    assert list(ds.error.values) == ["", ""]
    assert ds.attrs["Re"] == case.Re and ds.attrs["case_name"] == "tiny"
    assert "seed" not in ds.attrs and "complete" not in ds.attrs
    for i, seed in enumerate([1, 2]):
        serial = _serial(case, seed)
        assert np.array_equal(ds.omega.isel(member=i).values, serial.omega.values)
        assert np.array_equal(ds.psi.isel(member=i).values, serial.psi.values)
        assert _complete_attr(tmp_path / ds.file.values[i]) == 1
    assert not list(tmp_path.glob("*.part"))
    err = capsys.readouterr().err
    assert "ensemble" in err and "2/2" in err  # progress as members finish


def test_a_diverging_member_is_reported_and_the_other_kept(cluster, tmp_path):
    good, bad = xtl.get_case("tiny"), xtl.get_case("tiny", dt=0.05)
    with pytest.warns(MemberFailedWarning, match=r"1 of 2 .*member 1: DivergenceError"):
        ds = ensemble([good, bad], seeds=3, directory=tmp_path,
                      scheduler=cluster.scheduler_address, progress=False, **RUN)
    assert list(ds.status.values) == ["complete", "failed"]
    assert ds.error.values[0] == "" and "diverged" in ds.error.values[1]
    np.testing.assert_array_equal(ds.case_dt.values, [good.dt, bad.dt])  # varying → coordinate
    assert ds.attrs["seed"] == 3 and "case_dt" not in ds.attrs  # constant → attrs
    assert np.array_equal(ds.omega.isel(member=0).values, _serial(good, 3).omega.values)
    assert np.all(np.isnan(ds.omega.isel(member=1).values))
    assert _complete_attr(tmp_path / ds.file.values[1]) == 0  # its partial file is kept
    with pytest.raises(EnsembleError, match=r"(?s)every ensemble member failed.*diverged"):
        ensemble(bad, seeds=3, directory=tmp_path, scheduler=cluster, progress=False, **RUN)


def test_a_second_call_resumes_without_rerunning_completed_members(client, cluster, tmp_path,
                                                                   monkeypatch):
    case = xtl.get_case("tiny")
    kw = dict(seeds=[4, 5, 6], directory=tmp_path, progress=False, **RUN)
    first = ensemble(case, client=client, **kw).load()
    files = [tmp_path / f for f in first.file.values]
    stamps = [os.stat(f).st_mtime_ns for f in files]
    # a member lost (deleted) in between: only it runs again, on the cluster named by
    # the standard environment variable
    files[1].unlink()
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    with get_task_stream(client) as stream:
        second = ensemble(case, **kw).load()
    assert _member_tasks(stream) == [_task_key(files[1])]
    assert _task_key(files[1]).startswith(f"xtl-member-{files[1].stem}-")
    assert [os.stat(f).st_mtime_ns for f in (files[0], files[2])] == [stamps[0], stamps[2]]
    xr.testing.assert_identical(second.drop_attrs(), first.drop_attrs())
    # everything complete: nothing runs, no file is touched, no duplicates appear
    stamps = [os.stat(f).st_mtime_ns for f in files]
    with get_task_stream(client) as stream:
        third = ensemble(case, **kw)
    assert _member_tasks(stream) == []
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    assert third.sizes["member"] == 3 and len(list(tmp_path.glob("*.nc"))) == 3
    # other arguments are another member (another file), never a stale one
    other = ensemble(case, seeds=[4], directory=tmp_path, client=client, progress=False,
                     t_end=0.2, save_interval=0.1)
    assert other.file.values[0] != first.file.values[0] and other.sizes["time"] == 3


def test_on_the_fly_members_store_only_the_les_fields(client, tmp_path):
    cases = [xtl.get_case("tiny"), xtl.get_case("tiny", Re=300.0)]
    ds = ensemble(cases, seeds=[7], directory=tmp_path, client=client, progress=False,
                  les=dict(n_les=16, filter="gaussian"), dns_every=2, **RUN)
    assert set(ds.data_vars) == {"psi", "omega", "pi"}
    assert ds.sizes == {"member": 2, "time": 4, "y": 16, "x": 16}
    np.testing.assert_array_equal(ds.Re.values, [c.Re for c in cases])
    assert ds.attrs["filter"] == "gaussian" and ds.attrs["n_les"] == 16 and ds.attrs["n_dns"] == 64
    for i, case in enumerate(cases):
        offline = coarse_grain(_serial(case, 7), 16)
        np.testing.assert_allclose(ds.pi.isel(member=i).values, offline.pi.values, rtol=0,
                                   atol=1e-12 * float(np.abs(offline.pi).max()))
        dns_file = tmp_path / ds.file.values[i].replace(".nc", ".dns.nc")
        assert _complete_attr(dns_file) == 1
        with xr.open_dataset(dns_file) as kept:  # self-describing like its LES file
            assert kept.sizes == {"member": 1, "time": 2, "y": 64, "x": 64}
            assert kept.member.item() == ds.member.values[i] and kept.Re.item() == case.Re


def test_a_coarse_graining_object_is_the_same_members_as_its_dict(client, tmp_path):
    kw = dict(seeds=[7], directory=tmp_path, client=client, progress=False, **RUN)
    first = ensemble("tiny", les=dict(n_les=16, filter="box"), **kw)
    files = sorted(tmp_path.glob("*.nc"))
    stamps = [os.stat(f).st_mtime_ns for f in files]
    with get_task_stream(client) as stream:  # the same member files: opened, not run again
        again = ensemble("tiny", les=xtl.CoarseGraining(16, "box"), **kw)
    assert _member_tasks(stream) == []
    assert sorted(tmp_path.glob("*.nc")) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    for ds in (first, again):  # the newest line is the ensemble's call, stamped to the second
        ds.attrs["history"] = ds.attrs["history"].split("\n")[1:]
    xr.testing.assert_identical(again, first)
    # an LES grid as fine as the DNS grid is a grid the case allows: stored filtered
    same = ensemble("tiny", les=64, seeds=[8], directory=tmp_path / "same", client=client,
                    progress=False, **RUN)
    assert same.sizes["x"] == 64 and same.attrs["n_les"] == same.attrs["n_dns"] == 64


def test_default_is_a_local_cluster_that_is_closed_after(tmp_path):
    assert default_n_workers() == len(os.sched_getaffinity(0))
    before = len(multiprocessing.active_children())
    ds = ensemble("tiny", seeds=[8], directory=tmp_path, n_workers=1, progress=False, **RUN)
    assert list(ds.status.values) == ["complete"]
    assert np.array_equal(ds.omega.isel(member=0).values,
                          _serial(xtl.get_case("tiny"), 8).omega.values)
    assert len(multiprocessing.active_children()) == before  # its worker is gone


def _worker_environ(names=("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")) -> dict:
    return {k: os.environ.get(k) for k in names}


def test_local_cluster_workers_keep_the_dynamic_malloc_threshold(cluster, monkeypatch):
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    # a plain LocalCluster's nannies set it (dask's default), and with it glibc's
    # dynamic mmap threshold is off: every large temporary array is a fresh mmap
    with Client(cluster) as plain:
        assert list(plain.run(_worker_environ).values())[0] == {
            "MALLOC_TRIM_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    own, client = local_cluster(1)
    try:
        (environ,) = client.run(_worker_environ).values()
    finally:
        client.close()
        own.close()
    assert environ == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}  # the rest kept
    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get("distributed.nanny.pre-spawn-environ")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(cases=42), TypeError, "cases must be a Case, a preset name"),
        (dict(seeds=[-1]), TypeError, "seeds must be non-negative ints"),
        (dict(seeds=["a"]), TypeError, "seeds must be non-negative ints"),
        (dict(seeds=[1, 1]), ValueError, r"members 0 and 1 are the same run"),
        (dict(cases=["tiny", "small-base"]), ValueError, r"same grid.*\[64, 256\]"),
        (dict(save_interval=0.0031), ValueError, "save_interval"),
        (dict(path="x.nc"), TypeError, r"unexpected arguments \['path'\]"),
        (dict(dns_every=2), ValueError, "dns_every only applies with les"),
        (dict(client="tcp://x", scheduler="tcp://y"), ValueError, "client= or scheduler="),
        (dict(chunks=5), TypeError, "chunks must be a dict"),
        (dict(les=dict(n_les=128)), ValueError, "n_les must not be larger than the DNS grid size n=64"),
        (dict(t_end=float("inf")), ValueError, "t_end must be a finite number, got inf"),
        (dict(cfl_limit=float("nan")), ValueError, "cfl_limit must be a finite number"),
        (dict(n_workers=0), ValueError, "n_workers must be an int >= 1"),
        (dict(scheduler="http://host:8787"), ValueError, r"protocol 'http' .*dashboard"),
        (dict(scheduler="host"), ValueError, r"scheduler='host' .*no port"),
        (dict(scheduler=8786), TypeError, r"scheduler must be an address string"),
        (dict(timeout=0), ValueError, "timeout must be > 0"),
        (dict(timeout=float("nan")), ValueError, "timeout must be a finite number"),
        (dict(output=Output(path="x.nc")), ValueError, r"sets \['path'\] of every member"),
        (dict(output=Output(resume=False, attrs={"a": 1})), ValueError,
         r"sets \['resume', 'attrs'\] of every member"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(tmp_path, kwargs, error, message):
    args = dict(cases="tiny", seeds=0, directory=tmp_path / "runs", progress=False, **RUN)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        ensemble(**args)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def _fftw_threads_in_a_worker(threads):
    """In a dask worker: its OMP_NUM_THREADS, and FFTW's OpenMP limit after a 2-thread FFT."""
    import xtl.physics.fourier as fourier

    grid = fourier.SpectralGrid(32, fft="pyfftw", threads=threads)
    grid.rfft2(np.ones((32, 32)))
    return os.environ.get("OMP_NUM_THREADS"), fourier.fftw_openmp_threads()


@pytest.mark.skipif("pyfftw" not in xtl.physics.fourier.available_fft_backends(), reason="no pyfftw")
def test_members_get_the_fftw_threads_they_are_given(client, tmp_path):
    """Dask workers set OMP_NUM_THREADS=1; a 2-thread plan still runs on 2 threads, and a
    member with threads=2 equals the serial threads=2 run bit for bit."""
    env, limit = client.submit(_fftw_threads_in_a_worker, 2, pure=False).result()
    assert env == "1" and limit == 2
    case = xtl.get_case("tiny")
    ds = ensemble(case, seeds=[3], directory=tmp_path, client=client, threads=2, **RUN)
    serial = _serial(case, 3, threads=2)
    assert np.array_equal(ds.omega.isel(member=0).values, serial.omega.values)
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        ensemble(case, seeds=[3], directory=tmp_path, client=client, threads=0, **RUN)


def test_options_objects_and_keywords_run_the_same_members(client, tmp_path):
    """The typed call names, runs and combines the members as the keyword call does: a
    second call in the other style finds them complete (same files) and runs nothing."""
    case = xtl.get_case("tiny")
    typed = ensemble(case, [5, 6], Schedule(**RUN, check_every=10), Output(dtype="float32"),
                     Execution(progress=False), directory=tmp_path, cluster=Cluster(client=client))
    assert list(typed.status.values) == ["complete", "complete"]
    assert typed.omega.dtype == np.float32
    with get_task_stream(client) as stream:
        keywords = ensemble(case, seeds=[5, 6], directory=tmp_path, client=client,
                            progress=False, dtype="float32", check_every=10, **RUN)
    assert _member_tasks(stream) == []
    assert list(keywords.file.values) == list(typed.file.values)
    xr.testing.assert_identical(keywords.load().drop_attrs(), typed.load().drop_attrs())
    serial = _serial(case, 6, check_every=10)
    assert np.array_equal(typed.omega.isel(member=1).values, serial.omega.values.astype(np.float32))
