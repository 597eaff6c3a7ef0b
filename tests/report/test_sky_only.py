"""`astrocal report` on a sky-only result (no lab gauge): the case is detected, the map
accuracy comes from the non-linear part of the field and is checked against the simulated
truth, the scale is "not measured", and stability compares non-linear parts."""
import json

import numpy as np
import pytest
from astropy.table import Table

from astrocal.field import DistortionField, design_matrix, nonlinear_part, terms
from astrocal.field.basis import square_to_flat
from astrocal.field.maps import affine_matrix
from astrocal.products.result_files import load_posterior
from astrocal.products import posterior_solution
from astrocal.report.build import (
    affine_gauge, build_report, load_result, map_accuracy, nonlinear_keep, stability,
)
from astrocal.report.requirements import NEEDS_AFFINE, evaluate, load_requirements
from astrocal.sim.sky_files import load_sky_truth

GRID = 65


def _grid(shape, n=GRID):
    ny, nx = shape
    yy, xx = np.meshgrid(np.linspace(0, ny - 1, n), np.linspace(0, nx - 1, n), indexing="ij")
    return xx.ravel(), yy.ravel()


def _nonlinear_offsets(cu, cv, degree, domain, x, y, chunk=700):
    """Mean and sd over draws of ``-A_d^-1 N_d(p)`` (pixels), straight from the draws:
    ``A_d`` the matrix of :func:`astrocal.field.maps.affine_matrix` of each draw's field
    (linear in the coefficients: summed over the fields of single terms), ``N_d`` its terms
    of total degree >= 2, evaluated point by point."""
    cu, cv = np.atleast_2d(cu), np.atleast_2d(cv)
    nt = cu.shape[1]
    unit = np.array([affine_matrix(DistortionField.from_coefficients(np.eye(nt)[k], np.zeros(nt), degree,
                                                                     domain))[0] for k in range(nt)])
    a = np.einsum("dk,kij->dij", cu, unit) + np.einsum("dk,kij->dij", cv, unit[:, ::-1])
    ainv = np.linalg.inv(a)
    keep = np.array([i + j >= 2 for i, j in terms(degree)])
    out = np.empty((4, x.size))
    for lo in range(0, x.size, chunk):
        B = design_matrix(x[lo:lo + chunk], y[lo:lo + chunk], degree, domain)
        nu, nv = (cu * keep) @ B.T, (cv * keep) @ B.T
        dx = -(ainv[:, 0, 0, None] * nu + ainv[:, 0, 1, None] * nv)
        dy = -(ainv[:, 1, 0, None] * nu + ainv[:, 1, 1, None] * nv)
        out[0, lo:lo + chunk], out[1, lo:lo + chunk] = dx.mean(axis=0), dy.mean(axis=0)
        if len(cu) > 1:
            out[2, lo:lo + chunk], out[3, lo:lo + chunk] = dx.std(axis=0, ddof=1), dy.std(axis=0, ddof=1)
    return out


def _draws(post):
    nt = post.nt
    return post.g[:, :nt], post.g[:, nt:2 * nt]


def test_the_case_is_detected(sky_result, fitted_result, sky_report):
    _, rep = sky_report
    case = rep["case"]
    assert case["case"] == "sky-only" and case["affine_measured"] is False
    assert case["source"] == "fit.json datasets" and case["lab_datasets"] == [] and case["sky_datasets"] == ["gc"]
    assert "lab gauge" in case["reason"]
    lab = load_result(fitted_result).gauge
    assert lab["case"] == "lab" and lab["affine_measured"] is True and lab["lab_datasets"] == ["lab0"]
    # the fit itself names the affine field terms among the directions it cannot separate
    info = json.loads((sky_result / "fit.json").read_text())
    assert any("cu[0,0]" in d for d in info["inseparable"])


def test_gauge_criterion():
    lab = {"name": "lab0", "kind": "lab", "n_points": 10, "n_used": 10, "n_exposures": 2}
    sky = {"name": "gc", "kind": "sky", "n_points": 50, "n_used": 48, "n_exposures": 4}
    assert affine_gauge({"datasets": [lab, sky]})["case"] == "joint"
    assert affine_gauge({"datasets": [lab]})["case"] == "lab"
    g = affine_gauge({"datasets": [sky]})
    assert g["case"] == "sky-only" and not g["affine_measured"] and g["reason"]
    # a lab dataset of which no point was used is no gauge
    g = affine_gauge({"datasets": [dict(lab, n_used=0), sky]})
    assert g["case"] == "sky-only"
    # without the datasets in fit.json, the residual table's kinds decide
    t = Table({"dataset": ["gc", "gc", "lab0"], "kind": ["sky", "sky", "lab"],
               "outlier": [False, False, False]})
    assert affine_gauge({}, t)["case"] == "joint"
    assert affine_gauge({}, t[:2])["case"] == "sky-only"
    # nothing recorded: reported as before (full field), and said so
    g = affine_gauge({})
    assert g["case"] == "unknown" and g["affine_measured"] is True and "does not record" in g["statement"]


