"""xtl run --dry-run: the cost of each stage from measured rates and the config's counts."""
import copy

import pytest

from xtl.experiment.config import DEMO_CONFIG, load_config
from xtl.experiment.estimate import estimate_experiment, format_estimate

RATES = {"dns_step": {"small-base": 1e-3, "small-kf": 1e-3, "small-beta": 2e-3},
         "les_step": 5e-3, "les_physics_step": 5e-4, "les_dt": 4e-3, "train_sample_epoch": 0.01,
         "transfer_sample_epoch": 0.005, "workers": 2}


def _rows(config):
    return {r.stage: r for r in estimate_experiment(config, RATES)}


def test_stage_costs_are_the_counts_times_the_measured_rates():
    cfg = load_config()
    rows = _rows(cfg)
    # base: 2 members x 30 / 5e-4 steps at 1 ms on 2 workers
    assert rows["data-small-base"].seconds == pytest.approx(2 * 60000 * 1e-3 / 2)
    assert rows["data-small-beta"].seconds == pytest.approx(60000 * 2e-3)  # one member
    # base training: 2 x 101 snapshots, 75 % for training, 90 % of it fitted, 30 epochs
    n_fit = int(int(2 * 101 * 0.75) * 0.9)
    assert rows["base-model"].seconds == pytest.approx(n_fit * 30 * 0.01)
    # the sweep: 6 layers x 2 seeds x 12 fitted samples (80 % of 15) x 40 epochs, plus the
    # scratch baseline, on 2 workers
    n_tl = round(0.1 * int(2 * 101 * 0.75))
    fit = int(n_tl * 0.8)
    expected = (6 * 2 * fit * 40 * 0.005 + 2 * fit * 40 * 0.01) / 2
    assert rows["sweep-small-kf"].seconds == pytest.approx(expected)


def test_aposteriori_counts_every_closure_and_initial_state():
    rows = _rows(load_config())
    # the demo: 2 states x (BNN, TLNN, scratch + none and 2 physics closures)
    # x 3 / 4e-3 steps, on 2 workers
    expected = 2 * 750 * (3 * 5e-3 + 3 * 5e-4) / 2
    assert rows["aposteriori-small-kf"].seconds == pytest.approx(expected)
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["les"].update(initial_states=4, dt=8e-3, save_interval=0.24,  # 30 steps of dt
                      baseline="smagorinsky")
    raw["sweep"]["baselines"] = []
    rows = _rows(load_config(raw))
    assert rows["aposteriori-small-kf"].seconds == pytest.approx(4 * 375 * (2 * 5e-3 + 2 * 5e-4)
                                                                 / 2)


def test_more_seeds_cost_proportionally_more():
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["sweep"] = {"seeds": 4}
    four = _rows(load_config(raw))["sweep-small-kf"].seconds
    raw["sweep"] = {"seeds": 2}
    two = _rows(load_config(raw))["sweep-small-kf"].seconds
    assert four == pytest.approx(2 * two)


def test_format_says_when_an_experiment_belongs_on_a_cluster():
    cfg = load_config()
    rows = estimate_experiment(cfg, RATES)
    text = format_estimate(rows, RATES)
    assert "base-model" in text and "total" in text and "cluster" not in text
    slow = dict(RATES, train_sample_epoch=100.0)
    assert "belongs on a GPU node or a dask cluster" in format_estimate(
        estimate_experiment(cfg, slow), slow)


def test_pairs_cost_the_passes_of_the_layers_from_the_first_of_each_pair():
    """Re-training from layer a costs the passes of layers a..L: linear from layer 1's
    rate (the whole network) to the last layer's (on its cached prefix)."""
    from xtl.experiment.estimate import retrain_seconds

    rates = dict(RATES, transfer_first_sample_epoch=0.011, transfer_last_sample_epoch=0.001)
    assert retrain_seconds(rates, 1, 6) == pytest.approx(0.011)
    assert retrain_seconds(rates, 6, 6) == pytest.approx(0.001)
    assert retrain_seconds(rates, 3, 6) == pytest.approx(0.001 + 0.010 * 3 / 5)
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["sweep"]["pairs"] = True
    rows = {r.stage: r for r in estimate_experiment(load_config(raw), rates)}
    fit = int(round(0.1 * int(2 * 101 * 0.75)) * 0.8)
    # 15 pairs of 6 layers: 5 start at layer 1, 4 at layer 2, ...; 2 seeds, 40 epochs, 2 workers
    per_seed = sum((6 - a) * retrain_seconds(rates, a, 6) for a in range(1, 6))
    assert rows["pairs-small-kf"].seconds == pytest.approx(per_seed * 2 * fit * 40 / 2)
    assert rows["pairs-small-kf"].work.startswith("15 pairs x 2 seeds")
    # without pairs: no such stage; the single-layer sweep costs the mean rate per layer
    assert "pairs-small-kf" not in _rows(load_config())
