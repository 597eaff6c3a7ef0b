"""Any imager's headers and flats (issue 18): a keyword map per instrument with the
campaign's mapping and defaults, normalised flats used as relative gain maps, and the
warning for an implausible noise model.

The frames are written here with numpy and astropy.io.fits only (not astrocal's
simulators): obscured-Airy spots (pixel-integrated by 5 x 5 sub-sampling) at the holes of
a jittered grid, a thermal background, a pixel-response pattern, Poisson and read noise,
in a small detector (200 x 200 px) of a non-METIS imager whose headers use non-standard
keyword names (``ITIME``, ``EGAIN``, ``RDN_E``, ``FILTER2``, ``DATE_BEG``).
"""
import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy.special import j1

from astrocal.campaign import CampaignError, load_campaign
from astrocal.cli import main
from astrocal.image.headers import HeaderError, HeaderRules
from astrocal.image.frame import dataset_calibration

SHAPE = (200, 200)
PIX_MAS = 5.0           # pixel scale, mas/px
MASK_SCALE = 1.0        # mm per arcsec at the mask: 1 mm = 200 px
GAIN, RON = 2.0, 10.0   # e-/ADU, e-
BKG_E = 2000.0          # thermal background, e- per pixel per exposure
FLUX_E = 2.0e5          # total e- per spot
EXPTIME = 4.0           # s
LAMBDA_UM, D_M, OBSC = 3.8, 39.146, 11.0 / 39.146
HEADER_MAP = """[instrument.header_keywords]
exptime = "ITIME"
gain = "EGAIN"
read_noise = "RDN_E"
filter = "FILTER2"
date_obs = "DATE_BEG"
"""


def _airy(r_mas):
    """Obscured-Airy intensity (peak 1) at radius r (mas)."""
    x = np.pi * D_M * (r_mas / 206264806.2) / (LAMBDA_UM * 1e-6)
    x = np.where(x == 0, 1e-12, x)
    amp = (2 * j1(x) / x - OBSC**2 * 2 * j1(OBSC * x) / (OBSC * x)) / (1 - OBSC**2)
    return amp * amp


def _render(xy, flux, half=15, sub=5):
    """Pixel-integrated obscured-Airy spots of total flux ``flux`` (each normalised over its
    (2 half + 1)^2 stamp) at 0-based positions ``xy``."""
    img = np.zeros(SHAPE)
    off = (np.arange(sub) + 0.5) / sub - 0.5
    for (x, y), f in zip(xy, flux):
        ix, iy = int(round(x)), int(round(y))
        px = np.arange(ix - half, ix + half + 1)
        py = np.arange(iy - half, iy + half + 1)
        gx = (px[:, None] + off[None, :]).ravel() - x
        gy = (py[:, None] + off[None, :]).ravel() - y
        r = np.hypot(gx[None, :], gy[:, None]) * PIX_MAS
        st = _airy(r).reshape(py.size, sub, px.size, sub).sum(axis=(1, 3))
        img[py[0]:py[-1] + 1, px[0]:px[-1] + 1] += f * st / st.sum()
    return img


def _header(gain=GAIN, names=True):
    h = fits.Header()
    if names:
        h["ITIME"] = (EXPTIME, "[s] exposure time")
        h["EGAIN"] = (gain, "[e-/ADU]")
        h["RDN_E"] = (RON, "[e-]")
        h["FILTER2"] = "L"
        h["DATE_BEG"] = "2025-06-01T10:00:00"
    return h


