"""zarr stores: written atomically under the lock, opened lazily and checked, ensembles and
models round-tripped through them; suffixes that name neither format refused.

(xtl.data.files, xtl.data.netcdf, xtl.solver.ensemble, xtl.nn.files)
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xtl
from xtl.data.files import OutputLockedError, lock_path, sweep_stale_temps
from xtl.data.netcdf import (
    FileFormatError,
    IncompleteFileError,
    load_dataset,
    open_dataset,
    write_dataset,
)
from xtl.nn.files import load_model, save_model
from xtl.nn.model import model_id
from xtl.solver.ensemble import open_ensemble

ROOT = Path(__file__).resolve().parents[1]
RUN = dict(t_end=0.3, save_interval=0.1)


def _dataset(nt=6, n=16, **attrs):
    rng = np.random.default_rng(0)
    x = np.arange(n) * 2 * np.pi / n
    return xr.Dataset(
        {"omega": (("time", "y", "x"), rng.standard_normal((nt, n, n))),
         "label": (("time",), np.array([f"t{i}" for i in range(nt)]))},
        coords={"time": np.arange(nt) * 0.1, "y": x, "x": x}, attrs={"flag": True, **attrs})


# --------------------------------------------------------------------------- write_dataset
def test_write_dataset_to_a_zarr_name_writes_a_zarr_store(tmp_path):
    ds = _dataset()
    path = write_dataset(ds, tmp_path / "x.zarr", dtype="float32")
    assert path.is_dir() and (path / ".zmetadata").is_file()  # a store, not an HDF5 file
    with open(path / ".zgroup", "rb") as f:
        assert not f.read(8).startswith(b"\x89HDF")
    with xr.open_zarr(path) as back:
        assert back.omega.dtype == np.float32 and back.time.dtype == np.float64
        np.testing.assert_allclose(back.omega.values, ds.omega.values, rtol=1e-6)
        assert list(back.label.values) == list(ds.label.values)
        assert back.attrs["flag"] == 1  # the attributes netCDF would store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]  # no temporary, no lock


def test_a_zarr_store_is_replaced_only_with_overwrite_and_whole(tmp_path):
    path = write_dataset(_dataset(nt=6), tmp_path / "x.zarr")
    with pytest.raises(FileExistsError, match=r"x\.zarr.*overwrite=True"):
        write_dataset(_dataset(nt=3), path)
    assert load_dataset(path).sizes["time"] == 6
    write_dataset(_dataset(nt=3).chunk(time=2), path, overwrite=True)  # dask-backed too
    assert load_dataset(path).sizes["time"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]
    (tmp_path / "file.zarr").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=r"file\.zarr.*is a file; a \.zarr store is a folder"):
        write_dataset(_dataset(), tmp_path / "file.zarr", overwrite=True)


@pytest.mark.parametrize("name", ["x.h5", "x.zip", "x"])
def test_a_suffix_that_names_neither_format_is_refused(tmp_path, name):
    with pytest.raises(ValueError, match=r"unknown suffix.*\.nc, \.nc4, \.cdf, \.netcdf, \.zarr"):
        write_dataset(_dataset(), tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_a_failed_zarr_write_keeps_the_old_store_and_leaves_no_temporary(tmp_path):
    path = write_dataset(_dataset(nt=6), tmp_path / "x.zarr")
    bad = _dataset(nt=2)
    bad["obj"] = ("time", np.array([object(), object()], dtype=object))  # zarr cannot encode it
    with pytest.raises(Exception):
        write_dataset(bad, path, overwrite=True)
    assert load_dataset(path).sizes["time"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from xtl.data.files import atomic_folder, output_lock

    with output_lock(sys.argv[1]):
        with atomic_folder(sys.argv[1]) as tmp:
            (tmp / "half").write_text("half written")
            print("locked", flush=True)
            time.sleep(300)
    """
)


