"""The degree kept from the evidence table: posterior probabilities and their median."""
import json
import os
import sys

import numpy as np
import pytest

from astrocal.model.selection import choose_degree

sys.path.insert(0, os.path.dirname(__file__))
from test_linear import small_problem  # noqa: E402


def table(logz, first=3):
    return [{"degree": first + i, "log_evidence": z} for i, z in enumerate(logz)]


def test_probabilities_are_the_normalised_evidences():
    ev = table([-3.0, 0.0, -1.0, np.nan])
    choose_degree(ev)
    p = np.array([e["probability"] for e in ev])
    assert np.isnan(p[3])  # a degree that could not be fitted
    assert p[:3].sum() == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(np.exp(-3.0))
    assert p[2] / p[1] == pytest.approx(np.exp(-1.0))


def test_median_follows_the_mass_of_the_degrees_above():
    # the largest single evidence at degree 4, but degrees 5-8 together hold more: a field
    # whose small high-order terms the data only half support
    ev = table([-3.5, 0.0, -1.2, -1.2, -1.2, -1.2])
    assert choose_degree(ev, "best") == 4
    assert choose_degree(ev) == 5
    p = np.array([e["probability"] for e in ev])
    assert p[:2].sum() < 0.5 <= p[:3].sum()


def test_median_keeps_a_clear_winner():
    ev = table([0.0, -6.5, -6.5, -6.5, -6.5, -6.5])
    assert choose_degree(ev) == choose_degree(ev, "best") == 3
    ev = table([-700.0, -99.0, -0.5, 0.0, -0.3, -1.0])
    assert choose_degree(ev, "best") == 6
    assert choose_degree(ev) == 6  # cumulative 0.22 at 5, 0.59 at 6


def test_order_of_the_rows_does_not_matter():
    ev = table([-3.5, 0.0, -1.2, -1.2, -1.2, -1.2])
    assert choose_degree(ev[::-1]) == 5


def test_failed_degrees_are_skipped():
    ev = table([np.nan, -1.0, 0.0, np.nan])
    assert choose_degree(ev) == 5 and choose_degree(ev, "best") == 5
    ev = table([np.nan, 0.0, -0.5, -0.5])
    assert choose_degree(ev) == 5


def test_bad_rule_and_no_finite_evidence():
    with pytest.raises(ValueError, match="degree_choice"):
        choose_degree(table([0.0]), "mode")
    with pytest.raises(ValueError, match="no degree"):
        choose_degree(table([np.nan, np.nan]))


def test_resume_refuses_a_chain_of_other_hyperparameters(tmp_path):
    # the same number of dimensions is not enough: the names must match too (a chain of
    # an earlier width law at the same degree has as many hyperparameters)
    import h5py

    from astrocal.model.inference import FitSettings
    from astrocal.model.sampling import run_emcee
    from astrocal.model.joint import JointModel

    pts, field = small_problem(5, n_holes=12, n_exp=4, degree=3, noise_px=0.05)
    model = JointModel(pts, 3, jacobian_field=field)
    h5 = tmp_path / "posterior.h5"
    settings = FitSettings(walkers=12, steps=20, min_steps=20, check_every=10, progress=False,
                           backend_path=h5)
    phi0 = model.initial_guess()
    chain, _ = run_emcee(model, phi0, settings)
    with h5py.File(h5, "r") as f:
        assert json.loads(f["hyperparameters"].attrs["hyper_names"]) == model.hyper_names
    resume = FitSettings(**{**settings.__dict__, "resume": True, "steps": 30, "min_steps": 30})
    more, _ = run_emcee(model, phi0, resume)  # the same names: continues
    assert more.shape[0] > chain.shape[0]
    with h5py.File(h5, "a") as f:
        f["hyperparameters"].attrs["hyper_names"] = json.dumps(model.hyper_names[::-1])
    with pytest.raises(ValueError, match="posterior.h5: the chain to resume has the hyperparameters"):
        run_emcee(model, phi0, resume)
