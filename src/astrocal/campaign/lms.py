"""The ``[lms]`` table: a calibration data set of the LM integral-field spectrograph (its
WCU mask, orientation, echelle settings checked against astrocal's optical model, frames and
the fit's priors).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import astropy.units as u

from ..lms import EchelleSetting, FieldOrientation, NominalMap, echelle_setting
from ..lms.errors import EchelleSettingError
from .keys import LMS_FRAME_KEYS, LMS_KEYS, LMS_ORIENTATION_KEYS, LMS_SETTING_KEYS
from .schema import LMS_FRAME_KINDS, LmsDataset, LmsFrameSpec
from .values import Context, check_keys, existing, integer, one_of, pair, path_name, quantity, require


def lms_quantity(ctx: Context, table: dict, key: str, unit: u.UnitBase, prefix: str,
                 default: float | None = None, positive: bool = False) -> float | None:
    """An optional non-negative (or positive) number of an ``[lms]`` table.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        The table.
    key : str
        The key.
    unit : astropy.units.UnitBase
        The unit the key names.
    prefix : str
        The table's dotted key with a trailing dot (``"lms."``).
    default : float, optional
        The value when the key is absent.
    positive : bool
        Refuse 0 too.

    Returns
    -------
    float or None
        The value in ``unit``, or ``default``.
    """
    if key not in table:
        return default
    v = quantity(ctx, table[key], unit, f"{prefix}{key}")
    if v < 0 or (positive and v == 0):
        raise ctx.error(f"{prefix}{key}", f"must be {'> 0' if positive else '>= 0'}, got {v:g}")
    return v


def read_lms_settings(ctx: Context, items: Any) -> tuple[EchelleSetting, ...]:
    """``[[lms.settings]]``: central wavelengths, each checked against the order and echelle
    angle given (the setting astrocal's optical model chooses for that wavelength).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    items : object
        The TOML value of ``lms.settings``.

    Returns
    -------
    tuple of astrocal.lms.EchelleSetting
        In campaign order.
    """
    if not isinstance(items, list) or not items:
        raise ctx.error("lms.settings", "expected one or more [[lms.settings]] tables (lam_c_um = ...)")
    out = []
    for k, item in enumerate(items):
        prefix = f"lms.settings[{k}]."
        if not isinstance(item, dict):
            raise ctx.error(f"lms.settings[{k}]", f"expected a table, got {item!r}")
        check_keys(ctx, item, LMS_SETTING_KEYS, prefix)
        lam = quantity(ctx, require(ctx, item, "lam_c_um", prefix), u.um, f"{prefix}lam_c_um")
        try:
            st = echelle_setting(lam)
        except EchelleSettingError as exc:
            raise ctx.error(f"{prefix}lam_c_um", str(exc)) from None
        if "order" in item and integer(ctx, item["order"], f"{prefix}order") != st.order:
            raise ctx.error(f"{prefix}order", f"central wavelength {lam} um is echelle order {st.order} in the "
                                              f"optical model, not {item['order']}")
        if "echelle_deg" in item:
            ang = quantity(ctx, item["echelle_deg"], u.deg, f"{prefix}echelle_deg")
            if abs(ang - st.echelle_deg) > 1e-6:
                raise ctx.error(f"{prefix}echelle_deg", f"central wavelength {lam} um has the echelle angle "
                                                        f"{st.echelle_deg:.6f} deg in the optical model, not {ang}")
        if any(o.lam_c_um == st.lam_c_um for o in out):
            raise ctx.error(f"{prefix}lam_c_um", f"setting {lam} um listed twice")
        out.append(st)
    return tuple(out)


def read_lms_frames(ctx: Context, base: Path, items: Any, settings: Sequence[EchelleSetting], truth: str,
                    keep_missing: bool) -> tuple[LmsFrameSpec, ...]:
    """``[[lms.frames]]``: files, kinds, settings, offsets, laser lines (inside the setting's
    wavelength range), backgrounds.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    items : object
        The TOML value of ``lms.frames``.
    settings : sequence of astrocal.lms.EchelleSetting
        The ``[[lms.settings]]``.
    truth : str
        The optical model's exact direction (``"forward"``/``"inverse"``).
    keep_missing : bool
        Accept frame files that do not exist.

    Returns
    -------
    tuple of LmsFrameSpec
    """
    if not isinstance(items, list) or not items:
        raise ctx.error("lms.frames", "expected one or more [[lms.frames]] tables (file = ..., kind = ...)")
    lams = [st.lam_c_um for st in settings]
    out = []
    for k, item in enumerate(items):
        prefix = f"lms.frames[{k}]."
        if not isinstance(item, dict):
            raise ctx.error(f"lms.frames[{k}]", f"expected a table, got {item!r}")
        check_keys(ctx, item, LMS_FRAME_KEYS, prefix)
        given = require(ctx, item, "file", prefix)
        if keep_missing:
            if not isinstance(given, str) or not given:
                raise ctx.error(f"{prefix}file", f"expected a path string, got {given!r}")
            file = (base / given).resolve() if not Path(given).is_absolute() else Path(given)
        else:
            file = existing(ctx, base, given, f"{prefix}file")
        kind = one_of(ctx, require(ctx, item, "kind", prefix), f"{prefix}kind", LMS_FRAME_KINDS)
        lam = quantity(ctx, require(ctx, item, "lam_c_um", prefix), u.um, f"{prefix}lam_c_um")
        if lam not in lams:
            raise ctx.error(f"{prefix}lam_c_um", f"{lam} um is not one of the [[lms.settings]] ({lams})")
        offset = None
        if kind in ("laser", "grid"):
            offset = pair(ctx, require(ctx, item, "offset_arcsec", prefix), u.arcsec, f"{prefix}offset_arcsec")
        elif "offset_arcsec" in item:
            raise ctx.error(f"{prefix}offset_arcsec", f"a {kind} frame has no mask in the beam: no offset")
        lines = ()
        if kind == "laser":
            raw = require(ctx, item, "lines_um", prefix)
            if not isinstance(raw, list) or not raw:
                raise ctx.error(f"{prefix}lines_um", f"expected a list of laser lines [um], got {raw!r}")
            lines = tuple(quantity(ctx, v, u.um, f"{prefix}lines_um") for v in raw)
            lo, hi = NominalMap(settings[lams.index(lam)], truth).wavelength_range
            bad = [v for v in lines if not lo <= v <= hi]
            if bad:
                raise ctx.error(f"{prefix}lines_um", f"laser line(s) {bad} um outside the wavelength range "
                                                     f"{lo:.4f}..{hi:.4f} um of the setting {lam} um")
        elif "lines_um" in item:
            raise ctx.error(f"{prefix}lines_um", f"only laser frames have laser lines, this is a {kind} frame")
        background = None
        if "background" in item:
            if kind == "background":
                raise ctx.error(f"{prefix}background", "a background frame has no background")
            background = existing(ctx, base, item["background"], f"{prefix}background")
        out.append(LmsFrameSpec(file, kind, lam, offset, lines, background))
    seen = {}
    for k, f in enumerate(out):
        first = seen.setdefault(Path(f.file).resolve(), k)
        if first != k:
            raise ctx.error(f"lms.frames[{k}].file", f"{f.file} is listed twice (also lms.frames[{first}]); "
                                                     "list each frame once")
    return tuple(out)


def read_lms(ctx: Context, base: Path, table: Any, keep_missing: bool = False) -> LmsDataset:
    """``[lms]``: the LMS data set (see :class:`~astrocal.campaign.schema.LmsDataset`,
    docs/campaign.md).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    table : object
        The ``[lms]`` table.
    keep_missing : bool
        Accept frame files that do not exist.

    Returns
    -------
    LmsDataset
    """
    if not isinstance(table, dict):
        raise ctx.error("lms", "must be a table [lms]")
    check_keys(ctx, table, LMS_KEYS, "lms.")
    name = path_name(ctx, table.get("name", "lms"), "lms.name")
    mask = existing(ctx, base, require(ctx, table, "mask", "lms."), "lms.mask")
    scale = lms_quantity(ctx, table, "mask_scale_mm_per_arcsec", u.mm / u.arcsec, "lms.", 3.319, positive=True)
    o = table.get("orientation", {})
    if not isinstance(o, dict):
        raise ctx.error("lms.orientation", "expected a table { angle_deg = ..., flip = ..., offset_arcsec = [..] }")
    check_keys(ctx, o, LMS_ORIENTATION_KEYS, "lms.orientation.")
    flip = o.get("flip", False)
    if not isinstance(flip, bool):
        raise ctx.error("lms.orientation.flip", f"expected true or false, got {flip!r}")
    angle = quantity(ctx, o["angle_deg"], u.deg, "lms.orientation.angle_deg") if "angle_deg" in o else 0.0
    off = pair(ctx, o["offset_arcsec"], u.arcsec, "lms.orientation.offset_arcsec") if "offset_arcsec" in o \
        else (0.0, 0.0)
    truth = one_of(ctx, table.get("truth_direction", "forward"), "lms.truth_direction", ("forward", "inverse"))
    degree = integer(ctx, table.get("degree", 2), "lms.degree", minimum=0)
    if degree > 5:
        raise ctx.error("lms.degree", f"must be 0..5, got {degree}")
    residual_m = integer(ctx, table.get("residual_m", 0), "lms.residual_m", minimum=0)
    if residual_m > 10:
        raise ctx.error("lms.residual_m", f"must be 0 (none) .. 10 functions per dimension, got {residual_m}")
    ref = table.get("reference_detector", 1)
    if ref == "none":
        ref = None
    elif isinstance(ref, bool) or ref not in (1, 2, 3, 4):
        raise ctx.error("lms.reference_detector", f"must be 1..4 or \"none\", got {ref!r}")
    sigma = lms_quantity(ctx, table, "offset_sigma_mas", u.mas, "lms.", 1.0)
    across = lms_quantity(ctx, table, "across_px_per_mas", u.pix / u.mas, "lms.", 0.05)
    hole_um = lms_quantity(ctx, table, "hole_error_um", u.um, "lms.", 0.5)
    src = table.get("hole_errors_from")
    if src is not None:
        if not isinstance(src, str) or not src:
            raise ctx.error("lms.hole_errors_from", f"expected a path string (an imager fit's output directory or "
                                                    f"its posterior.h5), got {src!r}")
        src = (base / src).resolve() if not Path(src).is_absolute() else Path(src)
        if hole_um == 0:
            raise ctx.error("lms.hole_errors_from", "given with hole_error_um = 0 (hole errors off): drop one")
    gain = lms_quantity(ctx, table, "gain_e_per_adu", u.electron / u.adu, "lms.", positive=True)
    ron = lms_quantity(ctx, table, "read_noise_e", u.electron, "lms.")
    settings = read_lms_settings(ctx, require(ctx, table, "settings", "lms."))
    frames = read_lms_frames(ctx, base, require(ctx, table, "frames", "lms."), settings, truth, keep_missing)
    if not any(f.kind == "laser" for f in frames):
        raise ctx.error("lms.frames", "no laser frame: the LMS fit needs laser spots (kind = \"laser\")")
    return LmsDataset(name, mask, scale, FieldOrientation(angle, flip, off), truth, degree, ref, sigma, across,
                      settings, frames, gain, ron, residual_m, hole_um, src)

