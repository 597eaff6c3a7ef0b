"""The ``astrocal`` command line.

Each subcommand lives in its own module with two functions, ``register(subparsers)``
and the ``run(args)`` it installs as the default ``func``; this file only gathers them.
"""
import argparse
import importlib
import logging
import sys

from . import __version__

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

    Errors of the input (``OSError``, ``ValueError``, ``KeyError``: a missing file, a bad
    campaign, an existing product) are printed as ``astrocal: error: ...`` and give status 1.
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
    except (OSError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"astrocal: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
