"""Typed options, validated once where they are made: the :class:`Options` base and
the shared validators (:func:`check_float` is the one finite-number-in-range check).

A function that needs many knobs takes an options object (plus, for convenience,
the same knobs as keyword arguments, which :meth:`Options.merge` folds into the
object); the class lives beside the function (``FitOptions`` in
:mod:`xtl.nn.backends.loop`, ``SweepOptions`` in :mod:`xtl.nn.sweep`, ``Schedule``
and ``Output`` in :mod:`xtl.solver.options`, the recommenders' in
:mod:`xtl.explain.recommend`, ``CoarseGraining`` in :mod:`xtl.data.coarse`,
``LesSchedule`` in :mod:`xtl.solver.les`). The experiment config parses straight into them, so a
value is checked in one place whichever way it arrives. Every check names the
option, the value and the expected form.

This module sits at the bottom of the data flow and imports nothing of xtl.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping

import numpy as np

__all__ = [
    "Options",
    "check_int",
    "check_float",
    "check_bool",
    "check_fraction",
    "check_path",
]


# ------------------------------------------------------------------ validators
def check_int(value, name: str, *, minimum: int | None = None, optional: bool = False):
    """``value`` as an int, refusing bools, floats and values below ``minimum`` (the
    smallest allowed value; None: no bound); ``value``, ``name`` and ``optional`` as in
    :func:`check_float`.

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
    """``value`` as a bool (numpy bools too), refusing ints and strings; ``value``,
    ``name`` and ``optional`` as in :func:`check_float`.

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
        """``options`` (or the defaults) with ``kwargs`` replacing single options: a new,
        validated instance.

        Parameters
        ----------
        options : Options, mapping or None
            The starting options: an instance, a mapping of option names, or
            None for the defaults.
        **kwargs
            Single options to replace.

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