def write_dataset(out, n_exp=4, seed=1, header_gain=GAIN):
    """A mask table, ``n_exp`` raw frames, a background frame, a flat in counts and the
    same flat normalised to its median; returns the truth (hole ids, positions per
    exposure, offsets)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    # jittered 5 x 5 grid, pitch 28 px, +-3 px jitter (unique pattern), ids 1..25
    g = (np.arange(5) - 2) * 28.0
    gx, gy = np.meshgrid(g, g)
    hx = gx.ravel() + rng.uniform(-3, 3, gx.size)
    hy = gy.ravel() + rng.uniform(-3, 3, gy.size)
    mm_per_px = MASK_SCALE * PIX_MAS / 1e3
    mt = Table({"hole_id": np.arange(1, hx.size + 1), "x_mm": hx * mm_per_px, "y_mm": hy * mm_per_px,
                "diameter_um": np.full(hx.size, 5.0)})
    mt["x_mm"].unit = mt["y_mm"].unit = "mm"
    mt["diameter_um"].unit = "um"
    mt.meta.update({"name": "test grid", "short_name": "test_grid", "mask_scale_mm_per_arcsec": MASK_SCALE})
    mt.write(out / "mask.ecsv", format="ascii.ecsv", overwrite=True)

    response = (1.0 + 0.03 * rng.standard_normal(SHAPE)).clip(0.8, 1.2)  # pixel response
    cx, cy = (SHAPE[1] - 1) / 2.0, (SHAPE[0] - 1) / 2.0
    offsets = [(0.0, 0.0)] + [tuple(rng.uniform(-0.02, 0.02, 2).round(4)) for _ in range(n_exp - 1)]
    truth = []
    for k, (ox, oy) in enumerate(offsets):
        xy = np.column_stack([cx + hx + ox * 1e3 / PIX_MAS, cy + hy + oy * 1e3 / PIX_MAS])
        e = (_render(xy, np.full(len(xy), FLUX_E)) + BKG_E) * response
        adu = (rng.poisson(e) + rng.normal(0, RON, SHAPE)) / GAIN
        fits.PrimaryHDU(adu.astype(np.float32), header=_header(header_gain)).writeto(
            out / f"frame_{k:02d}.fits", overwrite=True)
        truth.append(xy)
    bkg = (rng.poisson(BKG_E * response) + rng.normal(0, RON, SHAPE)) / GAIN
    fits.PrimaryHDU(bkg.astype(np.float32), header=_header(header_gain)).writeto(out / "background.fits",
                                                                                  overwrite=True)
    lamp = 3.0e4  # e- per pixel: a lamp flat in counts, median 1.5e4 ADU
    flat = (rng.poisson(lamp * response) + rng.normal(0, RON, SHAPE)) / GAIN
    fits.PrimaryHDU(flat.astype(np.float32), header=_header(header_gain)).writeto(out / "flat_counts.fits",
                                                                                   overwrite=True)
    # the same flat normalised to its median: no exposure keywords at all
    fits.PrimaryHDU((flat / np.median(flat)).astype(np.float32)).writeto(out / "flat_norm.fits",
                                                                         overwrite=True)
    return {"hole_id": np.asarray(mt["hole_id"]), "xy": truth, "offsets": offsets}


def write_campaign(out, truth, *, flat="flat_counts.fits", mapping=HEADER_MAP, extra_instrument="",
                   extra_lab="", output="measured"):
    exps = ",\n".join(f'  {{ file = "frame_{k:02d}.fits", offset_arcsec = [{ox}, {oy}] }}'
                      for k, (ox, oy) in enumerate(truth["offsets"]))
    text = f"""[instrument]
name = "LabCam"
detector_shape = [{SHAPE[0]}, {SHAPE[1]}]
pixel_scale_mas = {PIX_MAS}
mask_scale_mm_per_arcsec = {MASK_SCALE}
{extra_instrument}
{mapping}
[[lab]]
name = "grid"
mask = "mask.ecsv"
filter = "L"
background = "background.fits"
flat = "{flat}"
{extra_lab}
exposures = [
{exps}
]

