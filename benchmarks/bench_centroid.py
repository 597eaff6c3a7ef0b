#!/usr/bin/env python
"""Speed and accuracy of astrocal's centroiding next to photutils'.

Simulates METIS IMG_LM pinhole frames (2048 x 2048, L band, ELT pupil with spiders,
25 um pinhole, Poisson + 10 e- read noise on 200 e-/px of background) with N isolated
spots at random sub-pixel positions, gives both methods the same frames and the same
first guesses (truth + 0.3 px rms, as from a detection step), and prints per SNR:

* time per frame of ``astrocal.lab.centroid.fit_centroids`` (PSF fit, model-weighted,
  with covariances and flags) and of ``photutils.centroids.centroid_sources`` with
  ``centroid_2dg`` (2-D Gaussian fit, on the background-subtracted frame), and the
  speed ratio;
* the rms position error against the truth for both, the Cramér-Rao bound, and the
  accuracy ratio (photutils rms / astrocal rms; > 1 means astrocal is more accurate).

With ``--epsf`` it also compares ePSF building from the frames: astrocal's least-squares
builder against photutils' ``EPSFBuilder`` (then fitted with astrocal's fitter).

Usage::

    python benchmarks/bench_centroid.py [--frames 5] [--spots 100] [--snr 30 300 3000]
                                        [--box 11] [--epsf]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import astrocal  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from photutils.centroids import centroid_2dg, centroid_sources  # noqa: E402

from astrocal.lab import centroid as C  # noqa: E402
from astrocal.lab import epsf as E  # noqa: E402
from astrocal.lab import psf as P  # noqa: E402

SKY = 200.0  # e-/px
READ_NOISE = 10.0  # e-


def make_frames(psf, flux, n_frames, n_spots, shape, rng):
    """Frames with isolated spots (one per cell of a jittered grid)."""
    ny, nx = shape
    ncell = int(np.ceil(np.sqrt(n_spots)))
    cell = min(ny, nx) // ncell
    frames = []
    for _ in range(n_frames):
        g = rng.permutation(ncell * ncell)[:n_spots]
        margin = 40
        xt = (g % ncell) * cell + rng.uniform(margin, cell - margin, n_spots)
        yt = (g // ncell) * cell + rng.uniform(margin, cell - margin, n_spots)
        img = rng.poisson(P.render_spots(shape, xt, yt, flux, psf) + SKY).astype(float)
        img += rng.normal(0.0, READ_NOISE, shape)
        xg = xt + rng.normal(0.0, 0.3, n_spots)
        yg = yt + rng.normal(0.0, 0.3, n_spots)
        frames.append((img, xt, yt, xg, yg))
    return frames


def rms(dx, dy):
    ok = np.isfinite(dx) & np.isfinite(dy)
    return float(np.sqrt(np.mean(dx[ok] ** 2 + dy[ok] ** 2) / 2)), int((~ok).sum())


def bench_centroids(psf, noise, frames, box, repeat):
    # warm-up (first-call overheads of both libraries)
    img, xt, yt, xg, yg = frames[0]
    C.fit_centroids(img, xg[:5], yg[:5], psf, noise=noise)
    centroid_sources(img - SKY, xg[:5], yg[:5], box_size=box, centroid_func=centroid_2dg)

    t_ours, t_pu = [], []
    ex_o, ey_o, ex_p, ey_p = [], [], [], []
    for img, xt, yt, xg, yg in frames:
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            res = C.fit_centroids(img, xg, yg, psf, noise=noise)
            best = min(best, time.perf_counter() - t0)
        t_ours.append(best)
        t0 = time.perf_counter()
        xc, yc = centroid_sources(img - SKY, xg, yg, box_size=box, centroid_func=centroid_2dg)
        t_pu.append(time.perf_counter() - t0)
        ex_o.append(res.x - xt)
        ey_o.append(res.y - yt)
        ex_p.append(xc - xt)
        ey_p.append(yc - yt)
    r_o, bad_o = rms(np.concatenate(ex_o), np.concatenate(ey_o))
    r_p, bad_p = rms(np.concatenate(ex_p), np.concatenate(ey_p))
    return np.mean(t_ours), np.mean(t_pu), r_o, r_p, bad_o, bad_p


def stats(err):
    """rms, number failed, mean offset (x, y) and rms about the mean of position errors."""
    ex = np.concatenate([e[0] for e in err])
    ey = np.concatenate([e[1] for e in err])
    r, bad = rms(ex, ey)
    ok = np.isfinite(ex) & np.isfinite(ey)
    mx, my = float(np.mean(ex[ok])), float(np.mean(ey[ok]))
    r0, _ = rms(ex - mx, ey - my)
    return r, bad, (mx, my), r0


def bench_epsf(psf, noise, frames):
    images = [f[0] for f in frames]
    guesses = [(f[3], f[4]) for f in frames]
    truths = [(f[1], f[2]) for f in frames]
    out = {}
    t0 = time.perf_counter()
    fit = E.build_epsf(images, guesses, noise=noise)
    t_build = time.perf_counter() - t0
    err = [(r.x - t[0], r.y - t[1]) for r, t in zip(fit.results, truths)]
    out["astrocal"] = (t_build, *stats(err), fit.n_iter)
    t0 = time.perf_counter()
    pu = E.build_epsf_photutils(images, guesses, background=SKY)
    t_build = time.perf_counter() - t0
    size = fit.psf.meta["stamp_size"]
    res = [C.fit_centroids(im, gx, gy, pu, noise=noise, stamp_size=size)
           for im, (gx, gy) in zip(images, guesses)]
    err = [(r.x - t[0], r.y - t[1]) for r, t in zip(res, truths)]
    out["photutils"] = (t_build, *stats(err), pu.meta["iterations"])
    return out, size


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--spots", type=int, default=100)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--snr", type=float, nargs="+", default=[30.0, 300.0, 3000.0])
    ap.add_argument("--box", type=int, default=11, help="photutils box size (odd, px)")
    ap.add_argument("--repeat", type=int, default=3, help="astrocal timing: best of N")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--epsf", action="store_true", help="also compare ePSF builders")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    psf = P.diffraction_psf(P.FILTER_WAVELENGTH_UM["L"], P.PIXEL_SCALE_MAS["IMG_LM"],
                            pinhole_mas=P.pinhole_diameter_mas(25.0, 3.319))
    t_psf = time.perf_counter() - t0
    noise = C.NoiseModel(read_noise=READ_NOISE)
    stamp = psf.default_stamp_size()
    print(f"PSF: ELT pupil (D={P.ELT_OUTER_DIAMETER_M} m, obscuration "
          f"{P.ELT_CENTRAL_OBSCURATION_M} m, spiders), L {psf.meta['wavelength_um']} um, "
          f"{psf.meta['pixel_scale_mas']} mas/px, pinhole {psf.meta['pinhole_mas']:.2f} mas; "
          f"FWHM {psf.fwhm():.2f} px; table built in {t_psf:.2f} s (once, cached)")
    print(f"{args.frames} frames of {args.size}x{args.size} px, {args.spots} spots each; "
          f"astrocal stamp {stamp} px, photutils box {args.box} px; "
          f"background {SKY:.0f} e-/px, read noise {READ_NOISE:.0f} e-")
    print()
    head = (f"{'SNR':>6} {'t_astrocal':>11} {'t_photutils':>12} {'speed x':>8} "
            f"{'rms_astrocal':>13} {'rms_photutils':>14} {'CRB':>9} {'acc x':>6} "
            f"{'astrocal/CRB':>13}")
    print(head)
    print(f"{'':>6} {'[ms/frame]':>11} {'[ms/frame]':>12} {'':>8} {'[px]':>13} {'[px]':>14} "
          f"{'[px]':>9}")
    summary = []
    for snr in args.snr:
        flux = C.flux_for_snr(psf, snr, SKY, noise=noise, stamp_size=stamp)
        frames = make_frames(psf, flux, args.frames, args.spots, (args.size, args.size), rng)
        crb = np.sqrt(np.mean(np.concatenate([
            C.cramer_rao_bound(psf, f[1], f[2], flux, SKY, noise=noise, stamp_size=stamp)[:, :2, :2]
            .diagonal(axis1=1, axis2=2).ravel() for f in frames])))
        t_o, t_p, r_o, r_p, bad_o, bad_p = bench_centroids(psf, noise, frames, args.box,
                                                          args.repeat)
        summary.append((snr, t_p / t_o, r_p / r_o))
        print(f"{snr:6.0f} {1e3 * t_o:11.1f} {1e3 * t_p:12.1f} {t_p / t_o:8.1f} "
              f"{r_o:13.5f} {r_p:14.5f} {crb:9.5f} {r_p / r_o:6.2f} {r_o / crb:13.3f}"
              + (f"  (failed: astrocal {bad_o}, photutils {bad_p})" if bad_o or bad_p else ""))
    print()
    sp = [s[1] for s in summary]
    ac = [s[2] for s in summary]
    print(f"speed ratio photutils/astrocal: min {min(sp):.1f}x, max {max(sp):.1f}x "
          f"(target >= 20x); accuracy ratio rms_photutils/rms_astrocal: "
          f"min {min(ac):.2f}, max {max(ac):.2f} (target >= 1)")

    if args.epsf:
        print()
        print("ePSF built from the frames (true PSF unknown to the fit), SNR "
              f"{args.snr[-1]:.0f}:")
        flux = C.flux_for_snr(psf, args.snr[-1], SKY, noise=noise, stamp_size=stamp)
        frames = make_frames(psf, flux, min(args.frames, 3), args.spots,
                             (args.size, args.size), rng)
        out, size = bench_epsf(psf, noise, frames)
        crb = np.sqrt(np.mean(np.concatenate([
            C.cramer_rao_bound(psf, f[1], f[2], flux, SKY, noise=noise, stamp_size=size)[:, :2, :2]
            .diagonal(axis1=1, axis2=2).ravel() for f in frames])))
        for name, (t, r, bad, (mx, my), r0, nit) in out.items():
            print(f"  {name:>9}: build {t:6.2f} s ({nit} iterations), rms {r:.5f} px = "
                  f"{r / crb:.2f} x CRB; mean offset ({mx:+.5f}, {my:+.5f}) px, "
                  f"rms about the mean {r0 / crb:.2f} x CRB" + (f", {bad} failed" if bad else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
