"""Tests of xtl/sweep.py: seed-resolved sweeps, baselines, budgets and the best set."""
import numpy as np
import pytest
import xarray as xr

from conftest import TINY_SPEC, make_les
from xtl.nn.files import load_model
from xtl.nn.model import model_id, model_to_dataset
from xtl.nn.sweep import best_set, budget_sweep, layer_sweep, seeds_of, summarize_sweep
from xtl.nn.training import evaluate, train, transfer

FAST = dict(batch_size=8, learning_rate=3e-3)


def weights(model):
    return model_to_dataset(model)[["kernel", "bias"]]


@pytest.fixture(scope="module")
def sets(les_target):
    """(re-training pool, test set) of the synthetic target flow."""
    return les_target.isel(time=slice(0, 24)), les_target.isel(time=slice(40, 46))


# ------------------------------------------------------------------ the sweep
def test_sweep_over_layers_and_seeds(trained_model, sets, tmp_path):
    pool, test = sets
    sweep = layer_sweep(trained_model, pool, test, layers=[1, 3], seeds=[0, 1], n_samples=8,
                        epochs=2, save_dir=tmp_path, **FAST)
    assert sweep.cc.dims == ("layer", "seed")
    assert sweep.layer.values.tolist() == [1, 3] and sweep.seed.values.tolist() == [0, 1]
    for v in ("cc", "cc_forward", "rel_l2", "spectrum_error", "final_loss", "epochs_run",
              "best_epoch", "train_seconds"):
        assert np.isfinite(sweep[v]).all(), v
    assert (sweep.epochs_run == 2).all() and sweep.attrs["epochs"] == 2
    # two seeds draw two different subsets of the pool, of the asked size
    assert sweep.subset.dims == ("seed", "draw") and sweep.subset.shape == (2, 8)
    assert sweep.subset.sel(seed=0).values.tolist() != sweep.subset.sel(seed=1).values.tolist()
    # each entry is the score of that layer re-trained on that seed's subset
    tl = transfer(trained_model, pool, [3], n_samples=8, seed=1, epochs=2, progress=False,
                  **FAST)
    assert float(evaluate(tl, test).cc) == pytest.approx(float(sweep.cc.sel(layer=3, seed=1)),
                                                         rel=1e-5)
    saved = load_model(tmp_path / "tl_layer3_seed1.keras")
    xr.testing.assert_equal(weights(saved), weights(tl))
    assert saved.provenance["fraction"] == pytest.approx(8 / 24)
    # summary over seeds
    np.testing.assert_allclose(sweep.cc_mean, sweep.cc.mean("seed"))
    np.testing.assert_allclose(sweep.cc_sem, sweep.cc.std("seed", ddof=1) / np.sqrt(2))
    assert sweep.attrs["best"] == int(sweep.layer[int(sweep.cc_mean.argmax("layer"))])
    assert sweep.attrs["base_model"] == model_id(trained_model)
    assert float(sweep.base_cc) == pytest.approx(float(evaluate(trained_model, test).cc))


def test_same_seed_same_subset_and_weights(trained_model, sets, tmp_path):
    pool, test = sets
    kwargs = dict(layers=[2], seeds=[5], n_samples=6, epochs=1, **FAST)
    a = layer_sweep(trained_model, pool, test, save_dir=tmp_path / "a", **kwargs)
    b = layer_sweep(trained_model, pool, test, save_dir=tmp_path / "b", **kwargs)
    xr.testing.assert_identical(a.subset, b.subset)
    xr.testing.assert_identical(weights(load_model(tmp_path / "a" / "tl_layer2_seed5.keras")),
                                weights(load_model(tmp_path / "b" / "tl_layer2_seed5.keras")))
    assert float(a.cc.squeeze()) == float(b.cc.squeeze())


