"""Typed options, validated once where they are made: the :class:`Options` base and
the shared validators (:func:`check_float` is the one finite-number-in-range check).

A function that needs many knobs takes an options object (plus, for convenience,
the same knobs as keyword arguments, which :meth:`Options.merge` folds into the
object); the class lives beside the function (``FitOptions`` in
:mod:`xtl.nn.backends.loop`, ``SweepOptions`` in :mod:`xtl.nn.sweep`, ``Schedule``
and ``Output`` in :mod:`xtl.solver.options`, the recommenders' in
:mod:`xtl.explain.recommend`). The experiment config parses straight into them, so a
value is checked in one place whichever way it arrives. Every check names the
option, the value and the expected form.

This module sits at the bottom of the data flow: of xtl it imports only the
filter registry of :mod:`xtl.physics.fourier`, its neighbour at the bottom.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Options",
    "LesSchedule",
    "CoarseGraining",
    "FILTER_ALIASES",
    "check_filter",
    "check_n_les",
    "check_width",
    "default_width",
    "check_int",
    "check_float",
    "check_bool",
    "check_fraction",
    "check_path",
]


# ------------------------------------------------------------------ validators
def check_int(value, name: str, *, minimum: int | None = None, optional: bool = False):
    """``value`` as an int, refusing bools, floats and values below ``minimum``.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message.
    minimum : int, optional
        The smallest allowed value.
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    int or None

    Raises
    ------
    TypeError
        ``value`` is not an integer (``1.5``, ``True``, ``"3"``).
    ValueError
        ``value`` is below ``minimum``.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        form = "an int" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _range_form(positive, minimum, maximum, below) -> str:
    """The range of :func:`check_float` in words: ``"> 0"``, ``"a number in [0, 1)"``."""
    low = "(0" if positive else None if minimum is None else f"[{minimum:g}"
    high = f"{below:g})" if below is not None else None if maximum is None else f"{maximum:g}]"
    if low and high:
        return f"a number in {low}, {high}"
    if low:
        return (">= " if low[0] == "[" else "> ") + low[1:]
    return ("<= " if high[-1] == "]" else "< ") + high[:-1]


