"""Ensembles of runs on a dask.distributed cluster → one Dataset with a ``member`` dim.

:func:`ensemble` runs every (case, seed) pair as one task of a
:mod:`dask.distributed` cluster: by default a :class:`~distributed.LocalCluster`
sized to the machine (one thread per worker, as the solver's FFTW threads
collapse on shared cores), or an existing cluster (a ``Client``, a scheduler
address, or the standard ``DASK_SCHEDULER_ADDRESS`` environment variable, e.g. a
``dask-jobqueue`` cluster on HPC). Each member is one call of
:func:`~xtl.solver.simulate` writing its own netCDF file atomically; the files
are then opened lazily and concatenated along ``member``.

Files and resume
----------------
Member files are named ``<case>_seed<seed>_<digest>.nc`` in ``directory``,
the digest hashing everything that defines the member's output (the case, the
seed, the schedule, the ``les`` options, ...). Each file describes its place in
the ensemble: a leading ``member`` dim of length 1 whose coordinate is the
member's number in ``directory`` (its position in the call that first ran it,
unless another file there has that number; a member keeps its number), with
the coordinates ``seed``,
``case_name``, ``Re``, ``kf``, ``beta`` and ``mu`` along it, so that
``xarray.open_mfdataset(files, combine="by_coords")`` stacks them and
:func:`open_ensemble` reopens a directory without the call that made it. A file whose global attribute
``complete`` is 1 is never re-run, so calling :func:`ensemble` again with the
same arguments (after an interruption, or to add members) runs only what is
missing; an interrupted member continues from its checkpoint. A member that
failed (``complete`` = 0, e.g. it diverged) is tried again. On a remote
cluster ``directory`` must be on a file system that the workers and this
process share.

The cluster
-----------
A ``client=`` or ``scheduler=`` argument wins; otherwise the default
``distributed.Client`` of the process (the one a notebook's first cell made
with ``Client(...)``) is used when there is one, then
``$DASK_SCHEDULER_ADDRESS``, and only then a LocalCluster is started (and
closed at the end).
"""
from __future__ import annotations

import contextlib
import hashlib
import numbers
import logging
import os
import re
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ..physics.cases import Case, get_case
from ..data.cf import CF_ATTRS, append_history
from ..data.files import check_output_folder
from ..data.netcdf import ZARR_SUFFIX, is_zarr_store, netcdf_lock, open_dataset
from ..data.coarse import CoarseGraining
from .options import Cluster, Execution, Output, Schedule
from ..scheduler import check_address, connect
from .run import merge_options, step_plan

__all__ = ["ensemble", "open_ensemble", "EnsembleError", "MemberFailedWarning",
           "SIMULATE_OPTIONS"]

#: simulate() keyword arguments that :func:`ensemble` passes through to every member.
SIMULATE_OPTIONS = ("dtype", "checkpoint_interval", "cfl_limit", "check_every", "fft", "threads",
                    "kernels", "cfl_target")

# case attributes that are labels, not parameters: never made coordinates
_LABELS = ("case_description",)
# per-file attributes that describe one file, not the ensemble
_FILE_ATTRS = ("title", "history", "complete", "dns_file")
# what every member file carries as coordinates along `member` (besides `member`)
_FILE_COORDS = ("seed", "case_name", "Re", "kf", "beta", "mu")


class EnsembleError(RuntimeError):
    """Every member of an ensemble failed (the message lists their errors)."""


class MemberFailedWarning(RuntimeWarning):
    """Some members of an ensemble failed; the others were kept (see ``status``/``error``)."""


# ----------------------------------------------------------------------------------------
# members
# ----------------------------------------------------------------------------------------
def _as_case(value) -> Case:
    if isinstance(value, Case):
        return value
    if isinstance(value, str):
        return get_case(value)
    raise TypeError(f"cases must be a Case, a preset name, or a list of them; got {value!r}")


def _as_list(value):
    if isinstance(value, (list, tuple, range, np.ndarray)):
        return list(value)
    return [value]


