"""Flow cases: a validated :class:`Case` dataclass and named presets.

A :class:`Case` holds everything that defines a forced β-plane 2D turbulence
run on the doubly periodic domain [0, 2π)²: the Reynolds number, the forcing
wavenumber, β, the linear drag, the DNS grid, the LES grid used to make
training data, the time step, the forcing and the initial condition.

Presets
-------
The paper's cases (Guan et al. 2022; Subel et al. 2023) are ``"base"``,
``"target-kf25"``, ``"target-beta20"`` and ``"target-re100k"``. They need
1024² or 2048² DNS and are meant for a cluster. The small presets
(``"small-*"``, 256²) run on a laptop in minutes and are resolved (see
``docs/solver.md`` and ``tests/test_cases.py``); ``"tiny"`` (64²) is for tests.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field

from ..options import check_float

__all__ = ["Case", "get_case", "list_cases", "PRESETS"]

#: Minimum grid size the solver accepts.
MIN_N = 8


@dataclass(frozen=True)
class Case:
    """One forced 2D turbulence configuration.

    Parameters
    ----------
    name : str
        A short label, stored in the output attributes.
    Re : float
        Reynolds number; the viscosity is ``1/Re``. ``math.inf`` gives an
        inviscid run. Must be > 0.
    kf : float
        Forcing wavenumber (radian, on the 2π domain). The default forcing is
        ``F = kf [cos(kf x) + cos(kf y)]``. Finite, ≥ 0.
    beta : float
        β-plane parameter (enters as ``+β v`` on the left-hand side). Finite.
    mu : float
        Linear drag coefficient (enters as ``-μ ω``). Finite, ≥ 0.
    n : int
        DNS grid points per direction; even and ≥ 8. A grid whose solver state
        cannot fit in this machine's memory is refused when it is made
        (:func:`xtl.physics.fourier.state_bytes`), not here: a Case only describes a run.
    n_les : int
        LES grid points per direction used to coarse-grain this case; even,
        not larger than ``n`` (equal to ``n`` for a case that is itself an LES).
    dt : float
        Time step; finite, > 0. The step's linear factors ``dt·(k²/Re + μ)``
        (k up to the grid's) and ``dt·β`` must be finite numbers too.
    forcing : str
        Name of a registered forcing (see :mod:`xtl.solver.equations`):
        ``"cosine"`` (default, above) or ``"none"``.
    dealias : bool
        Apply the 2/3 rule to the nonlinear term (default True).
    ic_peak : float
        Peak wavenumber ``kp`` of the random initial energy spectrum
        ``E(k) ∝ k⁴ exp(-(k/kp)²)``. Finite, > 0.
    ic_energy : float
        Kinetic energy ``½⟨u²+v²⟩`` of the initial condition. Finite, ≥ 0.

    Raises
    ------
    ValueError
        A value out of its range, NaN, or infinite (only ``Re`` may be ``inf``);
        the message names the field, its meaning, and the value.
    TypeError
        A field of the wrong type (e.g. a string or a bool for a number).
    """

    name: str = "custom"
    Re: float = 20000.0
    kf: float = 4.0
    beta: float = 0.0
    mu: float = 0.1
    n: int = 1024
    n_les: int = 128
    dt: float = 5e-5
    forcing: str = "cosine"
    dealias: bool = True
    ic_peak: float = 10.0
    ic_energy: float = 0.5
    description: str = field(default="", compare=False)

    def __post_init__(self):
        _validate_case(self)

    @property
    def nu(self) -> float:
        """Kinematic viscosity ``1/Re`` (0 for an inviscid case)."""
        return 0.0 if math.isinf(self.Re) else 1.0 / self.Re

    def replace(self, **changes) -> "Case":
        """Return a copy with the fields ``changes`` names changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_attrs(self) -> dict:
        """Return the case as netCDF-safe attributes (booleans become 0/1).

        The keys are prefixed with ``case_`` except for the physical
        parameters (``Re``, ``kf``, ``beta``, ``mu``) which keep their names so
        that they read naturally in an ensemble's coordinates.
        """
        attrs = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                value = int(value)
            key = f.name if f.name in _PHYSICAL else f"case_{f.name}"
            attrs[key] = value
        return attrs

    @classmethod
    def from_attrs(cls, attrs) -> "Case":
        """Rebuild a :class:`Case` from :meth:`to_attrs` output.

        Parameters
        ----------
        attrs : mapping
            E.g. a run's ``ds.attrs``; keys that are not case fields are ignored.
        """
        kwargs = {}
        for f in dataclasses.fields(cls):
            key = f.name if f.name in _PHYSICAL else f"case_{f.name}"
            if key in attrs:
                kwargs[f.name] = _FIELD_TYPES.get(f.type, str)(attrs[key])
        return cls(**kwargs)


_PHYSICAL = ("Re", "kf", "beta", "mu")
#: How :meth:`Case.from_attrs` reads a field back, by its annotation (str otherwise).
_FIELD_TYPES = {"bool": bool, "int": int, "float": float}


#: The real-number fields: ``(name, meaning, range)``, the range as
#: :func:`xtl.options.check_float` takes it.
_REAL_FIELDS = (
    ("Re", "the Reynolds number; math.inf for an inviscid run",
     dict(positive=True, infinite=True)),
    ("kf", "the forcing wavenumber", dict(minimum=0.0)),
    ("beta", "the β-plane parameter", {}),
    ("mu", "the linear drag", dict(minimum=0.0)),
    ("dt", "the time step", dict(positive=True)),
    ("ic_peak", "the peak wavenumber of the initial spectrum", dict(positive=True)),
    ("ic_energy", "the kinetic energy of the initial condition", dict(minimum=0.0)),
)


def _check_real(value, name: str, meaning: str, bounds: dict) -> None:
    """``Case.<name>`` by :func:`xtl.options.check_float`, its message saying what the
    field means."""
    try:
        check_float(value, f"Case.{name}", **bounds)
    except TypeError:
        raise TypeError(f"Case.{name} must be a real number ({meaning}), got {value!r}") \
            from None
    except ValueError as err:
        raise ValueError(f"{err} ({meaning})") from None


def check_n_les(n_les, n: int | None = None, name: str = "n_les") -> int:
    """``n_les`` as an LES grid size: an even int >= 4, not larger than the DNS grid ``n``.

    The one rule of the LES grid, wherever an ``n_les`` arrives (a :class:`Case`,
    a :class:`~xtl.data.coarse.CoarseGraining`, :func:`~xtl.data.coarse.coarse_grain`).
    ``n_les == n`` is allowed: the LES case of a DNS case has it
    (:func:`xtl.solver.les.les_case`), and coarse-graining to the DNS grid still filters.

    Parameters
    ----------
    n : int, optional
        The DNS grid size it must not exceed; None: any.
    name : str
        The argument's name in the messages.

    Raises
    ------
    TypeError
        ``n_les`` is not an int.
    ValueError
        It is odd, below 4 or larger than ``n``.
    """
    if not isinstance(n_les, numbers.Integral) or isinstance(n_les, bool):
        raise TypeError(f"{name} must be an even int (the LES grid size), got {n_les!r}")
    n_les = int(n_les)
    if n_les < 4 or n_les % 2:
        raise ValueError(f"{name} must be an even integer >= 4 (the LES grid size), got {n_les}")
    if n is not None and n_les > n:
        raise ValueError(f"{name} must not be larger than the DNS grid size n={n} "
                         f"(coarse-graining cannot refine a grid), got {name}={n_les}")
    return n_les


def _check_grid(case: Case) -> None:
    if not isinstance(case.n, int) or isinstance(case.n, bool):
        raise TypeError(f"Case.n must be an int, got {case.n!r}")
    if case.n < MIN_N or case.n % 2:
        raise ValueError(f"Case.n must be an even integer >= {MIN_N}, got {case.n}")
    object.__setattr__(case, "n_les", check_n_les(case.n_les, case.n, "Case.n_les"))


def _check_linear_terms(case: Case) -> None:
    """The step's linear factors ``dt·(ν k² + μ)`` and ``dt·β`` must be finite numbers."""
    kmax = case.n / 2
    size = abs(case.dt * (case.nu * 2 * kmax * kmax + case.mu)) + abs(case.dt * case.beta)
    if not math.isfinite(size):
        raise ValueError(
            f"Case.dt·(k²/Re + mu) and Case.dt·beta overflow (dt={case.dt!r}, Re={case.Re!r}, "
            f"mu={case.mu!r}, beta={case.beta!r}, n={case.n}): choose values whose products are "
            "finite numbers"
        )


def _validate_case(case: Case) -> None:
    """Raise a ValueError/TypeError naming the first bad field of ``case``."""
    for name, meaning, bounds in _REAL_FIELDS:
        _check_real(getattr(case, name), name, meaning, bounds)
    _check_grid(case)
    _check_linear_terms(case)
    if not isinstance(case.forcing, str):
        raise TypeError(f"Case.forcing must be the name of a forcing, got {case.forcing!r}")
    if not isinstance(case.dealias, bool):
        raise TypeError(f"Case.dealias must be True or False, got {case.dealias!r}")


_BASE = Case(
    name="base",
    Re=20000.0,
    kf=4.0,
    beta=0.0,
    mu=0.1,
    n=1024,
    n_les=128,
    dt=5e-5,
    description="Guan et al. (2022) case 1 / Subel et al. (2023) base flow",
)

_SMALL_BASE = Case(
    name="small-base",
    Re=2000.0,
    kf=4.0,
    beta=0.0,
    mu=0.1,
    n=256,
    n_les=64,
    dt=5e-4,
    description="256² laptop-size base flow (resolved)",
)

#: Named presets; use :func:`get_case` to fetch one.
PRESETS = {
    "base": _BASE,
    "target-kf25": _BASE.replace(
        name="target-kf25", kf=25.0, description="target: forcing at kf=25"
    ),
    "target-beta20": _BASE.replace(
        name="target-beta20", beta=20.0, description="target: β-plane, β=20"
    ),
    "target-re100k": _BASE.replace(
        name="target-re100k",
        Re=100000.0,
        n=2048,
        n_les=256,
        dt=2.5e-5,
        description="target: Re=100000 on a 2048² DNS",
    ),
    "small-base": _SMALL_BASE,
    "small-kf": _SMALL_BASE.replace(
        name="small-kf", kf=12.0, description="256² target: forcing at kf=12"
    ),
    "small-beta": _SMALL_BASE.replace(
        name="small-beta", beta=20.0, description="256² target: β-plane, β=20"
    ),
    "small-re": _SMALL_BASE.replace(
        name="small-re", Re=5000.0,
        description="256² higher Re (5000); its LES spectra differ from small-base's by "
                    "under 0.2 decades: a control, not a transfer-learning target"
    ),
    "small-re250": _SMALL_BASE.replace(
        name="small-re250", Re=250.0,
        description="256² target: an eightfold lower Re (250); coarse-grained to 32² its "
                    "spectra differ from small-base's by about 0.4 (psi, omega) and 0.5 (pi) "
                    "decades, where higher Re differ by under 0.2"
    ),
    "tiny": Case(
        name="tiny",
        Re=100.0,
        kf=4.0,
        beta=0.0,
        mu=0.1,
        n=64,
        n_les=16,
        dt=2e-3,
        description="64² case for tests",
    ),
}


def list_cases() -> list[str]:
    """Return the names of the preset cases."""
    return sorted(PRESETS)


def get_case(preset: str, /, **changes) -> Case:
    """Return the preset called ``preset``, optionally with some fields changed.

    Parameters
    ----------
    preset : str
        One of :func:`list_cases` (positional only, so that ``name`` can be
        changed like any other field).
    **changes
        Fields to override, e.g. ``get_case("small-base", dt=2e-4)`` or
        ``get_case("tiny", Re=200.0, name="tiny-re")``.

    Raises
    ------
    KeyError
        If ``preset`` is not a preset.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown case {preset!r}; presets are {list_cases()}")
    case = PRESETS[preset]
    return case.replace(**changes) if changes else case
