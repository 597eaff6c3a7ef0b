"""Fixtures of the report tests: a small fitted lab result, an earlier result with a known
change, a small sky-only result (no lab gauge) with its simulated truth and an earlier
copy with known changes, and a headless Chromium driven by selenium.

Chromium: found on the PATH (``chromium``/``chromium-browser``/``google-chrome`` and
``chromedriver``); when missing and this is a Debian-like system where we are root, the
Debian packages ``chromium`` and ``chromium-driver`` are installed (``apt-get update`` then
``apt-get install -y``) once, under a file lock so that pytest-xdist workers starting
together do not run apt at the same time. Otherwise the tests that need it are skipped
with the reason.
"""
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import pytest

from astrocal.cli import main
from astrocal.sim.points_campaign import write_points_campaign
from astrocal.sim.sky_points import write_sky_points_campaign
from astrocal.sim.sky_truth import default_sky_field

#: injected changes of the earlier result (see ``older_result``)
SCALE_CHANGE = 4e-4
KICK_ARCSEC = 2e-3  # added to the Legendre coefficient cu[2,0] of the earlier result

#: injected changes of the earlier sky-only result (see ``older_sky_result``): a scale change
#: that a sky-only fit cannot measure, and a kick of the non-linear term cu[2,0]
SKY_SCALE_CHANGE = 3e-3
SKY_KICK_ARCSEC = 5e-3

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCK = Path(tempfile.gettempdir()) / "astrocal-test-chromium-install.lock"