def _members(cases, seeds) -> list:
    """Every (case, seed) pair, cases outer, seeds inner."""
    cases = [_as_case(c) for c in _as_list(cases)]
    seeds = _as_list(seeds)
    if not cases:
        raise ValueError("cases must name at least one case")
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    for s in seeds:
        if not isinstance(s, numbers.Integral) or isinstance(s, bool) or s < 0:
            raise TypeError(f"seeds must be non-negative ints (or a list of them), got {s!r}")
    return [(case, int(seed)) for case in cases for seed in seeds]


def _digest(*parts) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", name).strip("-") or "case"


def _digest_options(schedule, output, execution) -> dict:
    """What of the options defines a member's output: the times and every simulate option
    that :func:`ensemble` passes on and is not at its default."""
    given = {**schedule.to_dict(), **output.to_dict(), **execution.to_dict()}
    defaults = {**Output().to_dict(), **Execution().to_dict(),
                **Schedule(t_end=0.0, save_interval=1.0).to_dict()}
    run = {k: given[k] for k in ("t_end", "save_interval", "spin_up")}
    run.update({k: given[k] for k in (*SIMULATE_OPTIONS, "dns_every") if given[k] != defaults[k]})
    return run


def _member_specs(members, directory, options, coarse_grainings) -> list:
    """One dict per member: the simulate() call (``case``, ``seed``, its ``schedule``,
    ``output``, ``execution``) and its file (``path``)."""
    schedule, output, execution = options
    digested = sorted(_digest_options(schedule, output, execution).items())
    specs, seen = [], {}
    for index, (case, seed) in enumerate(members):
        les = coarse_grainings[index]
        key = _digest(
            sorted(case.to_attrs().items()), seed, digested,
            None if les is None else sorted(les.to_dict().items()),
        )
        name = f"{_safe(case.name)}_seed{seed}_{key}"
        if name in seen:
            raise ValueError(
                f"members {seen[name]} and {index} are the same run (case {case.name!r}, "
                f"seed {seed}); every (case, seed) pair must be distinct"
            )
        seen[name] = index
        path = str(directory / f"{name}.nc")
        specs.append({
            "case": case, "seed": seed, "path": path, "schedule": schedule,
            "output": output.replace(path=path, overwrite=True, les=les, chunks=None),
            "execution": execution.replace(progress=False),
        })
    return specs


def _read_netcdf(path, read, default):
    """``read(nc)`` of the netCDF file ``path`` under the netCDF lock; ``default`` when it is
    missing or unreadable."""
    import netCDF4

    try:
        with netcdf_lock(), netCDF4.Dataset(path) as nc:
            return read(nc)
    except OSError:
        return default


def _file_number(path):
    """The ``member`` number recorded in a member file (or zarr store), or None (no such
    file or coordinate)."""
    if Path(path).suffix.lower() == ZARR_SUFFIX:
        try:
            with open_dataset(path, allow_incomplete=True) as ds:
                member = ds.variables.get("member")
                return int(member.values[0]) if member is not None and member.size == 1 else None
        except (OSError, ValueError):
            return None

    def number(nc):
        member = nc.variables.get("member")
        return int(member[0]) if member is not None and member.size == 1 else None

    return _read_netcdf(path, number, None)


def _assign_numbers(specs, directory) -> None:
    """Give every spec its member number in ``directory``.

    A member whose file exists keeps the number the file records; a new one gets
    its position in this call when no file there has that number, else the
    smallest number no file has.
    """
    recorded = {}
    for path in sorted(directory.glob("*.nc")):
        if not path.name.endswith(".dns.nc"):
            number = _file_number(path)
            if number is not None:
                recorded[path.name] = number
    used = set(recorded.values())
    for spec in specs:
        spec["number"] = recorded.get(Path(spec["path"]).name)
    for index, spec in enumerate(specs):
        if spec["number"] is None:
            number = index if index not in used else min(set(range(len(used) + 1)) - used)
            spec["number"] = number
            used.add(number)
        attrs = {**spec["case"].to_attrs(), "seed": int(spec["seed"])}  # the file's coordinates
        spec["member"] = {"member": int(spec["number"]), **{k: attrs[k] for k in _FILE_COORDS}}


def _is_complete(path) -> bool:
    """True if ``path`` is a netCDF file whose global attribute ``complete`` is 1."""
    return os.path.exists(path) and _read_netcdf(
        path, lambda nc: int(getattr(nc, "complete", 0)) == 1, False)


