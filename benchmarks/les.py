"""A posteriori LES benchmark: what one LES step costs with each closure.

For the demo network (6 × 24, 5×5) on the study's 32² and the demo's 64² LES grids,
and the paper's network (11 × 64) on 64², prints the median ms per LES step (AB2–CN,
one closure call per step) with no closure, Smagorinsky, dynamic Smagorinsky and the
network closure — through ``ModelClosure`` (the backend's graph-compiled forward) and,
for comparison, through the eager ``backend.predict`` it used before — and the bare
network inference on one normalized field. TensorFlow runs on one thread, as on a
single-threaded dask worker of the a posteriori stage. All are timed in interleaved
rounds (medians over rounds), so that drifts of a shared machine hit them alike.

Ratios: step+NN / (inference + bare step) (goal ≤ 1.15: the closure adds only its FFTs
and the normalization) and eager / compiled step. The last column projects the wall time
of one network run of 50 time units (the study's a posteriori length, over 50 large-eddy
turnover times of its flows) at the grid's LES time step.

Usage: python benchmarks/les.py
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _timing import median_ms

import xtl
from xtl.nn.backends.base import get_backend
from xtl.nn.spec import NetworkSpec, stack_inputs
from xtl.nn.closure import ModelClosure
from xtl.physics.closures import DynamicSmagorinsky, Smagorinsky
from xtl.solver import SpectralGrid, initial_state, make_stepper
from xtl.solver.les import les_case

REPEATS = 7
RUN_TIME = 50.0


class _EagerClosure:
    """The network closure as it was: one eager ``backend.predict`` per step."""

    def __init__(self, model):
        self.model = model

    def __call__(self, psi, omega):
        return np.asarray(self.model.predict(psi[None], omega[None])[0], dtype=float)


def measure(spec: NetworkSpec, n: int, calls: int) -> dict:
    """Median ms per call of every variant, over interleaved rounds; and the ratios."""
    case = les_case(xtl.get_case("small-base"), n=n)
    grid = SpectralGrid(n)
    backend = get_backend("keras")
    model = backend.build(spec, {"psi": 1.0, "omega": 10.0, "pi": 5.0}, seed=0)
    model.provenance = {"grid": [n, n]}
    state = initial_state(case, grid, seed=0)
    steppers = {"bare": make_stepper(case, grid),
                "smagorinsky": make_stepper(case, grid, Smagorinsky()),
                "dynamic smag.": make_stepper(case, grid, DynamicSmagorinsky()),
                "NN": make_stepper(case, grid, ModelClosure(model)),
                "NN eager": make_stepper(case, grid, _EagerClosure(model))}
    states = {name: state.copy() for name in steppers}
    psi = grid.irfft2(state.omega_hat * grid.inv_k2)
    omega = grid.irfft2(state.omega_hat)
    x = stack_inputs(psi[None], omega[None], model.normalization)
    forward = backend.compiled_forward(model)
    funcs = {name: (lambda s=s, st=states[name]: s.step(st)) for name, s in steppers.items()}
    funcs["inference"] = lambda: forward(x)
    rounds = {name: [] for name in funcs}
    for _ in range(REPEATS):
        for name, func in funcs.items():
            few = max(1, calls // 8) if name == "NN eager" else calls
            rounds[name].append(median_ms(func, few, repeats=1, warmup=1))
    r = {k: np.array(v) for k, v in rounds.items()}
    out = {k: float(np.median(v)) for k, v in r.items()}
    out["ratio"] = float(np.median(r["NN"] / (r["inference"] + r["bare"])))
    out["eager/compiled"] = float(np.median(r["NN eager"] / r["NN"]))
    out["run_s"] = out["NN"] * 1e-3 * RUN_TIME / case.dt
    out["dt"] = case.dt
    return out


def main():
    backend = get_backend("keras")
    backend.set_threads(1)
    print(f"keras backend on {backend.device()}, 1 TensorFlow thread; median ms per LES step "
          f"over {REPEATS} interleaved rounds")
    cols = ("bare", "smagorinsky", "dynamic smag.", "NN", "NN eager", "inference")
    print(f"{'network, grid':>18} " + " ".join(f"{c:>13}" for c in cols)
          + f" {'NN/(inf+bare)':>13} {'eager/NN':>9} {'NN run, t=50':>14}")
    for label, spec, n, calls in (
            ("demo 6x24, 32²", NetworkSpec(n_layers=6, channels=24), 32, 40),
            ("demo 6x24, 64²", NetworkSpec(n_layers=6, channels=24), 64, 20),
            ("paper 11x64, 64²", NetworkSpec(), 64, 5)):
        m = measure(spec, n, calls)
        print(f"{label:>18} " + " ".join(f"{m[c]:13.3f}" for c in cols)
              + f" {m['ratio']:13.3f} {m['eager/compiled']:9.1f} {m['run_s']:12.0f} s"
              f"  (dt = {m['dt']:g})")


if __name__ == "__main__":
    main()
