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
