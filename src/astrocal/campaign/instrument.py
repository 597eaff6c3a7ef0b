"""The ``[instrument]`` table: the imager, its nominal scales (from a preset of
:mod:`astrocal.instruments` where named) and how its frames' headers are read.
"""
from __future__ import annotations

from typing import Any

import astropy.units as u
import numpy as np

from ..instruments import HEADER_FIELDS, get_instrument, header_keywords
from .keys import INSTRUMENT_KEYS
from .schema import InstrumentSpec
from .values import Context, check_keys, quantity, require, string

#: the instrument of a campaign with [lms] and no [instrument] (the LMS's 8.2-mas pixels, 4 chips of 2048)
LMS_INSTRUMENT = dict(name="METIS LMS", detector_shape=(2048, 2048), pixel_scale_mas=8.2)

_PRESETS = {"metis img_lm": "metis-lm", "metis img_n": "metis-n", "metis-lm": "metis-lm",
            "metis-n": "metis-n"}


def read_instrument(ctx: Context, table: Any, needs_mask: bool = True) -> InstrumentSpec:
    """``[instrument]``: a preset's values (by ``preset`` or by the instrument's name) with
    the campaign's own values replacing them.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : object
        The ``[instrument]`` table.
    needs_mask : bool
        The campaign has lab datasets, which need the mask plate scale (a sky-only campaign
        does not).

    Returns
    -------
    InstrumentSpec
    """
    if not isinstance(table, dict):
        raise ctx.error("instrument", "must be a table [instrument]")
    check_keys(ctx, table, INSTRUMENT_KEYS, "instrument.")
    name = string(ctx, require(ctx, table, "name", "instrument."), "instrument.name")
    preset = table.get("preset") or _PRESETS.get(name.strip().lower())
    defaults = {}
    if preset is not None:
        try:
            inst = get_instrument(preset)
        except (KeyError, ValueError) as exc:
            raise ctx.error("instrument.preset", str(exc)) from None
        defaults = {"detector_shape": tuple(inst.detector_shape),
                    "pixel_scale_mas": inst.pixel_scale_mas,
                    "mask_scale_mm_per_arcsec": inst.mask_scale_mm_per_arcsec}
    values = {}
    if "detector_shape" in table:
        shape = table["detector_shape"]
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)):
            raise ctx.error("instrument.detector_shape", f"expected [ny, nx] positive integers, got {shape!r}")
        values["detector_shape"] = tuple(shape)
    if "pixel_scale_mas" in table:
        values["pixel_scale_mas"] = quantity(ctx, table["pixel_scale_mas"], u.mas, "instrument.pixel_scale_mas")
    if "mask_scale_mm_per_arcsec" in table:
        values["mask_scale_mm_per_arcsec"] = quantity(
            ctx, table["mask_scale_mm_per_arcsec"], u.mm / u.arcsec, "instrument.mask_scale_mm_per_arcsec")
    values.update(header_settings(ctx, table, preset))
    merged = {**defaults, **values}
    for key in ("detector_shape", "pixel_scale_mas", "mask_scale_mm_per_arcsec"):
        if key not in merged:
            if key == "mask_scale_mm_per_arcsec" and not needs_mask:
                merged[key] = None  # no [[lab]] dataset: no mask, no mask scale
                continue
            why = " and the campaign's [[lab]] datasets need it" if key == "mask_scale_mm_per_arcsec" else ""
            raise ctx.error(f"instrument.{key}", f"missing (no preset instrument supplies it{why})")
    for key in ("pixel_scale_mas", "mask_scale_mm_per_arcsec"):
        if merged[key] is not None and not merged[key] > 0:
            raise ctx.error(f"instrument.{key}", f"must be positive, got {merged[key]}")
    return InstrumentSpec(name=name, preset=preset, **merged)


def header_settings(ctx: Context, table: dict, preset: str | None) -> dict:
    """``[instrument.header_keywords]`` (validated against the keyword map's entries) and the
    defaults ``gain_e_per_adu``, ``read_noise_e``, ``exptime_s``.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    table : dict
        The ``[instrument]`` table.
    preset : str or None
        The preset instrument, whose keyword map the campaign's entries replace.

    Returns
    -------
    dict
        ``{"header_keywords": {entry: keyword(s)}}`` and those of the three defaults
        given ([e-/ADU], [e-], [s]).
    """
    out = {}
    mapping = table.get("header_keywords", {})
    if not isinstance(mapping, dict):
        raise ctx.error("instrument.header_keywords", "must be a table [instrument.header_keywords] "
                                                      'of entry = "KEYWORD" (or a list of keywords)')
    check_keys(ctx, mapping, set(HEADER_FIELDS), "instrument.header_keywords.")
    for entry, value in mapping.items():
        names = [value] if isinstance(value, str) else value
        if (not isinstance(names, list) or not names
                or not all(isinstance(n, str) and n.strip() for n in names)):
            raise ctx.error(f"instrument.header_keywords.{entry}",
                            f"expected a FITS keyword name or a list of names, got {value!r}")
    header_keywords(preset, mapping)  # the preset's map takes the entries
    out["header_keywords"] = dict(mapping)
    for key, unit, low in (("gain_e_per_adu", u.electron / u.adu, "positive"),
                           ("read_noise_e", u.electron, "non-negative"),
                           ("exptime_s", u.s, "positive")):
        if key in table:
            v = quantity(ctx, table[key], unit, f"instrument.{key}")
            if not np.isfinite(v) or (v < 0 if low == "non-negative" else v <= 0):
                raise ctx.error(f"instrument.{key}", f"must be {low}, got {table[key]!r}")
            out[key] = v
    return out

