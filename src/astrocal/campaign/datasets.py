"""The ``[[lab]]`` and ``[[sky]]`` datasets and their exposures: files resolved against the
campaign file's directory and checked to exist, calibration frames, star-list columns; an
exposure file listed twice is refused.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import astropy.units as u

from .keys import LAB_EXPOSURE_KEYS, LAB_KEYS, SKY_EXPOSURE_KEYS, SKY_EXPOSURE_REFUSED, SKY_KEYS
from .schema import Exposure, LabDataset, SkyDataset
from .sky_exposure import read_site, sky_exposure_values
from .values import Context, check_keys, column_choice, existing, pair, path_name, quantity, require, string


def read_exposures(ctx: Context, base: Path, items: Any, prefix: str, allowed: Collection[str],
                   keep_missing: bool = False, refused: dict | None = None) -> tuple[Exposure, ...]:
    """A dataset's ``exposures``: each a table with a ``file`` (and a lab exposure's
    ``offset_arcsec``, ``offset_sigma_mas``); the other keys are kept in
    :attr:`~astrocal.campaign.schema.Exposure.extra` as written.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    items : object
        The TOML value of ``exposures``.
    prefix : str
        The dataset's dotted key with a trailing dot (``"lab[0]."``).
    allowed : collection of str
        The keys an exposure may hold.
    keep_missing : bool
        Accept exposure files that do not exist.
    refused : dict, optional
        ``{key: explanation}`` of keys refused with an explanation.

    Returns
    -------
    tuple of Exposure
    """
    refused = refused or {}
    if not isinstance(items, list):
        raise ctx.error(f"{prefix}exposures", "must be a list of tables { file = ... }")
    if not items:
        raise ctx.error(f"{prefix}exposures", "the dataset has no exposures")
    out = []
    for k, item in enumerate(items):
        key = f"{prefix}exposures[{k}]"
        if not isinstance(item, dict):
            raise ctx.error(key, f"expected a table {{ file = ... }}, got {item!r}")
        for bad in item:
            if bad in refused:
                raise ctx.error(f"{key}.{bad}", refused[bad])
        check_keys(ctx, item, allowed, f"{key}.")
        value = require(ctx, item, "file", f"{key}.")
        if keep_missing and isinstance(value, str) and value:
            path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
        else:
            path = existing(ctx, base, value, f"{key}.file")
        offset = sigma = None
        if "offset_arcsec" in item:
            offset = pair(ctx, item["offset_arcsec"], u.arcsec, f"{key}.offset_arcsec")
        if "offset_sigma_mas" in item:
            sigma = quantity(ctx, item["offset_sigma_mas"], u.mas, f"{key}.offset_sigma_mas")
            if sigma <= 0:
                raise ctx.error(f"{key}.offset_sigma_mas", f"must be positive, got {sigma}")
        extra = {k2: v for k2, v in item.items() if k2 not in ("file", "offset_arcsec", "offset_sigma_mas")}
        out.append(Exposure(path, offset, sigma, extra))
    return tuple(out)


def refuse_repeated_files(ctx: Context, datasets: Iterable[tuple[str, Sequence]]) -> None:
    """Refuse the same exposure file listed twice (in one dataset or two).

    It would enter the fit twice as if independent (and, with other offsets, contradict
    itself); the error names both exposures and their lines.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    datasets : iterable of (str, sequence)
        ``(table name, datasets)``: ``("lab", lab datasets)``, ``("sky", ...)``.
    """
    seen = {}
    for kind, items in datasets:
        for i, ds in enumerate(items):
            for k, e in enumerate(ds.exposures):
                key = f"{kind}[{i}].exposures[{k}].file"
                first = seen.setdefault(Path(e.file).resolve(), key)
                if first != key:
                    line = ctx.line_of(first)
                    raise ctx.error(key, f"{e.file} is listed twice: also as '{first}'"
                                         + (f" (line {line})" if line else "")
                                         + "; list each frame once")


def read_lab(ctx: Context, base: Path, items: Any, keep_missing: bool = False) -> tuple[LabDataset, ...]:
    """The ``[[lab]]`` datasets.

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    items : object
        The TOML value of ``lab``.
    keep_missing : bool
        Accept exposure files that do not exist.

    Returns
    -------
    tuple of LabDataset
    """
    if not isinstance(items, list):
        raise ctx.error("lab", "must be an array of tables [[lab]]")
    out = []
    for i, table in enumerate(items):
        prefix = f"lab[{i}]."
        check_keys(ctx, table, LAB_KEYS, prefix)
        mask = existing(ctx, base, require(ctx, table, "mask", prefix), f"{prefix}mask")
        filt = path_name(ctx, require(ctx, table, "filter", prefix), f"{prefix}filter")
        exposures = read_exposures(ctx, base, require(ctx, table, "exposures", prefix), prefix,
                               LAB_EXPOSURE_KEYS, keep_missing)
        background = existing(ctx, base, table["background"], f"{prefix}background") if "background" in table else None
        flat = existing(ctx, base, table["flat"], f"{prefix}flat") if "flat" in table else None
        name = path_name(ctx, table.get("name", f"lab{i}"), f"{prefix}name")
        normalised = table.get("flat_normalised")
        if normalised is not None and not isinstance(normalised, bool):
            raise ctx.error(f"{prefix}flat_normalised", f"expected true or false, got {normalised!r}")
        if normalised is not None and flat is None:
            raise ctx.error(f"{prefix}flat_normalised", "the dataset has no flat")
        out.append(LabDataset(name, mask, filt, exposures, background, flat, normalised))
    return tuple(out)



def read_sky(ctx: Context, base: Path, items: Any, keep_missing: bool = False) -> tuple[SkyDataset, ...]:
    """The ``[[sky]]`` datasets, their sites resolved and their exposures' values validated and
    converted (:func:`~astrocal.campaign.sky_exposure.sky_exposure_values`).

    Parameters
    ----------
    ctx : Context
        The file being read (named in errors).
    base : Path
        The campaign file's directory.
    items : object
        The TOML value of ``sky``.
    keep_missing : bool
        Accept exposure files that do not exist.

    Returns
    -------
    tuple of SkyDataset
    """
    if not isinstance(items, list):
        raise ctx.error("sky", "must be an array of tables [[sky]]")
    out = []
    for i, table in enumerate(items):
        prefix = f"sky[{i}]."
        check_keys(ctx, table, SKY_KEYS, prefix)
        given = require(ctx, table, "catalog", prefix)
        catalog = existing(ctx, base, given, f"{prefix}catalog")
        exposures = read_exposures(ctx, base, require(ctx, table, "exposures", prefix), prefix,
                               SKY_EXPOSURE_KEYS, keep_missing, refused=SKY_EXPOSURE_REFUSED)
        site = read_site(ctx, table.get("site", "armazones"), f"{prefix}site")
        converted = []
        for k, (e, item) in enumerate(zip(exposures, table["exposures"])):
            values = sky_exposure_values(ctx, item, f"{prefix}exposures[{k}]", space=site.is_space)
            if "header" in item:
                values["header"] = str(existing(ctx, base, item["header"], f"{prefix}exposures[{k}].header"))
            converted.append(dataclasses.replace(e, extra=values))
        filt = path_name(ctx, table["filter"], f"{prefix}filter") if "filter" in table else None
        name = path_name(ctx, table.get("name", f"sky{i}"), f"{prefix}name")
        background = existing(ctx, base, table["background"], f"{prefix}background") if "background" in table else None
        flat = existing(ctx, base, table["flat"], f"{prefix}flat") if "flat" in table else None
        cols = {c: column_choice(ctx, table, c, prefix)
                for c in ("x_col", "y_col", "flux_col", "mag_col", "sigma_x_col", "sigma_y_col")}
        if (cols["sigma_x_col"] is None) != (cols["sigma_y_col"] is None):
            given, missing = (("sigma_x_col", "sigma_y_col") if cols["sigma_y_col"] is None
                              else ("sigma_y_col", "sigma_x_col"))
            raise ctx.error(f"{prefix}{given}", f"position errors need both sigma_x_col and "
                                                f"sigma_y_col ({missing} is missing)")
        one_based = table.get("one_based")
        if one_based is not None and not isinstance(one_based, bool):
            raise ctx.error(f"{prefix}one_based", f"expected true or false, got {one_based!r}")
        band = string(ctx, table["band"], f"{prefix}band") if "band" in table else None
        strehl = None
        if "strehl" in table:
            strehl = quantity(ctx, table["strehl"], u.dimensionless_unscaled, f"{prefix}strehl")
            if not 0.0 < strehl <= 1.0:
                raise ctx.error(f"{prefix}strehl", f"must be in (0, 1], got {strehl:g}")
        out.append(SkyDataset(name, catalog, tuple(converted), site, filt, catalog_given=given,
                              background=background, flat=flat, one_based=one_based, band=band,
                              strehl=strehl, **cols))
    return tuple(out)


