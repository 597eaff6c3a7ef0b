"""Benchmark: ``astrocal correct`` on very long star lists: time and peak memory (issue #19).

Star lists of ``--sizes`` rows (default 1e6 and 1e7; columns ``id, x, y, sigma_x, sigma_y,
cov_xy, flux``, random positions over a METIS IMG_LM-like 2048 x 2048 detector) are written
as ECSV and as a FITS table; each is corrected by ``astrocal correct`` in a child
process with an AstroMet solution (table-bicubic, with a 1-sigma map), to an output of the
same format. Printed per case: wall time, the child's peak resident memory (``wait4``'s
``ru_maxrss``; the input lists are written in a separate spawned process so that this one
stays small: a forked child's ``ru_maxrss`` includes the parent's memory it started with),
and the output's size. Target: peak memory bounded (<= 2 GB) whatever the
length, time linear in it.

Run:  OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_correct_large.py
      [--sizes 1000000 10000000] [--formats ecsv fits] [--workdir DIR] [--keep]
      [--chunk-rows N]   (passed to ``astrocal correct --chunk-rows``)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from astrocal.field.synthetic import smooth_field
from astrocal.formats.astromet import write_astromet
from astrocal.solution import Solution

BLOCK = 1_000_000


def sigma(x, y):
    r2 = ((np.asarray(x) - 1023.5) ** 2 + (np.asarray(y) - 1023.5) ** 2) / 1024.0 ** 2
    return 0.002 + 0.003 * r2, 0.0025 + 0.002 * r2


def _block(lo, hi):
    rng = np.random.default_rng(lo)
    n = hi - lo
    sx = rng.uniform(0.005, 0.03, n)
    sy = rng.uniform(0.005, 0.03, n)
    rho = rng.uniform(-0.5, 0.5, n)
    return {"id": np.arange(lo, hi, dtype=np.int64), "x": rng.uniform(0.0, 2047.0, n),
            "y": rng.uniform(0.0, 2047.0, n), "sigma_x": sx, "sigma_y": sy,
            "cov_xy": rho * sx * sy, "flux": rng.uniform(1e3, 1e5, n)}


def write_ecsv(path, n):
    """ECSV written block by block: astropy's header, then the rows as ECSV data lines."""
    head = Table({k: v[:0] for k, v in _block(0, 1).items()})
    head.write(path, format="ascii.ecsv")
    with open(path, "a") as fh:
        for lo in range(0, n, BLOCK):
            b = _block(lo, min(lo + BLOCK, n))
            cols = np.column_stack([b[k] for k in ("x", "y", "sigma_x", "sigma_y", "cov_xy", "flux")])
            fmt = "%d %.6f %.6f %.6g %.6g %.6g %.6g"
            np.savetxt(fh, np.column_stack([b["id"], cols]), fmt=fmt)
    return path


def write_fits(path, n):
    """FITS binary table of n rows (built in memory by this parent process, not the child)."""
    parts = [_block(lo, min(lo + BLOCK, n)) for lo in range(0, n, BLOCK)]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    Table(cols).write(path, format="fits")
    return path


def run(cmd):
    """Wall time (s), peak RSS (MB) of the child, return code, stderr tail."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024.0, proc.returncode, err[-400:]


def _write_in_child(writer, path, n):
    """Write an input list in a spawned process: this process stays small, so the children
    it forks for ``astrocal correct`` do not start with its memory (Linux counts a forked
    child's resident memory before ``exec`` in its ``ru_maxrss``)."""
    import multiprocessing as mp

    proc = mp.get_context("spawn").Process(target=writer, args=(path, n))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"writing {path} failed (exit {proc.exitcode})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--formats", nargs="+", default=["ecsv", "fits"], choices=["ecsv", "fits"])
    ap.add_argument("--workdir", help="where the lists are written (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    ap.add_argument("--chunk-rows", type=int, help="passed to astrocal correct --chunk-rows")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_correct_large_"))
    work.mkdir(parents=True, exist_ok=True)
    sol = Solution(smooth_field(degree=5, corner_px=3.0, rotation_deg=0.4, rng=11),
                   filter="L", sigma=sigma)
    am = work / "astromet.fits"
    if not am.exists():
        write_astromet(am, sol, instrument="METIS")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; work dir {work}")
    print(f"{'rows':>10} {'format':>6} {'time s':>8} {'peak RSS MB':>12} {'us/row':>7} "
          f"{'out MB':>8}  status")
    try:
        for n in args.sizes:
            for fmt in args.formats:
                src = work / f"stars_{n}.{fmt}"
                if not src.exists():
                    _write_in_child(write_ecsv if fmt == "ecsv" else write_fits, src, n)
                out = work / f"out_{n}.{fmt}"
                if out.exists():
                    out.unlink()
                cmd = [sys.executable, "-c", "import sys; from astrocal.cli import main; sys.exit(main())", "correct", str(src), "--solution",
                       str(am), "--out", str(out)]
                if args.chunk_rows:
                    cmd += ["--chunk-rows", str(args.chunk_rows)]
                wall, rss, rc, err = run(cmd)
                size = out.stat().st_size / 1e6 if out.exists() else float("nan")
                status = "ok" if rc == 0 else f"exit {rc}: {err.strip().splitlines()[-1:]}"
                print(f"{n:>10} {fmt:>6} {wall:>8.1f} {rss:>12.0f} {1e6 * wall / n:>7.2f} "
                      f"{size:>8.0f}  {status}", flush=True)
                if out.exists():
                    out.unlink()
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
