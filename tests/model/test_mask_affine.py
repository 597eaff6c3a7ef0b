"""The mask's net scale and shear (Priors.mask_affine_sigma_ppm): against an independent
parametrisation of the hole errors, and their effect on the pixel scale's uncertainty."""
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from astrocal.model.joint import JointModel
from astrocal.model.priors import MASK_AFFINE_NAMES, Priors

sys.path.insert(0, os.path.dirname(__file__))
from test_linear import brute_force, small_problem  # noqa: E402

PRIORS = Priors(linear_sigma=2.0, distortion_px=5.0)


def symmetric_problem(seed=0, n_exp=3, noise_px=0.5):
    """Holes on a centred 4 x 4 square grid (symmetric under x -> -x, y -> -y and x <-> y:
    the translation, rotation, scale and shear patterns are then exactly orthogonal and of
    equal norm), a few dithered exposures, degree-2 field."""
    g = (np.arange(4) - 1.5) * 0.25
    hx, hy = np.meshgrid(g, g)
    return small_problem(seed, n_exp=n_exp, degree=2, noise_px=noise_px,
                         hole_xy=np.column_stack([hx.ravel(), hy.ravel()]))


def mask_gauges(hole_xy):
    """The true gauges of the mask alone: its translation (x, y) and its rotation about the
    holes' centroid, as hole-error patterns (2H, 3)."""
    m = hole_xy - hole_xy.mean(axis=0)
    gauges = np.zeros((len(m), 2, 3))
    gauges[:, 0, 0] = 1.0
    gauges[:, 1, 1] = 1.0
    gauges[:, 0, 2], gauges[:, 1, 2] = -m[:, 1], m[:, 0]
    return gauges.reshape(2 * len(m), 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_default_is_independent_hole_errors_with_only_the_true_gauges(seed):
    """Scale and shears derived from the hole errors' own scale = the hole errors left free
    in every pattern but the mask's translation and rotation: the same likelihood and the
    same posterior of the field (independent parametrisation, dense algebra)."""
    pts, field = symmetric_problem(seed)
    model = JointModel(pts, 2, jacobian_field=field, priors=PRIORS)
    fixed = JointModel(pts, 2, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0,
                                                                  mask_affine_sigma_ppm=0))
    assert model.n_mask == 3 and model.mask_learnt and fixed.n_mask == 0
    assert [model.param_names[k] for k in model.mask_cols] == list(MASK_AFFINE_NAMES)
    rng = np.random.default_rng(seed)
    lo, hi = model.bounds()
    phis = lo + (hi - lo) * rng.uniform(0.2, 0.8, (3, model.ndim))
    ll = model.log_likelihood(phis)
    G = fixed.G
    for k, phi in enumerate(phis):
        # the hole errors independent, N(0, sigma^2), held only at the mask's true gauges,
        # with no separate mask scale or shear parameters (the model with them off)
        ref, mean, cov = brute_force(fixed, phi, gauges=mask_gauges(pts.hole_xy))
        assert ll[k] == pytest.approx(ref, abs=1e-5)
        cond = model.conditional(phi[None])
        keep = np.setdiff1d(np.arange(model.G), model.mask_cols)  # the same parameters
        assert np.allclose(cond.mean[keep], mean[:G], rtol=1e-6, atol=1e-10)
        assert np.allclose(cond.cov[np.ix_(keep, keep)], cov[:G, :G], rtol=1e-5, atol=1e-14)


def test_metrology_width_and_fixed_mask():
    pts, field = symmetric_problem(3)
    m = JointModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=5.0))
    assert m.n_mask == 3 and not m.mask_learnt
    assert np.allclose(m.prior_sd(m.initial_guess())[m.mask_cols], 5e-6)
    m0 = JointModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=0))
    assert m0.n_mask == 0 and "mask_scale" not in m0.param_names
    # no hole errors: fixed, unless metrology is given
    assert JointModel(pts, 2, hole_errors=False, jacobian_field=field).n_mask == 0
    assert JointModel(pts, 2, hole_errors=False, jacobian_field=field,
                    priors=Priors(mask_affine_sigma_ppm=2.0)).n_mask == 3
    with pytest.raises(ValueError, match="mask_affine_sigma_ppm"):
        JointModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=-1.0))
    # the learnt width: the hole errors' scale over the pattern's norm
    d = JointModel(pts, 2, jacobian_field=field)
    phi = d.initial_guess()
    norm = np.sqrt(np.sum((pts.hole_xy - pts.hole_xy.mean(0)) ** 2))
    assert np.allclose(d.mask_affine_sigma(phi), np.exp(phi[d.i_hole]) / norm)


