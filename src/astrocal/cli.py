"""The ``astrocal`` command line.

Each subcommand lives in its own module with two functions, ``register(subparsers)``
and the ``run(args)`` it installs as the default ``func``; this file only gathers them.
"""
import argparse
import importlib
import logging
import sys
import traceback

from . import __version__
from .errors import AstrocalError

#: exit status of an expected error of the input or the environment
EXIT_ERROR = 1
#: exit status of a bug in astrocal (``EX_SOFTWARE`` of sysexits.h)
EXIT_BUG = 70

#: modules that provide subcommands, in the order ``--help`` lists them
SUBCOMMAND_MODULES = [
    "astrocal.demo",
    "astrocal.sim.cli",
    "astrocal.model.cli",
    "astrocal.formats.convert",
    "astrocal.lab.measure",
    "astrocal.report.cli",
    "astrocal.correct.cli",
]


def build_parser():
    """The ``astrocal`` argument parser with every subcommand of :data:`SUBCOMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="astrocal",
        description="Geometric-distortion calibration of astronomical imagers "
        "from pinhole-mask frames and star fields.",
    )
    parser.add_argument("--version", action="version", version=f"astrocal {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    """Run ``astrocal`` with ``argv`` (default: the command line); returns the exit status.

    An expected error (an :class:`astrocal.errors.AstrocalError`: a bad campaign, option,
    star list or solution file, an existing product...) or an error of the environment (an
    ``OSError``: a missing file, a permission, a full disk) is printed as
    ``astrocal: error: <message>`` and gives status 1. Any other exception is a bug in
    astrocal: its traceback is printed, then ``astrocal: internal error: ...``, and the
    status is 70 (``EX_SOFTWARE``). Errors of the command line itself give status 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="astrocal: %(levelname)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (AstrocalError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"astrocal: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: show where it happened
        traceback.print_exc()
        print(f"astrocal: internal error: {type(exc).__name__}: {exc} — this is a bug in "
              "astrocal; please report it with the traceback above", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
