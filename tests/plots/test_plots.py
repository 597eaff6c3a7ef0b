"""Plots: each returns a Figure drawn from the data given, and saves as PNG and PDF."""
import numpy as np
import pytest
from astropy.table import Table
from matplotlib.figure import Figure
from matplotlib.quiver import Quiver, QuiverKey

from astrocal import plots
from astrocal.atomic import ProductExistsError
from astrocal.field.synthetic import smooth_field
from astrocal.report.figures import pose_selection
from astrocal.solution import Solution


def _solution(corner_px=3.0, rng=11, shape=(2048, 2048)):
    field = smooth_field(shape=shape, degree=5, corner_px=corner_px, rotation_deg=0.4, rng=rng)

    def sigma(x, y):
        r2 = ((np.asarray(x) - 1023.5) ** 2 + (np.asarray(y) - 1023.5) ** 2) / 1024.0**2
        return 0.002 + 0.003 * r2, 0.0025 + 0.002 * r2

    return Solution(field, filter="L", sigma=sigma)


def _table(kinds=("lab",), n=200, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for k, kind in enumerate(kinds):
        t = Table()
        t["dataset"] = [f"{kind}{k}"] * n
        t["kind"] = [kind] * n
        t["x"], t["y"] = rng.uniform(0, 2047, n), rng.uniform(0, 2047, n)
        t["dx_px"], t["dy_px"] = rng.normal(0, 0.02 * (k + 1), (2, n))
        t["dx_mas"], t["dy_mas"] = 5.47 * t["dx_px"], 5.47 * t["dy_px"]
        t["zx"], t["zy"] = t["dx_px"] / 0.02, t["dy_px"] / 0.02
        t["outlier"] = np.arange(n) < 3
        rows.append(t)
    from astropy.table import vstack

    return vstack(rows)


def _quiver(fig):
    return next(c for ax in fig.axes for c in ax.collections if isinstance(c, Quiver))


def test_distortion_map_draws_the_offsets(tmp_path):
    sol = _solution()
    fig = plots.distortion_vector_map(sol, n=9)
    assert isinstance(fig, Figure)
    q = _quiver(fig)
    xs = np.linspace(0, 2047, 9)
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    u, v = sol.reverse_offsets(xx, yy)
    assert np.allclose(q.U, u.ravel()) and np.allclose(q.V, v.ravel())
    key = next(a for ax in fig.axes for a in ax.artists if isinstance(a, QuiverKey))
    assert "px =" in key.text.get_text() and "mas" in key.text.get_text()  # key in both units
    paths = plots.save_figure(fig, tmp_path / "dist")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ProductExistsError):
        plots.save_figure(fig, tmp_path / "dist")
    plots.save_figure(fig, tmp_path / "dist", overwrite=True)


def test_maps_of_one_solution():
    sol = _solution()
    nl = _quiver(plots.nonlinear_map(sol, n=9))
    assert np.abs(nl.U).max() > 0  # the field is not affine
    fig = plots.uncertainty_map(sol, n=33)
    image = fig.axes[0].images[0].get_array()
    xs = np.linspace(0, 2047, 33)
    sx, sy = sol.sigma(xs[0], xs[0])
    assert image[0, 0] == pytest.approx(np.hypot(sx, sy) * sol.plate_scale * 1e3)
    with pytest.raises(ValueError, match="no uncertainty"):
        plots.uncertainty_map(Solution(sol.field))
    fig = plots.pixel_scale_map(sol.field, sol.detector_shape, n=33)
    scale = fig.axes[0].images[0].get_array()
    assert scale.mean() == pytest.approx(5.47, rel=0.01)


def test_difference_map():
    a, b = _solution(rng=11), _solution(rng=12)
    fig = plots.difference_map(a, b, n=9)
    q = _quiver(fig)
    xs = np.linspace(0, 2047, 9)
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    assert np.allclose(q.U, (a.reverse_offsets(xx, yy)[0] - b.reverse_offsets(xx, yy)[0]).ravel())
    assert len(fig.axes) == 4  # change and significance, each with a colour bar
    same = plots.difference_map(a, a, n=5)
    assert np.abs(_quiver(same).U).max() == 0
    with pytest.raises(ValueError, match="different detectors"):
        plots.difference_map(a, _solution(shape=(1024, 1024)))


