# Stage 3 and 4: one job per section x model x alpha x seed (Table 1 uses
# alpha 0 and penalty.alpha; the sensitivity study the alpha grid).


rule train:
    input:
        "results/preprocessed/{section}.h5ad",
    output:
        latent="results/runs/{section}/{model}/alpha{alpha}/seed{seed}/latent.h5ad",
        metrics="results/runs/{section}/{model}/alpha{alpha}/seed{seed}/metrics.json",
        autocorrelation="results/runs/{section}/{model}/alpha{alpha}/seed{seed}/autocorrelation.tsv",
        history="results/runs/{section}/{model}/alpha{alpha}/seed{seed}/history.tsv",
        model=directory("results/runs/{section}/{model}/alpha{alpha}/seed{seed}/model"),
    log:
        "logs/train/{section}/{model}/alpha{alpha}/seed{seed}.log",
    benchmark:
        "benchmarks/train/{section}/{model}/alpha{alpha}/seed{seed}.tsv"
    wildcard_constraints:
        model="vae|scvi",
        alpha=r"[0-9.e+-]+",
        seed=r"\d+",
    conda:
        "../../envs/dpst.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=1,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        model=canonical(config["model"]),
        penalty=canonical(config["penalty"]),
        train=canonical(config["train"]),
    script:
        "../scripts/train.py"


# A `joint` group of sections in one model (batch_key: the section), with the
# same backbones, alphas, seeds and resources as the single-section runs.
rule train_joint:
    input:
        "results/joint/preprocessed/{group}.h5ad",
    output:
        latent="results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/latent.h5ad",
        metrics="results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/metrics.json",
        sections="results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/sections.tsv",
        autocorrelation="results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/autocorrelation.tsv",
        history="results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/history.tsv",
        model=directory(
            "results/joint/runs/{group}/{model}/alpha{alpha}/seed{seed}/model"
        ),
    log:
        "logs/joint/train/{group}/{model}/alpha{alpha}/seed{seed}.log",
    benchmark:
        "benchmarks/joint/train/{group}/{model}/alpha{alpha}/seed{seed}.tsv"
    wildcard_constraints:
        group="[A-Za-z0-9_-]+",
        model="vae|scvi",
        alpha=r"[0-9.e+-]+",
        seed=r"\d+",
    conda:
        "../../envs/dpst.yaml"
    threads: config["resources"]["train_threads"]
    resources:
        gpu=1,
        mem_mb=config["resources"]["train_mem_mb"],
        runtime=config["resources"]["train_runtime"],
    params:
        model=canonical(config["model"]),
        penalty=canonical(config["penalty"]),
        train=canonical({**config["train"], **config["joint_train"]}),
    script:
        "../scripts/train.py"
