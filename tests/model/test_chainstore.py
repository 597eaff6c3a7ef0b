"""The chain written in blocks (astrocal.model.chainstore): emcee's HDF5 layout, few file
opens, a resume bit-identical to an uninterrupted run, a failed write that keeps the last
complete block."""
import errno
import json
import os

import emcee
import h5py
import numpy as np
import pytest

from astrocal.model.chainstore import GROUP, BlockBackend, ChainWriteError, _reason, stored_iteration
from astrocal.model.inference import FitSettings
from astrocal.model.sampling import _run_blocks, default_moves
from astrocal.products.result_files import load_chain

NWALKERS, NDIM = 10, 3
ATTRS = {"hyper_names": json.dumps(["a", "b", "c"]), "chain_record": json.dumps({"seed": 4})}


def log_prob(x):
    """A correlated Gaussian, rows of ``x`` evaluated together."""
    return -0.5 * np.sum(x**2 * np.array([1.0, 4.0, 0.25]), axis=1) - 0.3 * x[:, 0] * x[:, 1]


def settings(steps):
    # min_steps = steps: the chain runs to the end (no convergence stop), in blocks of 100
    return FitSettings(steps=steps, min_steps=steps, check_every=100, seed=7, progress=False)


def start(path):
    backend = BlockBackend(path, attrs=ATTRS)
    backend.reset(NWALKERS, NDIM)
    backend.write()
    return backend


def sampler_for(backend):
    return emcee.EnsembleSampler(NWALKERS, NDIM, log_prob, vectorize=True, backend=backend,
                                 moves=default_moves())


P0 = np.random.default_rng(3).standard_normal((NWALKERS, NDIM))


def run(path, steps):
    backend = start(path)
    chain, sampler = _run_blocks(sampler_for(backend), backend, P0, settings(steps))
    return chain, sampler, backend


def test_emcee_reads_the_blocks(tmp_path):
    path = tmp_path / "posterior.h5"
    chain, sampler, backend = run(path, 250)
    reader = emcee.backends.HDFBackend(str(path), name=GROUP, read_only=True)
    assert reader.iteration == 250 == backend.written
    assert np.array_equal(reader.get_chain(), chain)
    assert np.array_equal(reader.get_log_prob(), sampler.get_log_prob())
    assert np.array_equal(reader.accepted, sampler.backend.accepted)
    assert np.array_equal(reader.get_last_sample().coords, chain[-1])
    rs = reader.random_state
    assert rs[0] == "MT19937" and np.array_equal(rs[1], sampler.random_state[1]) and rs[2] == sampler.random_state[2]
    assert np.array_equal(load_chain(tmp_path), chain)
    with h5py.File(path, "r") as f:
        g = f[GROUP]
        assert g.attrs["hyper_names"] == ATTRS["hyper_names"] and g.attrs["chain_record"] == ATTRS["chain_record"]
        assert g["chain"].shape == (250, NWALKERS, NDIM)


def test_the_empty_chain_is_written_at_the_start(tmp_path):
    path = tmp_path / "posterior.h5"
    start(path)
    assert stored_iteration(path) == 0
    with h5py.File(path, "r") as f:
        assert f[GROUP].attrs["hyper_names"] == ATTRS["hyper_names"]
        assert f[GROUP]["chain"].shape == (0, NWALKERS, NDIM)
    assert stored_iteration(tmp_path / "none.h5") == 0


def test_the_file_is_opened_once_a_block(tmp_path, monkeypatch):
    """HDF5 files (on disk or the in-memory image) opened while sampling, and file writes."""
    opened, written = [], []
    real_h5, real_open = h5py.File.__init__, open

    def counting_h5(self, name, *args, **kwargs):
        if not isinstance(name, h5py._objects.ObjectID):  # not File(id) of an open file
            opened.append(name)
        real_h5(self, name, *args, **kwargs)

    def counting_open(name, mode="r", *args, **kwargs):
        if "w" in mode:
            written.append(name)
        return real_open(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5py.File, "__init__", counting_h5)
    monkeypatch.setattr("builtins.open", counting_open)
    run(tmp_path / "posterior.h5", 500)
    # emcee's HDFBackend opened the file 4 times a step (2000 here); now the image in memory
    # is opened twice and the file written once for each of 6 writes (the empty chain, then
    # 5 blocks)
    assert len(opened) == 2 * 6 and len(written) == 6, (opened, written)
    assert all(".posterior.h5." in str(name) for name in written)


