"""Tests of the measure stage (astrocal.lab.measure, ``astrocal measure``).

Most tests run on small synthetic campaigns built here (320 x 320 px frames of the METIS
WCU mask's fine grid through the detector model of astrocal.sim.detector, with a known
truth); one end-to-end test runs on a campaign of ``astrocal simulate lab``.
"""
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from astrocal.campaign import CampaignError
from astrocal.cli import main
from astrocal.instruments import get_instrument
from astrocal.image import centroid as C
from astrocal.sim import detector as D
from astrocal.image.headers import make_raw_header
from astrocal.lab.mask import get_mask, mask_from_arrays
from astrocal.stages.measure import measure_campaign
from astrocal.lab.measure import (FLAGS_REJECT, OUTPUT_COLUMNS,
                                  SourceTableError, model_psf,
                                  read_source_table, validate_source_table)
from astrocal.image.psf import render_spots

SHAPE = (320, 320)
INST = "metis-lm"
PIX = 5.47
DIT, NDIT = 1.3, 4
THERMAL_E = 3000.0  # e per DIT


@pytest.fixture(scope="module")
def mask5():
    return get_mask("metis_wcu_fp_mask5")


@pytest.fixture(scope="module")
def psf(mask5):
    return model_psf(INST, "Lp", mask5, pixel_scale_mas=PIX, mask_scale=3.319)


def _detector(seed=3):
    return D.DetectorModel.from_instrument(INST, "slow", shape=SHAPE, border_px=(4, 4, 4, 4),
                                           seed=seed, cosmic_ray_rate_per_cm2_s=0.0)


def true_positions(mask, offset_arcsec, rot_deg=0.4, scale=1.002):
    """Pixel positions of the holes for a chopper offset (mask origin at the detector
    centre plus the offset), with a small rotation and scale."""
    uv = mask.xy_arcsec(3.319) * 1e3 / PIX
    th = math.radians(rot_deg)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    c = np.array([(SHAPE[1] - 1) / 2.0, (SHAPE[0] - 1) / 2.0])
    p = c + np.asarray(offset_arcsec) * 1e3 / PIX + scale * uv @ R.T
    inside = ((p[:, 0] > 10) & (p[:, 0] < SHAPE[1] - 11) & (p[:, 1] > 10) & (p[:, 1] < SHAPE[0] - 11))
    return mask.hole_id[inside], p[inside]


