"""``python -m astrocal.cli``: the ``astrocal`` command (as ``python -m astrocal``)."""
import sys

from . import script

if __name__ == "__main__":
    sys.exit(script())
