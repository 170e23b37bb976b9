"""Read a section (Space Ranger folder or AnnData file), or a group of sections, and preprocess it for the models."""

from dpst._files import atomic_path
from dpst.pp import describe_preprocessing, preprocess
from dpst_study.jobs import USER_ERRORS, logged_to
from dpst_study.sections import SECTION_KEY, keep_micrometres_for_models, read_group, read_section

params, wildcards = snakemake.params, snakemake.wildcards
settings = dict(params.settings)
joint = "group" in wildcards.keys()  # a `joint` group, preprocessed together
context = f"group {wildcards.group}: " if joint else f"section {wildcards.section}: "
with logged_to(snakemake.log[0], expected=USER_ERRORS, context=context):
    if joint:
        adata, notes = read_group(params.sections)
        print("\n".join(notes))
        # micrometres already (read_group); highly variable genes chosen per section
        settings.update(library_key=SECTION_KEY, coordinate_unit="um")
    else:
        source = params.h5ad or params.folder
        adata = read_section(params.folder, params.h5ad, settings.get("spatial_key", "spatial"))
        print(f"read {adata.n_obs} spots x {adata.n_vars} genes from {source}")
    adata = preprocess(adata, **settings)
    print(f"kept {adata.n_obs} spots x {adata.n_vars} genes")
    print(describe_preprocessing(adata))
    if not joint and params.h5ad:
        print(keep_micrometres_for_models(adata))
    with atomic_path(snakemake.output[0]) as tmp:
        adata.write_h5ad(tmp)
