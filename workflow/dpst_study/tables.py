"""Table 1 of the study (Zhou & Du, BIOKDD 2024): Moran's I and Geary's C, with and without the penalty.

The input is the workflow's tidy ``runs`` table, one row per trained model
(section, model, alpha, seed) with its metrics. ``alpha == 0`` runs are the
"Distorted" group, ``alpha == alpha_on`` runs the "Distance Preserving" group.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from dpst._files import atomic_path

GROUP_OFF = "Distorted"
GROUP_ON = "Distance Preserving"
GROUPS = (GROUP_OFF, GROUP_ON)
METRICS = ("moran_I", "geary_C")
METRIC_LETTER = {"moran_I": "I", "geary_C": "C"}
METRIC_NAME = {"moran_I": "Moran's I", "geary_C": "Geary's C"}
# LaTeX column headings (raw LaTeX, not escaped): the arrow says which way is "more autocorrelated".
METRIC_TITLE_LATEX = {"I": r"Moran's $I$ $\uparrow$", "C": r"Geary's $C$ $\downarrow$"}
MODEL_ORDER = ("vae", "scvi")
MODEL_LABEL = {"vae": "VAE", "scvi": "scVI"}
STUDY_SECTIONS = ("A2", "A1", "P2", "P1")  # the published column order
KEYS = ("section", "model", "alpha", "seed")
MISSING_CELL = "n/a"
JOINT = "joint"
"""Column of the runs table naming a joint run's group (``joint`` in the config); empty for a single section."""

# Typed in from the study's Table 1: per row the I values for A2 A1 P2 P1,
# then the C values for the same sections, each "mean sd".
_PUBLISHED_ROWS = {
    (GROUP_OFF, "vae"): "0.62 0.07 0.55 0.05 0.52 0.05 0.52 0.03 0.36 0.06 0.41 0.03 0.49 0.05 0.43 0.03",
    (GROUP_OFF, "scvi"): "0.43 0.03 0.52 0.04 0.37 0.02 0.45 0.04 0.57 0.03 0.48 0.04 0.62 0.02 0.55 0.04",
    (GROUP_ON, "vae"): "0.64 0.02 0.60 0.03 0.56 0.06 0.49 0.06 0.35 0.02 0.37 0.02 0.45 0.07 0.46 0.05",
    (GROUP_ON, "scvi"): "0.45 0.04 0.52 0.04 0.43 0.02 0.47 0.03 0.55 0.05 0.48 0.04 0.57 0.02 0.53 0.03",
}


def _published_long() -> pd.DataFrame:
    rows = []
    for (group, model), text in _PUBLISHED_ROWS.items():
        values = np.array(text.split(), dtype=float).reshape(len(METRICS), len(STUDY_SECTIONS), 2)
        for m, metric in enumerate(METRICS):
            for s, section in enumerate(STUDY_SECTIONS):
                rows.append((group, model, metric, section, *values[m, s]))
    return pd.DataFrame(rows, columns=["group", "model", "metric", "section", "mean", "sd"])


PUBLISHED_TABLE1 = _published_long()
"""The study's Table 1 (mean and sd over 5 seeds), long: group, model, metric, section, mean, sd."""


