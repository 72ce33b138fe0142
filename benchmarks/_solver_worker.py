"""A timing worker of benchmarks/solver.py: one process, commands as JSON lines on stdin.

``python _solver_worker.py xtl`` times xtl (this repository's environment);
``python _solver_worker.py pyqg`` times pyqg's BTModel (its own virtualenv: it imports
neither xtl nor anything beyond numpy and pyqg).

Commands: ``{"op": "setup", "key", "what", "n", "threads"}`` builds a timed callable,
``{"op": "time", "key", "calls"}`` answers ``{"ms": mean ms per call}``.
"""
import json
import math
import sys
import time


def _xtl_callable(what, n, threads):
    import numpy as np

    if what.startswith(("fwd:", "inv:")):  # "fwd:FFTW_MEASURE:2" = batch of 2, per field
        from xtl.physics.fourier import FFTPlan

        direction, planner, batch = what.split(":")
        batch = int(batch)
        plan = FFTPlan(n, (batch,) if batch > 1 else (), "pyfftw", threads, planner)
        plan.real[...] = np.random.default_rng(0).standard_normal(plan.real.shape)
        plan.forward()
        plan.spec *= 1.0 / (n * n)  # the input of the inverse: the inverse then returns the field
        # (the inverse destroys its input: later calls transform scratch values, same work)
        return (plan.forward if direction == "fwd" else plan.inverse), batch
    import xtl
    from xtl.solver import SpectralGrid, initial_state, make_stepper

    kernels = what.split(":")[1] if ":" in what else "auto"
    case = xtl.get_case("small-base", n=n, n_les=n // 4, dt=1e-4)
    grid = SpectralGrid(n, threads=threads)
    stepper = make_stepper(case, grid, kernels=kernels)
    state = initial_state(case, grid, seed=0)
    for _ in range(3):
        stepper.step(state)
    return (lambda: stepper.step(state)), 1


def _pyqg_callable(what, n, threads):
    import pyqg

    model = pyqg.BTModel(nx=n, L=2 * math.pi, dt=1e-4, tmax=1e9, twrite=10**9, ntd=threads,
                         tavestart=1e30, log_level=0)
    for _ in range(3):
        model._step_forward()
    return model._step_forward, 1


def main(mode):
    make = _xtl_callable if mode == "xtl" else _pyqg_callable
    funcs = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "setup":
            funcs[cmd["key"]] = make(cmd["what"], cmd["n"], cmd["threads"])
            answer = {"ok": True}
        elif cmd["op"] == "time":
            func, per = funcs[cmd["key"]]
            func()
            start = time.perf_counter()
            for _ in range(cmd["calls"]):
                func()
            answer = {"ms": (time.perf_counter() - start) / cmd["calls"] / per * 1e3}
        else:
            break
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
