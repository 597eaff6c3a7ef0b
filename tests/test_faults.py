"""Fault injection through the command line (subprocesses): runs killed at several moments,
a second writer, a changed campaign on resume, incomplete result sets, writes outside the
output directory. What astrocal promises here is in docs/reliability.md.

A run is killed with SIGKILL either from outside (during emcee, once the chain has some
steps) or by itself right after a named file was written
(``ASTROCAL_FAULT_KILL_AFTER``, :func:`astrocal.atomic.fault_point`), so the moment is
exact.
"""
import json
import os
import resource
import shutil
import signal
import sys
import time

import emcee
import h5py
import numpy as np
import pytest
from astropy.io import fits

sys.path.insert(0, os.path.dirname(__file__))
from cli_helpers import astrocal, new_files_outside, snapshot  # noqa: E402

from astrocal.atomic import FAULT_KILL_AFTER
from astrocal.model.chainstore import GROUP, BlockBackend
from astrocal.products.result_files import load_chain, load_posterior
from astrocal.resultset import LOCK, MANIFEST, require_complete
from astrocal.sim.points_campaign import write_points_campaign

FIT_ARGS = ["--steps", "300", "--walkers", "12"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted fit of the small lab campaign (4 exposures, degree 3)."""
    root = tmp_path_factory.mktemp("reference")
    path, _, _ = write_points_campaign(root, seed=21, degree=3, fit_degree=3, n_exposures=4)
    run = astrocal("-q", "fit", path, *FIT_ARGS)
    assert run.returncode == 0, run.stderr
    return root / "out" / "Lp"


def fresh_campaign(tmp_path):
    path, _, _ = write_points_campaign(tmp_path, seed=21, degree=3, fit_degree=3, n_exposures=4)
    return path, tmp_path / "out" / "Lp"


def assert_same_result(a, b):
    """The posterior draws and every product's data of two result directories agree exactly."""
    pa, pb = load_posterior(a), load_posterior(b)
    assert np.array_equal(pa.phi, pb.phi) and np.array_equal(pa.g, pb.g)
    names_a = set(json.loads((a / MANIFEST).read_text())["files"])
    names_b = set(json.loads((b / MANIFEST).read_text())["files"])
    assert names_a == names_b
    for name in sorted(n for n in names_a if n.endswith(".fits")):
        with fits.open(a / name) as ha, fits.open(b / name) as hb:
            assert len(ha) == len(hb), name
            for x, y in zip(ha, hb):
                if x.data is None:
                    continue
                if isinstance(x, fits.BinTableHDU):
                    for col in x.columns.names:
                        assert np.array_equal(x.data[col], y.data[col]), (name, col)
                else:
                    assert np.array_equal(x.data, y.data), name


@pytest.mark.parametrize("kill_after", ["fit.json", "astromet_Lp.fits"])
def test_killed_while_writing_the_result_set_then_resumed(reference, tmp_path, kill_after):
    """Killed right after writing ``kill_after``: the directory is no result for report,
    convert or a plain fit (each says so and what to do); a resume with another seed is
    refused naming it; --resume finishes the set (taking over the dead run's lock,
    removing its leftovers) to the uninterrupted run's result; nothing is written outside
    the output directory."""
    path, out = fresh_campaign(tmp_path)
    before = snapshot(tmp_path)
    run = astrocal("-q", "fit", path, *FIT_ARGS, env={FAULT_KILL_AFTER: kill_after})
    assert run.returncode == -signal.SIGKILL
    assert (out / kill_after).exists() and not (out / MANIFEST).exists()
    assert (out / LOCK).exists()  # the dead run's lock stays behind
    (out / ".summary.ecsv.x1y2.part").write_text("half")  # as an interrupted atomic write leaves
    with pytest.raises(ValueError, match="not a complete fit result"):
        require_complete(out)
    rep = astrocal("report", out)
    assert rep.returncode == 1 and "not a complete fit result" in rep.stderr and str(out) in rep.stderr
    assert not (out / "report").exists()
    if (out / "astromet_Lp.fits").exists():
        conv = astrocal("convert", out / "astromet_Lp.fits", tmp_path / "x.hdr")
        assert conv.returncode == 1 and "not a complete fit result" in conv.stderr
        assert not (tmp_path / "x.hdr").exists()
    again = astrocal("fit", path, *FIT_ARGS)
    assert again.returncode == 1 and "--resume" in again.stderr and "interrupted" in again.stderr
    assert "taking over the lock" in again.stderr  # the dead run's
    other = astrocal("fit", path, *FIT_ARGS, "--resume", "--seed", "5")
    assert other.returncode == 1 and "not resumed (seed: " in other.stderr and "-> 5)" in other.stderr
    done = astrocal("fit", path, *FIT_ARGS, "--resume")
    assert done.returncode == 0, done.stderr
    require_complete(out, verify_hashes=True)
    assert not list(out.glob("*.part")) and not list(out.glob(".*.part")) and not (out / LOCK).exists()
    assert_same_result(reference, out)
    assert new_files_outside(tmp_path, before, out) == []
    # a complete result is not replaced without --overwrite, nor resumed
    for flags in ([], ["--resume"]):
        run = astrocal("fit", path, *FIT_ARGS, *flags)
        assert run.returncode == 1 and "a result exists" in run.stderr


def test_killed_during_emcee_resumes_to_the_same_result(reference, tmp_path):
    """SIGKILL from outside once the chain has 100 steps: --resume continues the chain to
    the uninterrupted run's result."""
    path, out = fresh_campaign(tmp_path)
    proc = astrocal("-q", "fit", path, *FIT_ARGS, wait=False)
    h5 = out / "posterior.h5"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        try:
            with h5py.File(h5, "r", locking=False) as f:
                if f["hyperparameters"].attrs["iteration"] >= 100:
                    break
        except Exception:
            continue
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the fit ended before it could be killed: {err}"
    assert not (out / MANIFEST).exists()
    done = astrocal("-q", "fit", path, *FIT_ARGS, "--resume")
    assert done.returncode == 0, done.stderr
    assert_same_result(reference, out)


def chain_file_size(path, steps, walkers, ndim):
    """Size of the chain's file after ``steps`` steps (the HDF5 file grows by chunks)."""
    backend = BlockBackend(path, attrs={"hyper_names": "x" * 200, "chain_record": "y" * 600})
    backend.reset(walkers, ndim)
    if steps:
        backend.grow(steps, None)
        backend.chain[:] = 1.0
        backend.log_prob[:] = 1.0
        backend.iteration = steps
        backend.random_state = np.random.RandomState(1).get_state()
    backend.write()
    return path.stat().st_size


def test_disk_full_during_emcee_keeps_the_last_block_and_resumes(reference, tmp_path):
    """The chain's file cannot grow past a limit (as on a full disk: a file-size limit,
    ``ulimit -f``, makes writes beyond it fail): the fit ends with an error naming
    posterior.h5 and the failed write; the file keeps the last complete block (emcee's
    HDFBackend reads it, nothing half-written is left); --resume continues from there to
    the uninterrupted run's result."""
    path, out = fresh_campaign(tmp_path)
    h5 = out / "posterior.h5"
    whole = load_chain(reference)
    _, walkers, ndim = whole.shape
    sizes = [chain_file_size(tmp_path / f"size{k}.h5", 100 * k, walkers, ndim) for k in range(4)]
    k = max(k for k in (1, 2, 3) if sizes[k] > sizes[k - 1])  # the last block that grows the file
    limit = (sizes[k - 1] + sizes[k]) // 2
    kept = 100 * (k - 1)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = astrocal("-q", "fit", path, *FIT_ARGS, env={"PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limited)
    assert run.returncode == 1, run.stderr
    assert f"astrocal: error: {h5}: the chain's block up to step {100 * k} could not be written" in run.stderr
    assert "file too large" in run.stderr.lower() and f"({kept} steps)" in run.stderr
    assert "--resume" in run.stderr
    assert not (out / MANIFEST).exists() and not list(out.glob(".*.part"))
    reader = emcee.backends.HDFBackend(str(h5), name=GROUP, read_only=True)
    assert reader.iteration == kept
    if kept:
        assert np.array_equal(reader.get_chain(), whole[:kept])
    done = astrocal("-q", "fit", path, *FIT_ARGS, "--resume")
    assert done.returncode == 0, done.stderr
    assert_same_result(reference, out)


def test_resume_after_the_campaign_changed_is_refused(tmp_path):
    """A chain started from one campaign is not continued for an edited one: the message
    names what changed."""
    path, out = fresh_campaign(tmp_path)
    run = astrocal("-q", "fit", path, *FIT_ARGS, env={FAULT_KILL_AFTER: "fit.json"})
    assert run.returncode == -signal.SIGKILL
    path.write_text(path.read_text() + "\n# an edit\n")
    run = astrocal("fit", path, *FIT_ARGS, "--resume")
    assert run.returncode == 1 and "campaign_sha256" in run.stderr and "not resumed" in run.stderr


def test_resume_after_the_mask_table_changed_is_refused(tmp_path):
    """The mask table is an input of the fit as much as the measured tables: a chain is not
    continued once its content changed (the campaign, which only names it, is the same)."""
    path, out = fresh_campaign(tmp_path)
    run = astrocal("-q", "fit", path, *FIT_ARGS, env={FAULT_KILL_AFTER: "fit.json"})
    assert run.returncode == -signal.SIGKILL
    mask = path.parent / "mask.ecsv"
    mask.write_text(mask.read_text() + "# an edit\n")
    run = astrocal("fit", path, *FIT_ARGS, "--resume")
    assert run.returncode == 1 and "inputs_sha256" in run.stderr and "not resumed" in run.stderr


def test_a_second_writer_is_refused(reference, tmp_path):
    """A result directory held by a running process (its pid in the lock) is not written by
    a second ``astrocal fit``, not even with --overwrite; the result stays as it was."""
    out = tmp_path / "out" / "Lp"
    shutil.copytree(reference.parent.parent, tmp_path, dirs_exist_ok=True)
    before = (out / "fit.json").read_bytes()
    (out / LOCK).write_text(f"{os.getpid()}\n")  # this test process: alive
    run = astrocal("fit", tmp_path / "campaign.toml", *FIT_ARGS, "--overwrite")
    assert run.returncode == 1 and f"pid {os.getpid()}" in run.stderr
    assert (out / "fit.json").read_bytes() == before and (out / MANIFEST).exists()


def test_an_edited_or_truncated_product_makes_the_set_incomplete(reference, tmp_path):
    """A file of a complete set truncated afterwards: report and correct's readers refuse
    the directory, naming the file."""
    out = tmp_path / "Lp"
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("report"))
    data = (out / "astromet_Lp.fits").read_bytes()
    (out / "astromet_Lp.fits").write_bytes(data[: len(data) // 2])
    rep = astrocal("report", out)
    assert rep.returncode == 1 and "astromet_Lp.fits" in rep.stderr and "truncated" in rep.stderr


def _bad_filter(c):
    text = (c / "campaign.toml").read_text().replace('filter = "Lp"', 'filter = "../../../../x"')
    (c / "campaign.toml").write_text(text)
    return "filter", "lab[0].filter"


def _bad_name(c):
    text = (c / "campaign.toml").read_text().replace('[[lab]]\n', '[[lab]]\nname = "../../../../x"\n')
    (c / "campaign.toml").write_text(text)
    return "name", "lab[0].name"


def _point_off_the_detector(c):
    from astropy.table import Table

    t = Table.read(c / "tables" / "grid_02.ecsv")
    t["x"][7], t["y"][7] = 5000.0, -300.0
    t.write(c / "tables" / "grid_02.ecsv", overwrite=True)
    return "grid_02", "row 7"


def _negative_sigma(c):
    from astropy.table import Table

    t = Table.read(c / "tables" / "grid_01.ecsv")
    t["sigma_x"][3] = -0.01
    t.write(c / "tables" / "grid_01.ecsv", overwrite=True)
    return "grid_01", "sigma_x"


@pytest.mark.parametrize("spoil", [_bad_filter, _bad_name, _point_off_the_detector, _negative_sigma],
                         ids=["filter ../", "dataset name ../", "point off the detector", "negative sigma"])
def test_bad_fit_inputs_are_refused_before_anything_is_written(tmp_path, spoil):
    """Inputs the fit must not use: refused with status 1 and a message naming the key or
    the table and row, before any file is written (in the output directory or outside)."""
    path, out = fresh_campaign(tmp_path / "c")
    first, second = spoil(tmp_path / "c")
    before = snapshot(tmp_path)
    run = astrocal("fit", path, *FIT_ARGS)
    assert run.returncode == 1, run.stderr
    assert first in run.stderr and second in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert snapshot(tmp_path) == before  # nothing written anywhere
    assert not out.exists()  # not even the result directory
