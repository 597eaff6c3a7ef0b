"""Residual plots from a residual table (:func:`astrocal.model.result.residual_table`).

Residuals are posterior-mean residuals: measured minus predicted position in detector
pixels (``dx_px``, ``dy_px``), the same in the focal plane in mas (``dx_mas``,
``dy_mas``), and normalised by the noise model (``zx``, ``zy``). Outliers (flagged and
left out of the fit) are drawn as red crosses and left out of the histograms.
"""
from __future__ import annotations

import numpy as np
from astropy.table import Table
from matplotlib.figure import Figure

from .maps import nice


def _col(table, name, sel):
    return np.asarray(table[name], float)[sel]


def _detector_axes(ax, table, bad, shape):
    """Frame ``ax`` as the detector of ``shape`` (ny, nx), 0-based pixels, with the outliers
    (rows ``bad`` of ``table``) marked."""
    ny, nx = shape
    if bad.any():
        ax.plot(_col(table, "x", bad), _col(table, "y", bad), "rx", ms=7, label=f"{int(bad.sum())} outliers")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel, 0-based)")
    ax.set_ylabel("y (pixel, 0-based)")


def residual_plot(table: Table, dataset: str, shape: tuple[int, int], title: str | None = None) -> Figure:
    """Residual vectors over the detector and histograms for one dataset.

    Panels: the inlier residual vectors (pixels, exaggerated, with a key in pixels and
    mas) with outliers marked; histograms of the normalised residuals ``zx``, ``zy`` with
    the standard normal; histograms of ``dx``, ``dy`` in mas with their rms.

    Parameters
    ----------
    table : Table
        A residual table (:func:`astrocal.model.result.residual_table`).
    dataset : str
        The dataset to plot.
    shape : tuple of int
        The detector ``(ny, nx)``.
    title : str, optional
        Figure title.

    Returns
    -------
    Figure
        The three panels.

    Raises
    ------
    ValueError
        When the table has no such dataset.
    """
    names = np.asarray(table["dataset"], str)
    sel = names == str(dataset)
    if not sel.any():
        raise ValueError(f"residual table has no dataset {dataset!r} (it has {sorted(set(names))})")
    out = np.asarray(table["outlier"], bool)
    good, bad = sel & ~out, sel & out
    fig = Figure(figsize=(15.0, 5.0))
    ax, az, am = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.15, 1, 1]})
    x, y = _col(table, "x", good), _col(table, "y", good)
    u, v = _col(table, "dx_px", good), _col(table, "dy_px", good)
    um, vm = _col(table, "dx_mas", good), _col(table, "dy_mas", good)
    length = np.hypot(u, v)
    ny, nx = shape
    if length.size:
        vmax = float(length.max())
        spacing = 0.06 * max(nx, ny)
        scale = vmax / spacing if vmax > 0 else 1.0
        q = ax.quiver(x, y, u, v, angles="xy", scale_units="xy", scale=scale, width=0.003)
        key = nice(0.6 * vmax) if vmax > 0 else 1.0
        ratio = np.sqrt(np.mean(um**2 + vm**2) / np.mean(u**2 + v**2)) if np.any(length > 0) else 0.0
        ax.quiverkey(q, 0.0, 1.03, key, f"{key:.3g} px ~ {key * ratio:.3g} mas", labelpos="E",
                     coordinates="axes")
    _detector_axes(ax, table, bad, shape)
    rms_px = float(np.sqrt(np.mean(u**2 + v**2))) if length.size else float("nan")
    rms_mas = float(np.sqrt(np.mean(um**2 + vm**2))) if length.size else float("nan")
    fig.suptitle(title or f"dataset {dataset}: residuals (measured - predicted) of the "
                 f"{int(good.sum())} points used, rms {rms_px:.3g} px = {rms_mas:.3g} mas", fontsize=10)
    zx, zy = _col(table, "zx", good), _col(table, "zy", good)
    bins = np.linspace(-5, 5, 41)
    az.hist(np.clip(zx, -5, 5), bins=bins, histtype="step", density=True, label=f"zx (sd {np.std(zx):.2f})")
    az.hist(np.clip(zy, -5, 5), bins=bins, histtype="step", density=True, label=f"zy (sd {np.std(zy):.2f})")
    t = np.linspace(-5, 5, 201)
    az.plot(t, np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi), "k--", lw=1, label="N(0, 1)")
    az.set_xlabel("normalised residual (clipped at 5)")
    az.set_ylabel("density")
    az.legend(fontsize=8)
    az.set_title("normalised by the noise model", fontsize=9)
    lim = float(np.percentile(np.abs(np.concatenate([um, vm])), 99.5)) if um.size else 1.0
    lim = lim if lim > 0 else 1.0
    bins = np.linspace(-lim, lim, 41)
    am.hist(np.clip(um, -lim, lim), bins=bins, histtype="step", label=f"dx (rms {np.sqrt(np.mean(um**2)):.3g})")
    am.hist(np.clip(vm, -lim, lim), bins=bins, histtype="step", label=f"dy (rms {np.sqrt(np.mean(vm**2)):.3g})")
    am.set_xlabel("focal-plane residual (mas)")
    am.set_ylabel("points")
    am.legend(fontsize=8)
    am.set_title("residuals in mas", fontsize=9)
    fig.tight_layout()
    return fig


