# Simulated sections (the offline demo and the tests), in the Space Ranger layout.


rule simulate_section:
    output:
        directory("resources/simulated/{section}"),
    params:
        simulate=lambda wc: config["sections"][wc.section]["simulate"],
    log:
        "logs/simulate/{section}.log",
    conda:
        "../../envs/dpst.yaml"
    script:
        "../scripts/simulate.py"
