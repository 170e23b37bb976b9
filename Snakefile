# Distance-preserving generative models of spatial transcriptomics:
# regenerates Table 1 and Figures 4-6 of Zhou & Du (BIOKDD 2024), and the spatial
# domains of annotated sections.
#
#   snakemake --cores 2 --configfile config/demo.yaml   # offline demo, simulated sections
#   snakemake --cores 8                                  # the study, four Visium sections


from snakemake.utils import min_version

min_version("9.0")


# A --configfile replaces the study's config rather than merging into it, so
# the demo does not inherit the four real sections.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Each config mistake ends the run with one line naming the key.
include: "workflow/rules/config.smk"


check_config("workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/domains.smk"
include: "workflow/rules/joint.smk"
include: "workflow/rules/aggregate.smk"


if hint := stale_lock_hint():
    print(hint, file=sys.stderr)


onstart:
    lock_owner_mark()


rule all:
    default_target: True
    input:
        final_outputs(),
