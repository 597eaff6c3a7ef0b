"""The degree kept from the evidence table: posterior probabilities and their median."""
import numpy as np
import pytest

from astrocal.model.inference import choose_degree


def table(logz, first=3):
    return [{"degree": first + i, "log_evidence": z} for i, z in enumerate(logz)]


def test_probabilities_are_the_normalised_evidences():
    ev = table([-3.0, 0.0, -1.0, np.nan])
    choose_degree(ev)
    p = np.array([e["probability"] for e in ev])
    assert p.sum() == pytest.approx(1.0)
    assert p[3] == 0.0  # a degree that could not be fitted
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


def test_bad_rule_and_no_finite_evidence():
    with pytest.raises(ValueError, match="degree_choice"):
        choose_degree(table([0.0]), "mode")
    with pytest.raises(ValueError, match="no degree"):
        choose_degree(table([np.nan, np.nan]))