def _require_columns(runs: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks column(s) {missing}; it has {list(runs.columns)}")


def _ordered(values: Iterable, preferred: Sequence | None = None) -> list:
    """Unique values, ``preferred`` ones first in that order, the rest in order of appearance."""
    seen = list(dict.fromkeys(values))
    head = [v for v in (preferred or ()) if v in seen]
    return head + [v for v in seen if v not in head]


def section_order(runs: pd.DataFrame, sections: Sequence[str] | None = None) -> list[str]:
    """The sections to report: ``sections`` (all must be in ``runs``) or their order of appearance."""
    present = list(dict.fromkeys(runs["section"]))
    if sections is None:
        return present
    absent = [s for s in sections if s not in present]
    if absent:
        raise ValueError(f"section(s) {absent} not in the runs table, which has {present}")
    return list(sections)


def model_order(runs: pd.DataFrame) -> list[str]:
    """Models present, VAE then scVI, then any other in order of appearance."""
    return _ordered(runs["model"], MODEL_ORDER)


def stack_joint_runs(runs: pd.DataFrame, joint_runs: pd.DataFrame) -> pd.DataFrame:
    """The single-section runs and the joint runs' per-section rows in one runs table.

    Parameters
    ----------
    runs
        One row per single-section run (``results/metrics/runs.tsv``).
    joint_runs
        One row per joint run and section (``results/metrics/joint_runs.tsv``): its
        ``group`` becomes the :data:`JOINT` column, and its rows over all of a
        group's spots (section ``"all"``) are left out.

    Returns
    -------
    pandas.DataFrame
        Both, with :data:`JOINT` empty on the single-section runs.
    """
    joint = joint_runs[joint_runs["section"].astype(str) != "all"].rename(columns={"group": JOINT})
    return pd.concat([runs.assign(**{JOINT: ""}), joint.assign(**{JOINT: joint[JOINT].astype(str)})], ignore_index=True)


def single_section(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of single-section runs (no :data:`JOINT` group)."""
    if JOINT not in table:
        return table
    return table[table[JOINT].fillna("").astype(str) == ""]


def method_label(model: str, joint: object = "") -> str:
    """A row's method: ``"VAE"``, or ``"VAE, joint (anterior)"`` for a joint run of group ``anterior``."""
    label = MODEL_LABEL.get(model, model)
    joint = "" if joint is None or (isinstance(joint, float) and math.isnan(joint)) else str(joint)
    return f"{label}, joint ({joint})" if joint else label


def penalty_runs(runs: pd.DataFrame, alpha_on: float, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The runs with alpha 0 and alpha ``alpha_on``, with a ``group`` column; checks the contract.

    Raises ValueError when a column is missing, ``alpha_on`` is not positive,
    either alpha has no runs, or a (section, model, alpha, seed) appears twice.
    """
    _require_columns(runs, [*KEYS, *columns])
    if not alpha_on > 0:
        raise ValueError(f"alpha_on must be positive (alpha 0 is the 'off' group), got {alpha_on!r}")
    alpha = runs["alpha"].to_numpy(dtype=float)
    is_off, is_on = np.isclose(alpha, 0.0, rtol=0, atol=1e-12), np.isclose(alpha, alpha_on)
    available = sorted(set(alpha.tolist()))
    for mask, label in ((is_off, "alpha = 0"), (is_on, f"alpha = {alpha_on:g}")):
        if not mask.any():
            raise ValueError(f"runs table has no runs with {label}; alphas present: {available}")
    out = runs.loc[is_off | is_on].copy()
    out["group"] = np.where(is_off[is_off | is_on], GROUP_OFF, GROUP_ON)
    keys = [JOINT, *KEYS] if JOINT in out else list(KEYS)
    duplicated = out.duplicated(keys, keep=False)
    if duplicated.any():
        raise ValueError(f"duplicate runs for ({', '.join(keys)}):\n{out.loc[duplicated, keys]}")
    return out


def table1(runs: pd.DataFrame, alpha_on: float, sections: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean and sd over seeds of Moran's I and Geary's C, long.

    One row per (group, model, metric, section) with columns group, model,
    metric, section, alpha, mean, sd (ddof=1; NaN with one seed), n_seeds. With
    joint runs (a :data:`JOINT` column, :func:`stack_joint_runs`), one row per
    (group, model, joint, metric, section): each joint group's rows follow the
    single-section rows of their model, ``joint`` empty on the latter.
    """
    selected = penalty_runs(runs, alpha_on, METRICS)
    sections = section_order(single_section(selected), sections)
    selected = selected[selected["section"].isin(sections)]
    joint = [JOINT] if JOINT in selected else []
    if joint:
        selected[JOINT] = selected[JOINT].fillna("").astype(str)
    tidy = selected.melt(
        id_vars=["group", "model", *joint, "section", "alpha", "seed"],
        value_vars=list(METRICS),
        var_name="metric",
        value_name="value",
    )
    stats = (
        tidy.groupby(["group", "model", *joint, "metric", "section"], sort=False)
        .agg(alpha=("alpha", "first"), mean=("value", "mean"), sd=("value", "std"), n_seeds=("value", "count"))
        .reset_index()
    )
    order = {"group": list(GROUPS), "model": model_order(selected)}
    if joint:
        order[JOINT] = _ordered(selected[JOINT], [""])
    order |= {"metric": list(METRICS), "section": sections}
    for column, levels in order.items():
        stats[column] = pd.Categorical(stats[column], categories=levels, ordered=True)
    stats = stats.sort_values(list(order)).reset_index(drop=True)
    for column in order:  # back to plain strings for CSV and merges
        stats[column] = stats[column].astype(str)
    return stats[["group", "model", *joint, "metric", "section", "alpha", "mean", "sd", "n_seeds"]]


def format_cell(mean: float, sd: float, decimals: int = 2) -> str:
    """``"0.62 (0.07)"``; ``"n/a"`` for a missing mean, ``"0.62 (n/a)"`` for a missing sd."""
    if mean is None or math.isnan(mean):
        return MISSING_CELL
    sd_text = MISSING_CELL if sd is None or math.isnan(sd) else f"{sd:.{decimals}f}"
    return f"{mean:.{decimals}f} ({sd_text})"


def table1_wide(long: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """The paper's layout: columns group, method, then "I <section>"..., "C <section>"...

    Cells are strings "mean (sd)"; combinations without runs read "n/a".
    """
    _require_columns(long, ["group", "model", "metric", "section", "mean", "sd"])
    joint = long[JOINT] if JOINT in long else [""] * len(long)
    long = long.assign(
        method=[method_label(m, j) for m, j in zip(long["model"], joint, strict=True)],
        column=[f"{METRIC_LETTER.get(m, m)} {s}" for m, s in zip(long["metric"], long["section"], strict=True)],
        cell=[format_cell(m, s, decimals) for m, s in zip(long["mean"], long["sd"], strict=True)],
    )
    metrics = _ordered(long["metric"], METRICS)
    sections = list(dict.fromkeys(long["section"]))
    columns = [f"{METRIC_LETTER.get(m, m)} {s}" for m in metrics for s in sections]
    rows = pd.MultiIndex.from_tuples(
        list(dict.fromkeys(zip(long["group"], long["method"], strict=True))), names=["group", "method"]
    )
    wide = long.pivot(index=["group", "method"], columns="column", values="cell")
    wide = wide.reindex(index=rows, columns=columns).fillna(MISSING_CELL)
    wide.columns.name = None
    return wide.reset_index()


def to_markdown(wide: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``table1_wide``'s output."""
    return wide.to_markdown(index=False, disable_numparse=True) + "\n"


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: object) -> str:
    """Text safe inside a LaTeX tabular cell or caption."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


# Why not pandas' Styler.to_latex: tried on this table (pandas 2.3), it gets the
# escaping, caption, label, booktabs rules and the spanning I/C headings right
# (MultiIndex columns, multicol_align="c"), but (1) it has no \cmidrule under a
# spanning heading, (2) its only rule between row groups is \cline (clines=...),
# which booktabs spaces badly, (3) index names go on a header row of their own
# and (4) it needs jinja2, one more package in the rules' environment. Getting this
# table from it means post-editing its output with string replacements, which
# is less simple than writing the rows here.
def _header_groups(columns: Sequence[str]) -> list[tuple[str, list[str]]]:
    """Consecutive value columns sharing a metric letter: [("I", ["A2", ...]), ...]."""
    groups: list[tuple[str, list[str]]] = []
    for column in columns:
        prefix, _, rest = str(column).partition(" ")
        if groups and groups[-1][0] == prefix:
            groups[-1][1].append(rest)
        else:
            groups.append((prefix, [rest]))
    return groups


def to_latex(
    wide: pd.DataFrame,
    caption: str = "Moran's I and Geary's C of the latent representation, mean (sd) over seeds.",
    label: str | None = "tab:table1",
) -> str:
    r"""A booktabs ``table`` environment (needs ``\usepackage{booktabs}``).

    The header groups the "I ..." and "C ..." columns under one spanning
    metric heading; the group name is printed once per block of rows.
    """
    lead = ["group", "method"]
    value_columns = [c for c in wide.columns if c not in lead]
    groups = _header_groups(value_columns)
    out = io.StringIO()
    out.write("\\begin{table}[ht]\n\\centering\n")
    out.write(f"\\caption{{{latex_escape(caption)}}}\n")
    if label:
        out.write(f"\\label{{{latex_escape(label)}}}\n")
    out.write(f"\\begin{{tabular}}{{ll{'c' * len(value_columns)}}}\n\\toprule\n")
    spans, rules, start = [], [], len(lead) + 1
    for prefix, sections in groups:
        title = METRIC_TITLE_LATEX.get(prefix, latex_escape(prefix))
        spans.append(f"\\multicolumn{{{len(sections)}}}{{c}}{{{title}}}")
        rules.append(f"\\cmidrule(lr){{{start}-{start + len(sections) - 1}}}")
        start += len(sections)
    out.write(" & ".join(["", "", *spans]) + " \\\\\n" + "".join(rules) + "\n")
    sections = [latex_escape(s) for _, group in groups for s in group]
    out.write(" & ".join(["Group", "Method", *sections]) + " \\\\\n\\midrule\n")
    previous = None
    for _, row in wide.iterrows():
        if previous is not None and row["group"] != previous:
            out.write("\\midrule\n")
        group = latex_escape(row["group"]) if row["group"] != previous else ""
        cells = [group, latex_escape(row["method"]), *(latex_escape(row[c]) for c in value_columns)]
        out.write(" & ".join(cells) + " \\\\\n")
        previous = row["group"]
    out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()


def compare_published(long: pd.DataFrame, section_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Our Table 1 beside the published one, matched on (group, model, metric, section).

    ``section_map`` maps our section names to the study's (identity by
    default); sections without a published counterpart keep NaN published
    columns. ``difference`` is ours minus published.
    """
    _require_columns(long, ["group", "model", "metric", "section", "mean", "sd"])
    section_map = dict(section_map or {})
    ours = long.rename(columns={"mean": "ours_mean", "sd": "ours_sd"})
    ours["published_section"] = [section_map.get(s, s) for s in ours["section"]]
    published = PUBLISHED_TABLE1.rename(
        columns={"section": "published_section", "mean": "published_mean", "sd": "published_sd"}
    )
    merged = ours.merge(published, on=["group", "model", "metric", "published_section"], how="left")
    merged["difference"] = merged["ours_mean"] - merged["published_mean"]
    columns = [
        "group",
        "model",
        "metric",
        "section",
        "published_section",
        "n_seeds",
        "ours_mean",
        "ours_sd",
        "published_mean",
        "published_sd",
        "difference",
    ]
    return merged[[c for c in columns if c in merged.columns]]


def comparison_markdown(comparison: pd.DataFrame, decimals: int = 3) -> str:
    """``compare_published``'s output as Markdown; missing numbers print as "n/a"."""
    shown = comparison.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = [MISSING_CELL if pd.isna(v) else f"{v:.{decimals}f}" for v in shown[column]]
    return shown.to_markdown(index=False, disable_numparse=True) + "\n"


def report_notes(long: pd.DataFrame, comparison: pd.DataFrame) -> tuple[str, str]:
    """What the report's two tables need said under them: rounding, one seed, joint rows, sections without published values."""
    rounding = "Rounded to two decimals, as the study prints them; {} holds every digit."
    one_seed = " The sd reads n/a with one seed." if (long["n_seeds"] < 2).any() else ""
    table_note = rounding.format("table1.csv") + one_seed
    groups = [g for g in dict.fromkeys(long[JOINT]) if g] if JOINT in long else []
    if groups:
        table_note += (
            " Rows 'joint (group)': one model trained on the group's sections together (the section as batch_key, "
            "the penalty within sections), each cell over that section's spots; n/a for sections outside the group "
            f"(groups: {', '.join(groups)})."
        )
    unpublished = list(dict.fromkeys(comparison.loc[comparison["published_mean"].isna(), "section"]))
    compare_note = rounding.format("table1_vs_published.csv") + one_seed
    if unpublished:
        one = len(unpublished) == 1
        compare_note += (
            f" Published values exist for the study's 10x mouse brain sections {', '.join(sorted(STUDY_SECTIONS))} only "
            f"(the config's published_sections maps section names to them); {', '.join(map(str, unpublished))} "
            f"{'is' if one else 'are'} not among them, so {'its' if one else 'their'} study section, published and "
            "difference cells read n/a."
        )
    return table_note, compare_note


def _cells(means: pd.Series, sds: pd.Series, decimals: int) -> list[str]:
    return [format_cell(m, s, decimals) for m, s in zip(means, sds, strict=True)]


def comparison_report(comparison: pd.DataFrame, decimals: int = 2) -> pd.DataFrame:
    """``compare_published``'s output as the report shows it: "mean (sd)" cells at the study's two decimals.

    Columns group, method, metric, section, study section, seeds, ours,
    published, difference (ours minus published, signed). A section with no
    published counterpart reads "n/a" in the study section, published and
    difference columns.
    """
    _require_columns(comparison, ["group", "model", "metric", "section", "published_section", "n_seeds"])
    _require_columns(comparison, ["ours_mean", "ours_sd", "published_mean", "published_sd", "difference"])
    published = comparison["published_mean"].notna()
    return pd.DataFrame(
        {
            "group": comparison["group"],
            "method": [MODEL_LABEL.get(m, m) for m in comparison["model"]],
            "metric": [METRIC_NAME.get(m, m) for m in comparison["metric"]],
            "section": comparison["section"],
            "study section": comparison["published_section"].where(published, MISSING_CELL),
            "seeds": comparison["n_seeds"],
            "ours": _cells(comparison["ours_mean"], comparison["ours_sd"], decimals),
            "published": _cells(comparison["published_mean"], comparison["published_sd"], decimals),
            "difference": [MISSING_CELL if pd.isna(d) else f"{d:+.{decimals}f}" for d in comparison["difference"]],
        }
    )


_HTML_STYLE = (
    "body{font-family:sans-serif;font-size:14px;margin:1em}"
    "table{border-collapse:collapse}"
    "th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}"
    "th{border-bottom:2px solid #888}"
    "p{max-width:60em;color:#444}"
)


def to_html(table: pd.DataFrame, title: str, note: str = "") -> str:
    """A standalone HTML page with ``table`` (cells printed as they are), a title and a note below it."""
    body = table.to_html(index=False, border=0, na_rep=MISSING_CELL, escape=True)
    note_html = f"<p>{html.escape(note)}</p>\n" if note else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_HTML_STYLE}</style>\n</head>\n<body>\n<h3>{html.escape(title)}</h3>\n{body}\n{note_html}"
        "</body>\n</html>\n"
    )


PathArg = str | PathLike


def write_table1(
    runs: pd.DataFrame,
    alpha_on: float,
    paths: Mapping[str, PathArg],
    sections: Sequence[str] | None = None,
    section_map: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Write Table 1 as the files named in ``paths`` and return the long table.

    Keys: "csv" (long, full precision), "md", "tex", "html" (the paper's
    layout at two decimals, for the report), "compare_csv", "compare_md" and
    "compare_html" (beside the published values); each is optional.
    """
    known = {"csv", "md", "tex", "html", "compare_csv", "compare_md", "compare_html"}
    unknown = set(paths) - known
    if unknown:
        raise ValueError(f"unknown output key(s) {sorted(unknown)}; expected some of {sorted(known)}")
    long = table1(runs, alpha_on, sections)
    wide = table1_wide(long)
    comparison = compare_published(single_section(long).drop(columns=JOINT, errors="ignore"), section_map)
    notes = report_notes(long, comparison)
    writers = {
        "csv": lambda p: long.to_csv(p, index=False),
        "md": lambda p: Path(p).write_text(to_markdown(wide)),
        "tex": lambda p: Path(p).write_text(to_latex(wide)),
        "compare_csv": lambda p: comparison.to_csv(p, index=False),
        "compare_md": lambda p: Path(p).write_text(comparison_markdown(comparison)),
        "html": lambda p: Path(p).write_text(
            to_html(wide, "Table 1: Moran's I and Geary's C, mean (sd) over seeds", notes[0])
        ),
        "compare_html": lambda p: Path(p).write_text(
            to_html(comparison_report(comparison), "Table 1 beside the published values", notes[1])
        ),
    }
    for key, path in paths.items():
        with atomic_path(path) as tmp:
            writers[key](tmp)
    return long
