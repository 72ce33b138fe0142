"""A posteriori LES benchmark: the cost of a CNN closure inside the solver.

Prints, for the demo network (6 × 24, 5×5) and the paper's (11 × 64, 5×5) on a
64² LES grid, the median ms per LES step with the closure, and its ratio to the
sum of the closure's bare inference time (the backend's forward pass on one
normalized (1, 64, 64, 2) array) and the no-closure step, all measured in this
run. Goal: ratio ≤ 1.15.

Usage: python benchmarks/les.py
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from _timing import median_ms

import xtl
from xtl.backends import get_backend
from xtl.backends.base import NetworkSpec, stack_inputs
from xtl.les import ModelClosure, les_case
from xtl.solver import SpectralGrid, initial_state, make_stepper

REPEATS = 7
N = 64


def measure(spec: NetworkSpec, calls: int):
    case = les_case(xtl.get_case("small-base"))
    grid = SpectralGrid(N)
    backend = get_backend("keras")
    model = backend.build(spec, {"psi": 1.0, "omega": 10.0, "pi": 5.0}, seed=0)
    model.provenance = {"grid": [N, N]}
    closure = ModelClosure(model)
    state = initial_state(case, grid, seed=0)
    plain = make_stepper(case, grid)
    closed = make_stepper(case, grid, closure=closure)
    psi = grid.irfft2(state.omega_hat * grid.inv_k2)
    omega = grid.irfft2(state.omega_hat)
    x = stack_inputs(psi[None], omega[None], model.normalization)

    def inference():
        backend.predict_normalized(model, x)

    # steps from a copy of the state so that both steppers see the same flow; the three
    # are timed in interleaved rounds so that drifts of the machine hit them alike
    s_plain, s_closed = state.copy(), state.copy()
    rounds = {"closed": [], "inference": [], "plain": []}
    funcs = {"closed": lambda: closed.step(s_closed), "inference": inference,
             "plain": lambda: plain.step(s_plain)}
    for _ in range(REPEATS):
        for name, func in funcs.items():
            rounds[name].append(median_ms(func, calls, repeats=1, warmup=1))
    ratio = np.median(np.array(rounds["closed"])
                      / (np.array(rounds["inference"]) + np.array(rounds["plain"])))
    return (*(float(np.median(rounds[k])) for k in ("closed", "inference", "plain")),
            float(ratio))


def main():
    print(f"LES grid {N}²; keras backend on {get_backend('keras').device()}; medians of "
          f"{REPEATS} interleaved rounds; ratio = median over rounds of "
          "step+CNN / (inference + bare step)")
    print(f"{'network':>16} {'step+CNN ms':>12} {'inference ms':>13} {'bare step ms':>13} "
          f"{'ratio':>7}")
    for label, spec, calls in (("demo 6x24", NetworkSpec(n_layers=6, channels=24), 40),
                               ("paper 11x64", NetworkSpec(), 10)):
        t_closed, t_inf, t_plain, ratio = measure(spec, calls)
        print(f"{label:>16} {t_closed:12.2f} {t_inf:13.2f} {t_plain:13.3f} {ratio:7.3f}")


if __name__ == "__main__":
    main()
