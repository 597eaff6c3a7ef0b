"""The ``astrocal`` command line.

Each subcommand has a module with two functions, ``register(subparsers)`` (its
arguments) and the ``run(args)`` it installs as the default ``func`` (the arguments
wired to the stage's functions, :mod:`astrocal.stages`); this package only gathers them.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
import traceback
from typing import Sequence

from .. import __version__
from ..errors import AstrocalError

#: exit status of an expected error of the input or the environment
EXIT_ERROR = 1
#: exit status of a bug in astrocal (``EX_SOFTWARE`` of sysexits.h)
EXIT_BUG = 70

#: the module of each subcommand (it registers the subcommand of that name), in the order
#: ``--help`` lists them
SUBCOMMANDS = {
    "demo": "astrocal.cli.demo",
    "simulate": "astrocal.cli.simulate",
    "fit": "astrocal.cli.fit",
    "convert": "astrocal.cli.convert",
    "measure": "astrocal.cli.measure",
    "report": "astrocal.cli.report",
    "correct": "astrocal.cli.correct",
}
#: modules that provide subcommands, in the order ``--help`` lists them
SUBCOMMAND_MODULES = list(SUBCOMMANDS.values())


def _command_of(argv):
    """The subcommand ``argv`` runs (its first word that is not an option), or None."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in SUBCOMMANDS else None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``astrocal`` argument parser.

    Parameters
    ----------
    command : str, optional
        A subcommand: the parser has that one alone (a command imports only its own module:
        the others pull in the simulators, the report's plotting and the measure stage).
        None: every subcommand of :data:`SUBCOMMANDS`.

    Returns
    -------
    argparse.ArgumentParser
    """
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
    for name, module in SUBCOMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``astrocal`` with ``argv``.

    An expected error (an :class:`astrocal.errors.AstrocalError`: a bad campaign, option,
    star list or solution file, an existing product...) or an error of the environment (an
    ``OSError``: a missing file, a permission, a full disk) is printed as
    ``astrocal: error: <message>`` and gives status 1. Any other exception is a bug in
    astrocal: its traceback is printed, then ``astrocal: internal error: ...``, and the
    status is 70 (``EX_SOFTWARE``). Errors of the command line itself give status 2.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: the command line's).

    Returns
    -------
    int
        The exit status.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(argv))
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


def script() -> int:
    """The ``astrocal`` command (the console script, ``python -m astrocal`` and ``python -m
    astrocal.cli``): :func:`main` on the command line's arguments.

    The process ends right after, so the objects left are frozen out of the cyclic garbage
    collector (:func:`gc.freeze`) first: the interpreter's last collection then skips them
    (about 0.1-0.2 s of a quick look's few seconds). Code that calls :func:`main` and goes on
    (tests, scripts) is not affected.

    Returns
    -------
    int
        The exit status.
    """
    status = main()
    gc.freeze()
    return status
