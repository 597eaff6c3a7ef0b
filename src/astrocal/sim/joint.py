"""A joint campaign: a lab campaign and a sky campaign through the same instrument field.

:func:`joint_campaign_toml` writes one campaign file that holds the ``[[lab]]`` datasets
of a lab campaign and the ``[[sky]]`` datasets of a sky campaign (paths rewritten relative
to the new file), so ``astrocal fit`` fits them jointly. :func:`write_joint_points_campaign`
simulates both at point level (measured tables, no images) with one instrument field.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write_text, check_writable
from ..errors import SimulationOptionError
from .lab_truth import LabTruth
from .points_campaign import write_points_campaign
from .sky_points import write_sky_points_campaign
from .sky_truth import SkyTruth


def _sections(text, header):
    """The ``[[header]]`` blocks of a TOML text, each up to the next table header."""
    lines = text.splitlines()
    out, cur = [], None
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            if cur is not None:
                out.append(cur)
                cur = None
            if stripped == f"[[{header}]]":
                cur = [line]
                continue
        if cur is not None:
            cur.append(line)
    if cur is not None:
        out.append(cur)
    return ["\n".join(block).rstrip() for block in out]


def _rebase(block, old_dir, new_dir, keys):
    """Rewrite the string values of ``keys`` (relative paths) in a TOML block."""
    rel = os.path.relpath(old_dir, new_dir)
    out = []
    for line in block.splitlines():
        for key in keys:
            for quote in ('"',):
                token = f"{key} = {quote}"
                start = 0
                while (i := line.find(token, start)) >= 0:
                    j = i + len(token)
                    k = line.find(quote, j)
                    value = line[j:k]
                    if not Path(value).is_absolute():
                        value = Path(os.path.normpath(Path(rel) / value)).as_posix()
                    line = line[:j] + value + line[k:]
                    start = j + len(value) + 1
        out.append(line)
    return "\n".join(out)


def joint_campaign_toml(lab_campaign: str | os.PathLike, sky_campaign: str | os.PathLike, out: str | os.PathLike,
                        fit_lines: Sequence[str] | None = None, overwrite: bool = False) -> Path:
    """Write ``out`` (a campaign TOML) joining the datasets of two campaign files.

    ``[instrument]`` comes from the lab campaign; ``[fit]`` from ``fit_lines`` or the lab
    campaign's, plus the sky campaign's flexure keys (``flexure_*``) unless given. Both
    campaigns must describe the same instrument (detector shape and pixel scale).

    Parameters
    ----------
    lab_campaign, sky_campaign : str or os.PathLike
        The campaign files (with ``[[lab]]`` and ``[[sky]]`` datasets).
    out : str or os.PathLike
        The joint campaign file (paths rewritten relative to it).
    fit_lines : sequence of str, optional
        The ``[fit]`` section's ``key = value`` lines.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The campaign file written.
    """
    lab_campaign, sky_campaign, out = Path(lab_campaign), Path(sky_campaign), Path(out)
    check_writable(out, overwrite)
    lab_text, sky_text = lab_campaign.read_text(), sky_campaign.read_text()
    lab_t, sky_t = tomllib.loads(lab_text), tomllib.loads(sky_text)
    if not sky_t.get("sky"):
        raise SimulationOptionError(f"{sky_campaign}: no [[sky]] dataset to join")
    if not lab_t.get("lab"):
        raise SimulationOptionError(f"{lab_campaign}: no [[lab]] dataset to join")
    inst = lab_t["instrument"]
    lines = ["# joint campaign: lab datasets of", f"#   {lab_campaign}", "# and sky datasets of",
             f"#   {sky_campaign}", "", "[instrument]"]
    for key, value in inst.items():
        lines.append(f"{key} = {_toml_value(value)}")
    lines.append("")
    for block in _sections(lab_text, "lab"):
        lines += [_rebase(block, lab_campaign.parent, out.parent, ("mask", "file", "background", "flat")), ""]
    for block in _sections(sky_text, "sky"):
        lines += [_rebase(block, sky_campaign.parent, out.parent, ("catalog", "file", "background", "flat")), ""]
    fit = fit_lines
    if fit is None:
        fit = [f"{k} = {_toml_value(v)}" for k, v in lab_t.get("fit", {}).items()]
    # the flexure model belongs to the sky campaign: keep its keys unless given
    given = {line.split("=", 1)[0].strip() for line in fit}
    fit = list(fit) + [f"{k} = {_toml_value(v)}" for k, v in sky_t.get("fit", {}).items()
                       if k.startswith("flexure_") and k not in given]
    lines += ["[fit]", *fit, ""]
    atomic_write_text(out, "\n".join(lines), overwrite=overwrite)
    return out


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def write_joint_points_campaign(out: str | os.PathLike, seed: int = 0, lab_exposures: int = 10,
                                sky_exposures: int = 12, degree: int = 5, fit_degree: int | str = "auto",
                                target: str = "gc", overwrite: bool = False,
                                **sky: Any) -> tuple[Path, LabTruth, SkyTruth]:
    """Simulate a lab and a sky campaign (point level) through one field.

    ``out/lab/`` holds the lab campaign (:func:`astrocal.sim.points_campaign.write_points_campaign`),
    ``out/sky/`` the sky campaign (:func:`astrocal.sim.sky_points.write_sky_points_campaign`
    with the lab truth's field), ``out/campaign.toml`` the joint campaign.

    Parameters
    ----------
    out : str or os.PathLike
        Output directory.
    seed : int
        Random seed of both campaigns (the fit's seed is ``seed + 1``).
    lab_exposures, sky_exposures : int
        Exposures of the lab and the sky campaign.
    degree : int
        Degree of the lab truth's field.
    fit_degree : int or "auto"
        The ``[fit]`` degree.
    target : str
        The sky field (``"gc"`` or ``"47tuc"``).
    overwrite : bool
        Replace existing files.
    **sky
        Extra arguments of the sky simulation (``flexure_sigma_mas``, ``zenith_range`` ...).

    Returns
    -------
    path : pathlib.Path
        The joint campaign file.
    lab_truth : LabTruth
        The lab campaign's truth.
    sky_truth : SkyTruth
        The sky campaign's truth.
    """

    out = Path(out)
    lab_path, lab_truth, _ = write_points_campaign(out / "lab", seed=seed, n_exposures=lab_exposures,
                                                   degree=degree, fit_degree=fit_degree, overwrite=overwrite)
    sky_path, sky_truth, _ = write_sky_points_campaign(out / "sky", target, seed=seed, distortion=lab_truth.field,
                                                       n_exposures=sky_exposures, fit_degree=fit_degree,
                                                       overwrite=overwrite, **sky)
    deg = f'"{fit_degree}"' if fit_degree == "auto" else str(int(fit_degree))
    path = joint_campaign_toml(lab_path, sky_path, out / "campaign.toml",
                               fit_lines=[f"degree = {deg}", 'output = "out/"', f"seed = {int(seed) + 1}"],
                               overwrite=overwrite)
    return path, lab_truth, sky_truth
