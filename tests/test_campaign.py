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
    # names that become path components: nothing may be written outside the output directory
    ('filter = "L"', 'filter = "../../../../x"', r"lab\[0\].filter': '../../../../x' names files and directories", 7),
    ('filter = "L"', 'filter = "L"\nname = "../x"', r"lab\[0\].name': '../x' names files", 8),
    ('filter = "L"', 'filter = "a/b"', r"lab\[0\].filter': 'a/b' names files", 7),
    ('filter = "L"', 'filter = ".hidden"', r"lab\[0\].filter': '.hidden' names files", 7),
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


# ---------------------------------------------------------------------- [[sky]] datasets
SKY = textwrap.dedent("""\
    [instrument]
    name = "METIS IMG_LM"

    [[sky]]
    name = "gc"
    catalog = "cat.ecsv"
    site = "armazones"
    filter = "Lp"
    x_col = 0
    y_col = "ycen"
    flux_col = 2
    sigma_x_col = 3
    sigma_y_col = 4
    one_based = true
    band = "Lp"
    strehl = 0.8
    background = "raw/bg.fits"
    exposures = [
      { file = "raw/s0.fits", time = "2026-05-01T04:00:00", ra = 266.4168, dec = -29.0078, position_angle_deg = 35.0, parity = -1 },
      { file = "raw/s1.txt", time = 2026-05-01T04:10:00, ra = "17h45m40.03s", dec = "-29d00m28.08s", rotator_angle_deg = "0.5 rad", pressure_hpa = "71.2 kPa", temperature_c = "281.15 K", humidity = "15 %", wavelength_um = "3800 nm", zenith_distance_deg = 51.0 },
      { file = "raw/s2.fits" },
    ]

    [fit]
    output = "out/"
    """)


@pytest.fixture
def sky_dir(tmp_path):
    (tmp_path / "raw").mkdir()
    for name in ("raw/s0.fits", "raw/s1.txt", "raw/s2.fits", "raw/bg.fits", "cat.ecsv"):
        (tmp_path / name).write_text("x")
    (tmp_path / "c.toml").write_text(SKY)
    return tmp_path


def test_sky_campaign_values(sky_dir):
    c = load_campaign(sky_dir / "c.toml")
    (ds,) = c.sky
    assert ds.catalog == sky_dir / "cat.ecsv" and ds.catalog_given == "cat.ecsv"
    assert (ds.x_col, ds.y_col, ds.flux_col, ds.sigma_x_col, ds.sigma_y_col) == (0, "ycen", 2, 3, 4)
    assert ds.one_based is True and ds.band == "Lp" and ds.strehl == 0.8 and ds.filter == "Lp"
    assert ds.background == sky_dir / "raw" / "bg.fits" and ds.flat is None
    e0, e1, e2 = (e.extra for e in ds.exposures)
    assert e0 == {"time": "2026-05-01T04:00:00.000", "ra": 266.4168, "dec": -29.0078,
                  "position_angle_deg": 35.0, "parity": -1}
    assert e1["time"] == "2026-05-01T04:10:00.000"  # a TOML datetime: UTC
    assert e1["ra"] == pytest.approx(266.416792, abs=1e-6) and e1["dec"] == pytest.approx(-29.0078)
    assert e1["rotator_angle_deg"] == pytest.approx(28.6478898) and "position_angle_deg" not in e1
    assert e1["pressure_hpa"] == pytest.approx(712.0) and e1["temperature_c"] == pytest.approx(8.0)
    assert e1["humidity"] == pytest.approx(0.15) and e1["wavelength_um"] == pytest.approx(3.8)
    assert e1["zenith_distance_deg"] == 51.0
    assert e2 == {}


