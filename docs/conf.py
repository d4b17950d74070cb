"""Sphinx configuration for grete's documentation (``make docs``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from grete._version import __version__  # noqa: E402

project = "grete"
author = "the grete authors"
copyright = "the grete authors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

# The docstrings use plain reST field lists (``:param x:``), no napoleon needed.
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
# Type aliases and forward references the docs cannot resolve are not worth a
# warning each; cross-references are checked by -W for what *is* written.
nitpicky = False

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"grete {release}"
