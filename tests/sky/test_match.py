"""Tests of astrocal.sky.match on simulated dense star fields with known truth."""
import math
import time

import numpy as np
import pytest
import astropy.units as u
from astropy.table import Table

from astrocal.sky.match import MatchError, match_stars

SHAPE = (2048, 2048)
PIX_MAS = 5.47
FIELD_ARCSEC = SHAPE[1] * PIX_MAS / 1e3        # 11.2 arcsec


def luminosity_function(rng, n, m_bright=9.0, m_faint=17.0, slope=0.3):
    """Magnitudes with dN/dm proportional to 10^(slope m) between m_bright and m_faint."""
    a, b = 10 ** (slope * m_bright), 10 ** (slope * m_faint)
    return np.log10(a + rng.uniform(0, 1, n) * (b - a)) / slope


def simulate_field(rng, *, n_field=220, cat_half_arcsec=18.0, max_offset_arcsec=FIELD_ARCSEC,
                   dscale=0.05, parity=None, corner_px=4.0, noise_px=0.05, missing=0.2,
                   spurious=0.1, n_extra_blends=3, merge_px=3.0, colour_mag=0.15):
    """A catalogue and a measured star list of a random pointing, with the truth.

    Catalogue: uniform positions over a square of +-cat_half_arcsec (larger than the field,
    so the image sees only part of it), ~n_field stars per detector field of view, power-law
    luminosity function, plus ``n_extra_blends`` companions 1-2.5 px from stars of the field.
    Pose: scale 1 +- dscale, rotation uniform over 360 deg, parity random (or given), image
    centre anywhere within ``max_offset_arcsec`` of the catalogue origin.  A cubic
    distortion of ``corner_px`` at the corners.  Catalogue stars closer than ``merge_px``
    on the detector are one detection (flux-weighted centre, total flux).  A fraction
    ``missing`` of detections is dropped; ``spurious`` (relative to the kept ones) are
    added: half uniform (>= 3 px from a real detection), half PSF artefacts 6-9 px from
    bright stars.  Returns (stars Table, reference Table, truth list of sets, pose).
    """
    ny, nx = SHAPE
    pix = PIX_MAS / 1e3
    dens = n_field / FIELD_ARCSEC ** 2
    n_cat = rng.poisson(dens * (2 * cat_half_arcsec) ** 2)
    ref = rng.uniform(-cat_half_arcsec, cat_half_arcsec, (n_cat, 2))
    mag = luminosity_function(rng, n_cat)
    s = 1 + rng.uniform(-dscale, dscale)
    th = rng.uniform(0, 2 * np.pi)
    par = rng.choice([1, -1]) if parity is None else parity
    r = max_offset_arcsec * math.sqrt(rng.uniform())
    phi = rng.uniform(0, 2 * np.pi)
    centre = np.array([r * math.cos(phi), r * math.sin(phi)])
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c0 = np.array([(nx - 1) / 2, (ny - 1) / 2])
    # cubic distortion: random cubic terms scaled to corner_px at the worst corner
    cx = rng.normal(0, 1, 4)
    cy = rng.normal(0, 1, 4)

    def distort(p):
        z = (p - c0) / 1024.0
        x, y = z[:, 0], z[:, 1]
        mono = np.column_stack([x ** 3, x ** 2 * y, x * y ** 2, y ** 3])
        return np.column_stack([mono @ cx, mono @ cy])

    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], float)
    amp = corner_px / np.max(np.hypot(*distort(corners).T))

    def to_pix(rr):
        lin = c0 + s * ((rr - centre) * [par, 1.0] / pix) @ R.T
        return lin + amp * distort(lin)

    p = to_pix(ref)
    inside = (p[:, 0] >= 0) & (p[:, 0] <= nx - 1) & (p[:, 1] >= 0) & (p[:, 1] <= ny - 1)
    # extra blends: companions of random field stars
    comp, comp_mag = [], []
    for k in rng.choice(np.nonzero(inside)[0], n_extra_blends, replace=False):
        sep_px = rng.uniform(1.0, 2.5)
        ang = rng.uniform(0, 2 * np.pi)
        comp.append(ref[k] + sep_px * pix / s * np.array([math.cos(ang), math.sin(ang)]))
        comp_mag.append(mag[k] + rng.uniform(0.0, 1.5))
    if comp:
        ref = np.vstack([ref, comp])
        mag = np.concatenate([mag, comp_mag])
        p = to_pix(ref)
        inside = (p[:, 0] >= 0) & (p[:, 0] <= nx - 1) & (p[:, 1] >= 0) & (p[:, 1] <= ny - 1)
    idx = np.nonzero(inside)[0]
    flux_true = 10 ** (-0.4 * (mag - 20.0)) * 10 ** (-0.4 * rng.normal(0, colour_mag, len(mag)))
    # merge catalogue stars closer than merge_px into one detection
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    pr = cKDTree(p[idx]).query_pairs(merge_px, output_type="ndarray")
    g = coo_matrix((np.ones(len(pr)), (pr[:, 0], pr[:, 1])) if len(pr) else ([], ([], [])),
                   shape=(len(idx), len(idx)))
    ng, lab = connected_components(g, directed=False)
    det_xy, det_f, truth = [], [], []
    for k in range(ng):
        mem = idx[lab == k]
        f = flux_true[mem]
        det_xy.append((f[:, None] * p[mem]).sum(0) / f.sum())
        det_f.append(f.sum())
        truth.append(set(mem.tolist()))
    det_xy = np.array(det_xy) + rng.normal(0, noise_px, (ng, 2))
    det_f = np.array(det_f)
    keep = rng.uniform(size=ng) >= missing
    det_xy, det_f = det_xy[keep], det_f[keep]
    truth = [t for t, k in zip(truth, keep) if k]
    n_sp = int(round(spurious * len(det_xy)))
    sp_xy, sp_f = [], []
    tree = cKDTree(det_xy)
    bright = np.argsort(-det_f)[:30]
    while len(sp_xy) < n_sp:
        if len(sp_xy) % 2 == 0:
            q = rng.uniform([0, 0], [nx - 1, ny - 1])
            if tree.query(q)[0] < 3.0:
                continue
            sp_xy.append(q)
            sp_f.append(10 ** (-0.4 * (luminosity_function(rng, 1)[0] - 20.0)))
        else:
            b = rng.choice(bright)
            ang = rng.uniform(0, 2 * np.pi)
            q = det_xy[b] + rng.uniform(6, 9) * np.array([math.cos(ang), math.sin(ang)])
            if not (0 <= q[0] <= nx - 1 and 0 <= q[1] <= ny - 1):
                continue
            sp_xy.append(q)
            sp_f.append(det_f[b] * rng.uniform(0.01, 0.03))
    xy = np.vstack([det_xy, np.reshape(sp_xy, (-1, 2))])
    flux = np.concatenate([det_f, sp_f])
    truth = truth + [set() for _ in sp_xy]
    order = rng.permutation(len(xy))
    stars = Table({"x": xy[order, 0], "y": xy[order, 1], "flux": flux[order],
                   "sigma_x": np.full(len(xy), noise_px), "sigma_y": np.full(len(xy), noise_px)})
    reference = Table({"x": ref[:, 0] * u.arcsec, "y": ref[:, 1] * u.arcsec, "mag": mag})
    truth = [truth[o] for o in order]
    pose = {"scale": s, "rotation_deg": math.degrees(th), "parity": par, "centre_arcsec": centre,
            "n_merged": int(sum(len(t) > 1 for t in truth))}
    return stars, reference, truth, pose


