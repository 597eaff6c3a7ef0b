"""Which slices the laser spots reach (astrocal.lms.coverage): counted from tables the test
writes itself, then on the simulator's offset patterns."""
import numpy as np
from astropy.table import Table

from astrocal.lms.coverage import coverage_notes, laser_coverage


def _spots(rows):
    """A spots table from (slice, setting, exposure, flags, col) rows."""
    s, st, ex, fl, col = (np.array(v) for v in zip(*rows))
    return Table({"slice": s.astype(int), "setting": st.astype(int), "exposure": ex.astype(int),
                  "flags": fl.astype(int), "col": col.astype(float), "row": np.full(len(s), 100.0)})


def test_exposures_per_slice_counts_usable_spots_of_distinct_exposures():
    t = _spots([(3, 0, 0, 0, 10.0), (3, 0, 0, 0, 11.0),     # one exposure, two spots: 1
                (3, 0, 1, 0, 12.0),                         # a second exposure: 2
                (5, 0, 2, 0, 13.0),                         # one: single
                (7, 0, 3, 4, 14.0),                         # flagged: not counted
                (9, 0, 4, 0, np.nan),                       # no column: not counted
                (11, 1, 0, 0, 15.0)])                       # the other setting
    cov = laser_coverage(t, [3.4, 4.73])
    assert [c["lam_c_um"] for c in cov] == [3.4, 4.73]
    per = cov[0]["exposures_per_slice"]
    assert len(per) == 28 and per[2] == 2 and per[4] == 1 and per[6] == 0 and per[8] == 0
    assert cov[0]["single_exposure_slices"] == [5]
    assert 3 not in cov[0]["slices_without_spots"] and {7, 9, 1, 28} <= set(cov[0]["slices_without_spots"])
    assert len(cov[0]["slices_without_spots"]) == 26
    assert cov[1]["exposures_per_slice"][10] == 1 and len(cov[1]["slices_without_spots"]) == 27


def test_notes_name_the_slices_and_what_is_left_to_the_priors():
    t = _spots([(k, 0, e, 0, 1.0) for k in range(1, 29) for e in range(2) if k not in (4, 5, 6, 20)]
               + [(20, 0, 0, 0, 1.0)])
    cov = laser_coverage(t, [4.73])
    notes = coverage_notes(cov, across_px_per_mas=0.035, offset_sigma_mas=1.0)
    assert len(notes) == 2
    assert "3 of 28 slices have no laser spot (slices 4-6)" in notes[0] and "prior" in notes[0]
    assert "slices 20" in notes[1] and "0.035 px" in notes[1]
    full = _spots([(k, 0, e, 0, 1.0) for k in range(1, 29) for e in range(2)])
    assert coverage_notes(laser_coverage(full, [4.73])) == []
    assert laser_coverage(None, [4.73])[0]["slices_without_spots"] == list(range(1, 29))


def test_the_offset_cycle_to_eight_reaches_every_slice_class_alike():
    from astrocal.sim.lms_points import simulate_lms_points

    few = laser_coverage(simulate_lms_points(seed=1, n_offsets=3, max_across_slices=3).data["spots"], [4.73])[0]
    assert len(few["slices_without_spots"]) == 19 and set(few["exposures_per_slice"]) == {0, 1}
    cycle = laser_coverage(simulate_lms_points(seed=1, n_offsets=32, max_across_slices=8).data["spots"], [4.73])[0]
    assert cycle["exposures_per_slice"] == [4] * 28 and not coverage_notes([cycle])
