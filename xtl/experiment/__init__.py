"""Whole experiments: the config, the stages and their workspace, estimates, the report
and its figures.
"""
