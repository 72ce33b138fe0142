"""The ``.tl`` accessors on :class:`xarray.Dataset` and :class:`xarray.DataArray`.

Importing this module (``import xtl`` does) registers ``ds.tl`` and ``da.tl``. Each
method is generated from a public function of :mod:`xtl.data.spectra`,
:mod:`xtl.explain.kernels` or :mod:`xtl.data.coarse` by ``_delegate``:
``ds.tl.f(*args, **kwargs)`` is ``f(ds, *args, **kwargs)``, with the function's
signature (less its first parameter) and its docstring, so the two cannot drift apart.
The accessors hold no logic of their own. Methods valid on both kinds of object live
in ``_TLAccessor``; the others in the Dataset or DataArray class:

* ``ds.tl`` and ``da.tl``: ``spectrum``, ``transfer_spectrum``, ``filter_census``;
* ``ds.tl`` only: ``coarse_grain``, ``kernel_filters``, ``classify_kernels``,
  ``kernel_change``;
* ``da.tl`` only: ``radial_profile``, ``classify_filters``.

To add a method, assign it under a comment naming its module, with a one-line
docstring naming the function (what the API reference shows), e.g.::

    # --- xtl.data.coarse --------------------------------------------------------------
    coarse_grain = _delegate(coarse.coarse_grain)
    \"\"\"``ds.tl.coarse_grain(...)``: :func:`xtl.data.coarse.coarse_grain` on this Dataset.\"\"\"
"""
from __future__ import annotations

import functools
import inspect
import textwrap

import xarray as xr

from .data import coarse, spectra
from .explain.kernels import (classify_filters, classify_kernels, filter_census, kernel_change,
                              kernel_filters, radial_profile)

__all__ = ["TLDatasetAccessor", "TLDataArrayAccessor"]


def _delegate(func):
    """An accessor method: ``method(accessor, *args, **kwargs)`` is
    ``func(accessor._obj, *args, **kwargs)``.

    ``func``'s first, positional parameter is the Dataset or DataArray. The method's
    ``__signature__`` is ``func``'s with the first parameter renamed ``self`` (so a
    bound ``ds.tl.f`` has ``func``'s signature less its first parameter), its
    ``__doc__`` is ``func``'s (see :func:`_accessor_doc`), ``__wrapped__`` is ``func``
    and its ``__qualname__`` is set by the class (``_TLAccessor.spectrum``, ...).
    """
    signature = inspect.signature(func)
    params = list(signature.parameters.values())

    @functools.wraps(func)  # __name__, __qualname__, __module__, __doc__, __wrapped__
    def method(accessor, /, *args, **kwargs):
        return func(accessor._obj, *args, **kwargs)

    self_param = params[0].replace(name="self", default=params[0].empty,
                                   annotation=params[0].empty)
    method.__signature__ = signature.replace(parameters=[self_param, *params[1:]])
    method.__doc__ = _accessor_doc(func)
    method.__module__ = __name__
    return method


def _accessor_doc(func):
    """``func``'s docstring for its accessor method: without the first parameter's entry.

    The first parameter is the object the accessor is on; its entry is removed from the
    ``Parameters`` section (from a shared entry such as ``base, tl : ...`` only its name
    is removed), and a note after the summary paragraph says so. The docstring is
    cleaned (dedented); a function without one gets the note alone.
    """
    doc = inspect.getdoc(func) or ""
    first = next(iter(inspect.signature(func).parameters))
    lines = _drop_parameter(doc.splitlines(), first)
    where = lines.index("") if "" in lines else len(lines)
    note = textwrap.wrap(f"Accessor form of :func:`{func.__module__}.{func.__name__}`: "
                         f"``{first}`` is the object ``.tl`` is on.", width=88)
    return "\n".join([*lines[:where], "", *note, *lines[where:]]).rstrip() + "\n"


def _drop_parameter(lines, name):
    """``lines`` without the entry of parameter ``name`` in the ``Parameters`` section."""
    try:
        start = lines.index("Parameters") + 2  # the section header and its underline
    except ValueError:
        return lines
    for i in range(start, len(lines)):
        line = lines[i]
        if lines[i + 1:i + 2] and set(lines[i + 1]) == {"-"}:
            break  # the next section's header
        if not line.strip() or line.startswith(" "):
            continue  # a description line, or the blank line ending the section
        names, sep, rest = line.partition(" :")
        listed = [n.strip() for n in names.split(",")]
        if name not in listed:
            continue
        others = [n for n in listed if n != name]
        if others:  # a shared entry, "base, tl : ...": keep it for the others
            return [*lines[:i], ", ".join(others) + sep + rest, *lines[i + 1:]]
        end = i + 1
        while end < len(lines) and lines[end].startswith(" "):
            end += 1
        return [*lines[:i], *lines[end:]]
    return lines


def _name_methods(cls):
    """Class decorator: give each delegated method the qualified name ``Class.method``."""
    for name, value in vars(cls).items():
        if inspect.isfunction(value) and hasattr(value, "__wrapped__"):
            value.__qualname__ = f"{cls.__qualname__}.{name}"
    return cls


@_name_methods
class _TLAccessor:
    """Methods shared by ``Dataset.tl`` and ``DataArray.tl``."""

    def __init__(self, obj):
        self._obj = obj

    # --- xtl.data.spectra: spectra of fields -----------------------------------------------
    spectrum = _delegate(spectra.spectrum)
    """``.tl.spectrum(...)``: :func:`xtl.data.spectra.spectrum` on this object."""

    transfer_spectrum = _delegate(spectra.transfer_spectrum)
    """``.tl.transfer_spectrum(...)``: :func:`xtl.data.spectra.transfer_spectrum` on this object."""

    # --- xtl.explain.kernels: kernel filters -----------------------------------------------
    filter_census = _delegate(filter_census)
    """``.tl.filter_census(...)``: :func:`xtl.explain.kernels.filter_census` on this object."""


@xr.register_dataset_accessor("tl")
@_name_methods
class TLDatasetAccessor(_TLAccessor):
    """``ds.tl``: xtl methods on a Dataset (flow fields, a model, a classification)."""

    # --- xtl.data.coarse --------------------------------------------------------------------
    coarse_grain = _delegate(coarse.coarse_grain)
    """``ds.tl.coarse_grain(...)``: :func:`xtl.data.coarse.coarse_grain` on this Dataset."""

    # --- xtl.explain.kernels: kernel filters -----------------------------------------------
    kernel_filters = _delegate(kernel_filters)
    """``ds.tl.kernel_filters(...)``: :func:`xtl.explain.kernels.kernel_filters` on this model."""

    classify_kernels = _delegate(classify_kernels)
    """``ds.tl.classify_kernels(...)``: :func:`xtl.explain.kernels.classify_kernels` on this model."""

    kernel_change = _delegate(kernel_change)
    """``ds.tl.kernel_change(tl, ...)``: :func:`xtl.explain.kernels.kernel_change` from this model."""


@xr.register_dataarray_accessor("tl")
@_name_methods
class TLDataArrayAccessor(_TLAccessor):
    """``da.tl``: xtl methods on a DataArray (a field, or filter magnitudes ``|Ŵ|``)."""

    # --- xtl.explain.kernels: kernel filters -----------------------------------------------
    radial_profile = _delegate(radial_profile)
    """``da.tl.radial_profile(...)``: :func:`xtl.explain.kernels.radial_profile` on these filters."""

    classify_filters = _delegate(classify_filters)
    """``da.tl.classify_filters(...)``: :func:`xtl.explain.kernels.classify_filters` on these filters."""
