"""Helpers of the tests that run astrocal's command line as a subprocess and check what it
wrote where (tests/test_faults.py, tests/test_faults_inputs.py)."""
import os
import subprocess
import sys
from pathlib import Path


def astrocal(*args, env=None, cwd=None, wait=True, preexec_fn=None):
    """Run ``python -m astrocal.cli ARGS`` with this interpreter's path; returns the
    CompletedProcess, or the running Popen when ``wait`` is false; ``preexec_fn`` runs in
    the child before it starts (e.g. a file-size limit)."""
    full = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), **(env or {}))
    cmd = [sys.executable, "-m", "astrocal.cli", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, env=full, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=preexec_fn)
    return subprocess.run(cmd, env=full, cwd=cwd, capture_output=True, text=True, timeout=600,
                          preexec_fn=preexec_fn)


def snapshot(root):
    """Every file under ``root`` (relative paths)."""
    return {p.relative_to(root) for p in Path(root).rglob("*") if p.is_file()}


def new_files_outside(root, before, allowed):
    """Files written under ``root`` since ``before`` that do not lie under ``allowed``."""
    allowed = Path(allowed).resolve()
    return sorted(str(p) for p in snapshot(root) - before
                  if allowed not in (Path(root) / p).resolve().parents)
