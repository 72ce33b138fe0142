"""The ``.tl`` accessors on :class:`xarray.Dataset` and :class:`xarray.DataArray`.

Importing this module (``import xtl`` does) registers ``ds.tl`` and ``da.tl``. Each method
is a thin wrapper over a plain function elsewhere in xtl, passing ``self._obj`` as the
first argument; that function's docstring is the reference. Methods valid on both kinds
of object live in :class:`_TLAccessor`; the others in the Dataset or DataArray class.

To add a method, add it under a comment naming its module, importing the function
lazily (registering the accessors stays cheap and imports nothing else), e.g.::

    # --- xtl.coarse --------------------------------------------------------------
    def coarse_grain(self, *args, **kwargs):
        \"\"\"Coarse-grain to the LES grid; see :func:`xtl.coarse.coarse_grain`.\"\"\"
        from .coarse import coarse_grain

        return coarse_grain(self._obj, *args, **kwargs)
"""
from __future__ import annotations

import xarray as xr

__all__ = ["TLDatasetAccessor", "TLDataArrayAccessor"]


class _TLAccessor:
    """Methods shared by ``Dataset.tl`` and ``DataArray.tl``."""

    def __init__(self, obj):
        self._obj = obj

    # --- xtl.spectral: spectra of fields ---------------------------------------------
    def spectrum(self, kind="power", *, var=None, kmax=None):
        """Isotropic shell-summed spectrum.

        Parameters
        ----------
        kind : {"power", "energy", "enstrophy"}
            Power of the field, energy from ψ, enstrophy from ω.
        var : str, optional
            Dataset only: the variable (default ``psi``/``omega``; every (y, x)
            variable for power).
        kmax : int, optional
            Last shell kept.

        Returns
        -------
        xarray.DataArray or xarray.Dataset
            See :func:`xtl.spectral.spectrum`.
        """
        from .spectral import spectrum

        return spectrum(self._obj, kind, var=var, kmax=kmax)

    def transfer_spectrum(self, pi=None, *, kind="energy", var=None, kmax=None):
        """Interscale transfer spectrum of the SGS term Π.

        Parameters
        ----------
        pi : xarray.DataArray or str, optional
            Π (a DataArray), or for a Dataset the name of its Π variable (default "pi").
        kind : {"energy", "enstrophy"}
            Transfer of energy (with ψ) or enstrophy (with ω).
        var : str, optional
            Dataset only: the ψ or ω variable.
        kmax : int, optional
            Last shell kept.

        Returns
        -------
        xarray.DataArray
            See :func:`xtl.spectral.transfer_spectrum`.
        """
        from .spectral import transfer_spectrum

        return transfer_spectrum(self._obj, pi, kind=kind, var=var, kmax=kmax)

    # --- xtl.spectral: kernel filters ---------------------------------------------------
    def filter_census(self, *, n=None, chunks=None, **criteria):
        """Number of kernels of each filter type per layer.

        Parameters
        ----------
        n : int, optional
            Padded grid size, when this is a model Dataset (not a classification).
        chunks : dict, optional
            Chunks over layer/channel_out/channel_in, for a model Dataset.
        **criteria
            Classification criteria, for a model Dataset.

        Returns
        -------
        xarray.DataArray
            Counts ``(layer, filter_type)``; see :func:`xtl.spectral.filter_census`.
        """
        from .spectral import filter_census

        return filter_census(self._obj, n=n, chunks=chunks, **criteria)