[measure]
output = "{output}/"
"""
    path = out / f"{output}.toml"
    path.write_text(text)
    return path


def _errors(out, output, truth):
    """Per exposure: (x, y errors against truth, sigma_x, sigma_y) of the good spots."""
    rows = []
    for k, xy in enumerate(truth["xy"]):
        t = Table.read(out / output / f"frame_{k:02d}.ecsv")
        good = (np.asarray(t["hole_id"]) > 0) & (np.asarray(t["flags"]) & 0x1F5 == 0)
        t = t[good]
        idx = np.asarray(t["hole_id"]) - 1
        rows.append(np.column_stack([np.asarray(t["x"]) - xy[idx, 0], np.asarray(t["y"]) - xy[idx, 1],
                                     np.asarray(t["sigma_x"]), np.asarray(t["sigma_y"]),
                                     np.asarray(t["hole_id"])]))
    return rows


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("labcam")
    truth = write_dataset(out)
    return out, truth


@pytest.fixture(scope="module")
def measured(lab):
    """The campaign measured with the counts flat and with the normalised flat."""
    out, truth = lab
    for name, flat in (("counts", "flat_counts.fits"), ("norm", "flat_norm.fits")):
        assert main(["measure", str(write_campaign(out, truth, flat=flat, output=name))]) == 0
    return out, truth


def _messages(out, output):
    return [str(m) for m in Table.read(out / output / "summary.ecsv")["message"]]


def test_user_keyword_map_is_used_end_to_end(measured):
    """Non-standard header names, mapped in the campaign, are read from raw, background
    and flat frames; the sigmas agree with the scatter of the centroids against the truth."""
    out, truth = measured
    summary = Table.read(out / "counts" / "summary.ecsv")
    assert list(summary["status"]) == ["ok"] * 4
    assert list(summary["n_good"]) == [25] * 4
    t = Table.read(out / "counts" / "frame_00.ecsv")
    assert t.meta["header_values"]["gain"] == "header 'EGAIN'"
    assert t.meta["header_values"]["exptime"] == "header 'ITIME'"
    assert t.meta["header_values"]["read_noise"] == "header 'RDN_E'"
    assert t.meta["filter_header"] == "L" and t.meta["DATE-OBS"].startswith("2025-06-01T10:00:00")
    assert t.meta["detector"]["gain_e_per_adu"] == GAIN
    h = fits.getheader(out / "counts" / "frame_00_reduced.fits")
    assert h["BKGFILE"] == "background.fits" and h["FLATFILE"] == "flat_counts.fits"
    e = np.vstack(_errors(out, "counts", truth))
    ratio = np.sqrt(np.mean((e[:, :2] / e[:, 2:4]) ** 2, axis=0))
    assert np.all((ratio > 0.8) & (ratio < 1.2)), ratio  # measured: 1.00, 0.96
    assert not any("implausible" in m for m in _messages(out, "counts") + _messages(out, "norm"))


def test_normalised_and_counts_flats_give_the_same_centroids(measured):
    """A flat normalised to its median is used as a relative gain map: the same centroids
    and sigmas within a few per cent as with the flat in counts (whose own noise is the
    only difference), and sigmas that agree with the scatter against the truth."""
    out, truth = measured
    for a, b in zip(_errors(out, "counts", truth), _errors(out, "norm", truth)):
        assert np.array_equal(a[:, 4], b[:, 4])
        d = (a[:, :2] - b[:, :2]) / a[:, 2:4]  # the weights differ by the counts flat's noise
        assert np.sqrt(np.mean(d**2)) < 0.06 and np.max(np.abs(d)) < 0.2, (np.sqrt(np.mean(d**2)), np.abs(d).max())
        ratio = b[:, 2:4] / a[:, 2:4]
        assert 0.93 < ratio.min() and ratio.max() <= 1.0 + 1e-6, (ratio.min(), ratio.max())
    e = np.vstack(_errors(out, "norm", truth))
    ratio = np.sqrt(np.mean((e[:, :2] / e[:, 2:4]) ** 2, axis=0))
    assert np.all((ratio > 0.8) & (ratio < 1.2)), ratio


def test_flat_normalisation_detected_or_stated(lab):
    out, _ = lab
    rules = HeaderRules.for_instrument(None, {"exptime": "ITIME", "gain": "EGAIN", "read_noise": "RDN_E"})
    counts = dataset_calibration(out / "background.fits", out / "flat_counts.fits", rules)
    norm = dataset_calibration(out / "background.fits", out / "flat_norm.fits", rules)
    assert counts.meta["flat_normalised"] is False and counts.flat_relvar is not None
    assert norm.meta["flat_normalised"] is True and norm.flat_relvar is None
    assert "detected" in norm.meta["flat_normalisation"]
    assert np.allclose(counts.flat, norm.flat, rtol=1e-5)
    # stated: a counts flat declared normalised is a gain map (its noise not modelled)
    stated = dataset_calibration(out / "background.fits", out / "flat_counts.fits", rules, flat_normalised=True)
    assert stated.meta["flat_normalised"] is True and stated.flat_relvar is None
    assert "stated" in stated.meta["flat_normalisation"]
    # stated in counts, a normalised flat's header is read: it has no exposure keywords
    with pytest.raises(HeaderError, match=r"flat_norm\.fits: no exposure time: .*'ITIME' \(exptime "
                                          r"\(campaign instrument\.header_keywords\.exptime\)\).*"
                                          r"set \[instrument\] exptime_s"):
        dataset_calibration(out / "background.fits", out / "flat_norm.fits", rules, flat_normalised=False)
    # a flat whose median is neither ~1 nor counts is refused with the key to set
    with fits.open(out / "flat_norm.fits") as f:
        fits.PrimaryHDU(f[0].data * 20).writeto(out / "flat_20.fits", overwrite=True)
    with pytest.raises(ValueError, match=r"flat_20\.fits: flat median 20: .*flat_normalised = true or false"):
        dataset_calibration(out / "background.fits", out / "flat_20.fits", rules)


def test_normalised_flat_read_as_counts_is_warned(lab, capsys):
    """The bug of issue 18: a normalised flat taken for counts (here stated so, its header
    giving a readout) turns its read noise into a huge flat noise on every spot; the
    measure stage warns of an implausible noise model, naming the frame and the cause."""
    out, truth = lab
    with fits.open(out / "flat_norm.fits") as f:
        fits.PrimaryHDU(f[0].data, header=_header()).writeto(out / "flat_norm_h.fits", overwrite=True)
    path = write_campaign(out, truth, flat="flat_norm_h.fits", extra_lab="flat_normalised = false",
                          output="wrongflat")
    assert main(["measure", str(path)]) == 0
    messages = _messages(out, "wrongflat")
    summary = Table.read(out / "wrongflat" / "summary.ecsv")
    assert np.median(summary["median_sigma_px"]) > 0.1  # ~20 x the true 0.007 px
    for k, m in enumerate(messages):
        assert f"frame_{k:02d}.fits: implausible noise model: on the spots' pixels" in m
        assert "a normalised flat read as counts (set the dataset's flat_normalised = true)" in m
    # the positions between exposures scatter less than stated, although these weights
    # (the flat noise drowns the cores) spread them too (measured 2.1-2.6 x)
    meta = Table.read(out / "wrongflat" / "summary.ecsv").meta["scatter_check"]["grid"]
    assert sorted(meta) == ["frame_01", "frame_02", "frame_03"]
    assert all(v["stated_over_scatter"] > 1.5 and v["n_common"] == 25 for v in meta.values())


def test_a_wrong_gain_is_warned(lab):
    """A gain 20 x too small (from the campaign: the mapped keyword is not in the headers)
    overstates the spots' Poisson noise: warned, naming where the gain came from."""
    out, truth = lab
    mapping = HEADER_MAP.replace('gain = "EGAIN"', 'gain = "GAINX"')
    path = write_campaign(out, truth, mapping=mapping, extra_instrument="gain_e_per_adu = 0.1",
                          output="wronggain")
    assert main(["measure", str(path)]) == 0
    for k, m in enumerate(_messages(out, "wronggain")):
        assert f"frame_{k:02d}.fits: implausible noise model" in m
        assert "a wrong gain (0.1 e-/ADU, campaign instrument.gain_e_per_adu" in m
    meta = Table.read(out / "wronggain" / "summary.ecsv").meta["scatter_check"]["grid"]
    for k in (1, 2, 3):
        m = _messages(out, "wronggain")[k]
        ratio = meta[f"frame_{k:02d}"]["stated_over_scatter"]
        assert ratio > 2.0, ratio
        assert (f"frame_{k:02d}.fits: implausible noise model: the stated sigmas are {ratio:.3g} x the "
                "scatter of the 25 spots' positions against exposure frame_00") in m
    t = Table.read(out / "wronggain" / "frame_00.ecsv")
    assert t.meta["header_values"]["gain"] == "campaign instrument.gain_e_per_adu"
    assert t.meta["spot_noise_check"]["core_chi2"] < 0.1