def test_nonlinear_terms_are_those_of_the_field_helper():
    for degree in (1, 2, 3, 5):
        assert nonlinear_keep(degree).tolist() == [i + j >= 2 for i, j in terms(degree)]
    rng = np.random.default_rng(3)
    f = DistortionField.from_coefficients(rng.normal(size=10), rng.normal(size=10), 3, (-0.5, 99.5, -0.5, 49.5))
    keep = nonlinear_keep(3)
    g = DistortionField.from_coefficients(square_to_flat(f.cx) * keep, square_to_flat(f.cy) * keep, 3, f.domain)
    x, y = rng.uniform(0, 99, 20), rng.uniform(0, 49, 20)
    np.testing.assert_allclose(g(x, y), nonlinear_part(f)(x, y), rtol=0, atol=1e-12)


def test_nonlinear_sigma_is_the_spread_of_the_draws(sky_result, sky_report):
    _, rep = sky_report
    post = load_posterior(sky_result)
    x, y = _grid(post.detector_shape)
    _, _, sx, sy = _nonlinear_offsets(*_draws(post), post.degree, post.domain, x, y)
    sig = np.hypot(sx, sy)
    ma = rep["map_accuracy"]
    assert ma["part"] == "non-linear"
    assert ma["max_px"] == pytest.approx(sig.max(), rel=1e-9)
    assert ma["rms_px"] == pytest.approx(np.sqrt(np.mean(sig**2)), rel=1e-9)
    mas = posterior_solution(post, "Lp").plate_scale * 1e3
    assert ma["max_mas"] == pytest.approx(sig.max() * mas, rel=1e-9)
    assert rep["metrics"]["map_sigma_max_mas"] == ma["max_mas"]
    # "the best affine map" is the least-squares one: fitting it on the grid itself instead
    # of over the detector area changes the 1-sigma by little
    nt = post.nt
    X = np.column_stack([np.ones_like(x), x, y])
    sub = post.g[:: max(1, len(post.g) // 400)]
    B = design_matrix(x, y, post.degree, post.domain)
    u, v = sub[:, :nt] @ B.T, sub[:, nt:2 * nt] @ B.T
    cu, cv = np.linalg.lstsq(X, u.T, rcond=None)[0], np.linalg.lstsq(X, v.T, rcond=None)[0]
    a = np.stack([np.stack([cu[1], cu[2]], -1), np.stack([cv[1], cv[2]], -1)], -2)  # (n, 2, 2)
    r = np.stack([u - (X @ cu).T, v - (X @ cv).T], axis=1)  # (n, 2, N) arcsec
    d = -np.linalg.solve(a, r)
    lsq = np.hypot(d[:, 0].std(axis=0, ddof=1), d[:, 1].std(axis=0, ddof=1))
    assert np.sqrt(np.mean(lsq**2)) == pytest.approx(ma["rms_px"], rel=0.1)


def test_nonlinear_sigma_against_the_truth(sky_campaign, sky_result, sky_report):
    """The reported 1-sigma of the non-linear part describes the actual error of the
    posterior mean's non-linear part against the simulated truth's, and is far below the
    full-field 1-sigma (set by the priors of the sky poses) that the report gave before."""
    _, rep = sky_report
    post = load_posterior(sky_result)
    truth = load_sky_truth(sky_campaign).field
    assert truth.degree <= post.degree and tuple(truth.domain) == tuple(post.domain)
    x, y = _grid(post.detector_shape)
    mx, my, _, _ = _nonlinear_offsets(*_draws(post), post.degree, post.domain, x, y)
    t3 = truth.with_degree(post.degree)
    tx, ty, _, _ = _nonlinear_offsets(square_to_flat(t3.cx), square_to_flat(t3.cy), post.degree,
                                      post.domain, x, y)
    err = np.hypot(mx - tx, my - ty)
    ma = rep["map_accuracy"]
    ratio = np.sqrt(np.mean(err**2)) / ma["rms_px"]
    print(f"non-linear part: actual error rms {np.sqrt(np.mean(err**2)):.3g} px, max {err.max():.3g} px; "
          f"reported 1-sigma rms {ma['rms_px']:.3g} px, max {ma['max_px']:.3g} px; ratio {ratio:.2f}")
    assert 1 / 3 < ratio < 3
    assert err.max() < 4 * ma["max_px"]
    # the truth's non-linear part is much larger than the error: the fit measures it
    assert np.sqrt(np.mean(tx**2 + ty**2)) > 3 * np.sqrt(np.mean(err**2))
    # the old number: the full field's 1-sigma, which the priors set
    old = map_accuracy(posterior_solution(post, "Lp", sigma_part="full"))
    assert rep["map_accuracy_full_field"]["max_px"] == pytest.approx(old["max_px"], rel=1e-9)
    assert ma["max_mas"] < 0.25 * old["max_mas"] and ma["rms_mas"] < 0.1 * old["rms_mas"]


def test_scale_is_not_measured(sky_report):
    _, rep = sky_report
    ps = rep["pixel_scale"]
    assert ps["measured"] is False and ps["mean_mas"] is None and ps["sd_rel"] is None
    assert "lab gauge" in ps["reason"] and ps["prior_mean_mas"] > 0
    rows = {r["id"]: r for r in rep["requirements"]}
    assert list(rows) == [r.id for r in load_requirements()]
    for rid in ("METIS-9920 scale LM", "OPS plate-scale stability"):
        assert rows[rid]["status"] == "not measured" and rows[rid]["value"] is None
        assert "sky-only fit" in rows[rid]["reason"] and "lab gauge" in rows[rid]["reason"]
    for m in NEEDS_AFFINE:
        assert rep["metrics"][m] is None and m in rep["not_measured"]
    r = rows["METIS-3502"]
    assert r["nonlinear_part"] is True and "non-linear part" in r["reason"]
    assert r["value"] == rep["map_accuracy"]["max_mas"] and r["status"] in ("pass", "fail")
    assert rows["METIS-9920 scale N"]["status"] == "not applicable"


def test_requirement_decided_on_the_nonlinear_part(sky_result, tmp_path):
    """A threshold between the non-linear 1-sigma and the full-field one passes now and
    failed before; a requirement on the pixel scale is not measured (it was a number)."""
    result = load_result(sky_result)
    rep = build_report(result, requirements=load_requirements())
    nl = rep["map_accuracy"]["max_mas"]
    full = rep["map_accuracy_full_field"]["max_mas"]
    threshold = float(np.sqrt(nl * full))
    path = tmp_path / "req.toml"
    path.write_text(f'[[requirement]]\nid = "map"\nmetric = "map_sigma_max_mas"\nmax = {threshold!r}\n'
                    '[[requirement]]\nid = "scale"\nmetric = "pixel_scale_sd_rel"\nmax = 1e-3\n')
    rows = build_report(result, requirements=load_requirements(path))["requirements"]
    assert [(r["id"], r["status"]) for r in rows] == [("map", "pass"), ("scale", "not measured")]
    assert rows[0]["nonlinear_part"] and "non-linear" in rows[0]["reason"]
    # without an earlier result, the distortion stability is not evaluated, the scale not measured
    rows = {r["id"]: r for r in rep["requirements"]}
    assert rows["METIS-9920 distortion LM"]["status"] == "not evaluated"
    assert rows["METIS-9920 scale LM"]["status"] == "not measured"


def test_evaluate_not_measured_and_nonlinear():
    reqs = [r for r in load_requirements() if r.id in ("METIS-3502", "METIS-9920 scale LM")]
    rows = evaluate(reqs, {"map_sigma_max_mas": 0.1, "scale_change_rel": None}, band="LM",
                    reasons={"scale_change_rel": "needs an earlier result"},
                    not_measured={"scale_change_rel": "no gauge"}, nonlinear={"map_sigma_max_mas"})
    assert [(r["status"], r["nonlinear_part"]) for r in rows] == [("pass", True), ("not measured", False)]
    assert rows[1]["reason"] == "no gauge" and "non-linear part" in rows[0]["reason"]
    # the band rule comes first
    rows = evaluate(reqs[1:], {}, band="N", not_measured={"scale_change_rel": "no gauge"})
    assert rows[0]["status"] == "not applicable"


def test_stability_compares_nonlinear_parts(sky_result, sky_report, sky_injected):
    """Against a copy with a scale change (not measurable) and a kick of cu[2,0]: the
    distortion change is the kick's, in each draw's own pixels; the scale is not measured."""
    _, rep = sky_report
    st = rep["stability"]
    assert st["part"] == "non-linear" and st["against_case"] == "sky-only"
    assert st["scale_change_rel"] is None and st["plate_scale_change_edge_mas"] is None
    assert set(st["not_measured"]) == {"scale_change_rel", "plate_scale_change_edge_mas"}
    # old draw = new / (1 + eps) + kick P2(t) e_u: its non-linear offsets differ by
    # (1 + eps) kick P2(t) A_d^-1 e_u per draw, whatever the scale change
    post = load_posterior(sky_result)
    cu, cv = _draws(post)
    t = terms(post.degree)
    hx = 0.5 * (post.domain[1] - post.domain[0])
    hy = 0.5 * (post.domain[3] - post.domain[2])
    a = np.empty((len(cu), 2, 2))
    a[:, 0, 0], a[:, 0, 1] = cu[:, t.index((1, 0))] / hx, cu[:, t.index((0, 1))] / hy
    a[:, 1, 0], a[:, 1, 1] = cv[:, t.index((1, 0))] / hx, cv[:, t.index((0, 1))] / hy
    col = np.linalg.inv(a)[:, :, 0].mean(axis=0)
    tt = -1023.5 / 1024.0
    eps, kick = sky_injected["scale"], sky_injected["kick_arcsec"]
    expect = (1 + eps) * kick * abs((3 * tt**2 - 1) / 2) * np.hypot(*col)
    assert st["distortion_change_max_px"] == pytest.approx(expect, rel=1e-6)
    assert st["distortion_change_rel"] == pytest.approx(expect / (0.5 * np.hypot(2048, 2048)), rel=1e-6)
    assert st["distortion_change_sd_px"] > 0
    rows = {r["id"]: r for r in rep["requirements"]}
    r = rows["METIS-9920 distortion LM"]
    assert r["nonlinear_part"] is True and r["value"] == st["distortion_change_rel"]
    assert r["status"] == ("pass" if r["value"] < 1e-3 else "fail")
    assert rows["METIS-9920 scale LM"]["status"] == "not measured"


def test_sky_only_against_a_lab_result(sky_result, fitted_result):
    """A lab result compared with a sky-only one: non-linear parts, scale not measured."""
    new, old = load_result(fitted_result), load_result(sky_result)
    st = stability(new, old)
    assert st["part"] == "non-linear" and st["against_case"] == "sky-only"
    assert st["scale_change_rel"] is None and "the earlier result" in st["not_measured"]["scale_change_rel"]
    assert np.isfinite(st["distortion_change_rel"]) and st["distortion_change_sd_px"] > 0


def test_lab_results_are_reported_as_before(report):
    _, rep = report
    assert rep["case"]["case"] == "lab" and rep["map_accuracy"]["part"] == "full field"
    assert rep["pixel_scale"]["measured"] is True and rep["not_measured"] == {}
    assert "map_accuracy_full_field" not in rep and rep["stability"]["part"] == "full field"
    assert not any(r["nonlinear_part"] or r["status"] == "not measured" for r in rep["requirements"])


def test_sky_only_page_in_headless_chromium(sky_report, browser):
    out, rep = sky_report
    browser.get((out / "report.html").resolve().as_uri())
    # the case is stated first, right under the title
    first = browser.execute_script("return document.querySelector('h1').nextElementSibling.id;")
    assert first == "case"
    case = browser.find_element("id", "case")
    assert case.get_attribute("data-case") == "sky-only"
    assert "No lab gauge" in case.text and "non-linear part" in case.text
    table = browser.find_element("id", "requirements")
    statuses = [td.text for td in table.find_elements("css selector", "tbody tr td.status")]
    assert statuses == [r["status"] for r in rep["requirements"]]
    assert "not measured" in statuses
    assert "not measured" in browser.find_element("id", "pixel-scale").text
    assert "non-linear part" in browser.find_element("id", "map-accuracy").text
    assert "non-linear" in browser.find_element("id", "stability").text
    browser.set_script_timeout(30)
    widths = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))"
        ".then(() => done(Array.from(document.images).map(i => [i.complete, i.naturalWidth])));")
    assert widths and all(complete and width > 0 for complete, width in widths), widths