def make_campaign(out, psf, mask, *, offsets=((0.0, 0.0), (0.05, -0.04), (-0.06, 0.03)), seed=0,
                  flux_e=(2e3, 8e5), hits=(), extra_spots=(), bright=None, bg_dit=None,
                  mask_file=None, campaign_extra="", measure="", det=None, flat=True):
    """Write a small lab campaign (raw frames, background, flat, campaign.toml) into ``out``.

    Spot fluxes are log-uniform in ``flux_e`` (electrons per DIT): SNR ~30 to ~1000.
    ``hits`` are cosmic-ray hits (frame index, x, y, electrons) added to the raw frames.
    Returns (campaign path, truth dict: per frame file -> {hole_id: (x, y, flux_e)}).
    """
    out = Path(out)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    det = det or _detector()
    rng = np.random.default_rng(seed)
    truth = {}
    files = []
    mask_path = out / "mask.ecsv"
    if mask_file is None:
        mask.write(mask_path, overwrite=True)
    else:
        mask_path = Path(mask_file)
    inst = get_instrument(INST)
    lflux = rng.uniform(np.log(flux_e[0]), np.log(flux_e[1]), len(mask))
    if bright is not None:  # (hole_id, flux_e): e.g. a saturated hole
        lflux[mask.hole_id == bright[0]] = np.log(bright[1])
    for k, off in enumerate(offsets):
        ids, p = true_positions(mask, off)
        sel = np.isin(mask.hole_id, ids)
        flux = np.exp(lflux[sel])
        x, y = p[:, 0].copy(), p[:, 1].copy()
        for (ex, ey, ef) in extra_spots:
            x, y, flux = np.append(x, ex), np.append(y, ey), np.append(flux, ef)
        img = np.full(SHAPE, THERMAL_E, dtype=np.float64)
        render_spots(SHAPE, x, y, flux, psf, image=img)
        frame = D.simulate_frame(img.astype(np.float32), det, rng, exptime=DIT, ndit=NDIT)
        for (kk, hx, hy, he) in hits:  # cosmic-ray hits: (frame, x, y, electrons)
            if kk == k:
                frame[hy, hx] += np.float32(he / det.gain_e_per_adu)
        hdr = make_raw_header(inst, date_obs=f"2025-03-17T13:{k:02d}:00", dit=DIT, ndit=NDIT,
                              filter_name="Lp", mask=mask, chopper_offset=off, detector_mode="slow")
        f = out / "raw" / f"grid_{k:02d}.fits"
        fits.PrimaryHDU(frame, hdr).writeto(f, overwrite=True)
        files.append(f)
        truth[f.name] = {int(h): (float(a), float(b), float(c)) for h, a, b, c in
                         zip(ids, p[:, 0], p[:, 1], flux[: len(ids)])}
    bdit = DIT if bg_dit is None else bg_dit
    bg = D.background_frame(np.float32(THERMAL_E * bdit / DIT), det, rng, exptime=bdit, ndit=NDIT,
                            cosmic_rays=False)
    fits.PrimaryHDU(bg, make_raw_header(inst, date_obs="2025-03-17T12:59:00", dit=bdit, ndit=NDIT,
                                        filter_name="Lp", mask=mask, detector_mode="slow",
                                        lamp="off")).writeto(out / "raw" / "background.fits",
                                                             overwrite=True)
    fl = D.flat_frame(det, rng, level_e=4e4, exptime=DIT, ndit=NDIT, cosmic_rays=False)
    fits.PrimaryHDU(fl, make_raw_header(inst, date_obs="2025-03-17T12:00:00", dit=DIT, ndit=NDIT,
                                        filter_name="Lp", mask="open", detector_mode="slow")
                    ).writeto(out / "raw" / "flat.fits", overwrite=True)
    lines = ["[instrument]", 'name = "METIS IMG_LM"', f"detector_shape = [{SHAPE[0]}, {SHAPE[1]}]",
             "", "[[lab]]", 'name = "grid"', f'mask = "{mask_path.as_posix()}"', 'filter = "Lp"',
             'background = "raw/background.fits"']
    if flat:
        lines.append('flat = "raw/flat.fits"')
    lines.append("exposures = [")
    for f, off in zip(files, offsets):
        lines.append(f'  {{ file = "raw/{f.name}", offset_arcsec = [{off[0]}, {off[1]}], '
                     "offset_sigma_mas = 2.0 },")
    lines += ["]", campaign_extra, "", "[measure]", 'output = "measured/"', measure, ""]
    path = out / "campaign.toml"
    path.write_text("\n".join(lines))
    return path, truth


def compare(output, truth, reject=FLAGS_REJECT):
    """(measured - true)/sigma per spot for all frames, and identification errors."""
    chis, wrong, n_ident, n_true = [], 0, 0, 0
    for name, spots in truth.items():
        t = Table.read(Path(output) / (Path(name).stem + ".ecsv"))
        n_true += len(spots)
        for row in t:
            if row["hole_id"] < 0:
                continue
            n_ident += 1
            h = int(row["hole_id"])
            # the true spot nearest to the measurement must be that hole
            near = min(spots, key=lambda k: math.hypot(spots[k][0] - row["x"], spots[k][1] - row["y"]))
            if near != h:
                wrong += 1
                continue
            if row["flags"] & reject:
                continue
            x, y, _ = spots[h]
            chis.append(((row["x"] - x) / row["sigma_x"], (row["y"] - y) / row["sigma_y"],
                         row["snr"]))
    return np.array(chis), wrong, n_ident, n_true


