# Stage 1: fetch each section's filtered matrix and spatial tarball from 10x.


rule download_10x_file:
    output:
        "resources/10x/{sample_id}/{sample_id}_{file}",
    log:
        "logs/download/{sample_id}_{file}.log",
    wildcard_constraints:
        file=r"filtered_feature_bc_matrix\.h5|spatial\.tar\.gz",
    retries: config["download"]["retries"]
    conda:
        "../../envs/dpst.yaml"
    params:
        url=lambda wc: f"{config['download']['base_url'].rstrip('/')}/{wc.sample_id}/{wc.sample_id}_{wc.file}",
        expected=lambda wc: canonical(sample_files(wc.sample_id)[wc.file]),
        timeout=config["download"]["timeout"],
    script:
        "../scripts/download.py"


rule extract_spatial:
    input:
        "resources/10x/{sample_id}/{sample_id}_spatial.tar.gz",
    output:
        directory("resources/10x/{sample_id}/spatial"),
    log:
        "logs/download/{sample_id}_extract.log",
    conda:
        "../../envs/dpst.yaml"
    script:
        "../scripts/extract_spatial.py"
