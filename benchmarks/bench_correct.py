"""Benchmark: ``astrocal correct`` on 1 million star positions and on a 2048 x 2048 image.

Positions.  1e6 random positions over a METIS IMG_LM-like detector (2048 x 2048, 5.47 mas/px,
3 px of distortion at the corners, degree 5, with a 1-sigma map), corrected *with their
uncertainties* (input errors pushed through the Jacobian plus the map's) by
:func:`astrocal.correct.correct_positions` for every way of opening the solution: the
AstroMet file (table-bicubic, the default; table-bilinear; POLYNOM_MAP; POLYNOM_MAP2), the
SIP header, the SIAF table and, with ``--result DIR``, an ``astrocal fit`` result directory
(posterior).  Peer: astropy's ``WCS.all_pix2world`` with the same solution's TAN-SIP header
on the same positions (positions only, no uncertainty).  Bar (issue #7): <= 2 s.

Image.  A 2048 x 2048 frame resampled onto the linear grid by
:func:`astrocal.correct.resample` (``interp``: reproject_interp bicubic times the pixel
area, the default; ``drizzle``).  Peers: the reproject calls alone with astropy's own
WCS (the same TAN-SIP header as input WCS, the linear grid's TAN as output):
``reproject_interp`` (bicubic) and ``reproject_adaptive`` (``conserve_flux=True``).
Bar (issue #7): <= 20 s.

Each figure is the best of ``--repeat`` runs; the load average is printed with them: on a
busy machine rerun when it is below the core count.

Run:  OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_correct.py
      [--repeat 3] [--result out/Lp] [--skip-image] [--skip-positions]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from astrocal.correct import correct_positions, open_solution, resample
from astrocal.correct.image import linear_grid_header
from astrocal.field.synthetic import smooth_field
from astrocal.formats.astromet import write_astromet
from astrocal.formats.siaf import write_siaf
from astrocal.formats.sip import sip_header, write_sip_header
from astrocal.solution import Solution

N_POSITIONS = 1_000_000
SHAPE = (2048, 2048)


def sigma(x, y):
    r2 = ((np.asarray(x) - 1023.5) ** 2 + (np.asarray(y) - 1023.5) ** 2) / 1024.0 ** 2
    return 0.002 + 0.003 * r2, 0.0025 + 0.002 * r2


def best_of(repeat, func):
    times, result = [], None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return min(times), times, result


def load():
    return f"load average {os.getloadavg()[0]:.2f} (cpu_count {os.cpu_count()})"


def positions(files, args):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, SHAPE[1] - 0.5, N_POSITIONS)
    y = rng.uniform(-0.5, SHAPE[0] - 0.5, N_POSITIONS)
    sx = rng.uniform(0.005, 0.03, N_POSITIONS)
    sy = rng.uniform(0.005, 0.03, N_POSITIONS)
    wcs = WCS(sip_header(files["solution"]))
    t_peer, runs_peer, sky = best_of(args.repeat, lambda: wcs.all_pix2world(x, y, 0))
    print(f"\n1e6 positions ({load()})")
    print(f"  peer astropy WCS.all_pix2world (TAN-SIP, positions only): best {t_peer:.3f} s "
          f"(runs {', '.join(f'{t:.3f}' for t in runs_peer)})")
    cases = [("astromet", m) for m in ("table-bicubic", "table-bilinear", "polynom_map",
                                       "polynom_map2")]
    cases += [("sip", None), ("siaf", None)]
    if args.result:
        cases.append(("result", None))
    rows = []
    for kind, method in cases:
        ev = open_solution(args.result if kind == "result" else files[kind], method=method)
        t, runs, res = best_of(args.repeat, lambda: correct_positions(ev, x, y, sx, sy))
        ok = np.isfinite(res.lx).all() and np.isfinite(res.cov).all()
        label = f"{kind}:{ev.method}"
        rows.append((label, t))
        print(f"  astrocal correct_positions {label:24s} with uncertainties: best {t:.3f} s "
              f"(runs {', '.join(f'{v:.3f}' for v in runs)}), ratio to peer {t / t_peer:.2f}, "
              f"bar <= 2 s {'MET' if t <= 2.0 and ok else 'NOT MET'}")
    return t_peer, rows


def image(files, args):
    from reproject import reproject_adaptive, reproject_interp

    rng = np.random.default_rng(2)
    data = rng.normal(100.0, 3.0, SHAPE)
    ev = open_solution(files["astromet"])
    print(f"\n2048 x 2048 image ({load()})")
    rows = []
    for resampler in ("interp", "drizzle"):
        t, runs, (out, cov) = best_of(args.repeat, lambda: resample(data, ev, resampler=resampler))
        rows.append((resampler, t))
        print(f"  astrocal resample ({resampler:7s}, table-bicubic): best {t:.2f} s "
              f"(runs {', '.join(f'{v:.2f}' for v in runs)}), bar <= 20 s "
              f"{'MET' if t <= 20.0 else 'NOT MET'}")
    w_in = WCS(sip_header(files["solution"]))
    w_out = WCS(linear_grid_header(ev))
    peers = []
    for name, func in (("reproject_interp bicubic", lambda: reproject_interp(
            (data, w_in), w_out, shape_out=SHAPE, order="bicubic", return_footprint=False)),
            ("reproject_adaptive conserve_flux", lambda: reproject_adaptive(
                (data, w_in), w_out, shape_out=SHAPE, conserve_flux=True,
                return_footprint=False))):
        t, runs, _ = best_of(args.repeat, func)
        peers.append((name, t))
        print(f"  peer {name} (astropy TAN-SIP -> TAN): best {t:.2f} s "
              f"(runs {', '.join(f'{v:.2f}' for v in runs)})")
    for name, t in rows:
        print(f"  ratio astrocal {name} / peer {peers[0][0]}: {t / peers[0][1]:.2f}; "
              f"/ peer {peers[1][0]}: {t / peers[1][1]:.2f}")
    return rows, peers


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--result", help="an astrocal fit result directory (posterior case)")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--skip-positions", action="store_true")
    args = parser.parse_args()
    blas = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
            if k in os.environ}
    print(f"astrocal correct benchmark; BLAS threads {blas or 'default'}; {load()}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        sol = Solution(smooth_field(degree=5, corner_px=3.0, rotation_deg=0.4, rng=11),
                       filter="L", sigma=sigma)
        files = {"solution": sol, "astromet": write_astromet(d / "a.fits", sol),
                 "sip": write_sip_header(d / "s.hdr", sol), "siaf": write_siaf(d / "s.ecsv", sol)}
        summary = []
        if not args.skip_positions:
            t_peer, rows = positions(files, args)
            summary += [f"positions {name}: {t:.3f} s (peer all_pix2world {t_peer:.3f} s, "
                        f"ratio {t / t_peer:.2f})" for name, t in rows]
        if not args.skip_image:
            rows, peers = image(files, args)
            summary += [f"image {name}: {t:.2f} s (peer {peers[0][0]} {peers[0][1]:.2f} s, "
                        f"ratio {t / peers[0][1]:.2f}; {peers[1][0]} {peers[1][1]:.2f} s)"
                        for name, t in rows]
    print("\nSUMMARY (" + load() + " at the end)")
    for line in summary:
        print("  " + line)


if __name__ == "__main__":
    fits.conf.use_memmap = False
    main()
