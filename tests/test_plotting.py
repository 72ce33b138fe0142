"""Tests of xtl/plotting.py (Agg backend, set in conftest)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from xtl.experiment import plotting  # noqa: E402
from xtl.explain import kernels as K


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def spectra():
    k = np.arange(9)
    kk = np.maximum(k, 1).astype(float)
    a = xr.DataArray(kk**-3.0 * 2, dims="k", coords={"k": k}, name="base")
    b = xr.DataArray(kk**-2.0, dims="k", coords={"k": k}, name="target")
    return a.where(k > 0, 5.0), b.where(k > 0, 5.0)


def test_plot_spectra_mapping_loglog_skips_k0():
    a, b = spectra()
    ax = plotting.plot_spectra({"Re=1e3": a, "Re=1e4": b}, ylabel="E(k)")
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["Re=1e3", "Re=1e4"]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    np.testing.assert_array_equal(lines[0].get_xdata(), np.arange(1, 9))
    np.testing.assert_allclose(lines[1].get_ydata(), np.arange(1, 9) ** -2.0)
    assert ax.get_ylabel() == "E(k)"


def test_plot_spectra_2d_dataarray_and_sequence():
    a, b = spectra()
    both = xr.concat([a, b], dim=xr.DataArray(["base", "target"], dims="case"))
    ax = plotting.plot_spectra(both)
    assert [ln.get_label() for ln in ax.get_lines()] == ["case=base", "case=target"]
    fig, ax2 = plt.subplots()
    out = plotting.plot_spectra([a, b], labels=["A", "B"], ax=ax2)
    assert out is ax2 and len(ax2.get_lines()) == 2
    with pytest.raises(ValueError, match="labels"):
        plotting.plot_spectra([a, b], labels=["A"])
    with pytest.raises(ValueError, match="'k'"):
        plotting.plot_spectra(xr.DataArray(np.ones(3), dims="q"))
    with pytest.raises(TypeError):
        plotting.plot_spectra(42)


def kernels_model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2, 2, 2, 5, 5)).astype(np.float32)
    return xr.Dataset({"kernel": (K.KERNEL_DIMS, w)}, coords={"layer": [1, 2]})


def test_plot_kernel_spectra_grid():
    m = kernels_model()
    F = K.kernel_filters(m, 16)
    c = K.classify_filters(F)
    sel = [{"layer": 1, "channel_out": 0, "channel_in": 1}, {"layer": 2, "channel_out": 1, "channel_in": 0}]
    fig = plotting.plot_kernel_spectra(F, sel, classes=c, ncols=3)
    visible = _panels(fig)
    assert len(visible) == 2 and len(fig.axes) == 4  # 3 panels (1 hidden) and a colourbar
    img = visible[0].get_images()[0].get_array()
    np.testing.assert_allclose(img, F.sel(sel[0]).values)
    # k = 0 is at the centre (fftshifted): the sum of the taps
    w = m.kernel.sel(sel[0]).values
    assert img[8, 8] == pytest.approx(abs(w.sum()), rel=1e-5)
    assert c.filter_type.sel(sel[1]).item() in visible[1].get_title()
    # unshifted input is drawn centred too, and kmax crops
    U = K.kernel_filters(m, 16, shift=False)
    fig2 = plotting.plot_kernel_spectra(U, sel[:1], kmax=4)
    img2 = _panels(fig2)[0].get_images()[0].get_array()
    assert img2.shape == (9, 9)
    np.testing.assert_allclose(img2, F.sel(sel[0]).sel(ky=slice(-4, 4), kx=slice(-4, 4)).values)
    # all filters by default
    assert len(_panels(plotting.plot_kernel_spectra(F))) == 8
    with pytest.raises(ValueError, match="lacks"):
        plotting.plot_kernel_spectra(F, [{"member": 0}])


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def test_kernel_spectra_share_one_colour_scale_with_a_colourbar_and_wavenumber_axes():
    m = kernels_model()
    F = K.kernel_filters(m, 16)
    before, after = F.sel(layer=1, channel_in=0), 3 * F.sel(layer=1, channel_in=0)
    both = xr.concat([before, after], dim=xr.DataArray(["before", "after"], dims="model"))
    fig = plotting.plot_kernel_spectra(both.transpose("channel_out", "model", "ky", "kx"), ncols=2)
    panels = _panels(fig)
    assert len(panels) == 4
    limits = {ax.get_images()[0].get_clim() for ax in panels}
    assert len(limits) == 1  # one scale for all panels, from 0 to the largest |Ŵ|
    assert limits.pop() == pytest.approx((0.0, float(after.max())))
    colourbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colourbars) == 1 and colourbars[0].get_ylabel() == "|Ŵ|"
    assert [ax.get_xlabel() for ax in panels[-2:]] == ["kx", "kx"]  # bottom row
    assert [ax.get_ylabel() for ax in panels[::2]] == ["ky", "ky"]  # left column
    assert len(panels[-1].get_xticks()) > 1 and min(panels[-1].get_xlim()) < 0 < max(panels[-1].get_xlim())
    fig = plotting.plot_kernel_spectra(before, ncols=2, vmax=10.0)
    assert {ax.get_images()[0].get_clim() for ax in _panels(fig)} == {(0.0, 10.0)}


def test_plot_census_fractions_per_layer():
    census = xr.DataArray(
        [[24, 0, 0, 0, 0], [300, 200, 50, 26, 0]],
        dims=("layer", "filter_type"),
        coords={"layer": [1, 2], "filter_type": list(K.FILTER_TYPES[:-1])},
    )
    ax = plotting.plot_census(census)
    heights = np.array([p.get_height() for p in ax.patches]).reshape(5, 2)
    np.testing.assert_allclose(heights.sum(axis=0), [1.0, 1.0])
    np.testing.assert_allclose(heights[:, 1], census.values[1] / 576)
    assert ax.get_ylim() == (0.0, 1.0)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1\n24", "2\n576"]


def test_legends_sit_off_the_data():
    a, b = spectra()
    for ax in (plotting.plot_spectra({"a": a, "b": b}),
               plotting.plot_census(xr.DataArray([[1, 2, 0, 0, 1]], dims=("layer", "filter_type"),
                                                 coords={"filter_type": list(K.FILTER_TYPES[:-1])}))):
        ax.figure.canvas.draw()
        legend = ax.get_legend().get_window_extent()
        box = ax.get_window_extent()
        assert legend.x0 >= box.x1  # entirely to the right of the axes


def test_plot_census_bars_are_the_counts():
    census = xr.DataArray(
        [[3, 0, 1, 0, 0], [1, 2, 0, 1, 0]],
        dims=("layer", "filter_type"),
        coords={"layer": [1, 2], "filter_type": list(K.FILTER_TYPES[:-1])},
    )
    ax = plotting.plot_census(census, fractions=False)
    heights = np.array([p.get_height() for p in ax.patches]).reshape(5, 2)
    np.testing.assert_array_equal(heights, census.values.T)
    bottoms = np.array([p.get_y() for p in ax.patches]).reshape(5, 2)
    np.testing.assert_array_equal(bottoms[1], census.values[:, 0])  # stacked
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(K.FILTER_TYPES[:-1])
    with pytest.raises(ValueError, match="layer, filter_type"):
        plotting.plot_census(census.rename(layer="depth"))
