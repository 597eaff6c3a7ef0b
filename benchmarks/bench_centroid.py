#!/usr/bin/env python
"""Speed and accuracy of astrocal's centroiding next to photutils' PSF photometry.

Simulates METIS IMG_LM pinhole frames (2048 x 2048, L band, ELT pupil with spiders,
25 um pinhole, Poisson + 10 e- read noise on 200 e-/px of background) with N isolated
spots at random sub-pixel positions, and gives both methods the same frames, the same
PSF and the same first guesses (truth + 0.3 px rms, as from one detection step).

The peer (issue 21): photutils ``PSFPhotometry`` with an ``ImagePSF`` of the SAME
pixel-integrated PSF table astrocal fits (``PixelPSF.table``, its oversampling; the same
convention: value at offset d = table[centre + oversampling d], sum = oversampling^2),
configured as a competent team would:

* the same model as astrocal: ``ImagePSF + Const2D``, flux, position and a constant local
  background fitted jointly per spot (``x_name``/``y_name``/``flux_name`` set on the
  compound model); the background starts at the frame's median, the flux at the
  aperture sum within one FWHM (``aperture_radius``);
* ``fit_shape``: by default astrocal's stamp (the same pixels), and 11 px (the core and
  first rings: faster, slightly less precise at high SNR); ``--fit-shape``;
* weights from ``error = sqrt(max(data, 0) / gain + read_noise^2)`` (the usual
  ``calc_total_error`` form: data-based Poisson + read noise);
* the default fitter (``TRFLSQFitter``; ``LevMarLSQFitter`` measured no faster), no
  grouper (the spots are isolated);
* the ``ImagePSF`` spline interpolator built once before the timed runs and shared by
  the per-source model copies (left lazy, photutils rebuilds it for every source: about
  23 ms each on this 593 x 593 table, twice photutils' total time; ``--untuned-peer`` also
  times that).

astrocal: ``fit_centroids(image, x, y, psf, noise)`` with its defaults (model-weighted
PSF fit of flux, position and local background; covariances, flags, chi2, neighbour
deblending included).

Timing, the same for both, in one process: per frame, best of ``--repeat`` runs of each
(warm-up calls first); reported as the mean over frames of the best per-frame times.
photutils' timed call includes its error map and the frame median.  Accuracy: rms of the
position errors against the truth (per axis), the Cramer-Rao bound, and the accuracy
ratio rms_photutils / rms_astrocal (> 1: astrocal more accurate) with its 68 % interval
from a paired bootstrap over spots (the two fits see the same noise, so their errors
are strongly correlated and the ratio is much better determined than either rms).

With ``--epsf`` the ePSF route (the PSF unknown, built from the frames themselves), at
each of ``--epsf-snr``: astrocal ``build_epsf`` (least-squares ePSF, spots fitted with it)
against photutils ``EPSFBuilder`` (``astrocal.image.epsf.build_epsf_photutils``:
``extract_stars`` on the median-subtracted frames, cut-outs of 5 FWHM, 10 iterations) with
``oversampling=3, smoothing_kernel="quadratic"`` (``--epsf-oversampling``,
``--epsf-kernel``): the best of a scan of its settings on these frames (photutils'
defaults, oversampling 4 with the quartic kernel, scatter ~100 x the Cramer-Rao bound
here; see docs/measurement.md), followed by ``PSFPhotometry`` with its ePSF as above
(fit_shape = astrocal's ePSF stamp); time = build + fit for both (best of
``--epsf-repeat``), rms against the truth, mean offset (the ePSF's centre is a
convention) and rms about it, against the Cramer-Rao bound.  Also printed: photutils'
ePSF fitted by astrocal's fitter (the builder's share of the error).

Usage::

    python benchmarks/bench_centroid.py [--frames 5] [--spots 100] [--snr 30 300 3000]
        [--repeat 3] [--fit-shape 0 11] [--epsf] [--out benchmarks/results/centroid.json]
"""
import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

try:
    import astrocal  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import photutils  # noqa: E402
