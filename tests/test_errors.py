"""One error tree (astrocal issue #19): every error astrocal expects is an
:class:`astrocal.errors.AstrocalError`; the command line reports those (and ``OSError``)
as ``astrocal: error: ...`` with status 1, and anything else as a bug, with its traceback
and status 70.
"""
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest

import astrocal
from astrocal.cli import EXIT_BUG, EXIT_ERROR, main
from astrocal.errors import AstrocalError, CorrectionInputError, FieldError, SimulationOptionError

#: exceptions defined in astrocal that are not errors: name -> why
NOT_ERRORS = {
    "astrocal.correct.chunks.SchemaChanged": "a signal to read a star list again, always caught "
                                             "by astrocal.correct.starlist",
}


def _exception_classes():
    """Every exception class (not a warning) defined in a module of the package."""
    found = {}
    for info in pkgutil.walk_packages(astrocal.__path__, "astrocal."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException) and not issubclass(obj, Warning)
                    and obj.__module__ == module.__name__):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_error_class_is_an_astrocal_error():
    classes = _exception_classes()
    assert len(classes) >= 40, sorted(classes)  # the walk found the package's errors
    for name in NOT_ERRORS:
        assert name in classes, f"{name} is no longer defined: remove it from NOT_ERRORS"
    outside = sorted(name for name, cls in classes.items()
                     if name not in NOT_ERRORS and not issubclass(cls, AstrocalError))
    assert not outside, f"error classes outside the astrocal error tree: {outside}"


@pytest.mark.parametrize("name, builtin", [
    ("astrocal.campaign.CampaignError", ValueError),
    ("astrocal.atomic.ProductExistsError", FileExistsError),
    ("astrocal.sky.sites.UnknownSiteError", KeyError),
    ("astrocal.resultset.ResultLockedError", RuntimeError),
    ("astrocal.sky.catalog.CatalogQueryError", RuntimeError),
    ("astrocal.model.chainstore.ChainWriteError", OSError),
    ("astrocal.instruments.InstrumentError", KeyError),
    ("astrocal.lab.mask.UnknownMaskError", KeyError),
    ("astrocal.lab.mask.UnknownMaskError", ValueError),
    ("astrocal.errors.FieldError", ValueError),
    ("astrocal.errors.SimulationOptionError", ValueError),
])
def test_errors_keep_their_builtin_base(name, builtin):
    """Code that catches the builtin (``except ValueError``...) keeps catching them."""
    module, cls = name.rsplit(".", 1)
    error = getattr(importlib.import_module(module), cls)
    assert issubclass(error, AstrocalError) and issubclass(error, builtin)


def test_errors_docstring_names_every_error_class():
    """The tree in :mod:`astrocal.errors` lists every error class."""
    doc = importlib.import_module("astrocal.errors").__doc__
    missing = sorted(name for name in _exception_classes()
                     if name not in NOT_ERRORS and f":class:`{name}`" not in doc)
    assert not missing, f"not in the astrocal.errors docstring: {missing}"


def test_input_errors_are_astrocal_errors():
    """A few validations reachable from the commands raise the tree's classes."""
    from astrocal.correct.starlist import _output_format
    from astrocal.field.basis import check_degree
    from astrocal.instruments import get_instrument
    from astrocal.sim.lab_settings import LabSimSettings

    with pytest.raises(FieldError, match="between 1 and"):
        check_degree(99)
    with pytest.raises(SimulationOptionError, match="nd_transmission"):
        LabSimSettings(nd_transmission=2.0)
    with pytest.raises(CorrectionInputError, match="cannot tell the star-list format"):
        _output_format("stars.xyz")
    with pytest.raises(AstrocalError) as info:
        get_instrument("hubble")
    assert isinstance(info.value, KeyError) and str(info.value).startswith("unknown instrument 'hubble'")


# ------------------------------------------------------------------ the command line


