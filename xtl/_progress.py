"""Progress bars that behave in a terminal, a pipe and a Jupyter notebook.

``progress=None`` (the default everywhere in xtl) shows a bar in a Jupyter
kernel and when stderr is a terminal, and nothing when output is piped or
logged. In a notebook the bar is a widget when ``ipywidgets`` is installed
and plain text otherwise (tqdm.auto would warn "IProgress not found" there).
"""
from __future__ import annotations

import sys

__all__ = ["progress_bar", "show_progress", "in_notebook", "run_calls"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter (IPython) kernel."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def show_progress(progress=None) -> bool:
    """``progress`` if given, else True in a notebook or when stderr is a terminal."""
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


def run_calls(func, calls: dict, *, client=None, progress=None, desc: str, unit: str) -> dict:
    """``{key: func(*args)}`` for ``calls`` ``{key: args}``, with a progress bar.

    Without ``client`` the calls run here, one after the other in the order of
    ``calls``; with a ``distributed.Client`` they are tasks prioritized in that
    order (``pure=False``: each runs), collected as they finish. Arguments the
    tasks share are the caller's to scatter first.

    Parameters
    ----------
    calls : dict
        ``{key: tuple of arguments}``, in the order to run them.
    progress : bool, optional
        As :func:`progress_bar`.
    desc, unit : str
        The bar's label and unit.

    Returns
    -------
    dict
        ``{key: result}``; the first failing call's exception is raised.
    """
    results = {}
    bar = progress_bar(progress, total=len(calls), desc=desc, unit=unit)
    try:
        if client is None:
            for key, args in calls.items():
                results[key] = func(*args)
                bar.update(1)
        else:
            from distributed import as_completed

            futures = {client.submit(func, *args, pure=False, priority=-i): key
                       for i, (key, args) in enumerate(calls.items())}
            for fut in as_completed(futures, loop=client.loop):
                results[futures[fut]] = fut.result()
                bar.update(1)
    finally:
        bar.close()
    return results