from astropy.modeling.models import Const2D  # noqa: E402
from astropy.table import Table  # noqa: E402
from photutils.psf import ImagePSF, PSFPhotometry  # noqa: E402

from astrocal.image import centroid as C  # noqa: E402
from astrocal.image import epsf as E  # noqa: E402
from astrocal.image import psf as P  # noqa: E402

SKY = 200.0  # e-/px
READ_NOISE = 10.0  # e-
GAIN = 1.0  # e-/ADU (frames in electrons)


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


# ------------------------------------------------------------------------------ the peer
def image_psf(table, oversampling, prebuild=True):
    """photutils ``ImagePSF`` of a PixelPSF-convention table; its spline built now if
    ``prebuild`` (then shared by the model copies PSFPhotometry makes per source)."""
    model = ImagePSF(np.asarray(table, float), oversampling=int(oversampling))
    if prebuild:
        _ = model.interpolator
    return model


class PhotutilsPeer:
    """``PSFPhotometry`` of ``ImagePSF + Const2D`` (flux, position, background per spot)."""

    def __init__(self, psf_model, fit_shape, aperture_radius):
        model = psf_model + Const2D(0.0)
        model.x_name, model.y_name, model.flux_name = "x_0_0", "y_0_0", "flux_0"
        self.phot = PSFPhotometry(model, int(fit_shape), aperture_radius=float(aperture_radius))
        self.fit_shape = int(fit_shape)

    def __call__(self, img, xg, yg):
        err = np.sqrt(np.maximum(img, 0.0) / GAIN + (READ_NOISE / GAIN) ** 2)
        init = Table({"x": xg, "y": yg, "amplitude_1": np.full(len(xg), float(np.median(img)))})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = self.phot(img, error=err, init_params=init)
        return (np.asarray(t["x_fit"], float), np.asarray(t["y_fit"], float),
                np.asarray(t["flags"], int))


def run_astrocal(psf, noise, stamp_size=None):
    def run(img, xg, yg):
        r = C.fit_centroids(img, xg, yg, psf, noise=noise, stamp_size=stamp_size)
        return r.x, r.y, r.flags
    return run


# ------------------------------------------------------------------------------ measures
def best_of(func, repeat):
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = np.inf, None
    for _ in range(max(1, int(repeat))):
        out = None
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    return best, out


def rms(ex, ey):
    """rms per axis of position errors (NaN = failed fits, counted apart)."""
    ok = np.isfinite(ex) & np.isfinite(ey)
    return float(np.sqrt(np.mean(ex[ok] ** 2 + ey[ok] ** 2) / 2)), int((~ok).sum())


def ratio_interval(e_peer, e_ours, n_boot=2000, seed=0):
    """68 % interval of rms(peer) / rms(ours) by a paired bootstrap over spots.

    ``e_*`` are (N, 2) position errors of the same spots; spots failed by either are left
    out."""
    ok = np.all(np.isfinite(e_peer), axis=1) & np.all(np.isfinite(e_ours), axis=1)
    a, b = np.sum(e_peer[ok] ** 2, axis=1), np.sum(e_ours[ok] ** 2, axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, (n_boot, a.size))
    r = np.sqrt(a[idx].mean(1) / b[idx].mean(1))
    return [float(q) for q in np.quantile(r, [0.16, 0.84])]


def crb_rms(psf, frames, flux, noise, size):
    return float(np.sqrt(np.mean(np.concatenate([
        C.cramer_rao_bound(psf, f[1], f[2], flux, SKY, noise=noise, stamp_size=size)[:, :2, :2]
        .diagonal(axis1=1, axis2=2).ravel() for f in frames]))))


def compare(methods, frames, repeat):
    """Per frame, best-of-``repeat`` time of every method (interleaved frame by frame) and
    the position errors; returns ``{name: dict(t=mean best s/frame, err=(N, 2), flagged)}``."""
    out = {name: {"t": [], "err": [], "flagged": 0} for name in methods}
    for img, xt, yt, xg, yg in frames:
        for name, func in methods.items():
            t, (x, y, flags) = best_of(lambda: func(img, xg, yg), repeat)
            out[name]["t"].append(t)
            out[name]["err"].append(np.column_stack([x - xt, y - yt]))
            out[name]["flagged"] += int(np.count_nonzero(flags))
    for rec in out.values():
        rec["t"] = float(np.mean(rec["t"]))
        rec["err"] = np.concatenate(rec["err"])
    return out


