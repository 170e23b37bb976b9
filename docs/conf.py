"""Sphinx configuration of the dpst documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` from the
repository root (``pip install -e ".[docs]"`` first).
"""

from __future__ import annotations

from importlib.metadata import version as installed_version

project = "dpst"
author = "the dpst developers"
copyright = "2026, the dpst developers"
release = installed_version("dpst")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# The API pages are generated from the docstrings at build time (docs/generated/, not committed).
# A module's public names are those of its __all__ (its non-underscore names where it has none).
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_ivar = True  # dataclass fields as :ivar:, so they are not described twice

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# No intersphinx: the documentation builds offline.
html_theme = "furo"
html_title = f"dpst {release}"
html_static_path: list[str] = []
