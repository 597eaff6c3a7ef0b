"""``astrocal simulate``: make data with known truth."""
from __future__ import annotations

from .field import simulate_field

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


def register(subparsers):
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


def _register_lab(sub):
    from .lab import LabSimSettings

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
    g = p.add_argument_group("physics switches (every effect is on by default)")
    for name, text in LAB_SWITCHES.items():
        g.add_argument(f"--no-{name.replace('_', '-')}", dest=f"switch_{name}", action="store_false",
                       help=text)
    g.add_argument("--noiseless", action="store_true",
                   help="no photon noise, read noise or cosmic rays")
    g.add_argument("--ideal", action="store_true",
                   help="bare render: no detector effect at all and no thermal background")
    p.set_defaults(func=run_lab)


def lab_settings(args):
    """:class:`~astrocal.sim.lab.LabSimSettings` from parsed ``simulate lab`` arguments."""
    from .lab import LabSimSettings

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
        **{name: getattr(args, f"switch_{name}") for name in LAB_SWITCHES},
    )
    if args.noiseless:
        s = s.noiseless()
    if args.ideal:
        s = s.ideal()
    return s


def run_lab(args):
    from .lab import simulate_lab

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


def run_field(args):
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
