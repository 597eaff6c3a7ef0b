"""Maps over the detector: distortion vectors, non-linear part, 1-sigma, pixel scale, changes.

All maps take :class:`~astrocal.solution.Solution` objects (the posterior-mean field with
its ``sigma``: :func:`astrocal.products.posterior_solution`). The distortion shown is the
AstroMet offset ``D2(p) = p - L(p)``: measured position minus linear-grid position, in
pixels, at 0-based detector positions ``p`` (see :mod:`astrocal.solution`); mas values are
pixels times the linear grid's plate scale. Colour bars carry both units.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from ..field.maps import nonlinear_part
from ..products import local_scale_grid

if TYPE_CHECKING:
    from ..field.core import DistortionField
    from ..solution import Solution


def grid(shape: tuple[int, int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions along each axis from the first to the last pixel centre (0-based).

    Parameters
    ----------
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    n : int
        Positions along each axis.

    Returns
    -------
    xs, ys : np.ndarray
        The positions along x and y, 0-based px.
    """
    ny, nx = shape
    return np.linspace(0.0, nx - 1.0, n), np.linspace(0.0, ny - 1.0, n)


def nice(value: float) -> float:
    """The largest of 1, 2, 5 times a power of ten not above ``value``.

    Parameters
    ----------
    value : float
        A positive value.

    Returns
    -------
    float
        The round value (1.0 for a value that is not finite and positive).
    """
    if not np.isfinite(value) or value <= 0:
        return 1.0
    exp = np.floor(np.log10(value))
    for m in (5.0, 2.0, 1.0):
        if m * 10**exp <= value:
            return float(m * 10**exp)
    return float(10**exp)


def _colorbar_two_units(fig, image, ax, mas_per_px, label_mas):
    """Colour bar in mas with a second axis in pixels."""
    cb = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.14)
    cb.set_label(label_mas)
    sec = cb.ax.secondary_yaxis("left", functions=(lambda v: v / mas_per_px, lambda p: p * mas_per_px))
    sec.set_ylabel("pixel")
    return cb


def _detector_axes(ax, shape):
    ny, nx = shape
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (pixel, 0-based)")
    ax.set_ylabel("y (pixel, 0-based)")


def _arrows(ax, x, y, u, v, spacing, mas_per_px, color="k"):
    """Quiver of pixel vectors scaled so the longest is 0.9 grid spacing, with a key
    stating its length in pixels and mas."""
    length = np.hypot(u, v)
    vmax = float(np.nanmax(length)) if length.size else 0.0
    scale = vmax / (0.9 * spacing) if vmax > 0 else 1.0
    q = ax.quiver(x, y, u, v, angles="xy", scale_units="xy", scale=scale, color=color,
                  width=0.004)
    key = nice(vmax * 0.6) if vmax > 0 else 1.0
    ax.quiverkey(q, 0.0, 1.03, key, f"{key:g} px = {key * mas_per_px:.3g} mas",
                 labelpos="E", coordinates="axes")
    return q


