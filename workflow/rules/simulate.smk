# Simulated sections (the offline demo and the tests), in the Space Ranger layout.


rule simulate_section:
    output:
        directory("resources/simulated/{section}"),
    log:
        "logs/simulate/{section}.log",
    conda:
        "../../envs/dpst.yaml"
    params:
        simulate=lambda wc: canonical(config["sections"][wc.section]["simulate"]),
    script:
        "../scripts/simulate.py"
