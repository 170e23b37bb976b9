"""Packaging: pyproject.toml is the one source of the dependencies.

The conda environment of the rules (envs/dpst.yaml) must list the same
packages with the same bounds, every import of the library and of the study's
code must be declared, the installed distribution must carry pyproject's
metadata, and the wheel must hold the library only (not workflow/dpst_study).
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
CONDA = PYPROJECT["tool"]["dpst"]["conda-env"]
# Modules whose distribution has another name (import name -> PyPI name).
IMPORT_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "skmisc": "scikit-misc", "sklearn": "scikit-learn"}


def requirements(extras: list[str] = ()) -> dict[str, Requirement]:
    """The runtime dependencies plus the named extras, by canonical name (self-references dropped)."""
    texts = [*PROJECT["dependencies"], *(dep for extra in extras for dep in PROJECT["optional-dependencies"][extra])]
    out = {}
    for text in texts:
        req = Requirement(text)
        if canonicalize_name(req.name) != PROJECT["name"]:
            out[canonicalize_name(req.name)] = req
    return out


def conda_dependencies() -> dict[str, SpecifierSet]:
    """envs/dpst.yaml's packages: conda name -> bounds (as a pip specifier set)."""
    env = yaml.safe_load((ROOT / CONDA["file"]).read_text())
    out = {}
    for entry in env["dependencies"]:
        assert isinstance(entry, str), f"{CONDA['file']}: unexpected entry {entry!r} (pip sections are not mirrored)"
        name, _, bounds = entry.strip().partition(" ")
        bounds = bounds.replace(" ", "")
        if bounds.startswith("=") and not bounds.startswith("=="):  # conda's "=3.11" means 3.11.*
            bounds = f"=={bounds[1:]}.*"
        assert name not in out, f"{CONDA['file']}: {name} listed twice"
        out[name] = SpecifierSet(bounds)
    return out


def test_conda_env_matches_pyproject():
    expected = {CONDA["names"].get(name, name): req.specifier for name, req in requirements(CONDA["extras"]).items()}
    env = conda_dependencies()
    python = env.pop("python", None)
    problems = []
    for name, specifier in expected.items():
        if name not in env:
            problems.append(f"{name}: in pyproject.toml ({specifier}) but not in {CONDA['file']}")
        elif env[name] != specifier:
            problems.append(f"{name}: {CONDA['file']} has {env[name] or 'no bound'}, pyproject.toml {specifier}")
    problems += [f"{name}: in {CONDA['file']} but not in pyproject.toml" for name in env.keys() - expected.keys()]
    assert not problems, "\n".join(problems)
    assert python is not None, f"{CONDA['file']} does not pin python"
    pinned = Version(str(python).removeprefix("==").removesuffix(".*"))
    assert pinned in SpecifierSet(PROJECT["requires-python"]), f"python {pinned} vs {PROJECT['requires-python']}"


def test_conda_env_check_catches_a_disagreement(monkeypatch, tmp_path):
    """The comparison above can fail: a loosened bound and a missing package are both named."""
    env = (ROOT / CONDA["file"]).read_text()
    assert "  - numpy >=2.0\n" in env
    assert "  - tqdm >=4.66\n" in env
    broken = tmp_path / "env.yaml"
    broken.write_text(env.replace("numpy >=2.0", "numpy >=1.26").replace("  - tqdm >=4.66\n", ""))
    monkeypatch.setitem(CONDA, "file", str(broken))
    with pytest.raises(AssertionError) as failure:
        test_conda_env_matches_pyproject()
    assert "numpy: " in str(failure.value)
    assert "tqdm: in pyproject.toml" in str(failure.value)


def third_party_imports(folder: Path, root: Path = ROOT) -> dict[str, list[str]]:
    """Top-level modules imported by the .py files under ``folder`` (stdlib and own packages left out)."""
    own = {"dpst", "dpst_study"}
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own:
                    found.setdefault(top, []).append(str(path.relative_to(root)))
    return found


def undeclared(folder: Path, extras: list[str], root: Path = ROOT) -> dict[str, str]:
    """Modules imported under ``folder`` that no declared requirement provides, with a file importing each."""
    declared = set(requirements(extras))
    imports = third_party_imports(folder, root)
    assert imports, f"no imports found under {folder}"
    return {
        module: files[0]
        for module, files in imports.items()
        if canonicalize_name(IMPORT_NAMES.get(module, module)) not in declared
    }


@pytest.mark.parametrize(
    ("folder", "extras"), [("src/dpst", ["integration"]), ("workflow/dpst_study", ["study", "integration"])]
)
def test_imports_are_declared(folder, extras):
    missing = undeclared(ROOT / folder, extras)
    assert not missing, f"imported but not declared for {folder}: {missing}"


