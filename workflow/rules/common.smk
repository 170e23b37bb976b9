# Helpers shared by the rules: which runs exist, where each section comes from.

SECTIONS = list(config["sections"])
MODELS = config["models"]
SEEDS = config["seeds"]
ALPHA_ON = float(config["penalty"]["alpha"])
H5_NAME = "filtered_feature_bc_matrix.h5"
TARBALL_NAME = "spatial.tar.gz"


def canonical(settings):
    """Settings with sorted keys: reordering keys in the config reruns nothing."""
    if isinstance(settings, dict):
        return {key: canonical(settings[key]) for key in sorted(settings)}
    return settings


def alpha_label(alpha):
    """Wildcard text of a penalty strength: 0, 10, 0.5, 1e+04."""
    return f"{float(alpha):g}"


def section_source(section):
    spec = config["sections"][section]
    return next(kind for kind in ("sample_id", "local", "simulate") if kind in spec)


def spaceranger_folder(section):
    """The Space Ranger folder a section is read from."""
    spec = config["sections"][section]
    source = section_source(section)
    if source == "local":
        return spec["local"]
    if source == "simulate":
        return f"resources/simulated/{section}"
    return f"resources/10x/{spec['sample_id']}"


def spaceranger_inputs(wildcards):
    """Files the preprocessing of a section waits for (nothing to make for `local`)."""
    section = wildcards.section
    source = section_source(section)
    if source == "simulate":
        return [spaceranger_folder(section)]
    if source == "local":
        return []
    folder = spaceranger_folder(section)
    sample_id = config["sections"][section]["sample_id"]
    return [f"{folder}/{sample_id}_{H5_NAME}", f"{folder}/spatial"]


def sample_files(sample_id):
    """The config entry (`files`) of the section that downloads `sample_id`."""
    for spec in config["sections"].values():
        if spec.get("sample_id") == sample_id:
            return spec["files"]
    raise ValueError(f"no section in the config downloads sample {sample_id!r}")


def run_dir(section, model, alpha, seed):
    return f"results/runs/{section}/{model}/alpha{alpha_label(alpha)}/seed{seed}"


def main_runs():
    """Table 1 and Figure 5: every section x model x {0, alpha} x seed."""
    return [
        (section, model, alpha, seed)
        for section in SECTIONS
        for model in MODELS
        for alpha in (0.0, ALPHA_ON)
        for seed in SEEDS
    ]


def sensitivity_setting(key, default):
    value = config["sensitivity"].get(key)
    return default if value is None else value


def sensitivity_runs():
    """Figure 6: alpha grid x sections x models x seeds of `sensitivity`."""
    sections = sensitivity_setting("sections", SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(
            f"sensitivity.sections names unknown sections {sorted(unknown)}"
        )
    return [
        (section, model, float(alpha), seed)
        for section in sections
        for model in sensitivity_setting("models", MODELS)
        for alpha in config["sensitivity"]["alphas"]
        for seed in sensitivity_setting("seeds", SEEDS[:3])
    ]


def all_runs():
    return sorted(set(main_runs()) | set(sensitivity_runs()))


def run_metrics():
    return [f"{run_dir(*run)}/metrics.json" for run in all_runs()]


def figure4_runs():
    section = config["figure4"].get("section", SECTIONS[0])
    model, seed = config["figure4"]["model"], config["figure4"]["seed"]
    return {
        penalty: f"{run_dir(section, model, alpha, seed)}/latent.h5ad"
        for penalty, alpha in (("off", 0.0), ("on", ALPHA_ON))
    }


def final_outputs():
    tables = [
        f"results/table1/{name}"
        for name in (
            "table1.csv",
            "table1.md",
            "table1.tex",
            "table1_vs_published.csv",
            "table1_vs_published.md",
        )
    ]
    figures = [
        f"results/figures/{fig}.{ext}"
        for fig in ("figure4", "figure5", "figure6")
        for ext in ("png", "pdf")
    ]
    return ["results/metrics/runs.tsv", *tables, *figures]
