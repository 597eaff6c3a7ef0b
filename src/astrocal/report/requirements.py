"""Requirements of the accuracy budget: read from a small TOML file, checked against metrics.

The default file ships with the package (``astrocal/report/requirements.toml``); a user
gives another with ``astrocal report --requirements FILE``. Format (see
``docs/report.md``)::

    [[requirement]]
    id = "METIS-3502"                # shown in the pass/fail table
    title = "..."                    # what is required, in words
    metric = "map_sigma_max_mas"     # one of METRICS
    max = 0.5                        # pass when |value| < max
    goal = 0.1                       # optional: goal met when |value| < goal
    unit = "mas"                     # optional, for display
    bands = ["LM"]                   # optional: only for results of these METIS bands
    source = "..."                   # optional: where the requirement comes from

A requirement is ``"pass"`` or ``"fail"`` when its metric could be computed,
``"not measured"`` when the data cannot measure it (the scale metrics of a sky-only fit,
which has no lab gauge: :data:`NEEDS_AFFINE`), ``"not evaluated"`` when it could not be
computed for another reason (e.g. a stability metric without ``--against``) and
``"not applicable"`` when the result's band is not in its ``bands``; the reason is given.
A requirement on a metric that was computed from the non-linear part of the field (a
sky-only fit: :data:`NONLINEAR_WITHOUT_GAUGE`) says so in its row.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ..errors import AstrocalError

#: metrics a requirement may name: unit, meaning, and whether an earlier result is needed
METRICS = {
    "map_sigma_max_mas": ("mas", "maximum over the field of the map's 1-sigma", False),
    "map_sigma_rms_mas": ("mas", "rms over the field of the map's 1-sigma", False),
    "map_sigma_max_px": ("pixel", "maximum over the field of the map's 1-sigma", False),
    "map_sigma_rms_px": ("pixel", "rms over the field of the map's 1-sigma", False),
    "pixel_scale_sd_rel": ("", "posterior sd of the pixel scale over its mean", False),
    "residual_rms_px": ("pixel", "rms of the residuals of the points used (all datasets)", False),
    "residual_rms_mas": ("mas", "rms of the residuals of the points used (all datasets)", False),
    "outlier_fraction": ("", "fraction of the points flagged as outliers", False),
    "scale_change_rel": ("", "pixel scale of this result over the earlier one, minus 1", True),
    "distortion_change_rel": ("", "largest change of the distortion over the field, over the "
                              "half-diagonal of the detector (pixels / pixels)", True),
    "plate_scale_change_edge_mas": ("mas", "position change at the detector's corners caused "
                                    "by the change of the pixel scale", True),
}

#: metrics that need the field's affine part (its scale): not measured without a lab gauge
NEEDS_AFFINE = ("pixel_scale_sd_rel", "scale_change_rel", "plate_scale_change_edge_mas")
#: metrics computed from the field's non-linear part when its affine part is not measured
NONLINEAR_WITHOUT_GAUGE = ("map_sigma_max_mas", "map_sigma_rms_mas", "map_sigma_max_px",
                           "map_sigma_rms_px", "distortion_change_rel")
#: the note of a requirement evaluated on the non-linear part
NONLINEAR_NOTE = ("evaluated on the non-linear part of the field (affine part not measured: "
                  "no lab gauge)")

KEYS = {"id", "title", "metric", "max", "goal", "unit", "bands", "source"}
BANDS = ("LM", "N")


class RequirementsError(AstrocalError, ValueError):
    """A requirements file is invalid; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class Requirement:
    id: str
    title: str
    metric: str
    max: float
    goal: float | None = None
    unit: str = ""
    bands: tuple = ()
    source: str = ""


def default_requirements_path() -> Traversable:
    """The requirements file shipped with astrocal.

    Returns
    -------
    importlib.resources.abc.Traversable
        ``astrocal/report/requirements.toml`` in the installed package.
    """
    return resources.files("astrocal.report") / "requirements.toml"


