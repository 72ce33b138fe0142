"""The mathematics at the bottom of xtl: Fourier grids and operators, cases, closures.

Nothing here knows about files, networks or experiments; every other room
builds on it.
"""
