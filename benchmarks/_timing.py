"""Timing helper shared by the benchmark scripts (medians: the machines are noisy)."""
import time

import numpy as np


def median_ms(func, calls=1, repeats=7, warmup=1):
    """Median over ``repeats`` of the mean ms per call of ``calls`` calls of ``func()``."""
    for _ in range(warmup):
        func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return float(np.median(times))
