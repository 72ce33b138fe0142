"""The edge: OSErrors (full disk, bad paths) end `xtl` with one line; the space a run
needs counts every copy; sweep workers leave Ctrl-C to the parent."""
import errno
import os
import shutil
import signal
from collections import namedtuple

import pytest

import xtl.cli


def one_line_error(capsys, argv, *needles):
    status = xtl.cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_a_full_disk_is_one_line_naming_the_path(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run.nc"

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out) + ".part")

    monkeypatch.setattr(xtl.cli, "cmd_simulate", full)
    one_line_error(capsys, ["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1", "--out", str(out)], "no space left",
                   str(out) + ".part", "partial output")


def test_a_netcdf_hdf_error_on_a_full_disk_says_no_space(capsys, monkeypatch, tmp_path):
    def hdf(args):
        raise RuntimeError("NetCDF: HDF error")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(xtl.cli, "cmd_simulate", hdf)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 0))
    one_line_error(capsys, ["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1", "--out", str(tmp_path / "run.nc")],
                   f"no space left on {tmp_path}")


def test_an_hdf_error_with_free_space_keeps_its_traceback(monkeypatch, tmp_path):
    def hdf(args):
        raise RuntimeError("NetCDF: HDF error")

    monkeypatch.setattr(xtl.cli, "cmd_simulate", hdf)
    with pytest.raises(RuntimeError, match="HDF error"):
        xtl.cli.main(["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1", "--out", str(tmp_path / "run.nc")])


def test_a_symlink_loop_is_one_line(capsys, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    one_line_error(capsys, ["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1", "--out", str(tmp_path / "a" / "run.nc")],
                   "symbolic links", str(tmp_path / "a"))


def test_a_name_too_long_is_one_line(capsys, tmp_path):
    one_line_error(capsys, ["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1", "--out", str(tmp_path / ("x" * 300 + ".nc"))],
                   "file name too long", "x" * 300)


def test_a_permission_error_is_one_line(capsys, monkeypatch, tmp_path):
    def denied(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(xtl.cli, "cmd_simulate", denied)
    one_line_error(capsys, ["simulate", "tiny", "--t-end", "0.1", "--save-interval", "0.1",
                            "--out", str(tmp_path / "run.nc")], "read-only", str(tmp_path))


def test_the_space_estimate_counts_the_part_file_and_its_transcoded_copy():
    from xtl.solver.run import output_bytes

    one = 10 * 3 * 64 * 64 * 4
    assert output_bytes(10, 3, 64, 4) == 2 * one  # <path>.part + <path>.final.tmp
    assert output_bytes(10, 3, 64, 4, on_disk=False) == one  # kept in memory


def _ignores_sigint():
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_sweep_workers_ignore_sigint():
    """The workers ignore SIGINT; the parent's handler is left as it was."""
    from xtl.solver.ensemble import local_cluster

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal:
    try:  # an ignored SIGINT would pass to the workers and prove nothing
        cluster, client = local_cluster(1)
        try:
            assert all(client.run(_ignores_sigint).values())
            assert client.submit(_ignores_sigint, pure=False).result()
        finally:
            client.close()
            cluster.close()
        # the parent still takes Ctrl-C
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)
