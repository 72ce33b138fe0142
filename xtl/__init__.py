"""xtl: explainable transfer learning of neural-network subgrid-scale closures.

Importing :mod:`xtl` registers the ``.tl`` accessors on xarray objects.
"""
__version__ = "0.1.0"