def test_baselines_scratch_and_full_target(trained_model, sets, tmp_path):
    pool, test = sets
    sweep = layer_sweep(trained_model, pool, test, layers=[1], seeds=[0, 1], n_samples=8,
                        baselines=["scratch", "full_target"], epochs=1, save_dir=tmp_path,
                        **FAST)
    assert sweep.baseline.values.tolist() == ["scratch", "full_target"]
    assert sweep.baseline_cc.dims == ("baseline", "seed")
    assert np.isfinite(sweep.baseline_cc).all()
    base_w = weights(trained_model)
    for s in (0, 1):
        scratch = load_model(tmp_path / f"scratch_seed{s}.keras")
        full = load_model(tmp_path / f"full_target_seed{s}.keras")
        # the from-scratch network: every layer differs from the base network's ...
        for k in range(1, 4):
            assert not np.allclose(weights(scratch).kernel.sel(layer=k),
                                   base_w.kernel.sel(layer=k))
        # ... it trained on the seed's subset (90 % of it, 10 % validation) ...
        assert scratch.provenance["kind"] == "scratch"
        assert scratch.provenance["n_samples"] + scratch.provenance["n_validation"] == 8
        # ... and the upper bound on every target sample of the pool
        assert full.provenance["kind"] == "full_target"
        assert full.provenance["n_samples"] + full.provenance["n_validation"] == \
            pool.sizes["time"]
    # the scratch network of seed s is train() from seed s's fresh initialisation
    subset = pool.isel(time=sweep.subset.sel(seed=1).values)
    again = train(subset, trained_model.spec, seed=1, epochs=1, progress=False, **FAST)
    xr.testing.assert_equal(weights(again),
                            weights(load_model(tmp_path / "scratch_seed1.keras")))


def test_from_scratch_starts_from_a_fresh_initialisation(trained_model, sets):
    """With a vanishing learning rate the scratch network is the seed's initial network."""
    from xtl.nn.backends.base import get_backend

    pool, test = sets
    tiny_lr = dict(batch_size=8, learning_rate=1e-30)
    sweep = layer_sweep(trained_model, pool, test, layers=[1], seeds=[3], n_samples=8,
                        baselines=["scratch"], epochs=1, **tiny_lr)
    fresh = get_backend("keras").build(trained_model.spec, seed=3)
    fresh.normalization = trained_model.normalization
    assert float(sweep.baseline_cc.sel(baseline="scratch", seed=3)) != \
        pytest.approx(float(sweep.base_cc))
    np.testing.assert_allclose(weights(fresh).kernel.values,
                               weights(train(pool.isel(time=sweep.subset.sel(seed=3).values),
                                             trained_model.spec, seed=3, epochs=1,
                                             progress=False, **tiny_lr)).kernel.values)


def test_pairs_and_checkpoint_folders(trained_model, sets, tmp_path):
    pool, test = sets
    sweep = layer_sweep(trained_model, pool.isel(time=slice(0, 8)), test, pairs=True, epochs=1,
                        batch_size=8, checkpoint_dir=tmp_path / "ckpt", save_dir=tmp_path / "m")
    assert sweep.pair.values.tolist() == ["1+2", "1+3", "2+3"]
    assert sweep.cc.dims == ("pair", "seed")
    assert sweep.layer_a.values.tolist() == [1, 1, 2]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "tl_layer1_2_seed0", "tl_layer1_3_seed0", "tl_layer2_3_seed0"]
    # re-running into the same folders resumes the finished trainings
    again = layer_sweep(trained_model, pool.isel(time=slice(0, 8)), test, pairs=True,
                        epochs=1, batch_size=8, checkpoint_dir=tmp_path / "ckpt")
    xr.testing.assert_allclose(sweep.drop_vars(["train_seconds", "train_seconds_mean",
                                                "train_seconds_sem"]),
                               again.drop_vars(["train_seconds", "train_seconds_mean",
                                                "train_seconds_sem"]))