def _run_member(spec) -> dict:
    """Run one member (on a worker). Never raises: returns ``{"status", "error"}``."""
    from .run import simulate

    try:
        output = spec["output"].replace(member=spec["member"])
        ds = simulate(spec["case"], spec["schedule"], output, spec["execution"], seed=spec["seed"])
        ds.close()
        return {"status": "complete", "error": ""}
    except Exception as exc:  # reported in the result, not raised
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


# ----------------------------------------------------------------------------------------
# the cluster
# ----------------------------------------------------------------------------------------
def default_n_workers() -> int:
    """Workers of the default LocalCluster: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _default_client():
    """The process's default ``distributed.Client`` (e.g. a notebook's), or None."""
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:  # no client
        return None
    return client if client.status == "running" else None


@contextlib.contextmanager
def _client(cluster: Cluster):
    """Yield the distributed Client the module docstring's *The cluster* picks; close
    whatever this function created. An address is probed first and refused within
    ``cluster.timeout`` (:func:`xtl.scheduler.connect`)."""
    from distributed import Client

    client, scheduler = cluster.client, cluster.scheduler
    if client is None and scheduler is None:
        client = _default_client()
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
        yield client
        return
    name = "scheduler"
    if scheduler is None and os.environ.get("DASK_SCHEDULER_ADDRESS"):
        scheduler, name = os.environ["DASK_SCHEDULER_ADDRESS"], "$DASK_SCHEDULER_ADDRESS"
    if scheduler is not None:
        own = connect(scheduler, cluster.timeout, name=name)
        try:
            yield own
        finally:
            own.close()
        return
    n = default_n_workers() if cluster.n_workers is None else cluster.n_workers
    local, own = local_cluster(n)
    try:
        yield own
    finally:
        own.close()
        local.close()


def dask_setup(worker=None) -> None:
    """Worker preload of :func:`local_cluster`: ignore SIGINT in the worker process.

    A Ctrl-C in the terminal reaches every process of the foreground group; the
    workers leave it to the parent, which cancels the run and reports it once,
    instead of each printing a KeyboardInterrupt traceback.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Environment variables dask's nannies set in the worker processes they spawn
#: (``distributed.nanny.pre-spawn-environ``) that :func:`local_cluster` leaves unset.
#: ``MALLOC_TRIM_THRESHOLD_``: setting it turns off glibc's dynamic mmap threshold, so
#: every large temporary array is a fresh ``mmap`` whose pages fault in anew: a
#: TensorFlow re-training with it set ran 2.6 times slower than without, most of it in
#: the kernel, and a layer sweep on two such workers 1.68 times slower
#: (``benchmarks/sweep.py``).
UNSET_WORKER_ENVIRON = ("MALLOC_TRIM_THRESHOLD_",)


def local_cluster(n_workers: int):
    """Start a quiet ``LocalCluster`` of ``n_workers`` one-thread processes.

    The workers start without the variables of :data:`UNSET_WORKER_ENVIRON` (unless
    this process's own environment sets them); dask's other worker settings stay.

    Returns
    -------
    (distributed.LocalCluster, distributed.Client)
        The client is not made the default scheduler (``set_as_default=False``),
        so other ``dask.compute`` calls in the process stay local. Close both.
    """
    import dask
    from distributed import Client, LocalCluster

    unset = {f"distributed.nanny.pre-spawn-environ.{k}": None for k in UNSET_WORKER_ENVIRON}
    with dask.config.set(unset):  # the nannies read it when they are made, here
        cluster = LocalCluster(
            n_workers=int(n_workers), threads_per_worker=1, processes=True,
            dashboard_address=":0", silence_logs=logging.ERROR,
            preload=[__name__],  # runs dask_setup in each worker
        )
    try:
        return cluster, Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise


def _task_key(path) -> str:
    """The dask key of the member written to ``path``: its file's name and a digest of
    its full path, so that the same run into two folders (a control target equal to
    the base, run beside it on one cluster) is two tasks, not one shared."""
    return f"xtl-member-{Path(path).stem}-{_digest(str(Path(path).absolute()))}"


