"""``astrocal demo``: the command's arguments, wired to :func:`astrocal.stages.demo.run_demo`
(and, with ``--lms``, to :func:`astrocal.stages.demo_lms.run_lms_demo`)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo`` and its arguments to the ``astrocal`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The parser's subcommands (:func:`astrocal.cli.build_parser`).
    """
    p = subparsers.add_parser(
        "demo",
        help="run the whole chain (lab and sky) on simulated METIS data",
        description="Simulate a METIS IMG_LM lab campaign (OUT/lab/: raw frames, background, "
        "flat, campaign and truth) and a Galactic Center sky campaign through the same "
        "instrument field (OUT/sky/: raw frames, catalogue, campaign and truth), join them "
        "(OUT/campaign.toml), measure every frame (OUT/measured/), fit the joint model "
        "(OUT/out/<filter>/: posterior, summaries, AstroMet file, TAN-SIP header, METIS "
        "tables), write the accuracy-budget report (OUT/out/<filter>/report/report.html) "
        "and compare the fit with the truth.",
    )
    p.add_argument("--out", default=None, help="output directory (default astrocal-demo, or astrocal-demo-lms "
                   "with --lms)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the simulation")
    p.add_argument("--lab-only", action="store_true", help="no sky campaign: the lab chain only")
    p.add_argument("--lms", action="store_true",
                   help="the LMS chain instead (astrocal.stages.demo_lms): simulate a METIS LMS calibration "
                   "campaign, measure it, fit the spectrograph's geometry, write its products and report "
                   "and compare with the truth (default output astrocal-demo-lms)")
    p.add_argument("--processes", type=int, default=2, metavar="N",
                   help="worker processes for measuring and fitting (default 2)")
    p.add_argument("--overwrite", action="store_true", help="replace the products of an earlier run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``astrocal demo``: the demo (the LMS one with ``--lms``).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.

    Returns
    -------
    int
        The exit status: 0.
    """
    # `astrocal --help` registers every subcommand: the demo's stage pulls in the simulators,
    # lazy: the measure and fit stages and the report's plotting (matplotlib), so only when it runs
    from ..stages.demo import DemoOptionError, run_demo

    if args.lms:
        if args.lab_only:
            raise DemoOptionError("--lms and --lab-only cannot go together: the LMS demo has no sky part")
        # lazy: only --lms needs the LMS simulator, model and report (astrocal.lms, astrocal.field)
        from ..stages.demo_lms import run_lms_demo

        run_lms_demo(args.out or "astrocal-demo-lms", seed=args.seed, overwrite=args.overwrite,
                     processes=args.processes)
        return 0
    run_demo(args.out or "astrocal-demo", seed=args.seed, overwrite=args.overwrite, sky=not args.lab_only,
             processes=args.processes)
    return 0