# ------------------------------------------------------------------ the normal path
@pytest.fixture(scope="module")
def measured(tmp_path_factory, psf, mask5):
    d = tmp_path_factory.mktemp("camp")
    path, truth = make_campaign(d, psf, mask5, seed=1,
                                offsets=((0.0, 0.0), (0.05, -0.04), (-0.06, 0.03), (0.11, 0.08),
                                         (-0.1, -0.09), (0.02, 0.12)))
    report = measure_campaign(path)
    return d, path, truth, report


def test_measure_accuracy_and_identification(measured):
    d, path, truth, report = measured
    assert report.ok, report.summary["message"]
    chis, wrong, n_ident, n_true = compare(d / "measured", truth)
    assert wrong == 0 and n_ident == n_true  # every hole found and identified, none wrong
    assert len(chis) > 0.9 * n_true
    snr = chis[:, 2]
    assert snr.min() < 60 and snr.max() > 500  # the SNR range ~30-1000 is covered
    # reported sigmas are honest: rms of (error / sigma) ~ 1 per axis (within 15 %)
    for axis in (0, 1):
        rms = float(np.sqrt(np.mean(chis[:, axis] ** 2)))
        assert 0.85 < rms < 1.15, (axis, rms)
    assert np.all(np.abs(chis[:, :2]) < 6)


def test_measure_products(measured):
    d, path, truth, report = measured
    out = d / "measured"
    t = Table.read(out / "grid_00.ecsv")
    assert t.colnames[: len(OUTPUT_COLUMNS)] == list(OUTPUT_COLUMNS)
    m = t.meta
    assert m["file"].endswith("grid_00.fits") and m["DATE-OBS"].startswith("2025-03-17T13:00")
    assert m["EXPTIME"] == pytest.approx(DIT * NDIT) and m["filter"] == "Lp"
    assert m["offset_arcsec"] == [0.0, 0.0] and m["offset_sigma_mas"] == 2.0
    ident = m["identification"]
    assert ident["n_matched"] == len(truth["grid_00.fits"]) and ident["rms_px"] < 0.5
    assert m["noise_model"]["gain_eff_e_per_adu"] == pytest.approx(2.5 * NDIT)
    assert m["psf"]["kind"] == "diffraction" and m["psf"]["pinhole_mas"] > 7
    assert str(t["x"].unit) == "pix" and str(t["cov_xy"].unit) == "pix2"
    # covariances are positive definite
    ok = np.isfinite(t["sigma_x"])
    assert np.all(np.abs(t["cov_xy"][ok]) < t["sigma_x"][ok] * t["sigma_y"][ok])
    # the reduced image: SCI, DQ, BKGVAR with provenance
    with fits.open(out / "grid_00_reduced.fits") as h:
        assert h[0].header["RAWFILE"] == "grid_00.fits"
        assert h[0].header["BKGFILE"] == "background.fits"
        assert h[0].header["DATE-OBS"].startswith("2025-03-17")
        assert h["SCI"].data.dtype == np.dtype(">f4") and h["SCI"].data.shape == SHAPE
        assert h["DQ"].data.dtype == np.uint8 and np.any(h["DQ"].data)
        assert np.all(h["BKGVAR"].data > 0)
    s = Table.read(out / "summary.ecsv")
    assert list(s["status"]) == ["ok"] * len(truth)
    assert list(s["table"]) == [f"grid_{k:02d}.ecsv" for k in range(len(truth))]
    assert s.meta["n_failed"] == 0 and s.meta["campaign_sha256"]


def test_sigmas_match_cramer_rao(measured, psf):
    """The reported sigma of each spot is its Cramér-Rao bound (same noise model)."""
    d, path, truth, report = measured
    t = Table.read(d / "measured" / "grid_00.ecsv")
    t = t[(t["hole_id"] >= 0) & ((t["flags"] & (FLAGS_REJECT | C.FLAG_MASKED)) == 0)]
    g = t.meta["noise_model"]["gain_eff_e_per_adu"]
    # variance without sources: read noise, background in the frame and in the background
    # frame (both averages of NDIT DITs), divided by the flat^2 (~1)
    bkg_adu = (THERMAL_E + 1.3 * 0.05) / 2.5
    var0 = 2 * (15.0**2 * NDIT / g**2) + 2 * bkg_adu / g
    noise = C.NoiseModel(gain=g, extra_variance=var0)
    crb = C.cramer_rao_bound(psf, np.asarray(t["x"]), np.asarray(t["y"]), np.asarray(t["flux"]),
                             0.0, noise=noise)
    ratio = np.asarray(t["sigma_x"]) / np.sqrt(crb[:, 0, 0])
    assert np.all((ratio > 0.9) & (ratio < 1.1)), ratio


