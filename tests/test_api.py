"""API fixes: get_case overrides, run_les and les_metrics in the facade, n from the model's grid, progress bars,
quiet TensorFlow, the version."""
import importlib.metadata
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr

import xtl
from xtl.explain import kernels as K


def test_get_case_can_rename_the_preset():
    case = xtl.get_case("tiny", Re=200.0, name="tiny-re")
    assert (case.name, case.Re, case.n) == ("tiny-re", 200.0, 64)
    with pytest.raises(KeyError, match="unknown case 'nope'"):
        xtl.get_case("nope", name="x")


def test_run_les_and_les_metrics_are_the_facades_names_and_xtl_les_is_gone():
    from xtl.data.metrics import les_metrics
    from xtl.solver.les import run_les

    assert xtl.run_les is run_les and xtl.les_metrics is les_metrics
    assert not hasattr(xtl, "les")
    with pytest.raises(ImportError):  # split by role: physics.closures, solver.les, ...
        importlib.import_module("xtl.les")


def test_run_les_on_another_grid_says_to_pass_n():
    case = xtl.get_case("tiny")  # n_les = 16

    def closure(psi, omega):
        return np.zeros_like(psi)

    closure.n = 32  # a closure for data coarse-grained to 32²
    with pytest.raises(ValueError, match=r"32² grid but the LES grid is 16².*pass n=32"):
        xtl.run_les(case, closure, t_end=0.04, save_interval=0.04)
    run = xtl.run_les(case, closure, t_end=0.04, save_interval=0.04, n=32, progress=False)
    assert run.sizes["x"] == 32


def test_kernel_analyses_take_n_from_the_models_grid(trained_model):
    ds = trained_model.to_dataset()
    assert K.recorded_grid(ds) == 16  # trained on the 16² synthetic LES data
    xr.testing.assert_identical(K.kernel_filters(ds).compute(), K.kernel_filters(ds, 16).compute())
    xr.testing.assert_identical(K.classify_kernels(ds), K.classify_kernels(ds, 16))
    xr.testing.assert_identical(K.filter_census(ds), K.filter_census(ds, pad_to=16))
    xr.testing.assert_identical(ds.tl.filter_census(), K.filter_census(ds, pad_to=16))
    assert K.kernel_change(ds, ds).attrs["pad_to"] == 16
    assert K.classify_kernels(ds, 32).attrs["kmax"] == 16  # an explicit n still wins
    bare = ds.drop_attrs()
    with pytest.raises(ValueError, match=r"pad_to \(the grid .* must be given.*records no square"):
        K.kernel_filters(bare)


def test_recorded_grid_reads_the_provenance_json():
    ds = xr.Dataset(attrs={"xtl_provenance": '{"grid": [32, 32]}'})
    assert K.recorded_grid(ds) == 32
    assert K.recorded_grid(xr.Dataset(attrs={"grid": "[24, 24]"})) == 24
    assert K.recorded_grid(xr.Dataset(attrs={"grid": np.array([16, 32])})) is None  # not square
    assert K.recorded_grid(xr.Dataset()) is None


def test_version_comes_from_the_installed_metadata():
    assert xtl.__version__ == importlib.metadata.version("xtl")
    from xtl.data.cf import provenance_attrs

    assert provenance_attrs()["source"] == f"xtl {xtl.__version__}"


# --------------------------------------------------------------------------- progress bars
def test_progress_bars_default_to_terminal_or_notebook(monkeypatch):
    from tqdm.std import tqdm

    from xtl import _progress

    monkeypatch.setattr(_progress, "in_notebook", lambda: False)
    assert _progress.show_progress(True) and not _progress.show_progress(False)
    assert _progress.show_progress(None) == sys.stderr.isatty()
    monkeypatch.setattr(_progress, "in_notebook", lambda: True)
    assert _progress.show_progress(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tqdm.auto warned "IProgress not found" here
        bar = _progress.progress_bar(None, total=2, desc="x", file=open(os.devnull, "w"))
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()


def test_in_notebook_is_false_outside_a_kernel():
    from xtl._progress import in_notebook

    assert not in_notebook()


# --------------------------------------------------------------------------- quiet TensorFlow
def test_tensorflow_import_chatter_is_filtered_and_other_output_kept(capfd):
    from xtl.nn.backends.keras import _IMPORT_CHATTER, _filtered_stderr

    with _filtered_stderr(_IMPORT_CHATTER):
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                    b"written to STDERR\n")
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see\n")
        os.write(2, b"a real error\n")
        print("python warning", file=sys.stderr)
    err = capfd.readouterr().err
    assert "absl" not in err and "oneDNN" not in err
    assert "a real error" in err and "python warning" in err


def test_a_script_that_trains_prints_no_tensorflow_chatter(tmp_path):
    script = (
        "import xtl\n"
        "from xtl.nn.backends.keras import _keras\n"
        "keras = _keras()\n"
        "print(float(keras.ops.convert_to_numpy(keras.ops.sum(keras.ops.ones(3)))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0 and run.stdout.strip() == "3.0", run.stderr
    for chatter in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "cuda"):
        assert chatter not in run.stderr, run.stderr
