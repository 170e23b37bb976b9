# Stage 5b: spatial domains of the sections with an annotation (domain_key and
# n_domains). Each run of Table 1 is clustered once per domains.fit_seeds and
# scored against the annotation, and so is each joint run on each annotated
# section of its group (that section's spots of the joint latent); one table and
# summary for all, one figure per section. Without a domain_key in any section,
# nothing here is asked for.


rule domains_run:
    input:
        unpack(domain_run_inputs),
    output:
        scores="results/domains/runs/{section}/{model}/alpha{alpha}/seed{seed}/scores.tsv",
        labels="results/domains/runs/{section}/{model}/alpha{alpha}/seed{seed}/labels.tsv",
    log:
        "logs/domains/{section}/{model}/alpha{alpha}/seed{seed}.log",
    benchmark:
        "benchmarks/domains/{section}/{model}/alpha{alpha}/seed{seed}.tsv"
    wildcard_constraints:
        model="vae|scvi",
        alpha=r"[0-9.e+-]+",
        seed=r"\d+",
    conda:
        "../../envs/dpst.yaml"
    threads: 1
    params:
        settings=lambda wc: domain_settings(wc.section),
    script:
        "../scripts/domains_run.py"


rule domains_joint_run:
    input:
        unpack(domain_joint_run_inputs),
    output:
        scores="results/domains/joint/{group}/{section}/{model}/alpha{alpha}/seed{seed}/scores.tsv",
        labels="results/domains/joint/{group}/{section}/{model}/alpha{alpha}/seed{seed}/labels.tsv",
    log:
        "logs/domains/joint/{group}/{section}/{model}/alpha{alpha}/seed{seed}.log",
    benchmark:
        "benchmarks/domains/joint/{group}/{section}/{model}/alpha{alpha}/seed{seed}.tsv"
    wildcard_constraints:
        group="[A-Za-z0-9_-]+",
        model="vae|scvi",
        alpha=r"[0-9.e+-]+",
        seed=r"\d+",
    conda:
        "../../envs/dpst.yaml"
    threads: 1
    params:
        settings=lambda wc: domain_settings(wc.section),
    script:
        "../scripts/domains_run.py"


rule domains_table:
    input:
        domain_scores_files,
    output:
        table="results/domains/domains.tsv",
        summary=report(
            "results/domains/domains_summary.csv",
            caption="../report/domains.rst",
            category="Domains",
        ),
        markdown="results/domains/domains_summary.md",
    log:
        "logs/domains/domains_table.log",
    benchmark:
        "benchmarks/domains/domains_table.tsv"
    conda:
        "../../envs/dpst.yaml"
    params:
        alpha_on=ALPHA_ON,
    script:
        "../scripts/domains_table.py"


rule domains_figure:
    input:
        unpack(domain_figure_inputs),
    output:
        png=report(
            "results/domains/{section}.png",
            caption="../report/domains_figure.rst",
            category="Domains",
            subcategory="{section}",
        ),
        pdf="results/domains/{section}.pdf",
    log:
        "logs/domains/figure_{section}.log",
    benchmark:
        "benchmarks/domains/figure_{section}.tsv"
    wildcard_constraints:
        section="[A-Za-z0-9_-]+",
    conda:
        "../../envs/dpst.yaml"
    params:
        models=MODELS,
        alpha_on=ALPHA_ON,
        seed=DOMAIN_FIGURE_SEED,
        settings=lambda wc: domain_settings(wc.section),
    script:
        "../scripts/domains_figure.py"