def test_cli_reports_and_refuses_to_overwrite(measured, capsys):
    d, path, truth, report = measured
    before = (d / "measured" / "grid_00.ecsv").read_bytes()
    assert main(["measure", str(path)]) == 1
    assert "file exists" in capsys.readouterr().err
    assert (d / "measured" / "grid_00.ecsv").read_bytes() == before


# ------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad_campaign(tmp_path_factory, psf, mask5):
    """A campaign with a NaN frame, a frame without the mask, a saturated hole, a missing
    file and two good frames."""
    d = tmp_path_factory.mktemp("bad")
    path, truth = make_campaign(d, psf, mask5, seed=2, offsets=((0.0, 0.0), (0.04, 0.02), (0.0, 0.03),
                                                               (0.02, 0.0)),
                                bright=(SATURATED_HOLE, 5e6))
    raw = d / "raw"
    # frame 1: all NaN
    with fits.open(raw / "grid_01.fits", mode="update") as h:
        h[0].data[:] = np.nan
    # frame 2: no mask (the background frame's pixels with this frame's header)
    with fits.open(raw / "grid_02.fits", mode="update") as h:
        h[0].data[:] = fits.getdata(raw / "background.fits")
    # a missing exposure between them
    text = path.read_text().replace(
        '  { file = "raw/grid_03.fits"',
        '  { file = "raw/grid_99.fits", offset_arcsec = [0.1, 0.0] },\n  { file = "raw/grid_03.fits"')
    path.write_text(text)
    return d, path, truth


SATURATED_HOLE = 12


def test_bad_frames_are_reported_and_the_others_measured(bad_campaign, capsys):
    d, path, truth = bad_campaign
    assert main(["measure", str(path)]) == 1
    printed = capsys.readouterr().out
    s = Table.read(d / "measured" / "summary.ecsv")
    status = {Path(f).name: (st, msg) for f, st, msg in zip(s["file"], s["status"], s["message"])}
    assert status["grid_00.fits"][0] == "ok" and status["grid_03.fits"][0] == "ok"
    assert status["grid_01.fits"][0] == "failed" and "grid_01.fits" in status["grid_01.fits"][1]
    assert "no valid pixel" in status["grid_01.fits"][1]
    assert status["grid_02.fits"][0] == "failed" and "grid_02.fits" in status["grid_02.fits"][1]
    assert "no mask" in status["grid_02.fits"][1] or "identif" in status["grid_02.fits"][1].lower()
    assert status["grid_99.fits"][0] == "failed" and "not found" in status["grid_99.fits"][1]
    assert "FAILED" in printed and "grid_99.fits" in printed
    assert (d / "measured" / "grid_00.ecsv").exists() and (d / "measured" / "grid_03.ecsv").exists()
    assert not (d / "measured" / "grid_01.ecsv").exists()
    for name in ("grid_00.fits", "grid_03.fits"):
        t = Table.read(d / "measured" / name.replace(".fits", ".ecsv"))
        # the whole grid is identified, nothing else
        assert set(t["hole_id"].tolist()) == set(truth[name])
        # the saturated hole is measured (from its wings), flagged and not counted as good
        row = t[t["hole_id"] == SATURATED_HOLE][0]
        x, y, _ = truth[name][SATURATED_HOLE]
        assert row["flags"] & C.FLAG_SATURATED and row["flags"] & FLAGS_REJECT
        assert np.hypot(row["x"] - x, row["y"] - y) < 0.1
        assert s["n_good"][list(s["file"]).index(str(d / "raw" / name))] == len(truth[name]) - 1