def check(res, truth):
    """(n wrong pairs, n correct pairs, n matchable detections)."""
    wrong = 0
    for k, (i, j) in enumerate(res.pairs):
        t = truth[i]
        if j in t:
            continue
        if res.blend[k] and t & set(res.blend_members[k].tolist()):
            continue
        wrong += 1
    matchable = sum(1 for t in truth if t)
    return wrong, len(res.pairs) - wrong, matchable


def test_dense_fields_no_wrong_pairs():
    """100 dense random fields: every pair right, most stars matched (the time per field is
    printed; speed is a benchmark's business, never a test's)."""
    rng = np.random.default_rng(2024)
    n_fields, n_wrong, n_good, n_matchable, n_merged_flagged, n_merged = 100, 0, 0, 0, 0, 0
    times = []
    for f in range(n_fields):
        stars, ref, truth, pose = simulate_field(rng)
        t0 = time.perf_counter()
        res = match_stars(stars, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
        times.append(time.perf_counter() - t0)
        w, g, m = check(res, truth)
        n_wrong += w
        n_good += g
        n_matchable += m
        # detections of several catalogue stars: matched ones are flagged as blends
        for k, i in enumerate(res.star_index):
            if len(truth[i]) > 1:
                n_merged += 1
                n_merged_flagged += bool(res.blend[k])
        assert res.similarity.parity == pose["parity"]
        assert abs(res.similarity.scale - pose["scale"]) < 2e-3
        d = (res.similarity.rotation_deg - pose["rotation_deg"] + 180) % 360 - 180
        assert abs(d) < 0.2
        assert res.quality["significance"] > 20
    print(f"{n_fields} fields: {n_wrong} wrong pairs, {n_good} right of {n_matchable} matchable; "
          f"median {np.median(times):.3f} s, max {np.max(times):.3f} s per field")
    assert n_wrong == 0
    assert n_good >= 0.97 * n_matchable
    assert n_merged_flagged == n_merged


def _field(seed, **kw):
    return simulate_field(np.random.default_rng(seed), **kw)


def _arcsec(ref):
    return np.column_stack([ref["x"].quantity.to_value(u.arcsec), ref["y"].quantity.to_value(u.arcsec)])


def test_result_contents_are_consistent():
    stars, ref, truth, pose = _field(11)
    res = match_stars(stars, ref, pixel_scale_mas=PIX_MAS * u.mas / u.pix, detector_shape=SHAPE)
    assert check(res, truth)[0] == 0
    n, m = len(stars), len(ref)
    # one-to-one, and the star rows partition into matched and unmatched
    assert len(set(res.star_index.tolist())) == res.n_matched
    assert len(set(res.ref_index.tolist())) == res.n_matched
    assert sorted(res.star_index.tolist() + res.unmatched_stars.tolist()) == list(range(n))
    # reference entries: matched, blend companions, unmatched in the field, outside
    companions = [j for k in range(res.n_matched) for j in res.blend_members[k] if j != res.ref_index[k]]
    parts = res.ref_index.tolist() + companions + res.unmatched_reference.tolist() + res.reference_outside.tolist()
    assert sorted(parts) == list(range(m))
    q = res.quality
    assert q["n_matched"] == res.n_matched and q["n_stars"] == n and q["n_reference"] == m
    assert 0.8 < q["fraction"] <= 1.0
    assert q["rms_px"] < 0.15                  # centroid noise 0.05 px per axis
    assert q["significance"] > 50 and q["expected_false_pairs"] < 0.01
    assert q["expected_chance_matches"] < 10
    # transforms: reference arcsec -> pixels
    r = _arcsec(ref)[res.ref_index]
    xy = np.column_stack([stars["x"], stars["y"]])[res.star_index]
    ok = ~res.blend
    assert np.max(np.hypot(*(res.predict(r) - xy)[ok].T)) < 0.5
    assert np.max(np.hypot(*(res.affine(r) - xy)[ok].T)) < 8.0        # cubic distortion left
    assert np.max(np.hypot(*(res.similarity(r) - xy)[ok].T)) < 10.0
    np.testing.assert_allclose(res.similarity.inverse(res.similarity(r)), r, atol=1e-9)
    assert abs(res.similarity.pixel_scale_mas - PIX_MAS / pose["scale"]) < 0.01
    t = res.to_table()
    assert len(t) == res.n_matched and t.meta["similarity"]["parity"] == pose["parity"]
    # blends: merged detections and stars with a close measured neighbour are flagged
    from scipy.spatial import cKDTree
    xy_all = np.column_stack([stars["x"], stars["y"]])
    close = np.zeros(n, bool)
    close[cKDTree(xy_all).query_pairs(4.0, output_type="ndarray").ravel()] = True
    assert np.all(res.star_blend[close])
    for k, i in enumerate(res.star_index):
        if len(truth[i]) > 1:
            assert res.blend[k] and res.star_blend[i] and set(res.blend_members[k]) >= truth[i]
    np.testing.assert_allclose(res.residual_px[ok], (xy - res.predict(r))[ok], atol=1e-9)


def test_wrong_catalogue_raises_with_what_was_tried():
    for seed in (1, 2, 3):
        stars, _, _, _ = _field(seed)
        _, other, _, _ = _field(seed + 100)
        with pytest.raises(MatchError) as err:
            match_stars(stars, other, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
        msg = str(err.value)
        for text in ("no match", "stars with fluxes", "reference stars with magnitudes",
                     "5.47 mas/px", "scale within +-5%", "any rotation", "both parities",
                     "any offset", "pair votes", "candidate poses", "false-alarm probability",
                     "expected by chance"):
            assert text in msg, text


def test_no_overlap_raises():
    stars, ref, truth, pose = _field(5)
    # the reference with every star the detector sees (and a margin) removed
    seen = set().union(*truth)
    r = _arcsec(ref)
    near = np.zeros(len(ref), bool)
    seen_xy = r[sorted(seen)]
    from scipy.spatial import cKDTree
    d, _ = cKDTree(seen_xy).query(r)
    hull_c = seen_xy.mean(axis=0)
    near = np.hypot(*(r - hull_c).T) < 0.75 * FIELD_ARCSEC * 1.05
    near |= d < 0.5
    with pytest.raises(MatchError, match="no match"):
        match_stars(stars, ref[~near], pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    # an offset beyond max_offset is not searched
    shifted = ref.copy()
    shifted["x"] = shifted["x"] + 40 * u.arcsec
    with pytest.raises(MatchError, match=r"offset of the reference origin within"):
        match_stars(stars, shifted, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE,
                    max_offset=25 * u.arcsec)
    # ... but found when the offset is free
    res = match_stars(stars, shifted, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    assert check(res, truth)[0] == 0


def test_known_rotation_parity_and_offset():
    stars, ref, truth, pose = _field(21)
    kw = dict(pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    res = match_stars(stars, ref, rotation=(pose["rotation_deg"] + 1.0) * u.deg, rotation_tolerance=2 * u.deg,
                      parity=pose["parity"], max_offset=1.2 * FIELD_ARCSEC * u.arcsec, **kw)
    assert check(res, truth)[0] == 0 and res.n_matched > 100
    assert "parity" in res.tried and "rotation" in res.tried
    with pytest.raises(MatchError, match=r"rotation .* \+- 2 deg"):
        match_stars(stars, ref, rotation=(pose["rotation_deg"] + 90.0, 2.0), parity=pose["parity"], **kw)
    with pytest.raises(MatchError, match="parity"):
        match_stars(stars, ref, parity=-pose["parity"], **kw)


def test_arrays_without_fluxes_or_magnitudes():
    stars, ref, truth, pose = _field(31)
    xy = np.column_stack([stars["x"], stars["y"]])
    res = match_stars(xy, _arcsec(ref), pixel_scale_mas=PIX_MAS)     # detector from the stars
    w, g, m = check(res, truth)
    assert w == 0 and g > 0.97 * m
    assert res.quality["flux_zero_point"] is None


def test_sparse_field_and_too_few_stars():
    stars, ref, truth, pose = _field(41, n_field=30, n_extra_blends=1)
    res = match_stars(stars, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    w, g, m = check(res, truth)
    assert w == 0 and g >= m - 1
    with pytest.raises(MatchError, match="too few"):
        match_stars(stars[:2], ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    with pytest.raises(MatchError, match="min_matched=50"):
        match_stars(stars, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE, min_matched=50)


def test_flux_inconsistent_pair_rejected_or_flagged():
    stars, ref, truth, pose = _field(51)
    res0 = match_stars(stars, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    k = int(np.nonzero(~res0.blend)[0][0])
    i = res0.star_index[k]
    bad = stars.copy()
    bad["flux"][i] *= 100.0                        # 5 mag too bright
    res = match_stars(bad, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    assert i not in res.star_index and i in res.unmatched_stars
    assert [i, res0.ref_index[k]] in res.flux_rejected.tolist()
    res = match_stars(bad, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE, flux_check="flag")
    kk = int(np.nonzero(res.star_index == i)[0][0])
    assert res.flux_outlier[kk] and res.quality["n_flux_outliers"] >= 1
    res = match_stars(bad, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE, flux_check="off")
    assert i in res.star_index and not res.flux_outlier.any()


def test_invalid_rows_and_bad_input():
    stars, ref, truth, pose = _field(61)
    s = stars.copy()
    s["x"][3] = np.nan
    res = match_stars(s, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    assert res.invalid_stars.tolist() == [3] and 3 not in res.star_index
    assert check(res, truth)[0] == 0               # row numbers are those of the input
    with pytest.raises(MatchError, match="no column 'xc'"):
        match_stars(stars, ref, pixel_scale_mas=PIX_MAS, x_col="xc")
    with pytest.raises(MatchError, match="no column 'ra'"):
        match_stars(stars, ref, pixel_scale_mas=PIX_MAS, ref_x_col="ra")
    r = ref.copy()
    r["x"] = r["x"].value * u.m
    with pytest.raises(MatchError, match="expected an angle"):
        match_stars(stars, r, pixel_scale_mas=PIX_MAS)
    with pytest.raises(MatchError, match="parity"):
        match_stars(stars, ref, pixel_scale_mas=PIX_MAS, parity=2)
    with pytest.raises(MatchError, match="flux_check"):
        match_stars(stars, ref, pixel_scale_mas=PIX_MAS, flux_check="maybe")
    # reference in mas is converted
    r = ref.copy()
    r["x"] = r["x"].to(u.mas)
    r["y"] = r["y"].to(u.mas)
    res = match_stars(stars, r, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    assert check(res, truth)[0] == 0


def test_repeated_pattern_is_ambiguous():
    stars, ref, truth, pose = _field(71, cat_half_arcsec=8.0, max_offset_arcsec=0.5)
    r = _arcsec(ref)
    twin = Table({"x": np.concatenate([r[:, 0], r[:, 0] + 40.0]) * u.arcsec,
                  "y": np.concatenate([r[:, 1], r[:, 1]]) * u.arcsec,
                  "mag": np.concatenate([ref["mag"], ref["mag"]])})
    with pytest.raises(MatchError, match="ambiguous"):
        match_stars(stars, twin, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)


def test_daophot_list_round_trip(tmp_path):
    """A DAOPHOT II .als list (1-based positions, magnitudes) read and matched."""
    from astrocal.sky.starlist import read_star_list
    stars, ref, truth, pose = _field(81)
    lines = [" NL    NX    NY  LOWBAD HIGHBAD  THRESH     AP1  PH/ADU  RNOISE    FRAD",
             "  1  2048  2048   -50.0 30000.0   30.00    3.00    5.00    2.00    2.50", ""]
    for k, row in enumerate(stars):
        mag = 25.0 - 2.5 * np.log10(row["flux"])
        lines.append(f"{k + 1:7d} {row['x'] + 1:8.3f} {row['y'] + 1:8.3f} {mag:8.3f}   0.010   100.0"
                     "      3.    0.98   0.012")
    p = tmp_path / "field.als"
    p.write_text("\n".join(lines) + "\n")
    lst = read_star_list(p)
    np.testing.assert_allclose(lst["x"].value, stars["x"], atol=1e-3)
    res = match_stars(lst, ref, pixel_scale_mas=PIX_MAS, detector_shape=SHAPE)
    w, g, m = check(res, truth)
    assert w == 0 and g > 0.97 * m
