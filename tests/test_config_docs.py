"""config/README.md documents every key of the config schema, with the schema's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow/schemas/config.schema.yaml"
README_PATH = ROOT / "config/README.md"
PLACEHOLDER = "<name>"  # a key the user chooses (additionalProperties with a schema)
NO_DEFAULT = object()


def resolve(node: dict, schema: dict) -> dict:
    """Follow a local ``$ref`` ("#/definitions/x"), keeping the referring node's own keywords."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"{SCHEMA_PATH.name}: only local references are supported, got {ref}"
        target = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_keys(schema: dict) -> dict[str, object]:
    """Every key path of the schema ("penalty.alpha", "sections.<name>.files...") with its default."""
    keys: dict[str, object] = {}

    def walk(node: dict, path: str) -> None:
        node = resolve(node, schema)
        if path:
            if "default" in node or path not in keys:
                keys[path] = node.get("default", keys.get(path, NO_DEFAULT))
        # `then`: keys and defaults that apply under a condition (an `h5ad` section's)
        conditional = [node["then"]] if "then" in node else []
        for branch in (*node.get("allOf", ()), *node.get("anyOf", ()), *node.get("oneOf", ()), *conditional):
            walk(branch, path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}" if path else name)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{path}.{PLACEHOLDER}")
        items = node.get("items")
        if isinstance(items, dict) and ("properties" in items or "$ref" in items):
            walk(items, f"{path}[]")

    walk(schema, "")
    return keys


ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|")


def readme_keys(text: str) -> dict[str, str]:
    """Key -> default cell of the README's table rows ("| `key` | type | default | description |")."""
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = ROW.match(line)
        if match:
            key, default = match.group(1), match.group(3).strip()
            assert key not in keys, f"config/README.md line {number}: {key} is documented twice"
            keys[key] = default
    return keys


def default_problem(key: str, expected: object, cell: str) -> str | None:
    """Why a README default cell does not state the schema's default, or None."""
    if expected is NO_DEFAULT:
        if cell.startswith("`") and cell.endswith("`"):
            return f"{key}: README gives the default {cell} but the schema has none"
        return None
    if not (cell.startswith("`") and cell.endswith("`")):
        return f"{key}: README default {cell!r} should be the schema's `{expected}` (in backticks)"
    if yaml.safe_load(cell[1:-1]) != expected:
        return f"{key}: README default {cell} differs from the schema's {expected!r}"
    return None


def compare(schema_text: str, readme_text: str) -> list[str]:
    documented = readme_keys(readme_text)
    expected = schema_keys(yaml.safe_load(schema_text))
    problems = [f"{key}: in the schema but not in config/README.md" for key in expected if key not in documented]
    problems += [f"{key}: in config/README.md but not in the schema" for key in documented if key not in expected]
    for key in expected.keys() & documented.keys():
        problem = default_problem(key, expected[key], documented[key])
        if problem:
            problems.append(problem)
    return problems


def test_readme_documents_every_schema_key():
    problems = compare(SCHEMA_PATH.read_text(), README_PATH.read_text())
    assert not problems, "\n".join(problems)


def test_schema_walk_sees_nested_and_referenced_keys():
    keys = schema_keys(yaml.safe_load(SCHEMA_PATH.read_text()))
    assert keys["penalty.alpha"] == 100
    assert keys["preprocess.min_counts"] == 500  # default beside the allOf reference
    assert keys["sections.<name>.preprocess.hvg_flavor"] is NO_DEFAULT  # through $ref, no default there
    assert keys["sections.<name>.files.spatial.tar.gz.sha256"] is NO_DEFAULT
    assert keys["train.batch_size"] is None
    assert "published_sections.<name>" in keys
    assert keys["sections.<name>.spatial_key"] == "spatial"  # default under `then`
    assert keys["sections.<name>.h5ad"] is NO_DEFAULT


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s, r: (s, re.sub(r"^\| `penalty\.sigma` .*\n", "", r, flags=re.M)),
            "penalty.sigma: in the schema but not in",
        ),
        (
            lambda s, r: (s, r.replace("`penalty.sigma`", "`penalty.sigmaa`")),
            "penalty.sigmaa: in config/README.md but not in the schema",
        ),
        (
            lambda s, r: (
                s.replace(
                    "description: Lower-case hex md5.}",
                    "description: Lower-case hex md5.}\n      sha512: {type: string}",
                    1,
                ),
                r,
            ),
            "sections.<name>.files.filtered_feature_bc_matrix.h5.sha512: in the schema",
        ),
        (
            lambda s, r: (s.replace("default: [0, 1, 2, 3, 4]", "default: [0, 1, 2]"), r),
            "seeds: README default `[0, 1, 2, 3, 4]` differs",
        ),
    ],
    ids=["missing", "unknown", "new-referenced-key", "stale-default"],
)
def test_comparison_names_the_key(edit, message):
    schema, readme = edit(SCHEMA_PATH.read_text(), README_PATH.read_text())
    problems = compare(schema, readme)
    assert any(message in problem for problem in problems), problems
