"""Benchmark: ``astrocal fit CAMPAIGN.toml`` as a process, with its defaults (issue #21).

The nominal simulated METIS IMG_LM lab campaign (``write_points_campaign``: 10 dithered
exposures of WCU FP mask #5, a degree-5 field, hole errors 0.5 um), fitted by ``astrocal
fit`` with the campaign's defaults (degree by evidence, 24 walkers, emcee until converged,
the chain in ``posterior.h5``). Each run is a fresh process on a fresh copy of the
campaign; printed: wall time, CPU time (user + system of the process), the number of
HDF5 files opened by h5py (those under the output directory, ``posterior.h5`` and its
temporaries, and in-memory ones: the chain's block images), the chain's steps, and whether
every run gave the same chain and draws (bit for bit).

``--baseline-src DIR`` also runs another astrocal source tree (e.g. the code before the
chain was written in blocks: ``git archive <commit> src | tar -x -C /tmp/base``, then
``--baseline-src /tmp/base/src``), alternating the two (``--repeat`` times each) so both
see the same load, and prints both figures and their ratio. The machine (2 cores) is
shared with other developers: the load average is printed next to every run, and the CPU
time is the steadier figure. Where ``PYTHONDONTWRITEBYTECODE`` is set (this machine),
every run compiles astrocal's sources (~0.2 s); ``--bytecode`` keeps every module's
bytecode between runs, as an installed astrocal has it.

Run:    python benchmarks/bench_fit_cli.py --baseline-src /tmp/base/src --repeat 2 \\
            --out benchmarks/results/fit_cli.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

#: run ``astrocal.cli.main(argv)`` counting h5py's file opens under the output directory;
#: the count goes to the file named by ASTROCAL_BENCH_OPENS
BOOT = """
import os, sys, atexit, h5py
out = os.path.realpath(sys.argv[1]); sys.argv[1:2] = []
opened = [0]
real = h5py.File.__init__
def counting(self, name, *args, **kwargs):
    if isinstance(name, (str, os.PathLike)):
        opened[0] += os.path.realpath(name).startswith(out)
    elif not isinstance(name, h5py._objects.ObjectID):  # an in-memory file, not File(id)
        opened[0] += 1
    real(self, name, *args, **kwargs)
h5py.File.__init__ = counting
def report():
    with open(os.environ["ASTROCAL_BENCH_OPENS"], "w") as f:
        f.write(str(opened[0]))
