# Stage 2: Space Ranger folder or AnnData file -> AnnData with counts,
# log-normalized data, highly variable genes, coordinates in micrometres and the
# spatial graph.


rule preprocess:
    input:
        section_inputs,
    output:
        "results/preprocessed/{section}.h5ad",
    log:
        "logs/preprocess/{section}.log",
    benchmark:
        "benchmarks/preprocess/{section}.tsv"
    conda:
        "../../envs/dpst.yaml"
    params:
        folder=lambda wc: spaceranger_folder(wc.section),
        h5ad=lambda wc: config["sections"][wc.section].get("h5ad"),
        settings=lambda wc: preprocess_settings(wc.section),
    script:
        "../scripts/preprocess.py"


# A `joint` group: its sections read one by one (each to micrometres with its own
# settings), stacked and preprocessed together, highly variable genes chosen per
# section (library_key: the section).
rule preprocess_joint:
    input:
        joint_inputs,
    output:
        "results/joint/preprocessed/{group}.h5ad",
    log:
        "logs/joint/preprocess/{group}.log",
    benchmark:
        "benchmarks/joint/preprocess/{group}.tsv"
    wildcard_constraints:
        group="[A-Za-z0-9_-]+",
    conda:
        "../../envs/dpst.yaml"
    params:
        sections=joint_sources,
        settings=lambda wc: joint_preprocess_settings(wc.group),
    script:
        "../scripts/preprocess.py"
