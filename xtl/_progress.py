"""Progress bars that behave in a terminal, a pipe and a Jupyter notebook.

``progress=None`` (the default everywhere in xtl) shows a bar in a Jupyter
kernel and when stderr is a terminal, and nothing when output is piped or
logged. In a notebook the bar is a widget when ``ipywidgets`` is installed
and plain text otherwise (tqdm.auto would warn "IProgress not found" there).
"""
from __future__ import annotations

import sys

__all__ = ["progress_bar", "show_progress", "in_notebook"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython) kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def show_progress(progress=None) -> bool:
    """``progress`` if given, else True in a notebook or when stderr is a terminal.

    Parameters
    ----------
    progress : bool, optional

    Returns
    -------
    bool
    """
    if progress is not None:
        return bool(progress)
    if in_notebook():
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False


def _bar_class():
    """tqdm's widget bar in a notebook with ipywidgets, else its text bar."""
    if in_notebook():
        from tqdm import notebook

        if getattr(notebook, "IProgress", None) is not None:
            return notebook.tqdm
    from tqdm.std import tqdm

    return tqdm


def progress_bar(progress=None, **kwargs):
    """A tqdm progress bar, shown as :func:`show_progress` decides.

    Parameters
    ----------
    progress : bool, optional
        True/False to force it on/off; None for the default.
    **kwargs
        Passed to tqdm (``total``, ``desc``, ``unit``, ``initial``, ...).

    Returns
    -------
    tqdm.std.tqdm
        A bar (disabled, and silent, when not shown).
    """
    return _bar_class()(disable=not show_progress(progress), **kwargs)
