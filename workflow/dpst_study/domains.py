"""Spatial domains of the study's runs: cluster a run's latent, score it against the section's annotation, summarise.

Each run of Table 1 on a section with an annotation (``domain_key``) is
clustered with :func:`dpst.tl.domains` once per fit seed and scored with
:func:`dpst.tl.domain_scores` (ARI and NMI on the annotated spots, CHAOS and PAS
on all). So is each joint run (``joint`` groups), once per annotated section of
its group, on that section's spots of the joint latent: its rows carry the group
in ``joint``, beside the section's own runs. The summary gives mean and sd over
training seeds x fit seeds, with (``penalty.alpha``) and without (alpha 0) the penalty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike

import anndata as ad
import numpy as np
import pandas as pd

import dpst
from dpst._files import atomic_path

from .runs import latent_key
from .sections import ANNOTATION_KEY, SECTION_KEY
from .tables import GROUP_OFF, GROUP_ON, JOINT, MISSING_CELL, format_cell, method_label, model_order

RUN_KEYS = ("section", "model", "alpha", "seed")
SCORES = ("ARI", "NMI", "CHAOS", "PAS")
# which way is better, for the Markdown header
SCORE_TITLE = {"ARI": "ARI ↑", "NMI": "NMI ↑", "CHAOS": "CHAOS ↓", "PAS": "PAS ↓"}
TRUTH = "annotation"  # the annotation's column in the AnnData a run is clustered in
SETTINGS = ("method", "covariance_type", "refine", "n_domains")


def fit_column(fit_seed: int) -> str:
    """Column of a run's labels.tsv holding the domains of one fit seed: ``"fit0"``."""
    return f"fit{int(fit_seed)}"


def read_annotation(path: str | PathLike, domain_key: str) -> pd.Series:
    """The annotation column of a preprocessed section, read without its matrices.

    Parameters
    ----------
    path
        ``results/preprocessed/{section}.h5ad``.
    domain_key
        The section's ``domain_key``: a column of its ``obs``.

    Returns
    -------
    pandas.Series
        The annotation, indexed by spot; missing where a spot is unannotated.

    Raises
    ------
    ValueError
        The file has no such column (the user's to fix, said in one line).
    """
    section = ad.read_h5ad(path, backed="r")
    try:
        obs = section.obs
    finally:
        section.file.close()
    if domain_key not in obs.columns:
        raise ValueError(
            f"{path} has no obs column {domain_key!r} (its columns: {', '.join(map(str, obs.columns)) or 'none'}); "
            "set the section's domain_key to the column of the annotation"
        )
    return obs[domain_key]


def joint_section(latent: ad.AnnData, group_obs: pd.DataFrame, section: str) -> tuple[ad.AnnData, pd.Series]:
    """One section's spots of a joint run's latent, and their annotation.

    Parameters
    ----------
    latent
        The joint run's latent.h5ad (sections in ``obs["section"]``).
    group_obs
        The preprocessed group's ``obs`` (:func:`dpst_study.joint.read_group_obs`),
        the annotation in its ``annotation`` column.
    section
        The section to take.

    Returns
    -------
    latent : anndata.AnnData
        The section's rows.
    annotation : pandas.Series
        Their annotation, indexed by spot; NaN where unannotated.

    Raises
    ------
    ValueError
        The run has no spot of ``section``.
    """
    rows = (latent.obs[SECTION_KEY].astype(str) == section).to_numpy()
    if not rows.any():
        raise ValueError(
            f"the joint run has no spot of section {section} (its sections: "
            f"{', '.join(map(str, latent.obs[SECTION_KEY].unique()))})"
        )
    part = latent[rows].copy()
    annotation = group_obs[ANNOTATION_KEY].reindex(part.obs_names).astype(object)
    return part, annotation.where(annotation.notna(), np.nan)


