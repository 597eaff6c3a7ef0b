"""Tests of astrocal.instruments (values compared with the IRDB sources they come from)."""
import dataclasses

import numpy as np
import pytest
import astropy.units as u

from astrocal.instruments import INSTRUMENTS, get_instrument, list_instruments


def test_registry_and_aliases():
    assert {"metis-lm", "metis-n", "metis-lms"} <= set(list_instruments())
    assert get_instrument("METIS IMG_LM") is get_instrument("metis-lm")
    assert get_instrument(" Metis-N ") is INSTRUMENTS["metis-n"]
    with pytest.raises(KeyError, match="metis-lm"):
        get_instrument("visir")


@pytest.mark.parametrize("key, pix_mas, plate, pixel_um", [
    ("metis-lm", 5.47, 0.30389, 18.0),         # METIS_IMG_LM.yaml, FPA_metis_img_lm_layout.dat
    ("metis-n", 6.79, 0.377222222222, 18.0),   # METIS_IMG_N.yaml, FPA_metis_img_n_geosnap_layout.dat
    ("metis-lms", 8.2, 0.455555555556, 18.0),  # METIS_LMS.yaml, FPA_metis_lms_layout.dat
])
def test_scales_and_detector(key, pix_mas, plate, pixel_um):
    inst = get_instrument(key)
    assert inst.detector.shape == (2048, 2048)
    assert inst.detector.pixel_size_um == pixel_um
    assert inst.pixel_scale == pix_mas * u.mas / u.pix
    assert inst.plate_scale.to_value(u.arcsec / u.mm) == pytest.approx(plate)
    # pixel scale = plate scale x pixel size (the IRDB values agree to 1e-4)
    derived = inst.plate_scale_arcsec_per_mm * inst.detector.pixel_size_um * 1e-3 * 1e3
    assert derived == pytest.approx(pix_mas, rel=2e-4)
    assert inst.mask_scale == 3.319 * u.mm / u.arcsec
    fov = inst.field_of_view.to_value(u.arcsec)
    np.testing.assert_allclose(fov, 2048 * pix_mas / 1e3)


def test_detector_modes_from_det_yamls():
    lm = get_instrument("metis-lm").detector
    assert lm.default_mode == "fast"
    fast, slow = lm.mode("fast"), lm.mode("slow")
    assert (fast.gain_e_per_adu, fast.read_noise_e, fast.full_well_e) == (4.0, 70.0, 1e5)
    assert (slow.gain_e_per_adu, slow.read_noise_e, slow.min_dit_s) == (2.5, 15.0, 1.3)
    assert lm.mode().dark_current_e_per_s == 0.05
    assert lm.border_px == (64, 64, 64, 64)
    n = get_instrument("metis-n").detector
    hc = n.mode()
    assert (hc.name, hc.full_well_e, hc.gain_e_per_adu, hc.read_noise_e) == ("high_capacity", 2.8e6, 201.0, 300.0)
    assert n.mode("low_capacity").full_well_e == 1.8e5
    with pytest.raises(KeyError, match="slow"):
        lm.mode("turbo")
    assert "assumed" in lm.notes
    assert get_instrument("metis-lm").with_mode("slow").detector.mode().name == "slow"
    assert lm.area_cm2 == pytest.approx((2048 * 18e-4) ** 2)


def test_filters():
    lm, n = get_instrument("metis-lm"), get_instrument("metis-n")
    assert lm.filter().name == "Lp"
    assert lm.filter("Lp").center.to_value(u.um) == pytest.approx(3.80, abs=0.01)
    assert lm.filter("Mp").center_um == pytest.approx(4.78, abs=0.01)
    assert n.filter().name == "N2"
    assert n.filter("N2").center_um == pytest.approx(11.27, abs=0.01)
    assert 8 < n.filter("N1").center_um < 9
    with pytest.raises(KeyError, match="Lp"):
        lm.filter("N2")


def test_fits_keyword_names():
    lm, n = get_instrument("metis-lm").keywords, get_instrument("metis-n").keywords
    assert lm.mask_wheel == "INS.OPTI20.POSNAME" == n.mask_wheel   # FITS_wcu_keywords.yaml
    assert lm.filter == "INS.OPTI10.POSNAME"                       # FITS_img_lm_keywords.yaml
    assert n.filter == "INS.OPTI13.NAME"                           # FITS_img_n_keywords.yaml
    assert (lm.dpr_tech, n.dpr_tech) == ("IMAGE,LM", "IMAGE,N")
    assert (lm.det_prefix, n.det_prefix) == ("DET1", "DET2")


def test_frozen():
    inst = get_instrument("metis-lm")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inst.pixel_scale_mas = 5.0
    with pytest.raises(TypeError):
        inst.filters["X"] = None