def test_resume_is_bit_identical(tmp_path):
    whole, sampler, _ = run(tmp_path / "a.h5", 300)
    run(tmp_path / "b.h5", 200)  # "killed" after two blocks
    backend = BlockBackend.load(tmp_path / "b.h5")
    assert backend.iteration == 200 and backend.attrs == ATTRS
    chain, resumed = _run_blocks(sampler_for(backend), backend, None, settings(300))
    assert np.array_equal(chain, whole)
    assert np.array_equal(resumed.get_log_prob(), sampler.get_log_prob())
    assert np.array_equal(resumed.backend.accepted, sampler.backend.accepted)
    assert np.array_equal(load_chain_file(tmp_path / "b.h5"), whole)


def load_chain_file(path):
    return emcee.backends.HDFBackend(str(path), name=GROUP, read_only=True).get_chain()


@pytest.mark.parametrize("where", ["h5py", "fsync"])
def test_a_failed_write_keeps_the_last_block(tmp_path, monkeypatch, where):
    """Disk full while the third block is written (the OSError raised by h5py, or reported
    late by fsync): the error names the file and the cause, the file keeps the second block
    (random state included, nothing left behind), and the chain continued from it is the
    uninterrupted one."""
    whole, _, _ = run(tmp_path / "whole.h5", 300)
    path = tmp_path / "posterior.h5"
    if where == "h5py":
        real = h5py.Dataset.__setitem__

        def full_disk(self, key, value):
            if self.name == f"/{GROUP}/chain" and len(self) > 200:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(self, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", full_disk)
    else:
        calls = []
        real = os.fsync

        def full_disk(fd):
            calls.append(fd)
            if len(calls) == 4:  # the empty chain, 100 and 200 steps were written
                raise OSError(errno.ENOSPC, "No space left on device")
            real(fd)

        monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ChainWriteError) as err:
        run(path, 300)
    message = str(err.value)
    assert str(path) in message and "disk full" in message and "200 steps" in message
    assert "--resume" in message
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posterior.h5", "whole.h5"]
    assert stored_iteration(path) == 200
    assert np.array_equal(load_chain_file(path), whole[:200])
    backend = BlockBackend.load(path)
    chain, _ = _run_blocks(sampler_for(backend), backend, None, settings(300))
    assert np.array_equal(chain, whole)


def test_other_groups_are_kept(tmp_path):
    path = tmp_path / "posterior.h5"
    run(path, 100)
    with h5py.File(path, "a") as f:
        f.create_group("linear").create_dataset("g", data=np.arange(5.0))
    backend = BlockBackend.load(path)
    _run_blocks(sampler_for(backend), backend, None, settings(200))
    with h5py.File(path, "r") as f:
        assert np.array_equal(f["linear/g"][...], np.arange(5.0))
        assert f[GROUP].attrs["iteration"] == 200


@pytest.mark.parametrize("exc, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
    (OSError("Can't write data (file write failed: time = x, filename = 'p', file descriptor = 5, "
             "errno = 28, error message = 'No space left on device', buf = 0x1, total write size = 8)"),
     "disk full"),
    (OSError(errno.EFBIG, "File too large"), "file too large for the file-size limit"),
    (OSError(errno.EACCES, "Permission denied"), "write failed"),
])
def test_reason(exc, reason):
    assert _reason(exc) == reason


def log_prob_blob(x):
    """One walker: its log density and a blob (its first coordinate squared)."""
    return log_prob(x[None])[0], x[0] ** 2


def test_blobs_are_kept(tmp_path):
    def sampler(backend):
        return emcee.EnsembleSampler(NWALKERS, NDIM, log_prob_blob, backend=backend, moves=default_moves())

    whole_backend = start(tmp_path / "a.h5")
    whole, _ = _run_blocks(sampler(whole_backend), whole_backend, P0, settings(200))
    part = start(tmp_path / "b.h5")
    _run_blocks(sampler(part), part, P0, settings(100))
    backend = BlockBackend.load(tmp_path / "b.h5")
    chain, _ = _run_blocks(sampler(backend), backend, None, settings(200))
    assert np.array_equal(chain, whole)
    reader = emcee.backends.HDFBackend(str(tmp_path / "b.h5"), name=GROUP, read_only=True)
    assert np.array_equal(reader.get_blobs(), whole_backend.get_blobs())
    assert np.array_equal(reader.get_blobs(), whole[:, :, 0] ** 2)
