"""What the sky measures: each sky exposure's on-sky pixel scale and position angle.

A sky exposure ``e`` enters the fit as ``G(p) = M_e x + t_e + ...`` (:mod:`astrocal.model.linear`),
with ``x`` the star's apparent position in the instrument frame computed with the
exposure's nominal position angle ``theta_0`` and parity (arcsec), ``G`` the instrument
field and ``M_e = (1 + s_e) I + theta_e R90`` the exposure's free plate-scale and rotation
term (``R90 (x, y) = (-y, x)``). The map from detector pixels to the sky is then
``M_e^-1 G``: its best affine part ``A_sky = M_e^-1 A`` (``A``: the field's best affine
part, :func:`astrocal.model.draws.affine_matrices`) is what the stars measure, whether or
not the lab fixes ``G``'s own scale. Without a lab gauge only the product is measured: the
field's scale and the exposures' ``s_e`` are told apart by their priors alone, so the
instrument's scale is *not measured* while the on-sky one is.

Where the stars are: ``A`` is the field's best affine part *over the exposure's own stars*
(the least-squares affine map of each draw's field, residual field included, at the
pixels of the exposure's points: :func:`with_footprints`), which the stars measure. The
field's affine part over the whole detector (its degree-1 Legendre terms) is not: where the
stars cover part of the detector it is the extrapolation of the higher terms, set by their
priors, and would report an on-sky scale the data do not determine (a list of one chip of
a detector described as two: 39.761 +- 0.002 mas/px for a truth of 39.770). Frames without
positions fall back to the whole detector.

Per posterior draw and exposure (:func:`on_sky_samples`):

* ``scale``: the areal on-sky pixel scale ``sqrt(|det A_sky|)`` (mas/pixel); for an
  observatory in space times the exposure's velocity aberration factor ``f`` (frame key
  ``aberration_scale``): the catalogue's (astrometric) mas per pixel, as HST's
  ``VAFACTOR`` scales the WCS, while ``A_sky`` maps to the apparent directions (the
  catalogue's divided by ``f``);
* ``position_angle``: the position angle (deg, from north through east) of the detector's
  +y axis on the sky, from the conformal (rotation) part of ``A_sky``: with ``P =
  diag(-parity, 1)`` (instrument x to east) and ``D = P A_sky P``, ``theta_0 - atan2(D10 -
  D01, D00 + D11)``. The conformal part is the mean rotation of the two detector axes; the
  trace-free symmetric linear terms of the flexure field (anamorphism, shear) leave it,
  and the areal scale, unchanged to first order.

:func:`on_sky_record` gives the means and sd over the draws, per exposure and per sky
dataset (the dataset's scale is the mean over its exposures in each draw; its position
angle is given when its exposures share a nominal angle, else the mean rotation from
their nominal angles), with the lab's pixel scale beside it when the fit has a lab gauge
(the ratio is the telescope's: sky arcsec per mask arcsec).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from .draws import affine_matrices, field_samples, pixel_scale_samples

if TYPE_CHECKING:
    from .data import Points

__all__ = ["on_sky_samples", "on_sky_record", "summary_rows", "with_footprints", "local_affine_matrices",
           "NOT_MEASURED_SCALE", "SCALE_DEFINITION", "ANGLE_DEFINITION"]

#: why a sky-only fit's instrument scale (and absolute map 1-sigma) is not measured
NOT_MEASURED_SCALE = ("not measured: a sky-only fit has no lab gauge; every sky exposure has a "
                      "free plate scale, which takes the field's scale, so only the on-sky scale "
                      "(field x exposure) is measured")
SCALE_DEFINITION = ("areal on-sky pixel scale sqrt|det(M_e^-1 A)| of each sky exposure (mas/px): A "
                    "the field's best affine part over the exposure's stars, M_e the exposure's free "
                    "scale and rotation; a dataset's is the mean over its exposures, per posterior draw")
ANGLE_DEFINITION = ("position angle of the detector +y axis on the sky (deg, from north through "
                    "east): the nominal angle of the exposure plus the rotation (conformal part) of "
                    "M_e^-1 A")

#: exposures whose nominal position angles agree to this (deg) share a dataset angle
SAME_ANGLE_DEG = 1e-3


def _wrap180(deg):
    return (np.asarray(deg, float) + 180.0) % 360.0 - 180.0


def with_footprints(frames: Sequence[dict], points: Points, used: np.ndarray | None = None) -> list[dict]:
    """``frames`` with each exposure's star pixels added, so that :func:`on_sky_samples`
    measures the affine part where the stars are.

    Parameters
    ----------
    frames : sequence of dict
        One per sky exposure (``exposure``: its name).
    points : Points
        The fit's points.
    used : numpy.ndarray, optional
        Bool over ``points``: only these (e.g. outliers left out).

    Returns
    -------
    list of dict
        Copies of the frames with ``x``, ``y``: the points of the exposure named
        ``frame["exposure"]``.
    """
    names = np.asarray(points.exposure_names, dtype=object)[points.exposure]
    keep = np.ones(points.n_points, bool) if used is None else np.asarray(used, bool)
    out = []
    for fr in frames:
        sel = keep & (names == str(fr["exposure"]))
        out.append({**fr, "x": np.asarray(points.x)[sel], "y": np.asarray(points.y)[sel]})
    return out


def local_affine_matrices(g: np.ndarray, degree: int, domain: Sequence[float], x: ArrayLike, y: ArrayLike,
                          residual: tuple | None = None) -> np.ndarray:
    """Each draw's best affine map over the pixels ``x, y`` (least squares, unweighted).

    With fewer than three points (or all on a line) the whole detector's
    (:func:`~astrocal.model.draws.affine_matrices`).

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the fit's global parameters (n_draws, n_params) (:mod:`astrocal.model.draws`
        layout).
    degree : int
        The field's degree.
    domain : tuple of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    x, y : array_like
        The pixels.
    residual : tuple, optional
        ``(basis, first column)`` of the fit's residual field (:mod:`astrocal.field.residual`),
        part of the field.

    Returns
    -------
    numpy.ndarray
        (n_draws, 2, 2) arcsec per pixel, rows u and v, columns x and y.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    d = np.column_stack([np.ones_like(x), x - x.mean() if x.size else x, y - y.mean() if y.size else y])
    if x.size < 3 or np.linalg.matrix_rank(d) < 3:
        return affine_matrices(g, degree, domain)
    u, v = field_samples(np.asarray(g, float), degree, domain, x, y, residual)
    pinv = np.linalg.pinv(d)  # (3, N)
    cu, cv = u @ pinv.T, v @ pinv.T  # (n_draws, 3)
    a = np.empty((len(g), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = cu[:, 1], cu[:, 2]
    a[:, 1, 0], a[:, 1, 1] = cv[:, 1], cv[:, 2]
    return a


def on_sky_samples(g: np.ndarray, param_names: Sequence[str], degree: int, domain: Sequence[float],
                   frames: Sequence[dict], residual: tuple | None = None) -> dict:
    """Draws of each sky exposure's on-sky pixel scale and position angle.

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the fit's global parameters, shape (n_draws, n_params)
        (:mod:`astrocal.model.draws` layout).
    param_names : sequence of str
        Their names (``pose_scale[<exposure>]``, ``pose_rot[<exposure>]``...).
    degree, domain
        The field's degree and detector domain.
    frames : sequence of dict
        One per sky exposure: ``exposure`` (its name in the fit), ``position_angle_deg``
        (the nominal angle its catalogue positions were computed with), ``parity``, and
        ``x``, ``y`` the pixels of its stars (:func:`with_footprints`; without them the
        field's affine part over the whole detector is used); ``aberration_scale`` (in
        space: the velocity aberration factor of its positions; default 1).
    residual : (basis, first column), optional
        The fit's residual field (:mod:`astrocal.field.residual`), part of the field.

    Returns
    -------
    dict
        ``{exposure: (scale_mas (n_draws,), position_angle_deg (n_draws,))}``.
    """
    g = np.asarray(g, float)
    index = {str(n): k for k, n in enumerate(param_names)}
    whole = affine_matrices(g, degree, domain)
    out = {}
    for fr in frames:
        name = str(fr["exposure"])
        a = whole if fr.get("x") is None else local_affine_matrices(g, degree, domain, fr["x"], fr["y"], residual)
        ks, kr = index.get(f"pose_scale[{name}]"), index.get(f"pose_rot[{name}]")
        s = g[:, ks] if ks is not None else np.zeros(len(g))  # a reference pose is fixed
        th = g[:, kr] if kr is not None else np.zeros(len(g))
        m = np.empty((len(g), 2, 2))
        m[:, 0, 0] = m[:, 1, 1] = 1.0 + s
        m[:, 0, 1], m[:, 1, 0] = -th, th
        sky = np.linalg.solve(m, a)
        # in space, the catalogue's (astrometric) scale: the apparent one times the velocity
        # aberration factor (1 on the ground, where the apparent frame is the one observed)
        scale = np.sqrt(np.abs(np.linalg.det(sky))) * 1e3 * float(fr.get("aberration_scale", 1.0))
        p = np.diag([-float(fr.get("parity", 1)), 1.0])
        d = p @ sky @ p
        rot = np.degrees(np.arctan2(d[:, 1, 0] - d[:, 0, 1], d[:, 0, 0] + d[:, 1, 1]))
        pa = float(fr["position_angle_deg"]) - rot
        # keep the draws on one branch around their circular mean
        mean = np.degrees(np.angle(np.mean(np.exp(1j * np.radians(pa)))))
        out[name] = (scale, mean + _wrap180(pa - mean))
    return out


def _stat(x):
    x = np.asarray(x, float)
    return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else 0.0}


def on_sky_record(g: np.ndarray, param_names: Sequence[str], degree: int, domain: Sequence[float],
                  frames: Sequence[dict], lab_gauge: bool, residual: tuple | None = None) -> dict:
    """The ``on_sky`` entry of ``fit.json`` (plain types).

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the fit's global parameters (n_draws, n_params) (:mod:`astrocal.model.draws`
        layout).
    param_names : sequence of str
        Their names (``pose_scale[<exposure>]``, ``pose_rot[<exposure>]``...).
    degree : int
        The field's degree.
    domain : tuple of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    frames : sequence of dict
        As for :func:`on_sky_samples`, each also with ``dataset`` (its name).
    lab_gauge : bool
        The fit has lab data, so the field's own scale is measured and is given beside the
        on-sky one (``lab_pixel_scale_mas``, and per dataset ``sky_over_lab``: the ratio of
        the on-sky to the lab scale, the telescope's).
    residual : tuple, optional
        ``(basis, first column)`` of the fit's residual field (:mod:`astrocal.field.residual`),
        part of the field.

    Returns
    -------
    dict
        ``{"definition", "angle_definition", "instrument_pixel_scale", "datasets": [...]}``;
        a dataset holds ``name``, ``pixel_scale_mas`` and ``position_angle_deg`` (or, when its
        exposures have different nominal angles, ``rotation_from_nominal_deg``) as
        ``{"mean", "sd"}``, and its ``exposures`` with their own figures.
    """
    samples = on_sky_samples(g, param_names, degree, domain, frames, residual)
    lab = pixel_scale_samples(np.asarray(g, float), degree, domain) * 1e3
    if lab_gauge:
        instrument = {"measured": True, **_stat(lab), "note": "the field's scale, set by the lab mask"}
    else:
        instrument = {"measured": False, "mean": None, "sd": None, "reason": NOT_MEASURED_SCALE}
    datasets = {}
    for fr in frames:
        datasets.setdefault(str(fr["dataset"]), []).append(fr)
    out = []
    for name, frs in datasets.items():
        scales = np.array([samples[str(f["exposure"])][0] for f in frs])
        angles = np.array([samples[str(f["exposure"])][1] for f in frs])
        nominal = np.array([float(f["position_angle_deg"]) for f in frs])
        rec = {"name": name, "n_exposures": len(frs), "pixel_scale_mas": _stat(scales.mean(axis=0))}
        if np.ptp(_wrap180(nominal - nominal[0])) <= SAME_ANGLE_DEG:
            rec["position_angle_deg"] = _stat(angles.mean(axis=0))
        else:
            rec["position_angle_deg"] = None
        rec["rotation_from_nominal_deg"] = _stat(_wrap180(angles - nominal[:, None]).mean(axis=0))
        if lab_gauge:
            rec["sky_over_lab"] = _stat(scales.mean(axis=0) / lab)
        rec["exposures"] = [
            {"exposure": str(f["exposure"]), "nominal_position_angle_deg": float(f["position_angle_deg"]),
             "parity": int(f.get("parity", 1)), "pixel_scale_mas": _stat(scales[k]),
             "position_angle_deg": _stat(angles[k])} for k, f in enumerate(frs)]
        out.append(rec)
    return {"definition": SCALE_DEFINITION, "angle_definition": ANGLE_DEFINITION,
            "instrument_pixel_scale": instrument, "datasets": out}


def summary_rows(g: np.ndarray, param_names: Sequence[str], degree: int, domain: Sequence[float],
                 frames: Sequence[dict], residual: tuple | None = None) -> tuple[list[str], np.ndarray]:
    """The on-sky columns of ``summary.ecsv``.

    Parameters
    ----------
    g : numpy.ndarray
        Draws of the fit's global parameters (n_draws, n_params) (:mod:`astrocal.model.draws`
        layout).
    param_names : sequence of str
        Their names (``pose_scale[<exposure>]``, ``pose_rot[<exposure>]``...).
    degree : int
        The field's degree.
    domain : tuple of float
        The detector domain ``(xmin, xmax, ymin, ymax)``, pixels.
    frames : sequence of dict
        As for :func:`on_sky_record`.
    residual : tuple, optional
        ``(basis, first column)`` of the fit's residual field (:mod:`astrocal.field.residual`),
        part of the field.

    Returns
    -------
    tuple
        ``(names, samples (n_draws, k))``: per sky dataset ``sky_pixel_scale_mas[<dataset>]``
        and per exposure ``sky_position_angle_deg[<exposure>]``.
    """
    samples = on_sky_samples(g, param_names, degree, domain, frames, residual)
    names, cols, by_ds = [], [], {}
    for fr in frames:
        by_ds.setdefault(str(fr["dataset"]), []).append(samples[str(fr["exposure"])][0])
    for ds, scales in by_ds.items():
        names.append(f"sky_pixel_scale_mas[{ds}]")
        cols.append(np.mean(scales, axis=0))
    for fr in frames:
        names.append(f"sky_position_angle_deg[{fr['exposure']}]")
        cols.append(samples[str(fr["exposure"])][1])
    return names, np.column_stack(cols)


#: FITS keywords of the products (HIERARCH cards): is the instrument's scale measured,
#: and each sky dataset's on-sky figures (``<k>``: 1-based dataset number)
QC_SCALE_MEASURED = "HIERARCH ASTROCAL SCALE MEASURED"
SKY_CARD = "HIERARCH ASTROCAL SKY{k} {what}"


#: card saying which part of the field the products' map errors cover
ERR_PART = "HIERARCH ASTROCAL ERR PART"


def product_cards(info: dict) -> list[tuple]:
    """FITS cards for the products of a fit from its ``fit.json`` contents.

    Whether the instrument's pixel scale (the products' plate scale: ``PLTSCALE``,
    ``CDELT``/``CD``, the AstroMet plate scale) is measured, and per sky dataset its on-sky
    pixel scale (mas/px) and position angle (deg) with their sd. A sky-only fit's products
    carry the field's posterior-mean scale, which the priors set: the card says so, and the
    sky dataset's scale is the one to use on the sky.

    Parameters
    ----------
    info : dict
        The contents of ``fit.json``.

    Returns
    -------
    list of tuple
        ``[(keyword, value, comment)]``.
    """
    scale = info.get("pixel_scale_mas") or {}
    on_sky = info.get("on_sky") or {}
    cards = []
    if on_sky or scale.get("measured") is False:
        measured = bool(scale.get("measured", True))
        cards.append((QC_SCALE_MEASURED, measured,
                      "plate scale measured (lab)" if measured else "plate scale: prior only, see SKYk"))
        if not measured:  # products.posterior_solution: the errors of what is measured
            cards.append((ERR_PART, "NONLINEAR", "map errors: non-linear part only"))
    for k, d in enumerate(on_sky.get("datasets", []), start=1):
        cards.append((SKY_CARD.format(k=k, what="NAME"), str(d["name"])[:40], "sky dataset"))
        cards.append((SKY_CARD.format(k=k, what="SCALE"), float(d["pixel_scale_mas"]["mean"]),
                      "[mas/px] on-sky pixel scale"))
        cards.append((SKY_CARD.format(k=k, what="SCALE ERR"), float(d["pixel_scale_mas"]["sd"]),
                      "[mas/px] its sd"))
        if d.get("position_angle_deg"):
            cards.append((SKY_CARD.format(k=k, what="PA"), float(d["position_angle_deg"]["mean"]),
                          "[deg] PA of detector +y"))
            cards.append((SKY_CARD.format(k=k, what="PA ERR"), float(d["position_angle_deg"]["sd"]),
                          "[deg] its sd"))
    return cards
