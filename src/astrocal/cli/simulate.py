"""``astrocal simulate``: make data with known truth."""
from __future__ import annotations

import argparse
import math
import re

from ..errors import SimulationOptionError
from ..lms import LmsGeometryError, echelle_setting
from ..model.flexure import ZENITH_FUNCTIONS
from ..sim.field import simulate_field
from ..sim.lab import simulate_lab
from ..sim.lab_settings import LabSimSettings
from ..sim.lms import LMS_SWITCHES, LmsSimSettings, simulate_lms
from ..sim.sky import SkySimSettings, simulate_sky
from ..sim.sky_plan import FIELDS

INSTRUMENTS = ("metis-lm", "metis-n")

#: ``--no-<name>`` switches of ``simulate lab``: settings field -> help text
LAB_SWITCHES = {
    "distortion": "no non-linear distortion (keep the field's affine part: scale, rotation)",
    "hole_errors": "no manufacturing errors of the hole positions",
    "offset_errors": "chopper offsets applied exactly as commanded (the stated accuracy is kept)",
    "pose_errors": "no mask insertion rotation/offset, no per-exposure pose jitter",
    "pinhole": "point sources instead of 25-um pinhole disks",
    "spiders": "no M2 spiders in the ELT pupil",
    "vignetting": "uniform illumination (no vignetting, WCU pattern, hole scatter, lamp drift)",
    "thermal": "no thermal background",
    "reference_pixels": "no reference-pixel border",
    "flat": "no flat-field pattern",
    "dark": "no dark current (nor hot pixels' dark)",
    "bad_pixels": "no dead or hot pixels",
    "photon_noise": "no photon noise",
    "read_noise": "no read noise",
    "cosmic_rays": "no cosmic rays",
    "saturation": "no clipping at the full well",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``astrocal simulate`` and its subcommands (``field``, ``lab``, ``sky``, ``lms``).

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The subcommands of the ``astrocal`` parser.
    """
    p = subparsers.add_parser(
        "simulate",
        help="simulate data with known truth",
        description="Simulate data with known truth (the embedded defaults of the demo and tests).",
    )
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True)
    f = sub.add_parser(
        "field",
        help="a synthetic instrument distortion field, written in every solution format",
        description="Draw a smooth instrument distortion field (nominal plate scale of the "
        "instrument, a few pixels of non-linear distortion at the corners) and write it to "
        "OUT as distortion_truth.fits (AstroMet, double precision), distortion_truth.hdr "
        "(TAN-SIP header), distortion_truth.ecsv (SIAF-style table) and "
        "distortion_truth.json (the figures: scale, distortion, accuracy of each format).",
    )
    f.add_argument("--instrument", choices=INSTRUMENTS, default="metis-lm")
    f.add_argument("--out", required=True, help="output directory")
    f.add_argument("--seed", type=int, default=None, help="random seed (default: fixed default field)")
    f.add_argument("--degree", type=int, default=5, help="total degree of the field (default 5)")
    f.add_argument("--corner-px", type=float, default=3.0,
                   help="largest non-linear displacement over the detector, pixels (default 3)")
    f.add_argument("--rotation", type=float, default=0.2,
                   help="detector rotation in the focal plane, degrees (default 0.2)")
    f.add_argument("--filter", dest="filter_id", help="filter id (default: the instrument's default)")
    f.add_argument("--overwrite", action="store_true", help="replace existing files")
    f.set_defaults(func=run_field)
    _register_lab(sub)
    _register_sky(sub)
    _register_lms(sub)


def _switch_group(parser, helps):
    """The ``--no-<effect>`` options of a simulator (``helps``: settings field -> help
    text), each storing False in ``switch_<field>``; returns their argument group."""
    g = parser.add_argument_group("physics switches (every effect is on by default)")
    for name, text in helps.items():
        g.add_argument(f"--no-{name.replace('_', '-')}", dest=f"switch_{name}", action="store_false", help=text)
    return g


def _switches(args, names):
    """``{settings field: on}`` of the switches ``names`` from parsed arguments."""
    return {name: getattr(args, f"switch_{name}") for name in names}


def _register_lab(sub):
    d = LabSimSettings()
    p = sub.add_parser(
        "lab",
        help="a complete lab campaign of the WCU pinhole grid: raw frames, campaign file, truth",
        description="Simulate a lab distortion campaign of the METIS WCU grid mask: raw FITS "
        "frames for a series of chopper offsets (OUT/raw/grid_NN.fits), a background frame with "
        "the black-body shutter closed and a flat, the campaign file OUT/campaign.toml (with a "
        "copy of the mask table) and the truth in OUT/truth/ (distortion field, hole errors, "
        "mask poses, spot positions). Every effect is on by default and can be switched off. "
        "See docs/simulator.md.",
    )
    p.add_argument("--instrument", choices=INSTRUMENTS, default="metis-lm")
    p.add_argument("--out", required=True, help="output directory (the campaign)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed; the same seed gives bit-identical frames (default: random, "
                   "recorded in truth/truth.json)")
    p.add_argument("--exposures", type=int, default=d.n_exposures,
                   help=f"number of chopper offsets (default {d.n_exposures})")
    p.add_argument("--filter", default=None, help="filter (default: the instrument's default, Lp or N2)")
    p.add_argument("--distortion", metavar="FILE", default=None,
                   help="instrument field from a solution file (AstroMet .fits, SIP .hdr/.fits, "
                   "SIAF .ecsv); default: the smooth default field of `simulate field`")
    p.add_argument("--corner-px", type=float, default=d.distortion_corner_px,
                   help="non-linear distortion of the default field at the corners, px "
                   f"(default {d.distortion_corner_px:g})")
    p.add_argument("--mask", default=d.mask,
                   help=f"mask table: an ECSV file or a shipped mask name (default {d.mask})")
    p.add_argument("--hole-error-um", type=float, default=d.hole_error_um,
                   help=f"rms of the hole position errors per axis, um (default {d.hole_error_um:g})")
    p.add_argument("--offset-sigma-mas", type=float, default=d.offset_sigma_mas,
                   help=f"stated accuracy of the chopper offsets, mas (default {d.offset_sigma_mas:g})")
    p.add_argument("--max-offset", type=float, default=d.max_offset_arcsec,
                   help=f"largest chopper offset, arcsec (default {d.max_offset_arcsec:g})")
    p.add_argument("--insertion-rot-deg", type=float, default=d.insertion_rot_deg,
                   help=f"rms of the mask insertion rotation, deg (default {d.insertion_rot_deg:g})")
    p.add_argument("--insertion-offset-arcsec", type=float, default=d.insertion_offset_arcsec,
                   help=f"rms of the mask insertion offset, arcsec (default {d.insertion_offset_arcsec:g})")
    p.add_argument("--mode", default=None,
                   help="detector readout mode (default: planned from the background; IMG_LM "
                   "fast/slow, IMG_N high_capacity/low_capacity)")
    p.add_argument("--dit", type=float, default=None, help="DIT, s (default: planned)")
    p.add_argument("--ndit", type=int, default=None, help="NDIT (default: exposure time / DIT)")
    p.add_argument("--exptime", type=float, default=d.exptime_s,
                   help=f"wanted DIT x NDIT per frame, s (default {d.exptime_s:g})")
    p.add_argument("--snr", type=float, default=d.snr_max,
                   help=f"SNR of an unvignetted spot; sets the black-body aperture (default {d.snr_max:g})")
    p.add_argument("--bb-temp", type=float, default=d.bb_temp_k,
                   help=f"black-body temperature, K (default {d.bb_temp_k:g})")
    p.add_argument("--bb-aperture", type=float, default=None,
                   help="black-body aperture (open fraction, 0-1); overrides --snr")
    p.add_argument("--wcu-temp", type=float, default=d.wcu_temp_k,
                   help=f"WCU (mask) temperature for the thermal background, K (default {d.wcu_temp_k:g})")
    p.add_argument("--nd", type=float, default=d.nd_transmission, metavar="TRANSMISSION",
                   help="neutral-density filter transmission (default 1: open); for bands whose "
                   "thermal background saturates the detector (M')")
    p.add_argument("--detector-shape", type=int, nargs=2, metavar=("NY", "NX"), default=None,
                   help="simulate only the central NY x NX window of the detector (same optics and "
                   "default field; quick runs and tests)")
    p.add_argument("--date", default=d.date_obs, help=f"start of the sequence, UTC (default {d.date_obs})")
    p.add_argument("--threads", type=int, default=2,
                   help="frames made at once (default 2; the files do not depend on it)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    g = _switch_group(p, LAB_SWITCHES)
    g.add_argument("--noiseless", action="store_true",
                   help="no photon noise, read noise or cosmic rays")
    g.add_argument("--ideal", action="store_true",
                   help="bare render: no detector effect at all and no thermal background")
    p.set_defaults(func=run_lab)


#: ``simulate lab`` options of the settings' fields (named in the errors instead of the fields)
LAB_OPTIONS = {"n_exposures": "--exposures", "max_offset_arcsec": "--max-offset",
               "offset_sigma_mas": "--offset-sigma-mas", "hole_error_um": "--hole-error-um",
               "insertion_rot_deg": "--insertion-rot-deg",
               "insertion_offset_arcsec": "--insertion-offset-arcsec",
               "distortion_corner_px": "--corner-px", "detector_shape": "--detector-shape",
               "dit_s": "--dit", "ndit": "--ndit", "exptime_s": "--exptime", "snr_max": "--snr",
               "bb_temp_k": "--bb-temp", "bb_aperture": "--bb-aperture", "wcu_temp_k": "--wcu-temp",
               "nd_transmission": "--nd"}


def _settings(make, args, options, command):
    """Settings from ``make()``; a non-finite number or a value the settings refuse is a
    :class:`~astrocal.errors.SimulationOptionError` (a ``ValueError``) naming the
    command-line option (not the settings' field)."""
    for option in options.values():
        value = getattr(args, option[2:].replace("-", "_"), None)
        if value is None and option == "--nd":
            value = args.nd
        if isinstance(value, float) and not math.isfinite(value):
            raise SimulationOptionError(f"{command} {option}: expected a finite number, got {value}")
    try:
        return make()
    except ValueError as exc:
        text = str(exc)
        for name, option in sorted(options.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(rf"\b{name}\b", option, text)
        raise SimulationOptionError(f"{command}: {text}") from None


def lab_settings(args: argparse.Namespace) -> LabSimSettings:
    """:class:`~astrocal.sim.lab_settings.LabSimSettings` from parsed ``simulate lab`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    LabSimSettings
        The settings.

    Raises
    ------
    SimulationOptionError
        An invalid option, naming it.
    """
    return _settings(lambda: _lab_settings(args), args, LAB_OPTIONS, "simulate lab")


def _lab_settings(args):
    s = LabSimSettings(
        instrument=args.instrument, filter=args.filter, seed=args.seed, n_exposures=args.exposures,
        max_offset_arcsec=args.max_offset, offset_sigma_mas=args.offset_sigma_mas,
        hole_error_um=args.hole_error_um, insertion_rot_deg=args.insertion_rot_deg,
        insertion_offset_arcsec=args.insertion_offset_arcsec, distortion_file=args.distortion,
        distortion_corner_px=args.corner_px, mask=args.mask,
        detector_shape=tuple(args.detector_shape) if args.detector_shape else None,
        readout_mode=args.mode, dit_s=args.dit, ndit=args.ndit, exptime_s=args.exptime,
        snr_max=args.snr, bb_temp_k=args.bb_temp, bb_aperture=args.bb_aperture,
        wcu_temp_k=args.wcu_temp, nd_transmission=args.nd, date_obs=args.date,
        **_switches(args, LAB_SWITCHES),
    )
    if args.noiseless:
        s = s.noiseless()
    if args.ideal:
        s = s.ideal()
    return s


def run_lab(args: argparse.Namespace) -> int:
    """Run ``astrocal simulate lab``: simulate the campaign and print its figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status (0).
    """
    res = simulate_lab(args.out, lab_settings(args), overwrite=args.overwrite, threads=args.threads)
    sm = res.summary
    print(f"{sm['instrument']} filter {sm['filter']}: {sm['n_exposures']} exposures, readout "
          f"'{sm['readout_mode']}', DIT {sm['dit_s']:g} s x NDIT {sm['ndit']}")
    print(f"thermal background {sm['thermal_background_e_per_s_px']:.3g} e/s/px, black-body "
          f"aperture {sm['bb_aperture']:.3g}, brightest spot {sm['brightest_spot_e_per_dit']:.3g} e "
          f"per DIT, full well filled to {sm['full_well_fill']:.0%}")
    lo, hi = sm["snr_range"]
    if lo is not None:
        print(f"spots per exposure {min(sm['spots_per_exposure'])}-{max(sm['spots_per_exposure'])}, "
              f"SNR {lo:.0f}-{hi:.0f} (median {sm['snr_median']:.0f}), Cramer-Rao sigma "
              f"{sm['crb_sigma_px_range'][0]:.2g}-{sm['crb_sigma_px_range'][1]:.2g} px")
    print(f"wrote {res.campaign} ({len(res.frames)} frames, background, flat; truth in "
          f"{res.truth_files['truth_json'].parent}) in {sm['seconds']:.1f} s")
    return 0


#: ``--no-<name>`` switches of ``simulate sky``: settings field -> help text
SKY_SWITCHES = {
    "thermal": "no thermal background (sky + telescope)",
    "spiders": "no M2 spiders in the ELT pupil",
    "reference_pixels": "no reference-pixel border",
    "flat": "no flat-field pattern",
    "dark": "no dark current (nor hot pixels' dark)",
    "bad_pixels": "no dead or hot pixels",
    "photon_noise": "no photon noise",
    "read_noise": "no read noise",
    "cosmic_rays": "no cosmic rays",
    "saturation": "no clipping at the full well",
}


def _register_sky(sub):
    d = SkySimSettings()
    p = sub.add_parser(
        "sky",
        help="an on-sky campaign of a dense field (Galactic Center, 47 Tuc): raw frames, catalogue, truth",
        description="Simulate an on-sky distortion campaign of METIS IMG_LM: exposures of the Galactic "
        "Center (the shipped catalogue is the truth) or of the core of 47 Tuc (a synthetic dense cluster) over "
        "one night at Cerro Armazones, through several zenith distances and rotator angles (field-stabilised), "
        "with the instrument distortion, the telescope's flexure, refraction for the weather of each exposure, "
        "an AO PSF, thermal background and noise. Writes OUT/raw/<field>_NN.fits (or, with --points-only, the "
        "measured tables OUT/tables/<field>_NN.ecsv), the catalogue the fit sees OUT/catalog.ecsv (truth + "
        "errors drawn from its stated precision), OUT/campaign.toml and the truth in OUT/truth/. See "
        "docs/simulator.md.",
    )
    p.add_argument("--field", dest="target", choices=sorted(FIELDS), default=d.target,
                   help=f"the sky field (default {d.target})")
    p.add_argument("--out", required=True, help="output directory (the campaign)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed; the same seed gives bit-identical files (default: random, recorded in "
                   "truth/truth.json)")
    p.add_argument("--exposures", type=int, default=d.n_exposures,
                   help=f"number of exposures over the night (default {d.n_exposures})")
    p.add_argument("--zenith-range", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                   help="planned zenith distances, deg (default: gc 5 60, 47tuc 48 58)")
    p.add_argument("--night", default=None,
                   help="date of the evening, YYYY-MM-DD (default: gc 2027-06-12, 47tuc 2027-09-30)")
    p.add_argument("--position-angles", type=float, nargs="+", default=list(d.position_angles), metavar="DEG",
                   help="position angle(s) of the instrument +y axis, deg, cycled over the exposures "
                   "(default 0)")
    p.add_argument("--dither", type=float, default=d.dither_arcsec,
                   help=f"pointing dithers up to this radius, arcsec (default {d.dither_arcsec:g})")
    p.add_argument("--distortion", metavar="FILE", default=None,
                   help="instrument field: a solution file (AstroMet .fits, SIP .hdr/.fits, SIAF .ecsv) or a lab "
                   "campaign directory of `simulate lab` (its truth field); default: the default field of "
                   "`simulate lab`")
    p.add_argument("--detector-shape", type=int, nargs=2, metavar=("NY", "NX"), default=None,
                   help="simulate only the central NY x NX window of the detector (quick runs and tests)")
    g = p.add_argument_group("telescope and poses")
    g.add_argument("--flexure-mas", type=float, default=d.flexure_sigma_mas,
                   help=f"rms of each flexure coefficient, mas (default {d.flexure_sigma_mas:g}; 0: no flexure)")
    g.add_argument("--flexure-degree", type=int, default=d.flexure_degree,
                   help=f"total degree of the flexure field (default {d.flexure_degree})")
    g.add_argument("--flexure-functions", nargs="+", default=list(d.flexure_functions),
                   choices=sorted(ZENITH_FUNCTIONS), metavar="F",
                   help="functions of the zenith distance the flexure coefficients follow "
                   f"(default {' '.join(d.flexure_functions)}; from {', '.join(sorted(ZENITH_FUNCTIONS))})")
    g.add_argument("--pointing-sigma", type=float, default=d.pointing_sigma_arcsec,
                   help=f"rms pointing error per axis, arcsec (default {d.pointing_sigma_arcsec:g})")
    g.add_argument("--rotation-sigma-deg", type=float, default=d.rotation_sigma_deg,
                   help=f"rms position-angle error, deg (default {d.rotation_sigma_deg:g})")
    g.add_argument("--scale-sigma", type=float, default=d.scale_sigma,
                   help=f"rms plate-scale change per exposure (default {d.scale_sigma:g})")
    g.add_argument("--catalog-errors", type=float, default=d.catalog_error_scale, metavar="SCALE",
                   help="catalogue errors drawn at SCALE x the stated precision (default 1; 0: a perfect "
                   "catalogue)")
    g.add_argument("--cluster-stars", type=int, default=d.cluster_stars,
                   help=f"47tuc: synthetic stars within {d.cluster_radius_arcsec:g} arcsec (default "
                   f"{d.cluster_stars})")
    g = p.add_argument_group("images")
    g.add_argument("--strehl", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.strehl_range),
                   help="Strehl ratio range in L, best seeing -> MAX (default 0.6 0.9)")
    g.add_argument("--seeing", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.seeing_range_arcsec),
                   help="seeing at 0.5 um at zenith, arcsec (default 0.5 0.9)")
    g.add_argument("--exptime", type=float, default=d.exptime_s,
                   help=f"DIT x NDIT per frame, s (default {d.exptime_s:g})")
    g.add_argument("--mode", default=None, help="detector readout mode, fast or slow (default: planned)")
    g.add_argument("--dit", type=float, default=None, help="DIT, s (default: planned)")
    g.add_argument("--ndit", type=int, default=None, help="NDIT (default: exposure time / DIT)")
    g.add_argument("--background-drift", action="store_true",
                   help="the thermal background follows each exposure's temperature (default: the night's mean "
                   "for all, so that the one background frame matches every exposure)")
    g.add_argument("--threads", type=int, default=2,
                   help="frames made at once (default 2; the files do not depend on it)")
    g = p.add_argument_group("point-level campaign")
    g.add_argument("--points-only", action="store_true",
                   help="write the measured tables of perfect detection (tables/<field>_NN.ecsv) instead of images")
    g.add_argument("--sigma-px", type=float, nargs=2, metavar=("MIN", "MAX"), default=list(d.sigma_px),
                   help="--points-only: centroid sigma of the brightest / faintest stars, px (default 0.01 0.05)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    g = _switch_group(p, SKY_SWITCHES)
    g.add_argument("--noiseless", action="store_true", help="no photon noise, read noise or cosmic rays")
    g.add_argument("--ideal", action="store_true",
                   help="bare render: no detector effect at all and no thermal background")
    p.set_defaults(func=run_sky)


def sky_settings(args: argparse.Namespace) -> SkySimSettings:
    """:class:`~astrocal.sim.sky.SkySimSettings` from parsed ``simulate sky`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    SkySimSettings
        The settings.
    """
    s = SkySimSettings(
        target=args.target, seed=args.seed, n_exposures=args.exposures,
        zenith_range=tuple(args.zenith_range) if args.zenith_range else None, night=args.night,
        position_angles=tuple(args.position_angles), dither_arcsec=args.dither,
        flexure_degree=args.flexure_degree, flexure_functions=tuple(args.flexure_functions),
        flexure_sigma_mas=args.flexure_mas, pointing_sigma_arcsec=args.pointing_sigma,
        rotation_sigma_deg=args.rotation_sigma_deg, scale_sigma=args.scale_sigma,
        catalog_error_scale=args.catalog_errors, distortion_file=args.distortion,
        detector_shape=tuple(args.detector_shape) if args.detector_shape else None,
        cluster_stars=args.cluster_stars, strehl_range=tuple(args.strehl), seeing_range_arcsec=tuple(args.seeing),
        exptime_s=args.exptime, readout_mode=args.mode, dit_s=args.dit, ndit=args.ndit,
        background_drift=args.background_drift, points_only=args.points_only, sigma_px=tuple(args.sigma_px),
        **_switches(args, SKY_SWITCHES),
    )
    if args.noiseless:
        s = s.noiseless()
    if args.ideal:
        s = s.ideal()
    return s


def run_sky(args: argparse.Namespace) -> int:
    """Run ``astrocal simulate sky``: simulate the campaign and print its figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status (0).
    """
    res = simulate_sky(args.out, sky_settings(args), overwrite=args.overwrite, threads=args.threads)
    sm = res.summary
    zd, rot = sm["zenith_distance_deg"], sm["rotator_angle_deg"]
    print(f"{sm['field']}, {sm['instrument']} {sm['filter']}: {sm['n_exposures']} exposures, zenith distance "
          f"{min(zd):.1f}-{max(zd):.1f} deg, rotator {min(rot):.1f}..{max(rot):.1f} deg")
    print(f"stars per exposure {min(sm['stars_per_exposure'])}-{max(sm['stars_per_exposure'])} (catalogue "
          f"{sm['n_catalog_stars']}), flexure rms {sm['flexure_rms_mas']:.2f} mas")
    if "dit_s" in sm:
        print(f"readout '{sm['readout_mode']}', DIT {sm['dit_s']:g} s x NDIT {sm['ndit']}, background "
              f"{sm['background_e_per_s_px']:.3g} e/s/px, Strehl {min(sm['strehl']):.2f}-{max(sm['strehl']):.2f}, "
              f"{sm['n_saturated']} saturated star images")
        lo, hi = sm["snr_range"]
        if lo is not None:
            print(f"SNR {lo:.0f}-{hi:.0f} (median {sm['snr_median']:.0f}), Cramer-Rao sigma "
                  f"{sm['crb_sigma_px_range'][0]:.2g}-{sm['crb_sigma_px_range'][1]:.2g} px")
    kind = "tables" if res.flat is None else "frames"
    print(f"wrote {res.campaign} ({len(res.exposures)} {kind}, catalogue {res.catalog.name}; truth in "
          f"{res.truth_files['truth_json'].parent}) in {sm['seconds']:.1f} s")
    return 0


def run_field(args: argparse.Namespace) -> int:
    """Run ``astrocal simulate field``: write the field in every format and print its figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status (0).
    """
    files = simulate_field(args.out, instrument=args.instrument, degree=args.degree,
                           corner_px=args.corner_px, rotation_deg=args.rotation, seed=args.seed,
                           filter_id=args.filter_id, overwrite=args.overwrite)
    fig = files.figures
    print(f"{fig['instrument']} filter {fig['filter']}: degree {fig['degree']}, plate scale "
          f"{fig['plate_scale_mas_per_px']:.4f} mas/px, non-linear distortion up to "
          f"{fig['nonlinear_at_corners_px']:.2f} px at the corners")
    print(f"reverse field: degree {fig['reverse_field_degree']}, max round trip "
          f"{fig['reverse_max_roundtrip_px']:.2e} px")
    print(f"AstroMet POLYNOM_MAP / POLYNOM_MAP2 max error: "
          f"{fig['astromet_polynom_map_max_error_px']:.2e} / "
          f"{fig['astromet_polynom_map2_max_error_px']:.2e} px")
    print(f"files read back vs truth (max px): AstroMet {fig['astromet_file_vs_truth_max_px']:.1e}, "
          f"SIP {fig['sip_file_vs_truth_max_px']:.1e}, SIAF {fig['siaf_file_vs_truth_max_px']:.1e}")
    for path in (files.astromet, files.sip, files.siaf, files.summary):
        print(f"wrote {path}")
    return 0


#: ``--no-<name>`` switches of ``simulate lms``: settings field -> help text
LMS_SWITCH_HELP = {
    "deviations": "the optical model: no as-built deviations (all parameters zero)",
    "offset_errors": "chopper offsets applied exactly as commanded",
    "neighbours": "no PSF light cut into the neighbouring slices",
    "laser1": "3.39-um laser off",
    "qcl": "QCL (4.68-4.78 um) off",
    "laser3": "5.26-um laser off",
    "continuum": "no black-body frames (pinhole traces, lit slices)",
    "background": "no background frame",
    "thermal": "no thermal emission of the WCU",
    "dark": "no dark current",
    "noise": "no photon or read noise (frames are the expected signal)",
    "reference_pixels": "light also on the reference-pixel borders",
    "saturation": "no clipping at the full well",
    "rsrf": "no relative spectral response: every slice and wavelength alike, no echelle blaze",
    "slit_loss": "no transmission profile across the slices (the PSF's cut by the slice stays)",
    "hole_errors": "no manufacturing errors of the mask's hole positions",
}

#: ``simulate lms`` options of the settings' fields (named in the errors instead of the fields)
LMS_OPTIONS = {"settings_um": "--settings", "n_offsets": "--offsets", "max_along_arcsec": "--max-along",
               "max_across_slices": "--max-across", "offset_sigma_mas": "--offset-sigma-mas",
               "qcl_lines_um": "--qcl-lines", "dit_s": "--dit", "ndit": "--ndit", "degree": "--degree",
               "efficiency": "--efficiency", "bb_temp_k": "--bb-temp", "truth": "--truth",
               "resolving_power": "--resolving-power", "date_obs": "--date", "slit_scan": "--slit-scan",
               "slit_edge_loss": "--slit-edge-loss", "slice_waves_px": "--slice-waves",
               "hole_error_um": "--hole-error-um", "hole_errors_from": "--hole-errors-from"}


def _register_lms(sub):
    d = LmsSimSettings()
    p = sub.add_parser(
        "lms",
        help="raw LMS (LM integral-field spectrograph) frames for the distortion and wavelength templates",
        description="Simulate the METIS LMS calibration frames: the WCU grid mask's holes in the LMS field lit "
        "by the lasers (3.39 um, QCL 4.68-4.78 um, 5.26 um) at chopper offsets along and across the slices, "
        "the grid lit by the black body (continuum traces), the slices lit with the mask open (slice edges) "
        "and a background frame, per echelle setting, on the 4-chip mosaic (OUT/raw/*.fits: 4 image "
        "extensions DET1.DATA..DET4.DATA, ESO DET3 keywords), through an as-built geometry drawn from the "
        "prior (truth in OUT/truth/), with OUT/campaign.toml ([lms] section). See docs/simulator.md, 'LMS'.",
    )
    p.add_argument("--out", required=True, help="output directory (the campaign)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random, in truth/truth.json)")
    p.add_argument("--settings", type=float, nargs="+", default=list(d.settings_um), metavar="LAM_C",
                   help="central wavelengths of the echelle settings, um (default 3.40 4.73; 5.27 holds 5.26 um)")
    p.add_argument("--offsets", type=int, default=d.n_offsets, help=f"chopper offsets per setting (default {d.n_offsets})")
    p.add_argument("--max-along", type=float, default=d.max_along_arcsec,
                   help=f"largest offset along the slices, arcsec (default {d.max_along_arcsec:g})")
    p.add_argument("--max-across", type=int, default=d.max_across_slices,
                   help=f"largest offset across the slices, in slice widths (default {d.max_across_slices})")
    p.add_argument("--offset-sigma-mas", type=float, default=d.offset_sigma_mas,
                   help=f"accuracy of the chopper offsets, mas (default {d.offset_sigma_mas:g})")
    p.add_argument("--slit-scan", type=float, nargs="+", default=list(d.slit_scan), metavar="FRACTION",
                   help="extra laser exposures with the mask moved across the slices by these fractions of a "
                   "slice width, in (-0.5, 0.5) (the slit-loss scan; default none)")
    p.add_argument("--slit-edge-loss", type=float, default=d.slit_edge_loss,
                   help=f"loss of the slit profile at the slice edges (default {d.slit_edge_loss:g})")
    p.add_argument("--grid-all-offsets", action="store_true",
                   help="black-body grid frames at every offset (default: the first only)")
    p.add_argument("--qcl-lines", type=float, nargs="+", default=None, metavar="LAM",
                   help="QCL lines, um (default 4.68 .. 4.78 in 0.01 steps)")
    p.add_argument("--dit", type=float, default=d.dit_s, help=f"DIT, s (default {d.dit_s:g})")
    p.add_argument("--ndit", type=int, default=d.ndit, help=f"NDIT (default {d.ndit})")
    p.add_argument("--bb-temp", type=float, default=d.bb_temp_k, help=f"black body, K (default {d.bb_temp_k:g})")
    p.add_argument("--efficiency", type=float, default=d.efficiency,
                   help=f"optics x QE, assumed (default {d.efficiency:g})")
    p.add_argument("--resolving-power", type=float, default=d.resolving_power,
                   help=f"of a slit-filling source (default {d.resolving_power:g})")
    p.add_argument("--degree", type=int, default=d.degree,
                   help=f"degree of the per-slice deviation polynomials (default {d.degree})")
    p.add_argument("--slice-waves", type=float, default=d.slice_waves_px, metavar="PX",
                   help="amplitude of a smooth per-slice as-built term no per-slice polynomial holds, px "
                   "(astrocal.lms.SliceWaves; default 0: none)")
    p.add_argument("--truth", choices=("forward", "inverse"), default=d.truth,
                   help="which optical-model polynomials are exact (default forward)")
    p.add_argument("--hole-error-um", type=float, default=d.hole_error_um,
                   help=f"rms of the mask holes' position errors per axis, um (default {d.hole_error_um:g}, as "
                   "simulate lab)")
    p.add_argument("--hole-errors-from", default=None, metavar="HOLES_ECSV",
                   help="take the hole errors from this table (hole_id, dx_um, dy_um, x_mm, y_mm), e.g. "
                   "truth/holes.ecsv of 'astrocal simulate lab' of the same mask: one realisation for both")
    p.add_argument("--date", default=d.date_obs, help=f"start of the sequence, UTC (default {d.date_obs})")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _switch_group(p, {name: LMS_SWITCH_HELP[name] for name in LMS_SWITCHES})
    p.set_defaults(func=run_lms)


def lms_settings(args: argparse.Namespace) -> LmsSimSettings:
    """:class:`~astrocal.sim.lms.LmsSimSettings` from parsed ``simulate lms`` arguments.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    LmsSimSettings
        The settings.

    Raises
    ------
    SimulationOptionError
        An invalid option (or echelle setting), naming it.
    """
    for lam in args.settings:
        try:
            echelle_setting(lam)
        except (LmsGeometryError, ValueError) as exc:
            raise SimulationOptionError(f"simulate lms --settings: {exc}") from None
    kw = dict(seed=args.seed, settings_um=tuple(args.settings), n_offsets=args.offsets,
              max_along_arcsec=args.max_along, max_across_slices=args.max_across,
              offset_sigma_mas=args.offset_sigma_mas, grid_all_offsets=args.grid_all_offsets,
              dit_s=args.dit, ndit=args.ndit, bb_temp_k=args.bb_temp, efficiency=args.efficiency,
              resolving_power=args.resolving_power, degree=args.degree, truth=args.truth, date_obs=args.date,
              slit_scan=tuple(args.slit_scan), slit_edge_loss=args.slit_edge_loss, slice_waves_px=args.slice_waves,
              hole_error_um=args.hole_error_um, hole_errors_from=args.hole_errors_from,
              **_switches(args, LMS_SWITCHES))
    if args.qcl_lines is not None:
        kw["qcl_lines_um"] = tuple(args.qcl_lines)
    return _settings(lambda: LmsSimSettings(**kw), args, LMS_OPTIONS, "simulate lms")


def run_lms(args: argparse.Namespace) -> int:
    """Run ``astrocal simulate lms``: simulate the frames and print their figures.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status (0).
    """
    s = lms_settings(args)
    res = simulate_lms(args.out, s, overwrite=args.overwrite)
    sm = res.summary
    kinds = ", ".join(f"{n} {k}" for k, n in sm["frames"].items() if n)
    print(f"LMS settings {', '.join(f'{v:g}' for v in sm['settings_um'])} um: {sm['n_frames']} frames ({kinds})")
    for lam_c, per in sm["spots_per_laser_frame_by_detector"].items():
        print(f"  {lam_c} um: spots per laser frame " + ", ".join(f"{d} {n:g}" for d, n in per.items()))
    print(f"brightest pixel {sm['max_e_per_dit']:.3g} e per DIT; wrote {res.campaign} (truth in "
          f"{res.truth_files['truth_json'].parent}) in {sm['seconds']:.1f} s")
    return 0
