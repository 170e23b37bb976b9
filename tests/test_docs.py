"""The documentation builds with Sphinx, warnings treated as errors.

The build imports the installed ``dpst`` (autodoc), so a docstring that does not
parse, a broken cross-reference between pages or a page missing from the
table of contents fails this test with Sphinx's message.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
# What docs/conf.py loads; the "docs" extra of pyproject.toml installs them.
DOCS_PACKAGES = ("sphinx", "myst_parser", "furo")


def test_docs_build_without_warnings(tmp_path):
    missing = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the docs build needs {', '.join(missing)}: pip install -e '.[docs]'")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stderr}{result.stdout}"
    assert "WARNING" not in result.stderr, result.stderr
    assert (tmp_path / "html" / "index.html").is_file()
    assert (tmp_path / "html" / "generated" / "dpst.DPSCVI.html").is_file()
