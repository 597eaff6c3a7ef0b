"""The campaign reference (docs/campaign.md) stays true: its examples load, its error
examples fail with the message shown, and it documents every key the loader knows."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from astrocal import campaign as campaign_module
from astrocal.campaign import CampaignError, load_campaign

PAGE = Path(__file__).resolve().parents[1] / "docs" / "campaign.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
JOBS = {"yearly lab-mask fit": ("lab",), "on-sky cross-check": ("sky",),
        "joint lab + sky fit": ("lab", "sky")}


def blocks():
    """``[(language, text)]`` of the page's fenced code blocks, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(PAGE.read_text())]


def toml_blocks():
    """``[(title, text, expected error or None)]``: every TOML block of the page; a block
    whose first line is ``# error: ...`` is followed by a ``text`` block (the message)."""
    out, items = [], blocks()
    for k, (lang, text) in enumerate(items):
        if lang != "toml":
            continue
        first = text.splitlines()[0]
        m = re.match(r"#\s*(example|error):\s*(.+)", first)
        assert m, f"docs/campaign.md: a TOML block must start with '# example: ...' or " \
                  f"'# error: ...', not {first!r}"
        expected = None
        if m.group(1) == "error":
            assert k + 1 < len(items) and items[k + 1][0] == "text", \
                f"docs/campaign.md: error example {m.group(2)!r} needs a ```text block after it"
            expected = items[k + 1][1].strip()
        out.append((m.group(2).strip(), text, expected))
    return out


def referenced_files(data):
    """Input files a campaign names (relative paths as written)."""
    files = []
    for ds in data.get("lab", []):
        files += [ds[k] for k in ("mask", "background", "flat") if k in ds]
        files += [e["file"] for e in ds.get("exposures", []) if isinstance(e, dict) and "file" in e]
    for ds in data.get("sky", []):
        files += [ds[k] for k in ("catalog", "background", "flat") if k in ds]
        files += [e[k] for e in ds.get("exposures", []) if isinstance(e, dict) for k in ("file", "header")
                  if k in e]
    files += [data.get("earth", {})[k] for k in ("iers_file", "leap_second_file") if k in data.get("earth", {})]
    lms = data.get("lms", {})
    files += [lms["mask"]] if "mask" in lms else []
    for f in lms.get("frames", []):
        files += [f[k] for k in ("file", "background") if k in f]
    return files


def write_campaign(tmp_path, text, missing=()):
    """The campaign in ``tmp_path/campaigns/job/`` with an empty dummy for every file it
    names (except ``missing``); returns its path."""
    directory = tmp_path / "campaigns" / "job"
    directory.mkdir(parents=True)
    path = directory / "campaign.toml"
    path.write_text(text)
    for name in referenced_files(tomllib.loads(text)):
        if name in missing:
            continue
        f = directory / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.touch()
    return path


EXAMPLES = [(t, x) for t, x, e in toml_blocks() if e is None]
ERRORS = [(t, x, e) for t, x, e in toml_blocks() if e is not None]


def test_page_has_one_example_per_job_and_error_examples():
    titles = [t for t, _ in EXAMPLES]
    for job in JOBS:
        assert job in titles, f"docs/campaign.md has no '# example: {job}' block"
    assert len(ERRORS) >= 5


@pytest.mark.parametrize("title,text", EXAMPLES, ids=[t for t, _ in EXAMPLES])
def test_example_loads(tmp_path, title, text):
    path = write_campaign(tmp_path, text)
    c = load_campaign(path)
    data = tomllib.loads(text)
    # what was written is what was loaded
    assert [d.name for d in c.lab] == [d.get("name", f"lab{i}") for i, d in enumerate(data.get("lab", []))]
    assert [d.name for d in c.sky] == [d.get("name", f"sky{i}") for i, d in enumerate(data.get("sky", []))]
    for ds, given in zip(c.lab + c.sky, data.get("lab", []) + data.get("sky", [])):
        assert len(ds.exposures) == len(given["exposures"])
        for e, g in zip(ds.exposures, given["exposures"]):
            assert e.file == (path.parent / g["file"]).resolve()
    if title in JOBS:
        kinds = tuple(k for k in ("lab", "sky") if getattr(c, k))
        assert kinds == JOBS[title], f"example {title!r} has datasets {kinds}"
    if title == "joint lab + sky fit":  # one filter: lab and sky share the field
        assert {d.filter for d in c.lab} == {d.filter for d in c.sky} == {"Lp"}


def test_example_values_are_converted(tmp_path):
    """The units written as strings in the examples arrive in the key's unit."""
    text = dict(EXAMPLES)["yearly lab-mask fit"]
    c = load_campaign(write_campaign(tmp_path, text))
    grid = c.lab[0]
    assert grid.exposures[8].offset_arcsec == pytest.approx((1.6427, 0.5999))
    assert grid.exposures[9].offset_sigma_mas == pytest.approx(2.0)
    assert c.instrument.mask_scale_mm_per_arcsec == pytest.approx(3.319)
    assert c.fit.seed == 2027 and c.fit.output == c.directory / "out/"
    sky = load_campaign(write_campaign(tmp_path / "sky", dict(EXAMPLES)["on-sky cross-check"])).sky[0]
    assert sky.exposures[2].extra["humidity"] == pytest.approx(0.17)
    assert sky.exposures[2].extra["ra"] == pytest.approx(266.416792, abs=1e-6)
    assert sky.exposures[3].extra["temperature_c"] == pytest.approx(7.2)
    assert sky.exposures[5].extra == {}