def test_budget_sweep(trained_model, sets, tmp_path):
    pool, test = sets
    out = budget_sweep(trained_model, pool, test, [12, 4], layers=[1, 3], seeds=[0, 1],
                       baselines=["scratch"], epochs=1, save_dir=tmp_path, **FAST)
    assert out.budget.values.tolist() == [4, 12]
    np.testing.assert_allclose(out.fraction, [4 / 24, 12 / 24])
    assert out.cc.dims == ("budget", "layer", "seed")
    assert out.best_set.dims == ("budget", "layer")
    for b in (4, 12):
        one = out.sel(budget=b)
        assert int(out.best_layer.sel(budget=b)) == int(one.layer[int(one.cc_mean.argmax("layer"))])
        assert (one.subset >= 0).sum() == 2 * b  # padded with -1 beyond the budget
    assert (tmp_path / "n4" / "tl_layer1_seed0.keras").exists()
    assert (tmp_path / "n12" / "scratch_seed1.keras").exists()
    # the budget-4 part is the sweep layer_sweep gives at 4 samples
    single = layer_sweep(trained_model, pool, test, layers=[1, 3], seeds=[0, 1], n_samples=4,
                         epochs=1, **FAST)
    np.testing.assert_allclose(out.cc.sel(budget=4), single.cc, rtol=1e-5)


def test_sweep_on_dask_client_matches_serial(trained_model, sets):
    """Trainings submitted to a (threaded, in-process) dask cluster give the same scores."""
    from distributed import Client, LocalCluster

    pool, test = sets
    kwargs = dict(layers=[2, 3], seeds=[0, 1], n_samples=6, epochs=1, batch_size=8)
    serial = layer_sweep(trained_model, pool, test, **kwargs)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        on_cluster = layer_sweep(trained_model, pool, test, client=client, **kwargs)
    drop = [v for v in serial.data_vars if "train_seconds" in v]  # wall time differs
    xr.testing.assert_allclose(serial.drop_vars(drop), on_cluster.drop_vars(drop), rtol=1e-6)


@pytest.mark.slow
def test_sweep_on_process_cluster(trained_model, sets):
    """Worker processes rebuild the base model from its Dataset and train there."""
    from distributed import Client, LocalCluster

    pool, test = sets
    kwargs = dict(layers=[1, 2], seeds=[0], n_samples=6, epochs=1, batch_size=8,
                  baselines=["scratch"])
    serial = layer_sweep(trained_model, pool, test, **kwargs)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        on_cluster = layer_sweep(trained_model, pool, test, client=client, **kwargs)
    drop = [v for v in serial.data_vars if "train_seconds" in v]  # wall time differs
    xr.testing.assert_allclose(serial.drop_vars(drop), on_cluster.drop_vars(drop), rtol=1e-5)


@pytest.mark.slow
def test_pair_sweep_on_a_process_cluster_equals_uncached_serial(trained_model, sets):
    """Two single-threaded worker processes train the pairs, each building its own
    prefix cache (pairs without layer 1); the scores are those of uncached serial runs."""
    from distributed import Client, LocalCluster

    pool, test = sets
    kwargs = dict(layers=[1, 2, 3], seeds=[0, 1], n_samples=6, epochs=2, batch_size=4,
                  pairs=True)
    serial = layer_sweep(trained_model, pool, test, cache_prefix=False, **kwargs)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        on_cluster = layer_sweep(trained_model, pool, test, client=client, **kwargs)
    assert on_cluster.pair.values.tolist() == ["1+2", "1+3", "2+3"]
    np.testing.assert_allclose(on_cluster.cc, serial.cc, rtol=0, atol=1e-6)
    np.testing.assert_allclose(on_cluster.final_loss, serial.final_loss, rtol=1e-5)


