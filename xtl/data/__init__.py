"""Labeled data: files (netCDF, CF, atomic writes, locks), coarse-graining, flow spectra
and metrics.
"""