def test_wrong_mask_table_fails_every_frame(tmp_path, psf, mask5):
    rng = np.random.default_rng(5)
    wrong = mask_from_arrays(rng.uniform(-3, 3, 40), rng.uniform(-3, 3, 40), 25.0,
                             name="random", mask_scale=3.319)
    wrong.write(tmp_path / "wrong.ecsv")
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0), (0.03, 0.0)),
                                mask_file=tmp_path / "wrong.ecsv")
    report = measure_campaign(path)
    assert report.n_failed == 2
    for msg, f in zip(report.summary["message"], report.summary["file"]):
        assert Path(f).name in msg and "mask" in msg
    assert not list((tmp_path / "measured").glob("grid_*.ecsv"))
    assert (tmp_path / "measured" / "summary.ecsv").exists()


def test_misspelt_key_is_a_clear_error(tmp_path, psf, mask5, capsys):
    path, _ = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0),))
    path.write_text(path.read_text().replace('background = "raw', 'bakground = "raw'))
    with pytest.raises(CampaignError, match="line 9: key 'lab.0..bakground': unknown key"):
        measure_campaign(path)
    assert main(["measure", str(path)]) == 1
    err = capsys.readouterr().err
    assert "bakground" in err and "line" in err
    assert not (tmp_path / "measured").exists()


def test_overwrite_replaces_products(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0),))
    assert main(["measure", str(path)]) == 0
    out = tmp_path / "measured"
    first = (out / "grid_00.ecsv").read_bytes()
    assert main(["measure", str(path), "--overwrite"]) == 0
    again = (out / "grid_00.ecsv").read_bytes()
    assert again != first  # rewritten (its creation time differs) ...
    a, b = Table.read(out / "grid_00.ecsv"), Table.read(first.decode(), format="ascii.ecsv")
    assert np.array_equal(a["x"], b["x"])  # ... with the same measurement


# ------------------------------------------------------------------ source tables
def _good_table(truth_file, n=10):
    ids = sorted(truth_file)[:n]
    t = Table()
    t["hole_id"] = ids
    t["x"] = [truth_file[h][0] for h in ids]
    t["y"] = [truth_file[h][1] for h in ids]
    t["sigma_x"] = np.full(n, 0.01)
    t["sigma_y"] = np.full(n, 0.012)
    t["cov_xy"] = np.full(n, 1e-5)
    return t


def test_source_tables_as_exposures(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0),))
    good = _good_table(truth["grid_00.fits"])
    good.write(tmp_path / "mine.ecsv")
    bad = _good_table(truth["grid_00.fits"])
    del bad["sigma_y"]
    bad.write(tmp_path / "broken.ecsv")
    text = path.read_text().replace(
        "},\n]", '},\n  { file = "mine.ecsv", offset_arcsec = [0.0, 0.0] },\n'
                  '  { file = "broken.ecsv" },\n]', 1)
    path.write_text(text)
    report = measure_campaign(path)
    s = report.summary
    row = {Path(f).name: (st, m) for f, st, m in zip(s["file"], s["status"], s["message"])}
    assert row["grid_00.fits"][0] == "ok" and row["mine.ecsv"][0] == "ok"
    assert row["broken.ecsv"][0] == "failed"
    assert "broken.ecsv" in row["broken.ecsv"][1] and "'sigma_y'" in row["broken.ecsv"][1]
    passed = Table.read(tmp_path / "measured" / "mine.ecsv")
    assert passed.colnames[: len(OUTPUT_COLUMNS)] == list(OUTPUT_COLUMNS)
    assert np.allclose(passed["x"], good["x"]) and np.all(passed["flags"] == 0)
    assert passed.meta["offset_arcsec"] == [0.0, 0.0]
    assert report.n_failed == 1