def test_a_second_zarr_writer_is_refused_and_a_killed_ones_folder_swept(tmp_path):
    path = tmp_path / "x.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=rf"being written by process {proc.pid}"):
            write_dataset(_dataset(), path)
        assert sweep_stale_temps(tmp_path) == []  # a live writer's folder is kept
        assert len(list(tmp_path.glob("x.zarr.*.tmp"))) == 1
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert lock_path(path).exists()  # the killed writer's lock and folder are left behind
    removed = sweep_stale_temps(tmp_path)
    assert [p.name.split(".")[:2] for p in removed] == [["x", "zarr"]]
    assert not list(tmp_path.glob("x.zarr.*.tmp")) and not path.exists()
    write_dataset(_dataset(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]


# --------------------------------------------------------------------------- open_dataset
@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_a_zarr_store_opens_lazily_and_is_checked(tmp_path):
    path = write_dataset(_dataset(), tmp_path / "x.zarr")
    with open_dataset(path, variables="omega", dims="time", chunks={"time": 2}) as ds:
        assert ds.omega.chunks[0] == (2, 2, 2)  # dask, in the chunks asked for
    with pytest.raises(FileFormatError, match=r"x\.zarr: lacks the variables \['pi'\]"):
        open_dataset(path, variables=["omega", "pi"])
    with pytest.raises(FileNotFoundError, match=r"nothing\.zarr"):
        open_dataset(tmp_path / "nothing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(FileFormatError, match=r"empty\.zarr: not a zarr store"):
        open_dataset(tmp_path / "empty.zarr")
    bad = write_dataset(_dataset(complete=0), tmp_path / "bad.zarr")
    with pytest.raises(IncompleteFileError, match="did not finish"):
        open_dataset(bad)
    assert open_dataset(bad, allow_incomplete=True).sizes["time"] == 6


# --------------------------------------------------------------------------- ensembles
@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two member files of the tiny case (netCDF), as simulate writes them for an ensemble."""
    folder = tmp_path_factory.mktemp("members")
    for number, seed in enumerate((3, 4)):
        ds = xtl.simulate(xtl.get_case("tiny"), path=folder / f"tiny_seed{seed}.nc", seed=seed, progress=False,
                          member={"member": number, "seed": seed, "case_name": "tiny"}, **RUN)
        ds.close()
    return folder


@pytest.mark.filterwarnings("ignore:The specified chunks separate")
def test_an_ensemble_of_zarr_member_stores_opens_as_of_netcdf_members(members, tmp_path):
    reference = open_ensemble(members).load()
    for path in sorted(members.glob("*.nc")):
        write_dataset(load_dataset(path), tmp_path / path.with_suffix(".zarr").name)
    ens = open_ensemble(tmp_path, chunks={"time": 2})
    assert ens.omega.chunks[1] == (2, 2)  # lazily, in dask chunks
    np.testing.assert_array_equal(ens.member.values, [0, 1])
    np.testing.assert_array_equal(ens.seed.values, [3, 4])
    np.testing.assert_array_equal(ens.omega.values, reference.omega.values)
    assert list(ens.file.values) == ["tiny_seed3.zarr", "tiny_seed4.zarr"]
    only_nc = open_ensemble(members, pattern="*.nc")
    np.testing.assert_array_equal(only_nc.omega.values, reference.omega.values)


def test_one_zarr_store_of_a_whole_ensemble_reopens_as_it(members, tmp_path):
    reference = open_ensemble(members).load()
    store = write_dataset(reference, tmp_path / "ensemble.zarr")
    ens = open_ensemble(store)
    assert ens.omega.chunks is not None  # lazy
    assert ens.omega.dims == ("member", "time", "y", "x")
    xr.testing.assert_equal(ens.load(), reference)
    one = write_dataset(load_dataset(next(members.glob("*.nc"))).isel(member=0),
                        tmp_path / "one.zarr")
    assert open_ensemble(one).sizes["member"] == 1  # a store without the dim gets one


# --------------------------------------------------------------------------- models
def test_a_model_round_trips_through_a_zarr_model_dataset(trained_model, tmp_path):
    native, store = save_model(trained_model, tmp_path / "m.zarr")
    assert native == tmp_path / "m.keras" and native.is_file()
    assert store == tmp_path / "m.zarr" and xr.open_zarr(store).kernel.ndim >= 3
    back = load_model(store)
    assert model_id(back) == model_id(trained_model)
    rng = np.random.default_rng(0)
    psi, omega = rng.standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(psi, omega), trained_model.predict(psi, omega))
    with pytest.raises(FileExistsError, match=r"overwrite=True"):
        save_model(trained_model, tmp_path / "m.zarr")
    with pytest.raises(ValueError, match=r"must end with '\.keras'.*\['\.nc', '\.zarr'\]"):
        save_model(trained_model, tmp_path / "m.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "m.zarr"]
