"""Output files: path checks, the writer's lock, atomic writes, dead writers' temporaries swept.

A writer holds the lock of its output (:func:`output_lock`, a ``flock`` on
``<path>.lock`` naming the holder's PID; :func:`xtl.data.netcdf.write_dataset`
does), so a second writer is refused at once instead of mixing its data in; a
killed writer's lock does not block, and its temporary files are swept by the
next (:func:`sweep_stale_temps`). Files are written through
:func:`atomic_path`: renamed into place when complete, with the mode a plain
``open`` gives (``0o666`` less the umask). Folders that are one output, such as
zarr stores (``.zarr``, :func:`is_store_path`), are written through
:func:`atomic_folder` the same way.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import secrets
import shutil
import socket
import stat
import threading
import time
import warnings
from pathlib import Path

__all__ = ["check_output_path", "check_output_folder", "OutputLockedError", "lock_path",
           "output_lock", "atomic_path", "atomic_folder", "write_text_atomically",
           "sweep_stale_temps", "STORE_SUFFIXES", "is_store_path"]

#: Suffixes of outputs that are folders written whole (a zarr store is a folder of chunks).
STORE_SUFFIXES = (".zarr",)


def is_store_path(path) -> bool:
    """Whether ``path`` names a folder-like store (its suffix is one of :data:`STORE_SUFFIXES`)."""
    return Path(path).suffix.lower() in STORE_SUFFIXES


def check_output_path(path, overwrite: bool, argument: str = "path") -> Path:
    """Validate an output file's path before any work is done.

    A path that names a store (``.zarr``, :func:`is_store_path`) is an output
    folder: an existing folder is replaced (with ``overwrite``), a file there is refused.

    Parameters
    ----------
    overwrite : bool
        Whether an existing file (or store) may be replaced.
    argument : str
        Name of the argument, for the error message.

    Raises
    ------
    IsADirectoryError
        If ``path`` is a folder (with or without ``overwrite``: a file is needed),
        unless it names a store.
    NotADirectoryError
        If ``path`` names a store and is a file.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    NotADirectoryError
        If its folder is a file.
    PermissionError / FileNotFoundError
        If its folder does not exist or is not writable.
    """
    path = Path(path)
    store = is_store_path(path)
    if store and path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"{argument}={str(path)!r} is a file; a {path.suffix} store is a folder")
    if path.is_dir() and not store:
        raise IsADirectoryError(
            f"{argument}={str(path)!r} is a folder; the output is a file (e.g. "
            f"{str(path / 'out.nc')!r})"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{argument}={str(path)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(
            f"{argument}={str(path)!r}: {str(folder)!r} is a file, not a folder")
    if not folder.is_dir():
        _refuse_unreachable(folder, path, argument)
        raise FileNotFoundError(f"{argument}={str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"{argument}={str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def _refuse_unreachable(folder, path, argument) -> None:
    """Raise OSError naming ``path`` if ``folder`` cannot be looked up at all (a symlink
    loop, a name too long) rather than being absent."""
    try:
        os.stat(folder)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENAMETOOLONG):
            raise OSError(err.errno, f"{argument}={str(path)!r}: {os.strerror(err.errno)}",
                          str(folder)) from None


def check_output_folder(path, argument: str = "out") -> Path:
    """Validate an output folder's path before any work is done.

    The folder may exist (its outputs are resumed or replaced by the caller) or not
    (it is made with its parents); it must not be a file, nor lie under one, and its
    nearest existing ancestor must be writable.

    Parameters
    ----------
    argument : str
        Name of the argument, for the error message.

    Raises
    ------
    NotADirectoryError
        If ``path`` or one of its ancestors is a file.
    PermissionError
        If the folder (or where it would be made) is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{argument}={str(path)!r} is a file; the output is a folder")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{argument}={str(path)!r}: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{argument}={str(path)!r}: {str(existing)!r} is not writable")
    return path


class OutputLockedError(BlockingIOError):
    """An output that another process (or thread) is writing: :func:`output_lock` is held."""


#: Locks this process holds: ``{(pid, thread, lock file): depth}`` (re-entrant within a thread).
_HELD: dict = {}
_HELD_GUARD = threading.Lock()
#: The names of temporary files: ``<target>.<8 characters>.tmp[.<suffix>]`` (:func:`atomic_path`,
#: and :func:`tempfile.mkstemp` as xtl used it), ``<target>.final.tmp``
#: (:class:`xtl.data.stream.SnapshotStream`).
_TEMP_NAME = re.compile(r"^(?P<target>.+)\.(?:[a-z0-9_]{8}|final)\.tmp(?:\.[A-Za-z0-9]+)?$")


