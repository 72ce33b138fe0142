# %% [markdown]
# # Explaining transfer learning of an SGS closure, step by step
# A notebook-style script (run it cell by cell in an editor that knows `# %%`, or whole:
# `python examples/tutorial.py`, about 10 minutes on 2 cores). See docs/tutorial.md.

# %%
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import xtl
from xtl.les import ModelClosure, les, les_metrics

base_case, target_case = xtl.get_case("small-base"), xtl.get_case("small-re")

# %% Training data: DNS ensembles, coarse-grained to 64² on the fly
base = xtl.ensemble(base_case, seeds=[0, 1], spin_up=20.0, t_end=30.0, save_interval=0.1,
                    directory="tutorial-data/base", les=dict(n_les=64))
target = xtl.ensemble(target_case, seeds=[0], spin_up=20.0, t_end=30.0, save_interval=0.1,
                      directory="tutorial-data/target", les=dict(n_les=64))
train_base = base.isel(time=slice(0, 75))
target_pool, target_test = target.isel(time=slice(0, 75)), target.isel(time=slice(75, None))
print(base.tl.spectrum(kind="energy").mean(["member", "time"]).values[:10])

# %% The base network
bnn = xtl.train(train_base, dict(n_layers=6, channels=24), epochs=30, batch_size=16)

# %% The recommendation, before any re-training
rec = xtl.recommend_layers(bnn, train_base, target_pool)
print("scores:", rec.score.values, "recommended:", rec.attrs["recommended"])

# %% Transfer learning of every single layer: does the recommendation hold?
sweep = xtl.layer_sweep(bnn, target_pool, target_test, n_samples=15, epochs=30, batch_size=8)
print("CC of TLNN per layer:", sweep.cc.values, "BNN:", float(sweep.base_cc))
print(xtl.compare_recommendation(rec, sweep)[["recommended_measured_rank", "spearman"]])

# %% What changed: kernel spectra and the census
tlnn = xtl.transfer(bnn, target_pool, layers=rec.attrs["recommended"], n_samples=15, epochs=30,
                    batch_size=8)
print(bnn.to_dataset().tl.filter_census(n=64))
change = xtl.kernel_change(bnn.to_dataset(), tlnn.to_dataset(), n=64)
print(change.relative_spectral_change.values)

# %% A posteriori: the closures inside an LES
start = target_test.omega.isel(member=0, time=0)
for name, closure in (("BNN", ModelClosure(bnn)), ("TLNN", ModelClosure(tlnn))):
    run = les(target_case, closure, initial=start, t_end=5.0, save_interval=0.5)
    metrics = les_metrics(run, target_test.isel(member=0))
    print(name, "stable:", metrics.attrs["stable"], "spectrum error:",
          float(metrics.spectrum_error))
