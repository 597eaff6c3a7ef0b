"""Loading a campaign file: the TOML parsed, each table read by its module, the datasets'
names and files checked across tables, the file's hash recorded.
"""
from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

from .datasets import read_lab, read_sky, refuse_repeated_files
from .instrument import LMS_INSTRUMENT, read_instrument
from .keys import TOP_KEYS
from .schema import Campaign, CampaignError, InstrumentSpec
from .settings import read_earth, read_fit, read_measure
from .values import Context, check_keys, require


def load_campaign(path: str | os.PathLike, missing_exposures: str = "error") -> Campaign:
    """Read and validate a campaign TOML file.

    Parameters
    ----------
    path : str or os.PathLike
        The campaign file.
    missing_exposures : {"error", "keep"}
        ``"keep"`` accepts lab and sky exposures (and LMS frames) whose file does not exist
        (so a stage can process the others and report those); everything else is still
        checked.

    Returns
    -------
    Campaign
        Paths resolved, ``sha256`` the hash of the file's bytes.

    Raises
    ------
    CampaignError
        The file is missing, not TOML or invalid; the message names the file, the key and
        the line.
    """
    if missing_exposures not in ("error", "keep"):
        raise ValueError(f"missing_exposures must be 'error' or 'keep', got {missing_exposures!r}")
    path = Path(path).resolve()
    if not path.exists():
        raise CampaignError(f"{path}: campaign file not found")
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML: {exc}") from None
    ctx = Context(path, text)
    base = path.parent
    check_keys(ctx, data, TOP_KEYS, "")
    lms = None
    if "lms" in data:
        # a campaign without [lms] does not pay for importing the LMS optical model:
        # lazy: only an [lms] table needs astrocal.lms (which imports astrocal.field)
        from .lms import read_lms

        lms = read_lms(ctx, base, data["lms"], keep_missing=missing_exposures == "keep")
    if "instrument" in data or lms is None:
        instrument = read_instrument(ctx, require(ctx, data, "instrument", ""), needs_mask=bool(data.get("lab")))
    else:  # an LMS campaign: the imager's [instrument] is needed only with [[lab]] or [[sky]] datasets
        if data.get("lab") or data.get("sky"):
            raise ctx.error("instrument", "missing required key: the [[lab]] and [[sky]] datasets need the "
                                          "imager's [instrument]")
        instrument = InstrumentSpec(**LMS_INSTRUMENT, mask_scale_mm_per_arcsec=lms.mask_scale_mm_per_arcsec)
    lab = read_lab(ctx, base, data.get("lab", []), keep_missing=missing_exposures == "keep")
    sky = read_sky(ctx, base, data.get("sky", []), keep_missing=missing_exposures == "keep")
    if not lab and not sky and lms is None:
        raise CampaignError(f"{path}: the campaign has no [[lab]] and no [[sky]] dataset (and no [lms])")
    refuse_repeated_files(ctx, (("lab", lab), ("sky", sky)))
    names = [d.name for d in lab + sky] + ([lms.name] if lms else [])
    if len(set(names)) != len(names):
        raise CampaignError(f"{path}: dataset names must be distinct, got {names}")
    measure = read_measure(ctx, base, data.get("measure", {}))
    fit = read_fit(ctx, base, data.get("fit", {}), instrument)
    earth = read_earth(ctx, base, data.get("earth", {}))
    return Campaign(path, instrument, lab, sky, measure, fit, hashlib.sha256(raw).hexdigest(), earth, lms)