def lock_path(path) -> Path:
    """The lock file of an output: ``<path>.lock`` beside it (a folder's beside the folder)."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _held_here(lock: Path) -> bool:
    """True if a thread of this process holds ``lock``."""
    with _HELD_GUARD:
        return any(pid == os.getpid() and held == str(lock) for pid, _, held in _HELD)


def _holder(lock: Path) -> str:
    """Who holds ``lock``, from the PID and host it wrote into it."""
    try:
        pid, _, host = lock.read_text().strip().partition(" ")
    except OSError:
        pid, host = "", ""
    if not pid:
        return "another process (its PID is not written yet)"
    here = "this process" if pid == str(os.getpid()) and host == socket.gethostname() else ""
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {pid}{where}" + (f" ({here})" if here else "")


def _try_flock(lock: Path, timeout: float):
    """An open descriptor of ``lock`` holding its exclusive flock, or None if another holds it."""
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
            continue
        except OSError as err:  # a file system without flock (some NFS/Lustre mounts)
            os.close(fd)
            raise NotImplementedError(str(err)) from None
        try:  # the file we locked may have been removed by a holder releasing it
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _take(fd: int, key: tuple) -> bool:
    """Write this process into the lock file ``fd`` now held; True if a dead holder's was there."""
    stale = os.pread(fd, 64, 0).strip() != b""  # a holder that released removed the file
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    with _HELD_GUARD:
        _HELD[key] = 1
    return stale


def _release(fd: int, lock: Path, key: tuple) -> None:
    """Remove the lock file, then release its flock (in this order: see :func:`_try_flock`)."""
    with _HELD_GUARD:
        _HELD.pop(key, None)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock)
    os.close(fd)


@contextlib.contextmanager
def _nested(key: tuple, lock: Path):
    with _HELD_GUARD:
        _HELD[key] += 1
    try:
        yield lock
    finally:
        with _HELD_GUARD:
            _HELD[key] -= 1


@contextlib.contextmanager
def output_lock(path, *, timeout: float = 0.0):
    """Hold the exclusive lock of an output while writing it: a second writer is refused.

    The lock is an exclusive ``flock`` on ``<path>.lock`` (:func:`lock_path`),
    which holds the holder's PID and host so that a refused writer can name it.
    The kernel releases a flock when its process dies, however it dies, so the
    lock file of a killed process does not block the next writer: that one
    takes the lock over and removes the dead writer's temporary files of
    ``path`` (those :func:`sweep_stale_temps` removes, not ``.part`` files).
    The lock is released, and its file removed, when the block ends, even on
    an error. Re-entrant within a thread; another thread of the same process
    is refused like another process. On a file system without flock, it warns
    and writes unlocked.

    Parameters
    ----------
    path : str or Path
        The output (a file, or a folder for a whole pipeline).
    timeout : float, default 0
        Seconds to wait for another holder to finish before giving up.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputLockedError
        If another process or thread holds the lock (after ``timeout`` seconds).
    """
    target = Path(path).absolute()
    lock = lock_path(target)
    key = (os.getpid(), threading.get_ident(), str(lock))
    if key in _HELD:
        with _nested(key, lock):
            yield lock
        return
    try:
        fd = _try_flock(lock, float(timeout))
    except NotImplementedError as err:
        warnings.warn(f"{lock}: cannot lock ({err}); writing {path} unlocked", stacklevel=3)
        fd = -1
    if fd is None:
        raise OutputLockedError(f"{path} is being written by {_holder(lock)}; wait for it or stop "
                                f"it (lock file {lock})")
    if fd == -1:
        yield lock
        return
    try:
        if _take(fd, key):
            _remove_temps(target, parts=False)
        yield lock
    finally:
        _release(fd, lock, key)