def test_pair_gains_on_constructed_sweeps():
    from scipy.stats import t as student
    from xtl.nn.sweep import pair_gains

    single = xr.Dataset({"cc": constructed([[0.80, 0.82, 0.81], [0.90, 0.91, 0.92]]),
                         "subset": (("seed", "draw"), np.zeros((3, 2), int))})
    d = np.array([0.01, 0.03, 0.02])  # pair 1+2 beats layer 2 (the best single) by d
    pairs = xr.Dataset({"cc": (("pair", "seed"), [single.cc.sel(layer=2).values + d,
                                                  single.cc.sel(layer=2).values - 0.1]),
                        "subset": single.subset},
                       coords={"pair": ["1+2", "1+3"], "seed": [0, 1, 2]})
    out = pair_gains(pairs, single)
    assert out.attrs["best_single"] == 2 and out.pair.values.tolist() == ["1+2", "1+3"]
    assert float(out.gain.sel(pair="1+2")) == pytest.approx(0.02)
    assert float(out.gain_sem.sel(pair="1+2")) == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert float(out.pvalue.sel(pair="1+2")) == pytest.approx(
        student.sf(0.02 / (d.std(ddof=1) / np.sqrt(3)), 2))
    assert float(out.gain.sel(pair="1+3")) == pytest.approx(-0.1)
    assert float(out.pvalue.sel(pair="1+3")) == 1.0  # constant difference, not better
    # two pairs tested: Holm doubles the smaller p, the larger stays (capped at 1)
    assert float(out.pvalue_holm.sel(pair="1+2")) == pytest.approx(
        2 * float(out.pvalue.sel(pair="1+2")))
    assert float(out.pvalue_holm.sel(pair="1+3")) == 1.0
    # lower is better: a gain is a decrease
    err = pair_gains(pairs.assign(rel_l2=-pairs.cc), single.assign(rel_l2=-single.cc),
                     metric="rel_l2")
    assert err.attrs["best_single"] == 2
    assert float(err.gain.sel(pair="1+2")) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="share their seeds and subsets"):
        pair_gains(pairs.assign(subset=single.subset + 1), single)
    with pytest.raises(ValueError, match="pairs must be a sweep over 'pair'"):
        pair_gains(single, single)


def test_holm_adjusts_by_rank_and_keeps_the_order_of_the_raw_pvalues():
    from xtl.nn.sweep import holm

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the
    # running maximum makes the last 0.06 (a larger raw p never gets a smaller adjusted p)
    p = [0.01, 0.04, np.nan, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06, 0.02])
    assert holm([0.6, 0.5]).tolist() == [1.0, 1.0]  # capped at 1
    assert holm([]).size == 0
    # a single test is not adjusted
    assert holm([0.04]).tolist() == [0.04]


def test_bad_arguments(trained_model, sets):
    pool, test = sets
    with pytest.raises(TypeError, match="seed.*twice.*seeds="):
        layer_sweep(trained_model, pool, test, seed=1)
    with pytest.raises(ValueError, match="baselines must be among"):
        layer_sweep(trained_model, pool, test, baselines=["transfer"])
    with pytest.raises(ValueError, match="seeds must be a count >= 1 or a list of distinct"):
        layer_sweep(trained_model, pool, test, seeds=[1, 1])
    with pytest.raises(ValueError, match="budgets must be sample counts in 1..24"):
        budget_sweep(trained_model, pool, test, [0, 4])
    with pytest.raises(ValueError, match="budgets must be distinct"):
        budget_sweep(trained_model, pool, test, [4, 4])
    # one meaning everywhere, as in a config: an int is a count, a list the seeds
    assert seeds_of(3) == [0, 1, 2] and seeds_of([3]) == [3] and seeds_of((0, 2)) == [0, 2]
    for bad in ([0, -1], 0):
        with pytest.raises(ValueError, match=r"seeds must be a count >= 1 or a list of distinct "
                                             r"ints >= 0 \(an int n is n seeds"):
            seeds_of(bad)


# ------------------------------------------------------------------ best set
def constructed(values, name="cc"):
    values = np.asarray(values, float)
    return xr.DataArray(values, dims=("layer", "seed"), name=name,
                        coords={"layer": np.arange(1, len(values) + 1),
                                "seed": np.arange(values.shape[1])})


def test_best_set_on_a_constructed_sweep():
    base = np.array([0.80, 0.82, 0.84, 0.81])
    d3 = np.array([0.010, 0.012, 0.009, 0.011])  # consistently worse: excluded
    d2 = np.array([0.02, -0.03, 0.015, -0.001])   # worse on average, not consistently: kept
    cc = constructed([base - d2, base, base - d3, base - 0.5])
    out = best_set(cc)
    assert int(out.best) == 2
    # layer 1 = base - d2: paired differences d2 (mean 0.001) → t by hand
    d = d2
    t = d.mean() / (d.std(ddof=1) / 2)
    from scipy.stats import t as student
    assert float(out.pvalue.sel(layer=1)) == pytest.approx(student.sf(t, 3))
    assert out.in_best_set.values.tolist() == [True, True, False, False]
    assert float(out.pvalue.sel(layer=3)) < 1e-3
    assert np.isnan(float(out.pvalue.sel(layer=2)))
    np.testing.assert_allclose(out["mean"], cc.mean("seed"))
    np.testing.assert_allclose(out.sem, cc.std("seed", ddof=1) / 2)
    assert "paired t-test" in out.attrs["test"]


