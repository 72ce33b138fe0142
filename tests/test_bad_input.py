"""Bad input is refused early, by name, before any work (issue 16).

Four kinds, each with its neighbours, through the Python API and through the
``xtl`` command (exit status 2, one line on stderr, no traceback, nothing written):

* case values that are not finite or out of range;
* grid sizes whose solver state cannot fit in this machine's memory;
* files given as a model that are not one;
* output paths that cannot be written (a folder, a missing folder, a file where a
  folder is needed, the wrong suffix, an existing file, an input file).
"""
import math
import time
import zipfile

import numpy as np
import pytest
import xarray as xr

import xtl
from xtl.physics import fourier
from xtl.nn.spec import NetworkSpec
from xtl.nn.backends.base import get_backend
from xtl.nn.files import check_model_path, load_model, save_model
from xtl.nn.model import model_id
from xtl.cli import main
from xtl.physics.fourier import SpectralGrid, format_bytes, state_bytes
from xtl.data.netcdf import FileFormatError
from xtl.data.files import check_output_folder, check_output_path

from conftest import make_les

inf, nan = math.inf, math.nan
#: Every refusal here happens before any work: well under this many seconds.
FAST = 5.0


def run_cli(capsys, argv):
    """``xtl argv``: (exit status, stderr, seconds); the error must be one line."""
    start = time.perf_counter()
    status = main([str(a) for a in argv])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    return status, err, seconds


def assert_user_error(capsys, argv, *needles):
    """``xtl argv`` exits 2 fast with one line on stderr, naming every needle."""
    status, err, seconds = run_cli(capsys, argv)
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert seconds < FAST, seconds
    return err


