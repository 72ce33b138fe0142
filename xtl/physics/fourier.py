r"""The Fourier layer: the grid, exact wavenumbers, planned FFTs and spectral operators.

Everything spectral in xtl is built on this module: the solver, the
coarse-graining, the LES closures and the spectra. It imports nothing from the
rest of xtl.

Conventions (see ``docs/conventions.md``):

* physical arrays have shape ``(..., n, n)`` with axes ``(y, x)`` and points
  ``x_i = i·2π/n``;
* spectral arrays are the unnormalized ``rfft2`` of those, shape
  ``(..., n, n//2 + 1)``: ``ky`` runs in ``fftfreq`` order on axis -2 and
  ``kx = 0..n/2`` on axis -1; the inverse divides by ``n²``;
* wavenumbers are exact integers (:func:`wavenumbers`), so masks and filters
  are symmetric in x and y for every n.

Operators (all on spectra of one grid): ψ̂ = ω̂/k² (:meth:`SpectralGrid.streamfunction`),
û = ik_yψ̂, v̂ = −ik_xψ̂ (:meth:`SpectralGrid.velocity`), ∂/∂x, ∂/∂y
(:meth:`SpectralGrid.gradient`), the advection term N(ω, ψ) = u∂ω/∂x + v∂ω/∂y in 4 FFTs
(:class:`Jacobian`), filters' transfer functions (:func:`transfer_function`) and moving
coefficients between grids (:func:`resize_spectrum`).

FFTs
----
Two backends give the same numbers to ~1e-15: ``"pyfftw"`` (FFTW plans,
threads) and ``"numpy"`` (``numpy.fft``). ``"auto"`` picks pyfftw when it
imports. FFTW plans are single-field (measured faster than batched plans of
several fields on the grids xtl uses) and, with the default planner
``FFTW_MEASURE``, are *measured once per machine* and kept as FFTW wisdom in
:func:`cache_dir` (``$XTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/xtl`` or
``~/.cache/xtl``); every process then builds its plans from that wisdom with
``FFTW_WISDOM_ONLY``, so all processes use the same algorithm and round the
same way: a run restarted in a new process is bit-identical to an uninterrupted
one. The wisdom file is written atomically (a temporary file renamed over it)
under a file lock, so processes that plan at the same time agree on one plan.
Deleting the file makes the next process measure again (possibly another
plan). Where the cache cannot be written, plans fall back to ``FFTW_ESTIMATE``
(deterministic, slower) with a warning.

Threads
-------
pyfftw's FFTW threads are OpenMP threads: FFTW splits a transform into
``threads`` chunks and runs them in an OpenMP parallel loop whose team size is
the calling thread's OpenMP limit, which ``OMP_NUM_THREADS`` sets (dask workers
set it to 1). A 2-thread plan would then silently run on one core. Before it
executes a plan of ``threads > 1``, :class:`FFTPlan` raises the calling
thread's limit in the OpenMP runtime that FFTW uses to at least ``threads``
(only that runtime: other OpenMP libraries keep ``OMP_NUM_THREADS``), and
warns once if it cannot (:func:`fftw_openmp_threads` reports the limit).
Importing this module also sets ``OMP_WAIT_POLICY=PASSIVE`` unless it is set:
OpenMP's default spinning threads made 2-thread steps 10–50× slower on shared
cores (it only takes effect if pyfftw was not imported before xtl).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

# FFTW's threads are OpenMP threads; by default OpenMP keeps idle threads spinning, which
# on shared cores (dask workers, other jobs) made 2-thread steps 10-50x slower. Passive
# threads sleep. libgomp reads this when it loads (with pyfftw, just below), so it takes
# effect unless pyfftw was imported before xtl or the variable is set already.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # pragma: no cover - exercised where pyfftw is installed
    import pyfftw

    _HAVE_PYFFTW = True
except ImportError:  # pragma: no cover
    pyfftw = None
    _HAVE_PYFFTW = False

try:  # pragma: no cover - exercised where numba is installed
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover
    numba = None
    HAVE_NUMBA = False

__all__ = [
    "domain_length",
    "check_length",
    "wavenumber_units",
    "wavenumbers",
    "axis_wavenumbers",
    "available_fft_backends",
    "available_kernels",
    "resolve_kernels",
    "cache_dir",
    "fftw_openmp_threads",
    "FFTPlan",
    "SpectralGrid",
    "Jacobian",
    "FILTERS",
    "FILTER_FORMULAS",
    "register_filter",
    "transfer_function",
    "resize_spectrum",
    "PLANNERS",
    "DEFAULT_PLANNER",
    "STATE_FIELDS",
    "state_bytes",
    "machine_memory",
    "format_bytes",
]

#: FFTW planning efforts accepted by :class:`SpectralGrid`.
PLANNERS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT")
#: The default: measured once per machine, then reloaded from wisdom.
DEFAULT_PLANNER = "FFTW_MEASURE"


# ----------------------------------------------------------------------------------------
# wavenumbers
# ----------------------------------------------------------------------------------------
def axis_wavenumbers(n: int) -> np.ndarray:
    """Integer wavenumbers of an ``n``-point periodic axis in ``fftfreq`` order.

    ``0, 1, …, (n−1)//2, −n//2, …, −1`` (for even n, index n/2 holds −n/2, as in
    :func:`numpy.fft.fftfreq`), computed with integer arithmetic, so they are
    exact for every n (``fftfreq(n, 1/n)`` is not: it gives 32.00000000000001
    for n = 98).

    Parameters
    ----------
    n : int
        Points of the axis (>= 1).

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    n = _check_size(n, "n", minimum=1, even=False)
    k = np.arange(n, dtype=np.int64)
    k[(n + 1) // 2:] -= n
    return k


def wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer ``(ky, kx)`` of the ``rfft2`` layout of an ``n × n`` grid.

    Returns
    -------
    ky : ndarray of int64, shape (n,)
        :func:`axis_wavenumbers` (axis -2 of a spectrum).
    kx : ndarray of int64, shape (n//2 + 1,)
        ``0 … n//2`` (axis -1).
    """
    return axis_wavenumbers(n), np.arange(_check_size(n, "n", 1, False) // 2 + 1, dtype=np.int64)


# ----------------------------------------------------------------------------------------
# the domain length of gridded data
# ----------------------------------------------------------------------------------------
#: Relative tolerance within which a domain length is taken as exactly 2π (xtl's own
#: grids, also when their coordinates were stored in float32), and within which
#: coordinate spacings, ``Ly`` and ``Lx``, or ``L=`` and the coordinates must agree.
LENGTH_RTOL = 1e-6


def check_length(L, name: str = "L") -> float | None:
    """``L`` (the side of the periodic domain) as a positive finite float, or None.

    Raises
    ------
    TypeError, ValueError
        Not a real number, or not finite and > 0.
    """
    if L is None:
        return None
    if isinstance(L, bool) or not isinstance(L, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a positive number (the domain length), got {L!r}")
    L = float(L)
    if not (np.isfinite(L) and L > 0):
        raise ValueError(f"{name} must be a finite number > 0 (the domain length), got {L}")
    return L


def _snap(L: float) -> float:
    """``L``, or exactly 2π when it is 2π to :data:`LENGTH_RTOL`."""
    return 2 * np.pi if abs(L / (2 * np.pi) - 1.0) <= LENGTH_RTOL else L


def _axis_length(obj, dim: str, name: str) -> float | None:
    """``N·spacing`` of the evenly spaced coordinate ``dim`` of ``obj``, or None without one."""
    if dim not in obj.coords:
        return None
    c = np.asarray(obj[dim].values)
    if not np.issubdtype(c.dtype, np.number) or np.issubdtype(c.dtype, np.complexfloating):
        raise ValueError(f"{name}: coordinate {dim!r} must be real numbers (evenly spaced "
                         f"points of the periodic domain); got dtype {c.dtype}")
    n = c.size
    if n < 2:
        raise ValueError(f"{name}: dim {dim!r} must have at least 2 points; got {n}")
    c = c.astype(float)
    step = np.diff(c)
    spacing = (c[-1] - c[0]) / (n - 1)
    if not (spacing > 0 and np.allclose(step, spacing, rtol=LENGTH_RTOL, atol=0)):
        raise ValueError(
            f"{name}: coordinate {dim!r} must be evenly spaced increasing points x0 + i·L/N "
            f"of a periodic domain of length L; got spacings in [{step.min():.6g}, "
            f"{step.max():.6g}]. A grid that includes both ends of the period is not periodic."
        )
    return n * spacing


def domain_length(obj, L=None, *, name: str = "obj") -> float:
    """The side ``L`` of the square periodic domain of gridded data.

    Read from the evenly spaced coordinates ``y``, ``x`` (``L = N·spacing``; the
    points may start anywhere, e.g. at cell centres ``(i+½)·L/N``), or given as
    ``L``; both given, they must agree. A length within :data:`LENGTH_RTOL` of 2π is
    returned as exactly 2π (xtl's own grids ``i·2π/N``).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Data with dims ``y`` and ``x``.
    L : float, optional
        The domain length, in the units of the coordinates.
    name : str
        What to call ``obj`` in error messages.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        No coordinates and no ``L``; unevenly spaced coordinates; ``Ly != Lx``
        (square domains only); ``L`` disagreeing with the coordinates.
    TypeError
        ``L`` not a number.
    """
    L = check_length(L)
    lengths = {d: _axis_length(obj, d, name) for d in ("y", "x") if d in obj.dims}
    found = {d: v for d, v in lengths.items() if v is not None}
    if len(found) == 2 and not np.isclose(found["y"], found["x"], rtol=LENGTH_RTOL, atol=0):
        raise ValueError(f"{name}: the domain must be square (isotropic shells); its "
                         f"coordinates give Ly = {found['y']:.6g}, Lx = {found['x']:.6g}")
    if not found:
        if L is None:
            raise ValueError(f"{name} has no coordinates y, x to read the domain length "
                             "from: assign evenly spaced coordinates y, x or pass L= the "
                             "domain length")
        return _snap(L)
    from_coords = found.get("x", found.get("y"))
    if L is not None and not np.isclose(L, from_coords, rtol=LENGTH_RTOL, atol=0):
        raise ValueError(f"L={L:.6g} disagrees with the domain length {from_coords:.6g} "
                         f"of the coordinates y, x of {name} (N·spacing); pass L=None")
    return _snap(from_coords)


def wavenumber_units(units) -> str:
    """Units of a radian wavenumber of a coordinate in ``units``: ``"m"`` gives
    ``"rad m-1"``; none, ``""`` or ``"1"`` give ``"1"``."""
    if units in (None, "", "1"):
        return "1"
    units = str(units)
    return f"rad {units}-1" if units.isalnum() else f"rad ({units})-1"


#: What the solver holds for an ``n × n`` grid, counted from :class:`SpectralGrid`,
#: :class:`FFTPlan`, :class:`Jacobian` and ``xtl.solver.equations`` (Stepper, SolverState,
#: the random initial condition): ``n × n`` float64 fields (the FFT plans' real buffers
#: of the grid and the Jacobian, the forcing), ``n × (n/2+1)`` complex128 fields (the
#: plans' spectral buffers, the state and the AB2 memory, the tendency, the stepper's
#: scratch, forcing and β factors, the initial condition's temporaries) and
#: ``n × (n/2+1)`` float64 fields (k², 1/k², the mask, the Jacobian's multipliers, the
#: Crank-Nicolson factors, the β factor). A run at n = 1024 and 2048 peaks near
#: 150-165 bytes a point (``tracemalloc``, without the snapshots); this counts 160.
STATE_FIELDS = {"real": 4, "complex_spectral": 12, "real_spectral": 8}


def state_bytes(n: int) -> int:
    """Estimated bytes of the solver's state on an ``n × n`` grid (:data:`STATE_FIELDS`)."""
    spectral = n * (n // 2 + 1)
    return (8 * n * n * STATE_FIELDS["real"] + 16 * spectral * STATE_FIELDS["complex_spectral"]
            + 8 * spectral * STATE_FIELDS["real_spectral"])


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return None


def format_bytes(size: float) -> str:
    """``size`` bytes in binary units, e.g. ``"24 GiB"``, ``"160 TiB"``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")
    power = 0
    while size >= 1024 and power < len(units) - 1:
        size, power = size / 1024, power + 1
    return f"{size:.3g} {units[power]}"


def _check_size(n, name, minimum, even, memory=False):
    """``n`` as an int; with ``memory``, refuse a grid whose solver state cannot fit here."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"{name} must be an int, got {n!r}")
    n = int(n)
    if n < minimum or (even and n % 2):
        kind = "an even integer" if even else "an integer"
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {n}")
    total = machine_memory() if memory else None
    if total is not None and state_bytes(n) > total:
        raise ValueError(
            f"{name} = {n} needs ≈ {format_bytes(state_bytes(n))} for the solver state "
            f"(a {n}² grid); this machine has {format_bytes(total)}"
        )
    return n


# ----------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------
def available_fft_backends() -> list[str]:
    """Return the FFT backends that work here (``"numpy"`` always)."""
    return (["pyfftw"] if _HAVE_PYFFTW else []) + ["numpy"]


def _resolve(value: str, argument: str, fast: str, have_fast: bool) -> str:
    """``"auto"`` → ``fast`` when its package imports, else ``"numpy"``; checks the name."""
    if value == "auto":
        return fast if have_fast else "numpy"
    if value not in (fast, "numpy"):
        raise ValueError(f"{argument} must be 'auto', '{fast}' or 'numpy', got {value!r}")
    if value == fast and not have_fast:
        raise ImportError(f"{argument}='{fast}' was asked for but {fast} is not installed")
    return value


def _resolve_backend(fft: str) -> str:
    return _resolve(fft, "fft", "pyfftw", _HAVE_PYFFTW)


def available_kernels() -> list[str]:
    """Elementwise kernels that work here: ``"numba"`` (fused, compiled) and ``"numpy"``."""
    return (["numba"] if HAVE_NUMBA else []) + ["numpy"]


def resolve_kernels(kernels: str) -> str:
    """``"auto"`` → ``"numba"`` when numba imports, else ``"numpy"``; checks the name.

    Parameters
    ----------
    kernels : {"auto", "numba", "numpy"}
    """
    return _resolve(kernels, "kernels", "numba", HAVE_NUMBA)


# ----------------------------------------------------------------------------------------
# FFTW wisdom: measured once per machine, shared by every process
# ----------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """xtl's cache folder: ``$XTL_CACHE_DIR``, else ``$XDG_CACHE_HOME/xtl``, else ``~/.cache/xtl``."""
    if os.environ.get("XTL_CACHE_DIR"):
        return Path(os.environ["XTL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xtl"


def _machine_key() -> str:
    """What a plan depends on besides the problem: FFTW's build and the processor."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags")):
                    cpu += line
    version = getattr(pyfftw, "__version__", "none")
    return hashlib.sha1(f"{platform.machine()}|{version}|{cpu}".encode()).hexdigest()[:12]


def _wisdom_path() -> Path:
    return cache_dir() / f"fftw-wisdom-{_machine_key()}.json"


_PLAN_LOCK = threading.RLock()
_WARNED = set()


def _warn_once(key, message):
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def _wisdom_file():
    """Hold the wisdom file's lock; yield its path, or None when the cache is not writable."""
    path = _wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError as exc:
        _warn_once("cache", f"xtl cannot write its FFTW wisdom to {str(path)!r} ({exc}); "
                   "FFTW plans fall back to FFTW_ESTIMATE (set XTL_CACHE_DIR to a writable folder)")
        yield None
        return
    with lock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: atomic replace only
            fcntl = None
        if fcntl is not None:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _import_wisdom(path: Path) -> None:
    """Load the wisdom file ``path`` into FFTW; a file that is unreadable, truncated or of
    the wrong form (not ``{"wisdom": [str, ...]}``) is ignored with a warning."""
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text())
        wisdom = data.get("wisdom") if isinstance(data, dict) else None
        if not isinstance(wisdom, list) or not all(isinstance(w, str) for w in wisdom):
            raise ValueError(f'expected {{"wisdom": [str, ...]}}, got {type(data).__name__} '
                             f"with 'wisdom' of type {type(wisdom).__name__}")
        pyfftw.import_wisdom(tuple(w.encode("ascii") for w in wisdom))
    except (OSError, ValueError, TypeError) as exc:
        _warn_once(("corrupt", str(path)), f"ignoring unreadable FFTW wisdom {str(path)!r}: {exc}")


def _export_wisdom(path: Path) -> None:
    data = {"format": 1, "pyfftw": getattr(pyfftw, "__version__", "?"),
            "wisdom": [w.decode("ascii") for w in pyfftw.export_wisdom()]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _planned(make, planner: str):
    """``make(flags)`` → a pyfftw.FFTW whose plan comes from the shared wisdom.

    ESTIMATE plans are deterministic and need no wisdom. Other planners: use the
    wisdom this process has; else, under the file lock, import the file's; else
    measure, add the result to the file, and build the plan again from wisdom.
    """
    if planner == "FFTW_ESTIMATE":
        return make(("FFTW_ESTIMATE",))
    with _PLAN_LOCK:
        only = (planner, "FFTW_WISDOM_ONLY")
        with contextlib.suppress(RuntimeError):
            return make(only)
        with _wisdom_file() as path:
            if path is None:
                return make(("FFTW_ESTIMATE",))
            _import_wisdom(path)
            with contextlib.suppress(RuntimeError):
                return make(only)
            make((planner,))
            try:
                _export_wisdom(path)
            except OSError as exc:
                _warn_once("write", f"xtl could not save FFTW wisdom to {str(path)!r}: {exc}")
        return make(only)


# ----------------------------------------------------------------------------------------
# OpenMP threads of FFTW
# ----------------------------------------------------------------------------------------
_OMP = None


def _fftw_openmp_runtime():
    """ctypes handles of the OpenMP runtime(s) FFTW uses (pyfftw's own copy when it ships one)."""
    global _OMP
    if _OMP is not None:
        return _OMP
    libs = []
    with contextlib.suppress(OSError):
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "libgomp" in line or "libiomp" in line
                     or "libomp" in line}
        paths = sorted(p for p in paths if p.startswith("/"))
        if _HAVE_PYFFTW:
            root = os.path.dirname(os.path.dirname(os.path.abspath(pyfftw.__file__)))
            own = [p for p in paths if p.startswith(os.path.join(root, "pyfftw"))]
            paths = own or paths
        for p in paths:
            with contextlib.suppress(OSError, AttributeError):
                lib = ctypes.CDLL(p)
                lib.omp_get_max_threads.restype = ctypes.c_int
                lib.omp_set_num_threads.argtypes = [ctypes.c_int]
                libs.append(lib)
    _OMP = libs
    return libs


def fftw_openmp_threads():
    """The calling thread's OpenMP thread limit in FFTW's runtime, or None if unknown.

    A plan of ``threads`` FFTW threads runs on ``min(threads, limit)`` cores.
    """
    libs = _fftw_openmp_runtime()
    return min(lib.omp_get_max_threads() for lib in libs) if libs else None


def _ensure_openmp_threads(threads: int) -> None:
    libs = _fftw_openmp_runtime()
    if not libs:
        _warn_once("omp", "xtl could not find FFTW's OpenMP runtime: with OMP_NUM_THREADS="
                   f"{os.environ.get('OMP_NUM_THREADS')} its {threads}-thread FFTs may run on "
                   "fewer cores")
        return
    for lib in libs:
        if lib.omp_get_max_threads() < threads:
            lib.omp_set_num_threads(threads)


# ----------------------------------------------------------------------------------------
# planned FFTs
# ----------------------------------------------------------------------------------------
class FFTPlan:
    """Forward and inverse real 2D FFTs of a fixed batch shape, with buffers.

    The plan owns input/output arrays: fill :attr:`real` (shape
    ``(*batch, n, n)``) and call :meth:`forward` to get the unnormalized
    spectrum in :attr:`spec`; fill :attr:`spec` and call :meth:`inverse`
    to get ``n²`` times the field in :attr:`real` (unnormalized, like FFTW;
    callers fold ``1/n²`` into their multipliers). The inverse overwrites
    :attr:`spec`.

    Parameters
    ----------
    n : int
        Grid points per direction.
    batch : tuple of int
        Leading shape, e.g. ``()`` for one field or ``(4,)`` for four.
    fft : {"pyfftw", "numpy"}
        Backend (already resolved).
    threads : int
        FFTW threads.
    planner : {"FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT"}
        FFTW planning effort. MEASURE and PATIENT plans are measured once per
        machine and rebuilt from the saved wisdom in every process (see the
        module docstring), so every process rounds the same way.
    prune : int, optional
        Also plan *pruned* transforms for fields whose spectrum vanishes beyond the
        column ``kx = prune`` (a dealiased field and the kept modes of a product):

        * :meth:`forward` with ``pruned=True``: the real-to-complex transforms along x
          for every row, then the transforms along y only for the columns
          ``kx <= prune``; only those columns of :attr:`spec` are the transform (the
          others hold intermediate values);
        * :meth:`inverse` with ``pruned=True`` transforms :attr:`spec_in` (a buffer of
          its own, zero beyond column ``prune``, which nothing but the caller writes and
          which must stay zero there): the transforms along y of the columns
          ``kx <= prune`` in place, then the complex-to-real transforms along x, which
          keep their input. The caller writes only the columns ``kx <= prune``.
    """

    def __init__(self, n: int, batch=(), fft: str = "numpy", threads: int = 1,
                 planner: str = DEFAULT_PLANNER, prune=None):
        self.n = n
        self.backend = fft
        self.threads = int(threads)
        real_shape = tuple(batch) + (n, n)
        spec_shape = tuple(batch) + (n, n // 2 + 1)
        self.prune = None if prune is None or prune + 1 >= n // 2 + 1 else int(prune)
        self._rows = self._cols = self._inv_cols = self._inv_rows = None
        empty = pyfftw.empty_aligned if fft == "pyfftw" else np.empty
        self.real = empty(real_shape, dtype="float64")
        self.spec = empty(spec_shape, dtype="complex128")
        self.spec_in = None if self.prune is None else empty(spec_shape, dtype="complex128")
        if fft == "pyfftw":
            self._plan_fftw(planner)
        else:
            self._fwd = self._inv = None
        if self.spec_in is not None:
            self.spec_in[...] = 0  # after planning (measuring overwrites the buffers)

    def _plan_fftw(self, planner):
        kw = dict(threads=self.threads)
        if self.threads > 1:  # measure the plans on the threads they will run on
            _ensure_openmp_threads(self.threads)

        def fftw(a, b, axes, direction, extra=()):
            return _planned(lambda f: pyfftw.FFTW(a, b, axes=axes, direction=direction,
                                                  flags=f + extra, **kw), planner)

        self._fwd = fftw(self.real, self.spec, (-2, -1), "FFTW_FORWARD")
        self._inv = fftw(self.spec, self.real, (-2, -1), "FFTW_BACKWARD", ("FFTW_DESTROY_INPUT",))
        if self.prune is not None:
            cols, cols_in = self.spec[..., : self.prune + 1], self.spec_in[..., : self.prune + 1]
            self._rows = fftw(self.real, self.spec, (-1,), "FFTW_FORWARD")
            self._cols = fftw(cols, cols, (-2,), "FFTW_FORWARD")
            self._inv_cols = fftw(cols_in, cols_in, (-2,), "FFTW_BACKWARD")
            self._inv_rows = fftw(self.spec_in, self.real, (-1,), "FFTW_BACKWARD")  # keeps input

    def forward(self, pruned: bool = False) -> np.ndarray:
        """``spec = rfft2(real)`` (unnormalized); returns :attr:`spec`.

        With ``pruned`` (and a plan made with ``prune``), only the columns
        ``kx <= prune`` of the result are the transform.
        """
        if self._fwd is None:
            self.spec[...] = np.fft.rfft2(self.real)
            return self.spec
        if self.threads > 1:
            _ensure_openmp_threads(self.threads)
        if pruned and self._rows is not None:
            self._rows.execute()
            self._cols.execute()
        else:
            self._fwd.execute()
        return self.spec

    def inverse(self, pruned: bool = False) -> np.ndarray:
        """``real = n² · irfft2(spec)`` (unnormalized); returns :attr:`real`.

        With ``pruned`` (and a plan made with ``prune``) the input is :attr:`spec_in`
        instead, which keeps its zero columns; :attr:`spec` is overwritten otherwise.
        """
        source = self.spec_in if pruned and self.spec_in is not None else self.spec
        if self._inv is None:
            self.real[...] = np.fft.irfft2(source, s=(self.n, self.n))
            self.real *= self.n * self.n
            return self.real
        if self.threads > 1:
            _ensure_openmp_threads(self.threads)
        if source is self.spec_in:
            self._inv_cols.execute()
            self._inv_rows.execute()
        else:
            self._inv.execute()
        return self.real


# ----------------------------------------------------------------------------------------
# the grid
# ----------------------------------------------------------------------------------------
class SpectralGrid:
    """A doubly periodic ``n × n`` grid on [0, 2π)² with its wavenumbers and FFTs.

    Parameters
    ----------
    n : int
        Points per direction; even and ≥ 8, and small enough that the solver's state
        (:func:`state_bytes`) fits in this machine's memory (:func:`machine_memory`):
        a larger ``n`` raises a ValueError with the estimate, before anything is allocated.
    dealias : bool, default True
        Whether :attr:`mask` applies the 2/3 rule. With or without it the mask
        removes the mean (k = 0) and the Nyquist modes.
    fft : {"auto", "pyfftw", "numpy"}
        FFT backend.
    threads : int, default 1
        FFTW threads. One is the default because FFTW's threads spin and
        collapse when the cores are shared (dask workers, other jobs).
    planner : {"FFTW_MEASURE", "FFTW_PATIENT", "FFTW_ESTIMATE"}, optional
        FFTW planning effort; default ``$XTL_FFTW_PLANNER`` or ``"FFTW_MEASURE"``
        (measured once per machine and reloaded from wisdom: see the module docstring).

    Attributes
    ----------
    x, y : ndarray
        Cell points ``i·2π/n``.
    kx, ky : ndarray of float
        Exact integer radian wavenumbers (:func:`wavenumbers`), broadcastable to
        the spectral shape ``(n, n//2+1)``: ``kx`` is ``(1, n//2+1)``, ``ky`` ``(n, 1)``.
    k2 : ndarray
        ``kx² + ky²``.
    inv_k2 : ndarray
        ``1/k²`` with 0 at k = 0 (so ψ̂ = ω̂·inv_k2 has zero mean).
    mask : ndarray of float
        1 on kept modes, 0 on removed ones (mean, Nyquist, and with
        ``dealias`` every mode with ``max(|kx|, |ky|) > kmax``).
    kmax : int
        Largest kept wavenumber per direction: ``(n-1)//3`` with dealiasing
        (the 2/3 rule, so that products of kept modes never alias onto kept
        modes), ``n/2 - 1`` without.
    """

    def __init__(self, n: int, dealias: bool = True, fft: str = "auto", threads: int = 1,
                 planner=None):
        self.n = _check_size(n, "n", 8, True, memory=True)
        self.dealias = bool(dealias)
        self.fft = _resolve_backend(fft)
        if planner is None:
            planner = os.environ.get("XTL_FFTW_PLANNER") or DEFAULT_PLANNER
        if planner not in PLANNERS:
            raise ValueError(f"planner must be one of {list(PLANNERS)}, got {planner!r}")
        self.planner = planner
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        self.threads = int(threads)
        self.length = 2 * np.pi
        self.dx = self.length / self.n
        self.x = np.arange(self.n) * self.dx
        self.y = self.x.copy()
        ky, kx = wavenumbers(self.n)
        self.kx = kx.astype(float)[None, :]
        self.ky = ky.astype(float)[:, None]
        self.k2 = self.kx**2 + self.ky**2
        self.inv_k2 = np.divide(1.0, self.k2, out=np.zeros_like(self.k2), where=self.k2 > 0)
        self.kmax = (self.n - 1) // 3 if self.dealias else self.n // 2 - 1
        keep = (np.abs(self.kx) <= self.kmax) & (np.abs(self.ky) <= self.kmax) & (self.k2 > 0)
        self.mask = keep.astype(float)
        self._plans = {}

    @property
    def spectral_shape(self) -> tuple:
        """Shape of one spectral field, ``(n, n//2 + 1)``."""
        return (self.n, self.n // 2 + 1)

    # -- FFTs ------------------------------------------------------------------------------
    def new_plan(self, batch=(), prune=None) -> FFTPlan:
        """A new :class:`FFTPlan` (own buffers) of this grid's backend, threads and planner."""
        return FFTPlan(self.n, tuple(batch), self.fft, self.threads, self.planner, prune)

    def plan(self, batch=()) -> FFTPlan:
        """Return a (cached, shared) :class:`FFTPlan` for ``batch`` fields at once."""
        batch = tuple(batch)
        if batch not in self._plans:
            self._plans[batch] = self.new_plan(batch)
        return self._plans[batch]

    def rfft2(self, field: np.ndarray) -> np.ndarray:
        """Unnormalized real FFT over the last two axes (returns a new array).

        Leading axes are transformed one field at a time with the single-field plan.
        """
        field = np.asarray(field, dtype=float)
        self._check_physical(field, "field")
        if self.fft == "numpy":
            return np.fft.rfft2(field)
        plan = self.plan()
        out = np.empty(field.shape[:-2] + self.spectral_shape, dtype=complex)
        for index in np.ndindex(*field.shape[:-2]):
            plan.real[...] = field[index]
            out[index] = plan.forward()
        return out

    def irfft2(self, spec: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`rfft2` (normalized; returns a new array)."""
        spec = np.asarray(spec, dtype=complex)
        if spec.shape[-2:] != self.spectral_shape:
            raise ValueError(
                f"spec must have trailing shape {self.spectral_shape}, got {spec.shape}"
            )
        if self.fft == "numpy":
            return np.fft.irfft2(spec, s=(self.n, self.n))
        plan = self.plan()
        out = np.empty(spec.shape[:-2] + (self.n, self.n))
        scale = 1.0 / (self.n * self.n)
        for index in np.ndindex(*spec.shape[:-2]):
            plan.spec[...] = spec[index]
            np.multiply(plan.inverse(), scale, out=out[index])
        return out

    def _check_physical(self, field, name):
        if field.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"{name} must have trailing shape ({self.n}, {self.n}) (y, x), got {field.shape}"
            )

    # -- operators -------------------------------------------------------------------------
    def streamfunction(self, omega_hat: np.ndarray) -> np.ndarray:
        """ψ̂ from ω̂ by ∇²ψ = −ω (zero-mean ψ)."""
        return omega_hat * self.inv_k2

    def velocity(self, psi_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(û, v̂) = (i ky ψ̂, −i kx ψ̂)``: u = ∂ψ/∂y, v = −∂ψ/∂x."""
        return 1j * self.ky * psi_hat, -1j * self.kx * psi_hat

    def gradient(self, spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(∂f/∂x, ∂f/∂y)`` spectrally: ``(i kx f̂, i ky f̂)``."""
        return 1j * self.kx * spec, 1j * self.ky * spec

    def divergence(self, fx_hat: np.ndarray, fy_hat: np.ndarray) -> np.ndarray:
        """``∂fx/∂x + ∂fy/∂y`` of spectral fluxes."""
        return 1j * self.kx * fx_hat + 1j * self.ky * fy_hat

    def mode_sums(self, spec: np.ndarray) -> np.ndarray:
        """Σ over all modes of a real-field rfft quantity (counts kx>0 twice).

        ``mode_sums(|f̂|²)/n⁴`` is the spatial mean of ``f²`` (Parseval).
        """
        weights = np.full(self.n // 2 + 1, 2.0)
        weights[0] = 1.0
        weights[-1] = 1.0
        return np.sum(spec * weights, axis=(-2, -1))

    def energy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Kinetic energy ½⟨u² + v²⟩ = ½ Σ k²|ψ̂|² / n⁴."""
        return 0.5 * self.mode_sums(self.k2 * np.abs(self.streamfunction(omega_hat)) ** 2) / self.n**4

    def enstrophy(self, omega_hat: np.ndarray) -> np.ndarray:
        """Enstrophy ½⟨ω²⟩ = ½ Σ |ω̂|² / n⁴."""
        return 0.5 * self.mode_sums(np.abs(omega_hat) ** 2) / self.n**4

    def advection(self, omega_hat: np.ndarray) -> np.ndarray:
        """N̂ of ω̂ (ψ̂ = ω̂/k²) on the kept modes, by :class:`Jacobian` (leading axes allowed)."""
        omega_hat = np.asarray(omega_hat, dtype=complex)
        jac = self._jacobian()
        out = np.empty(omega_hat.shape, dtype=complex)
        for index in np.ndindex(*omega_hat.shape[:-2]):
            jac(omega_hat[index], out=out[index], multiplier=jac.omega_multiplier)
        return out

    def _jacobian(self):
        if "jacobian" not in self._plans:
            self._plans["jacobian"] = Jacobian(self)
        return self._plans["jacobian"]


# ----------------------------------------------------------------------------------------
# elementwise kernels of the Jacobian (numpy reference and fused numba versions)
# ----------------------------------------------------------------------------------------
def _velocity_spectra_np(spec, mult, ky, kx, kmax, last, out_u, out_v):
    """``out_u = i ky (mult·spec)``, ``out_v = −i kx (mult·spec)`` on the columns ``<= last``.

    ``ky`` is (n, 1), ``kx`` (1, m). ``mult`` must vanish beyond ``kmax`` in x and y (the
    fused version writes zeros there without reading).
    """
    cols = slice(0, last + 1)
    a = spec[:, cols] * mult[:, cols]
    np.multiply(a, 1j * ky, out=out_u[:, cols])
    np.multiply(a, -1j * kx[:, cols], out=out_v[:, cols])


def _products_np(a, b, measure):
    """In place: ``a ← u·v``, ``b ← v² − u²`` for ``a = u``, ``b = v``; optionally max|u|, max|v|."""
    umax = vmax = 0.0
    if measure:
        umax, vmax = float(np.max(np.abs(a))), float(np.max(np.abs(b)))
    diff = (b - a) * (b + a)
    np.multiply(a, b, out=a)
    b[...] = diff
    return umax, vmax


def _combine_np(P, Q, ky, kx, kmax, out):
    """``out = (ky² − kx²) P − kx ky Q`` on ``|ky|, kx <= kmax``, 0 elsewhere."""
    out[...] = ((ky * ky - kx * kx) * P - (kx * ky) * Q) * ((np.abs(ky) <= kmax) & (kx <= kmax))
    return out


if HAVE_NUMBA:  # pragma: no branch
    _JIT = dict(cache=True, nogil=True, error_model="numpy")

    # complex arrays are passed as float64 views (n, 2m): real and imaginary parts side by
    # side, so the loops are plain float arithmetic (the same operations, in the same
    # order, as numpy's complex ones: the two paths agree to round-off)
    @numba.njit(**_JIT)
    def _velocity_spectra_nbf(spec, mult, ky, kx, kmax, last_col, out_u, out_v):  # pragma: no cover
        n = mult.shape[0]
        for i in range(n):
            kyi = ky[i]
            last = kmax if abs(kyi) <= kmax else -1  # mult is 0 beyond kmax: write zeros
            for j in range(last_col + 1):
                if j <= last:
                    sr = spec[i, 2 * j] * mult[i, j]
                    si = spec[i, 2 * j + 1] * mult[i, j]
                    out_u[i, 2 * j] = -kyi * si
                    out_u[i, 2 * j + 1] = kyi * sr
                    out_v[i, 2 * j] = kx[j] * si
                    out_v[i, 2 * j + 1] = -kx[j] * sr
                else:
                    out_u[i, 2 * j] = 0.0
                    out_u[i, 2 * j + 1] = 0.0
                    out_v[i, 2 * j] = 0.0
                    out_v[i, 2 * j + 1] = 0.0

    @numba.njit(**_JIT)
    def _products_nb(a, b, measure):  # pragma: no cover - compiled
        n, m = a.shape
        umax = 0.0
        vmax = 0.0
        if measure:
            for i in range(n):
                for j in range(m):
                    umax = max(umax, abs(a[i, j]))
                    vmax = max(vmax, abs(b[i, j]))
        for i in range(n):
            for j in range(m):
                u = a[i, j]
                v = b[i, j]
                a[i, j] = u * v
                b[i, j] = (v - u) * (v + u)
        return umax, vmax

    @numba.njit(**_JIT)
    def _combine_nbf(P, Q, ky, kx, kmax, out):  # pragma: no cover - compiled
        n = out.shape[0]
        m = out.shape[1] // 2
        for i in range(n):
            kyi = ky[i]
            last = kmax if abs(kyi) <= kmax else -1
            for j in range(m):
                if j <= last:
                    a = kyi * kyi - kx[j] * kx[j]
                    b = kx[j] * kyi
                    out[i, 2 * j] = a * P[i, 2 * j] - b * Q[i, 2 * j]
                    out[i, 2 * j + 1] = a * P[i, 2 * j + 1] - b * Q[i, 2 * j + 1]
                else:
                    out[i, 2 * j] = 0.0
                    out[i, 2 * j + 1] = 0.0

    def _velocity_spectra_nb(spec, mult, ky, kx, kmax, last_col, out_u, out_v):
        _velocity_spectra_nbf(float_view(spec), mult, ky, kx, kmax, last_col, float_view(out_u),
                              float_view(out_v))

    def _combine_nb(P, Q, ky, kx, kmax, out):
        _combine_nbf(float_view(P), float_view(Q), ky, kx, kmax, float_view(out))
        return out


def float_view(a: np.ndarray) -> np.ndarray:
    """A C-contiguous complex128 array as float64 ``(..., 2m)`` (real, imag side by side)."""
    return np.ascontiguousarray(a, dtype=np.complex128).view(np.float64)


class Jacobian:
    r"""The advection term N̂ = FFT[u ∂ω/∂x + v ∂ω/∂y] from ψ̂ in 4 FFTs.

    Basdevant's form: for incompressible u = ∂ψ/∂y, v = −∂ψ/∂x and ω = −∇²ψ,

    .. math::

        u\,\partial_x\omega + v\,\partial_y\omega
            = (\partial_x^2 - \partial_y^2)(uv) + \partial_x\partial_y(v^2 - u^2),

    so N̂ = (ky² − kx²)·FFT(uv) − kx·ky·FFT(v² − u²): 2 inverse FFTs (u, v) and 2
    forward (the products), instead of 4 + 1 for u, v, ∂ω/∂x, ∂ω/∂y. On a
    dealiased field (modes ``max(|kx|, |ky|) <= kmax`` of the 2/3 rule) both forms
    are the exact product projected on the kept modes, so they agree to round-off.
    Without dealiasing they differ by their aliasing errors.

    The result is the grid's kept modes (``|kx|, |ky| <= kmax``; the mean and, on
    a non-dealiased grid, the Nyquist modes are also 0): the forward FFTs are
    pruned to those columns.

    Parameters
    ----------
    kernels : {"auto", "numba", "numpy"}
        Elementwise work fused and compiled with numba, or numpy's (same numbers
        to round-off).

    Notes
    -----
    The stages are public for callers that fuse their own work around them (the
    solver's time step): :meth:`load` (ψ̂ → û, v̂ into the inverse plans),
    :meth:`products` (2 inverse FFTs, then uv and v² − u² in place, and the
    largest |u|, |v|), :meth:`transform` (2 forward FFTs) and :meth:`combine`.
    """

    def __init__(self, grid: SpectralGrid, kernels: str = "auto"):
        self.grid = grid
        self.kernels = resolve_kernels(kernels)
        prune = grid.kmax if grid.dealias else None
        self._a = grid.new_plan(prune=prune)
        self._b = grid.new_plan(prune=prune)
        self.ky = grid.ky[:, 0].copy()
        self.kx = grid.kx[0].copy()
        self.kmax = grid.kmax
        self._kmax_cols = grid.n // 2  # the last column of the full layout
        scale = 1.0 / (grid.n * grid.n)
        #: multiplier taking ψ̂ to ψ̂·mask/n² (the inverse FFTs are unnormalized)
        self.psi_multiplier = grid.mask * scale
        #: multiplier taking ω̂ to ψ̂·mask/n²
        self.omega_multiplier = grid.inv_k2 * grid.mask * scale
        if self.kernels == "numba":
            self._velocity, self._products, self._combine = (
                _velocity_spectra_nb, _products_nb, _combine_nb)
            self._kx, self._ky = self.kx, self.ky
        else:
            self._velocity, self._products, self._combine = (
                _velocity_spectra_np, _products_np, _combine_np)
            self._kx, self._ky = grid.kx, grid.ky

    def load(self, spec: np.ndarray, multiplier: np.ndarray) -> None:
        """Put ``û, v̂`` of ``ψ̂ = multiplier·spec`` (times 1/n²) into the inverse FFTs' input.

        ``multiplier`` (real, the spectral shape) must vanish outside the kept modes
        (e.g. :attr:`psi_multiplier`, :attr:`omega_multiplier`).
        """
        a, b = self._a, self._b
        if a.spec_in is None:
            self._velocity(spec, multiplier, self._ky, self._kx, self.kmax, self._kmax_cols,
                           a.spec, b.spec)
        else:  # only the columns kx <= kmax: the others stay 0 in spec_in
            self._velocity(spec, multiplier, self._ky, self._kx, self.kmax, self.kmax,
                           a.spec_in, b.spec_in)

    def products(self, measure: bool = False):
        """Inverse FFTs of the loaded û, v̂, then ``uv``, ``v² − u²`` in place.

        Returns
        -------
        (float, float)
            max|u|, max|v| (0, 0 unless ``measure``).
        """
        a, b = self._a.inverse(pruned=True), self._b.inverse(pruned=True)
        return self._products(a, b, measure)

    def transform(self):
        """Forward FFTs of the products; returns ``(FFT(uv), FFT(v² − u²))`` (kept columns exact)."""
        return self._a.forward(pruned=True), self._b.forward(pruned=True)

    @property
    def transformed(self):
        """``(FFT(uv), FFT(v² − u²))`` after :meth:`transform` (the plans' buffers)."""
        return self._a.spec, self._b.spec

    def combine(self, out: np.ndarray) -> np.ndarray:
        """``out = N̂`` from the transformed products (kept modes; 0 elsewhere)."""
        return self._combine(self._a.spec, self._b.spec, self._ky, self._kx, self.kmax, out)

    def __call__(self, psi_hat: np.ndarray, out=None, multiplier=None) -> np.ndarray:
        """N̂ of ``psi_hat`` (one field ``(n, n//2+1)``); ``out`` or a new array.

        ``multiplier`` replaces :attr:`psi_multiplier` (e.g. :attr:`omega_multiplier`
        to pass ω̂ instead of ψ̂).
        """
        if out is None:
            out = np.empty(self.grid.spectral_shape, dtype=complex)
        self.load(np.ascontiguousarray(psi_hat, dtype=complex),
                  self.psi_multiplier if multiplier is None else multiplier)
        self.products()
        self.transform()
        return self.combine(out)


# ----------------------------------------------------------------------------------------
# filters and moving coefficients between grids
# ----------------------------------------------------------------------------------------
def _gaussian(kx, ky, width):
    return np.exp(-(kx**2 + ky**2) * width**2 / 24.0)


def _box(kx, ky, width):  # numpy's sinc is sin(πt)/(πt)
    return np.sinc(kx * width / (2 * np.pi)) * np.sinc(ky * width / (2 * np.pi))


def _sharp(kx, ky, width):
    kc = np.pi / width
    # a relative tolerance so that kc = n_les/2 computed as π/(2π/n_les) keeps |k| = kc out
    tol = 1e-9 * kc
    return ((np.abs(kx) < kc - tol) & (np.abs(ky) < kc - tol)).astype(float)


#: Registered filters: name -> transfer function ``G(kx, ky, width)`` (see
#: :func:`transfer_function`; add one with :func:`register_filter`).
FILTERS: dict[str, Callable] = {"gaussian": _gaussian, "box": _box, "sharp": _sharp}

#: The formulas of the registered filters (stored in file attributes).
FILTER_FORMULAS = {
    "gaussian": "exp(-(kx^2 + ky^2) width^2 / 24)",
    "box": "sinc(kx width / 2) sinc(ky width / 2), sinc(z) = sin(z)/z",
    "sharp": "1 where |kx| < pi/width and |ky| < pi/width, else 0",
}


def register_filter(name: str, func: Callable, formula: str, *, overwrite: bool = False) -> None:
    """Register a filter under ``name`` (coarse-graining and configs name filters).

    Parameters
    ----------
    name : str
        The filter's name (``coarse_grain(..., filter=name)``, ``[flows] filter``).
    func : callable
        ``func(kx, ky, width) -> ndarray``: the transfer function Ĝ at radian
        wavenumbers ``kx``, ``ky`` (float arrays that broadcast) for a width Δ.
    formula : str
        Ĝ in words, stored in the attributes of the files it makes.
    overwrite : bool
        Replace a filter of that name.

    Raises
    ------
    TypeError
        ``func`` not callable, ``name``/``formula`` not strings.
    ValueError
        ``name`` taken (without ``overwrite``).

    Notes
    -----
    Register it in every process that uses it: on a dask cluster, in the
    workers too (e.g. from a module they import).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    if not callable(func):
        raise TypeError(f"func must be callable, got {func!r}")
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a string, got {formula!r}")
    if name in FILTERS and not overwrite:
        raise ValueError(f"a filter {name!r} is registered already (pass overwrite=True)")
    FILTERS[name] = func
    FILTER_FORMULAS[name] = formula


def transfer_function(name: str, kx, ky, width: float) -> np.ndarray:
    """The transfer function Ĝ(kx, ky) of a filter of width Δ (broadcast over kx, ky).

    Parameters
    ----------
    name : str
        A registered filter (:data:`FILTERS`). The built-in ones:
        ``"gaussian"``: Ĝ = exp(−(kx² + ky²)Δ²/24);
        ``"box"``: the mean over a Δ × Δ square, Ĝ = sinc(kxΔ/2)·sinc(kyΔ/2), sinc z = sin z / z;
        ``"sharp"``: Ĝ = 1 where |kx| < π/Δ and |ky| < π/Δ, else 0 (a square cut-off).
    kx, ky : array-like
        Radian wavenumbers.
    width : float
        Δ (domain length units).

    Returns
    -------
    ndarray of float
    """
    if name not in FILTERS:
        raise ValueError(f"filter must be one of {list(FILTERS)}, got {name!r}")
    kx = np.asarray(kx, dtype=float)
    ky = np.asarray(ky, dtype=float)
    return np.asarray(FILTERS[name](kx, ky, width), dtype=float)


def resize_spectrum(spec: np.ndarray, n_to: int) -> np.ndarray:
    """rfft coefficients moved to an ``n_to`` grid (same values, zero elsewhere).

    ``spec`` has shape ``(..., n, n//2+1)``; the modes ``|kx|, |ky| < min(n, n_to)/2``
    are copied, all others (including the Nyquist modes of the smaller grid) are
    zero. No normalization is applied (pass normalized coefficients ``f̂/n²``).

    Parameters
    ----------
    n_to : int
        Even grid size of the result.

    Returns
    -------
    ndarray of complex, shape ``(..., n_to, n_to//2+1)``
    """
    n = spec.shape[-2]
    h = min(n, n_to) // 2
    out = np.zeros(spec.shape[:-2] + (n_to, n_to // 2 + 1), dtype=complex)
    out[..., :h, :h] = spec[..., :h, :h]
    out[..., n_to - h + 1:, :h] = spec[..., n - h + 1:, :h]
    return out

