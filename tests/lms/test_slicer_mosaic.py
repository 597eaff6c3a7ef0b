"""Slicer field orientation and the nominal mosaic."""
from __future__ import annotations

import numpy as np
import pytest

from astrocal.lms import FieldOrientation, SliceNumberError, field_to_slice, load_mosaic, slice_to_field
from astrocal.lms.slicer import slice_eta_range


def test_slice_edges_scopesim_rule():
    lo, hi = slice_eta_range(np.array([1, 28]))
    assert np.allclose(lo, [-0.2898, 0.2691]) and np.allclose(hi, [-0.2691, 0.2898])
    with pytest.raises(SliceNumberError):
        slice_eta_range(29)


@pytest.mark.parametrize("orient", [FieldOrientation(), FieldOrientation(90.0), FieldOrientation(12.0, True, (0.01, -0.003))])
def test_field_slice_roundtrip(orient):
    k = np.arange(1, 29)
    xi = np.linspace(-0.4, 0.4, 28)
    off = np.linspace(-0.009, 0.009, 28)
    a, b = slice_to_field(k, xi, off, orient)
    k2, xi2, off2 = field_to_slice(a, b, orient)
    assert np.array_equal(k2, k) and np.allclose(xi2, xi) and np.allclose(off2, off)


def test_default_orientation_fine_grid_holes_on_slice_centres():
    """Mask x = xi, mask y = eta: the fine grid's holes at y = -0.01035 + n 0.1656 sit on slice centres."""
    k, xi, off = field_to_slice([0.01035, 0.01035, 0.01035, 2.0], [-0.17595, -0.01035, 0.15525, 0.0])
    assert k.tolist() == [6, 14, 22, 0] and np.allclose(off[:3], 0.0)
    k90, xi90, _ = field_to_slice([0.01035], [-0.17595], FieldOrientation(90.0))
    assert k90[0] != 6 and np.isclose(xi90[0], 0.17595)


def test_mosaic_layout_and_locate():
    m = load_mosaic()
    assert m.det_ids.tolist() == [1, 2, 3, 4] and m.pixel_mm == 0.018 and m.centre_px == (1023.5, 1023.5)
    assert np.isclose(m.x_edge_mm, 37.979)
    det, col, row = m.locate([19.547, -19.547, 0.0, -5.0], [19.547, -19.547, 0.0, -30.0])
    assert det.tolist() == [1, 3, 0, 3] and np.allclose(col[:2], 1023.5) and np.isnan(col[2])
    x, y = m.chip_to_fp(det[:2], col[:2], row[:2])
    assert np.allclose(x, [19.547, -19.547]) and np.allclose(y, [19.547, -19.547])
    assert m.illuminated([1, 1, 2], [1983.0, 1984.0, 63.0], [500.0, 500.0, 500.0]).tolist() == [True, False, False]