def files(folder):
    """The names under ``folder`` (recursively), to show nothing was written."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------ 1. case values
BAD_CASE_VALUES = [
    ("mu", inf), ("mu", -inf), ("mu", nan), ("mu", -0.1),
    ("ic_energy", inf), ("ic_energy", nan), ("ic_energy", -1.0),
    ("ic_peak", nan), ("ic_peak", inf), ("ic_peak", 0.0), ("ic_peak", -2.0), ("ic_peak", -inf),
    ("Re", nan), ("Re", -inf), ("Re", 0.0), ("Re", -1.0),
    ("kf", inf), ("kf", nan), ("kf", -1.0), ("kf", -inf),
    ("beta", inf), ("beta", -inf), ("beta", nan),
    ("dt", inf), ("dt", nan), ("dt", 0.0), ("dt", -1e-3), ("dt", -inf),
]


@pytest.mark.parametrize("field, value", BAD_CASE_VALUES)
def test_a_non_finite_or_out_of_range_case_value_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=rf"Case\.{field} must be .*got {value!r}"):
        xtl.get_case("tiny", **{field: value})
    with pytest.raises(ValueError, match=rf"Case\.{field}"):
        xtl.Case(**{field: value})
    with pytest.raises(ValueError, match=rf"Case\.{field}"):
        xtl.get_case("tiny").replace(**{field: value})


@pytest.mark.parametrize("field, value", [("mu", "0.1"), ("Re", None), ("dt", True),
                                          ("ic_peak", [10.0]), ("beta", 1j)])
def test_a_case_value_that_is_no_real_number_is_a_type_error(field, value):
    with pytest.raises(TypeError, match=rf"Case\.{field} must be a real number"):
        xtl.get_case("tiny", **{field: value})


@pytest.mark.parametrize("changes", [dict(Re=1e-310), dict(mu=1e308, dt=10.0),
                                     dict(beta=1e308, dt=10.0), dict(Re=1e-305, dt=1e3)])
def test_a_case_whose_linear_step_factors_overflow_is_refused(changes):
    with pytest.raises(ValueError, match=r"Case\.dt·\(k²/Re \+ mu\) and Case\.dt·beta overflow"):
        xtl.get_case("tiny", **changes)


@pytest.mark.parametrize("changes", [dict(Re=inf), dict(ic_energy=0.0), dict(kf=0.0),
                                     dict(beta=-20.0), dict(mu=0.0), dict(mu=1e6),
                                     dict(ic_peak=1e-3), dict(Re=1e-3)])
def test_the_neighbours_that_make_sense_are_accepted(changes):
    case = xtl.get_case("tiny", **changes)
    assert all(getattr(case, k) == v for k, v in changes.items())


def test_an_inviscid_case_still_runs():
    ds = xtl.simulate(xtl.get_case("tiny", Re=inf), t_end=0.004, save_interval=0.002)
    assert np.isfinite(ds.omega.values).all()


@pytest.mark.parametrize("flag, value, field", [("--dt", "inf", "Case.dt"),
                                                ("--dt", "nan", "Case.dt"),
                                                ("--dt", "-1", "Case.dt"),
                                                ("--n", "7", "Case.n"), ("--n", "4", "Case.n")])
def test_the_cli_refuses_a_bad_case_override(tmp_path, capsys, flag, value, field):
    out = tmp_path / "x.nc"
    assert_user_error(capsys, ["simulate", "tiny", "--t-end", 1, "--save-interval", 1,
                               flag, value, "--out", out], field)
    assert files(tmp_path) == []


# ------------------------------------------------------------------ 2. sizes that can't fit
def test_the_state_estimate_counts_the_solvers_fields():
    # 4 n² float64 fields, 12 n(n/2+1) complex128, 8 n(n/2+1) float64: ≈ 160 bytes a point
    n = 1024
    assert state_bytes(n) == 8 * n * n * 4 + (16 * 12 + 8 * 8) * n * (n // 2 + 1)
    assert 150 < state_bytes(n) / n**2 < 170
    assert format_bytes(state_bytes(1048576)).endswith("TiB")
    assert format_bytes(24 * 2**30) == "24 GiB"
    assert format_bytes(1) == "1 B"


@pytest.mark.parametrize("n", [1048576, 2**20 + 2, 2**30, 2**40])
def test_a_grid_that_cannot_fit_is_refused_with_an_estimate(n):
    with pytest.raises(ValueError, match=rf"n = {n} needs ≈ [\d.]+ [KMGTPEZY]iB for the "
                                         r"solver state .*this machine has [\d.]+ [KMGT]iB"):
        SpectralGrid(n)


def test_the_bound_is_this_machines_memory(monkeypatch):
    monkeypatch.setattr(fourier, "machine_memory", lambda: 24 * 2**30)
    with pytest.raises(ValueError, match=r"n = 16384 needs ≈ 40 GiB .*this machine has 24 GiB"):
        SpectralGrid(16384)
    monkeypatch.setattr(fourier, "machine_memory", lambda: state_bytes(64))
    SpectralGrid(64)  # exactly fits
    with pytest.raises(ValueError, match="n = 66 needs"):
        SpectralGrid(66)
    monkeypatch.setattr(fourier, "machine_memory", lambda: None)  # unknown: no bound
    assert SpectralGrid(64).n == 64


@pytest.mark.parametrize("n", [7, 6, 0, -8, 9])
def test_odd_or_too_small_grids_are_still_refused(n):
    with pytest.raises(ValueError, match=f"n must be an even integer >= 8, got {n}"):
        SpectralGrid(n)


@pytest.mark.parametrize("les", [None, True])
def test_simulate_refuses_a_grid_that_cannot_fit_before_writing(tmp_path, les):
    case = xtl.get_case("tiny", n=1048576)  # a Case is a description: it may be made here
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"n = 1048576 needs ≈ .*TiB.*this machine has"):
        xtl.simulate(case, t_end=1.0, save_interval=1.0, path=tmp_path / "big.nc", les=les)
    assert time.perf_counter() - start < FAST
    assert files(tmp_path) == []


@pytest.mark.parametrize("extra", [[], ["--les"], ["--n-les", "32"]])
def test_the_cli_refuses_a_grid_that_cannot_fit(tmp_path, capsys, extra):
    assert_user_error(capsys, ["simulate", "tiny", "--t-end", 1, "--save-interval", 1,
                               "--n", 1048576, "--out", tmp_path / "big.nc", *extra],
                      "n = 1048576 needs ≈", "TiB", "this machine has")
    assert files(tmp_path) == []


# ------------------------------------------------------------------ 3. model files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A tiny saved model (``m.keras``, ``m.nc``) and LES data (``les.nc``)."""
    folder = tmp_path_factory.mktemp("models")
    spec = NetworkSpec(n_layers=2, channels=2, kernel_size=3, padding="periodic")
    save_model(get_backend("keras").build(spec), folder / "m.keras")
    make_les(nt=4).to_netcdf(folder / "les.nc")
    return folder


