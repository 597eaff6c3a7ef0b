"""The mask's net scale and shear (Priors.mask_affine_sigma_ppm): against an independent
parametrisation of the hole errors, and their effect on the pixel scale's uncertainty."""
from pathlib import Path

import numpy as np
import pytest

from astrocal.field import design_matrix
from astrocal.field.synthetic import smooth_field
from astrocal.field.inverse import solve
from astrocal.model.data import LabPoints
from astrocal.model.linear import MASK_AFFINE_NAMES, LabModel, Priors

PRIORS = Priors(linear_sigma=2.0, distortion_px=5.0)


def symmetric_problem(seed=0, n_exp=3, noise_px=0.5):
    """Holes on a centred 4 x 4 square grid (symmetric under x -> -x, y -> -y and x <-> y:
    the translation, rotation, scale and shear patterns are then exactly orthogonal and of
    equal norm), a few dithered exposures, degree-2 field."""
    rng = np.random.default_rng(seed)
    shape = (256, 256)
    field = smooth_field(shape=shape, pixel_scale_mas=5.47, corner_px=1.0, degree=2, rng=seed)
    g = (np.arange(4) - 1.5) * 0.25
    hx, hy = np.meshgrid(g, g)
    hole_xy = np.column_stack([hx.ravel(), hy.ravel()])
    n_holes = len(hole_xy)
    offsets = np.vstack([[0, 0], rng.normal(0, 0.05, (n_exp - 1, 2))])
    xs, ys, es, hs = [], [], [], []
    for e in range(n_exp):
        f = hole_xy + offsets[e]
        x, y = solve(field, f[:, 0], f[:, 1])
        xs.append(x)
        ys.append(y)
        es.append(np.full(n_holes, e))
        hs.append(np.arange(n_holes))
    x, y = np.concatenate(xs), np.concatenate(ys)
    n = x.size
    cov = np.zeros((n, 2, 2))
    s = noise_px * rng.uniform(0.5, 1.5, n)
    cov[:, 0, 0] = s**2
    cov[:, 1, 1] = s**2
    x, y = x + rng.normal(0, noise_px, n), y + rng.normal(0, noise_px, n)
    pts = LabPoints(x, y, cov, np.concatenate(es), np.concatenate(hs), offsets, np.full(n_exp, 0.002),
                    np.zeros(n_exp, int), np.arange(n_holes) + 100, hole_xy, field.domain, 0.00547, 3.319)
    return pts, field


def brute_force_three_gauges(model, phi):
    """Dense marginal likelihood where the hole errors are independent, ``N(0, sigma^2)``,
    conditioned only on the true gauges (translation and rotation of the mask: three
    patterns), with no separate mask scale or shear parameters. ``model`` must have its
    mask columns off (``mask_affine_sigma_ppm=0``)."""
    assert model.n_mask == 0
    pts = model.points
    nt, G, H = model.nt, model.G, model.H
    n = pts.n_points
    jit, kappa, hsig = model._unpack(np.atleast_2d(phi))
    B = design_matrix(pts.x, pts.y, model.degree, pts.domain)
    A = np.zeros((2 * n, G + 2 * H))
    A[0::2, :nt] = B
    A[1::2, nt:2 * nt] = B
    A[0::2, 2 * nt:model.p0] = model.E[:, 0, :]
    A[1::2, 2 * nt:model.p0] = model.E[:, 1, :]
    for i in range(n):
        slot = model.pose_slot[pts.exposure[i]]
        if slot >= 0:
            s = model.p0 + 4 * slot
            A[2 * i:2 * i + 2, s:s + 4] = model.Q[i]
        h = pts.hole[i]
        A[2 * i, G + 2 * h] = -1.0
        A[2 * i + 1, G + 2 * h + 1] = -1.0
    m = pts.hole_xy - pts.hole_xy.mean(axis=0)
    gauges = np.zeros((H, 2, 3))
    gauges[:, 0, 0] = 1.0
    gauges[:, 1, 1] = 1.0
    gauges[:, 0, 2], gauges[:, 1, 2] = -m[:, 1], m[:, 0]
    q, _ = np.linalg.qr(np.hstack([gauges.reshape(2 * H, 3), np.eye(2 * H)]))
    vperp = q[:, 3:2 * H]
    A = np.hstack([A[:, :G], A[:, G:] @ vperp])
    prior_sd = np.concatenate([model.prior_sd(phi), np.full(vperp.shape[1], hsig[0])])
    prior_mean = np.concatenate([model.g0, np.zeros(vperp.shape[1])])
    cov = np.zeros((2 * n, 2 * n))
    ci = kappa[0] ** 2 * model.U @ (model.lam[:, :, None] * np.swapaxes(model.U, 1, 2))
    for i in range(n):
        cov[2 * i:2 * i + 2, 2 * i:2 * i + 2] = ci[i] + np.eye(2) * jit[0, pts.dataset[i]] ** 2
    y = model.y.ravel()
    cinv = np.linalg.inv(cov)
    lam_inv = np.diag(1.0 / prior_sd**2)
    P = A.T @ cinv @ A + lam_inv
    h = A.T @ cinv @ y + lam_inv @ prior_mean
    post_cov = np.linalg.inv(P)
    post_mean = post_cov @ h
    ll = -0.5 * (2 * n * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + 2 * np.sum(np.log(prior_sd))
                 + np.linalg.slogdet(P)[1] + y @ cinv @ y + prior_mean @ lam_inv @ prior_mean - h @ post_mean)
    return ll, post_mean[:G], post_cov[:G, :G]


