# Checking the config: each mistake stops the workflow with one line that names
# the key, instead of a schema dump, a KeyError or a missing file "alphanan".

import math
import os

import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def stop(message):
    """End the workflow with one line on the console (no traceback)."""
    raise SystemExit(f"Error: {message}")


def key_path(path):
    """Where a value sits in the config: penalty.alpha, sensitivity.alphas[2]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "the config"


def one_of_problem(error):
    """A section matching no source (or several), said in terms of its keys."""
    branches = [branch.get("required", []) for branch in error.validator_value]
    given = set(error.instance) if isinstance(error.instance, dict) else set()
    sources = " | ".join(" + ".join(branch) for branch in branches)
    complete = [branch for branch in branches if set(branch) <= given]
    if len(complete) > 1:
        both = " and ".join(" + ".join(branch) for branch in complete)
        return f"gives {both}; give exactly one source ({sources})"
    started = max(branches, key=lambda branch: len(given & set(branch)))
    if given & set(started):
        missing = ", ".join(key for key in started if key not in given)
        present = ", ".join(key for key in started if key in given)
        return f"{present} needs {missing} too"
    return f"needs a source: {sources}"


def schema_problem(error):
    """One line for a jsonschema ValidationError: the key path and the problem."""
    where = key_path(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        unknown = ", ".join(sorted(set(error.instance) - set(known)))
        prefix = "" if where == "the config" else f"{where}."
        return f"{prefix}{unknown}: unknown key (known keys here: {', '.join(known)})"
    if error.validator == "oneOf" and all(
        "required" in branch for branch in error.validator_value
    ):
        return f"{where}: {one_of_problem(error)}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        prefix = "" if where == "the config" else f"{where}."
        return f"{prefix}{missing}: required key is missing"
    if error.path and error.path[0] == "joint" and len(error.path) == 2:
        group = error.instance
        if error.validator == "minItems":
            return (
                f"{where}: a group needs at least two sections, got {len(group)} "
                f"({', '.join(map(str, group)) or 'none'})"
            )
        if error.validator == "uniqueItems":
            twice = sorted({str(s) for s in group if group.count(s) > 1})
            return f"{where}: section(s) {', '.join(twice)} listed more than once"
    if error.validator == "dependentRequired":
        # "'h5ad' is a dependency of 'spatial_key'"
        _, needed, _, key, _ = error.message.split("'")
        prefix = "" if where == "the config" else f"{where}."
        if key in error.validator_value.get(needed, ()):  # a pair: both or neither
            return f"{prefix}{key} needs {needed} too (give both or neither)"
        return f"{prefix}{key}: only valid with {needed}"
    return f"{where}: {error.message}"


def non_finite(value, path=()):
    """Paths of NaN and infinite numbers (.nan, .inf pass the schema's minimum)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite(item, (*path, index))
    elif isinstance(value, float) and not math.isfinite(value):
        yield path, value


def check_sections(key, names):
    unknown = [name for name in names if name not in config["sections"]]
    if unknown:
        stop(
            f"config: {key}: unknown section(s) {', '.join(map(str, unknown))} "
            f"(sections: {', '.join(config['sections'])})"
        )


class DuplicateKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word: this loader refuses."""


def refuse_duplicate_keys(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"{key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                "the second would silently replace the first",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


DuplicateKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, refuse_duplicate_keys
)


def check_duplicate_keys():
    """Each config file read, parsed again: a key given twice is one line."""
    for path in workflow.configfiles:
        try:
            with open(path) as handle:
                yaml.load(handle, Loader=DuplicateKeyLoader)
        except yaml.constructor.ConstructorError as err:
            shown = os.path.relpath(path)
            stop(f"config: {path if shown.startswith('..') else shown}: {err.problem}")
        except (OSError, yaml.YAMLError):
            pass  # Snakemake reports a config file it cannot read or parse


def check_section_names():
    """Section names are text: YAML reads `1:` as a number, which the schema's name
    pattern does not see and the rules cannot use."""
    sections = config.get("sections")
    if not isinstance(sections, dict):
        return
    for name in sections:
        if not isinstance(name, str):
            kind = "a boolean" if isinstance(name, bool) else "a number"
            stop(
                f"config: sections: the section name {name!r} is read as {kind}, not text; "
                f"quote it ('{name}') or start it with a letter"
            )


def check_joint():
    """Each `joint` group: known sections, a name no section has, one preprocessing."""
    sections = config["sections"]
    for group, members in config["joint"].items():
        key = f"joint.{group}"
        if group in sections:
            stop(
                f"config: {key}: the group name {group} is also a section's name; "
                "name the group otherwise"
            )
        check_sections(key, members)
        # the top-level preprocess with each section's own keys (filled by the schema)
        settings = {
            section: {**config["preprocess"], **sections[section].get("preprocess", {})}
            for section in members
        }
        for name in sorted({name for s in settings.values() for name in s}):
            values = {section: settings[section].get(name) for section in members}
            if len({repr(v) for v in values.values()}) > 1:
                given = ", ".join(f"{s} {v}" for s, v in values.items())
                stop(
                    f"config: {key}: its sections are preprocessed differently (preprocess.{name}: "
                    f"{given}); a group is preprocessed with one setting, so give them the same "
                    "(sections.<name>.preprocess)"
                )


def check_config(schema):
    """Validate `config` against the schema (filling defaults), then what a schema
    cannot say: keys given once, section names as text, finite numbers, section
    names that exist."""
    check_duplicate_keys()
    check_section_names()
    try:
        validate(config, schema)
    except WorkflowError as err:
        error = err.__context__
        if error is None or not hasattr(error, "absolute_path"):
            raise
        stop(f"config: {schema_problem(error)}")
    for path, value in non_finite(config):
        stop(f"config: {key_path(path)}: must be a finite number, got {value}")
    if config["sensitivity"].get("sections") is not None:
        check_sections("sensitivity.sections", config["sensitivity"]["sections"])
    if "section" in config["figure4"]:
        check_sections("figure4.section", [config["figure4"]["section"]])
    check_sections("published_sections", list(config["published_sections"]))
    check_joint()