def _text(path):
    path.write_text("this is not a model\n")
    return path


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _truncated(source, path):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _zip_without_metadata(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
    return path


def _zip_with_bad_metadata(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("xtl.json", "not json")
    return path


def _dataset_without(path, source, name):
    ds = xr.load_dataset(source).drop_vars(name)
    ds.to_netcdf(path)
    return path


def _dataset_without_attr(path, source, name):
    ds = xr.load_dataset(source)
    del ds.attrs[name]
    ds.to_netcdf(path)
    return path


def _dns(path):
    make_les(nt=2)[["omega", "psi"]].to_netcdf(path)
    return path


def _metrics(path):
    xr.Dataset({"cc": ("layer", np.ones(3))}).to_netcdf(path)
    return path


def _folder(path):
    path.mkdir()
    return path


#: (name, maker(folder, model folder) -> path, what the message says)
BAD_MODELS = [
    ("text.keras", lambda d, m: _text(d / "text.keras"),
     "is not a Keras model archive (not a zip file)"),
    ("empty.keras", lambda d, m: _bytes(d / "empty.keras", b""),
     "is not a Keras model archive (it is empty)"),
    ("truncated.keras", lambda d, m: _truncated(m / "m.keras", d / "cut.keras"),
     "truncated zip archive"),
    ("netcdf.keras", lambda d, m: _bytes(d / "n.keras", (m / "les.nc").read_bytes()),
     "a netCDF file"),
    ("zip without metadata", lambda d, m: _zip_without_metadata(d / "z.keras"),
     "without xtl's metadata"),
    ("zip with bad metadata", lambda d, m: _zip_with_bad_metadata(d / "b.keras"),
     "damaged Keras model archive"),
    ("folder.keras", lambda d, m: _folder(d / "f.keras"), "is a folder, not a model file"),
    ("folder", lambda d, m: _folder(d / "f"), "is a folder, not a model file"),
    ("les.nc", lambda d, m: m / "les.nc",
     "is an LES data file (psi, omega, pi), not a model Dataset (needs the variables kernel, "
     "bias)"),
    ("dns.nc", lambda d, m: _dns(d / "dns.nc"), "is a DNS file (omega, psi), not a model"),
    ("metrics.nc", lambda d, m: _metrics(d / "s.nc"), "a netCDF file of the variables ['cc']"),
    ("model.nc without kernel", lambda d, m: _dataset_without(d / "k.nc", m / "m.nc", "kernel"),
     "not a model Dataset (needs the variables kernel, bias)"),
    ("model.nc without bias", lambda d, m: _dataset_without(d / "b.nc", m / "m.nc", "bias"),
     "not a model Dataset"),
    ("model.nc without backend", lambda d, m: _dataset_without_attr(d / "nb.nc", m / "m.nc",
                                                                     "backend"),
     "pass backend='keras'"),
    ("text.nc", lambda d, m: _text(d / "text.nc"), "not a netCDF file"),
    ("truncated.nc", lambda d, m: _truncated(m / "m.nc", d / "cut.nc"), "cut.nc"),
    ("model.txt", lambda d, m: _text(d / "m.txt"), "no registered backend reads '.txt' files"),
    ("no suffix", lambda d, m: _text(d / "model"), "no registered backend reads"),
]


@pytest.mark.parametrize("name, make, message", BAD_MODELS, ids=[b[0] for b in BAD_MODELS])
def test_a_file_that_is_no_model_is_refused_by_name(tmp_path, model_files, name, make, message):
    path = make(tmp_path, model_files)
    with pytest.raises(FileFormatError) as info:
        load_model(path)
    assert str(path) in str(info.value) and message in str(info.value), str(info.value)
    assert isinstance(info.value, ValueError)


def test_the_good_model_files_still_load(model_files):
    a, b = load_model(model_files / "m.keras"), load_model(model_files / "m.nc")
    assert model_id(a) == model_id(b)


def test_a_missing_model_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.keras")


@pytest.mark.parametrize("name, make, message", [BAD_MODELS[i] for i in (0, 2, 6, 8, 11, 16)],
                         ids=[BAD_MODELS[i][0] for i in (0, 2, 6, 8, 11, 16)])
@pytest.mark.parametrize("command", ["explain", "transfer", "sweep"])
def test_the_cli_refuses_a_file_that_is_no_model(tmp_path, capsys, model_files, name, make,
                                                 message, command):
    path = make(tmp_path, model_files)
    les = model_files / "les.nc"
    argv = {"explain": ["explain", path, "--out", tmp_path / "e.nc"],
            "transfer": ["transfer", path, les, "--layers", 1, "--out", tmp_path / "t.keras"],
            "sweep": ["sweep", path, les, les, "--out", tmp_path / "s.nc"]}[command]
    before = files(tmp_path)
    assert_user_error(capsys, argv, message)
    assert files(tmp_path) == before


@pytest.mark.parametrize("command", ["train", "transfer", "sweep"])
def test_the_cli_refuses_a_model_given_as_data(tmp_path, capsys, model_files, command):
    model, data = model_files / "m.keras", model_files / "m.nc"
    argv = {"train": ["train", data, "--out", tmp_path / "t.keras"],
            "transfer": ["transfer", model, data, "--layers", 1, "--out", tmp_path / "t.keras"],
            "sweep": ["sweep", model, data, data, "--out", tmp_path / "s.nc"]}[command]
    assert_user_error(capsys, argv, "lacks the variables", "psi")
    assert files(tmp_path) == []


# ------------------------------------------------------------------ 4. output paths
def test_check_output_path_refuses_a_folder_with_or_without_overwrite(tmp_path):
    for overwrite in (False, True):
        with pytest.raises(IsADirectoryError, match="is a folder; the output is a file"):
            check_output_path(tmp_path, overwrite, "out")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="'.*f' is a file, not a folder"):
        check_output_path(tmp_path / "f" / "x.nc", True, "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.nc", True, "out")
    assert check_output_path(tmp_path / "f", True, "out") == tmp_path / "f"


def test_check_output_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; the output is a folder"):
        check_output_folder(tmp_path / "f")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "f" / "sub" / "deeper")
    assert check_output_folder(tmp_path) == tmp_path
    assert check_output_folder(tmp_path / "new" / "sub") == tmp_path / "new" / "sub"
    assert files(tmp_path) == ["f"]


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("where", ["folder", "missing folder", "under a file"])
def test_simulate_checks_its_path_before_running(tmp_path, overwrite, where):
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    path = {"folder": tmp_path / "out", "missing folder": tmp_path / "missing" / "x.nc",
            "under a file": tmp_path / "file" / "x.nc"}[where]
    before = files(tmp_path)
    with pytest.raises((IsADirectoryError, FileNotFoundError, NotADirectoryError)):
        xtl.simulate(xtl.get_case("tiny"), t_end=0.004, save_interval=0.002, path=path,
                     overwrite=overwrite)
    assert files(tmp_path) == before  # no .part, no .ckpt.npz, no lock


