"""Matplotlib figures of the Fourier explanations: spectra, kernel spectra, census.

Every function takes xarray objects as returned by :mod:`xtl.data.spectra` and
:mod:`xtl.explain.kernels`, draws on a given Axes (or Figure) or a new one, and returns
it; nothing is shown or saved here. Given an Axes or Figure (e.g. of a
``matplotlib.figure.Figure()``), nothing touches pyplot or the backend; only a new
figure is made with pyplot. Legends sit outside the axes, off the data.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["plot_spectra", "plot_kernel_spectra", "plot_census", "plot_vorticity",
           "legend_outside"]

#: Colours of the filter types in census bars.
FILTER_COLORS = {
    "low-pass": "tab:blue",
    "high-pass": "tab:red",
    "band-pass": "tab:green",
    "gabor": "tab:purple",
    "all-pass": "tab:gray",
}


_ABBREV = {"layer": "L", "channel_out": "out", "channel_in": "in", "top": "#", "kernel": "",
           "model": ""}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def legend_outside(ax, **kwargs):
    """A legend to the right of ``ax``, outside it (off the data); None without labels.

    Parameters
    ----------
    **kwargs
        Passed to ``Axes.legend`` (e.g. ``fontsize``, ``handles``).
    """
    handles, _ = ax.get_legend_handles_labels()
    if not handles and "handles" not in kwargs:
        return None
    kwargs.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **kwargs)


def _as_curves(spectra, labels, dim):
    """Normalize the accepted spectra inputs to a list of (label, 1D DataArray)."""
    if isinstance(spectra, xr.DataArray):
        if "k" not in spectra.dims:
            raise ValueError(f"spectra must have a 'k' dim; got dims {spectra.dims}")
        if spectra.ndim == 1:
            curves = [(spectra.name, spectra)]
        elif spectra.ndim == 2:
            other = dim or next(d for d in spectra.dims if d != "k")
            if other not in spectra.dims:
                raise ValueError(f"dim {other!r} is not a dim of spectra {spectra.dims}")
            values = spectra[other].values if other in spectra.coords else range(spectra.sizes[other])
            curves = [(f"{other}={v}", spectra.isel({other: i})) for i, v in enumerate(values)]
        else:
            raise ValueError(
                "a DataArray of spectra must be 1D (k) or 2D (one other dim, one line each); "
                f"got dims {spectra.dims}: select or average the others first"
            )
    elif isinstance(spectra, Mapping):
        curves = list(spectra.items())
    elif isinstance(spectra, Sequence) and not isinstance(spectra, str):
        curves = [(getattr(s, "name", None), s) for s in spectra]
    else:
        raise TypeError(
            "spectra must be a DataArray with a 'k' dim, a mapping label -> DataArray, "
            f"or a sequence of DataArrays; got {type(spectra).__name__}"
        )
    if labels is not None:
        if len(labels) != len(curves):
            raise ValueError(f"labels has {len(labels)} entries for {len(curves)} spectra")
        curves = [(lab, c) for lab, (_, c) in zip(labels, curves)]
    for lab, c in curves:
        if not isinstance(c, xr.DataArray) or c.dims != ("k",):
            raise ValueError(
                f"each spectrum must be a 1D DataArray over 'k'; {lab!r} has "
                f"{getattr(c, 'dims', type(c).__name__)}"
            )
    return curves


def plot_spectra(spectra, *, labels=None, dim=None, ax=None, kmin=1, title=None,
                 ylabel="spectrum", **line_kwargs):
    """Log-log spectra of several flows on one axis.

    Parameters
    ----------
    spectra : xarray.DataArray, mapping or sequence
        A 1D spectrum over ``k``; a 2D one (one line per value of its other dim, e.g.
        ``case``); a mapping ``label -> spectrum``; or a sequence of spectra.
    labels : sequence of str, optional
        Legend labels, one per line (default: mapping keys, names or coordinate values).
    dim : str, optional
        For a 2D DataArray, the dim whose values are the lines.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure by default.
    kmin : int, default 1
        Smallest wavenumber drawn (k = 0 has no place on a log axis); non-positive
        values are not drawn either.
    title, ylabel : str, optional
        Axis title and y label.
    **line_kwargs
        Passed to ``Axes.loglog``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes, with one line per spectrum and a legend outside, on the right.

    Raises
    ------
    TypeError, ValueError
        Spectra that are not over ``k``, or labels that do not match.
    """
    curves = _as_curves(spectra, labels, dim)
    own = ax is None
    if own:
        _, ax = _plt().subplots(figsize=(5, 4))
    for lab, c in curves:
        k = np.asarray(c["k"].values if "k" in c.coords else np.arange(c.sizes["k"]), float)
        v = np.asarray(c.values, float)
        keep = (k >= kmin) & (v > 0)
        ax.loglog(k[keep], v[keep], label=None if lab is None else str(lab), **line_kwargs)
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if any(lab is not None for lab, _ in curves):
        legend_outside(ax)
    if own:
        ax.figure.tight_layout()
    return ax


def plot_kernel_spectra(filters, kernels=None, *, classes=None, ncols=None, kmax=None,
                        fig=None, cmap="viridis", vmax=None):
    """Grid of kernel spectra ``|Ŵ|`` centred at k = 0, as in the paper's figures.

    All panels share one colour scale, from 0 to ``vmax``, shown by one colourbar, so
    that kernels (e.g. before and after re-training) compare by colour; the axes are the
    wavenumbers ``kx`` (bottom row) and ``ky`` (left column).

    Parameters
    ----------
    filters : xarray.DataArray
        ``|Ŵ|`` with dims ``(..., "ky", "kx")`` (from :func:`xtl.kernel_filters`, or the
        ``top_filter_*`` variables of :func:`xtl.kernel_change`); fftshifted or not.
    kernels : sequence of dict, optional
        The kernels to draw, each a label selection of the leading dims, e.g.
        ``[{"layer": 1, "channel_out": 3, "channel_in": 0}, ...]``. Default: every
        filter (at most 64).
    classes : xarray.Dataset, optional
        Output of :func:`xtl.classify_filters` for ``filters``; adds the type (and
        orientation) to each panel's title.
    ncols : int, optional
        Panels per row (default: up to 6).
    kmax : int, optional
        Draw ``|ky|, |kx| ≤ kmax`` only.
    fig : matplotlib.figure.Figure, optional
        Figure to draw in; a new one by default.
    cmap : str, default "viridis"
        Colour map.
    vmax : float, optional
        Top of the shared colour scale; default the largest ``|Ŵ|`` drawn.

    Returns
    -------
    matplotlib.figure.Figure
        One image per kernel, axes in wavenumbers, and a colourbar of ``|Ŵ|``.

    Raises
    ------
    TypeError, ValueError
        ``filters`` without ``ky``/``kx``, bad selections or too many panels.
    """
    if not isinstance(filters, xr.DataArray) or not {"ky", "kx"} <= set(filters.dims):
        raise TypeError("filters must be a DataArray with dims (..., 'ky', 'kx')")
    lead = [d for d in filters.dims if d not in ("ky", "kx")]
    filters = filters.transpose(*lead, "ky", "kx").sortby(["ky", "kx"])
    if kmax is not None:
        filters = filters.sel(ky=slice(-kmax, kmax), kx=slice(-kmax, kmax))
    if kernels is None:
        stacked = filters.stack(_panel=lead) if lead else filters.expand_dims(_panel=[0])
        if stacked.sizes["_panel"] > 64:
            raise ValueError(
                f"{stacked.sizes['_panel']} filters are too many panels (max 64); pass kernels=[...]"
            )
        selections = [
            {d: stacked[d].values[i] for d in lead} for i in range(stacked.sizes["_panel"])
        ]
    else:
        selections = [dict(s) for s in kernels]
        for s in selections:
            bad = set(s) - set(lead)
            if bad:
                raise ValueError(f"kernel selection {s} names dims {bad} that filters lacks {lead}")
    if not selections:
        raise ValueError("kernels is empty")
    ncols = ncols or min(6, len(selections))
    nrows = -(-len(selections) // ncols)
    images = []
    for sel in selections:
        img = filters.sel(sel)
        if img.dims != ("ky", "kx"):
            raise ValueError(f"selection {sel} does not pick one filter (dims {img.dims})")
        images.append(np.asarray(img.values, dtype=float))
    if vmax is None:
        vmax = max((float(np.nanmax(i)) for i in images if np.isfinite(i).any()), default=1.0)
    if fig is None:
        fig = _plt().figure(figsize=(2.2 * ncols + 1.0, 2.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True)
    ky, kx = filters["ky"].values, filters["kx"].values
    extent = [kx[0] - 0.5, kx[-1] + 0.5, ky[0] - 0.5, ky[-1] + 0.5]
    mappable = None
    for i, (ax, sel, values) in enumerate(zip(axes.ravel(), selections, images)):
        mappable = ax.imshow(values, origin="lower", extent=extent, cmap=cmap, vmin=0,
                             vmax=vmax or 1.0)
        title = " ".join(f"{_ABBREV.get(d, d)}{v}" for d, v in sel.items())
        if classes is not None:
            c = classes.sel(sel)
            title += f"\n{c['filter_type'].item()}"
            if c["filter_type"].item() == "gabor":
                title += f" {float(c['orientation']):.0f}°"
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        row, col = divmod(i, ncols)
        if row == nrows - 1 or i + ncols >= len(selections):
            ax.set_xlabel("kx", fontsize=8)
        if col == 0:
            ax.set_ylabel("ky", fontsize=8)
    for ax in axes.ravel()[len(selections):]:
        ax.set_visible(False)
    fig.colorbar(mappable, ax=axes.ravel().tolist(), label="|Ŵ|", shrink=0.8)
    return fig


def plot_census(census, *, ax=None, title=None, fractions=True):
    """Census of filter types per layer as stacked bars.

    Parameters
    ----------
    census : xarray.DataArray
        Counts with dims ``(layer, filter_type)`` from :func:`xtl.filter_census`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure by default.
    title : str, optional
        Axis title.
    fractions : bool, default True
        Draw each layer's counts as fractions of its kernels (the layers of a CNN hold
        very different numbers of kernels, e.g. 24 in the first and 576 in the middle),
        the counts going to the tick labels; False draws the counts.

    Returns
    -------
    matplotlib.axes.Axes
        One stacked bar per layer, one colour per filter type, with a legend outside.

    Raises
    ------
    ValueError
        ``census`` without dims ``layer`` and ``filter_type``.
    """
    if not isinstance(census, xr.DataArray) or set(census.dims) != {"layer", "filter_type"}:
        raise ValueError("census must be a DataArray with dims (layer, filter_type)")
    census = census.transpose("layer", "filter_type")
    own = ax is None
    if own:
        _, ax = _plt().subplots(figsize=(6, 3.5))
    layers = census["layer"].values if "layer" in census.coords else np.arange(1, census.sizes["layer"] + 1)
    x = np.arange(layers.size)
    bottom = np.zeros(layers.size)
    totals = np.asarray(census.sum("filter_type").values, float)
    scale = np.where(totals > 0, totals, 1.0) if fractions else np.ones(layers.size)
    for t in census["filter_type"].values:
        h = np.asarray(census.sel(filter_type=t).values, float) / scale
        ax.bar(x, h, bottom=bottom, label=str(t), color=FILTER_COLORS.get(str(t)))
        bottom += h
    if fractions:
        ax.set_xticks(x, [f"{v}\n{int(n)}" for v, n in zip(layers, totals)])
        ax.set_xlabel("layer (and its number of kernels)")
        ax.set_ylabel("fraction of the layer's kernels")
        ax.set_ylim(0, 1)
    else:
        ax.set_xticks(x, [str(v) for v in layers])
        ax.set_xlabel("layer")
        ax.set_ylabel("number of kernels")
    if title:
        ax.set_title(title)
    legend_outside(ax)
    if own:
        ax.figure.tight_layout()
    return ax


def plot_vorticity(omega, *, ax=None, title=None, cmap="RdBu_r"):
    """Draw one vorticity snapshot ``omega(y, x)`` with a symmetric colour scale.

    Parameters
    ----------
    omega : xarray.DataArray
        2D field with dims ``("y", "x")``.

    Returns
    -------
    matplotlib Axes
    """
    if not isinstance(omega, xr.DataArray) or set(omega.dims) != {"y", "x"}:
        raise ValueError(
            "omega must be a DataArray with dims ('y', 'x'); select one snapshot first, "
            f"got {getattr(omega, 'dims', type(omega).__name__)}"
        )
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.4))
    limit = float(np.nanmax(np.abs(omega.values))) or 1.0
    mesh = ax.pcolormesh(omega.x, omega.y, omega.transpose("y", "x").values, cmap=cmap,
                         vmin=-limit, vmax=limit, shading="auto")
    ax.figure.colorbar(mesh, ax=ax, label="ω")
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title is not None:
        ax.set_title(title)
    return ax