def _catalog_rms(table, dataset):
    """rms x, y (mas) of the stars used of ``dataset``: against the catalogue, after the
    stars' fitted catalogue errors (straight from the residual table)."""
    sel = ((np.asarray(table["dataset"], str) == dataset) & (np.asarray(table["kind"], str) == "sky")
           & ~np.asarray(table["outlier"], bool))
    rms = [float(np.sqrt(np.mean(np.asarray(table[c], float)[sel] ** 2)))
           for c in ("dx_cat_mas", "dy_cat_mas", "dx_mas", "dy_mas")]
    return int(sel.sum()), rms[:2], rms[2:]


def test_residuals_against_the_catalogue_are_reported(sky_result, sky_report):
    """report.json gives each sky dataset's rms against the catalogue as given and after
    the stars' fitted catalogue errors, as the residual table has them; the figure is drawn."""
    out, rep = sky_report
    t = Table.read(sky_result / "residuals.ecsv")
    n, cat, after = _catalog_rms(t, "gc")
    (row,) = rep["sky_residuals"]
    assert row["dataset"] == "gc" and row["n_points"] == n > 0 and row["source"] == "residuals.ecsv"
    np.testing.assert_allclose(row["against_catalog_mas"], cat, rtol=1e-12)
    np.testing.assert_allclose(row["after_star_errors_mas"], after, rtol=1e-12)
    assert row["against_catalog_rms_mas"] == pytest.approx(np.sqrt(np.mean(np.square(cat))), rel=1e-12)
    # the stars' own catalogue terms take part of the scatter: the catalogue shows more
    assert row["against_catalog_rms_mas"] > row["after_star_errors_rms_mas"]
    # the fit's own record says the same
    info = json.loads((sky_result / "fit.json").read_text())
    np.testing.assert_allclose(info["sky_residuals"][0]["against_catalog_mas"], cat, rtol=1e-9)
    assert "against the catalogue as given" in rep["sky_residuals_definition"]
    assert (out / "plots" / "catalog_residuals_gc.png").exists()