@pytest.mark.parametrize("old, new, key, message", [
    ("position_angle_deg = 35.0, parity", "position_angle_deg = 35.0, rotator_angle_deg = 3.0, parity",
     r"sky\[0\].exposures\[0\].rotator_angle_deg", "at most one of position_angle_deg and rotator_angle_deg"),
    ("position_angle_deg = 35.0, parity", "derotator_deg = 35.0, parity",
     r"sky\[0\].exposures\[0\].derotator_deg", "ambiguous: a derotator's mechanical angle"),
    ("parity = -1", "parity = 2", r"sky\[0\].exposures\[0\].parity", r"must be \+1 or -1"),
    ('time = "2026-05-01T04:00:00"', 'time = "last night"', r"sky\[0\].exposures\[0\].time",
     "cannot parse 'last night' as a time"),
    ('time = "2026-05-01T04:00:00"', "time = 2026.33", r"sky\[0\].exposures\[0\].time",
     "an epoch without a clock time: refraction needs the field's zenith_distance_deg and "
     "parallactic_angle_deg"),
    ('time = "2026-05-01T04:00:00"', "time = 2026-05-01", r"sky\[0\].exposures\[0\].time",
     "an epoch without a clock time"),
    ('time = "2026-05-01T04:00:00"', 'time = "J2026.33", refraction = "no"', r"sky\[0\].exposures\[0\].refraction",
     "expected true or false"),
    ('time = "2026-05-01T04:00:00"', "time = 2026.33, refraction = false, pressure_hpa = 700",
     r"sky\[0\].exposures\[0\].refraction", "contradicts pressure_hpa = 700"),
    ("position_angle_deg = 35.0, parity", "position_angle_deg = 35.0, parallactic_angle_deg = 10.0, parity",
     r"sky\[0\].exposures\[0\].parallactic_angle_deg", "needs the zenith distance"),
    ("ra = 266.4168", "ra = 400.0", r"sky\[0\].exposures\[0\].ra", r"must be in 0..360 deg"),
    ('dec = "-29d00m28.08s"', 'dec = "south"', r"sky\[0\].exposures\[1\].dec", "cannot read 'south' as an angle"),
    ("ra = 266.4168, dec = -29.0078, ", "ra = 266.4168, ", r"sky\[0\].exposures\[0\].dec",
     "the pointing needs both ra and dec"),
    ('humidity = "15 %"', "humidity = 15", r"sky\[0\].exposures\[1\].humidity",
     r"a fraction 0..1, got 15 \(per cent\?"),
    ('pressure_hpa = "71.2 kPa"', 'pressure_hpa = "712 K"', r"sky\[0\].exposures\[1\].pressure_hpa",
     "wrong unit"),
    ('temperature_c = "281.15 K"', 'temperature_c = "warm"', r"sky\[0\].exposures\[1\].temperature_c",
     "cannot read 'warm' as a temperature"),
    ('wavelength_um = "3800 nm"', "wavelength_um = -3.8", r"sky\[0\].exposures\[1\].wavelength_um",
     "must be positive"),
    ("zenith_distance_deg = 51.0", "zenith_distance_deg = 95.0",
     r"sky\[0\].exposures\[1\].zenith_distance_deg", r"must be in 0..90 deg"),
    ("x_col = 0", "x_col = -1", r"sky\[0\].x_col", "0-based and >= 0"),
    ("x_col = 0", "x_col = true", r"sky\[0\].x_col", "expected a column name or a 0-based column index"),
    ("sigma_y_col = 4\n", "", r"sky\[0\].sigma_x_col", r"need both sigma_x_col and sigma_y_col \(sigma_y_col is"),
    ("one_based = true", 'one_based = "yes"', r"sky\[0\].one_based", "expected true or false"),
    ("strehl = 0.8", "strehl = 1.5", r"sky\[0\].strehl", r"must be in \(0, 1\]"),
    ('site = "armazones"', 'site = "mars"', r"sky\[0\].site", "unknown site 'mars'"),
    ('background = "raw/bg.fits"', 'background = "raw/nobg.fits"', r"sky\[0\].background", "file not found"),
    ("band = ", "bands = ", r"sky\[0\].bands", r"unknown key \(did you mean 'band'"),
    ('name = "gc"', 'name = "../../gc"', r"sky\[0\].name", r"'../../gc' names files and directories"),
    ('filter = "Lp"', 'filter = "Lp/../../x"', r"sky\[0\].filter", r"names files and directories"),
])
def test_sky_errors_name_file_key_and_line(sky_dir, old, new, key, message):
    assert old in SKY
    (sky_dir / "bad.toml").write_text(SKY.replace(old, new, 1))
    with pytest.raises(CampaignError, match=rf"bad.toml, line \d+: key '{key}': .*{message}"):
        load_campaign(sky_dir / "bad.toml")


