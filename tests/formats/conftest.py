import numpy as np
import pytest

from astrocal.field.synthetic import smooth_field
from astrocal.solution import Solution


@pytest.fixture(scope="session")
def metis_solution():
    """A METIS IMG_LM-like solution: 5.47 mas/px, 3 px at the corners, degree 5."""
    field = smooth_field(degree=5, corner_px=3.0, rotation_deg=0.4, rng=11, reference=(0.02, -0.01))

    def sigma(x, y):
        r2 = ((np.asarray(x) - 1023.5) ** 2 + (np.asarray(y) - 1023.5) ** 2) / 1024.0**2
        return 0.002 + 0.003 * r2, 0.0025 + 0.002 * r2

    return Solution(field, filter="L", sigma=sigma, meta={"campaign_sha256": "0" * 64})


@pytest.fixture(scope="session")
def high_degree_solution():
    """Degree 9 (> 7): the AstroMet polynomials can only approximate it."""
    return Solution(smooth_field(degree=9, corner_px=4.0, rng=5), filter="M")


def dense_points(n=20000, seed=0, shape=(2048, 2048)):
    rng = np.random.default_rng(seed)
    ny, nx = shape
    return rng.uniform(-0.5, nx - 0.5, n), rng.uniform(-0.5, ny - 0.5, n)


@pytest.fixture(name="dense_points")
def _dense_points():
    """Uniform random points over a 2048x2048 detector (0-based): ``dense_points(n, seed)``."""
    return dense_points