_SIMULATE_OUTS = [
    ("out", "is a folder; the output is a file"),
    ("missing/x.nc", "folder '{tmp}/missing' does not exist"),
    ("file/x.nc", "is a file, not a folder"),
    ("file", "already exists; pass overwrite=True (--overwrite)"),
]
_EXTRAS = [[], ["--overwrite"], ["--les", "--dns-every", "1"]]


@pytest.mark.parametrize("out, message, extra", [
    (out, message, extra) for out, message in _SIMULATE_OUTS for extra in _EXTRAS
    if not (out == "file" and "--overwrite" in extra)  # an existing file may be replaced
])
def test_the_cli_checks_simulates_out_before_running(tmp_path, capsys, out, message, extra):
    (tmp_path / "out").mkdir()
    (tmp_path / "file").write_text("x")
    before = files(tmp_path)
    assert_user_error(capsys, ["simulate", "tiny", "--t-end", 0.004, "--save-interval", 0.002,
                               "--out", tmp_path / out, *extra],
                      "--out", message.format(tmp=tmp_path))
    assert files(tmp_path) == before


@pytest.mark.parametrize("command", [["run", "CONFIG"], ["demo"]])
@pytest.mark.parametrize("where", ["file", "under a file"])
def test_the_cli_refuses_a_file_as_the_experiment_folder(tmp_path, capsys, command, where):
    (tmp_path / "file").write_text("x")
    config = tmp_path / "c.toml"
    config.write_text("")
    out = tmp_path / "file" if where == "file" else tmp_path / "file" / "sub"
    argv = [config if a == "CONFIG" else a for a in command] + ["--out", out]
    assert_user_error(capsys, argv, "--out", "is a file")
    assert files(tmp_path) == ["c.toml", "file"]