def test_sky_error_lines(sky_dir):
    (sky_dir / "bad.toml").write_text(SKY.replace("parity = -1", "parity = 0"))
    with pytest.raises(CampaignError, match=r"line 19: key 'sky\[0\].exposures\[0\].parity'"):
        load_campaign(sky_dir / "bad.toml")
    (sky_dir / "bad.toml").write_text(SKY.replace("humidity = \"15 %\"", "humidity = 2"))
    with pytest.raises(CampaignError, match=r"line 20: key 'sky\[0\].exposures\[1\].humidity'"):
        load_campaign(sky_dir / "bad.toml")
    (sky_dir / "bad.toml").write_text(SKY.replace("strehl = 0.8", "strehl = 0"))
    with pytest.raises(CampaignError, match=r"line 16: key 'sky\[0\].strehl'"):
        load_campaign(sky_dir / "bad.toml")


# ---------------------------------------------------------------------- [[sky]] site
@pytest.mark.parametrize("site, name", [('"keck"', "keck"), ('"W. M. Keck Observatory"', "keck"),
                                        ('"Mauna Kea"', "keck"), ('"VLT"', "paranal"), ('"LBT"', "mount graham"),
                                        ('"Cerro Pachón"', "cerro pachon"), ('"gtc"', "roque de los muchachos")])
def test_sky_site_by_name_or_alias(sky_dir, site, name):
    from astrocal.sky.sites import SITES

    (sky_dir / "s.toml").write_text(SKY.replace('site = "armazones"', f"site = {site}"))
    c = load_campaign(sky_dir / "s.toml")
    assert c.sky[0].site is SITES[name]


def test_keck_campaign_loads(sky_dir):
    (sky_dir / "keck.toml").write_text(SKY.replace('site = "armazones"', 'site = "keck"'))
    (sky,) = load_campaign(sky_dir / "keck.toml").sky
    s = sky.site
    assert (s.name, s.latitude_deg, s.longitude_deg, s.height_m) == ("keck", pytest.approx(19.828333),
                                                                      pytest.approx(-155.478333), 4160.0)
    assert 600 < s.pressure_hpa < 610 and "astropy-data" in s.provenance["position"]
    # the default is Armazones
    (sky_dir / "default.toml").write_text(SKY.replace('site = "armazones"\n', ""))
    assert load_campaign(sky_dir / "default.toml").sky[0].site.name == "armazones"


