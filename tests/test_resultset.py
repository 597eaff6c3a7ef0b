"""The result set's pieces (astrocal.resultset): manifest, completeness, lock, leftovers,
confinement. The command-line behaviour is in tests/test_faults.py."""
import json
import os
import subprocess
import sys

import pytest

from astrocal.resultset import (LOCK, MANIFEST, IncompleteResultError, OutsideOutputError, ResultLockedError,
                                confined, is_complete, mark_incomplete, remove_partial_files,
                                require_complete, require_complete_file, write_manifest, writer_lock)


def test_manifest_marks_the_set_complete_and_sees_changes(tmp_path):
    (tmp_path / "fit.json").write_text("{}")
    (tmp_path / "posterior.h5").write_bytes(b"x" * 100)
    assert not is_complete(tmp_path)
    with pytest.raises(IncompleteResultError, match="holds posterior.h5, fit.json but no manifest.json"):
        require_complete(tmp_path)
    manifest = write_manifest(tmp_path, ["posterior.h5", "fit.json"], {"seed": 3})
    assert manifest["seed"] == 3 and manifest["files"]["posterior.h5"]["bytes"] == 100
    assert json.loads((tmp_path / MANIFEST).read_text())["complete"] is True
    assert is_complete(tmp_path)
    require_complete(tmp_path, verify_hashes=True)
    (tmp_path / "fit.json").write_text("{ }")  # another size
    with pytest.raises(IncompleteResultError, match="fit.json: 3 bytes, the manifest records 2"):
        require_complete(tmp_path)
    (tmp_path / "fit.json").write_text("[]")  # same size, other content: the hash sees it
    require_complete(tmp_path)
    with pytest.raises(IncompleteResultError, match="SHA-256 differs"):
        require_complete(tmp_path, verify_hashes=True)
    (tmp_path / "fit.json").unlink()
    with pytest.raises(IncompleteResultError, match="listed in .* but missing"):
        require_complete(tmp_path)
    mark_incomplete(tmp_path)
    assert not (tmp_path / MANIFEST).exists()


def test_a_file_outside_any_result_passes_a_file_inside_an_incomplete_one_does_not(tmp_path):
    lone = tmp_path / "solution.fits"
    lone.write_bytes(b"")
    require_complete_file(lone)
    result = tmp_path / "Lp"
    result.mkdir()
    (result / "posterior.h5").write_bytes(b"")
    (result / "astromet_Lp.fits").write_bytes(b"")
    with pytest.raises(IncompleteResultError, match="not a complete fit result"):
        require_complete_file(result / "astromet_Lp.fits")


def test_leftover_part_files_are_removed(tmp_path):
    (tmp_path / ".fit.json.abc.part").write_text("half")
    (tmp_path / "fit.json").write_text("{}")
    assert remove_partial_files(tmp_path) == [".fit.json.abc.part"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.json"]


def test_the_lock_refuses_a_running_writer_and_takes_over_a_dead_ones(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / LOCK).write_text(f"{dead}\n")
    with writer_lock(tmp_path) as path:  # the dead process's lock is taken over
        assert path.read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK).exists()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK).write_text(f"{alive.pid}\n")
        with pytest.raises(ResultLockedError, match=f"pid {alive.pid}"):
            with writer_lock(tmp_path):
                pass
        assert (tmp_path / LOCK).read_text().strip() == str(alive.pid)  # not taken
    finally:
        alive.kill()
        alive.wait()


def test_paths_are_confined_to_their_directory(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert confined(out / "Lp" / "fit.json", out) == (out / "Lp" / "fit.json").resolve()
    with pytest.raises(OutsideOutputError, match="outside the output directory"):
        confined(out / ".." / "x" / "fit.json", out)
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutsideOutputError):
        confined(out / "link" / "table.ecsv", out)