def test_a_lab_result_has_no_catalogue_residuals(report):
    out, rep = report
    assert rep["sky_residuals"] == []
    page = (out / "report.html").read_text()
    assert 'id="sky-residuals"' not in page and "catalog_residuals_" not in page


def test_catalogue_residuals_in_headless_chromium(sky_result, sky_report, browser):
    """The page shows the residuals against the catalogue: the table's numbers are the
    residual table's, and its figure is an image the browser decodes."""
    out, rep = sky_report
    browser.get((out / "report.html").resolve().as_uri())
    assert browser.find_element("id", "catalog-residuals").text == "Residuals against the catalogue"
    table = browser.find_element("id", "sky-residuals")
    (cells,) = [[td.text for td in tr.find_elements("css selector", "td")]
                for tr in table.find_elements("css selector", "tbody tr")]
    n, cat, after = _catalog_rms(Table.read(sky_result / "residuals.ecsv"), "gc")
    assert cells[0] == "gc" and int(cells[1]) == n
    shown = [float(c) for c in cells[2:]]
    expect = [cat[0], cat[1], np.sqrt(np.mean(np.square(cat))), after[0], after[1],
              np.sqrt(np.mean(np.square(after)))]
    np.testing.assert_allclose(shown, expect, rtol=5e-3)  # shown to 3 significant digits
    fig = browser.find_element("css selector", 'figure[data-figure="catalog_residuals_gc"]')
    assert "Residuals against the catalogue: gc" in fig.text
    browser.set_script_timeout(30)
    width = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "const img = document.querySelector('figure[data-figure=\"catalog_residuals_gc\"] img');"
        "img.decode().then(() => done(img.naturalWidth)).catch(() => done(0));")
    assert width > 0


def test_products_state_the_errors_of_what_is_measured(sky_result, sky_report):
    """A sky-only fit's products: their map errors are the non-linear part's (the report's
    1-sigma of it, not the prior-set full field's), and a card says so."""
    from astropy.io import fits

    from astrocal.model.onsky import ERR_PART

    _, rep = sky_report
    post = load_posterior(sky_result)
    sol = posterior_solution(post, "Lp")
    assert sol.meta["sigma_part"] == "non-linear"
    x, y = _grid(post.detector_shape)
    sig = np.hypot(*sol.sigma(x, y))
    full = np.hypot(*posterior_solution(post, "Lp", sigma_part="full").sigma(x, y))
    ma = rep["map_accuracy"]
    assert sig.max() < 0.25 * full.max()
    assert 0.3 < np.sqrt(np.mean(sig**2)) / ma["rms_px"] < 3
    with fits.open(sky_result / "astromet_Lp.fits") as h:
        assert h[0].header[ERR_PART] == "NONLINEAR"
        t = h["FILTER-LP"].data if "FILTER-LP" in h else h[1].data
        err = np.hypot(t["RAWX_OFF_ERR"], t["RAWY_OFF_ERR"])
        assert err.max() < 0.25 * full.max()
