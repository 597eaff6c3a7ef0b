"""``astrocal simulate``: make data with known truth."""
from __future__ import annotations

from .field import simulate_field

INSTRUMENTS = ("metis-lm", "metis-n")


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