def shared_dir(tmp_path_factory, name, make):
    """A directory made once per test run by ``make(path)``, shared by pytest-xdist
    workers (the first one makes it under a file lock, the others wait and reuse it)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base directory, common to the workers
    target = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (target / ".done").exists():
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                make(target)
                (target / ".done").touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


@pytest.fixture(scope="session")
def fitted_result(tmp_path_factory):
    """A fitted METIS IMG_LM lab result (4 exposures, degree 3, 5 % outliers)."""

    def make(out):
        path, _, _ = write_points_campaign(out, seed=21, degree=3, fit_degree=3, n_exposures=4,
                                           outlier_fraction=0.05)
        assert main(["-q", "fit", str(path), "--steps", "300", "--walkers", "12"]) == 0

    return shared_dir(tmp_path_factory, "fitted", make) / "out" / "Lp"


@pytest.fixture(scope="session")
def injected():
    """The changes injected into ``older_result``."""
    return {"scale": SCALE_CHANGE, "kick_arcsec": KICK_ARCSEC}


@pytest.fixture(scope="session")
def older_result(fitted_result, tmp_path_factory):
    """A copy of ``fitted_result`` whose field draws are divided by ``1 + SCALE_CHANGE``
    (pixel-scale ratio new/old exactly ``1 + SCALE_CHANGE``, distortion unchanged) and
    whose ``cu[2,0]`` is raised by ``KICK_ARCSEC`` (a known change of the distortion)."""

    return shared_dir(tmp_path_factory, "older",
                      lambda root: changed_copy(fitted_result, root / "Lp", SCALE_CHANGE, KICK_ARCSEC)) / "Lp"


def changed_copy(result, older, scale_change, kick_arcsec):
    """Copy the result directory ``result`` to ``older`` with its field draws divided by
    ``1 + scale_change`` and ``cu[2,0]`` raised by ``kick_arcsec``."""
    shutil.copytree(result, older, ignore=shutil.ignore_patterns("report"))
    with h5py.File(older / "posterior.h5", "a") as f:
        g = f["linear/g"][...]
        names = json.loads(f["linear"].attrs["param_names"])
        nt = sum(1 for n in names if n.startswith("cu["))
        g[:, :2 * nt] /= 1.0 + scale_change
        g[:, names.index("cu[2,0]")] += kick_arcsec
        f["linear/g"][...] = g


@pytest.fixture(scope="session")
def report(fitted_result, older_result, tmp_path_factory):
    """The report of ``fitted_result`` against ``older_result``, made by the command line:
    ``(output directory, report.json contents)``."""

    def make(out):
        assert main(["-q", "report", str(fitted_result), "--against", str(older_result),
                     "--out", str(out / "report")]) == 0

    out = shared_dir(tmp_path_factory, "report", make) / "report"
    return out, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def sky_campaign(tmp_path_factory):
    """A fitted sky-only campaign: a point-level Galactic Center campaign of 4 exposures at
    two position angles (0 and 60 degrees, so the rotator separates the instrument's
    non-linear terms from the telescope's flexure) whose instrument field is the
    simulator's default cut to degree 3 (so a degree-3 fit can represent the truth),
    fitted at degree 3 with a short chain (100 steps x 8 walkers: a few seconds). Returns
    the campaign directory (truth in ``truth/``, result in ``out/Lp``)."""

    def make(out):
        field = default_sky_field().with_degree(3)
        path, _, _ = write_sky_points_campaign(out, "gc", seed=7, n_exposures=4, fit_degree=3,
                                               distortion=field, position_angles=(0.0, 60.0))
        assert main(["-q", "fit", str(path), "--steps", "100", "--walkers", "8"]) == 0

    return shared_dir(tmp_path_factory, "sky", make)


@pytest.fixture(scope="session")
def sky_result(sky_campaign):
    """The result directory of ``sky_campaign`` (filter Lp)."""
    return sky_campaign / "out" / "Lp"


@pytest.fixture(scope="session")
def sky_injected():
    """The changes injected into ``older_sky_result``."""
    return {"scale": SKY_SCALE_CHANGE, "kick_arcsec": SKY_KICK_ARCSEC}


@pytest.fixture(scope="session")
def older_sky_result(sky_result, tmp_path_factory):
    """A copy of ``sky_result`` whose field draws are divided by ``1 + SKY_SCALE_CHANGE``
    (a scale change, which a sky-only fit does not measure) and whose ``cu[2,0]`` is raised
    by ``SKY_KICK_ARCSEC`` (a known change of the non-linear part)."""

    return shared_dir(tmp_path_factory, "older-sky",
                      lambda root: changed_copy(sky_result, root / "Lp", SKY_SCALE_CHANGE, SKY_KICK_ARCSEC)) / "Lp"


@pytest.fixture(scope="session")
def sky_report(sky_result, older_sky_result, tmp_path_factory):
    """The report of ``sky_result`` against ``older_sky_result``, made by the command line:
    ``(output directory, report.json contents)``."""

    def make(out):
        assert main(["-q", "report", str(sky_result), "--against", str(older_sky_result),
                     "--out", str(out / "report")]) == 0

    out = shared_dir(tmp_path_factory, "sky-report", make) / "report"
    return out, json.loads((out / "report.json").read_text())


def _find_chromium():
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if driver is None and Path("/usr/lib/chromium/chromedriver").exists():
        driver = "/usr/lib/chromium/chromedriver"
    return browser, driver


def _install_chromium():
    """Install Debian's chromium and chromium-driver; returns None or why it could not."""
    if os.name != "posix" or not shutil.which("apt-get"):
        return "no apt-get on this system"
    if os.geteuid() != 0:
        return "not root, cannot apt-get install chromium chromium-driver"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=600, env=env)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
                       check=True, capture_output=True, timeout=1200, env=env)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"apt-get failed ({' '.join(exc.cmd)}: {tail[0]})"
    except subprocess.TimeoutExpired as exc:
        return f"apt-get timed out ({' '.join(exc.cmd)})"
    return None


@pytest.fixture(scope="session")
def chromium_paths():
    """``(browser, chromedriver)``, installed if needed and possible; else skip."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    browser, driver = _find_chromium()
    if browser and driver:
        return browser, driver
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker installs, the others wait and reuse
        try:
            browser, driver = _find_chromium()
            if not (browser and driver):
                why = _install_chromium()
                browser, driver = _find_chromium()
                if not (browser and driver):
                    pytest.skip(f"headless Chromium not available: {why or 'chromium/chromedriver not found after install'}")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return browser, driver


@pytest.fixture(scope="session")
def browser(chromium_paths, tmp_path_factory):
    """A headless Chromium (selenium WebDriver), closed at the end of the session."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    binary, driver_path = chromium_paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--allow-file-access-from-files", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(arg)
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        pytest.skip(f"headless Chromium does not start: {exc.msg}")
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()