@xr.register_dataset_accessor("tl")
class TLDatasetAccessor(_TLAccessor):
    """``ds.tl``: xtl methods on a Dataset (flow fields, a model, a classification)."""

    # --- xtl.coarse --------------------------------------------------------------------
    def coarse_grain(self, n_les=None, filter="gaussian", *, width=None, dealias=None):
        """Filter and coarse-grain this DNS Dataset to the LES grid, with Π.

        Parameters
        ----------
        n_les : int, optional
            LES grid size (even, smaller than the DNS grid); default the case's.
        filter : {"gaussian", "box", "sharp"}
            The filter.
        width : float, optional
            Filter width Δ; default ``2·(2π/n_les)``.
        dealias : bool, optional
            2/3 rule for N(ω, ψ) on the DNS grid; default the case's.

        Returns
        -------
        xarray.Dataset
            ``psi``, ``omega``, ``pi`` on the LES grid; see :func:`xtl.coarse.coarse_grain`.
        """
        from .coarse import coarse_grain

        return coarse_grain(self._obj, n_les, filter, width=width, dealias=dealias)

    # --- xtl.spectral: kernel filters ---------------------------------------------------
    def kernel_filters(self, n=None, *, shift=True, chunks=None):
        """``|Ŵ|`` of every kernel of this model, zero-padded to ``n × n`` (lazy).

        Parameters
        ----------
        n : int, optional
            Padded grid size (e.g. the LES grid); default the model's training grid.
        shift : bool, default True
            k = 0 at the centre (fftshifted).
        chunks : dict, optional
            Chunks over layer/channel_out/channel_in.

        Returns
        -------
        xarray.DataArray
            ``(layer, channel_out, channel_in, ky, kx)``; see
            :func:`xtl.spectral.kernel_filters`.
        """
        from .spectral import kernel_filters

        return kernel_filters(self._obj, n, shift=shift, chunks=chunks)

    def classify_kernels(self, n=None, *, chunks=None, **criteria):
        """Filter type (and Gabor orientation) of every kernel of this model.

        Parameters
        ----------
        n : int, optional
            Padded grid size; default the model's training grid.
        chunks : dict, optional
            Chunks over layer/channel_out/channel_in.
        **criteria
            ``flat_ratio``, ``edge``, ``min_anisotropy``, ``kmax``.

        Returns
        -------
        xarray.Dataset
            See :func:`xtl.spectral.classify_kernels`.
        """
        from .spectral import classify_kernels

        return classify_kernels(self._obj, n, chunks=chunks, **criteria)

    def kernel_change(self, other, *, n=None, percentile=99.9, by="spectral", chunks=None):
        """Change of every kernel from this (base) model to ``other`` (re-trained).

        Parameters
        ----------
        other : xarray.Dataset
            The re-trained (TL) model Dataset.
        n : int, optional
            Padded grid size; default this model's training grid.
        percentile : float, default 99.9
            Kernels at or above this percentile of change are listed.
        by : {"spectral", "physical"}
            Which change ranks the kernels.
        chunks : dict, optional
            Chunks over layer/channel_out/channel_in.

        Returns
        -------
        xarray.Dataset
            See :func:`xtl.spectral.kernel_change`.
        """
        from .spectral import kernel_change

        return kernel_change(self._obj, other, n=n, percentile=percentile, by=by, chunks=chunks)


@xr.register_dataarray_accessor("tl")
class TLDataArrayAccessor(_TLAccessor):
    """``da.tl``: xtl methods on a DataArray (a field, or filter magnitudes ``|Ŵ|``)."""

    # --- xtl.spectral: kernel filters ---------------------------------------------------
    def radial_profile(self, *, kmax=None):
        """Mean of ``|Ŵ|`` over each integer shell.

        Parameters
        ----------
        kmax : int, optional
            Last shell (default: the whole circles).

        Returns
        -------
        xarray.DataArray
            ``(..., k)``; see :func:`xtl.spectral.radial_profile`.
        """
        from .spectral import radial_profile

        return radial_profile(self._obj, kmax=kmax)

    def classify_filters(self, **criteria):
        """Filter type of each ``|Ŵ|`` over the leading dims.

        Parameters
        ----------
        **criteria
            ``flat_ratio``, ``edge``, ``min_anisotropy``, ``kmax``.

        Returns
        -------
        xarray.Dataset
            See :func:`xtl.spectral.classify_filters`.
        """
        from .spectral import classify_filters

        return classify_filters(self._obj, **criteria)