def cluster_run(
    latent: ad.AnnData, annotation: pd.Series, model: str, settings: Mapping
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cluster one run's latent once per fit seed and score each clustering.

    Parameters
    ----------
    latent
        The run's latent.h5ad (:func:`dpst_study.runs.write_run`): the codes in
        ``obsm[latent_key(model)]`` and the micrometres in ``obsm["spatial_um"]``.
    annotation
        The section's annotation (:func:`read_annotation`), indexed by spot; every
        spot of the run must be in it.
    model
        ``"vae"`` or ``"scvi"``.
    settings
        ``domain_key``, ``n_domains`` and the config's ``domains``: ``method``,
        ``covariance_type``, ``refine`` and ``fit_seeds``.

    Returns
    -------
    scores : pandas.DataFrame
        One row per fit seed: ``fit_seed``, the settings, ``n_found`` (the domains
        found), ``ARI``, ``NMI``, ``n_scored``, ``CHAOS``, ``PAS`` and ``n_spots``.
    labels : pandas.DataFrame
        The domains, one row per spot and one column per fit seed (:func:`fit_column`).

    Raises
    ------
    ValueError
        Spots of the run are missing from the annotation.
    """
    missing = latent.obs_names.difference(annotation.index)
    if len(missing):
        raise ValueError(
            f"{len(missing)} spots of the run are not in the section's annotation (e.g. {missing[0]}): "
            "the run was not trained on this preprocessed section; rerun it"
        )
    key = latent_key(model)
    adata = ad.AnnData(
        obs=pd.DataFrame({TRUTH: annotation.reindex(latent.obs_names).to_numpy()}, index=latent.obs_names),
        obsm={key: np.asarray(latent.obsm[key]), "spatial_um": np.asarray(latent.obsm["spatial_um"])},
    )
    rows, labels = [], {}
    for fit_seed in settings["fit_seeds"]:
        column = fit_column(fit_seed)
        found = dpst.tl.domains(
            adata,
            key,
            settings["n_domains"],
            method=settings["method"],
            covariance_type=settings["covariance_type"],
            refine=settings["refine"],
            seed=fit_seed,
            key_added=column,
            spatial_key="spatial_um",
            coordinate_unit="um",
        )
        scores = dpst.tl.domain_scores(
            adata, column, truth_key=TRUTH, spatial_key="spatial_um", coordinate_unit="um"
        ).loc["all"]
        labels[column] = found.astype(str)
        rows.append(
            {
                "fit_seed": int(fit_seed),
                **{name: settings[name] for name in SETTINGS},
                "n_found": int(found.nunique()),
                **scores.to_dict(),
            }
        )
    table = pd.DataFrame(rows)
    counts = [column for column in ("n_scored", "n_spots") if column in table]
    table[counts] = table[counts].astype(np.int64)
    return table, pd.DataFrame(labels, index=latent.obs_names).rename_axis("spot")


def _with_groups(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``table`` with its ``joint`` column filled, and the groups in order (own runs first).

    ``""`` marks a section's own run (also what a written TSV's empty cell reads back as);
    the groups follow as they came.
    """
    groups = table[JOINT].fillna("").astype(str) if JOINT in table else pd.Series("", index=table.index)
    return table.assign(**{JOINT: groups}), sorted(dict.fromkeys(groups), key=bool)


def collect_domains(paths: Iterable[str | PathLike]) -> pd.DataFrame:
    """Per-run scores.tsv files -> one row per section, model, alpha, seed and fit seed.

    Parameters
    ----------
    paths
        The runs' scores.tsv files, each with the run's section, model, alpha and seed.

    Returns
    -------
    pandas.DataFrame
        Sorted by section (in order of appearance), joint group (``""`` for the
        section's own runs, first), model, alpha, seed and fit seed.

    Raises
    ------
    ValueError
        ``paths`` is empty.
    """
    frames = [pd.read_csv(path, sep="\t") for path in paths]
    if not frames:
        raise ValueError("no runs' domain scores to collect")
    table = pd.concat(frames, ignore_index=True)
    table, groups = _with_groups(table)
    first = ["section", JOINT, *RUN_KEYS[1:], "fit_seed"]
    table = table[first + [c for c in table.columns if c not in first]]
    order = {"section": list(dict.fromkeys(table["section"])), JOINT: groups}
    keys = {f"_{column}": table[column].map(levels.index) for column, levels in order.items()}
    table = table.assign(**keys).sort_values(["_section", f"_{JOINT}", *first[2:]], kind="stable")
    return table.drop(columns=list(keys)).reset_index(drop=True)


def domain_summary(table: pd.DataFrame, alpha_on: float) -> pd.DataFrame:
    """Mean and sd (ddof=1) of each score over training seeds x fit seeds, without and with the penalty.

    Parameters
    ----------
    table
        :func:`collect_domains`' table.
    alpha_on
        The penalty's strength (``penalty.alpha``); rows with another non-zero alpha are left out.

    Returns
    -------
    pandas.DataFrame
        One row per section, joint group (``""``: the section's own runs, first), model
        and group (``"Distorted"``: alpha 0, then ``"Distance Preserving"``): ``alpha``, ``n_seeds``, ``n_fits``, and
        ``{score}_mean`` and ``{score}_sd`` for ARI, NMI, CHAOS and PAS (sd NaN for a single value).

    Raises
    ------
    ValueError
        A column is missing, or no row has alpha 0 or ``alpha_on``.
    """
    missing = [c for c in (*RUN_KEYS, "fit_seed", *SCORES) if c not in table.columns]
    if missing:
        raise ValueError(f"domains table lacks column(s) {missing}; it has {list(table.columns)}")
    alpha = table["alpha"].to_numpy(dtype=float)
    off, on = np.isclose(alpha, 0.0, rtol=0, atol=1e-12), np.isclose(alpha, alpha_on) & (alpha_on > 0)
    if not (off | on).any():
        raise ValueError(f"no runs with alpha 0 or {alpha_on:g}; alphas present: {sorted(set(alpha.tolist()))}")
    selected = table.loc[off | on].assign(group=np.where(off[off | on], GROUP_OFF, GROUP_ON))
    selected, groups = _with_groups(selected)
    stats = selected.groupby(["section", JOINT, "model", "group"], sort=False).agg(
        alpha=("alpha", "first"),
        n_seeds=("seed", "nunique"),
        n_fits=("fit_seed", "nunique"),
        **{f"{score}_{stat}": (score, agg) for score in SCORES for stat, agg in (("mean", "mean"), ("sd", "std"))},
    )
    stats = stats.reset_index()
    order = {
        "section": list(dict.fromkeys(table["section"])),
        JOINT: groups,
        "model": model_order(selected),
        "group": [GROUP_OFF, GROUP_ON],
    }
    for column, levels in order.items():
        stats[column] = pd.Categorical(stats[column], categories=levels, ordered=True)
    stats = stats.sort_values(list(order)).reset_index(drop=True)
    for column in order:
        stats[column] = stats[column].astype(str)
    return stats


def _settings_note(table: pd.DataFrame) -> str:
    """How the domains were found, from the table's settings columns (one line)."""
    parts = []
    for method, rows in table.groupby("method", sort=False):
        text = str(method)
        if method == "gmm" and "covariance_type" in rows:
            text += f" ({', '.join(map(str, rows['covariance_type'].unique()))} covariance)"
        if "refine" in rows and rows["refine"].astype(bool).any():
            text += ", refined by a majority vote of spatial neighbours"
        parts.append(text)
    domains = ", ".join(f"{s} {int(n)}" for s, n in table.groupby("section", sort=False)["n_domains"].first().items())
    return f"Clustered with {'; '.join(parts)}; domains per section (n_domains): {domains}."


def summary_markdown(summary: pd.DataFrame, table: pd.DataFrame | None = None, decimals: int = 3) -> str:
    """The summary as Markdown: one row per section, backbone and penalty, cells "mean (sd)".

    Parameters
    ----------
    summary
        :func:`domain_summary`'s output.
    table
        :func:`collect_domains`' table, for a note on how the domains were found.
    decimals
        Digits after the point.

    Returns
    -------
    str
        A title, the table and what the numbers are.
    """
    rows = []
    for _, row in summary.iterrows():
        penalty = "none (α = 0)" if row["group"] == GROUP_OFF else f"α = {row['alpha']:g}"
        cells = {SCORE_TITLE[s]: format_cell(row[f"{s}_mean"], row[f"{s}_sd"], decimals) for s in SCORES}
        runs = f"{int(row['n_seeds'])} × {int(row['n_fits'])}"
        rows.append(
            {
                "section": row["section"],
                "backbone": method_label(row["model"], row.get(JOINT, "")),
                "penalty": penalty,
                **cells,
                "seeds × fits": runs,
            }
        )
    body = pd.DataFrame(rows).to_markdown(index=False, disable_numparse=True)
    note = (
        "Mean (sd) over training seeds × fit seeds (sd over all of them, ddof 1; "
        f"{MISSING_CELL} for a single value). ARI and NMI against the annotation on its annotated "
        "spots (higher is better); CHAOS and PAS measure spatial continuity (lower is smoother)."
    )
    if table is not None and {"method", "n_domains"} <= set(table.columns):
        note += " " + _settings_note(table)
    return f"# Spatial domains against the annotation\n\n{body}\n\n{note}\n"


def write_domains(
    paths: Sequence[str | PathLike], alpha_on: float, outputs: Mapping[str, str | PathLike]
) -> pd.DataFrame:
    """Collect the runs' scores and write the table, the summary and its Markdown.

    Parameters
    ----------
    paths
        The runs' scores.tsv files.
    alpha_on
        ``penalty.alpha``.
    outputs
        Paths under the keys ``table`` (TSV), ``summary`` (CSV) and ``markdown``.

    Returns
    -------
    pandas.DataFrame
        The summary.
    """
    table = collect_domains(paths)
    summary = domain_summary(table, alpha_on)
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    with atomic_path(outputs["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(outputs["markdown"]) as tmp:
        tmp.write_text(summary_markdown(summary, table))
    return summary


def run_ari(scores: pd.DataFrame, fit_seed: int) -> float:
    """The ARI of one fit seed in a run's scores (NaN when absent)."""
    match = scores.loc[scores["fit_seed"] == int(fit_seed), "ARI"]
    return float(match.iloc[0]) if len(match) else math.nan
