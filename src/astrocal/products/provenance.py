"""What every product states about where it comes from: the astrocal version, the
campaign file's sha256, the input files, the fit settings and the Earth-orientation tables."""
from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..image.headers import set_card

if TYPE_CHECKING:
    from astropy.io import fits


def provenance_cards(header: fits.Header, campaign_sha256: str = "", inputs: Iterable[str | os.PathLike] = (),
                     settings: Mapping[str, Any] | None = None) -> None:
    """Write astrocal's provenance into a FITS header.

    The cards: software version (``CREATOR``), the UTC creation date (``DATE``), the
    campaign file's sha256 (``CAMPHASH``), the number of input files (``NINPUTS``) and the
    files (``INPUT<k>``, long strings continued) and the fit settings (``HISTORY``, one
    ``key = value`` each).

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header, changed in place.
    campaign_sha256 : str, optional
        The campaign file's sha256.
    inputs : iterable of str or os.PathLike, optional
        The input files.
    settings : mapping, optional
        The fit settings.
    """
    set_card(header, "CREATOR", f"astrocal {__version__}", "software that wrote the file")
    set_card(header, "DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
           "UTC creation date")
    set_card(header, "CAMPHASH", str(campaign_sha256), "sha256 of the campaign file")
    inputs = [str(p) for p in inputs]
    header["NINPUTS"] = (len(inputs), "number of input files (INPUT<k>)")
    for k, path in enumerate(inputs, start=1):
        header[f"INPUT{k}"] = path
    for key, value in (settings or {}).items():
        header.add_history(f"{key} = {value}")


def earth_orientation_keys(record: Mapping[str, Any] | None) -> dict:
    """Provenance entries of a product for the Earth-orientation record of ``fit.json``.

    Parameters
    ----------
    record : mapping or None
        ``fit.json``'s ``earth_orientation`` (:func:`astrocal.stages.fit.earth_orientation_record`);
        None or empty for a fit without sky data.

    Returns
    -------
    dict
        The IERS table's file name, source and dates (``iers_table``, ``iers_source``,
        ``iers_measured_to``, ``iers_predicted_to``), the leap-second table's expiry
        (``leap_seconds_expire``) and, when recorded, the largest cost over the sky
        exposures (``eop_centre_mas``, ``eop_differential_mas``, mas); ``{}`` without a
        record.
    """
    if not record:
        return {}
    table, leap = record.get("iers_table") or {}, record.get("leap_seconds") or {}
    out = {"iers_table": Path(str(table.get("path", ""))).name, "iers_source": table.get("source", ""),
           "iers_measured_to": table.get("last_observed", ""), "iers_predicted_to": table.get("end", ""),
           "leap_seconds_expire": leap.get("expires", "")}
    worst = record.get("worst")
    if worst:
        out["eop_centre_mas"] = float(worst["centre_mas"])
        out["eop_differential_mas"] = float(worst["differential_mas"])
    return out
