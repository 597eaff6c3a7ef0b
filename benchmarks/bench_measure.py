#!/usr/bin/env python
"""Speed, memory and accuracy of the measure stage on a simulated lab campaign.

Simulates (once, cached in ``--dir``) a METIS IMG_LM campaign with ``astrocal simulate
lab`` (default: 10 frames of 2048 x 2048 px, every effect on), then runs the whole measure
stage from FITS to tables (``measure_campaign``: reduction, detection, PSF fits,
identification, products written) with ``--processes`` workers and prints

* wall time of the stage (in-process, without the interpreter start-up) and of the
  ``astrocal measure`` command (a fresh process: imports included);
* peak memory: the largest sum of the resident set sizes of the process and its workers
  (sampled every 20 ms from /proc) and, as an upper bound, the parent's peak plus
  ``processes`` times the largest worker peak (``getrusage``);
* accuracy against the truth (``truth/spots.ecsv``): identification (correct hole ids),
  rms of (measured - true) / reported sigma per axis (1 when the sigmas are honest),
  rms error against the Cramér-Rao bound of the background-subtracted frame.

Targets (issue 3): 10 frames 2048 x 2048 in <= 10 s and <= 2 GB on 2 cores.

Usage::

    python benchmarks/bench_measure.py [--dir /tmp/astrocal_bench_measure] [--frames 10]
                                       [--processes 2] [--psf model|epsf] [--seed 7]
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

try:
    import astrocal  # noqa: F401
except ImportError:  # run from a source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from astropy.table import Table  # noqa: E402

from astrocal.stages.measure import measure_campaign  # noqa: E402


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def _children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


class TreeMemory:
    """Sample the summed RSS of a process and all its descendants."""

    def __init__(self, pid, interval=0.02):
        self.pid, self.interval, self.peak_kb = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids, stack = [], [self.pid]
            while stack:
                p = stack.pop()
                pids.append(p)
                stack += _children(p)
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in pids))
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def accuracy(directory, output, reject=None):
    """Identification and centroid accuracy of the measured tables against the truth.

    A hole id is correct when that hole's true position (any rendered spot, also those in
    the reference-pixel border) is the one nearest to the measured position.  Errors are
    computed for the identified spots without a flag of ``reject`` (the tables'
    ``reject_flags``) that are on the light-sensitive area.
    """
    truth = Table.read(Path(directory) / "truth" / "spots.ecsv")
    summary = Table.read(Path(output) / "summary.ecsv")
    rows = []
    n_wrong = n_ident = n_truth = 0
    for r in summary:
        if r["status"] != "ok":
            continue
        t = Table.read(Path(output) / r["table"])
        rej = int(t.meta.get("reject_flags", 0)) if reject is None else reject
        rel = Path(r["file"]).resolve().relative_to(Path(directory).resolve()).as_posix()
        tt = truth[truth["file"] == rel]
        n_truth += int(np.count_nonzero(tt["on_detector"] & tt["sensitive"]))
        txy = np.column_stack([tt["x"], tt["y"]])
        for row in t:
            if row["hole_id"] < 0:
                continue
            n_ident += 1
            k = int(np.argmin(np.hypot(txy[:, 0] - row["x"], txy[:, 1] - row["y"])))
            if int(tt["hole_id"][k]) != int(row["hole_id"]):
                n_wrong += 1
                continue
            if (row["flags"] & rej) or not (tt["on_detector"][k] and tt["sensitive"][k]):
                continue
            rows.append((row["x"] - tt["x"][k], row["y"] - tt["y"][k], row["sigma_x"],
                         row["sigma_y"], tt["crb_sigma_bgsub"][k], row["snr"]))
    a = np.array(rows)
    return dict(n_truth=n_truth, n_identified=n_ident, n_wrong=n_wrong, n_used=len(a),
                chi_x=float(np.sqrt(np.mean((a[:, 0] / a[:, 2]) ** 2))),
                chi_y=float(np.sqrt(np.mean((a[:, 1] / a[:, 3]) ** 2))),
                rms_err_px=float(np.sqrt(np.mean(0.5 * (a[:, 0] ** 2 + a[:, 1] ** 2)))),
                rms_crb_px=float(np.sqrt(np.mean(a[:, 4] ** 2))),
                err_over_crb=float(np.sqrt(np.mean(0.5 * (a[:, 0] ** 2 + a[:, 1] ** 2) / a[:, 4] ** 2))),
                snr_range=(float(a[:, 5].min()), float(a[:, 5].max())))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/astrocal_bench_measure")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--psf", choices=("model", "epsf"), default="model")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-cli", action="store_true", help="skip the astrocal measure command run")
    args = ap.parse_args(argv)

    d = Path(args.dir)
    if not (d / "campaign.toml").exists():
        from astrocal.sim.lab import simulate_lab

        print(f"simulating {args.frames} frames into {d} ...", flush=True)
        t = time.perf_counter()
        simulate_lab(d, seed=args.seed, n_exposures=args.frames)
        print(f"  {time.perf_counter() - t:.1f} s")
    out = d / "measured"
    shutil.rmtree(out, ignore_errors=True)

    cpu0 = os.times()
    with TreeMemory(os.getpid()) as mem:
        t = time.perf_counter()
        report = measure_campaign(d / "campaign.toml", processes=args.processes, psf=args.psf)
        wall = time.perf_counter() - t
    cpu1 = os.times()
    cpu = sum(cpu1[:4]) - sum(cpu0[:4])
    ru_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ru_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    n = len(report.results)
    print(f"measure stage: {n} frames, {args.processes} process(es), psf={args.psf}: "
          f"{wall:.2f} s ({wall / max(n, 1):.2f} s/frame), {report.n_failed} failed; CPU time "
          f"{cpu:.1f} s (all processes; wall time on an idle machine >= CPU / cores, load "
          f"average now {os.getloadavg()[0]:.1f})")
    bound = ru_self + (args.processes * ru_child if args.processes > 1 else 0.0)
    print(f"peak memory: {mem.peak_kb / 1024:.0f} MB (sampled sum over the process tree); "
          f"upper bound {bound:.0f} MB (parent {ru_self:.0f} MB + {args.processes} x worker "
          f"{ru_child:.0f} MB)")
    print(f"targets: <= 10 s -> {'met' if wall <= 10 else 'MISSED'}; <= 2048 MB -> "
          f"{'met' if max(mem.peak_kb / 1024, 0) <= 2048 else 'MISSED'}")
    acc = accuracy(d, out)
    print(f"identification: {acc['n_identified']} identified of {acc['n_truth']} true spots, "
          f"{acc['n_wrong']} wrong")
    print(f"accuracy ({acc['n_used']} spots, SNR {acc['snr_range'][0]:.0f}-{acc['snr_range'][1]:.0f}): "
          f"rms error / reported sigma = {acc['chi_x']:.3f} (x), {acc['chi_y']:.3f} (y); rms error "
          f"{acc['rms_err_px']:.2e} px vs Cramer-Rao {acc['rms_crb_px']:.2e} px "
          f"(rms ratio {acc['err_over_crb']:.3f})")

    if not args.no_cli:
        shutil.rmtree(out, ignore_errors=True)
        cmd = ["astrocal", "-q", "measure", str(d / "campaign.toml"), "--processes", str(args.processes)]
        if shutil.which("astrocal") is None:
            cmd = [sys.executable, "-m", "astrocal.cli"] + cmd[1:]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        with TreeMemory(proc.pid) as mem2:
            rc = proc.wait()
        cli = time.perf_counter() - t
        print(f"`astrocal measure --processes {args.processes}` (fresh process, imports included): "
              f"{cli:.2f} s, peak {mem2.peak_kb / 1024:.0f} MB, exit status {rc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
