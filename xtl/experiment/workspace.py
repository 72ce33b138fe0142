"""An experiment's folder and resources: its path scheme, its stage cache, its cluster.

* :class:`ExperimentPaths` names every file an experiment writes or reads, in
  one place;
* :class:`StageCache` runs a stage unless its key (a hash of its inputs) and its
  outputs (their files' sizes and sha256) are unchanged, and records each run in a
  manifest ``stages/<stage>.json``, written atomically after the outputs;
* :class:`ExperimentCluster` owns the dask cluster of the stages: the one
  given, or a LocalCluster started on first use and closed on exit, even on
  an error.

:mod:`xtl.experiment.stages` composes them into the experiment.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..data.files import write_text_atomically
from ..scheduler import check_address

__all__ = ["ExperimentPaths", "StageCache", "ExperimentCluster", "log", "file_sha256",
           "output_files"]


def log(message: str) -> None:
    """Print a time-stamped line of the experiment's log (flushed)."""
    print(f"[xtl {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------- paths
@dataclass(frozen=True)
class ExperimentPaths:
    """Every path of an experiment's output folder ``root``.

    ::

        config.json                the config's tables (xtl report re-reads them)
        stages/<stage>.json        manifests of the stage cache
        data/<flow>/               DNS ensemble and LES data of each flow
        models/base.keras          the base network (its .nc beside it)
        models/tl-<target>/        the sweep's networks: tl_layer<l>_seed<s>.keras,
                                   <baseline>_seed<s>.keras
        models/budget-<target>/    the budget sweep's networks
        results/*.nc               flows, base-scores, recommend-, sweep-, budget-,
                                   explain-, aposteriori- files
        results/summary.nc, .json  every number the report's key findings state
        figures/, report.html      the report (report.md with xtl report --format md)

    Parameters
    ----------
    root : path-like
        The output folder (made absolute, so every path is).
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).absolute())

    FOLDERS = ("stages", "data", "models", "results", "figures")

    def make_folders(self) -> None:
        """Create ``root`` and its sub-folders."""
        for sub in self.FOLDERS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def config(self) -> Path:
        """``config.json``."""
        return self.root / "config.json"

    def manifest(self, stage: str) -> Path:
        """The manifest of ``stage``."""
        return self.root / "stages" / f"{stage}.json"

    def data(self, flow: str) -> Path:
        """The ensemble folder of flow ``flow``."""
        return self.root / "data" / flow

    def model(self, name: str) -> Path:
        """A saved model (``.keras``; its ``.nc`` lies beside it), e.g. ``"base"``."""
        return self.root / "models" / f"{name}.keras"

    def model_dataset(self, name: str) -> Path:
        """The ``.nc`` beside :meth:`model`."""
        return self.model(name).with_suffix(".nc")

    def sweep_models(self, target: str) -> Path:
        """Folder of the sweep's networks of ``target`` (the sweep names the files)."""
        return self.root / "models" / f"tl-{target}"

    def sweep_model(self, target: str, kind: str, seed: int) -> Path:
        """A network the sweep saved: ``kind`` is ``"tl_layer<l>"`` or a baseline name."""
        return self.sweep_models(target) / f"{kind}_seed{seed}.keras"

    def tl_model(self, target: str, layer: int, seed: int) -> Path:
        """The sweep's TLNN of ``target`` with ``layer`` re-trained under ``seed``."""
        return self.sweep_model(target, f"tl_layer{layer}", seed)

    def budget_models(self, target: str) -> Path:
        """Folder of the budget sweep's networks of ``target``."""
        return self.root / "models" / f"budget-{target}"

    def result(self, name: str) -> Path:
        """``results/<name>.nc``."""
        return self.root / "results" / f"{name}.nc"

    @property
    def flows(self) -> Path:
        """How far each target is from the base."""
        return self.result("flows")

    @property
    def base_scores(self) -> Path:
        """The base network's scores (and learning curve)."""
        return self.result("base-scores")

    def recommendation(self, target: str, method: str, n: int | None = None) -> Path:
        """A recommender's ranking of ``target`` at the main budget, or at ``n`` samples."""
        suffix = "" if n is None else f"-n{n}"
        return self.result(f"recommend-{target}{suffix}-{method}")

    @property
    def benchmark(self) -> Path:
        """The recommenders' benchmark against the sweeps."""
        return self.result("recommend-benchmark")

    def sweep(self, target: str) -> Path:
        """The layer sweep of ``target``."""
        return self.result(f"sweep-{target}")

    def pairs(self, target: str) -> Path:
        """The sweep of every pair of layers of ``target`` (``[sweep] pairs = true``)."""
        return self.result(f"pairs-{target}")

    def budget(self, target: str) -> Path:
        """The budget sweep of ``target``."""
        return self.result(f"budget-{target}")

    def explain(self, target: str) -> Path:
        """The explanation of ``target``'s best layer."""
        return self.result(f"explain-{target}")

    def aposteriori(self, target: str) -> Path:
        """The a posteriori LES runs of ``target``."""
        return self.result(f"aposteriori-{target}")

    @property
    def figures(self) -> Path:
        """Folder of the report's figures."""
        return self.root / "figures"

    @property
    def report(self) -> Path:
        """``report.html``."""
        return self.root / "report.html"


# ------------------------------------------------------------------- stage cache
def stage_key(name: str, parts) -> str:
    """A short stable hash (16 hex digits) of a stage's name and its JSON-able inputs
    ``parts`` (dict keys are sorted; other objects hash by ``str``)."""
    payload = json.dumps([name, *parts], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


#: Bytes read at a time when hashing an output.
HASH_CHUNK = 1 << 20


def file_sha256(path) -> str:
    """The sha256 (hex) of the file ``path``, read in chunks of :data:`HASH_CHUNK` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_scratch(path: Path) -> bool:
    """Lock files and the temporary files of atomic writes, which a folder's hash skips."""
    return path.name.endswith(".lock") or ".tmp" in path.name


def _raise(err):
    raise err


def output_files(root: Path, outputs) -> dict:
    """``{path relative to root: {"size", "sha256"}}`` of the files of ``outputs``.

    An output is a file, or a folder standing for every file under it (lock files and
    temporary files of atomic writes left out). Raises OSError when one cannot be read.
    """
    files = {}
    for output in outputs:
        path = root / output
        if path.is_dir():
            found = []
            for folder, _, names in os.walk(path, onerror=_raise):
                found += [Path(folder) / n for n in names if not _is_scratch(Path(folder) / n)]
        else:
            found = [path]
        for file in sorted(found):
            files[str(file.relative_to(root))] = {"size": file.stat().st_size,
                                                  "sha256": file_sha256(file)}
    return files


def _files_changed(recorded: dict, current: dict) -> str | None:
    """Why the files ``current`` are not those ``recorded`` (the first difference), or None."""
    for name in sorted(set(recorded) | set(current)):
        if name not in current:
            return f"{name} vanished since the stage ran"
        if name not in recorded:
            return f"{name} appeared since the stage ran"
        if current[name] != recorded[name]:
            return f"{name} changed since the stage ran"
    return None


class StageCache:
    """Runs each stage once per inputs: skipped while its key and outputs are unchanged.

    A stage's key hashes its name and its inputs, where an input ``"@other"``
    stands for the key of stage ``other`` (run or skipped before it in this
    cache), so a stage reruns when a stage it depends on changed. After a
    stage ran, its manifest (key, outputs, their files' sizes and sha256, seconds,
    the UTC time it finished) is written atomically. A stage is skipped when its manifest holds the same key
    and every output file is there with the size and hash it had; otherwise it
    runs again, and the log says why in one line: an output that changed, vanished,
    appeared (in an output folder) or cannot be read, or a manifest that cannot be
    read (corrupt or truncated; it counts as missing). A manifest written before
    the hashes were recorded (no ``files``) is trusted on its key and its outputs'
    existence, as it was, and the hashes of the outputs found are added to it.

    Parameters
    ----------
    paths : ExperimentPaths
        Where the manifests (and the outputs, relative to ``paths.root``) lie.
    log : callable, optional
        Receives a line per stage (default :func:`log`).
    """

    def __init__(self, paths: ExperimentPaths, log=log):
        self.paths = paths
        self.log = log
        self.keys: dict = {}
        self.ran: list = []
        self.skipped: list = []

    def key(self, name: str, parts) -> str:
        """The key of stage ``name`` with inputs ``parts`` (``"@stage"`` resolved)."""
        resolved = [self.keys.get(p[1:], p) if isinstance(p, str) and p.startswith("@") else p
                    for p in parts]
        return stage_key(name, resolved)

    def has_run(self, name: str) -> bool:
        """Whether stage ``name`` has a manifest (ran once, with whatever inputs)."""
        return self.paths.manifest(name).exists()

    def read_manifest(self, name: str) -> dict | None:
        """The manifest of stage ``name``, or None when there is none.

        Raises
        ------
        ValueError
            The manifest cannot be read or is not a JSON object with a ``key``
            (naming the file).
        """
        path = self.paths.manifest(name)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{self._relative(path)} cannot be read ({err})") from None
        if not isinstance(record, dict) or "key" not in record:
            raise ValueError(f"{self._relative(path)} is not a stage manifest (a JSON object "
                             "with a 'key')")
        return record

    def stale(self, name: str, key: str, outputs) -> str | None:
        """Why stage ``name`` must run with ``key`` and ``outputs``: ``""`` when it has not
        run with this key, a one-line reason when its manifest or outputs changed since,
        None when it is current (the hashes of an older manifest are then recorded)."""
        try:
            record = self.read_manifest(name)
        except ValueError as err:
            return str(err)
        if record is None or record.get("key") != key:
            return ""
        for output in outputs:
            if not (self.paths.root / output).exists():
                return f"{self._relative(output)} vanished since the stage ran"
        try:
            current = output_files(self.paths.root, [self._relative(o) for o in outputs])
        except OSError as err:
            return f"an output of the stage cannot be read ({err})"
        if "files" not in record:  # written before the hashes: trusted, and upgraded
            write_text_atomically(self.paths.manifest(name),
                                  json.dumps({**record, "files": current}))
            return None
        return _files_changed(record["files"], current)

    def _relative(self, output) -> str:
        path = Path(output)
        return str(path.relative_to(self.paths.root) if path.is_absolute() else path)

    def run(self, name: str, parts, outputs, func) -> bool:
        """Run ``func()`` as stage ``name`` unless it is current.

        ``parts`` are the stage's JSON-able inputs (``"@stage"`` names another stage's
        key), ``outputs`` the files or folders it writes (absolute, or relative to the
        root). Returns whether the stage ran.
        """
        key = self.key(name, parts)
        reason = self.stale(name, key, outputs)
        if reason is None:
            self.keys[name] = key
            self.skipped.append(name)
            self.log(f"{name}: unchanged, skipped")
            return False
        self.log(f"{reason}: running {name} again" if reason else f"{name}: running")
        start = time.perf_counter()
        func()
        seconds = time.perf_counter() - start
        relative = [self._relative(o) for o in outputs]
        finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        write_text_atomically(self.paths.manifest(name), json.dumps(
            {"key": key, "outputs": relative, "seconds": seconds, "finished": finished,
             "files": output_files(self.paths.root, relative)}))
        self.keys[name] = key
        self.ran.append(name)
        self.log(f"{name}: done in {seconds:.0f} s")
        return True


# ------------------------------------------------------------------- cluster
class ExperimentCluster:
    """The dask client of an experiment's stages, as a context manager.

    The given ``client``; else, with neither a ``scheduler`` address nor
    ``DASK_SCHEDULER_ADDRESS``, one LocalCluster started when a stage first asks
    for it and closed on exit (an error included). With a scheduler address and
    no client, :attr:`client` is None and the ensembles connect by address
    (:func:`xtl.scheduler.connect`: probed first, refused within
    ``$XTL_SCHEDULER_TIMEOUT`` seconds, default 5, when no dask scheduler answers).

    Parameters
    ----------
    scheduler : str, optional
        Address of an existing dask scheduler (or an object with
        ``.scheduler_address``); its form is checked here, before any stage.

    Raises
    ------
    ValueError
        Both ``client`` and ``scheduler``.
    xtl.scheduler.SchedulerError
        A malformed ``scheduler`` address (:func:`xtl.scheduler.check_address`).
    """

    def __init__(self, client=None, scheduler=None):
        if client is not None and scheduler is not None:
            raise ValueError("give client= or scheduler=, not both")
        if scheduler is not None:
            check_address(scheduler, "scheduler")
        self.given = client
        self.scheduler = scheduler
        self._own = None

    def _uses_given(self) -> bool:
        return self.given is not None or self.scheduler is not None or bool(
            os.environ.get("DASK_SCHEDULER_ADDRESS"))

    @property
    def client(self):
        """The client: the given one, or the LocalCluster's (started now if need be)."""
        if self._uses_given():
            return self.given
        if self._own is None:
            from ..solver.ensemble import default_n_workers, local_cluster

            self._own = local_cluster(default_n_workers())
        return self._own[1]

    @property
    def started(self) -> bool:
        """Whether this object started a LocalCluster (and has not closed it)."""
        return self._own is not None

    def close(self) -> None:
        """Close the LocalCluster this object started, if any (the given client stays)."""
        if self._own is not None:
            cluster, client = self._own
            self._own = None
            client.close()
            cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
