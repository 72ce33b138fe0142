"""xtl in a Jupyter notebook, executed by a real kernel (as ``jupyter nbconvert --execute``)."""
import nbformat
import pytest
from nbclient import NotebookClient

CELLS = [
    # the usual first cell of a notebook
    """from distributed import Client, LocalCluster
import multiprocessing
client = Client(LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0"))
before = len(multiprocessing.active_children())""",
    # an ensemble with the defaults: a progress bar, on the notebook's cluster
    """import warnings
import xtl
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ds = xtl.ensemble("tiny", seeds=[0, 1], t_end=0.3, save_interval=0.1, directory="runs")
print("warnings:", [str(w.message) for w in caught])
print("new processes:", len(multiprocessing.active_children()) - before)
print("statuses:", ds.status.values.tolist())""",
    # TensorFlow, imported by xtl when a network is trained
    """from xtl.nn.backends.keras import _keras
keras = _keras()
print("keras", keras.__version__)""",
    "cluster = client.cluster\nclient.close()\ncluster.close()",
]


def _outputs(cell):
    text = {"stdout": "", "stderr": ""}
    for out in cell.outputs:
        if out.output_type == "stream":
            text[out.name] += out.text
    return text


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebook")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    with pytest.MonkeyPatch.context() as mp:
        # a plain notebook server's environment: none of the test suite's settings
        for name in ("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND", "DASK_SCHEDULER_ADDRESS"):
            mp.delenv(name, raising=False)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def test_ensemble_in_a_notebook_uses_its_client_and_shows_progress(notebook):
    out = _outputs(notebook.cells[1])
    assert "warnings: []" in out["stdout"]  # no TqdmWarning "IProgress not found"
    assert "new processes: 0" in out["stdout"]  # ran on the notebook's cluster
    assert "statuses: ['complete', 'complete']" in out["stdout"]
    assert "ensemble" in out["stderr"] and "2/2" in out["stderr"]  # a progress bar by default


def test_tensorflow_is_quiet_in_a_notebook(notebook):
    out = _outputs(notebook.cells[2])
    assert out["stdout"].startswith("keras 3")
    for chatter in ("absl::InitializeLog", "oneDNN", "cpu_feature_guard", "cuda"):
        assert chatter not in out["stderr"], out["stderr"]
