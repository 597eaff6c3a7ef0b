"""Sky points from measured tables, and joining lab and sky points."""
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table

from astrocal.model.data import DataError, Points, join_points, sky_points_from_tables

DOMAIN = (-0.5, 255.5, -0.5, 255.5)


def positions(names, rot_deg=20.0, zen=30.0, seed=0):
    """A stand-in for FocalPlanePositions with the attributes the builder reads."""
    rng = np.random.default_rng(seed)
    n = len(names)
    r = np.radians(rot_deg)
    J = np.array([[-np.cos(r), np.sin(r)], [np.sin(r), np.cos(r)]])  # mirrored, rotated
    c = np.zeros((n, 2, 2))
    s = rng.uniform(0.5e-3, 2e-3, n)
    c[:, 0, 0], c[:, 1, 1] = s**2, (0.7 * s) ** 2
    c[:, 0, 1] = c[:, 1, 0] = 0.2 * s * 0.7 * s
    x, y = rng.uniform(-0.6, 0.6, (2, n))
    return SimpleNamespace(names=np.array(names), x=x, y=y, u=-x, v=y, cov=J @ c @ J.T, jacobian=J,
                           zenith_distance_deg=zen, rotator_angle_deg=rot_deg, parity=-1, _cat=c)


def table(stars, seed=0, flags=None):
    rng = np.random.default_rng(seed)
    n = len(stars)
    t = Table({"star": stars, "x": rng.uniform(10, 240, n), "y": rng.uniform(10, 240, n),
               "sigma_x": np.full(n, 0.02), "sigma_y": np.full(n, 0.03), "cov_xy": np.full(n, 1e-5)})
    if flags is not None:
        t["flags"] = flags
    return t


def test_sky_points_from_tables():
    names = ["A", "B", "C", "D"]
    p0, p1 = positions(names, 20.0, 30.0, 0), positions(names, 60.0, 45.0, 1)
    t0 = table(["A", "B", "", "C"], flags=[0, 0, 128, 0])  # an unmatched source
    t1 = table(["D", "B", "A", "C"], flags=[0, 4, 0, 0])  # B rejected by its flag
    pts = sky_points_from_tables([t0, t1], [p0, p1], DOMAIN, 0.00547, 1.5, exposure_names=("e0", "e1"))
    assert pts.n_points == 6 and pts.n_exposures == 2
    assert list(pts.hole_ids) == ["A", "B", "C", "D"]  # first seen first
    assert np.all(pts.source_kind == 1) and np.all(pts.exposure_kind == 1)
    assert np.all(pts.is_sky)
    assert np.allclose(pts.offset_sigma, 1.5) and np.allclose(pts.offsets, 0.0)
    assert pts.exposure_zenith_deg.tolist() == [30.0, 45.0]
    assert pts.exposure_parity.tolist() == [-1.0, -1.0]
    # catalogue covariance back in standard coordinates (from the first exposure seen)
    assert np.allclose(pts.source_cov[0], p0._cat[0])
    # the reference position of every point is its star's apparent position there
    e1 = np.flatnonzero(pts.exposure == 1)
    star_of = np.asarray(pts.hole_ids)[pts.hole[e1]]
    want = {n: (p1.x[k], p1.y[k]) for k, n in enumerate(names)}
    assert np.allclose(pts.ref_xy[e1], [want[n] for n in star_of])
    assert np.allclose(pts.source_jacobian[e1], p1.jacobian)
    assert np.allclose(pts.cov[0], [[4e-4, 1e-5], [1e-5, 9e-4]])


def test_sky_points_bad_input():
    names = ["A", "B"]
    p = positions(names)
    with pytest.raises(DataError, match="not in the catalogue positions"):
        sky_points_from_tables([table(["A", "Z"])], [p], DOMAIN, 0.00547, exposure_names=("gc_03",))
    with pytest.raises(DataError, match="gc_03: a star is matched to more than one source"):
        sky_points_from_tables([table(["A", "A"])], [p], DOMAIN, 0.00547, exposure_names=("gc_03",))
    t = table(["A", "B"])
    t.remove_column("star")
    with pytest.raises(DataError, match="no column star"):
        sky_points_from_tables([t], [p], DOMAIN, 0.00547)
    t = table(["A", "B"])
    t.remove_column("sigma_y")
    with pytest.raises(DataError, match="no column sigma_y"):
        sky_points_from_tables([t], [p], DOMAIN, 0.00547)
    with pytest.raises(DataError, match="2 sky tables but 1"):
        sky_points_from_tables([table(["A"]), table(["B"])], [p], DOMAIN, 0.00547)


def lab_points(n_holes=5, n_exp=2, domain=DOMAIN, scale=0.00547):
    n = n_holes * n_exp
    cov = np.broadcast_to(np.eye(2) * 1e-4, (n, 2, 2)).copy()
    return Points(np.linspace(10, 200, n), np.linspace(20, 220, n), cov,
                     np.repeat(np.arange(n_exp), n_holes), np.tile(np.arange(n_holes), n_exp),
                     np.zeros((n_exp, 2)), np.full(n_exp, 0.002), np.zeros(n_exp, int),
                     np.arange(n_holes) + 10, np.random.default_rng(0).uniform(-0.5, 0.5, (n_holes, 2)),
                     domain, scale, 3.319)


def test_join_points():
    lab = lab_points()
    sky = sky_points_from_tables([table(["A", "B", "C"])], [positions(["A", "B", "C"])], DOMAIN, 0.00547,
                                 dataset_names=("gc",))
    joint = join_points(lab, sky)
    assert joint.n_points == lab.n_points + sky.n_points
    assert joint.n_exposures == 3 and joint.n_holes == 8 and joint.n_datasets == 2
    assert joint.dataset_names == ("lab", "gc") and joint.dataset_kinds == ("lab", "sky")
    assert joint.exposure_kind.tolist() == [0, 0, 1]
    assert joint.source_kind.tolist() == [0] * 5 + [1] * 3
    assert np.all(joint.hole[lab.n_points:] >= 5) and np.all(joint.exposure[lab.n_points:] == 2)
    assert np.unique(joint.point_ids).size == joint.n_points
    assert joint.mask_scale == 3.319
    # lab points keep their holes' nominal positions as reference
    assert np.allclose(joint.ref_xy[:lab.n_points], lab.hole_xy[lab.hole])
    assert np.all(np.isnan(joint.uv[:lab.n_points]))
    # a subset keeps the sky arrays aligned
    sub = joint.subset(joint.is_sky)
    assert np.allclose(sub.ref_xy, sky.ref_xy) and np.allclose(sub.source_jacobian, sky.source_jacobian)
    with pytest.raises(DataError, match="different detector domains"):
        join_points(lab_points(domain=(-0.5, 511.5, -0.5, 511.5)), sky)
    with pytest.raises(DataError, match="more than 1 % apart"):
        join_points(lab_points(scale=0.012), sky)


def test_sky_table_read_back_from_ecsv(tmp_path):
    """Empty star names come back masked from ECSV; blends (bit 512) are rejected by default."""
    names = ["A", "B", "C"]
    t = table(["A", "", "B"], flags=[0, 128, 512])
    t.write(tmp_path / "e.ecsv")
    back = Table.read(tmp_path / "e.ecsv")
    pts = sky_points_from_tables([back], [positions(names)], DOMAIN, 0.00547)
    assert pts.n_points == 1 and list(pts.hole_ids) == ["A"]