@pytest.mark.parametrize("change, match", [
    (lambda t: t.rename_column("x", "xc"), "missing column 'x'"),
    (lambda t: setattr(t["x"], "unit", "mm"), "column 'x' has unit 'mm'"),
    (lambda t: t["hole_id"].__setitem__(1, t["hole_id"][0]), "duplicate hole ids"),
    (lambda t: t["hole_id"].__setitem__(0, 9999), "not holes of mask"),
    (lambda t: t["sigma_x"].__setitem__(2, -1.0), "column 'sigma_x' must be finite and > 0"),
    (lambda t: t["cov_xy"].__setitem__(3, 1.0), "column 'cov_xy'"),
    (lambda t: t["y"].__setitem__(4, np.nan), "column 'y' is not finite"),
])
def test_source_table_validation(tmp_path, mask5, change, match):
    ids, p = true_positions(mask5, (0.0, 0.0))
    t = _good_table({int(h): (x, y, 1.0) for h, (x, y) in zip(ids, p)})
    change(t)
    t.write(tmp_path / "t.ecsv")
    with pytest.raises(SourceTableError, match=match) as exc:
        read_source_table(tmp_path / "t.ecsv", mask5)
    assert "t.ecsv" in str(exc.value)


def test_source_table_defaults():
    t = Table({"hole_id": [1, 2, -1], "x": [1.0, 2.0, np.nan], "y": [3.0, 4.0, np.nan],
               "sigma_x": [0.1, 0.1, np.nan], "sigma_y": [0.1, 0.2, np.nan]})
    v = validate_source_table(t, "x.ecsv")
    assert list(v["cov_xy"]) == [0, 0, 0] and list(v["flags"]) == [0, 0, 0]
    assert v.meta["filled_columns"] == ["cov_xy", "flux", "snr", "flags"]


# ------------------------------------------------------------------ options
def test_processes_give_the_same_tables(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0), (0.04, 0.02), (0.0, 0.03)))
    r1 = measure_campaign(path)
    t1 = [Table.read(tmp_path / "measured" / f"grid_{k:02d}.ecsv") for k in range(3)]
    r2 = measure_campaign(path, processes=2, overwrite=True)
    assert r1.ok and r2.ok
    for k in range(3):
        t2 = Table.read(tmp_path / "measured" / f"grid_{k:02d}.ecsv")
        assert np.array_equal(t1[k]["hole_id"], t2["hole_id"])
        assert np.allclose(t1[k]["x"], t2["x"], rtol=0, atol=1e-9, equal_nan=True)


def test_background_scaled_to_the_frame_dit(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0),), bg_dit=2.6)
    report = measure_campaign(path)
    assert report.ok
    red = fits.getdata(tmp_path / "measured" / "grid_00_reduced.fits", "SCI")
    dq = fits.getdata(tmp_path / "measured" / "grid_00_reduced.fits", "DQ")
    assert fits.getheader(tmp_path / "measured" / "grid_00_reduced.fits")["BKGSCALE"] == 0.5
    # away from the spots the reduced frame is at zero (the thermal background is 1200 ADU)
    corner = red[10:60, 10:60][dq[10:60, 10:60] == 0]
    assert abs(np.median(corner)) < 3.0


def test_without_flat_the_sigmas_stay_honest(tmp_path, psf, mask5):
    """No flat frame: the pixel-to-pixel gain pattern (1 % rms) is estimated from the
    background frame's excess scatter and enters the variance of the spots."""
    path, truth = make_campaign(tmp_path, psf, mask5, seed=9, flat=False,
                                offsets=((0.0, 0.0), (0.05, -0.04), (-0.06, 0.03), (0.11, 0.08)))
    report = measure_campaign(path)
    assert report.ok
    chis, wrong, n_ident, n_true = compare(tmp_path / "measured", truth)
    assert wrong == 0 and n_ident == n_true
    # (slightly conservative on these small frames: the 64 px blocks of the background
    # level follow the large-scale flat pattern only roughly)
    assert 0.75 < np.sqrt(np.mean(chis[:, :2] ** 2)) < 1.2


def test_a_missing_hole_is_reported(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, offsets=((0.0, 0.0),), bright=(14, 1e-3))
    report = measure_campaign(path)
    assert report.ok and "ids [14]" in report.summary["message"][0]
    t = Table.read(tmp_path / "measured" / "grid_00.ecsv")
    assert t.meta["identification"]["missing_on_valid_pixels"] == [14]
    assert 14 not in t["hole_id"]