def test_a_missing_keyword_names_the_file_and_the_campaign_key(lab, capsys):
    out, truth = lab
    mapping = HEADER_MAP.replace('gain = "EGAIN"', 'gain = "GAINX"')
    path = write_campaign(out, truth, mapping=mapping, output="nogain")
    assert main(["measure", str(path)]) == 1
    for m in _messages(out, "nogain"):
        assert ("background.fits: no detector gain: none of the keywords 'GAINX' (gain (campaign "
                "instrument.header_keywords.gain)) in the header and no instrument preset; name the "
                'header keyword with [instrument.header_keywords] gain = "<keyword>", or set '
                "[instrument] gain_e_per_adu") in m
    # a raw frame read with the generic map: the keywords looked for and the keys to set
    h = _header(names=False)
    h["GAIN"] = 2.0
    with pytest.raises(HeaderError, match=r"^raw_07\.fits: no exposure time: none of the keywords 'EXPTIME', "
                                          r"'EXPOSURE' \(exptime\) and none of the keywords 'DIT' \(dit\) .*"
                                          r"exptime = \"<keyword>\" \(or dit = \"<keyword>\"\), or set "
                                          r"\[instrument\] exptime_s$"):
        HeaderRules.for_instrument(None).read(h, "raw_07.fits")
    # supplied by the campaign instead
    meta = HeaderRules.for_instrument(None, exptime_s=3.0, read_noise_e=5.0).read(h, "raw_07.fits")
    assert meta.exptime.value == 3.0 and meta.dit.value == 3.0 and meta.ndit == 1
    assert meta.read_noise_e == 5.0 and meta.provenance["read_noise"] == "campaign instrument.read_noise_e"
    assert meta.gain_e_per_adu == 2.0 and meta.provenance["gain"] == "header 'GAIN'"