def lab_sky_comparison(table: Table, shape: tuple[int, int]) -> Figure:
    """Residuals of the lab and the sky datasets side by side.

    Panels: histograms of the residual length (mas) per kind; the residual rms (mas) in
    rings of distance from the detector centre per kind; histograms of the normalised
    residuals per kind.

    Parameters
    ----------
    table : Table
        A residual table (:func:`astrocal.model.result.residual_table`).
    shape : tuple of int
        The detector ``(ny, nx)``.

    Returns
    -------
    Figure
        The three panels.

    Raises
    ------
    ValueError
        When the table holds only one kind.
    """
    kinds = sorted(set(np.asarray(table["kind"], str)))
    if len(kinds) < 2:
        raise ValueError(f"the result has only {kinds[0] if kinds else 'no'} data: nothing to "
                         "compare lab with sky")
    out = np.asarray(table["outlier"], bool)
    ny, nx = shape
    fig = Figure(figsize=(15.0, 4.8))
    ah, ar, az = fig.subplots(1, 3)
    kind_col = np.asarray(table["kind"], str)
    rmax = np.hypot(nx / 2, ny / 2)
    rings = np.linspace(0, rmax, 8)
    for kind in kinds:
        sel = (kind_col == kind) & ~out
        dm = np.hypot(_col(table, "dx_mas", sel), _col(table, "dy_mas", sel))
        ah.hist(dm, bins=30, histtype="step", density=True,
                label=f"{kind}: {sel.sum()} points, rms {np.sqrt(np.mean(dm**2)):.3g} mas")
        r = np.hypot(_col(table, "x", sel) - (nx - 1) / 2, _col(table, "y", sel) - (ny - 1) / 2)
        idx = np.digitize(r, rings) - 1
        rms = [np.sqrt(np.mean(dm[idx == k] ** 2)) if np.any(idx == k) else np.nan
               for k in range(len(rings) - 1)]
        ar.plot(0.5 * (rings[1:] + rings[:-1]), rms, "o-", label=kind)
        z = np.concatenate([_col(table, "zx", sel), _col(table, "zy", sel)])
        az.hist(np.clip(z, -5, 5), bins=np.linspace(-5, 5, 41), histtype="step", density=True,
                label=f"{kind} (sd {np.std(z):.2f})")
    t = np.linspace(-5, 5, 201)
    az.plot(t, np.exp(-0.5 * t**2) / np.sqrt(2 * np.pi), "k--", lw=1, label="N(0, 1)")
    ah.set_xlabel("|residual| (mas)")
    ah.set_ylabel("density")
    ah.legend(fontsize=8)
    ah.set_title("residual length per kind", fontsize=9)
    ar.set_xlabel("distance from the detector centre (pixel)")
    ar.set_ylabel("residual rms (mas)")
    ar.legend(fontsize=8)
    ar.set_title("residual rms against field radius", fontsize=9)
    az.set_xlabel("normalised residual (x and y, clipped at 5)")
    az.legend(fontsize=8)
    az.set_title("normalised residuals per kind", fontsize=9)
    fig.tight_layout()
    return fig


