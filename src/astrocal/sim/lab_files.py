"""The files of a simulated lab campaign: where :func:`~astrocal.sim.lab.simulate_lab`
writes them, the campaign file's text, and the truth read back
(:func:`load_lab_truth`)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from .. import __version__
from ..errors import SimulationOptionError
from ..field import DistortionField
from ..formats.siaf import read_siaf
from ..instruments import Instrument
from .lab_truth import LabTruth

__all__ = ["campaign_paths", "lab_campaign_toml", "load_lab_truth"]


def campaign_paths(out: str | os.PathLike, n_exposures: int) -> dict:
    """All files :func:`~astrocal.sim.lab.simulate_lab` writes into ``out``.

    Parameters
    ----------
    out : str or os.PathLike
        The campaign directory.
    n_exposures : int
        Number of grid frames.

    Returns
    -------
    dict
        Name -> Path (``"frames"``: a list of Paths, one per exposure).
    """
    out = Path(out)
    width = max(2, len(str(n_exposures - 1)))
    raw = out / "raw"
    truth = out / "truth"
    return {
        "campaign": out / "campaign.toml",
        "mask": out / "mask.ecsv",
        "frames": [raw / f"grid_{k:0{width}d}.fits" for k in range(n_exposures)],
        "background": raw / "background.fits",
        "flat": raw / "flat.fits",
        "distortion_ecsv": truth / "distortion_truth.ecsv",
        "distortion_fits": truth / "distortion_truth.fits",
        "holes": truth / "holes.ecsv",
        "exposures": truth / "exposures.ecsv",
        "spots": truth / "spots.ecsv",
        "truth_json": truth / "truth.json",
    }




def _toml_str(s):
    return json.dumps(str(s))  # TOML basic strings accept JSON's escapes


def lab_campaign_toml(inst: Instrument, shape: tuple[int, int], mask_scale: float, filter_name: str, paths: dict,
                      out: str | os.PathLike, commanded: np.ndarray, sigma_mas: float, seed: int) -> str:
    """The text of the campaign file of a simulated lab campaign (one ``[[lab]]`` dataset).

    Parameters
    ----------
    inst : Instrument
        The instrument (``[instrument]``: name, preset).
    shape : tuple of int
        Detector shape ``(ny, nx)``.
    mask_scale : float
        Mask scale, mm per arcsec.
    filter_name : str
        The filter.
    paths : dict
        The campaign's files (:func:`campaign_paths`).
    out : str or os.PathLike
        The campaign directory (the file's paths are relative to it).
    commanded : numpy.ndarray
        (E, 2) commanded chopper offsets, arcsec.
    sigma_mas : float
        Stated accuracy of the offsets, mas.
    seed : int
        The simulation's seed (in the file's first comment).

    Returns
    -------
    str
        The TOML text.
    """
    rel = lambda p: Path(p).relative_to(out).as_posix()  # noqa: E731
    lines = [
        "# lab campaign written by `astrocal simulate lab` "
        f"(astrocal {__version__}, seed {seed}); truth in truth/",
        "",
        "[instrument]",
        f"name = {_toml_str(inst.name)}",
        f"preset = {_toml_str(inst.key)}",
        f"detector_shape = [{shape[0]}, {shape[1]}]",
        f"pixel_scale_mas = {inst.pixel_scale_mas!r}",
        f"mask_scale_mm_per_arcsec = {float(mask_scale)!r}",
        "",
        "[[lab]]",
        'name = "grid"',
        f"mask = {_toml_str(rel(paths['mask']))}",
        f"filter = {_toml_str(filter_name)}",
        f"background = {_toml_str(rel(paths['background']))}",
        f"flat = {_toml_str(rel(paths['flat']))}",
        "exposures = [",
    ]
    for path, (ox, oy) in zip(paths["frames"], commanded):
        lines.append(f"  {{ file = {_toml_str(rel(path))}, offset_arcsec = [{float(ox)!r}, {float(oy)!r}], "
                     f"offset_sigma_mas = {float(sigma_mas)!r} }},")
    lines += ["]", "", "[measure]", 'output = "measured/"', "", "[fit]", 'output = "out/"', ""]
    return "\n".join(lines)



def load_lab_truth(directory: str | os.PathLike) -> LabTruth:
    """Rebuild the :class:`~astrocal.sim.lab_truth.LabTruth` of a simulated campaign.

    The field comes from the exact Legendre coefficients in ``truth.json`` (or, if absent,
    from ``distortion_truth.ecsv``), holes from ``holes.ecsv``, poses from
    ``exposures.ecsv`` and positions from the ``on_detector`` rows of ``spots.ecsv``.

    Parameters
    ----------
    directory : str or os.PathLike
        The campaign directory (or its ``truth/`` folder).

    Returns
    -------
    LabTruth
        The truth.

    Raises
    ------
    FileNotFoundError
        If a truth file is missing.
    SimulationOptionError
        If a truth file cannot be read (naming it).
    """
    d = Path(directory)
    tdir = d if (d / "truth.json").exists() else d / "truth"
    files = {k: tdir / n for k, n in (("json", "truth.json"), ("holes", "holes.ecsv"),
                                       ("exposures", "exposures.ecsv"), ("spots", "spots.ecsv"))}
    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"truth file not found: {path}")
    try:
        info = json.loads(files["json"].read_text())
    except json.JSONDecodeError as exc:
        raise SimulationOptionError(f"{files['json']}: not valid JSON ({exc})") from None
    tables = {}
    for key in ("holes", "exposures", "spots"):
        try:
            tables[key] = Table.read(files[key], format="ascii.ecsv")
        except Exception as exc:
            raise SimulationOptionError(f"{files[key]}: cannot read the truth table ({exc})") from None
    if "field" in info:
        f = info["field"]
        field = DistortionField(np.array(f["cx"]), np.array(f["cy"]), tuple(f["domain"]),
                                unit=f.get("unit", "arcsec"), input_unit=f.get("input_unit", "pixel"))
    else:
        field = read_siaf(tdir / "distortion_truth.ecsv").field
    holes, exps, spots = tables["holes"], tables["exposures"], tables["spots"]
    ids = np.asarray(holes["hole_id"], dtype=np.int64)
    index = {int(h): k for k, h in enumerate(ids)}
    n_e = len(exps)
    pos = np.full((n_e, len(ids), 2), np.nan)
    rows = np.asarray(spots["on_detector"], bool)
    e = np.asarray(spots["exposure"], int)[rows]
    h = np.array([index[int(v)] for v in np.asarray(spots["hole_id"])[rows]], dtype=int)
    pos[e, h, 0] = np.asarray(spots["x"], float)[rows]
    pos[e, h, 1] = np.asarray(spots["y"], float)[rows]
    col = lambda t, *names: np.column_stack([np.asarray(t[n], float) for n in names])  # noqa: E731
    return LabTruth(
        field=field, hole_ids=ids, hole_xy=col(holes, "x_arcsec", "y_arcsec"),
        hole_errors=col(holes, "dx_arcsec", "dy_arcsec"),
        commanded=col(exps, "commanded_x_arcsec", "commanded_y_arcsec"),
        applied=col(exps, "applied_x_arcsec", "applied_y_arcsec"),
        pose_scale=np.asarray(exps["pose_scale"], float), pose_rot=np.asarray(exps["pose_rot_rad"], float),
        insertion_rot=float(info["insertion_rot_rad"]),
        insertion_offset=np.asarray(info["insertion_offset_arcsec"], float),
        chopper_frame=(float(info["chopper_frame"]["scale"]), float(info["chopper_frame"]["rot_rad"])),
        positions=pos, mask_scale=float(info["mask_scale_mm_per_arcsec"]),
        offset_sigma=float(info["offset_sigma_arcsec"]), reference=int(info.get("reference", 0)),
    )