def test_sky_site_given_as_a_position(sky_dir):
    """A custom site: an inline table or a [sky.site] sub-table, with or without weather; it
    reaches the dataset as a Site (what the measure stage and the fit use)."""
    inline = ('site = { name = "mk-summit", latitude_deg = 19.8, longitude_deg = "-155d30m", '
              'height_m = "4.145 km" }')
    (sky_dir / "p.toml").write_text(SKY.replace('site = "armazones"', inline))
    s = load_campaign(sky_dir / "p.toml").sky[0].site
    assert (s.name, s.latitude_deg, s.longitude_deg) == ("mk-summit", 19.8, -155.5)
    assert s.height_m == pytest.approx(4145.0, abs=0.1)
    assert s.pressure_hpa == pytest.approx(604.8) and s.temperature_c == pytest.approx(-11.9)
    assert s.provenance["position"] == "campaign p.toml" and s.provenance["pressure"].startswith("default: ISA")
    sub = SKY.replace('site = "armazones"\n', "").replace(
        "[fit]", '[sky.site]\nlatitude_deg = 19.8\nlongitude_deg = 204.5\nheight_m = 4145\npressure_hpa = "615 hPa"\n'
                 'temperature_c = "273.15 K"\nhumidity = "20 %"\n\n[fit]')
    (sky_dir / "q.toml").write_text(sub)
    s = load_campaign(sky_dir / "q.toml").sky[0].site
    assert (s.name, s.longitude_deg, s.pressure_hpa, s.relative_humidity) == ("custom", -155.5, 615.0, 0.2)
    assert s.temperature_c == pytest.approx(0.0) and s.provenance["pressure"] == "campaign q.toml"
    # a known site with its typical weather replaced
    (sky_dir / "r.toml").write_text(SKY.replace('site = "armazones"', 'site = { name = "keck", pressure_hpa = 615 }'))
    s = load_campaign(sky_dir / "r.toml").sky[0].site
    assert (s.name, s.height_m, s.pressure_hpa, s.temperature_c) == ("keck", 4160.0, 615.0, 0.0)


@pytest.mark.parametrize("new, key, message", [
    ("site = { latitude_deg = 95.0, longitude_deg = -155.5, height_m = 4145 }", r"sky\[0\].site.latitude_deg",
     r"must be in -90..90 deg, got 95"),
    ("site = { latitude_deg = 19.8, longitude_deg = 400, height_m = 4145 }", r"sky\[0\].site.longitude_deg",
     r"must be in -180..360 deg \(east\), got 400"),
    ("site = { latitude_deg = 19.8, longitude_deg = -155.5, height_m = 8000 }", r"sky\[0\].site.height_m",
     r"must be in -500..6000 m, got 8000"),
    ('site = { latitude_deg = 19.8, longitude_deg = -155.5, height_m = "4 kg" }', r"sky\[0\].site.height_m",
     r"wrong unit"),
    ("site = { latitude_deg = 19.8, longitude_deg = -155.5 }", r"sky\[0\].site.height_m",
     r"missing: a site's position needs latitude_deg, longitude_deg and height_m"),
    ("site = { latitude = 19.8, longitude_deg = -155.5, height_m = 4145 }", r"sky\[0\].site.latitude",
     r"unknown key \(did you mean 'latitude_deg'\?\)"),
    ("site = { latitude_deg = 19.8, longitude_deg = -155.5, height_m = 4145, humidity = 20 }",
     r"sky\[0\].site.humidity", r"fraction 0..1, got 20 \(per cent\?"),
    ("site = { latitude_deg = 19.8, longitude_deg = -155.5, height_m = 4145, pressure_hpa = 2000 }",
     r"sky\[0\].site.pressure_hpa", r"pressure_hpa must be in 0..1200 hPa"),
    ('site = { name = "mauna kee", pressure_hpa = 615 }', r"sky\[0\].site.name",
     r"unknown site 'mauna kee' \(did you mean 'mauna kea' \(keck\)\?\); known sites: armazones, calar alto"),
    ("site = { pressure_hpa = 615 }", r"sky\[0\].site.latitude_deg", r"gives a position"),
    ('site = "mauna kee"', r"sky\[0\].site", r"unknown site 'mauna kee' \(did you mean 'mauna kea' \(keck\)\?\); "
     r"known sites: armazones, .*; or give the position: latitude_deg, longitude_deg, height_m"),
    ("site = 42", r"sky\[0\].site", r"expected a site name"),
])
def test_sky_site_errors_name_the_key(sky_dir, new, key, message):
    (sky_dir / "bad.toml").write_text(SKY.replace('site = "armazones"', new))
    with pytest.raises(CampaignError, match=rf"bad.toml, line 7: key '{key}': .*{message}"):
        load_campaign(sky_dir / "bad.toml")