def test_instrument_maps_and_overrides():
    """One keyword map per preset (the METIS ESO names), the generic set as fallback, the
    campaign's mapping replacing entries; an unknown entry lists the valid ones."""
    from astrocal.instruments import GENERIC_HEADER_KEYWORDS, get_instrument, header_keywords
    from astrocal.image.headers import make_raw_header

    lm = get_instrument("metis-lm").header_keywords
    assert lm.gain == ("HIERARCH ESO DET1 CHIP GAIN",) and lm.dit[0] == "HIERARCH ESO DET DIT"
    merged = header_keywords("metis-lm")
    assert merged.gain == ("HIERARCH ESO DET1 CHIP GAIN", "GAIN")
    assert header_keywords("metis-lm", {"gain": "EGAIN"}).gain == ("EGAIN",)
    assert header_keywords(None) == GENERIC_HEADER_KEYWORDS
    with pytest.raises(KeyError, match="unknown header entry 'gian'; valid entries: date_obs, exptime, dit"):
        header_keywords(None, {"gian": "EGAIN"})
    # a METIS header: the ESO keywords (readout mode, chopper offset) are found
    h = make_raw_header("metis-lm", date_obs="2026-01-01T00:00:00", dit=2.0, ndit=3,
                        detector_mode="slow", chopper_offset=[0.1, -0.2])
    meta = HeaderRules.for_instrument("metis-lm").read(h, "metis.fits")
    assert meta.gain_e_per_adu == 2.5 and meta.read_noise_e == 15.0 and meta.ndit == 3
    assert meta.dit.value == 2.0 and meta.exptime.value == 6.0 and meta.detector_mode == "slow"
    assert meta.chopper_offset.value.tolist() == [0.1, -0.2]
    assert meta.provenance["gain"] == "header 'HIERARCH ESO DET1 CHIP GAIN'"
    # without the gain keyword: the readout mode of the header's DET MODE
    del h["HIERARCH ESO DET1 CHIP GAIN"]
    meta = HeaderRules.for_instrument("metis-lm").read(h, "metis.fits")
    assert meta.gain_e_per_adu == 2.5 and meta.provenance["gain"] == "readout mode 'slow' of metis-lm"