def check_float(value, name: str, *, positive: bool = False, minimum: float | None = None,
                maximum: float | None = None, below: float | None = None,
                infinite: bool = False, optional: bool = False):
    """``value`` as a float in the given range: the one finite-number-in-range check.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message (it may carry the option's
        meaning: ``"Case.Re (the Reynolds number)"``).
    positive : bool
        Require ``value > 0``.
    minimum, maximum : float, optional
        Inclusive bounds.
    below : float, optional
        Exclusive upper bound (``value < below``).
    infinite : bool
        Let ``±inf`` through when in range (NaN never is).
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    float or None

    Raises
    ------
    TypeError
        ``value`` is not a real number (``"3"``, ``True``).
    ValueError
        ``value`` is NaN, infinite (unless ``infinite``) or out of range; the
        message gives the range as an interval when it has two ends.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        form = "a number" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not infinite):
        form = "a number, not NaN" if infinite else "a finite number"
        raise ValueError(f"{name} must be {form}, got {value!r}")
    inside = (not positive or value > 0) and (minimum is None or value >= minimum) and \
        (maximum is None or value <= maximum) and (below is None or value < below)
    if not inside:
        form = _range_form(positive, minimum, maximum, below)
        raise ValueError(f"{name} must be {form}, got {value!r}")
    return value


def check_bool(value, name: str, *, optional: bool = False):
    """``value`` as a bool (numpy bools too), refusing ints and strings.

    Parameters
    ----------
    value : object
        The value to check.
    name : str
        The option's name, used in the message.
    optional : bool
        Let None through (returned as None).

    Returns
    -------
    bool or None

    Raises
    ------
    TypeError
        ``value`` is not a bool.
    """
    if value is None and optional:
        return None
    if not isinstance(value, (bool, np.bool_)):
        form = "True or False" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {form}, got {value!r}")
    return bool(value)


def check_fraction(value, name: str) -> float:
    """``value`` as a float strictly between 0 and 1 (a fraction, a significance level):
    :func:`check_float` with ``positive=True, below=1``."""
    return check_float(value, name, positive=True, below=1.0)


def check_path(value, name: str):
    """``value`` as a path-like or None; a TypeError naming ``name`` otherwise."""
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike) or None, got {value!r}")
    return value


# --------------------------------------------------------------------- options
class Options:
    """Shared behaviour of the options dataclasses: merge keyword arguments."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def merge(cls, options=None, /, **kwargs):
        """``options`` (or the defaults) with ``kwargs`` replacing single options.

        Parameters
        ----------
        options : Options, mapping or None
            The starting options: an instance, a mapping of option names, or
            None for the defaults.
        **kwargs
            Single options to replace.

        Returns
        -------
        Options
            A new, validated instance.

        Raises
        ------
        TypeError
            ``options`` is of another type, or a keyword is not an option
            (the message lists the valid names).
        """
        if options is None:
            base = {}
        elif isinstance(options, cls):
            if not kwargs:
                return options
            base = options.to_dict()
        elif isinstance(options, Mapping):
            base = dict(options)
        else:
            raise TypeError(f"options must be a {cls.__name__}, a dict or None, "
                            f"got {type(options).__name__}")
        unknown = sorted(set(base) - set(cls.names())) + sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(f"unknown {cls.__name__} option(s) {unknown}; "
                            f"valid: {', '.join(cls.names())}")
        return cls(**{**base, **kwargs})

    def replace(self, **kwargs):
        """A copy with some options replaced (validated again)."""
        return type(self).merge(self, **kwargs)

    def to_dict(self) -> dict:
        """The options as a plain dict (for provenance and configs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# -- coarse-graining
#: Other names of the filters (``"top-hat"`` is the box filter).
FILTER_ALIASES = {"top-hat": "box", "tophat": "box"}


def check_filter(filter) -> str:
    """The registered filter ``filter`` names (case-insensitive, aliases resolved).

    Parameters
    ----------
    filter : str
        A name in :data:`xtl.physics.fourier.FILTERS` or :data:`FILTER_ALIASES`.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Not a registered filter (the message lists them).
    """
    from .physics.fourier import FILTERS  # the registry sits beside the transfer functions

    if isinstance(filter, str):
        name = FILTER_ALIASES.get(filter.lower(), filter.lower())
        if name in FILTERS:
            return name
    raise ValueError(
        f"filter must be one of {list(FILTERS)} (or 'top-hat' for 'box'), got {filter!r}"
    )


def check_n_les(n_les, n=None) -> int:
    """``n_les`` as an even LES grid size >= 4, below the DNS grid ``n`` when given.

    Raises
    ------
    TypeError, ValueError
        Not an int; odd, < 4 or not below ``n``.
    """
    if not isinstance(n_les, numbers.Integral) or isinstance(n_les, bool):
        raise TypeError(f"n_les must be an even int (the LES grid size), got {n_les!r}")
    n_les = int(n_les)
    if n_les < 4 or n_les % 2:
        raise ValueError(f"n_les must be an even integer >= 4, got {n_les}")
    if n is not None and n_les >= n:
        raise ValueError(
            f"n_les must be smaller than the DNS grid size n={n} (coarse-graining "
            f"reduces the grid), got n_les={n_les}"
        )
    return n_les


def default_width(n_les: int) -> float:
    """The default filter width Δ = 2·(2π/n_les), twice the LES grid spacing.

    Parameters
    ----------
    n_les : int
        LES grid points per direction (even, >= 4).

    Returns
    -------
    float
    """
    return 2.0 * (2.0 * math.pi / check_n_les(n_les))


def check_width(width, n_les) -> float:
    """The filter width Δ: ``width`` (finite, > 0), or :func:`default_width` when None."""
    if width is None:
        return default_width(n_les)
    if not isinstance(width, numbers.Real) or isinstance(width, bool):
        raise TypeError(f"width must be a positive number (the filter width Δ), got {width!r}")
    width = float(width)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a finite number > 0 (the filter width Δ), got {width}")
    return width


@dataclass(frozen=True)
class CoarseGraining(Options):
    """How DNS fields become LES fields: the filter and the LES grid.

    Parameters
    ----------
    n_les : int, optional
        LES grid size (even, >= 4); None: the case's ``n_les``
        (:meth:`for_case`).
    filter : str
        A registered filter (:data:`xtl.physics.fourier.FILTERS`; ``"top-hat"`` is
        ``"box"``).
    width : float, optional
        Filter width Δ; None: ``2·(2π/n_les)``.
    """

    n_les: int | None = None
    filter: str = "gaussian"
    width: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        if self.n_les is not None:
            set_(self, "n_les", check_n_les(self.n_les))
            set_(self, "width", check_width(self.width, self.n_les))
        elif self.width is not None:
            set_(self, "width", check_width(self.width, 4))
        set_(self, "filter", check_filter(self.filter))

    @classmethod
    def from_les(cls, les) -> "CoarseGraining":
        """The coarse-graining an ``les=`` argument asks for.

        Parameters
        ----------
        les : True, int, mapping or CoarseGraining
            ``True``: the defaults; an int: that ``n_les``; a mapping of
            ``n_les``, ``filter``, ``width``.

        Raises
        ------
        TypeError
            Another type.
        ValueError
            An unknown key (the message lists the valid ones) or a bad value.
        """
        if isinstance(les, cls):
            return les
        if les is True:
            return cls()
        if isinstance(les, numbers.Integral) and not isinstance(les, bool):
            return cls(n_les=int(les))
        if isinstance(les, Mapping):
            unknown = sorted(set(les) - set(cls.names()))
            if unknown:
                raise ValueError(f"les has unknown keys {unknown}; allowed are 'n_les', "
                                 "'filter', 'width'")
            return cls.merge(les)
        raise TypeError("les must be True, an int n_les, or a dict(n_les=..., filter=..., "
                        f"width=...), got {les!r}")

    def for_grid(self, n: int | None, n_les: int | None = None) -> "CoarseGraining":
        """Complete for a DNS grid of ``n`` points: ``n_les`` (default: the
        ``n_les`` argument) below ``n`` (None: any) and the width filled in.

        Raises
        ------
        ValueError
            No LES grid size, or one not below ``n``.
        """
        n_les = self.n_les if self.n_les is not None else n_les
        if n_les is None:
            raise ValueError("the coarse-graining needs an 'n_les' (no case to take it from)")
        n_les = check_n_les(n_les, n)
        return CoarseGraining(n_les, self.filter, check_width(self.width, n_les))

    def for_case(self, case) -> "CoarseGraining":
        """:meth:`for_grid` of a case: its DNS grid ``n`` and, by default, its ``n_les``."""
        return self.for_grid(case.n, case.n_les)


@dataclass(frozen=True)
class LesSchedule(Options):
    """How long the a posteriori LES runs: :func:`xtl.les.run_aposteriori` and
    :func:`xtl.les.aposteriori_run`.

    Parameters
    ----------
    t_end : float
        Length of each run (finite, > 0).
    save_interval : float
        Time between the snapshots the metrics use (finite, > 0).
    dt : float, optional
        LES time step (finite, > 0); None keeps the DNS's CFL number
        (:func:`xtl.les.les_case`).
    """

    t_end: float
    save_interval: float
    dt: float | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "t_end", check_float(self.t_end, "t_end", positive=True))
        set_(self, "save_interval", check_float(self.save_interval, "save_interval",
                                                positive=True))
        set_(self, "dt", check_float(self.dt, "dt", positive=True, optional=True))