def test_the_cli_refuses_a_file_as_the_ensemble_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert_user_error(capsys, ["ensemble", "tiny", "--directory", tmp_path / "file",
                               "--t-end", 0.004, "--save-interval", 0.002],
                      "--directory", "is a file; the output is a folder")
    assert files(tmp_path) == ["file"]


@pytest.mark.parametrize("out", ["m.txt", "m", "m.h5", "m.keras.txt", "m.zarr.h5"])
def test_a_model_path_with_the_wrong_suffix_is_refused_before_training(tmp_path, capsys,
                                                                       model_files, out):
    with pytest.raises(ValueError, match=r"path must end with '\.keras'"):
        check_model_path(tmp_path / out)
    les = model_files / "les.nc"
    assert_user_error(capsys, ["train", les, "--out", tmp_path / out, "--epochs", 1000],
                      "--out must end with '.keras'")
    assert_user_error(capsys, ["transfer", model_files / "m.keras", les, "--layers", 1,
                               "--epochs", 1000, "--out", tmp_path / out],
                      "--out must end with '.keras'")
    assert files(tmp_path) == []


@pytest.mark.parametrize("existing", ["m.keras", "m.nc"])
def test_an_existing_model_output_is_refused_before_training(tmp_path, capsys, model_files,
                                                             existing):
    (tmp_path / existing).write_text("keep me")
    assert_user_error(capsys, ["train", model_files / "les.nc", "--out", tmp_path / "m.keras",
                               "--epochs", 1000], "already exists")
    assert (tmp_path / existing).read_text() == "keep me"
    with pytest.raises(FileExistsError):
        check_model_path(tmp_path / "m.keras")


def test_a_folder_as_the_model_output_is_refused(tmp_path, capsys, model_files):
    (tmp_path / "m.keras").mkdir()
    assert_user_error(capsys, ["train", model_files / "les.nc", "--out", tmp_path / "m.keras",
                               "--overwrite", "--epochs", 1000], "is a folder")


@pytest.mark.parametrize("command", ["explain", "sweep", "coarse-grain"])
def test_an_existing_output_file_is_refused_without_overwrite(tmp_path, capsys, model_files,
                                                              command):
    out = tmp_path / "out.nc"
    out.write_text("keep me")
    les, model = model_files / "les.nc", model_files / "m.keras"
    argv = {"explain": ["explain", model, "--out", out],
            "sweep": ["sweep", model, les, les, "--out", out],
            "coarse-grain": ["coarse-grain", les, "--out", out]}[command]
    assert_user_error(capsys, argv, "already exists", "--overwrite")
    assert out.read_text() == "keep me"


