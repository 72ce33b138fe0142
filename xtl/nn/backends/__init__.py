"""Model backends: a registry of implementations of :class:`~xtl.nn.backends.base.Backend`.

The network's spec, the :class:`~xtl.nn.model.Model`, the model as a Dataset
and model files live beside this package: :mod:`xtl.nn.spec`,
:mod:`xtl.nn.model`, :mod:`xtl.nn.dataset`, :mod:`xtl.nn.files`.

The built-in ``"keras"`` backend (Keras 3 on TensorFlow) is registered by
name and imported only when first used, so ``import xtl`` does not import
TensorFlow. Other packages add backends through the ``xtl.backends``
entry-point group::

    [project.entry-points."xtl.backends"]
    mybackend = "mypackage.backend:MyBackend"

or at run time with :func:`register_backend`.
"""
from __future__ import annotations

from .base import (
    Backend,
    TrainingData,
    available_backends,
    get_backend,
    register_backend,
)

__all__ = ["Backend", "TrainingData", "get_backend", "register_backend", "available_backends",
           "pin_worker_threads"]


def _worker_threads():
    """Threads of the dask worker process running this code; None elsewhere.

    None too for a worker thread inside the client's own process (a
    ``LocalCluster(processes=False)``): that process's thread pools are the user's.
    """
    import multiprocessing

    if multiprocessing.parent_process() is None:
        return None
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def pin_worker_threads(names) -> None:
    """Pin the named backends' thread pools to the threads of the dask worker process
    running this code (nothing elsewhere), before their runtimes start."""
    threads = _worker_threads()
    if threads is not None:
        for name in names:
            get_backend(name).set_threads(threads)