def test_cosmic_rays_are_masked(tmp_path, psf, mask5):
    """Hits on spot cores and on the background are masked; the centroids stay unbiased."""
    ids, p = true_positions(mask5, (0.0, 0.0))
    rng = np.random.default_rng(8)
    hits = [(0, int(round(x + dx)), int(round(y + dy)), e) for (x, y), dx, dy, e in
            zip(p[:12], rng.integers(-2, 3, 12), rng.integers(-2, 3, 12),
                rng.uniform(3e3, 3e4, 12))]  # on or next to the cores of 12 spots
    hits += [(0, int(x), int(y), 5e3) for x, y in rng.uniform(20, 300, (10, 2))]
    hits += [(0, 50, 60, 2e4), (0, 51, 60, 1e4)]  # a two-pixel track
    path, truth = make_campaign(tmp_path, psf, mask5, seed=4, hits=hits, offsets=((0.0, 0.0),))
    report = measure_campaign(path)
    assert report.ok
    dq = fits.getdata(tmp_path / "measured" / "grid_00_reduced.fits", "DQ")
    cr = (dq & 8) != 0
    for _, x, y, e in hits:
        assert cr[y, x] or dq[y, x] != 0, (x, y, e)
    # few false hits: cosmic-ray pixels that are not injected
    injected = np.zeros_like(cr)
    for _, x, y, _ in hits:
        injected[y - 1:y + 2, x - 1:x + 2] = True
    assert np.count_nonzero(cr & ~injected) <= 3
    chis, wrong, n_ident, n_true = compare(tmp_path / "measured", truth)
    assert wrong == 0 and n_ident == n_true
    assert np.all(np.abs(chis[:, :2]) < 5)


@pytest.mark.slow
def test_epsf_mode(tmp_path, psf, mask5):
    path, truth = make_campaign(tmp_path, psf, mask5, seed=6, flux_e=(3e4, 3e6),
                                offsets=((0.0, 0.0), (0.05, -0.04), (-0.06, 0.03), (0.11, 0.08)))
    report = measure_campaign(path, psf="epsf")
    assert report.ok, report.summary["message"]
    t = Table.read(tmp_path / "measured" / "grid_00.ecsv")
    assert t.meta["psf"]["kind"] == "epsf"
    chis, wrong, n_ident, n_true = compare(tmp_path / "measured", truth)
    assert wrong == 0
    rms = np.sqrt(np.mean(chis[:, :2] ** 2))
    assert 0.8 < rms < 1.3


# ------------------------------------------------------------------ end to end with the simulator
def test_end_to_end_with_simulate_lab(tmp_path):
    from astrocal.sim.lab import simulate_lab

    res = simulate_lab(tmp_path / "sim", seed=11, n_exposures=3, detector_shape=(1024, 1024),
                       max_offset_arcsec=1.0)
    assert main(["measure", str(res.campaign), "--processes", "2"]) == 0
    out = tmp_path / "sim" / "measured"
    truth = Table.read(res.truth_files["spots"])
    chis = []
    for k, frame in enumerate(res.frames):
        t = Table.read(out / (Path(frame).stem + ".ecsv"))
        tt = truth[truth["exposure"] == k]
        txy = np.column_stack([tt["x"], tt["y"]])
        seen = tt["on_detector"] & tt["sensitive"]
        ident = t[t["hole_id"] >= 0]
        for row in ident:
            j = int(np.argmin(np.hypot(txy[:, 0] - row["x"], txy[:, 1] - row["y"])))
            assert int(tt["hole_id"][j]) == int(row["hole_id"])  # 100 % correct
            if seen[j] and not row["flags"] & FLAGS_REJECT:
                chis += [(row["x"] - tt["x"][j]) / row["sigma_x"], (row["y"] - tt["y"][j]) / row["sigma_y"]]
        # every spot on the sensitive area is found and identified
        assert set(tt["hole_id"][seen].tolist()) <= set(ident["hole_id"].tolist())
    chis = np.array(chis)
    assert len(chis) > 40
    assert 0.8 < np.sqrt(np.mean(chis**2)) < 1.2