def test_explain_writes_a_file_but_not_a_folder(tmp_path, capsys, model_files):
    assert_user_error(capsys, ["explain", model_files / "m.keras", "--out", tmp_path,
                               "--overwrite"], "is a folder")


@pytest.mark.parametrize("case", ["coarse-grain", "train", "train .nc beside", "transfer model",
                                  "transfer data", "explain", "explain base", "sweep"])
def test_an_output_that_is_an_input_is_refused(tmp_path, capsys, model_files, case):
    import shutil

    for name in ("les.nc", "m.keras", "m.nc"):
        shutil.copy(model_files / name, tmp_path / name)
    les, model, model_nc = tmp_path / "les.nc", tmp_path / "m.keras", tmp_path / "m.nc"
    argv = {
        "coarse-grain": ["coarse-grain", les, "--out", les],
        "train": ["train", model_nc, "--out", model],  # m.nc would be replaced by the model's
        "train .nc beside": ["train", les, "--out", tmp_path / "les.keras"],
        "transfer model": ["transfer", model, les, "--layers", 1, "--out", model],
        "transfer data": ["transfer", model, les, "--layers", 1, "--out", tmp_path / "les.keras"],
        "explain": ["explain", model_nc, "--out", model_nc],
        "explain base": ["explain", model, "--base", model_nc, "--out", model_nc],
        "sweep": ["sweep", model, les, les, "--out", les],
    }[case]
    before = {p: p.read_bytes() for p in (les, model, model_nc)}
    assert_user_error(capsys, argv + ["--overwrite"], "is the input file")
    assert {p: p.read_bytes() for p in (les, model, model_nc)} == before


def test_report_refuses_a_file_as_the_experiment_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert_user_error(capsys, ["report", tmp_path / "file"], "is a file, not an experiment folder")
    assert files(tmp_path) == ["file"]


def test_the_api_refuses_a_file_as_an_output_folder(tmp_path):
    """run_experiment's out and ensemble's directory: a file is refused before any work."""
    from xtl.experiment.stages import Experiment
    from xtl.experiment.config import load_config

    (tmp_path / "file").write_text("x")
    before = files(tmp_path)
    with pytest.raises(NotADirectoryError, match="is a file; the output is a folder"):
        Experiment(load_config(), tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="directory=.*is a file"):
        xtl.ensemble([xtl.get_case("tiny")], t_end=0.004, save_interval=0.002,
                     directory=tmp_path / "file")
    assert files(tmp_path) == before


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "127.0.0.1:{port}",
                                     "http://127.0.0.1:{port}", "tcp://127.0.0.1"])
def test_the_cli_refuses_a_scheduler_that_is_not_there(tmp_path, capsys, address):
    """`xtl demo --scheduler`: a closed port, the dashboard's scheme, a missing port."""
    import socket

    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_user_error(capsys, ["demo", "--out", tmp_path / "demo",
                               "--scheduler", address.format(port=port)], "--scheduler")
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("t_end, path, needle", [
    (1e300, False, r"a run takes at most 2\*\*53 steps"),
    (1e300, True, r"a run takes at most 2\*\*53 steps"),
    (1e6, False, "this machine has"),       # 5e8 snapshots kept in memory
    (1e9, True, "has free"),                 # petabytes on the disk
])
def test_a_run_whose_steps_or_snapshots_cannot_fit_is_refused_before_it_steps(
        tmp_path, t_end, path, needle):
    before = files(tmp_path)
    start = time.monotonic()
    with pytest.raises(ValueError, match=needle):
        xtl.simulate(xtl.get_case("tiny"), t_end=t_end, save_interval=0.002,
                     path=tmp_path / "run.nc" if path else None)
    assert time.monotonic() - start < FAST and files(tmp_path) == before