def test_sky_site_subtable_error_lines(sky_dir):
    text = SKY.replace('site = "armazones"\n', "").replace(
        "[fit]", '[sky.site]\nname = "mk"\nlatitude_deg = 95\nlongitude_deg = -155.5\nheight_m = 4145\n\n[fit]')
    (sky_dir / "bad.toml").write_text(text)
    line = text.splitlines().index("latitude_deg = 95") + 1
    with pytest.raises(CampaignError, match=rf"line {line}: key 'sky\[0\].site.latitude_deg': must be in -90..90"):
        load_campaign(sky_dir / "bad.toml")
    (sky_dir / "bad.toml").write_text(text.replace('name = "mk"', "name = 3").replace("= 95", "= 19.8"))
    with pytest.raises(CampaignError, match=rf"line {line - 1}: key 'sky\[0\].site.name': expected a string"):
        load_campaign(sky_dir / "bad.toml")


def test_missing_sky_exposure_kept_on_request(sky_dir):
    (sky_dir / "raw" / "s2.fits").unlink()
    with pytest.raises(CampaignError, match=r"sky\[0\].exposures\[2\].file': file not found"):
        load_campaign(sky_dir / "c.toml")
    c = load_campaign(sky_dir / "c.toml", missing_exposures="keep")
    assert not c.sky[0].exposures[2].file.exists()


# ---------------------------------------------------------------------- [fit] flexure
def test_flexure_defaults(sky_dir):
    fit = load_campaign(sky_dir / "c.toml").fit
    assert fit.flexure_degree == 2 and fit.flexure_functions == ("1", "cos_z", "sin_z")
    # half the field of view of the METIS IMG_LM detector: 2048 px x 5.47 mas / 2
    assert fit.flexure_radius_arcsec == pytest.approx(5.60128)
    basis = fit.flexure
    assert (basis.degree, basis.functions, basis.radius_arcsec) == (2, ("1", "cos_z", "sin_z"),
                                                                   pytest.approx(5.60128))


def test_flexure_keys(sky_dir):
    text = SKY + 'flexure_degree = 3\nflexure_functions = ["1", "tan_z"]\nflexure_radius_arcsec = "4000 mas"\n'
    (sky_dir / "f.toml").write_text(text)
    fit = load_campaign(sky_dir / "f.toml").fit
    assert fit.flexure_degree == 3 and fit.flexure_functions == ("1", "tan_z")
    assert fit.flexure_radius_arcsec == pytest.approx(4.0) and fit.flexure.n_params == 2 * fit.flexure.n_field


@pytest.mark.parametrize("line, key, message", [
    ("flexure_degree = 6", "flexure_degree", r"must be an integer 1..5, got 6"),
    ('flexure_degree = "two"', "flexure_degree", "expected an integer"),
    ("flexure_degree = 0", "flexure_degree", "must be >= 1"),
    ('flexure_functions = ["1", "cos_zz"]', "flexure_functions", r"unknown flexure function\(s\) \['cos_zz'\]"),
    ('flexure_functions = ["1", "1"]', "flexure_functions", "flexure functions repeat"),
    ("flexure_functions = []", "flexure_functions", "expected a non-empty list of names"),
    ('flexure_functions = "cos_z"', "flexure_functions", "expected a non-empty list of names"),
    ("flexure_radius_arcsec = 0", "flexure_radius_arcsec", "must be positive"),
    ('flexure_radius_arcsec = "5 kg"', "flexure_radius_arcsec", "wrong unit"),
    ("flexure_order = 2", "flexure_order", r"unknown key \(did you mean 'flexure_degree'"),
])
def test_flexure_errors(sky_dir, line, key, message):
    (sky_dir / "bad.toml").write_text(SKY + line + "\n")
    with pytest.raises(CampaignError, match=rf"bad.toml, line 26: key 'fit.{key}': .*{message}"):
        load_campaign(sky_dir / "bad.toml")


