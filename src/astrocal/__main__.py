"""``python -m astrocal``: the same command line as the ``astrocal`` script."""
import sys

from astrocal.cli import main

sys.exit(main())
