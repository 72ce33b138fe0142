"""Explaining transfer learning of an SGS closure, step by step.

    python examples/tutorial.py        # about 10 minutes on 2 cores

A script: the steps run inside ``main()`` under an ``if __name__ == "__main__":``
guard, which every script that starts a dask cluster needs (the cluster's worker
processes import this file again; without the guard they would run it too).
In a notebook, run the same steps cell by cell: docs/tutorial.md.
"""
import xtl
from xtl.data.metrics import les_metrics
from xtl.nn.closure import ModelClosure


def main():
    base_case, target_case = xtl.get_case("small-base"), xtl.get_case("small-re")

    # Training data: DNS ensembles, coarse-grained to 64² on the fly
    base = xtl.ensemble(base_case, seeds=[0, 1], spin_up=20.0, t_end=30.0, save_interval=0.1,
                        directory="tutorial-data/base", les=dict(n_les=64))
    target = xtl.ensemble(target_case, seeds=[0], spin_up=20.0, t_end=30.0, save_interval=0.1,
                          directory="tutorial-data/target", les=dict(n_les=64))
    train_base = base.isel(time=slice(0, 75))
    target_pool, target_test = target.isel(time=slice(0, 75)), target.isel(time=slice(75, None))
    print(base.tl.spectrum(kind="energy").mean(["member", "time"]).values[:10])

    # The base network
    bnn = xtl.train(train_base, dict(n_layers=6, channels=24), epochs=30, batch_size=16)

    # The recommendation, before any re-training
    # (the default, "prior", learns from sweeps you have run; with none yet, let training
    # decide by successive halving)
    rec = xtl.recommend_layers(bnn, train_base, target_pool, method="halving")
    print("scores:", rec.score.values, "recommended:", rec.attrs["recommended"])

    # Transfer learning of every single layer: does the recommendation hold?
    sweep = xtl.layer_sweep(bnn, target_pool, target_test, n_samples=15, epochs=30, batch_size=8)
    print("CC of TLNN per layer:", sweep.cc.values, "BNN:", float(sweep.base_cc))
    print(xtl.compare_recommendation(rec, sweep)[["recommended_rank", "regret", "tau"]])

    # What changed: kernel spectra and the census (n, the padded grid, is the
    # 64² grid the models were trained on, which their Datasets record)
    tlnn = xtl.transfer(bnn, target_pool, layers=rec.attrs["recommended"], n_samples=15,
                        epochs=30, batch_size=8)
    print(bnn.to_dataset().tl.filter_census())
    change = xtl.kernel_change(bnn.to_dataset(), tlnn.to_dataset())
    print(change.relative_spectral_change.values)

    # A posteriori: the closures inside an LES on the grid the data were coarse-grained to
    start = target_test.omega.isel(member=0, time=0)
    for name, closure in (("BNN", ModelClosure(bnn)), ("TLNN", ModelClosure(tlnn))):
        run = xtl.run_les(target_case, closure, initial=start, t_end=5.0, save_interval=0.5, n=64)
        metrics = les_metrics(run, target_test.isel(member=0))
        print(name, "stable:", metrics.attrs["stable"], "spectrum error:",
              float(metrics.spectrum_error))


if __name__ == "__main__":
    main()