def astrocal_cli(*args, cwd=None):
    """Run ``python -m astrocal.cli ARGS`` in a subprocess."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "astrocal.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_bad_campaign_is_status_1_without_traceback(tmp_path):
    campaign = tmp_path / "campaign.toml"
    campaign.write_text('[instrument]\nname = "metis-lm"\nbogus = 1\n')
    run = astrocal_cli("fit", campaign, cwd=tmp_path)
    assert run.returncode == EXIT_ERROR == 1, run.stderr
    assert "astrocal: error:" in run.stderr and "instrument.bogus" in run.stderr
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr


@pytest.mark.parametrize("options, message", [
    (["--nd", "2"], "simulate lab: --nd must be in (0, 1]"),
    (["--exposures", "0"], "simulate lab: a campaign needs at least one exposure"),
    (["--mode", "bogus"], "has no readout mode 'bogus'"),
    (["--mask", "bogus"], "unknown mask 'bogus'"),
])
def test_bad_simulate_option_is_status_1(tmp_path, options, message):
    run = astrocal_cli("simulate", "lab", "--out", tmp_path / "lab", "--detector-shape", "64", "64",
                       *options, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "astrocal: error: " in run.stderr and message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "lab" / "campaign.toml").exists()


def test_missing_file_is_status_1(tmp_path):
    """An ``OSError`` (here a missing input) is an expected error of the environment."""
    run = astrocal_cli("convert", tmp_path / "nothing.fits", tmp_path / "out.ecsv", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert "astrocal: error:" in run.stderr and "nothing.fits" in run.stderr
    assert "Traceback" not in run.stderr


def test_argparse_errors_keep_status_2(tmp_path):
    run = astrocal_cli("simulate", "lab", "--exposures", "many", cwd=tmp_path)
    assert run.returncode == 2 and "invalid int value" in run.stderr


RUNNER = """\
import sys
import astrocal.cli.demo
import astrocal.cli

def run(args):
    {body}

def register(subparsers):
    subparsers.add_parser("demo").set_defaults(func=run)