atexit.register(report)
from astrocal.cli import main
sys.exit(main(sys.argv[1:]))
"""


def dense_mask(n, path, half_arcsec=5.45):
    """Write an n x n grid mask spanning +/- ``half_arcsec`` (the 41 x 41 of issue 21 fills the
    METIS LM detector; ``bench_model_speed.grid_mask_table``) into ``path`` (ECSV)."""
    sys.path.insert(0, str(SRC))
    from bench_model_speed import grid_mask_table

    grid_mask_table(n, half_arcsec).write(path)
    return path


def make_campaign(root, seed, n_exposures, degree, dense=0):
    sys.path.insert(0, str(SRC))
    from astrocal.sim.points_campaign import write_points_campaign

    kw = {}
    if dense:
        root.mkdir(parents=True, exist_ok=True)
        kw["mask"] = str(dense_mask(dense, root.parent / f"grid{dense}.ecsv"))
    path, _, points = write_points_campaign(root, seed=seed, n_exposures=n_exposures, degree=degree, **kw)
    return path, points.n_points


def run_fit(src, template, work, extra=(), pycache=None):
    """One ``astrocal fit`` of a fresh copy of the campaign ``template`` with the code in
    ``src`` (and the options ``extra``, e.g. ``--quick``); returns its figures.
    ``pycache``: a directory for the bytecode of every module (``PYTHONPYCACHEPREFIX``,
    written even where ``PYTHONDONTWRITEBYTECODE`` is set), as an installed astrocal has
    it; None: the environment's setting."""
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work)
    opens = work / "opens.txt"
    env = dict(os.environ, PYTHONPATH=str(src), ASTROCAL_BENCH_OPENS=str(opens))
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    cmd = [sys.executable, "-c", BOOT, str(work / "out"), "-q", "fit", str(work / "campaign.toml"), *extra]
    load = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"astrocal fit failed ({src}):\n{proc.stderr}")
    import h5py

    post = next((work / "out").glob("**/posterior.h5"))
    with h5py.File(post, "r") as f:
        g = f["hyperparameters"]
        steps = int(g.attrs.get("iteration", 0))  # 0: a quick look, no chain
        walkers = int(g.attrs.get("nwalkers", 0))
        digest = hashlib.sha256(g["chain"][:steps].tobytes() + f["linear/g"][...].tobytes()).hexdigest()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "h5_opens": int(opens.read_text()), "steps": steps,
            "walkers": walkers, "sha256": digest, "load_before": load, "load_after": os.getloadavg()}


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n-exposures", type=int, default=10)
    ap.add_argument("--degree", type=int, default=5, help="the simulated field's degree")
    ap.add_argument("--baseline-src", type=Path, help="another astrocal source tree to compare with")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="time `astrocal fit --quick` instead")
    ap.add_argument("--dense", type=int, default=0, metavar="N",
                    help="an N x N grid mask filling the detector instead of WCU FP mask #5 (41: issue 21)")
    ap.add_argument("--bytecode", action="store_true",
                    help="keep every module's bytecode between runs (in a temporary PYTHONPYCACHEPREFIX, after "
                    "one untimed run per source tree), as an installed astrocal has it; by default the "
                    "environment decides (PYTHONDONTWRITEBYTECODE=1: astrocal's sources compiled at every run)")
    ap.add_argument("--out", type=Path, help="write the figures as JSON")
    args = ap.parse_args(argv)
    versions = {"this": SRC}
    if args.baseline_src:
        versions = {"baseline": args.baseline_src.resolve(), "this": SRC}
    with tempfile.TemporaryDirectory(prefix="bench_fit_cli_") as tmp:
        tmp = Path(tmp)
        _, n_points = make_campaign(tmp / "campaign", args.seed, args.n_exposures, args.degree, args.dense)
        print(f"campaign: seed {args.seed}, {args.n_exposures} exposures, field degree {args.degree}, "
              f"{n_points} points; `astrocal fit{' --quick' if args.quick else ''}` with its defaults",
              flush=True)
        runs = {name: [] for name in versions}
        extra = ["--quick"] if args.quick else []
        pycache = {name: tmp / f"pycache_{name}" for name in versions} if args.bytecode else {}
        if args.bytecode:  # one untimed run per source tree writes the bytecode
            for name, src in versions.items():
                run_fit(src, tmp / "campaign", tmp / f"run_{name}", extra, pycache[name])
        for k in range(args.repeat):
            for name, src in versions.items():
                r = run_fit(src, tmp / "campaign", tmp / f"run_{name}", extra, pycache.get(name))
                runs[name].append(r)
                print(f"{name:>8} run {k + 1}: wall {r['wall_s']:6.1f} s, cpu {r['cpu_s']:6.1f} s, "
                      f"{r['h5_opens']:6d} HDF5 opens, {r['steps']} steps x {r['walkers']} walkers "
                      f"(load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f})", flush=True)
    same = len({r["sha256"] for rs in runs.values() for r in rs}) == 1
    print(f"the same chain and linear draws in every run: {same}")
    summary = {name: {key: median([r[key] for r in rs]) for key in ("wall_s", "cpu_s", "h5_opens")}
               for name, rs in runs.items()}
    for name, s in summary.items():
        print(f"{name:>8} median: wall {s['wall_s']:.1f} s, cpu {s['cpu_s']:.1f} s, {s['h5_opens']:.0f} HDF5 opens")
    if "baseline" in summary:
        b, t = summary["baseline"], summary["this"]
        print(f"   ratio baseline/this: wall {b['wall_s'] / t['wall_s']:.2f}, cpu {b['cpu_s'] / t['cpu_s']:.2f}, "
              f"HDF5 opens {b['h5_opens'] / max(t['h5_opens'], 1):.0f}")
    print(f"load average now {os.getloadavg()} on {os.cpu_count()} cores (shared with other work)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"seed": args.seed, "n_exposures": args.n_exposures, "quick": args.quick, "dense": args.dense,
                                        "bytecode": args.bytecode,
                                        "degree": args.degree, "n_points": n_points, "runs": runs,
                                        "median": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
