"""Shared fixtures of the ``astrocal correct`` tests: solutions written by astrocal's own
writers, and one quick fit of a simulated lab campaign with its truth."""
import numpy as np
import pytest

from astrocal.cli import main
from astrocal.field.inverse import solve
from astrocal.field.synthetic import smooth_field
from astrocal.formats.astromet import write_astromet
from astrocal.formats.siaf import write_siaf
from astrocal.formats.sip import write_sip_header
from astrocal.products.result_files import load_posterior
from astrocal.sim.lab_truth import gauge_truth
from astrocal.sim.points_campaign import write_points_campaign
from astrocal.solution import Solution


def _sigma(nx, ny):
    def sigma(x, y):
        r2 = ((np.asarray(x) - 0.5 * (nx - 1)) ** 2 + (np.asarray(y) - 0.5 * (ny - 1)) ** 2) / (0.5 * nx) ** 2
        return 0.002 + 0.003 * r2, 0.0025 + 0.002 * r2
    return sigma


@pytest.fixture(scope="session")
def metis_files(tmp_path_factory):
    """A METIS IMG_LM-like solution (2048 x 2048, 5.47 mas/px, 3 px at the corners, degree 5,
    with a 1-sigma map) as AstroMet (single precision, as products), SIP header and SIAF."""
    d = tmp_path_factory.mktemp("metis")
    sol = Solution(smooth_field(degree=5, corner_px=3.0, rotation_deg=0.4, rng=11),
                   filter="L", sigma=_sigma(2048, 2048))
    return {"solution": sol,
            "astromet": write_astromet(d / "astromet.fits", sol, instrument="METIS"),
            "sip": write_sip_header(d / "wcs.hdr", sol),
            "siaf": write_siaf(d / "siaf.ecsv", sol)}


@pytest.fixture(scope="session")
def small_files(tmp_path_factory):
    """A 256 x 256 detector with strong distortion (4 px at the corners, so pixel areas vary
    by several per cent), written in every format; the AstroMet file holds two filters."""
    d = tmp_path_factory.mktemp("small")
    sol = Solution(smooth_field(shape=(256, 256), degree=3, corner_px=4.0, rng=3,
                                rotation_deg=1.5), filter="L", sigma=_sigma(256, 256))
    other = Solution(smooth_field(shape=(256, 256), degree=3, corner_px=2.0, rng=4), filter="M")
    return {"solution": sol,
            "astromet": write_astromet(d / "astromet.fits", [sol, other], step=8),
            "sip": write_sip_header(d / "wcs.hdr", sol, crval=(266.41, -29.0)),
            "sip_fits": write_sip_header(d / "wcs.fits", sol),
            "siaf": write_siaf(d / "siaf.ecsv", sol)}


class FitResult:
    """A quick fit of a simulated campaign and the truth's linear grid in the fit's gauge."""

    def __init__(self, out, truth):
        self.root = out / "out"
        self.result = out / "out" / "Lp"
        self.astromet = self.result / "astromet_Lp.fits"
        self.sip = self.result / "wcs_sip_Lp.hdr"
        post = load_posterior(self.result)
        gt = gauge_truth(truth, post.hole_ids)
        # the linear grid is defined from the field alone: the truth's, in the fit's gauge
        self.true_linear = Solution(gt.field, detector_shape=(2048, 2048)).linear_field()

    def measured(self, n, seed, sigma=(0.003, 0.02)):
        """True linear-grid positions over the detector, their true detector positions and
        measured ones with Gaussian errors of the returned sigmas (pixels)."""
        rng = np.random.default_rng(seed)
        lt = rng.uniform(0.0, 2047.0, (n, 2))
        lin = self.true_linear
        pt = np.column_stack(solve(lin, lt[:, 0], lt[:, 1], guess=(lt[:, 0], lt[:, 1])))
        s = rng.uniform(*sigma, (n, 2))
        return lt, pt, pt + s * rng.standard_normal((n, 2)), s


@pytest.fixture(scope="session")
def fit_result(tmp_path_factory):
    """``astrocal fit`` of a simulated METIS lab campaign (degree 3, a short chain: ~10 s)."""
    out = tmp_path_factory.mktemp("fit")
    path, truth, _ = write_points_campaign(out, seed=7, degree=3, fit_degree=3)
    assert main(["-q", "fit", str(path), "--steps", "150", "--walkers", "8"]) == 0
    return FitResult(out, truth)


def whitened_rms(residual, cov):
    """rms of the residuals (N, 2) whitened by their 2 x 2 covariances, per component."""
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = a * c - b * b
    z2 = (c * residual[:, 0] ** 2 - 2 * b * residual[:, 0] * residual[:, 1]
          + a * residual[:, 1] ** 2) / det
    return float(np.sqrt(np.mean(z2) / 2))