astrocal.cli.demo.register = register
sys.exit(astrocal.cli.main(["demo"]))
"""


@pytest.mark.parametrize("body, kind, message", [
    ("return 1 / 0", "ZeroDivisionError", "division by zero"),
    # a ValueError is no longer taken for bad input: only the astrocal errors are
    ("raise ValueError('an unexpected value')", "ValueError", "an unexpected value"),
    ("raise KeyError('column')", "KeyError", "'column'"),
])
def test_a_bug_is_status_70_with_its_traceback(tmp_path, body, kind, message):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(body=body))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == EXIT_BUG == 70, run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert 'runner.py", line 6, in run' in run.stderr  # the traceback points at the bug
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"astrocal: internal error: {kind}: {message}")
    assert "this is a bug in astrocal" in last and "astrocal: error:" not in run.stderr


def test_expected_errors_in_process(monkeypatch, capsys):
    """``main`` itself: an AstrocalError that is also a KeyError prints its message
    unquoted; an OSError is status 1; a bug is status 70."""
    import astrocal.cli.demo as demo
    from astrocal.sky.sites import UnknownSiteError

    raised = []

    def fake_run(args):
        raise raised[-1]

    original = demo.register

    def register(subparsers):
        original(subparsers)
        subparsers.choices["demo"].set_defaults(func=fake_run)

    monkeypatch.setattr(demo, "register", register)
    raised.append(UnknownSiteError("unknown site 'mars'"))
    assert main(["demo"]) == 1
    assert capsys.readouterr().err.strip() == "astrocal: error: unknown site 'mars'"
    raised.append(PermissionError(13, "Permission denied", "/root/x"))
    assert main(["demo"]) == 1
    assert "astrocal: error: [Errno 13] Permission denied: '/root/x'" in capsys.readouterr().err
    raised.append(TypeError("unsupported operand"))
    assert main(["demo"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "astrocal: internal error: TypeError: unsupported operand" in err


# ------------------------------------------- inputs that used to escape as builtin errors


def test_text_in_a_source_table_is_a_data_error(tmp_path):
    from astropy.table import Table

    from astrocal.stages.fit_inputs import _source_table
    from astrocal.model.data import DataError

    path = tmp_path / "grid_00.ecsv"
    Table({"hole_id": [1, 2], "x": ["abc", "2.0"], "y": [1.0, 2.0], "sigma_x": [0.1, 0.1],
           "sigma_y": [0.1, 0.1]}).write(path)
    with pytest.raises(DataError, match=r"grid_00.ecsv: column 'x' holds .* not numbers"):
        _source_table(path)


def test_text_in_a_mask_column_is_a_mask_error(tmp_path):
    from astropy.table import Table

    from astrocal.lab.mask import MaskError, load_mask

    path = tmp_path / "mask.ecsv"
    t = Table({"hole_id": [1, 2, 3], "x_mm": ["0.0", "abc", "2.0"], "y_mm": [0.0, 1.0, 0.5],
               "diameter_um": [25.0, 25.0, 25.0]})
    t["x_mm"].unit, t["y_mm"].unit, t["diameter_um"].unit = "mm", "mm", "um"
    t.write(path)
    with pytest.raises(MaskError, match=r"mask.ecsv: column 'x_mm' must hold numbers"):
        load_mask(path)


def test_bad_values_of_a_solution_file_name_the_file(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    from astrocal.formats.siaf import SiafFormatError, read_siaf, write_siaf
    from astrocal.formats.sip import SipFormatError, read_sip_header, write_sip_header
    from astrocal.sim.field import instrument_field
    from astrocal.solution import Solution

    _, field = instrument_field("metis-lm", seed=1)
    sol = Solution(field, filter="Lp", detector_shape=(2048, 2048))
    write_siaf(tmp_path / "good.ecsv", sol)
    t = Table.read(tmp_path / "good.ecsv")
    t.meta["XDetSize"] = "wide"
    t.write(tmp_path / "size.ecsv")
    with pytest.raises(SiafFormatError, match=r"size.ecsv: metadata .*XDetSize"):
        read_siaf(tmp_path / "size.ecsv")
    t = Table.read(tmp_path / "good.ecsv")
    t.meta["plate_scale_arcsec_per_pixel"] = -1.0
    t.write(tmp_path / "scale.ecsv")
    with pytest.raises(SiafFormatError, match=r"scale.ecsv: plate scale must be positive"):
        read_siaf(tmp_path / "scale.ecsv")
    write_sip_header(tmp_path / "good.hdr", sol)
    h = fits.Header.fromtextfile(tmp_path / "good.hdr")
    h["PLTSCALE"] = "fine"
    h.totextfile(tmp_path / "bad.hdr")
    with pytest.raises(SipFormatError, match=r"bad.hdr: keyword PLTSCALE = 'fine' is not a number"):
        read_sip_header(tmp_path / "bad.hdr")


def test_bad_flexure_option_of_the_sky_simulator():
    from astrocal.sim.sky import SkySimSettings

    with pytest.raises(SimulationOptionError, match="flexure degree must be an integer 1..5, got 9"):
        SkySimSettings(flexure_degree=9)


def test_a_bug_while_measuring_a_frame_is_said_as_one(tmp_path):
    """An exception that is not bad input, raised while one frame is measured: the other
    frames are measured, the frame's message says INTERNAL ERROR, its traceback is logged,
    and measure ends with status 70 (not 1, which says the input is bad)."""
    import textwrap

    from astrocal.sim.points_campaign import write_points_campaign

    path, _, _ = write_points_campaign(tmp_path, seed=2, degree=3, fit_degree=3, n_exposures=3)
    runner = tmp_path / "runner.py"
    runner.write_text(textwrap.dedent(f"""
        import sys
        import astrocal.stages.measure as m

        def broken(*args, **kwargs):
            raise ZeroDivisionError("injected bug")

        m.read_source_table = broken  # the source tables' reader of the measure stage
        from astrocal.cli import main
        sys.exit(main(["measure", {str(path)!r}]))
    """))
    run = subprocess.run([sys.executable, str(runner)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert run.returncode == 70, run.stdout + run.stderr
    assert "INTERNAL ERROR" in run.stdout and "injected bug" in run.stdout
    assert "Traceback" in run.stderr and "ZeroDivisionError" in run.stderr
