"""astrocal offline and on any date: the sky path run as a user runs it (``astrocal`` commands
as processes) with the wall clock years ahead and the network cut.

Each command runs in a fresh Python process whose ``sitecustomize`` (written here, found
through ``PYTHONPATH``) moves the clock to :data:`FUTURE` with ``time-machine`` before
anything is imported, and replaces the socket calls by a guard that logs every attempt and
refuses it. So astropy sees a bundled IERS table and leap-second file that are years old,
and any download astrocal or astropy would try is caught and recorded. The chain: simulate
a Galactic Center night (images), measure it, fit it (sky only), report the result; a joint
lab + sky fit; and a night years after the table's end (exposures that the table and the
leap-second file do not cover at all); a lab campaign's images. Every command must succeed, none may touch the
network, and the results must say what the tables' age costs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("time_machine", reason="time-machine is not installed (pip install -e '.[test]')")

#: the wall clock of the commands: years after the bundled tables were written
FUTURE = "2034-03-01T12:00:00+00:00"

SITECUSTOMIZE = textwrap.dedent('''
    """Test harness (astrocal tests/test_offline_any_date.py): clock ahead, network cut."""
    import datetime
    import os
    import socket

    import time_machine

    time_machine.travel(datetime.datetime.fromisoformat(os.environ["ASTROCAL_TEST_NOW"]), tick=True).start()
    _LOG = os.environ["ASTROCAL_TEST_NETLOG"]


    def _refused(*args, **kwargs):
        with open(_LOG, "a") as fh:
            fh.write(repr(args[:2]) + "\\n")
        raise OSError("network disabled by the astrocal time-travel test")


    socket.socket.connect = _refused
    socket.socket.connect_ex = _refused
    socket.getaddrinfo = _refused
    socket.create_connection = _refused
''')

RUN_CLI = "import sys; from astrocal.cli import main; sys.exit(main(sys.argv[1:]))"


class Traveller:
    """Runs commands in the future, offline, in ``root``."""

    def __init__(self, root):
        self.root = root
        site = root / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.netlog = root / "network.log"
        path = [str(site)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), ASTROCAL_TEST_NOW=FUTURE,
                        ASTROCAL_TEST_NETLOG=str(self.netlog), PYTHONWARNINGS="default")
        self.env.pop("ASTROCAL_CATALOG_CACHE", None)

    def python(self, code, *args, timeout=900):
        return subprocess.run([sys.executable, "-c", code, *args], cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def astrocal(self, *args, timeout=900):
        p = self.python(RUN_CLI, *[str(a) for a in args], timeout=timeout)
        assert p.returncode == 0, (f"astrocal {' '.join(map(str, args))} failed ({p.returncode}) with the clock "
                                   f"at {FUTURE} and no network:\n{p.stderr[-4000:]}")
        return p

    def network_attempts(self):
        return self.netlog.read_text().splitlines() if self.netlog.exists() else []


@pytest.fixture(scope="module")
def traveller(tmp_path_factory):
    return Traveller(tmp_path_factory.mktemp("any-date"))


def test_the_harness_moves_the_clock_and_cuts_the_network(traveller):
    p = traveller.python(textwrap.dedent("""
        import socket, urllib.request
        from astropy.time import Time
        print(f"{Time.now().jyear:.2f}")
        try:
            urllib.request.urlopen("https://datacenter.iers.org/", timeout=5)
            print("connected")
        except OSError as exc:
            print("refused", exc)
    """))
    assert p.returncode == 0, p.stderr
    year, net = p.stdout.split("\n")[:2]
    assert float(year) >= 2034.0
    assert net.startswith("refused")
    assert traveller.network_attempts()  # the guard saw it
    traveller.netlog.unlink()


@pytest.fixture(scope="module")
def sky_night(traveller):
    """A Galactic Center night simulated, measured and fitted in 2034 (exposures of 2027)."""
    t = traveller
    sim = t.astrocal("-q", "simulate", "sky", "--field", "gc", "--out", "sky", "--seed", "3", "--exposures", "3",
                     "--detector-shape", "768", "768", "--position-angles", "0", "60")
    measure = t.astrocal("-q", "measure", "sky/campaign.toml")
    fit = t.astrocal("-q", "fit", "sky/campaign.toml", "--degree", "3", "--steps", "100", "--walkers", "8")
    report = t.astrocal("-q", "report", "sky/out/Lp")
    return t.root / "sky", {"simulate": sim, "measure": measure, "fit": fit, "report": report}


def test_sky_chain_runs_years_ahead_offline(traveller, sky_night):
    root, runs = sky_night
    assert traveller.network_attempts() == [], "astrocal or astropy tried the network"
    # the cost of the table's age is stated, once per command that computes positions
    for step in ("simulate", "measure"):
        said = [line for line in runs[step].stderr.splitlines() if "Earth orientation for exposures" in line]
        assert said, f"{step}: no statement of the Earth-orientation cost\n{runs[step].stderr[-2000:]}"
        assert "differential" in said[0] and "mas" in said[0]
    info = json.loads((root / "out" / "Lp" / "fit.json").read_text())
    eo = info["earth_orientation"]
    assert eo["policy"]["allow_download"] is False
    assert eo["iers_table"]["source"].startswith("bundled")
    # what the exposures get depends on the table and the exposures' dates, not on the clock:
    # 2027-06-13 is inside the bundled table's predictions
    assert [e["status"] for e in eo["exposures"]] == ["predicted"] * 3
    assert all(e["differential_mas"] < 0.01 for e in eo["exposures"])
    assert eo["worst"]["stale_exposures"] == 3
    report = json.loads((root / "out" / "Lp" / "report" / "report.json").read_text())
    assert report["case"]["case"] == "sky-only"
    from astropy.io import fits

    header = fits.getheader(root / "out" / "Lp" / "astromet_Lp.fits")
    assert header["HIERARCH ASTROCAL IERS_TABLE"] == "finals2000A.all"
    # the measured tables carry the same record
    from astropy.table import Table

    t = Table.read(root / "measured" / "gc_00.ecsv", format="ascii.ecsv")
    assert t.meta["earth_orientation"]["exposure"]["status"] == "predicted"


def test_lab_images_years_ahead_offline(traveller):
    """The lab side does time arithmetic too (exposure times of the sequence): simulated and
    measured in 2034 without a network attempt (astropy's leap-second update would try one
    at the first UTC conversion of a process, were astrocal not to install it first)."""
    traveller.astrocal("-q", "simulate", "lab", "--out", "lab", "--seed", "2", "--exposures", "3")
    traveller.astrocal("-q", "measure", "lab/campaign.toml")
    assert traveller.network_attempts() == []
    from astropy.table import Table

    summary = Table.read(traveller.root / "lab" / "measured" / "summary.ecsv", format="ascii.ecsv")
    assert list(summary["status"]) == ["ok"] * 3


def test_joint_fit_runs_years_ahead_offline(traveller):
    code = textwrap.dedent("""
        import sys
        from astrocal.cli import main
        from astrocal.sim.joint import write_joint_points_campaign
        path, _, _ = write_joint_points_campaign("joint", seed=4, lab_exposures=4, sky_exposures=4, degree=3,
                                                 fit_degree=3)
        sys.exit(main(["-q", "fit", str(path), "--steps", "100", "--walkers", "8"]))
    """)
    p = traveller.python(code)
    assert p.returncode == 0, p.stderr[-4000:]
    assert traveller.network_attempts() == []
    info = json.loads((traveller.root / "joint" / "out" / "Lp" / "fit.json").read_text())
    assert {d["kind"] for d in info["datasets"]} == {"lab", "sky"}
    assert len(info["earth_orientation"]["exposures"]) == 4


def test_a_night_beyond_the_tables(traveller):
    """Exposures of 2033: after the bundled table's predictions and the leap-second file's
    expiry. Nothing fails; the cost (held UT1-UTC, mean pole, a possibly missing leap
    second) is stated and recorded."""
    sim = traveller.astrocal("simulate", "sky", "--field", "gc", "--out", "late", "--seed", "5", "--exposures", "3",
                             "--night", "2033-06-12", "--points-only", "--detector-shape", "1024", "1024")
    said = " ".join(line for line in sim.stderr.splitlines() if "Earth orientation for exposures" in line)
    assert "beyond the table" in said and "leap-second table's expiry" in said
    traveller.astrocal("-q", "fit", "late/campaign.toml", "--degree", "3", "--steps", "100", "--walkers", "8")
    assert traveller.network_attempts() == []
    eo = json.loads((traveller.root / "late" / "out" / "Lp" / "fit.json").read_text())["earth_orientation"]
    for e in eo["exposures"]:
        assert e["status"] == "beyond the table" and e["leap_second"] is not None
        assert 0.05 < e["sigma_ut1_s"] <= 0.9  # UT1-UTC held for years: tenths of a second
        assert e["differential_mas"] < 0.1  # still small over a few arcsec