def test_import_check_names_an_undeclared_module(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("import os\nfrom PIL import Image\nimport numpy.linalg\n")
    (tmp_path / "pkg" / "b.py").write_text("from requests.adapters import HTTPAdapter\nfrom . import a\n")
    assert undeclared(tmp_path / "pkg", [], tmp_path) == {"requests": "pkg/b.py"}
    assert undeclared(tmp_path / "pkg", ["study"], tmp_path) == {}


def test_library_does_not_need_the_study_extra():
    """requests, urllib3 and tabulate are the study's: the library must not import them."""
    study_only = set(requirements(["study"])) - set(requirements())
    imported = {canonicalize_name(IMPORT_NAMES.get(m, m)) for m in third_party_imports(ROOT / "src/dpst")}
    assert not imported & study_only, f"src/dpst imports {sorted(imported & study_only)}; declare them in dependencies"


def installed() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(PROJECT["name"])
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("dpst is not installed; run `pip install -e .`")


def requirement_key(req: Requirement) -> tuple:
    return canonicalize_name(req.name), frozenset(req.extras), req.specifier, str(req.marker or "")


def test_installed_metadata_matches_pyproject():
    dist = installed()
    stale = " (the installed metadata is stale: run `pip install -e .` again)"
    version = PROJECT["version"]
    assert dist.version == version, f"version: installed {dist.version}, pyproject {version}{stale}"
    meta = dist.metadata
    assert meta["Requires-Python"] == str(SpecifierSet(PROJECT["requires-python"])), f"Requires-Python{stale}"
    expected = {requirement_key(Requirement(text)) for text in PROJECT["dependencies"]}
    for extra, texts in PROJECT["optional-dependencies"].items():
        expected |= {requirement_key(Requirement(f'{text}; extra == "{extra}"')) for text in texts}
    actual = {requirement_key(Requirement(text)) for text in dist.requires or []}
    only_installed = sorted(f"{k[0]}{k[2]} {k[3]}".strip() for k in actual - expected)
    only_pyproject = sorted(f"{k[0]}{k[2]} {k[3]}".strip() for k in expected - actual)
    differs = f"Requires-Dist differs: only installed {only_installed}, only in pyproject {only_pyproject}{stale}"
    assert not only_installed, differs
    assert not only_pyproject, differs
    assert set(meta.get_all("Provides-Extra") or []) == set(PROJECT["optional-dependencies"]), f"extras{stale}"
    assert set(meta.get_all("Classifier") or []) == set(PROJECT["classifiers"]), f"classifiers{stale}"
    assert meta["License-Expression"] == PROJECT["license"], f"license{stale}"
    assert set(meta.get_all("Keywords")[0].split(",")) == set(PROJECT["keywords"]), f"keywords{stale}"
    urls = {entry.split(", ", 1)[0]: entry.split(", ", 1)[1] for entry in meta.get_all("Project-URL") or []}
    assert urls == PROJECT["urls"], f"Project-URL{stale}"


def test_installed_distribution_is_the_library_only():
    dist = installed()
    assert (dist.read_text("top_level.txt") or "").split() == ["dpst"]
    # An editable install puts src/ on sys.path (never workflow/, where dpst_study lives).
    for file in dist.files or []:
        if file.name.endswith(".pth"):
            for line in file.read_text().splitlines():
                assert "workflow" not in Path(line).parts, f"{file.name} puts {line} on sys.path"
    assert "site-packages" not in str(ROOT), "tests run from a checkout"


def build_backend_installed() -> bool:
    """Whether every package of pyproject's build-system.requires is installed here, in a fitting version."""
    for text in PYPROJECT["build-system"]["requires"]:
        req = Requirement(text)
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            return False
        if not req.specifier.contains(version, prereleases=True):
            return False
    return True


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to list the tracked files")
def test_wheel_holds_the_library_only(tmp_path):
    """Build the wheel from a copy of the tracked sources: dpst (with py.typed), nothing of the workflow."""
    source = tmp_path / "source"
    tracked = (
        subprocess.run(
            ["git", "ls-files", "-z", "pyproject.toml", "README.md", "LICENSE", "src"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, tracked):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    # Offline with this environment's build backend when it satisfies build-system.requires,
    # else in pip's isolated build environment (which downloads the backend).
    isolation = ["--no-build-isolation"] if build_backend_installed() else []
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("dpst-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"dpst"}, f"the wheel holds {sorted(packages)}"
    assert "dpst/py.typed" in names
    expected = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src/dpst").rglob("*.py")}
    tracked_py = {name.removeprefix("src/") for name in tracked if name.endswith(".py")}
    assert tracked_py <= expected
    assert {n for n in names if n.endswith(".py")} == tracked_py


def test_citation_matches_pyproject():
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == PROJECT["version"], "CITATION.cff version differs from pyproject.toml"
    assert citation["license"] == PROJECT["license"], "CITATION.cff license differs from pyproject.toml"
    assert citation["repository-code"] == PROJECT["urls"]["Source"], "CITATION.cff repository-code differs"