def _run_all(specs, todo, cluster, progress) -> dict:
    """Run the members ``todo`` (indices into specs); return {index: result}."""
    from distributed import as_completed

    from .._progress import progress_bar

    results = {}
    bar = progress_bar(
        progress, total=len(specs), initial=len(specs) - len(todo), unit="member", desc="ensemble",
    )
    try:
        with _client(cluster) as c:
            futures = {
                c.submit(_run_member, specs[i], key=_task_key(specs[i]['path']), pure=False): i
                for i in todo
            }
            try:
                for future in as_completed(list(futures), loop=c.loop):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except Exception as exc:  # the worker died, the task was lost, ...
                        results[i] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
                    bar.update(1)
                    if results[i]["status"] != "complete":
                        bar.write(f"member {i} failed: {results[i]['error']}")
            finally:
                c.cancel(list(futures))
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------------------
# the combined Dataset
# ----------------------------------------------------------------------------------------
def _default_chunks(ds) -> dict:
    """Chunks along time of about 64 MiB per variable, whole chunks of the file's."""
    per_snapshot = max(
        (ds[v].dtype.itemsize * ds.sizes["y"] * ds.sizes["x"] for v in ds.data_vars), default=1
    )
    stored = [ds[v].encoding.get("chunksizes") or ds[v].encoding.get("preferred_chunks")
              and tuple(ds[v].encoding["preferred_chunks"][d] for d in ds[v].dims)
              for v in ds.data_vars]
    on_disk = max([c[ds[v].dims.index("time")] for v, c in zip(ds.data_vars, stored) if c] or [1])
    return {"time": max(1, (64 * 2**20) // per_snapshot // on_disk) * on_disk}


def _member_coords(members, statuses, errors, specs):
    """Coordinates along ``member`` (what varies), attrs (what does not), the varying keys."""
    table = [{**case.to_attrs(), "seed": seed} for case, seed in members]
    keys = list(table[0])
    coords, attrs, varying = {}, {}, set()
    for key in keys:
        values = [row[key] for row in table]
        if all(v == values[0] for v in values):
            attrs[key] = values[0]
            continue
        varying.add(key)
        if key not in _LABELS:
            coords[key] = ("member", np.array(values), CF_ATTRS.get(key, {}))
    coords["status"] = ("member", np.array(statuses, dtype=str), CF_ATTRS["status"])
    coords["error"] = ("member", np.array(errors, dtype=str), CF_ATTRS["error"])
    coords["file"] = ("member", np.array([Path(s["path"]).name for s in specs]), CF_ATTRS["file"])
    return coords, attrs, varying


def _open_member(path, number, chunks) -> xr.Dataset:
    """A member file, lazily, with a ``member`` dim of length 1 and none of its own member coords."""
    ds = open_dataset(path, chunks=chunks)
    if "member" not in ds.dims:  # a file written before member files carried the dim
        ds = ds.expand_dims(member=[number])
    own = [c for c in ds.coords if c != "member" and ds[c].dims == ("member",)]
    return ds.drop_vars(own)


def _combine(specs, members, statuses, errors, chunks, entry) -> xr.Dataset:
    """Open the complete members lazily and stack them along ``member`` (NaN for failures).

    ``specs`` are dicts with the member's ``path`` and ``number``; ``entry`` is
    the ``history`` line of the combination.
    """
    complete = [i for i, s in enumerate(statuses) if s == "complete"]
    template_index = complete[0]
    numbers = [int(s["number"]) for s in specs]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"member numbers must be distinct, got {numbers} for {[s['path'] for s in specs]}")
    if chunks is None:
        with open_dataset(specs[template_index]["path"]) as first:  # metadata only
            chunks = _default_chunks(first)
    opened = {i: _open_member(specs[i]["path"], numbers[i], chunks) for i in complete}
    template = opened[template_index]
    parts = []
    for i in range(len(specs)):
        if i in opened:
            ds = opened[i]
            if ds.sizes != template.sizes:
                raise ValueError(
                    f"member {numbers[i]} ({specs[i]['path']}) has sizes {dict(ds.sizes)}, member "
                    f"{numbers[template_index]} has {dict(template.sizes)}; members must share "
                    "the grid and the schedule"
                )
            if not np.allclose(ds.time.values, template.time.values, rtol=1e-9, atol=1e-12):
                raise ValueError(f"member {numbers[i]} ({specs[i]['path']}) has other snapshot "
                                 f"times than member {numbers[template_index]}")
            ds = ds.assign_coords(time=template.time)
        else:
            ds = xr.full_like(template, np.nan).assign_coords(member=[numbers[i]])
        parts.append(ds)
    combined = xr.concat(parts, dim="member", data_vars="all", coords="minimal",
                         compat="override", join="override", combine_attrs="drop")
    coords, constants, varying = _member_coords(members, statuses, errors, specs)
    combined = combined.assign_coords(member=("member", numbers, CF_ATTRS["member"]))
    combined = combined.assign_coords(coords)
    # attributes of the files that differ between members (and are not coordinates) are dropped
    differ = {k for ds in opened.values() for k, v in ds.attrs.items()
              if not np.array_equal(v, template.attrs.get(k))}
    drop = (set(_FILE_ATTRS) - {"history"}) | set(coords) | differ | varying
    attrs = {k: v for k, v in template.attrs.items() if k not in drop}
    attrs.update(constants)
    attrs = {
        "title": f"xtl ensemble of {len(specs)} members",
        **attrs,
        "members_complete": int(sum(s == "complete" for s in statuses)),
    }
    combined.attrs = append_history(attrs, entry)
    for name in combined.data_vars:
        combined[name].attrs = dict(template[name].attrs)
    return combined


def _member_attrs(path: Path) -> dict:
    """The global attributes of a member file (netCDF) or store (zarr)."""
    if path.suffix.lower() == ZARR_SUFFIX:
        try:
            with open_dataset(path, allow_incomplete=True) as ds:
                return dict(ds.attrs)
        except (OSError, ValueError) as err:
            raise ValueError(f"{str(path)!r} is not a readable zarr store: {err}") from None
    import netCDF4

    try:
        with netcdf_lock(), netCDF4.Dataset(path) as nc:
            return {k: nc.getncattr(k) for k in nc.ncattrs()}
    except OSError as err:
        raise ValueError(f"{str(path)!r} is not a readable netCDF file: {err}") from None


def _member_paths(folder: Path, pattern, dns: bool) -> list:
    """The member files (or DNS files) of ``folder`` matching ``pattern`` (default
    ``*.nc`` and ``*.zarr``), sorted."""
    patterns = ["*.nc", f"*{ZARR_SUFFIX}"] if pattern is None else [pattern]
    found = sorted({p for pat in patterns for p in folder.glob(pat)})
    return [p for p in found
            if p.name.endswith((".dns.nc", f".dns{ZARR_SUFFIX}")) == bool(dns)]


def _open_store(store: Path, chunks) -> xr.Dataset:
    """A whole ensemble written as one zarr store, lazily (a ``member`` dim added if absent)."""
    ds = open_dataset(store, chunks={} if chunks is None else chunks)
    if "member" not in ds.dims:
        ds = ds.expand_dims(member=[0])
    return ds


def open_ensemble(directory, *, chunks=None, dns=False, pattern=None) -> xr.Dataset:
    """Open the member files of an ensemble directory as one Dataset along ``member``.

    The files say where they belong (their ``member`` coordinate and their
    attributes), so this needs only the directory that :func:`ensemble` wrote:
    the result is what ``ensemble`` returned, with every member found there,
    ordered by member number. Members may be netCDF files or zarr stores
    (``*.zarr`` folders). ``directory`` may also be one zarr store holding the
    whole ensemble (e.g. ``xtl.io.write_dataset(ens, "ens.zarr")``): it is opened
    lazily as it is, with a ``member`` dim of length 1 added if it has none.

    Parameters
    ----------
    directory : str or Path
        The ``directory`` of one or more :func:`ensemble` calls with the same
        grid and schedule, or a ``.zarr`` store of a whole ensemble.
    chunks : dict, optional
        Dask chunks; default about 64 MiB per variable along ``time`` (a whole
        store: its own chunks).
    dns : bool, default False
        Open the DNS snapshots kept beside on-the-fly LES members
        (``dns_every``, the ``*.dns.nc`` files) instead of the members.
    pattern : str, optional
        Glob of the files to consider in ``directory``; default ``*.nc`` and ``*.zarr``.

    Returns
    -------
    xarray.Dataset
        Lazy fields on ``(member, time, y, x)`` with the coordinates
        ``status``, ``error``, ``file`` and every case parameter or seed that
        varies across members (constant ones in ``attrs``), as from
        :func:`ensemble`. Incomplete members (``complete = 0``: diverged or
        interrupted) are NaN with ``status = "failed"``.

    Raises
    ------
    FileNotFoundError
        If ``directory`` holds no member file.
    ValueError
        If a file is not an xtl run, or the members differ in grid or times.
    EnsembleError
        If no member is complete.

    Examples
    --------
    >>> les = xtl.open_ensemble("runs", chunks={"time": 50})     # doctest: +SKIP
    >>> les = xtl.open_ensemble("ensemble.zarr")                  # doctest: +SKIP
    >>> xr.open_mfdataset("runs/*[!s].nc", combine="by_coords")    # doctest: +SKIP
    """
    folder = Path(directory)
    if chunks is not None and not isinstance(chunks, dict):
        raise TypeError(f"chunks must be a dict like {{'time': 100}}, got {chunks!r}")
    if folder.suffix.lower() == ZARR_SUFFIX and is_zarr_store(folder) and not dns:
        return _open_store(folder, chunks)
    if not folder.is_dir():
        raise FileNotFoundError(f"directory={str(directory)!r} is not a folder")
    rows = []
    for path in _member_paths(folder, pattern, dns):
        attrs = _member_attrs(path)
        if "case_name" not in attrs or "seed" not in attrs:
            raise ValueError(
                f"{str(path)!r} is not an xtl run (no 'case_name'/'seed' attributes); "
                "narrow the files with pattern=..."
            )
        rows.append((path, attrs, _file_number(path)))
    if not rows:
        kind = "DNS (*.dns.nc)" if dns else "member"
        wanted = "*.nc or *.zarr" if pattern is None else repr(pattern)
        raise FileNotFoundError(f"directory={str(directory)!r} holds no {kind} files matching "
                                f"{wanted}")
    free = max((n for _, _, n in rows if n is not None), default=-1) + 1
    specs = []
    for path, attrs, number in rows:
        if number is None:
            number, free = free, free + 1
        specs.append({"path": str(path), "number": number, "attrs": attrs})
    specs.sort(key=lambda s: s["number"])
    members = [(Case.from_attrs(s["attrs"]), int(s["attrs"]["seed"])) for s in specs]
    statuses = ["complete" if int(s["attrs"].get("complete", 0)) == 1 else "failed" for s in specs]
    errors = ["" if st == "complete" else "the run did not complete (complete = 0 in its file)"
              for st in statuses]
    if "complete" not in statuses:
        raise EnsembleError(f"no member in {str(directory)!r} is complete ({len(specs)} files)")
    return _combine(specs, members, statuses, errors, chunks,
                    f"xtl.open_ensemble({str(directory)!r}): {len(specs)} member files")


# ----------------------------------------------------------------------------------------
# the public function
# ----------------------------------------------------------------------------------------
#: Options of :class:`~xtl.solver.options.Output` that :func:`ensemble` sets per member.
_PER_MEMBER = ("path", "overwrite", "resume", "dns_path", "attrs", "member")


def ensemble(cases, seeds=0, schedule: Schedule | None = None, output: Output | None = None,
             execution: Execution | None = None, *, directory, cluster: Cluster | None = None,
             **kwargs) -> xr.Dataset:
    """Run an ensemble of simulations on a dask cluster and open it as one Dataset.

    Every pair of a case in ``cases`` and a seed in ``seeds`` is one member,
    run by :func:`~xtl.solver.simulate` in a task of a ``dask.distributed``
    cluster and written atomically to its own netCDF file in ``directory``.
    The options come as objects, as single keywords (``t_end=50.0``,
    ``les=dict(n_les=64)``, ``client=client``, ...), or both (keywords win).

    Parameters
    ----------
    cases : Case, str or list of them
        The flows (a :class:`~xtl.physics.cases.Case` or a preset name). All must
        share the stored grid (``n``, or ``n_les`` with ``les``).
    seeds : int or list of int, default 0
        Seeds of the random initial conditions: an int is one seed (one member per
        case), not a count as a sweep's ``seeds`` is; a list gives several.
    schedule : Schedule or dict
        ``t_end``, ``save_interval``, ``spin_up``, ``checkpoint_interval``,
        ``cfl_target``, ``cfl_limit``, ``check_every``: as in
        :func:`~xtl.solver.simulate`; the same for every member.
    output : Output or dict, optional
        ``les``: coarse-grain on the fly and store only ψ̄, ω̄, Π on the LES
        grid (see ``simulate(les=...)``), e.g. ``les=dict(n_les=64,
        filter="gaussian")``; ``dns_every`` then keeps every k-th DNS snapshot per
        member next to its file. ``dtype``: storage type. ``chunks``: chunks of the
        result (default about 64 MiB per variable along ``time``). The ensemble
        names and sets the member files itself (``path``, ``overwrite``,
        ``resume``, ``dns_path``, ``attrs`` and ``member`` stay at their defaults).
    execution : Execution or dict, optional
        ``fft``, ``kernels`` and ``threads`` of every member: ``threads``
        (default 1) is the FFTW threads of a member, which its FFTs use although
        dask workers set ``OMP_NUM_THREADS=1`` (see :mod:`xtl.physics.fourier`); the
        default LocalCluster then has ``cores // threads`` workers.
        ``progress``: a progress bar as members finish; default in a Jupyter
        notebook or when stderr is a terminal.
    directory : str or Path
        Folder of the member files (created if missing). On a remote cluster,
        a folder the workers and this process share.
    cluster : Cluster or dict, optional
        ``client``, ``scheduler``, ``n_workers``, ``timeout``
        (:class:`~xtl.solver.options.Cluster`), chosen in the order of the module
        docstring's *The cluster*: a given client (left open) or scheduler, the
        process's default ``Client`` (e.g. a notebook's), ``$DASK_SCHEDULER_ADDRESS``,
        else a ``LocalCluster`` of ``n_workers`` one-thread workers (default the
        cores this process may use divided by ``threads``), closed at the end.
    **kwargs
        Single options of ``schedule``, ``output``, ``execution`` and ``cluster``.

    Returns
    -------
    xarray.Dataset
        Lazy (dask) ``psi``, ``omega`` (and ``pi`` with ``les``) with dims
        ``(member, time, y, x)``; ``member`` holds the members' numbers in
        ``directory`` (see the module docstring). Along ``member``: the coordinates
        ``status`` (``"complete"``/``"failed"``), ``error`` (the failure's
        message, ``""`` otherwise), ``file``, and every case parameter or seed
        that varies across members (``Re``, ``kf``, ``beta``, ``mu``,
        ``seed``, ``case_dt``, ...); the constant ones are in ``attrs``. A
        failed member's fields are NaN (its partial file stays on disk with
        ``complete = 0``); keep the others with
        ``ds.sel(member=ds.status == "complete")``.

    Warns
    -----
    MemberFailedWarning
        When some members failed (they are also reported in ``status``/``error``).

    Raises
    ------
    EnsembleError
        When every member failed.
    TypeError, ValueError
        For bad arguments, before anything runs.

    Notes
    -----
    Members already complete in ``directory`` (same arguments) are not run
    again: a second identical call only opens the files. Members plan their
    FFTs from the FFTW wisdom shared on the machine (:mod:`xtl.physics.fourier`), so a
    member equals the same ``simulate`` call run serially, bit for bit (with
    the same ``threads``).

    Examples
    --------
    >>> ds = xtl.ensemble(["small-base", "small-re"], seeds=[0, 1], t_end=50.0,
    ...                   save_interval=0.5, spin_up=20.0, directory="runs",
    ...                   les=dict(n_les=64))                      # doctest: +SKIP
    >>> ds.pi.sel(member=ds.Re == 5000.0)                         # doctest: +SKIP
    """
    schedule, output, execution, cluster = _ensemble_options(
        schedule, output, execution, cluster, kwargs)
    members = _members(cases, seeds)
    for case, _ in members:
        step_plan(case, schedule)
    coarse_grainings, sizes = _coarse_grainings(output, members)
    if len(sizes) > 1:
        raise ValueError(f"all members must store the same grid to share one Dataset; got grid "
                         f"sizes {sorted(sizes)} (run an ensemble per grid)")
    directory = _writable_directory(directory)
    specs = _member_specs(members, directory, (schedule, output, execution), coarse_grainings)
    _assign_numbers(specs, directory)
    statuses, errors = _run_missing(specs, cluster, execution.progress)
    failed = [i for i, s in enumerate(statuses) if s != "complete"]
    if len(failed) == len(specs):
        raise EnsembleError(
            "every ensemble member failed:\n"
            + "\n".join(f"  member {i} ({specs[i]['path']}): {errors[i]}" for i in failed)
        )
    if failed:
        warnings.warn(
            f"{len(failed)} of {len(specs)} ensemble members failed and are NaN in the result "
            "(see its 'status' and 'error' coordinates): "
            + "; ".join(f"member {i}: {errors[i]}" for i in failed),
            MemberFailedWarning,
            stacklevel=2,
        )
    return _combine(specs, members, statuses, errors, output.chunks,
                    f"xtl.ensemble: {len(specs)} member files in {str(directory)!r}")


def _ensemble_options(schedule, output, execution, cluster, kwargs) -> tuple:
    """The four options objects of an :func:`ensemble` call, checked."""
    passed_on = [*SIMULATE_OPTIONS, "dns_every"]
    own = {"t_end", "save_interval", "spin_up", "les", "chunks", "progress", *Cluster.names()}
    unknown = set(kwargs) - set(passed_on) - own
    if unknown:
        raise TypeError(
            f"ensemble() got unexpected arguments {sorted(unknown)}; simulate options it "
            f"passes on are {passed_on}"
        )
    schedule, output, execution, cluster = merge_options(
        {Schedule: schedule, Output: output, Execution: execution, Cluster: cluster},
        kwargs, "ensemble")
    default = Output()
    per_member = [name for name in _PER_MEMBER if getattr(output, name) != getattr(default, name)]
    if per_member:
        raise ValueError(f"ensemble() sets {per_member} of every member itself; leave "
                         f"{'it' if len(per_member) == 1 else 'them'} at the default")
    if cluster.scheduler is not None:  # its form, before anything runs
        check_address(cluster.scheduler, "scheduler")
    if cluster.n_workers is None and execution.threads > 1:
        cluster = cluster.replace(n_workers=max(1, default_n_workers() // execution.threads))
    return schedule, output, execution, cluster


def _coarse_grainings(output, members) -> tuple[list, set]:
    """The CoarseGraining (or None) of each member, and the grid sizes they store."""
    les = output.les
    if les is None or les is False:
        if output.dns_every is not None:
            raise ValueError("dns_every only applies with les=... (the DNS is stored in full "
                             "without it)")
        return [None] * len(members), {case.n for case, _ in members}
    les = CoarseGraining.from_les(les)
    per_member = [les.for_case(case) for case, _ in members]
    return per_member, {cg.n_les for cg in per_member}


def _writable_directory(directory) -> Path:
    """``directory`` as a Path, created if missing; a NotADirectoryError if it (or an
    ancestor) is a file, a PermissionError if it is not writable."""
    directory = check_output_folder(directory, "directory")
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"directory={str(directory)!r} is not writable")
    return directory


def _run_missing(specs, cluster, progress) -> tuple[list, list]:
    """Run the members whose file is not complete; ``(statuses, errors)`` of all."""
    statuses = ["complete" if _is_complete(s["path"]) else "pending" for s in specs]
    errors = [""] * len(specs)
    todo = [i for i, s in enumerate(statuses) if s != "complete"]
    if not todo:
        return statuses, errors
    for i, result in _run_all(specs, todo, cluster, progress).items():
        statuses[i], errors[i] = result["status"], result["error"]
        if result["status"] == "complete" and not _is_complete(specs[i]["path"]):
            statuses[i] = "failed"
            errors[i] = f"the worker reported success but {specs[i]['path']} is not complete"
    return statuses, errors
