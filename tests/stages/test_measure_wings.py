"""The measure stage's ePSF pass: the wings subtracted before the ePSF is built."""
import numpy as np
import pytest


@pytest.mark.parametrize("x, y", [(4.71, 60.3), (60.2, 3.4), (127.6, 60.1), (2.2, 117.8), (64.3, 61.8)])
def test_wings_leave_a_spot_its_own_stamp_also_at_the_detector_edge(x, y):
    """``_wings`` (the light of every spot outside its own fitting stamp, subtracted
    before the ePSF is built and fitted) must not touch a spot's own stamp, also where the
    detector's edge cuts the stamp. It once took the cut stamp's first pixel as the stamp's
    origin: the spot's own light, shifted by the pixels cut off, was subtracted, and the
    ePSF fit slid by that many pixels towards the edge (0.98-1.98 px against a stated
    sigma of 0.006 px in foreign rendered campaigns, benchmarks/foreign_fields.py)."""
    from astropy.table import Table

    from astrocal.image.psf import diffraction_psf, render_spots
    from astrocal.stages.measure import _wings

    psf = diffraction_psf(3.8, 5.47)
    size, shape, flux = 15, (120, 130), 1e5
    wings = _wings(shape, Table({"x": [x], "y": [y], "flux": [flux]}), psf, size)
    full = np.zeros(shape)
    render_spots(shape, np.array([x]), np.array([y]), np.array([flux]), psf, image=full)
    h = size // 2
    cx, cy = int(np.rint(x)), int(np.rint(y))
    own = np.zeros(shape, bool)
    own[max(cy - h, 0):cy + h + 1, max(cx - h, 0):cx + h + 1] = True
    assert np.all(np.abs(wings[own]) < 1e-6 * flux)  # the stamp keeps all its own light
    assert np.allclose(wings[~own], full[~own], rtol=1e-5, atol=1e-6 * flux)  # the rest is removed