def load():
    return [round(v, 2) for v in os.getloadavg()]


# ------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--spots", type=int, default=100)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--snr", type=float, nargs="+", default=[30.0, 300.0, 3000.0])
    ap.add_argument("--fit-shape", type=int, nargs="+", default=[0, 11],
                    help="photutils fit_shape(s), odd px; 0 = astrocal's stamp size")
    ap.add_argument("--repeat", type=int, default=3, help="timing: best of N, both methods")
    ap.add_argument("--untuned-peer", action="store_true",
                    help="also time photutils with its ImagePSF spline left lazy (one SNR)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--epsf", action="store_true", help="also compare the ePSF routes")
    ap.add_argument("--epsf-frames", type=int, default=3)
    ap.add_argument("--epsf-snr", type=float, nargs="+", default=[300.0, 3000.0])
    ap.add_argument("--epsf-oversampling", type=int, default=3, help="photutils EPSFBuilder")
    ap.add_argument("--epsf-kernel", default="quadratic",
                    help="photutils EPSFBuilder smoothing_kernel ('quartic' is its default; "
                         "'none' for no smoothing)")
    ap.add_argument("--epsf-repeat", type=int, default=1, help="ePSF timing: best of N, both")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    psf = P.diffraction_psf(P.FILTER_WAVELENGTH_UM["L"], P.PIXEL_SCALE_MAS["IMG_LM"],
                            pinhole_mas=P.pinhole_diameter_mas(25.0, 3.319))
    t_psf = time.perf_counter() - t0
    noise = C.NoiseModel(read_noise=READ_NOISE, gain=GAIN)
    stamp = psf.default_stamp_size()
    fwhm = psf.fwhm()
    shapes = [stamp if s == 0 else s for s in args.fit_shape]
    if any(s < 3 or s % 2 == 0 for s in shapes):
        ap.error("--fit-shape must be odd and >= 3 (or 0)")
    record = {"photutils": photutils.__version__, "load_start": load(), "args": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    print(f"PSF: ELT pupil (D={P.ELT_OUTER_DIAMETER_M} m, obscuration "
          f"{P.ELT_CENTRAL_OBSCURATION_M} m, spiders), L {psf.meta['wavelength_um']} um, "
          f"{psf.meta['pixel_scale_mas']} mas/px, pinhole {psf.meta['pinhole_mas']:.2f} mas; "
          f"FWHM {fwhm:.2f} px; table {psf.table.shape[0]}^2 at oversampling "
          f"{psf.oversampling}, built in {t_psf:.2f} s (once, cached)")
    print(f"{args.frames} frames of {args.size}x{args.size} px, {args.spots} spots each; "
          f"background {SKY:.0f} e-/px, read noise {READ_NOISE:.0f} e-; astrocal stamp {stamp} px; "
          f"photutils {photutils.__version__} PSFPhotometry(ImagePSF + Const2D), fit_shape "
          f"{', '.join(map(str, shapes))} px; timing best of {args.repeat} per frame for both; "
          f"load average {' '.join(map(str, record['load_start']))}")

    ipsf = image_psf(psf.table, psf.oversampling)
    ours = run_astrocal(psf, noise)
    peers = {f"photutils fit_shape {s}": PhotutilsPeer(ipsf, s, fwhm) for s in shapes}
    # warm-up (first-call overheads of both libraries)
    warm = make_frames(psf, 1e5, 1, 5, (256, 256), np.random.default_rng(1))[0]
    for f in [ours, *peers.values()]:
        f(warm[0], warm[3], warm[4])

    print()
    print(f"{'SNR':>6} {'method':>24} {'ms/frame':>9} {'speed x':>8} {'rms [px]':>10} "
          f"{'CRB [px]':>9} {'rms/CRB':>8} {'acc x (68 %)':>19} {'failed':>6} {'flagged':>7}")
    record["snr"] = []
    for snr in args.snr:
        flux = C.flux_for_snr(psf, snr, SKY, noise=noise, stamp_size=stamp)
        frames = make_frames(psf, flux, args.frames, args.spots, (args.size, args.size), rng)
        crb = crb_rms(psf, frames, flux, noise, stamp)
        res = compare({"astrocal": ours, **peers}, frames, args.repeat)
        a = res["astrocal"]
        r_a, bad_a = rms(*a["err"].T)
        rec = {"snr": snr, "flux": flux, "crb_px": crb, "load": load(), "methods": {}}
        for name, m in res.items():
            r, bad = rms(*m["err"].T)
            row = {"ms_per_frame": 1e3 * m["t"], "rms_px": r, "failed": bad,
                   "flagged": m["flagged"], "rms_over_crb": r / crb}
            if name != "astrocal":
                lo, hi = ratio_interval(m["err"], a["err"])
                row.update(speed_ratio=m["t"] / a["t"], accuracy_ratio=r / r_a,
                           accuracy_ratio_68=[lo, hi])
                acc = f"{r / r_a:5.3f} ({lo:.3f}-{hi:.3f})"
                speed = f"{m['t'] / a['t']:7.1f}x"
            else:
                acc, speed = "", ""
            rec["methods"][name] = row
            print(f"{snr:6.0f} {name:>24} {1e3 * m['t']:9.1f} {speed:>8} {r:10.5f} {crb:9.5f} "
                  f"{r / crb:8.3f} {acc:>19} {bad:6d} {m['flagged']:7d}")
        record["snr"].append(rec)
    print()
    for name in peers:
        sp = [r["methods"][name]["speed_ratio"] for r in record["snr"]]
        ac = [r["methods"][name]["accuracy_ratio"] for r in record["snr"]]
        lo = [r["methods"][name]["accuracy_ratio_68"][0] for r in record["snr"]]
        print(f"astrocal vs {name}: speed ratio {min(sp):.1f}-{max(sp):.1f}x (target >= 20x); "
              f"accuracy ratio rms_photutils/rms_astrocal {min(ac):.3f}-{max(ac):.3f} "
              f"(lowest 68 % bound {min(lo):.3f}; target >= 1, equal within the interval)")

    if args.untuned_peer:
        snr = args.snr[len(args.snr) // 2]
        flux = C.flux_for_snr(psf, snr, SKY, noise=noise, stamp_size=stamp)
        frames = make_frames(psf, flux, args.frames, args.spots, (args.size, args.size), rng)
        # built once, as a user would; its own spline is never built, so every per-source
        # copy builds one
        lazy = PhotutilsPeer(image_psf(psf.table, psf.oversampling, prebuild=False), shapes[0], fwhm)
        res = compare({"astrocal": ours, "untuned": lazy}, frames, args.repeat)
        ratio = res["untuned"]["t"] / res["astrocal"]["t"]
        record["untuned_peer"] = {"snr": snr, "fit_shape": shapes[0],
                                  "ms_per_frame": 1e3 * res["untuned"]["t"],
                                  "astrocal_ms_per_frame": 1e3 * res["astrocal"]["t"],
                                  "speed_ratio": ratio}
        print(f"photutils with the ImagePSF spline left lazy (rebuilt per source), SNR {snr:.0f}, "
              f"fit_shape {shapes[0]}: {1e3 * res['untuned']['t']:.0f} ms/frame, {ratio:.0f}x astrocal "
              f"({1e3 * res['astrocal']['t']:.1f} ms/frame)")

    if args.epsf:
        record["epsf"] = [bench_epsf(psf, noise, args, rng, snr) for snr in args.epsf_snr]
    record["load_end"] = load()
    print(f"\nload average at the end {' '.join(map(str, record['load_end']))} (2 shared cores)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1))
    return 0


def bench_epsf(psf, noise, args, rng, snr):
    stamp = psf.default_stamp_size()
    flux = C.flux_for_snr(psf, snr, SKY, noise=noise, stamp_size=stamp)
    frames = make_frames(psf, flux, args.epsf_frames, args.spots, (args.size, args.size), rng)
    images = [f[0] for f in frames]
    guesses = [(f[3], f[4]) for f in frames]
    kernel = None if args.epsf_kernel.lower() == "none" else args.epsf_kernel
    print(f"\nePSF route (the PSF unknown, built from {len(frames)} frames x {args.spots} spots), "
          f"SNR {snr:.0f}; time = build + fit of every spot, best of {args.epsf_repeat} for both; "
          f"photutils EPSFBuilder(oversampling={args.epsf_oversampling}, smoothing_kernel="
          f"{kernel!r}); load average {' '.join(map(str, load()))}")

    def ours():
        fit = E.build_epsf(images, guesses, noise=noise)
        return fit, [(r.x, r.y) for r in fit.results]

    def theirs(size):
        pu = E.build_epsf_photutils(images, guesses, oversampling=args.epsf_oversampling,
                                    smoothing_kernel=kernel)  # frame medians subtracted
        peer = PhotutilsPeer(image_psf(pu.table, pu.oversampling), size, psf.fwhm())
        return pu, [peer(im, gx, gy)[:2] for im, (gx, gy) in zip(images, guesses)]

    t_o, (fit, pos_o) = best_of(ours, args.epsf_repeat)
    size = fit.psf.meta["stamp_size"]  # photutils fits the same stamp
    t_p, (pu, pos_p) = best_of(lambda: theirs(size), args.epsf_repeat)
    # the builder's share: photutils' ePSF fitted by astrocal's fitter
    pos_x = [(r.x, r.y) for r in (C.fit_centroids(im, gx, gy, pu, noise=noise, stamp_size=size)
                                  for im, (gx, gy) in zip(images, guesses))]
    crb = crb_rms(psf, frames, flux, noise, size)
    out = {"snr": snr, "crb_px": crb, "stamp_size": size, "methods": {},
           "photutils_builder": {"oversampling": args.epsf_oversampling, "smoothing_kernel": kernel}}
    errs = {}
    for name, t, pos in (("astrocal build_epsf + fit", t_o, pos_o),
                         ("photutils EPSFBuilder + PSFPhotometry", t_p, pos_p),
                         ("photutils ePSF, astrocal fit", None, pos_x)):
        e = np.concatenate([np.column_stack([x - f[1], y - f[2]]) for (x, y), f in zip(pos, frames)])
        errs[name] = e
        r, bad = rms(*e.T)
        ok = np.all(np.isfinite(e), axis=1)
        mean = e[ok].mean(0)
        r0, _ = rms(*(e - mean).T)
        out["methods"][name] = {"seconds": t, "rms_px": r, "rms_over_crb": r / crb,
                                "mean_offset_px": mean.tolist(), "rms_about_mean_over_crb": r0 / crb,
                                "failed": bad}
        ts = f"{t:6.2f} s" if t is not None else "   (n/a)"
        print(f"  {name:>38}: {ts}, rms {r:.5f} px = {r / crb:.2f} x CRB; mean offset "
              f"({mean[0]:+.5f}, {mean[1]:+.5f}) px, rms about it {r0 / crb:.2f} x CRB"
              + (f", {bad} failed" if bad else ""))
    o = errs["astrocal build_epsf + fit"]
    p = errs["photutils EPSFBuilder + PSFPhotometry"]
    acc = rms(*p.T)[0] / rms(*o.T)[0]
    lo, hi = ratio_interval(p, o)
    out.update(speed_ratio=t_p / t_o, accuracy_ratio=acc, accuracy_ratio_68=[lo, hi],
               iterations={"astrocal": int(fit.n_iter), "photutils": int(pu.meta["iterations"])})
    print(f"  ePSF route: photutils / astrocal time {t_p / t_o:.1f}x, rms ratio {acc:.2f} "
          f"(68 % {lo:.2f}-{hi:.2f}); iterations astrocal {fit.n_iter}, photutils "
          f"{pu.meta['iterations']}")
    return out


if __name__ == "__main__":
    sys.exit(main())