def test_pixel_scale_uncertainty_includes_the_mask_scale():
    """The posterior sd of the field's scale: with the mask's scale known to 0.3 % it is at
    least that (a small grid on a small detector measures the scale to ~1e-4 only, so the
    metrology here is made the larger); fixed at the nominal table it is far smaller."""
    pts, field = symmetric_problem(4, n_exp=4, noise_px=0.02)
    phi = None
    sds = {}
    for ppm in (0, 3000.0):
        m = JointModel(pts, 2, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0,
                                                                    mask_affine_sigma_ppm=ppm))
        phi = m.initial_guess()
        cond = m.conditional(phi[None])
        i = m.param_names.index("cu[1,0]")
        sds[ppm] = np.sqrt(cond.cov[i, i]) / abs(cond.mean[i])
    assert sds[3000.0] >= 0.9 * 3e-3 > 10 * sds[0]


def test_campaign_and_mask_table_give_the_metrology(tmp_path):
    """``[fit] mask_affine_sigma_ppm`` overrides the mask table's ``affine_sigma_ppm``; bad
    values are refused with the file and the key."""
    import shutil

    from astrocal.campaign import CampaignError, load_campaign
    from astrocal.lab.mask import MaskError, load_mask, mask_path
    from astrocal.stages.fit_inputs import mask_affine_sigma

    text = Path(mask_path("metis_wcu_fp_mask5")).read_text()
    assert "affine_sigma_ppm" not in text
    plain = tmp_path / "mask.ecsv"
    shutil.copyfile(mask_path("metis_wcu_fp_mask5"), plain)
    measured = tmp_path / "measured_mask.ecsv"
    measured.write_text(text.replace("# - {short_name: metis_wcu_fp_mask5}",
                                     "# - {short_name: metis_wcu_fp_mask5}\n# - {affine_sigma_ppm: 3.5}"))
    assert load_mask(measured).affine_sigma_ppm == 3.5 and load_mask(plain).affine_sigma_ppm is None
    bad = tmp_path / "bad_mask.ecsv"
    bad.write_text(text.replace("# - {short_name: metis_wcu_fp_mask5}",
                                "# - {short_name: metis_wcu_fp_mask5}\n# - {affine_sigma_ppm: -2}"))
    with pytest.raises(MaskError, match=r"bad_mask.ecsv: meta 'affine_sigma_ppm' must be a number >= 0"):
        load_mask(bad)
    (tmp_path / "g.fits").touch()

    def campaign(mask, fit_line=""):
        path = tmp_path / "campaign.toml"
        path.write_text(f'[instrument]\nname = "METIS IMG_LM"\n\n[[lab]]\nmask = "{mask}"\nfilter = "Lp"\n'
                        f'exposures = [ {{ file = "g.fits", offset_arcsec = [0.0, 0.0] }} ]\n\n[fit]\n{fit_line}\n')
        return load_campaign(path)

    c = campaign("measured_mask.ecsv")
    assert mask_affine_sigma(c.fit, c.lab) == 3.5
    c = campaign("measured_mask.ecsv", "mask_affine_sigma_ppm = 0")
    assert mask_affine_sigma(c.fit, c.lab) == 0.0
    c = campaign("mask.ecsv")
    assert mask_affine_sigma(c.fit, c.lab) is None
    with pytest.raises(CampaignError, match=r"key 'fit.mask_affine_sigma_ppm': must be a number >= 0"):
        campaign("mask.ecsv", "mask_affine_sigma_ppm = -1")
