"""Table 1: statistics over seeds, the paper's layout, Markdown/LaTeX, the published values."""

import re

import numpy as np
import pandas as pd
import pytest

from dpst_study import tables

SECTIONS = ["A2", "P1"]
MODELS = ["vae", "scvi"]
ALPHA_ON = 10.0
SEEDS = [0, 1, 2]


def make_runs(sections=SECTIONS, alphas=(0.0, ALPHA_ON)) -> pd.DataFrame:
    """Synthetic runs with values that differ per (section, model, alpha, seed): table test data only."""
    rows = []
    for i, section in enumerate(sections):
        for j, model in enumerate(MODELS):
            for alpha in alphas:
                for seed in SEEDS:
                    base = 0.3 + 0.1 * i + 0.05 * j + 0.01 * alpha
                    rows.append(
                        {
                            "section": section,
                            "model": model,
                            "alpha": alpha,
                            "seed": seed,
                            "moran_I": base + 0.02 * seed**2,
                            "geary_C": 1 - base - 0.03 * seed,
                            "mse_heldout": 0.2 + 0.01 * seed + 0.001 * alpha + 0.05 * j,
                            "mse_all": 0.18 + 0.01 * seed + 0.001 * alpha + 0.05 * j,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture
def runs():
    return make_runs()


def test_published_table1_typed_in():
    pub = tables.PUBLISHED_TABLE1
    assert len(pub) == 32
    assert not pub.duplicated(["group", "model", "metric", "section"]).any()
    index = pub.set_index(["group", "model", "metric", "section"])
    assert tuple(index.loc[("Distorted", "vae", "moran_I", "A2")]) == (0.62, 0.07)
    assert tuple(index.loc[("Distance Preserving", "scvi", "geary_C", "P1")]) == (0.53, 0.03)
    assert tuple(index.loc[("Distorted", "scvi", "geary_C", "P2")]) == (0.62, 0.02)
    assert tuple(index.loc[("Distance Preserving", "vae", "moran_I", "P1")]) == (0.49, 0.06)


def test_table1_matches_numpy(runs):
    long = tables.table1(runs, ALPHA_ON)
    assert len(long) == 2 * len(MODELS) * len(SECTIONS) * 2
    assert list(long["group"].unique()) == ["Distorted", "Distance Preserving"]
    assert list(long["section"].unique()) == SECTIONS
    for row in long.itertuples():
        alpha = 0.0 if row.group == "Distorted" else ALPHA_ON
        values = runs.loc[
            (runs["section"] == row.section) & (runs["model"] == row.model) & (runs["alpha"] == alpha), row.metric
        ].to_numpy()
        assert row.mean == pytest.approx(np.mean(values))
        assert row.sd == pytest.approx(np.std(values, ddof=1))
        assert row.n_seeds == len(SEEDS)
        assert row.alpha == alpha


def test_table1_section_order_and_single_seed(runs):
    long = tables.table1(runs, ALPHA_ON, sections=["P1"])
    assert set(long["section"]) == {"P1"}
    one_seed = tables.table1(runs[runs["seed"] == 0], ALPHA_ON, sections=["P1", "A2"])
    assert list(one_seed["section"].unique()) == ["P1", "A2"]
    assert one_seed["sd"].isna().all()
    assert (one_seed["n_seeds"] == 1).all()
    with pytest.raises(ValueError, match="not in the runs table"):
        tables.table1(runs, ALPHA_ON, sections=["B9"])


@pytest.mark.parametrize("alpha_present", [(0.0,), (ALPHA_ON,)])
def test_table1_missing_alpha_raises(alpha_present):
    with pytest.raises(ValueError, match="no runs with alpha"):
        tables.table1(make_runs(alphas=alpha_present), ALPHA_ON)


def test_table1_missing_column_or_bad_alpha_raises(runs):
    with pytest.raises(ValueError, match=r"lacks column.*geary_C"):
        tables.table1(runs.drop(columns="geary_C"), ALPHA_ON)
    with pytest.raises(ValueError, match="alpha_on must be positive"):
        tables.table1(runs, 0.0)
    with pytest.raises(ValueError, match="duplicate runs"):
        tables.table1(pd.concat([runs, runs.iloc[:1]]), ALPHA_ON)


def test_wide_layout_and_cells(runs):
    long = tables.table1(runs, ALPHA_ON)
    wide = tables.table1_wide(long)
    assert list(wide.columns) == ["group", "method", "I A2", "I P1", "C A2", "C P1"]
    assert list(zip(wide["group"], wide["method"], strict=True)) == [
        ("Distorted", "VAE"),
        ("Distorted", "scVI"),
        ("Distance Preserving", "VAE"),
        ("Distance Preserving", "scVI"),
    ]
    row = long.set_index(["group", "model", "metric", "section"]).loc[("Distorted", "scvi", "geary_C", "P1")]
    cell = wide.set_index(["group", "method"]).loc[("Distorted", "scVI"), "C P1"]
    assert cell == f"{row['mean']:.2f} ({row['sd']:.2f})"
    assert all(re.fullmatch(r"\d\.\d\d \(\d\.\d\d\)", c) for c in wide.iloc[:, 2:].to_numpy().ravel())


def test_format_cell_missing_values():
    assert tables.format_cell(0.6212, 0.0712) == "0.62 (0.07)"
    assert tables.format_cell(0.5, np.nan) == "0.50 (n/a)"
    assert tables.format_cell(np.nan, np.nan) == "n/a"


def test_markdown_and_latex_contain_every_cell(runs):
    wide = tables.table1_wide(tables.table1(runs, ALPHA_ON))
    markdown = tables.to_markdown(wide)
    latex = tables.to_latex(wide, caption="Table 1 & friends: 100% of_seeds")
    cells = wide.iloc[:, 2:].to_numpy().ravel()
    for cell in cells:
        assert cell in markdown
        assert cell in latex
    for header in wide.columns[2:]:
        assert header in markdown
    lines = markdown.strip().splitlines()
    assert len(lines) == 2 + len(wide)
    assert all(line.count("|") == len(wide.columns) + 1 for line in lines)
    # booktabs, one table environment, every body row has the full number of cells
    for command in (
        "\\toprule",
        "\\bottomrule",
        "\\begin{tabular}{llcccc}",
        "\\cmidrule(lr){3-4}",
        "\\cmidrule(lr){5-6}",
        "\\multicolumn{2}{c}{Moran's $I$ $\\uparrow$}",
    ):
        assert command in latex
    # a rule under the header and one between the two groups, each group named once
    assert latex.count("\\midrule") == 2
    assert latex.count("Distorted") == latex.count("Distance Preserving") == 1
    assert latex.count("\\begin{table}") == latex.count("\\end{table}") == 1
    assert "Table 1 \\& friends: 100\\% of\\_seeds" in latex
    rows = [line for line in latex.splitlines() if line.endswith("\\\\") and "(" in line]
    assert len(rows) == len(wide)
    assert all(r.count("&") == len(wide.columns) - 1 for r in rows)
    assert latex.count("{") == latex.count("}")


def test_latex_escapes_section_names():
    wide = tables.table1_wide(tables.table1(make_runs(sections=["S_1", "x&y"]), ALPHA_ON))
    latex = tables.to_latex(wide)
    assert "S\\_1" in latex
    assert "x\\&y" in latex
    assert "S_1" not in latex.replace("S\\_1", "")


def test_compare_published_study_sections(runs):
    comparison = tables.compare_published(tables.table1(runs, ALPHA_ON))
    assert comparison[["published_mean", "published_sd"]].notna().all().all()
    row = comparison.set_index(["group", "model", "metric", "section"]).loc[("Distorted", "vae", "moran_I", "A2")]
    assert (row["published_mean"], row["published_sd"]) == (0.62, 0.07)
    assert row["difference"] == pytest.approx(row["ours_mean"] - 0.62)
    for column in ("ours_mean", "ours_sd", "published_mean", "published_sd", "difference"):
        assert column in comparison.columns


def test_compare_published_unmatched_and_mapped_sections():
    long = tables.table1(make_runs(sections=["S1", "S2"]), ALPHA_ON)
    unmatched = tables.compare_published(long)
    assert len(unmatched) == len(long)
    assert unmatched[["published_mean", "published_sd", "difference"]].isna().all().all()
    assert unmatched["ours_mean"].notna().all()
    mapped = tables.compare_published(long, section_map={"S1": "A1"})
    assert mapped.loc[mapped["section"] == "S1", "published_mean"].notna().all()
    assert mapped.loc[mapped["section"] == "S2", "published_mean"].isna().all()
    assert "n/a" in tables.comparison_markdown(unmatched)


def test_write_table1(tmp_path, runs):
    keys = ("csv", "md", "tex", "compare_csv", "compare_md")
    paths = {key: tmp_path / "out" / f"table1_{key}.txt" for key in keys}
    long = tables.write_table1(runs, ALPHA_ON, paths)
    assert all(p.stat().st_size > 0 for p in paths.values())
    written = pd.read_csv(paths["csv"])
    np.testing.assert_allclose(written["mean"], long["mean"], rtol=1e-12)
    assert len(pd.read_csv(paths["compare_csv"])) == len(long)
    assert "\\toprule" in paths["tex"].read_text()
    with pytest.raises(ValueError, match="unknown output key"):
        tables.write_table1(runs, ALPHA_ON, {"xlsx": tmp_path / "t.xlsx"})