def catalog_residual_plot(table: Table, dataset: str, shape: tuple[int, int], title: str | None = None) -> Figure:
    """The residuals of one sky dataset against the catalogue as given.

    A sky point's residual is reported two ways (:func:`astrocal.model.result.residual_table`):
    after the star's fitted catalogue error (``dx_mas``, ``dy_mas``: each star's catalogue
    position has its own error term, which takes part of the scatter) and against the
    catalogue position as given (``dx_cat_mas``, ``dy_cat_mas``: what a comparison with the
    catalogue shows). Panels: the against-catalogue vectors (mas, in the focal plane,
    exaggerated, with a key) of the points used (a star in every exposure) over the
    detector, outliers marked;
    histograms of both kinds per axis with their rms (mas).

    Parameters
    ----------
    table : Table
        A residual table (:func:`astrocal.model.result.residual_table`).
    dataset : str
        The sky dataset to plot.
    shape : tuple of int
        The detector ``(ny, nx)``.
    title : str, optional
        Figure title.

    Returns
    -------
    Figure
        The vector panel and the histograms.

    Raises
    ------
    ValueError
        When the table has no such dataset, or the dataset has no catalogue residuals (a
        lab dataset, or a table written before they were).
    """
    names = np.asarray(table["dataset"], str)
    sel = names == str(dataset)
    if not sel.any():
        raise ValueError(f"residual table has no dataset {dataset!r} (it has {sorted(set(names))})")
    if "dx_cat_mas" not in table.colnames:
        raise ValueError("the residual table has no residuals against the catalogue (no dx_cat_mas column)")
    out = np.asarray(table["outlier"], bool)
    good = sel & ~out & np.isfinite(np.asarray(table["dx_cat_mas"], float))
    if not good.any():
        raise ValueError(f"dataset {dataset!r} has no point with a residual against the catalogue "
                         "(not a sky dataset)")
    bad = sel & out
    x, y = _col(table, "x", good), _col(table, "y", good)
    uc, vc = _col(table, "dx_cat_mas", good), _col(table, "dy_cat_mas", good)
    ua, va = _col(table, "dx_mas", good), _col(table, "dy_mas", good)
    ny, nx = shape
    fig = Figure(figsize=(13.0, 5.0))
    ax, ah = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    length = np.hypot(uc, vc)
    vmax = float(length.max())
    scale = vmax / (0.06 * max(nx, ny)) if vmax > 0 else 1.0
    q = ax.quiver(x, y, uc, vc, angles="xy", scale_units="xy", scale=scale, width=0.003)
    key = nice(0.6 * vmax) if vmax > 0 else 1.0
    ax.quiverkey(q, 0.0, 1.03, key, f"{key:.3g} mas", labelpos="E", coordinates="axes")
    _detector_axes(ax, table, bad, shape)
    ax.set_title("against the catalogue (focal plane, mas)", fontsize=9, loc="right")

    def rms(a):
        return float(np.sqrt(np.mean(a**2)))

    lim = float(np.percentile(np.abs(np.concatenate([uc, vc])), 99.5))
    lim = lim if lim > 0 else 1.0
    bins = np.linspace(-lim, lim, 41)
    for a, label, style in ((uc, "dx against the catalogue", "-"), (vc, "dy against the catalogue", "-"),
                            (ua, "dx after the stars' catalogue errors", ":"),
                            (va, "dy after the stars' catalogue errors", ":")):
        ah.hist(np.clip(a, -lim, lim), bins=bins, histtype="step", linestyle=style,
                label=f"{label} (rms {rms(a):.3g})")
    ah.set_xlabel("focal-plane residual (mas, clipped at the 99.5 % level)")
    ah.set_ylabel("points")
    ah.legend(fontsize=8)
    ah.set_title("both ways", fontsize=9)
    fig.suptitle(title or f"dataset {dataset}: residuals of the {int(good.sum())} star points used against the "
                 f"catalogue, rms x/y {rms(uc):.3g} / {rms(vc):.3g} mas\n(after the stars' fitted catalogue "
                 f"errors {rms(ua):.3g} / {rms(va):.3g} mas)", fontsize=10)
    fig.tight_layout()
    return fig
