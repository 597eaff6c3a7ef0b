"""Sphinx configuration of the astrocal user guide.

Build (warnings are errors, as in CI's ``tests/test_docs.py``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The pages are Markdown read with MyST (``myst-parser``); the API reference is made by
autodoc from the docstrings (numpy style, read by napoleon). The package is imported from
the installed distribution, or from ``src/`` of this checkout when not installed.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:
    import astrocal  # noqa: F401  (installed, e.g. editable)
except ImportError:  # a plain checkout
    sys.path.insert(0, str(ROOT / "src"))
    import astrocal  # noqa: F401

project = "astrocal"
author = "astrocal developers"
copyright = "astrocal developers, BSD-3-Clause"
release = astrocal.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "make_figures.py"]

# MyST: anchors for headings (pages link to "#part-ii-..."), $-math off (pages write
# equations as code), a few harmless extensions.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc / napoleon: numpy-style docstrings; members in source order; type hints in the
# description rather than in long signatures.
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
    # packages re-export their modules' names in __all__: document each object once, in
    # the module that defines it
    "ignore-module-all": True,
}
autodoc_typehints = "description"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# the default theme (alabaster ships with Sphinx); no network (no intersphinx)
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"astrocal {release}"
html_theme_options = {
    "description": "Bayesian geometric-distortion calibration of astronomical imagers",
    "fixed_sidebar": False,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
pygments_style = "sphinx"
