"""``astrocal convert`` keeps what the target format holds and says what it cannot (issue #19);
corrupted AstroMet tables and SIP terms beyond their order are refused by name."""
import logging
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.formats.astromet import AstroMetFormatError, read_astromet, write_astromet
from astrocal.formats.convert import convert
from astrocal.formats.sip import SipFormatError, read_sip_header, write_sip_header


def test_astromet_to_astromet_keeps_the_error_columns(tmp_path, metis_solution, caplog):
    src = write_astromet(tmp_path / "in.fits", metis_solution, step=64)
    with caplog.at_level(logging.WARNING):
        convert(src, tmp_path / "out.fits")
    assert "cannot hold" not in caplog.text
    a, b = read_astromet(src)["L"].table, read_astromet(tmp_path / "out.fits")["L"].table
    for col in ("RAWX_OFF_ERR", "RAWY_OFF_ERR"):
        assert col in b.colnames
        assert np.allclose(b[col], a[col], rtol=1e-5, atol=0), col
    assert any("astrocal convert in.fits (astromet) -> astromet" in str(h)
               for h in fits.getheader(tmp_path / "out.fits")["HISTORY"])


@pytest.mark.parametrize("name", ["out.hdr", "out.ecsv"])
def test_what_the_target_cannot_hold_is_said(tmp_path, metis_solution, caplog, name):
    src = write_astromet(tmp_path / "in.fits", metis_solution, step=64)
    with caplog.at_level(logging.WARNING):
        convert(src, tmp_path / name)
    assert "RAWX_OFF_ERR, RAWY_OFF_ERR" in caplog.text and "not carried" in caplog.text
    if name.endswith(".hdr"):
        history = " ".join(str(h) for h in fits.Header.fromtextfile(str(tmp_path / name))["HISTORY"])
    else:
        history = " ".join(Table.read(tmp_path / name).meta["history"])
    assert "not carried" in history and "RAWX_OFF_ERR" in history


def test_sip_crval_kept_to_sip_and_reported_otherwise(tmp_path, metis_solution, caplog):
    src = write_sip_header(tmp_path / "in.hdr", metis_solution, crval=(266.41, -29.0))
    convert(src, tmp_path / "same.hdr")
    h = fits.Header.fromtextfile(str(tmp_path / "same.hdr"))
    assert (h["CRVAL1"], h["CRVAL2"]) == (266.41, -29.0)
    with caplog.at_level(logging.WARNING):
        convert(src, tmp_path / "am.fits")
    assert "CRVAL1, CRVAL2 = 266.41, -29 deg" in caplog.text
    hist = " ".join(str(v) for v in fits.getheader(tmp_path / "am.fits")["HISTORY"])
    assert "not carried" in hist and "CRVAL1" in hist


def _corrupt(src, dst, how):
    with fits.open(src) as hdul:
        t = hdul["FILTER-L"].data
        if how == "nan":
            t["RAWY_OFF"][7] = np.nan
        elif how == "offset":
            t["RAWX_OFF"][12] += 0.5
        elif how == "grid":
            t["RAWX"][3] = t["RAWX"][4]
        hdul.writeto(dst)


@pytest.mark.parametrize("how, message", [
    ("nan", "extension FILTER-L column RAWY_OFF holds 1 NaN"),
    ("offset", "extension FILTER-L columns RAWX_OFF, RAWY_OFF disagree with POLYNOM_MAP"),
    ("grid", "extension FILTER-L repeats RAWX, RAWY pairs: not a regular grid")])
def test_corrupted_astromet_table_is_refused(tmp_path, metis_solution, how, message):
    src = write_astromet(tmp_path / "in.fits", metis_solution, step=64)
    _corrupt(src, tmp_path / "bad.fits", how)
    with pytest.raises(AstroMetFormatError, match=message):
        convert(tmp_path / "bad.fits", tmp_path / "out.fits")
    assert not (tmp_path / "out.fits").exists()


def test_corrupted_table_through_the_cli(tmp_path, metis_solution):
    src = write_astromet(tmp_path / "in.fits", metis_solution, step=64)
    _corrupt(src, tmp_path / "bad.fits", "offset")
    out = tmp_path / "o" / "out.hdr"
    proc = subprocess.run([sys.executable, "-c", "import sys; from astrocal.cli import main; "
                           "sys.exit(main())", "convert", str(tmp_path / "bad.fits"), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.fits: extension FILTER-L columns RAWX_OFF, RAWY_OFF disagree" in proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bad.fits", "in.fits"]


@pytest.mark.parametrize("drop, add, message", [
    ("A_ORDER", None, r"keyword A_\d_\d is a SIP term but A_ORDER is missing"),
    (None, ("B_ORDER", 2), r"keyword B_\d_\d \(order \d\) lies beyond B_ORDER = 2; it would be "
                           r"ignored: B_ORDER >= \d needed"),
    (None, ("AP_ORDER", 1), r"lies beyond AP_ORDER = 1")])
def test_sip_terms_beyond_the_order_are_refused(tmp_path, metis_solution, drop, add, message):
    h = fits.Header.fromtextfile(str(write_sip_header(tmp_path / "in.hdr", metis_solution)))
    assert h["A_ORDER"] >= 3
    if drop:
        del h[drop]
    if add:
        h[add[0]] = add[1]
    with pytest.raises(SipFormatError, match=message):
        read_sip_header(h, source="bad.hdr")
