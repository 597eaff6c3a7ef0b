import textwrap

import pytest

from astrocal.campaign import CampaignError, load_campaign

GOOD = textwrap.dedent("""\
    [instrument]
    name = "METIS IMG_LM"
    mask_scale_mm_per_arcsec = 3.319

    [[lab]]
    mask = "mask.ecsv"
    filter = "L"
    background = "raw/bg.fits"
    exposures = [
      { file = "raw/g0.fits", offset_arcsec = [0.0, 0.0], offset_sigma_mas = 2.0 },
      { file = "raw/g1.fits", offset_arcsec = ["350 mas", -0.12], offset_sigma_mas = "2 mas" },
    ]

    [fit]
    degree = "auto"
    output = "out/"
    """)


@pytest.fixture
def campaign_dir(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("raw/g0.fits", "raw/g1.fits", "raw/bg.fits", "mask.ecsv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "c.toml").write_text(GOOD)
    return tmp_path


def test_good_campaign(campaign_dir):
    c = load_campaign(campaign_dir / "c.toml")
    assert c.instrument.preset == "metis-lm"
    assert c.instrument.detector_shape == (2048, 2048)  # from the preset
    assert c.instrument.pixel_scale_mas == pytest.approx(5.47)
    (lab,) = c.lab
    assert lab.filter == "L" and lab.flat is None
    assert lab.background == campaign_dir / "raw" / "bg.fits"
    assert lab.exposures[1].offset_arcsec == pytest.approx((0.35, -0.12))
    assert lab.exposures[1].offset_sigma_mas == pytest.approx(2.0)
    assert c.fit.degree == "auto" and c.fit.output == campaign_dir / "out"
    assert len(c.sha256) == 64


@pytest.mark.parametrize("old, new, message, line", [
    ('offset_sigma_mas = "2 mas"', 'offset_sigma_mas = "2 kg"',
     r"lab\[0\].exposures\[1\].offset_sigma_mas': wrong unit", 11),
    ("raw/g1.fits", "raw/g9.fits", r"lab\[0\].exposures\[1\].file': file not found: .*g9.fits", 11),
    ('filter = "L"', 'filtre = "L"', r"lab\[0\].filtre': unknown key \(did you mean 'filter'", 7),
    ('degree = "auto"', "degree = 13", r"fit.degree': must be 'auto' or 1..12", 15),
    ('mask = "mask.ecsv"', 'mask = "nomask.ecsv"', r"lab\[0\].mask': file not found", 6),
    ("mask_scale_mm_per_arcsec = 3.319", 'mask_scale_mm_per_arcsec = "3.319 mm"',
     r"instrument.mask_scale_mm_per_arcsec': wrong unit", 3),
    ('name = "METIS IMG_LM"', 'name = "Other imager"',
     r"instrument.detector_shape': missing", None),
])
def test_errors_name_file_key_and_line(campaign_dir, old, new, message, line):
    bad = campaign_dir / "bad.toml"
    bad.write_text(GOOD.replace(old, new))
    with pytest.raises(CampaignError, match=message) as exc:
        load_campaign(bad)
    assert "bad.toml" in str(exc.value)
    if line is not None:
        assert f"line {line}:" in str(exc.value)


def test_dataset_without_exposures(campaign_dir):
    text = GOOD.split("exposures = [")[0] + "exposures = []\n"
    (campaign_dir / "bad.toml").write_text(text)
    with pytest.raises(CampaignError, match=r"line 9: key 'lab\[0\].exposures': the dataset has no exposures"):
        load_campaign(campaign_dir / "bad.toml")


def test_no_dataset_and_bad_toml(campaign_dir):
    (campaign_dir / "empty.toml").write_text('[instrument]\nname = "METIS IMG_LM"\n')
    with pytest.raises(CampaignError, match="no \\[\\[lab\\]\\] and no \\[\\[sky\\]\\]"):
        load_campaign(campaign_dir / "empty.toml")
    (campaign_dir / "broken.toml").write_text("[instrument\nname=")
    with pytest.raises(CampaignError, match="broken.toml: not valid TOML"):
        load_campaign(campaign_dir / "broken.toml")
    with pytest.raises(CampaignError, match="not found"):
        load_campaign(campaign_dir / "missing.toml")
