# Distance-preserving generative models of spatial transcriptomics:
# regenerates Table 1 and Figures 4-6 of Zhou & Du (BIOKDD 2024).
#
#   snakemake --cores 2 --configfile config/demo.yaml   # offline demo, simulated sections
#   snakemake --cores 8                                  # the study, four Visium sections


import os
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# A --configfile replaces the study's config rather than merging into it, so
# the demo does not inherit the four real sections.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")

# The rules' scripts import the model package from this repository's src/,
# in whatever environment a job runs (local, conda, or a cluster node).
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH")])
)


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
