"""A fit's quality flags (astrocal.model.quality) are carried by every product (QC keywords),
fit.json, the report's first line (in red when something is wrong) and the report command."""
import json
import shutil

from astropy.io import fits

from astrocal.cli import main
from astrocal.formats.sip import load_header
from astrocal.model.quality import QC_CONVERGED, QC_DEGREE_AT_TOP, fit_quality
from astrocal.products.result_files import load_posterior
from astrocal.products import write_fit_products


def reseal(out):
    """Seal a result set edited by the test as complete (its manifest, rewritten)."""
    from astrocal.resultset import read_manifest, write_manifest

    write_manifest(out, list(read_manifest(out)["files"]))


def test_every_product_carries_the_flags(fitted_result):
    """The report fixture's fit (300 steps x 12 walkers): whatever its flags, fit.json, the
    AstroMet file, the SIP header, both METIS products and the report say the same."""
    stored = json.loads((fitted_result / "fit.json").read_text())
    q = fit_quality(stored)
    assert stored["quality"] == q
    headers = [fits.getheader(fitted_result / "astromet_Lp.fits"),
               load_header(fitted_result / "wcs_sip_Lp.hdr"),
               fits.getheader(fitted_result / "LM_DISTORTION_TABLE_Lp.fits"),
               fits.getheader(fitted_result / "LM_DISTORTION_MAP_Lp.fits")]
    for h in headers:
        assert h[QC_CONVERGED] == q["converged"]
        assert h[QC_DEGREE_AT_TOP] == q["degree_at_top_of_range"]


def test_an_unconverged_result_is_marked_everywhere(fitted_result, tmp_path):
    """A copy of a result whose fit.json says the chain did not converge: the products
    rewritten from it, the report's first line (in red) and the report command say so."""
    out = tmp_path / "Lp"
    shutil.copytree(fitted_result, out, ignore=shutil.ignore_patterns("report", "*.fits", "*.hdr"))
    stored = json.loads((out / "fit.json").read_text())
    stored["diagnostics"]["converged"] = False
    stored["diagnostics"]["warnings"] = ["ConvergenceWarning: chain of 300 steps is shorter than 50 "
                                         "autocorrelation times (max tau 33.3)"]
    (out / "fit.json").write_text(json.dumps(stored))
    paths = write_fit_products(load_posterior(out), out, "Lp", instrument="METIS IMG_LM")
    reseal(out)  # the edited set is taken as complete
    for name, path in paths.items():
        h = load_header(path) if name == "sip" else fits.getheader(path)
        assert h[QC_CONVERGED] is False, name
    assert main(["-q", "report", str(out)]) == 0
    page = (out / "report" / "report.html").read_text()
    body = page.split("<body>", 1)[1].lstrip()
    assert body.startswith('<p class="qc-fail" id="quality">NOT CONVERGED')
    assert "max tau 33.3" in body.split("</p>", 1)[0]
    rep = json.loads((out / "report" / "report.json").read_text())
    assert rep["quality"]["converged"] is False and not rep["quality"]["ok"]


