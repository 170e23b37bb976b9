# Stage 5c: the joint runs (`joint` groups of sections in one model). Each run's
# latent is clustered and scored with scib-metrics (sections mixing, labels kept
# apart); one table for all, one UMAP figure per group. The runs themselves are
# trained by train.smk (train_joint). Without `joint`, nothing here is asked for.


# One job per group, not per run: scib-metrics' first scores in a process cost
# seconds of JAX compilation, each further run a fraction of a second.
rule joint_scores:
    input:
        unpack(joint_scores_inputs),
    output:
        scores="results/joint/scores/{group}/scores.tsv",
        clusters="results/joint/scores/{group}/clusters.tsv",
    log:
        "logs/joint/scores/{group}.log",
    benchmark:
        "benchmarks/joint/scores/{group}.tsv"
    wildcard_constraints:
        group="[A-Za-z0-9_-]+",
    conda:
        "../../envs/dpst.yaml"
    threads: 1
    params:
        runs=lambda wc: [list(run[1:]) for run in joint_runs(wc.group)],
        settings=lambda wc: joint_cluster_settings(wc.group),
    script:
        "../scripts/joint_scores.py"


rule collect_joint_runs:
    input:
        joint_metrics_files(),
    output:
        report(
            "results/metrics/joint_runs.tsv",
            caption="../report/joint_runs.rst",
            category="Metrics",
        ),
    log:
        "logs/joint/collect_joint_runs.log",
    conda:
        "../../envs/dpst.yaml"
    script:
        "../scripts/collect_joint_runs.py"


rule joint_table:
    input:
        expand("results/joint/scores/{group}/scores.tsv", group=JOINT),
    output:
        tsv="results/joint/scores.tsv",
        md="results/joint/scores.md",
        html=report(
            "results/joint/scores.html",
            caption="../report/joint_scores.rst",
            category="Joint runs",
        ),
    log:
        "logs/joint/joint_table.log",
    conda:
        "../../envs/dpst.yaml"
    script:
        "../scripts/joint_table.py"


rule joint_figure:
    input:
        unpack(joint_figure_inputs),
    output:
        png=report(
            "results/joint/{group}.png",
            caption="../report/joint_figure.rst",
            category="Joint runs",
            subcategory="{group}",
        ),
        pdf="results/joint/{group}.pdf",
    log:
        "logs/joint/figure_{group}.log",
    benchmark:
        "benchmarks/joint/figure_{group}.tsv"
    wildcard_constraints:
        group="[A-Za-z0-9_-]+",
    conda:
        "../../envs/dpst.yaml"
    params:
        sections=lambda wc: joint_group(wc.group),
        models=MODELS,
        alpha_on=ALPHA_ON,
        seed=JOINT_FIGURE_SEED,
        settings=lambda wc: joint_cluster_settings(wc.group),
    script:
        "../scripts/joint_figure.py"
