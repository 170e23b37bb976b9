# Stage 5 and 6: per-run metrics -> one tidy table, Table 1, Figures 4-6,
# each a report item with a caption.


rule collect_runs:
    input:
        run_metrics(),
    output:
        runs=report(
            "results/metrics/runs.tsv",
            caption="../report/runs.rst",
            category="Metrics",
        ),
        per_dimension="results/metrics/per_dimension.tsv",
    log:
        "logs/aggregate/collect_runs.log",
    conda:
        "../../envs/dpst.yaml"
    script:
        "../scripts/collect_runs.py"


rule table1:
    input:
        unpack(table1_inputs),
    output:
        csv="results/table1/table1.csv",
        md="results/table1/table1.md",
        tex="results/table1/table1.tex",
        html=report(
            "results/table1/table1.html",
            caption="../report/table1.rst",
            category="Table 1",
        ),
        compare_csv="results/table1/table1_vs_published.csv",
        compare_md="results/table1/table1_vs_published.md",
        compare_html=report(
            "results/table1/table1_vs_published.html",
            caption="../report/table1_vs_published.rst",
            category="Table 1",
        ),
    log:
        "logs/aggregate/table1.log",
    conda:
        "../../envs/dpst.yaml"
    params:
        alpha_on=ALPHA_ON,
        seeds=SEEDS,
        sections=SECTIONS,
        published_sections=canonical(config["published_sections"]),
        joint=JOINT,
    script:
        "../scripts/table1.py"


rule figure4:
    input:
        **figure4_runs(),
    output:
        png=report(
            "results/figures/figure4.png",
            caption="../report/figure4.rst",
            category="Figures",
        ),
        pdf="results/figures/figure4.pdf",
        ellipses="results/figures/figure4_ellipses.tsv",
    log:
        "logs/aggregate/figure4.log",
    conda:
        "../../envs/dpst.yaml"
    params:
        model=config["figure4"]["model"],
        section=config["figure4"].get("section", SECTIONS[0]),
        seed=config["figure4"]["seed"],
        alpha_on=ALPHA_ON,
    script:
        "../scripts/figure4.py"


rule figure5:
    input:
        "results/metrics/runs.tsv",
    output:
        png=report(
            "results/figures/figure5.png",
            caption="../report/figure5.rst",
            category="Figures",
        ),
        pdf="results/figures/figure5.pdf",
    log:
        "logs/aggregate/figure5.log",
    conda:
        "../../envs/dpst.yaml"
    params:
        alpha_on=ALPHA_ON,
        seeds=SEEDS,
        sections=SECTIONS,
    script:
        "../scripts/figure5.py"


rule figure6:
    input:
        "results/metrics/runs.tsv",
    output:
        png=report(
            "results/figures/figure6.png",
            caption="../report/figure6.rst",
            category="Figures",
        ),
        pdf="results/figures/figure6.pdf",
    log:
        "logs/aggregate/figure6.log",
    conda:
        "../../envs/dpst.yaml"
    params:
        runs=[list(run) for run in sensitivity_runs()],
    script:
        "../scripts/figure6.py"
