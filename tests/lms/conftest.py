"""Fixtures of the LMS tests."""
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from astrocal.lab.mask import mask_path

SCALE = 3.319                                   # mm/arcsec


def _write_imager_result(out, ids, mean_um, sd_um=0.05, n_draws=400, mask_file=None, seed=0, scale=SCALE,
                         holes=True, campaign=True, record=True):
    """An ``astrocal fit`` output directory as the imager writes it, made by hand: ``posterior.h5``
    (group ``linear``: ``holes`` draws in arcsec, ``hole_ids``, ``phi`` with ``log_hole_sigma``) and
    ``fit.json`` naming its campaign first among its inputs (written when ``campaign``) and
    recording its mask (``record``: the table's path and SHA-256, the plate scale). Returns the
    directory and the draws [um]."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    draws_um = np.asarray(mean_um)[None] + rng.normal(0.0, sd_um, (n_draws, len(ids), 2))
    with h5py.File(out / "posterior.h5", "w") as f:
        lin = f.create_group("linear")
        lin.create_dataset("g", data=np.zeros((n_draws, 3)))
        lin.create_dataset("phi", data=np.tile([np.log(0.5 / (scale * 1e3)), 0.0], (n_draws, 1)))
        if holes:
            lin.create_dataset("holes", data=draws_um / (scale * 1e3))
        lin.attrs["hole_ids"] = json.dumps([int(h) for h in ids])
        lin.attrs["hyper_names"] = json.dumps(["log_hole_sigma", "log_kappa"])
        lin.attrs["campaign_sha256"] = "feed" * 16
        lin.attrs["astrocal_version"] = "hand"
    mask = Path(mask_file or mask_path("metis_wcu_fp_mask5"))
    camp = out / "imager_campaign.toml"
    if campaign:
        camp.write_text(f'[instrument]\nname = "METIS IMG_LM"\nmask_scale_mm_per_arcsec = {scale}\n\n'
                        f'[[lab]]\nname = "grid"\nfilter = "Lp"\nmask = "{mask}"\n')
    info = {"inputs": [str(camp)], "degree": 5}
    if record:
        info["mask"] = {"file": str(mask.resolve()), "sha256": hashlib.sha256(mask.read_bytes()).hexdigest(),
                        "name": mask.stem, "scale_mm_per_arcsec": scale}
    (out / "fit.json").write_text(json.dumps(info))
    return out, draws_um


@pytest.fixture
def write_imager_result():
    """:func:`_write_imager_result`: an imager fit's result with hole errors, written by hand (not
    by astrocal's simulators or fit)."""
    return _write_imager_result