# ------------------------------------------------------- [fit] field_prior, degree_choice
@pytest.mark.parametrize("key,default,other,allowed", [
    ("field_prior", "curved", "per_degree", "'curved', 'decay', 'per_degree', 'fixed'"),
    ("degree_choice", "median", "best", "'median', 'best'")])
def test_fit_choice_keys(sky_dir, key, default, other, allowed):
    assert getattr(load_campaign(sky_dir / "c.toml").fit, key) == default
    (sky_dir / "p.toml").write_text(SKY + f'{key} = "{other}"\n')
    assert getattr(load_campaign(sky_dir / "p.toml").fit, key) == other
    (sky_dir / "bad.toml").write_text(SKY + f'{key} = "wide"\n')
    with pytest.raises(CampaignError, match=rf"bad.toml, line 26: key 'fit.{key}': must be one of "
                                            rf"{allowed}, got 'wide'"):
        load_campaign(sky_dir / "bad.toml")


def test_sky_only_campaign_needs_no_mask_keys(sky_dir):
    """Any imager: a sky-only campaign without a preset gives no mask scale; a lab dataset
    without it is an error that says the lab needs it."""
    text = SKY.replace('name = "METIS IMG_LM"', 'name = "My camera"\ndetector_shape = [512, 512]\n'
                                                'pixel_scale_mas = 12.0')
    (sky_dir / "own.toml").write_text(text)
    c = load_campaign(sky_dir / "own.toml")
    assert c.instrument.mask_scale_mm_per_arcsec is None and c.instrument.pixel_scale_mas == 12.0
    assert c.instrument.detector_shape == (512, 512) and not c.lab
    (sky_dir / "mask.ecsv").write_text("x")
    lab = text + '\n[[lab]]\nmask = "mask.ecsv"\nfilter = "K"\nexposures = [ { file = "raw/s2.fits" } ]\n'
    (sky_dir / "lab.toml").write_text(lab)
    with pytest.raises(CampaignError, match=r"instrument.mask_scale_mm_per_arcsec': missing \(no preset "
                                            r"instrument supplies it and the campaign's \[\[lab\]\] datasets"):
        load_campaign(sky_dir / "lab.toml")


@pytest.mark.parametrize("time, keys", [
    ("1995.439", ", zenith_distance_deg = 35.0, parallactic_angle_deg = -60.0"),
    ('"J1995.439"', ", refraction = false"),
    ("1995-06-10", ", pressure_hpa = 0"),
    ('"1995-06-10"', ", zenith_distance_deg = 35.0, parallactic_angle_deg = 120.0"),
])
def test_an_epoch_without_clock_time(sky_dir, time, keys):
    """An epoch (decimal year or date) is a time without a clock time: it loads with a
    zenith distance and parallactic angle, or with refraction off."""
    text = SKY.replace('time = "2026-05-01T04:00:00"', f"time = {time}{keys}")
    (sky_dir / "epoch.toml").write_text(text)
    e = load_campaign(sky_dir / "epoch.toml").sky[0].exposures[0].extra
    assert e["clock_time"] is False and e["time"].startswith("1995-06-")
    assert ("refraction" in keys) == (e.get("refraction") is False)


def test_package_keeps_the_old_module_api():
    """``astrocal.campaign`` became a package (issue 20): the names users imported from the
    old module are still its names, and the error keeps its public home."""
    import astrocal.campaign as campaign

    old = {"Campaign", "CampaignError", "EarthSettings", "Exposure", "FitSettings", "InstrumentSpec",
           "LabDataset", "LmsDataset", "LmsFrameSpec", "MeasureSettings", "SkyDataset", "load_campaign",
           "LMS_FRAME_KINDS", "PATH_NAME", "INSTRUMENT_KEYS", "LAB_KEYS", "SKY_KEYS", "TOP_KEYS", "FIT_KEYS"}
    assert old <= set(campaign.__all__)
    assert all(hasattr(campaign, name) for name in campaign.__all__)
    assert campaign.CampaignError.__module__ == "astrocal.campaign"