def load_requirements(path: str | os.PathLike | None = None) -> list[Requirement]:
    """The requirements of a requirements file.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The file (default: the shipped one, :func:`default_requirements_path`).

    Returns
    -------
    list of Requirement
        In the file's order.

    Raises
    ------
    RequirementsError
        An invalid file; the message names the file and the requirement.
    """
    if path is None:
        source = default_requirements_path()
        name = "astrocal/report/requirements.toml"
    else:
        source = Path(path)
        name = str(path)
        if not source.exists():
            raise FileNotFoundError(f"{path}: no such requirements file")
    try:
        data = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RequirementsError(f"{name}: not valid TOML ({exc})") from None
    extra = sorted(set(data) - {"requirement"})
    if extra:
        raise RequirementsError(f"{name}: unknown table(s) {extra}; requirements are [[requirement]] entries")
    items = data.get("requirement", [])
    if not isinstance(items, list) or not items:
        raise RequirementsError(f"{name}: no [[requirement]] entry")
    out, ids = [], set()
    for k, item in enumerate(items):
        where = f"{name}: requirement {k + 1}"
        unknown = sorted(set(item) - KEYS)
        if unknown:
            raise RequirementsError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
        for key in ("id", "metric", "max"):
            if key not in item:
                raise RequirementsError(f"{where}: missing key '{key}'")
        rid = str(item["id"])
        if rid in ids:
            raise RequirementsError(f"{where}: id {rid!r} is used twice")
        ids.add(rid)
        metric = item["metric"]
        if metric not in METRICS:
            raise RequirementsError(f"{where} ({rid}): unknown metric {metric!r}; known: {sorted(METRICS)}")
        values = {}
        for key in ("max", "goal"):
            if key in item:
                v = item[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                    raise RequirementsError(f"{where} ({rid}): '{key}' must be a positive number, got {v!r}")
                values[key] = float(v)
        bands = item.get("bands", [])
        if isinstance(bands, str):
            bands = [bands]
        bad = [b for b in bands if b not in BANDS]
        if bad:
            raise RequirementsError(f"{where} ({rid}): unknown band(s) {bad}; known: {list(BANDS)}")
        out.append(Requirement(id=rid, title=str(item.get("title", rid)), metric=metric,
                               max=values["max"], goal=values.get("goal"),
                               unit=str(item.get("unit", METRICS[metric][0])),
                               bands=tuple(bands), source=str(item.get("source", ""))))
    return out


def evaluate(requirements: Sequence[Requirement], metrics: Mapping[str, float | None], band: str | None = None,
             sds: Mapping[str, float] | None = None, reasons: Mapping[str, str] | None = None,
             not_measured: Mapping[str, str] | None = None, nonlinear: Iterable[str] | None = None) -> list[dict]:
    """Check every requirement.

    Parameters
    ----------
    requirements : sequence of Requirement
        The requirements.
    metrics : mapping
        ``{name: value or None}``.
    band : str, optional
        The METIS band of the result (a requirement with ``bands`` applies to those only).
    sds : mapping, optional
        The metrics' 1-sigma where known.
    reasons : mapping, optional
        Why a metric is ``None``.
    not_measured : mapping, optional
        ``{name: reason}`` of the metrics the data cannot measure (they take precedence over
        ``reasons``).
    nonlinear : iterable of str, optional
        Names of the metrics computed from the field's non-linear part.

    Returns
    -------
    list of dict
        One per requirement (in order), holding ``id``, ``title``, ``metric``, ``value``,
        ``sd``, ``max``, ``goal``, ``unit``, ``status`` (``"pass"``, ``"fail"``, ``"not
        measured"``, ``"not evaluated"``, ``"not applicable"``), ``goal_met`` (bool or
        None), ``margin_sigma`` (``(max - |value|) / sd``), ``nonlinear_part`` (bool: the
        value is of the non-linear part) and ``reason``.
    """
    sds = sds or {}
    reasons = reasons or {}
    not_measured = not_measured or {}
    nonlinear = set(nonlinear or ())
    rows = []
    for r in requirements:
        row = {"id": r.id, "title": r.title, "metric": r.metric, "max": r.max, "goal": r.goal,
               "unit": r.unit, "source": r.source, "value": None, "sd": None, "goal_met": None,
               "margin_sigma": None, "nonlinear_part": False, "reason": ""}
        if r.bands and band not in r.bands:
            row["status"] = "not applicable"
            row["reason"] = (f"for band {'/'.join(r.bands)}; this result is "
                             f"{'band ' + band if band else 'not of a known METIS band'}")
        elif r.metric in not_measured:
            row["status"] = "not measured"
            row["reason"] = not_measured[r.metric]
        elif metrics.get(r.metric) is None:
            row["status"] = "not evaluated"
            row["reason"] = reasons.get(r.metric, f"metric {r.metric} not available")
        else:
            value = float(metrics[r.metric])
            row["value"] = value
            sd = sds.get(r.metric)
            row["sd"] = None if sd is None else float(sd)
            row["status"] = "pass" if abs(value) < r.max else "fail"
            if r.goal is not None:
                row["goal_met"] = bool(abs(value) < r.goal)
            if sd:
                row["margin_sigma"] = (r.max - abs(value)) / float(sd)
            row["reason"] = f"|value| {'<' if row['status'] == 'pass' else '>='} {r.max:g}"
            if r.metric in nonlinear:
                row["nonlinear_part"] = True
                row["reason"] = f"{NONLINEAR_NOTE}; {row['reason']}"
        rows.append(row)
    return rows
