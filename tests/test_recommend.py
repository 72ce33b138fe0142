"""Tests of xtl/recommend.py: every recommender, one schema, and the comparison with a sweep."""
import numpy as np
import pytest
import xarray as xr

from conftest import make_les
from xtl.nn.spec import NetworkSpec
from xtl.nn.backends.base import get_backend
from xtl.explain.recommend import (
    GaussNewtonOptions,
    GradientNormOptions,
    HalvingOptions,
    NtkOptions,
    PriorOptions,
    ProbeOptions,
    SpectralOptions,
    available_recommenders,
    compare_recommendation,
    extrapolate_loss,
    kernel_ridge_loo,
    layer_regrets,
    prior_scores,
    regret,
    recommend_layers,
    recommended_layers,
    register_recommender,
    successive_halving,
)

METHODS = ("spectral", "gauss-newton", "probe", "gradient-norm", "halving", "ntk", "prior")
N = 16
OPTIONS = {"spectral": dict(n_directions=16), "gauss-newton": dict(iterations=30),
           "probe": dict(epochs=4, learning_rate=1e-2, batch_size=4),
           "gradient-norm": {}, "halving": dict(epochs=2, learning_rate=1e-2, batch_size=4),
           "ntk": dict(n_points=48)}


# ------------------------------------------------------------------ a linear network
def _flow(seed, low_gain, nt=24, target=False):
    """Broadband vorticity (shells 1..N/2), ψ̄ = ∇⁻²ω̄; ``low_gain`` scales shell 1.

    Π is ω̄ (the base map) or, for the target, ω̄ + (σ_ω/σ_ψ) ψ̄: a term in ψ̄ that only a
    layer reading ψ̄ can add.
    """
    rng = np.random.default_rng(seed)
    k = np.fft.fftfreq(N, 1.0 / N)
    kk = np.hypot(*np.meshgrid(k, k))
    shell = np.rint(kk)
    amp = ((shell >= 1) & (shell <= N // 2)) * np.where(shell == 1, low_gain, 1.0)
    noise = rng.standard_normal((nt, N, N)) + 1j * rng.standard_normal((nt, N, N))
    omega = np.real(np.fft.ifft2(noise * amp))
    psi = np.real(np.fft.ifft2(np.fft.fft2(omega) / np.where(kk == 0, 1.0, kk ** 2)))
    pi = omega + (omega.std() / psi.std()) * psi if target else omega
    x = np.arange(N) * 2 * np.pi / N
    dims = ("time", "y", "x")
    return xr.Dataset({"psi": (dims, psi), "omega": (dims, omega), "pi": (dims, pi)},
                      coords={"time": np.arange(nt) * 0.1, "y": x, "x": x},
                      attrs={"case_name": "target" if target else "base"})


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Two stored sweeps of a 4-layer network: layer 1 the best (regret 0), layers 2 and 3
    tied (regret 0.5 each), layer 4 no better than the base network (regret 1)."""
    from xtl.data.netcdf import write_dataset

    folder = tmp_path_factory.mktemp("history")
    paths = []
    for i, shift in enumerate((0.0, 0.05)):
        sweep = _sweep([[0.9 + shift] * 2, [0.8 + shift] * 2, [0.8 + shift] * 2,
                        [0.6 + shift] * 2], base_cc=0.7 + shift)
        paths.append(str(folder / f"sweep-{i}.nc"))
        write_dataset(sweep, paths[-1])
    return paths


def _options(method, history):
    return dict(sweeps=history) if method == "prior" else OPTIONS[method]


@pytest.fixture(scope="module")
def linear_flows():
    return _flow(1, 1.0), _flow(2, 3.0, target=True)


def _identity_network(n_layers, base_ds):
    """A linear, periodic, one-channel network whose output is ω̄: layer 1 reads ω̄ (not ψ̄),
    every layer is the identity (a centred delta kernel). Normalized like training does."""
    be = get_backend("keras")
    spec = NetworkSpec(n_layers=n_layers, channels=1, kernel_size=3, padding="periodic",
                       activation="linear")
    norm = {v: float(base_ds[v].std()) for v in ("psi", "omega", "pi")}
    model = be.build(spec, norm, seed=0)
    delta = np.zeros((3, 3), np.float32)
    delta[1, 1] = 1.0
    first = np.stack([np.zeros((3, 3), np.float32), delta])[None]  # (out=1, in=2: psi, omega)
    weights = [(first, np.zeros(1, np.float32))] + \
        [(delta[None, None], np.zeros(1, np.float32)) for _ in range(n_layers - 1)]
    be.set_weights(model, weights)
    return model


@pytest.mark.parametrize("method", METHODS)
def test_only_the_layer_that_can_express_the_change_is_ranked_first(linear_flows, history,
                                                                    method):
    """The target adds a ψ̄ term to Π; only layer 1 reads ψ̄, so only it can absorb the change.
    (The prior sees only its history, in which layer 1 was the best.)"""
    base_ds, target_ds = linear_flows
    model = _identity_network(3, base_ds)
    np.testing.assert_allclose(model.predict(base_ds.psi.values, base_ds.omega.values),
                               base_ds.pi.values, rtol=1e-4, atol=1e-5)  # exact on the base
    rec = recommend_layers(model, base_ds, target_ds, method=method,
                           **_options(method, history))
    assert rec.attrs["recommended"] == [1], rec.score.values
    assert int(rec["rank"].sel(layer=1)) == 1
    assert rec.attrs["method"] == method and float(rec.seconds) > 0


@pytest.mark.parametrize("method", METHODS)
def test_identical_layers_get_tied_scores(linear_flows, history, method):
    """Layers 2 and 3 of an identity network carry identical statistics: no method may
    prefer one of them (no hidden prior on depth; the prior's history ties them too)."""
    base_ds, target_ds = linear_flows
    model = _identity_network(4, base_ds)
    rec = recommend_layers(model, base_ds, target_ds, method=method, layers=[2, 3],
                           **_options(method, history))
    a, b = rec.score.sel(layer=2).item(), rec.score.sel(layer=3).item()
    assert a == pytest.approx(b, rel=1e-5, abs=1e-9), (a, b)
    assert rec["rank"].values.tolist() == [1, 2] or a != b  # ties go to the shallower


# ------------------------------------------------------------ scores by hand
@pytest.fixture(scope="module")
def flows():
    return make_les(nt=12, seed=5), make_les(nt=12, seed=6, pi_map="laplacian+omega",
                                            case="synthetic-target")


def test_spectral_score_from_its_evidence(trained_model, flows):
    rec = recommend_layers(trained_model, *flows, method="spectral", batch_size=6)
    sb = rec.activation_spectrum_base.sel(k=slice(1, None)).values
    st = rec.activation_spectrum_target.sel(k=slice(1, None)).values
    with np.errstate(invalid="ignore"):
        per_channel = np.abs(st - sb).sum(-1) / (st + sb).sum(-1)
    np.testing.assert_allclose(rec.channel_divergence.values, per_channel, rtol=1e-12)
    np.testing.assert_allclose(rec.divergence.values, np.nanmean(per_channel, axis=1))
    prof, w = rec.filter_profile.values[:, 1:], rec.shell_weight.values[1:]
    np.testing.assert_allclose(rec.overlap.values, (prof * w).sum(1) / prof.sum(1))
    np.testing.assert_allclose(rec.score.values,
                               rec.divergence * rec.overlap * rec.sensitivity, rtol=1e-12)
    assert (rec.sensitivity > 0).all() and "reach" not in rec
    assert rec.attrs["prior"] == "none" and "D * O * S" in rec.attrs["formula"]
    with_prior = recommend_layers(trained_model, *flows, method="spectral", prior="reach")
    np.testing.assert_allclose(with_prior.reach.values, [1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(with_prior.score.values, rec.score.values * [1, 2 / 3, 1 / 3],
                               rtol=1e-10)
    assert with_prior.attrs["prior"] == "reach"


def test_gauss_newton_score_from_its_evidence(trained_model, flows):
    rec = recommend_layers(trained_model, *flows, method="gauss-newton", iterations=4)
    np.testing.assert_allclose(
        rec.score, (rec.held_loss_before - rec.held_loss_after) / rec.held_loss_before)
    assert (rec.fit_loss_after <= rec.fit_loss_before).all()
    assert set(np.unique(rec.step.values)) <= {0.0, 0.25, 0.5, 1.0}
    assert (rec.score <= 1).all()


def test_gauss_newton_step_solves_a_linear_least_squares_problem(linear_flows):
    """For a linear network the Gauss-Newton step on layer 1 is the least-squares solution:
    it removes the whole ψ̄ term, so the held-out loss falls to round-off."""
    base_ds, target_ds = linear_flows
    rec = recommend_layers(_identity_network(3, base_ds), base_ds, target_ds,
                           method="gauss-newton", iterations=40, layers=[1])
    one = rec.sel(layer=1)
    assert float(one.held_loss_after) < 1e-4 * float(one.held_loss_before)  # float32 round-off
    assert float(one.score) == pytest.approx(1.0, abs=1e-4)


def test_probe_score_from_its_evidence(trained_model, flows):
    rec = recommend_layers(trained_model, *flows, method="probe", epochs=3, horizon=30,
                           batch_size=4)
    assert rec.val_loss.dims == ("layer", "epoch") and rec.sizes["epoch"] == 3
    for k in (1, 2, 3):
        fit = extrapolate_loss(rec.val_loss.sel(layer=k).values, 30)
        assert float(rec.predicted_loss.sel(layer=k)) == pytest.approx(fit["loss"])
    np.testing.assert_allclose(rec.score, 1 - rec.predicted_loss / rec.base_val_loss)


def test_gradient_norm_score_from_its_evidence(trained_model, flows):
    rec = recommend_layers(trained_model, *flows, method="gradient-norm")
    np.testing.assert_allclose(rec.score, rec.gradient_norm / rec.weight_norm)
    w = get_backend("keras").get_weights(trained_model)
    norms = [np.sqrt(np.sum(k.astype(float) ** 2) + np.sum(b.astype(float) ** 2)) for k, b in w]
    np.testing.assert_allclose(rec.weight_norm, norms, rtol=1e-6)


def test_extrapolate_loss():
    e = np.arange(1, 7)
    exact = extrapolate_loss(0.2 + 0.5 * 0.7 ** e, 60)
    assert exact["rate"] == pytest.approx(0.7) and exact["asymptote"] == pytest.approx(0.2)
    assert exact["loss"] == pytest.approx(0.2 + 0.5 * 0.7 ** 60)
    rising = extrapolate_loss([1.0, 1.1, 1.2, 1.3], 50)  # no decay: the observed minimum
    assert rising["loss"] == 1.0 and np.isnan(rising["rate"])
    assert extrapolate_loss([0.5, 0.4], 50)["loss"] == 0.4  # too short to fit
    with pytest.raises(ValueError, match="curve must be"):
        extrapolate_loss([np.nan, 1.0], 5)


@pytest.fixture
def registry(monkeypatch):
    """Registrations made by a test are undone after it (others count the methods)."""
    import xtl.explain.recommend as R

    monkeypatch.setattr(R, "_RECOMMENDERS", dict(R._RECOMMENDERS))


def test_registry_and_bad_input(trained_model, flows, registry):
    assert set(METHODS) <= set(available_recommenders())

    def deepest(model, base_ds, target_ds, layers, **options):
        return xr.Dataset({"score": ("layer", np.asarray(layers, float))},
                          coords={"layer": layers}, attrs={"formula": "score = l"})

    register_recommender("deepest-test", deepest, overwrite=True)
    rec = recommend_layers(trained_model, *flows, method="deepest-test", top=2)
    assert recommended_layers(rec) == [3, 2] and rec["rank"].values.tolist() == [3, 2, 1]
    with pytest.raises(ValueError, match="registered already"):
        register_recommender("deepest-test", deepest)
    base, target = flows
    with pytest.raises(ValueError, match=r"unknown method 'nope'; registered .*'probe'"):
        recommend_layers(trained_model, base, target, method="nope")
    with pytest.raises(ValueError, match=r"target_ds must be on the same LES grid"):
        recommend_layers(trained_model, base, make_les(n=32, nt=2))
    with pytest.raises(ValueError, match=r"layers must be layer numbers in 1\.\.3"):
        recommend_layers(trained_model, base, target, layers=[0, 2])
    with pytest.raises(ValueError, match=r"top must be an int in 1\.\.2"):
        recommend_layers(trained_model, base, target, layers=[1, 2], top=3)
    with pytest.raises(TypeError, match="base_model must be an xtl Model"):
        recommend_layers(None, base, target)
    with pytest.raises(ValueError, match="prior must be None or 'reach'"):
        recommend_layers(trained_model, base, target, method="spectral", prior="shallow")


# ------------------------------------------------------------ compare with a sweep
def _rec(scores, recommended=1, seconds=2.0):
    layers = np.arange(1, len(scores) + 1)
    return xr.Dataset({"score": ("layer", np.asarray(scores, float)),
                       "recommended": ("choice", [recommended]), "seconds": ((), seconds)},
                      coords={"layer": layers}, attrs={"method": "constructed"})


def _sweep(cc, seconds=10.0, base_cc=0.70):
    cc = np.asarray(cc, float)
    return xr.Dataset({"cc": (("layer", "seed"), cc), "base_cc": ((), base_cc),
                       "train_seconds": (("layer", "seed"), np.full(cc.shape, seconds))},
                      coords={"layer": np.arange(1, len(cc) + 1),
                              "seed": np.arange(cc.shape[1])})


def test_compare_recommendation_hand_computed():
    # mean cc 0.81, 0.90, 0.895, 0.60; layer 3 is not significantly below layer 2
    sweep = _sweep([[0.80, 0.82, 0.81], [0.90, 0.91, 0.89], [0.89, 0.90, 0.895],
                    [0.6, 0.61, 0.59]])
    hit = compare_recommendation(_rec([0.1, 0.3, 0.4, 0.2], recommended=3), sweep)
    assert hit.measured_rank.values.tolist() == [3, 1, 2, 4]
    assert hit.in_best_set.values.tolist() == [False, True, True, False]
    assert bool(hit.hit) and int(hit.recommended_rank) == 2
    # score ranks 4, 2, 1, 3 against measured 3, 1, 2, 4: d = (1, 1, -1, -1), rho = 1 - 24/60
    assert float(hit.spearman) == pytest.approx(1 - 6 * 4 / (4 * 15))
    assert int(hit.best_measured_layer) == 2
    assert float(hit.cost_ratio) == pytest.approx(2.0 / (12 * 10.0))
    miss = compare_recommendation(_rec([0.9, 0.3, 0.4, 0.2], recommended=1), sweep)
    assert not bool(miss.hit) and int(miss.recommended_rank) == 3
    # a lower-is-better metric
    err = sweep.assign(rel_l2=1 - sweep.cc, base_rel_l2=1 - sweep.base_cc)
    assert bool(compare_recommendation(_rec([0.1, 0.3, 0.4, 0.2], 3), err, metric="rel_l2").hit)
    # a single run per layer: only the best layer counts as a hit
    one = _sweep([[0.8], [0.9], [0.89], [0.6]]).squeeze("seed", drop=True)
    assert not bool(compare_recommendation(_rec([0.1, 0.3, 0.4, 0.2], 3), one).hit)
    assert bool(compare_recommendation(_rec([0.1, 0.4, 0.3, 0.2], 2), one).hit)


def test_regret_and_tau_by_hand():
    """Mean CC 0.81, 0.90, 0.895, 0.60 and the BNN at 0.70: layer 3 gives up 0.005 of the
    best layer's 0.20 gain; layer 4 is worse than not re-training (capped at 1)."""
    sweep = _sweep([[0.80, 0.82, 0.81], [0.90, 0.91, 0.89], [0.89, 0.90, 0.895],
                    [0.6, 0.61, 0.59]])
    assert regret(sweep, 2) == 0.0
    assert regret(sweep, 3) == pytest.approx(0.005 / 0.20)
    assert regret(sweep, 1) == pytest.approx(0.09 / 0.20)
    assert regret(sweep, 4) == 1.0
    np.testing.assert_allclose(layer_regrets(sweep), [0.45, 0.0, 0.025, 1.0])
    cmp = compare_recommendation(_rec([0.1, 0.3, 0.4, 0.2], recommended=3), sweep)
    assert float(cmp.regret) == pytest.approx(0.025) and cmp.attrs["regret"] == float(cmp.regret)
    # score (0.1, 0.3, 0.4, 0.2) against CC: 4 concordant, 2 discordant pairs of 6
    assert float(cmp.tau) == pytest.approx(1 / 3)
    # score (4, 1, 2, 3): only the pair (1, 4) is concordant, 5 are discordant
    assert float(compare_recommendation(_rec([4, 1, 2, 3], 1), sweep).tau) == pytest.approx(
        -4 / 6)
    assert np.isnan(float(compare_recommendation(_rec([1, 1, 1, 1], 1), sweep).tau))
    # lower is better: the same regrets from 1 - CC
    err = sweep.assign(rel_l2=1 - sweep.cc, base_rel_l2=1 - sweep.base_cc)
    np.testing.assert_allclose(layer_regrets(err, "rel_l2"), [0.45, 0.0, 0.025, 1.0])
    # no layer beats the base network: nothing to lose, regret undefined
    assert np.isnan(regret(sweep.assign(base_cc=0.95), 2))
    with pytest.raises(ValueError, match=r"layer must be a layer the sweep re-trained, one of "
                                         r"\[1, 2, 3, 4\]; got 7"):
        regret(sweep, 7)


def test_compare_recommendation_bad_input():
    rec, sweep = _rec([0.3, 0.2, 0.1]), _sweep([[1, 2], [2, 3], [3, 4]])
    with pytest.raises(ValueError, match="metric must name a variable of sweep"):
        compare_recommendation(rec, sweep, metric="accuracy")
    with pytest.raises(ValueError, match="single-layer sweep"):
        compare_recommendation(rec, sweep.rename(layer="pair"))
    with pytest.raises(ValueError, match=r"did not re-train the recommended layer\(s\) \[1\]"):
        compare_recommendation(rec, sweep.assign_coords(layer=[2, 3, 4]))
    with pytest.raises(ValueError, match="at least 2 layers"):
        compare_recommendation(rec, sweep.isel(layer=[0]))
    with pytest.raises(TypeError, match="recommendation must be"):
        compare_recommendation(xr.Dataset(), sweep)
    with pytest.raises(ValueError, match=r"sweep must hold 'base_cc'"):
        compare_recommendation(rec, sweep.drop_vars("base_cc"))


# ------------------------------------------------------------ the newer methods by hand
def test_successive_halving_picks_the_known_best_at_the_stated_cost():
    """Six layers with known curves L_k(e) = a_k + b r_k^e; layer 3 has the lowest loss at
    every epoch; layer 5 learns fast and plateaus high (0.675 after 2 epochs, below layers 1
    and 4), so it survives the first round only. 2 epochs each, then 3 layers for 4, then 2
    for 8: 40 layer-epochs."""
    a = {1: 0.50, 2: 0.42, 3: 0.40, 4: 0.45, 5: 0.60, 6: 0.70}
    r = {1: 0.8, 2: 0.7, 3: 0.7, 4: 0.9, 5: 0.5, 6: 0.5}
    done = {k: 0 for k in a}
    calls = []

    def train_more(k, n):
        calls.append((k, n))
        e = np.arange(done[k] + 1, done[k] + n + 1)
        done[k] += n
        return a[k] + 0.3 * r[k] ** e

    run = successive_halving(train_more, [1, 2, 3, 4, 5, 6], epochs=2, eta=2)
    assert run["winner"] == 3 and run["layer_epochs"] == 40
    assert calls == [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 2), (3, 4), (2, 4), (5, 4),
                     (3, 8), (2, 8)]
    assert run["epochs"] == {1: 2, 2: 14, 3: 14, 4: 2, 5: 6, 6: 2}
    assert run["rounds"] == {1: 1, 2: 3, 3: 3, 4: 1, 5: 2, 6: 1}
    assert run["best_loss"][3] == pytest.approx(0.40 + 0.3 * 0.7 ** 14)
    # a full sweep of these six layers for 14 epochs would cost 84 layer-epochs
    assert successive_halving(train_more, [5], epochs=3, eta=2)["layer_epochs"] == 3
    with pytest.raises(ValueError, match="eta must be"):
        successive_halving(train_more, [1, 2], epochs=2, eta=1)


def test_kernel_ridge_loo_equals_brute_force_refits():
    """A linear model f = Φθ: K = ΦΦᵀ; refit without each point, predict it, average."""
    rng = np.random.default_rng(3)
    phi = rng.standard_normal((12, 5))
    r = phi @ rng.standard_normal(5) + 0.3 * rng.standard_normal(12)
    K, lam = phi @ phi.T, 0.7
    errors = []
    for i in range(12):
        keep = np.arange(12) != i
        alpha = np.linalg.solve(K[np.ix_(keep, keep)] + lam * np.eye(11), r[keep])
        errors.append((r[i] - K[i, keep] @ alpha) ** 2)
    assert kernel_ridge_loo(K, r, lam) == pytest.approx(np.mean(errors), rel=1e-10)
    # and the same error from ridge regression in the weights (the primal form)
    primal = []
    for i in range(12):
        keep = np.arange(12) != i
        theta = np.linalg.solve(phi[keep].T @ phi[keep] + lam * np.eye(5), phi[keep].T @ r[keep])
        primal.append((r[i] - phi[i] @ theta) ** 2)
    assert kernel_ridge_loo(K, r, lam) == pytest.approx(np.mean(primal), rel=1e-8)
    with pytest.raises(ValueError, match=r"kernel must be \(n, n\) with n = len\(residual\)"):
        kernel_ridge_loo(K[:3], r, lam)
    with pytest.raises(ValueError, match="ridge must be"):
        kernel_ridge_loo(K, r, 0.0)


def test_ntk_score_from_its_evidence(trained_model, flows):
    rec = recommend_layers(trained_model, *flows, method="ntk", n_points=24, ridges=[1e-2, 1.0])
    np.testing.assert_allclose(rec.score, 1 - rec.loo_error / rec.residual_power)
    assert set(rec.ridge.values) <= {1e-2, 1.0} and (rec.kernel_trace > 0).all()
    assert float(rec.sample_epochs) == 24 * 3 and rec.attrs["n_points"] == 24


def test_prior_by_hand():
    """Regrets (layer 1, 2, 3): sweep A (0, 0.5, 1), sweep B (0.25, 0, -) with 2 layers;
    grand mean 1.75 / 5 = 0.35; with s = 1: (0 + 0.25 + 0.35) / 3 = 0.2, (0.5 + 0.35) / 3,
    (1 + 0.35) / 2."""
    a = _sweep([[0.9, 0.9], [0.8, 0.8], [0.6, 0.6]], base_cc=0.7)
    b = _sweep([[0.85, 0.85], [0.9, 0.9]], base_cc=0.7)
    never = _sweep([[0.6, 0.6], [0.5, 0.5]], base_cc=0.7)  # no regret: skipped
    p = prior_scores([a, b, never], [1, 2, 3])
    assert float(p.grand_mean_regret) == pytest.approx(0.35)
    np.testing.assert_allclose(p.expected_regret, [0.2, 0.85 / 3, 0.675])
    np.testing.assert_allclose(p.mean_regret, [0.125, 0.25, 1.0])
    assert p.n_sweeps.values.tolist() == [2, 2, 1]
    np.testing.assert_allclose(p.score, -p.expected_regret)
    strong = prior_scores([a, b], [1, 2, 3, 4], strength=1e6)  # all pulled to the grand mean
    np.testing.assert_allclose(strong.expected_regret, 0.35, atol=1e-5)
    with pytest.raises(ValueError, match="at least one sweep in which some layer beats"):
        prior_scores([never], [1, 2])


def test_the_prior_needs_sweeps(trained_model, flows):
    with pytest.raises(ValueError, match=r"sweeps must name at least one stored sweep file"):
        recommend_layers(trained_model, *flows, method="prior")


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("cls, name, value, error", [
    (SpectralOptions, "kmax", 0, ValueError),
    (SpectralOptions, "kmax", 2.5, TypeError),
    (SpectralOptions, "threshold", float("nan"), ValueError),
    (SpectralOptions, "threshold", 0.0, ValueError),
    (SpectralOptions, "batch_size", 0, ValueError),
    (SpectralOptions, "max_samples", True, TypeError),
    (SpectralOptions, "n_directions", 0, ValueError),
    (SpectralOptions, "epsilon", -1e-2, ValueError),
    (SpectralOptions, "epsilon", float("inf"), ValueError),
    (SpectralOptions, "seed", -1, ValueError),
    (SpectralOptions, "prior", "shallow", ValueError),
    (GaussNewtonOptions, "iterations", 0, ValueError),
    (GaussNewtonOptions, "held_out", 1.0, ValueError),
    (GaussNewtonOptions, "held_out", 0.0, ValueError),
    (GaussNewtonOptions, "damping", -0.1, ValueError),
    (GaussNewtonOptions, "damping", float("nan"), ValueError),
    (GaussNewtonOptions, "steps", (), ValueError),
    (GaussNewtonOptions, "steps", (1.0, -0.5), ValueError),
    (GaussNewtonOptions, "steps", "1.0", TypeError),
    (GaussNewtonOptions, "max_samples", 0, ValueError),
    (GaussNewtonOptions, "batch_size", 1.5, TypeError),
    (ProbeOptions, "epochs", 0, ValueError),
    (ProbeOptions, "horizon", 3.0, TypeError),
    (ProbeOptions, "validation", 1.5, ValueError),
    (ProbeOptions, "batch_size", 0, ValueError),
    (ProbeOptions, "learning_rate", float("nan"), ValueError),
    (ProbeOptions, "learning_rate", -1e-3, ValueError),
    (ProbeOptions, "seed", 0.5, TypeError),
    (GradientNormOptions, "max_samples", 0, ValueError),
    (GradientNormOptions, "batch_size", None, TypeError),
    (HalvingOptions, "epochs", 0, ValueError),
    (HalvingOptions, "eta", 1, ValueError),
    (HalvingOptions, "validation", 0.0, ValueError),
    (HalvingOptions, "learning_rate", -1.0, ValueError),
    (NtkOptions, "n_points", 1, ValueError),
    (NtkOptions, "ridges", (), ValueError),
    (NtkOptions, "ridges", (1e-2, 0.0), ValueError),
    (NtkOptions, "ridges", "1e-2", TypeError),
    (NtkOptions, "seed", -2, ValueError),
    (PriorOptions, "sweeps", "study/results/sweep-kf8.nc", TypeError),
    (PriorOptions, "sweeps", (3,), TypeError),
    (PriorOptions, "strength", 0.0, ValueError),
    (PriorOptions, "metric", None, TypeError),
])
def test_options_refuse_a_bad_value_naming_it(cls, name, value, error):
    with pytest.raises(error, match=f"^{name} must be"):
        cls(**{name: value})
    with pytest.raises(error, match=f"^{name} must be"):
        cls.merge(None, **{name: value})


def test_options_defaults_are_the_documented_ones():
    assert SpectralOptions().to_dict() == dict(kmax=None, threshold=0.3, batch_size=32,
                                               max_samples=128, n_directions=4, epsilon=1e-2,
                                               seed=0, prior=None)
    assert GaussNewtonOptions().to_dict() == dict(iterations=6, held_out=0.25, damping=0.0,
                                                  steps=(1.0, 0.5, 0.25), max_samples=48,
                                                  batch_size=16)
    assert ProbeOptions().to_dict() == dict(epochs=5, horizon=100, validation=0.25,
                                            batch_size=8, learning_rate=1e-3, seed=0)
    assert GradientNormOptions().to_dict() == dict(max_samples=64, batch_size=16)
    assert HalvingOptions().to_dict() == dict(epochs=2, eta=2, validation=0.25, batch_size=8,
                                              learning_rate=1e-3, seed=0)
    assert NtkOptions().to_dict() == dict(n_points=128, ridges=(1e-4, 1e-3, 1e-2, 1e-1, 1.0),
                                          max_samples=48, seed=0)
    assert PriorOptions().to_dict() == dict(sweeps=(), strength=1.0, metric="cc")
    assert GaussNewtonOptions(steps=[1, 0.5]).steps == (1.0, 0.5)  # a list becomes a tuple
    assert ProbeOptions.merge({"epochs": 3}, seed=2) == ProbeOptions(epochs=3, seed=2)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_has_an_options_class_shown_in_its_signature(method):
    """The options a recommender takes as keywords are its options class's fields (the
    config checks a ``[recommend.<method>]`` table against the signature)."""
    import inspect

    from xtl.explain.recommend import recommender, recommender_options

    cls = recommender_options(method)
    params = inspect.signature(recommender(method)).parameters
    keyword_only = {k: p.default for k, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert keyword_only == cls().to_dict()
    assert list(params)[:5] == ["model", "base_ds", "target_ds", "layers", "options"]


@pytest.mark.parametrize("method", METHODS)
def test_an_unknown_option_is_refused_naming_it(flows, method):
    from xtl.explain.recommend import recommender

    base, target = flows
    with pytest.raises(TypeError, match=r"unknown \w+Options option\(s\) \['bogus'\]; valid: "):
        recommend_layers(_any_model(), base, target, method=method, bogus=1)
    with pytest.raises(TypeError, match=r"\['bogus'\]; valid: "):
        recommender(method)(_any_model(), base, target, [1], bogus=1)
    with pytest.raises(TypeError, match=r"\['bogus'\]"):  # in a mapping, like a config table
        recommend_layers(_any_model(), base, target, method=method, options={"bogus": 1})


def test_a_bad_option_value_is_refused_before_any_work(flows):
    base, target = flows
    with pytest.raises(ValueError, match="held_out must be a number in \\(0, 1\\)"):
        recommend_layers(_any_model(), base, target, method="gauss-newton", held_out=1.0)
    with pytest.raises(TypeError, match="epochs must be an int"):
        recommend_layers(_any_model(), base, target, method="probe", options={"epochs": 2.5})


def test_options_object_and_keywords_give_the_same_recommendation(trained_model, flows):
    base, target = flows
    by_kwargs = recommend_layers(trained_model, base, target, method="gradient-norm",
                                 max_samples=6, batch_size=3)
    by_object = recommend_layers(trained_model, base, target, method="gradient-norm",
                                 options=GradientNormOptions(max_samples=6, batch_size=3))
    mixed = recommend_layers(trained_model, base, target, method="gradient-norm",
                             options={"max_samples": 99}, max_samples=6)  # keywords win
    for rec in (by_object, mixed):  # float32 sums in threads: equal to round-off
        np.testing.assert_allclose(rec.score.values, by_kwargs.score.values, rtol=1e-6)
    default = recommend_layers(trained_model, base, target, method="gradient-norm")
    assert not np.allclose(default.score.values, by_kwargs.score.values, rtol=1e-4)  # 12 samples


def test_register_recommender_with_and_without_an_options_class(trained_model, flows, registry):
    from xtl.explain.recommend import recommender_options

    seen = {}

    def plain(model, base_ds, target_ds, layers, **options):
        seen.update(options)
        return xr.Dataset({"score": ("layer", np.asarray(layers, float))},
                          coords={"layer": layers}, attrs={"formula": "score = l"})

    register_recommender("plain-test", plain, overwrite=True)
    assert recommender_options("plain-test") is None
    recommend_layers(trained_model, *flows, method="plain-test", options={"a": 1}, b=2)
    assert seen == {"a": 1, "b": 2}  # no class: passed through unchecked

    def typed(model, base_ds, target_ds, layers, options):
        seen["typed"] = options
        return plain(model, base_ds, target_ds, layers)

    register_recommender("typed-test", typed, options_class=GradientNormOptions, overwrite=True)
    assert recommender_options("typed-test") is GradientNormOptions
    recommend_layers(trained_model, *flows, method="typed-test", batch_size=2)
    assert seen["typed"] == GradientNormOptions(batch_size=2)
    with pytest.raises(TypeError, match="options_class must be a subclass of"):
        register_recommender("typed-test", typed, options_class=dict, overwrite=True)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        recommender_options("nope")


def _any_model():
    """A small untrained network: the options are refused before it is used."""
    be = get_backend("keras")
    spec = NetworkSpec(n_layers=2, channels=2, kernel_size=3, padding="periodic")
    return be.build(spec, {"psi": 1.0, "omega": 1.0, "pi": 1.0}, seed=0)
