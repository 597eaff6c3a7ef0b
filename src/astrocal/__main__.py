"""``python -m astrocal``: the same command line as the ``astrocal`` script."""
import sys

from astrocal.cli import script

if __name__ == "__main__":  # importing the module (e.g. walking the package) runs nothing
    sys.exit(script())
