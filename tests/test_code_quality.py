"""ruff (lint and format) and mypy are clean: part of the suite, so that the README's
test command, which CI runs, enforces them as it enforces the tests."""

import importlib.util
import subprocess
import sys

import pytest
from _workflow import REPO


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module", autouse=True)
def _tools_installed():
    missing = [tool for tool in ("ruff", "mypy") if importlib.util.find_spec(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: pip install -e '.[dev]'")


@pytest.mark.parametrize(
    "args",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("mypy",)],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(args):
    result = run_tool(*args)
    assert result.returncode == 0, f"{' '.join(args)} found problems:\n{result.stdout}\n{result.stderr}"