def test_campaign_header_keys_are_validated(lab):
    out, truth = lab
    path = write_campaign(out, truth, mapping=HEADER_MAP + 'exptim = "X"\n', output="badmap")
    with pytest.raises(CampaignError, match=r"key 'instrument\.header_keywords\.exptim': unknown key "
                                            r"\(did you mean 'exptime'\?\); allowed: chopper_x, chopper_y, date_obs"):
        load_campaign(path)
    path = write_campaign(out, truth, mapping=HEADER_MAP + "gain = 3\n".replace("gain", "ndit"), output="badval")
    with pytest.raises(CampaignError, match=r"'instrument\.header_keywords\.ndit': expected a FITS keyword name"):
        load_campaign(path)
    path = write_campaign(out, truth, extra_instrument='gain_e_per_adu = "-2 electron / adu"', output="badgain")
    with pytest.raises(CampaignError, match=r"'instrument\.gain_e_per_adu': must be positive"):
        load_campaign(path)
    path = write_campaign(out, truth, extra_lab='flat_normalised = "yes"', output="badnorm")
    with pytest.raises(CampaignError, match=r"'lab\[0\]\.flat_normalised': expected true or false"):
        load_campaign(path)
    camp = load_campaign(write_campaign(out, truth, extra_instrument="read_noise_e = 12\nexptime_s = \"2 s\"",
                                        extra_lab="flat_normalised = true", output="goodkeys"))
    assert camp.instrument.header_keywords["exptime"] == "ITIME"
    assert camp.instrument.read_noise_e == 12.0 and camp.instrument.exptime_s == 2.0
    assert camp.lab[0].flat_normalised is True


def test_scatter_check_compares_sigmas_with_the_scatter_between_exposures():
    """Positions that scatter by 0.01 px between exposures (an offset and a rotation
    removed): honest sigmas give a ratio ~1, sigmas 10 x too large a ratio ~10."""
    from astrocal.stages.measure import scatter_check

    rng = np.random.default_rng(3)
    xy = rng.uniform(10, 190, (40, 2))
    def table(k, sigma):
        c, s = math.cos(1e-3 * k), math.sin(1e-3 * k)
        moved = xy @ np.array([[c, -s], [s, c]]).T + [0.3 * k, -0.2 * k]
        t = Table({"hole_id": np.arange(40), "x": moved[:, 0] + 0.01 * rng.standard_normal(40),
                   "y": moved[:, 1] + 0.01 * rng.standard_normal(40), "sigma_x": np.full(40, sigma),
                   "sigma_y": np.full(40, sigma), "flags": np.zeros(40, np.int64)})
        return t
    honest = scatter_check({f"e{k}": table(k, 0.01) for k in range(3)})
    assert all(0.75 < v["stated_over_scatter"] < 1.3 for v in honest.values()), honest
    inflated = scatter_check({f"e{k}": table(k, 0.1) for k in range(3)})
    assert all(7.5 < v["stated_over_scatter"] < 13 for v in inflated.values()), inflated
    assert scatter_check({"e0": table(0, 0.01)}) == {}