def distortion_vector_map(solution: Solution, n: int = 17, background: int = 65,
                          title: str | None = None) -> Figure:
    """Arrows of the distortion ``D2`` (measured minus linear-grid position) on an ``n`` x
    ``n`` grid, over a colour map of its length (mas and pixels).

    Parameters
    ----------
    solution : Solution
        The result (:class:`~astrocal.solution.Solution`).
    n : int
        Arrows along each axis.
    background : int
        Colour-map samples along each axis.
    title : str, optional
        Figure title (default: filter and maximum).

    Returns
    -------
    Figure
        The map.
    """
    shape = solution.detector_shape
    mas = solution.plate_scale * 1e3
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    bx, by = grid(shape, background)
    yy, xx = np.meshgrid(by, bx, indexing="ij")
    dx, dy = solution.reverse_offsets(xx, yy)
    im = ax.imshow(np.hypot(dx, dy) * mas, origin="lower", extent=_extent(bx, by), cmap="viridis")
    _colorbar_two_units(fig, im, ax, mas, "|offset| (mas)")
    xs, ys = grid(shape, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    u, v = solution.reverse_offsets(xx, yy)
    _arrows(ax, xx, yy, u, v, xs[1] - xs[0], mas, color="w")
    _detector_axes(ax, shape)
    fig.suptitle(title or f"distortion (measured - linear grid), filter {solution.filter}: "
                 f"max {np.hypot(dx, dy).max():.3g} px = {np.hypot(dx, dy).max() * mas:.3g} mas",
                 fontsize=10)
    return fig


def nonlinear_map(solution: Solution, n: int = 17, background: int = 65, title: str | None = None) -> Figure:
    """The non-linear part of the distortion (``D2`` minus its best affine approximation
    over the detector, least squares): arrows and colour of its length.

    Parameters
    ----------
    solution : Solution
        The result (:class:`~astrocal.solution.Solution`).
    n : int
        Arrows along each axis.
    background : int
        Colour-map samples along each axis.
    title : str, optional
        Figure title (default: filter and maximum).

    Returns
    -------
    Figure
        The map.
    """
    shape = solution.detector_shape
    mas = solution.plate_scale * 1e3
    nl = nonlinear_part(solution.reverse_offset_field())
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    bx, by = grid(shape, background)
    yy, xx = np.meshgrid(by, bx, indexing="ij")
    dx, dy = nl(xx, yy)
    im = ax.imshow(np.hypot(dx, dy) * mas, origin="lower", extent=_extent(bx, by), cmap="magma")
    _colorbar_two_units(fig, im, ax, mas, "|non-linear part| (mas)")
    xs, ys = grid(shape, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    u, v = nl(xx, yy)
    _arrows(ax, xx, yy, u, v, xs[1] - xs[0], mas, color="c")
    _detector_axes(ax, shape)
    fig.suptitle(title or f"non-linear distortion (affine part removed), filter {solution.filter}: "
                 f"max {np.hypot(dx, dy).max() * mas:.3g} mas", fontsize=10)
    return fig


def uncertainty_map(solution: Solution, n: int = 65, title: str | None = None) -> Figure:
    """The 1-sigma of the map, ``sqrt(sigma_x**2 + sigma_y**2)`` of the linear-grid
    position, over the detector (mas and pixels), with its maximum marked.

    Parameters
    ----------
    solution : Solution
        The result, with its ``sigma``.
    n : int
        Samples along each axis.
    title : str, optional
        Figure title (default: filter, rms and maximum).

    Returns
    -------
    Figure
        The map.

    Raises
    ------
    ValueError
        When the solution has no uncertainty.
    """
    if solution.sigma is None:
        raise ValueError("the solution has no uncertainty (sigma)")
    shape = solution.detector_shape
    mas = solution.plate_scale * 1e3
    xs, ys = grid(shape, n)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    sx, sy = solution.sigma(xx.ravel(), yy.ravel())
    sig = np.hypot(sx, sy).reshape(xx.shape) * mas
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(sig, origin="lower", extent=_extent(xs, ys), cmap="cividis")
    ax.contour(xs, ys, sig, levels=6, colors="w", linewidths=0.6)
    _colorbar_two_units(fig, im, ax, mas, "1-sigma of the map (mas)")
    k = np.unravel_index(np.argmax(sig), sig.shape)
    ax.plot(xx[k], yy[k], "r+", ms=12, mew=2)
    _detector_axes(ax, shape)
    ax.set_title(title or f"map 1-sigma, filter {solution.filter}: rms {np.sqrt(np.mean(sig**2)):.3g} "
                 f"mas, max {sig.max():.3g} mas (+)", fontsize=9)
    return fig


def pixel_scale_map(field: DistortionField, shape: tuple[int, int], n: int = 129,
                    title: str | None = None) -> Figure:
    """The areal local pixel scale ``sqrt(|det J|)`` of ``field`` (mas/pixel) over the
    detector, with a second colour-bar axis giving its relative deviation from the mean.

    Parameters
    ----------
    field : DistortionField
        Detector pixels to arcsec (:func:`astrocal.products.local_scale_grid`).
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    n : int
        Samples along each axis.
    title : str, optional
        Figure title (default: mean and range).

    Returns
    -------
    Figure
        The map.
    """
    xs, ys = grid(shape, n)
    scale = local_scale_grid(field, xs, ys) * 1e3
    mean = float(scale.mean())
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(scale, origin="lower", extent=_extent(xs, ys), cmap="coolwarm")
    ax.contour(xs, ys, scale, levels=8, colors="k", linewidths=0.5)
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.12)
    cb.set_label("local pixel scale (mas/pixel)")
    cb.formatter.set_useOffset(False)
    cb.update_ticks()
    sec = cb.ax.secondary_yaxis("left", functions=(lambda s: (s / mean - 1) * 1e3,
                                                   lambda r: (1 + r / 1e3) * mean))
    sec.set_ylabel("relative to the mean (1e-3)")
    _detector_axes(ax, shape)
    ax.set_title(title or f"pixel scale: mean {mean:.5f} mas/px, range "
                 f"{scale.min():.5f}-{scale.max():.5f}", fontsize=9)
    return fig


def difference_map(new: Solution, old: Solution, n: int = 17, background: int = 65,
                   title: str | None = None) -> Figure:
    """Change of the distortion between two results: ``D2_new - D2_old`` (each relative to
    its own linear grid, so position, rotation and scale changes are left out), arrows
    over the colour of its length (mas and pixels), and, when both carry uncertainties, its
    significance ``|change| / sigma`` in a second panel.

    Parameters
    ----------
    new, old : Solution
        The two results (same detector).
    n : int
        Arrows along each axis.
    background : int
        Colour-map samples along each axis.
    title : str, optional
        Figure title (default: the largest change).

    Returns
    -------
    Figure
        The map (and the significance panel).

    Raises
    ------
    ValueError
        When the results cover different detectors.
    """
    if tuple(new.detector_shape) != tuple(old.detector_shape):
        raise ValueError(f"the results cover different detectors: {new.detector_shape} and "
                         f"{old.detector_shape}")
    shape = new.detector_shape
    mas = new.plate_scale * 1e3
    has_sigma = new.sigma is not None and old.sigma is not None
    fig = Figure(figsize=(13.0 if has_sigma else 7.0, 6.0), layout="constrained")
    axes = fig.subplots(1, 2 if has_sigma else 1, squeeze=False)[0]
    bx, by = grid(shape, background)
    yy, xx = np.meshgrid(by, bx, indexing="ij")
    dx = new.reverse_offsets(xx, yy)[0] - old.reverse_offsets(xx, yy)[0]
    dy = new.reverse_offsets(xx, yy)[1] - old.reverse_offsets(xx, yy)[1]
    size = np.hypot(dx, dy)
    im = axes[0].imshow(size * mas, origin="lower", extent=_extent(bx, by), cmap="viridis")
    _colorbar_two_units(fig, im, axes[0], mas, "|change| (mas)")
    xs, ys = grid(shape, n)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    u = new.reverse_offsets(gx, gy)[0] - old.reverse_offsets(gx, gy)[0]
    v = new.reverse_offsets(gx, gy)[1] - old.reverse_offsets(gx, gy)[1]
    _arrows(axes[0], gx, gy, u, v, xs[1] - xs[0], mas, color="w")
    _detector_axes(axes[0], shape)
    fig.suptitle(title or f"distortion change (new - old): max {size.max():.3g} px = "
                 f"{size.max() * mas:.3g} mas", fontsize=10)
    if has_sigma:
        snx, sny = new.sigma(xx.ravel(), yy.ravel())
        sox, soy = old.sigma(xx.ravel(), yy.ravel())
        sig = np.sqrt(snx**2 + sny**2 + sox**2 + soy**2).reshape(xx.shape)
        z = size / np.where(sig > 0, sig, np.nan)
        im2 = axes[1].imshow(z, origin="lower", extent=_extent(bx, by), cmap="inferno")
        cb = fig.colorbar(im2, ax=axes[1], fraction=0.046, pad=0.04)
        cb.set_label("|change| / 1-sigma of the change")
        _detector_axes(axes[1], shape)
        axes[1].set_title(f"significance of the change: max {np.nanmax(z):.3g} sigma", fontsize=9)
    return fig


def _extent(xs, ys):
    dx = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 0.5
    dy = (ys[1] - ys[0]) / 2 if len(ys) > 1 else 0.5
    return (xs[0] - dx, xs[-1] + dx, ys[0] - dy, ys[-1] + dy)