def write_text_atomically(path, text: str) -> Path:
    """Write ``text`` to ``path`` through :func:`atomic_path` (all or nothing); return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextlib.contextmanager
def atomic_path(path, *, suffix: str = ""):
    """A temporary path to write ``path`` through: renamed to ``path`` on success, removed on error.

    The temporary file ``<path>.<8 hex digits>.tmp<suffix>`` is created (empty)
    in the folder of ``path``, so the rename is atomic: a reader sees the old
    file or the new one, never half of one, and a failed write leaves the old
    file untouched. The new file gets the mode of a file created by a plain
    ``open``: ``0o666`` less the process's umask (group-readable with the
    usual umask 022, group-writable with 002), whatever the writer used.

    Parameters
    ----------
    suffix : str, optional
        End of the temporary name, for writers that pick the format from it
        (e.g. ``".keras"``, ``".png"``).

    Yields
    ------
    Path
        The temporary file, to write (writers that refuse an existing file
        should remove it first).

    Examples
    --------
    >>> with atomic_path("manifest.json") as tmp:          # doctest: +SKIP
    ...     tmp.write_text(json.dumps(manifest))
    """
    path = Path(path)
    if suffix and not re.fullmatch(r"\.[A-Za-z0-9]+", suffix):
        raise ValueError(f"suffix must be a dot and letters or digits, e.g. '.keras'; got {suffix!r}")
    while True:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    mode = stat.S_IMODE(os.fstat(fd).st_mode)  # 0o666 less the umask
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: the file system cannot swap
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_folder(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``, the folder there (if any) removed after the swap."""
    if not path.exists():
        os.rename(new, path)
        return
    if _exchange(new, path):  # ``new`` now holds the old store
        shutil.rmtree(new)
        return
    old = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    os.rename(path, old)  # not atomic here: for an instant neither exists
    os.rename(new, path)
    shutil.rmtree(old)


@contextlib.contextmanager
def atomic_folder(path):
    """A temporary folder to write the folder ``path`` (a zarr store) through: put in place
    on success, removed on error.

    The empty folder ``<path>.<8 hex digits>.tmp`` is made beside ``path``; when the
    block ends it replaces ``path``: by an atomic swap where the file system has one
    (Linux ``renameat2``), so a reader sees the old store or the new one, never half
    of one, and a failed write leaves the old store untouched. Its temporary name is
    that of :func:`atomic_path`, so a killed writer's folder is swept like a file.

    Yields
    ------
    Path
        The temporary folder (empty), to write.
    """
    path = Path(path)
    while True:
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _temps_by_target(path: Path, parts: bool) -> dict:
    """``{target: [its temporary files]}`` in folder ``path``, or of the one target ``path``."""
    whole = path.is_dir() and not is_store_path(path)  # a folder of outputs, not one store
    folder, only = (path, None) if whole else (path.parent, path.name)
    found = {}
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        target = match["target"] if match else None
        if parts and entry.name.endswith((".part", ".ckpt.npz")):
            target = entry.name.rsplit(".", 2 if entry.name.endswith(".npz") else 1)[0]
        if target is not None and only in (None, target):
            found.setdefault(folder / target, []).append(entry)
    return found


def _remove_temps(target: Path, parts: bool) -> list:
    """Remove the temporary files of ``target`` (the caller holds its lock); return them."""
    removed = []
    for temp in _temps_by_target(target, parts).get(target, []):
        with contextlib.suppress(FileNotFoundError):
            if temp.is_dir() and not temp.is_symlink():
                shutil.rmtree(temp)
            else:
                temp.unlink()
            removed.append(temp)
    return removed


def sweep_stale_temps(path, *, parts: bool = False) -> list:
    """Remove the temporary files of writers that died, never those of a live writer.

    The rule: a temporary file of an output ``<target>`` (``<target>.<8
    characters>.tmp[.<suffix>]`` of :func:`atomic_path`, ``<target>.final.tmp``
    of :class:`xtl.data.stream.SnapshotStream`) is stale when ``<target>.lock`` exists and no
    process holds it: its writer took the lock (:func:`output_lock`) and died
    before releasing it, as only a killed process does. The sweep takes that
    lock while it removes the files, so no writer starts meanwhile (one that
    starts at that very moment is refused as by any holder). The next writer
    of the output sweeps them too, when it takes the lock over. A temporary
    file without a lock file is kept (a writer that does not lock may be live).

    Parameters
    ----------
    path : str or Path
        A folder (every output in it) or one output file.
    parts : bool, default False
        Also remove ``<target>.part`` and ``<target>.ckpt.npz`` of a dead
        writer: the snapshots and checkpoint of an interrupted
        :func:`xtl.simulate`, which a restart resumes from. Off by default, so
        nothing resumable is lost.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    if not path.exists() and not path.parent.is_dir():
        return []
    removed = []
    for target in sorted(_temps_by_target(path.absolute(), parts)):
        lock = lock_path(target)
        if not lock.exists() or _held_here(lock):
            continue
        try:
            fd = _try_flock(lock, 0.0)
        except NotImplementedError:
            fd = None  # no flock: no telling whether the writer is live
        if fd is None:
            continue  # a live writer
        key = (os.getpid(), threading.get_ident(), str(lock))
        try:
            _take(fd, key)
            removed += _remove_temps(target, parts)
        finally:
            _release(fd, lock, key)
    return removed