@pytest.mark.parametrize("seed", [0, 1])
def test_default_is_independent_hole_errors_with_only_the_true_gauges(seed):
    """Scale and shears derived from the hole errors' own scale = the hole errors left free
    in every pattern but the mask's translation and rotation: the same likelihood and the
    same posterior of the field (independent parametrisation, dense algebra)."""
    pts, field = symmetric_problem(seed)
    model = LabModel(pts, 2, jacobian_field=field, priors=PRIORS)
    fixed = LabModel(pts, 2, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0,
                                                                  mask_affine_sigma_ppm=0))
    assert model.n_mask == 3 and model.mask_learnt and fixed.n_mask == 0
    assert [model.param_names[k] for k in model.mask_cols] == list(MASK_AFFINE_NAMES)
    rng = np.random.default_rng(seed)
    lo, hi = model.bounds()
    phis = lo + (hi - lo) * rng.uniform(0.2, 0.8, (3, model.ndim))
    ll = model.log_likelihood(phis)
    for k, phi in enumerate(phis):
        ref, mean, cov = brute_force_three_gauges(fixed, phi)
        assert ll[k] == pytest.approx(ref, abs=1e-5)
        cond = model.conditional(phi[None])
        keep = np.setdiff1d(np.arange(model.G), model.mask_cols)  # the same parameters
        assert np.allclose(cond.mean[keep], mean, rtol=1e-6, atol=1e-10)
        assert np.allclose(cond.cov[np.ix_(keep, keep)], cov, rtol=1e-5, atol=1e-14)


def test_metrology_width_and_fixed_mask():
    pts, field = symmetric_problem(3)
    m = LabModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=5.0))
    assert m.n_mask == 3 and not m.mask_learnt
    assert np.allclose(m.prior_sd(m.initial_guess())[m.mask_cols], 5e-6)
    m0 = LabModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=0))
    assert m0.n_mask == 0 and "mask_scale" not in m0.param_names
    # no hole errors: fixed, unless metrology is given
    assert LabModel(pts, 2, hole_errors=False, jacobian_field=field).n_mask == 0
    assert LabModel(pts, 2, hole_errors=False, jacobian_field=field,
                    priors=Priors(mask_affine_sigma_ppm=2.0)).n_mask == 3
    with pytest.raises(ValueError, match="mask_affine_sigma_ppm"):
        LabModel(pts, 2, jacobian_field=field, priors=Priors(mask_affine_sigma_ppm=-1.0))
    # the learnt width: the hole errors' scale over the pattern's norm
    d = LabModel(pts, 2, jacobian_field=field)
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
        m = LabModel(pts, 2, jacobian_field=field, priors=Priors(linear_sigma=2.0, distortion_px=5.0,
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
    from astrocal.model.cli import mask_affine_sigma

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