def test_residual_plots():
    t = _table(("lab", "sky"))
    fig = plots.residual_plot(t, "sky1", (2048, 2048))
    q = _quiver(fig)
    sel = (t["dataset"] == "sky1") & ~t["outlier"]
    assert np.allclose(q.U, t["dx_px"][sel])  # outliers are not drawn as vectors
    with pytest.raises(ValueError, match="no dataset 'nope'"):
        plots.residual_plot(t, "nope", (2048, 2048))
    fig = plots.lab_sky_comparison(t, (2048, 2048))
    assert len(fig.axes) == 3
    with pytest.raises(ValueError, match="only lab"):
        plots.lab_sky_comparison(_table(("lab",)), (2048, 2048))


def test_catalog_residual_plot_draws_the_residuals_against_the_catalogue():
    """The vectors are the against-catalogue residuals (mas) of the stars used, the
    histograms' legends give both rms; a lab dataset or a table without the columns is
    refused with the reason."""
    t = _table(("lab", "sky"))
    rng = np.random.default_rng(5)
    sky = np.asarray(t["kind"]) == "sky"
    t["dx_cat_mas"] = np.where(sky, t["dx_mas"] + rng.normal(0, 0.3, len(t)), np.nan)
    t["dy_cat_mas"] = np.where(sky, t["dy_mas"] + rng.normal(0, 0.3, len(t)), np.nan)
    fig = plots.catalog_residual_plot(t, "sky1", (2048, 2048))
    q = _quiver(fig)
    sel = sky & ~np.asarray(t["outlier"])
    assert np.allclose(q.U, t["dx_cat_mas"][sel]) and np.allclose(q.V, t["dy_cat_mas"][sel])
    key = next(a for ax in fig.axes for a in ax.artists if isinstance(a, QuiverKey))
    assert key.text.get_text().endswith(" mas")
    labels = [x.get_text() for x in fig.axes[1].get_legend().get_texts()]
    rms = np.sqrt(np.mean(np.asarray(t["dy_cat_mas"])[sel] ** 2))
    assert f"dy against the catalogue (rms {rms:.3g})" in labels
    assert any(x.startswith("dx after the stars' catalogue errors") for x in labels)
    assert f"{int(sel.sum())} star points used" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="not a sky dataset"):
        plots.catalog_residual_plot(t, "lab0", (2048, 2048))
    with pytest.raises(ValueError, match="no dx_cat_mas column"):
        plots.catalog_residual_plot(_table(("sky",)), "sky0", (2048, 2048))


def test_corner_and_chain_plots():
    rng = np.random.default_rng(2)
    samples = np.column_stack([rng.normal(size=500), rng.normal(size=500), np.zeros(500)])
    fig = plots.corner_plot(samples, ["a", "b", "fixed"])
    assert len(fig.axes) == 4 and "fixed" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="do not match"):
        plots.corner_plot(samples, ["a"])
    # an AR(1) chain has integrated autocorrelation time (1 + rho) / (1 - rho)
    rho, steps, walkers = 0.8, 4000, 8
    chain = np.zeros((steps, walkers, 2))
    noise = rng.normal(size=(steps, walkers, 2))
    for k in range(1, steps):
        chain[k] = rho * chain[k - 1] + noise[k]
    lengths, tau = plots.autocorrelation_curve(chain)
    assert lengths[-1] == steps
    assert tau[-1] == pytest.approx([(1 + rho) / (1 - rho)] * 2, rel=0.25)
    fig = plots.chain_plot(chain[:500], ["p", "q"], burn=50)
    assert len(fig.axes) == 3


def test_pose_selection_is_generic():
    names = (["cu[0,0]", "log_kappa", "offset_frame_scale"]
             + [f"pose_{p}[lab0:g{e}]" for e in (1, 2, 3) for p in ("scale", "rot", "tx", "ty")]
             + [f"sky_pose_{p}[gc:s{e}]" for e in (0,) for p in ("scale", "rot", "tx", "ty")]
             + ["flex[1:anamorphism]"])
    chosen, shown, every = pose_selection(names, max_dims=8)
    assert chosen == names[3:11] and shown == ["lab0:g1", "lab0:g2"]
    assert every == ["lab0:g1", "lab0:g2", "lab0:g3", "gc:s0"]
    assert pose_selection(["cu[0,0]"]) == ([], [], [])