def test_best_set_lower_is_better_and_special_cases():
    err = constructed([[1.0, 1.1, 0.9], [2.0, 2.1, 2.2], [1.0, 1.1, 0.9]], name="rel_l2")
    out = best_set(err)
    assert int(out.best) == 1 and out.in_best_set.values.tolist() == [True, False, True]
    assert float(out.pvalue.sel(layer=3)) == 1.0  # identical: differences all 0
    shifted = constructed([[1.0, 2.0], [0.75, 1.75]])  # constant non-zero difference
    assert float(best_set(shifted).pvalue.sel(layer=2)) == 0.0
    single = best_set(constructed([[0.5], [0.6]]))
    assert single.in_best_set.values.tolist() == [False, True]
    assert "single seed" in single.attrs["test"]
    with pytest.raises(ValueError, match="NaN"):
        best_set(constructed([[0.5, np.nan], [0.6, 0.7]]))
    with pytest.raises(ValueError, match="alpha"):
        best_set(constructed([[0.5, 0.4], [0.6, 0.7]]), alpha=1.5)


def test_summarize_sweep_on_a_constructed_sweep():
    cc = constructed([[0.80, 0.82, 0.81], [0.90, 0.91, 0.92], [0.895, 0.915, 0.915]])
    sweep = xr.Dataset({"cc": cc, "rel_l2": (cc * -1 + 1).rename("rel_l2")})
    out = summarize_sweep(sweep)
    assert out.best_set.values.tolist() == [False, True, True]
    assert out.attrs["best"] == 2 and out.attrs["best_set"] == [2, 3]
    np.testing.assert_allclose(out.rel_l2_mean, 1 - cc.mean("seed"))
    with pytest.raises(ValueError, match="metric must name"):
        summarize_sweep(sweep, metric="nope")


def test_sweep_options_route_fit_options_and_refuse_bad_values():
    from xtl.nn.backends.loop import FitOptions
    from xtl.nn.sweep import SweepOptions

    opts = SweepOptions.merge(None, seeds=[2, 0], fraction=0.1, epochs=7, patience=3)
    assert opts.seeds == (2, 0) and opts.fraction == 0.1
    assert opts.fit == FitOptions(epochs=7, patience=3)
    # a fit option given by name replaces only that option of an existing fit
    again = SweepOptions.merge(opts, batch_size=4)
    assert again.fit == FitOptions(epochs=7, patience=3, batch_size=4) and again.seeds == (2, 0)
    # the config's plain dicts become the same object
    assert SweepOptions.merge({"seeds": [2, 0], "fraction": 0.1,
                               "fit": {"epochs": 7, "patience": 3}}) == opts
    for kwargs, error, match in [
        ({"alpha": 1.0}, ValueError, "alpha must be a number in"),
        ({"fraction": 0.1, "n_samples": 4}, ValueError, "n_samples or fraction"),
        ({"fraction": 1.5}, ValueError, r"fraction must be a number in \(0, 1\]"),
        # as in training and a config: a whole set held out leaves nothing to train on
        ({"validation": 1.0}, ValueError, r"validation must be a fraction in \[0, 1\)"),
        ({"metric": "accuracy"}, ValueError, "metric must name"),
        ({"epochs": 0}, ValueError, "epochs must be an int >= 1"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be a finite"),
        ({"epoch": 3}, TypeError, "unknown SweepOptions option.*'epoch'"),
    ]:
        with pytest.raises(error, match=match):
            SweepOptions.merge(None, **kwargs)


def test_bad_fit_option_is_refused_before_any_training(trained_model, sets, tmp_path):
    pool, test = sets
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        layer_sweep(trained_model, pool, test, learning_rate=-1.0, save_dir=tmp_path)
    assert not any(tmp_path.iterdir())