@pytest.mark.parametrize("title,text,expected", ERRORS, ids=[t for t, _, _ in ERRORS])
def test_error_example_message(tmp_path, title, text, expected):
    missing = re.findall(r"not found: (\S+)", expected)
    path = write_campaign(tmp_path, text, missing=missing)
    with pytest.raises(CampaignError) as info:
        load_campaign(path)
    message = str(info.value).replace(f"{path.parent.resolve()}/", "")
    assert message == expected


def test_page_documents_every_key():
    """Every key the loader accepts appears on the page as `key`."""
    page = PAGE.read_text()
    keys = set()
    for name in ("INSTRUMENT_KEYS", "LAB_KEYS", "LAB_EXPOSURE_KEYS", "SKY_KEYS",
                 "SKY_EXPOSURE_KEYS", "MEASURE_KEYS", "FIT_KEYS", "EARTH_KEYS", "TOP_KEYS"):
        keys |= set(getattr(campaign_module, name))
    undocumented = sorted(k for k in keys if f"`{k}`" not in page and f"`[{k}]`" not in page
                          and f"`[[{k}]]`" not in page)
    assert not undocumented, f"docs/campaign.md does not document {undocumented}"


JOB_PAGES = sorted((PAGE.parent / "jobs").glob("*.md"))


def job_examples():
    """``[(page, title, text)]``: the ``# example:`` TOML blocks of the job pages."""
    out = []
    for page in JOB_PAGES:
        for m in FENCE.finditer(page.read_text()):
            first = m.group(2).splitlines()[0] if m.group(2) else ""
            title = re.match(r"#\s*example:\s*(.+)", first)
            if m.group(1) == "toml" and title:
                out.append((page.name, title.group(1).strip(), m.group(2)))
    return out


def test_job_pages_show_another_imager_at_another_site():
    titles = [t for _, t, _ in job_examples()]
    assert "Keck NIRC2 star lists at Mauna Kea" in titles


@pytest.mark.parametrize("page,title,text", job_examples(), ids=[t for _, t, _ in job_examples()])
def test_job_page_example_loads(tmp_path, page, title, text):
    c = load_campaign(write_campaign(tmp_path, text))
    if title == "Keck NIRC2 star lists at Mauna Kea":
        assert c.instrument.preset is None and c.instrument.mask_scale_mm_per_arcsec is None
        site = c.sky[0].site
        assert site.name == "keck" and abs(site.latitude_deg - 19.83) < 0.01 and site.height_m > 4000
        assert c.sky[0].exposures[0].extra["pressure_hpa"] == pytest.approx(617.0)


def test_space_examples_describe_observatories_in_space(tmp_path):
    """The HST and JWST examples load as observatories in space: no atmosphere keys, the
    velocity aberration and the header files as given."""
    hst = load_campaign(write_campaign(tmp_path / "hst", dict(EXAMPLES)["HST star lists against Gaia"]))
    jwst = load_campaign(write_campaign(tmp_path / "jwst", dict(EXAMPLES)["JWST source catalogues against Gaia"]))
    for c, name in ((hst, "hst"), (jwst, "jwst")):
        site = c.sky[0].site
        assert site.is_space and site.name == name and site.as_dict()["space"] is True
    e = hst.sky[0].exposures
    assert e[0].extra["header"] == str((hst.directory / "raw/iabc01x1q_flt.fits").resolve())
    assert e[2].extra["velocity_aberration_scale"] == pytest.approx(1.0000213)
    assert jwst.sky[0].exposures[1].extra["observer_velocity_km_s"] == pytest.approx([-21.93, 24.17, 10.48])


@pytest.mark.parametrize("key,value", [("pressure_hpa", "0"), ("zenith_distance_deg", "30"),
                                       ("rotator_angle_deg", "10"), ("refraction", "false")])
def test_space_refuses_atmosphere_and_horizon_keys(tmp_path, key, value):
    text = dict(EXAMPLES)["HST star lists against Gaia"].replace("velocity_aberration_scale = 1.0000213",
                                                                  f"{key} = {value}")
    with pytest.raises(CampaignError, match=rf"sky\[0\]\.exposures\[2\]\.{key}': the dataset's site is in space"):
        load_campaign(write_campaign(tmp_path, text))


def test_ground_refuses_the_space_aberration_keys(tmp_path):
    text = dict(EXAMPLES)["HST star lists against Gaia"].replace('site = "hst"', 'site = "paranal"')
    with pytest.raises(CampaignError, match=r"velocity_aberration_scale': for an observatory in space only"):
        load_campaign(write_campaign(tmp_path, text))
