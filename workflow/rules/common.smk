# Helpers shared by the rules: which runs exist, where each section comes from.

import os
import socket
import sys
from pathlib import Path

SECTIONS = list(config["sections"])
MODELS = config["models"]
SEEDS = config["seeds"]
ALPHA_ON = float(config["penalty"]["alpha"])
H5_NAME = "filtered_feature_bc_matrix.h5"
TARBALL_NAME = "spatial.tar.gz"
# What dpst.io.read_spaceranger reads from a Space Ranger folder's spatial/.
POSITION_FILES = (
    "tissue_positions.csv",
    "tissue_positions_list.csv",
    "tissue_positions.parquet",
)
SCALEFACTORS_NAME = "scalefactors_json.json"
IMAGE_NAMES = ("tissue_hires_image.png", "tissue_lowres_image.png")
# An `h5ad` section's keys that are arguments of dpst.pp.preprocess.
H5AD_COORDINATE_KEYS = ("spatial_key", "coordinate_unit")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def canonical(settings):
    """Settings with sorted keys: reordering keys in the config reruns nothing."""
    if isinstance(settings, dict):
        return {key: canonical(settings[key]) for key in sorted(settings)}
    return settings


def alpha_label(alpha):
    """Wildcard text of a penalty strength: 0, 10, 0.5, 1e+04, and exact where the
    short form would round (1234567, not 1.23457e+06, which would merge two runs)."""
    alpha = float(alpha)
    short = f"{alpha:g}"
    return short if float(short) == alpha else repr(alpha)


def section_source(section):
    spec = config["sections"][section]
    return next(
        kind for kind in ("sample_id", "local", "simulate", "h5ad") if kind in spec
    )


def spaceranger_folder(section):
    """The Space Ranger folder a section is read from (None for an `h5ad` section)."""
    spec = config["sections"][section]
    source = section_source(section)
    if source == "h5ad":
        return None
    if source == "local" and "bin_size" in spec:  # Visium HD: one bin folder of outs/
        return f"{spec['local']}/binned_outputs/square_{spec['bin_size']:03d}um"
    if source == "local":
        return spec["local"]
    if source == "simulate":
        return f"resources/simulated/{section}"
    return f"resources/10x/{spec['sample_id']}"


def preprocess_settings(section):
    """The top-level `preprocess` with the section's own keys on top, and an `h5ad`
    section's spatial_key and coordinate_unit (defaults filled by the schema)."""
    spec = config["sections"][section]
    coordinates = {key: spec[key] for key in H5AD_COORDINATE_KEYS if key in spec}
    return canonical(
        {**config["preprocess"], **spec.get("preprocess", {}), **coordinates}
    )


def local_spaceranger_files(section):
    """The files of a `local` section's folder that the reader uses (count matrix,
    positions, scale factors, images when present): as inputs of its preprocessing,
    replacing one reruns what depends on it. A missing one stops the workflow with
    one line naming the section and the path."""
    spec = config["sections"][section]
    folder = Path(spaceranger_folder(section))
    keys = "local, bin_size" if "bin_size" in spec else "local"

    def missing(what):
        stop(f"section {section}: {what} (sections.{section}.{keys})")

    if not folder.is_dir():
        missing(f"Space Ranger folder {folder} not found")
    h5 = folder / H5_NAME
    if not h5.is_file():
        found = sorted(p for p in folder.glob(f"*_{H5_NAME}") if p.is_file())
        if len(found) != 1:
            missing(
                f"{h5} not found (nor a single *_{H5_NAME})"
                if not found
                else f"several count matrices in {folder}: {', '.join(p.name for p in found)}"
            )
        h5 = found[0]
    spatial = folder / "spatial"
    positions = [
        spatial / name for name in POSITION_FILES if (spatial / name).is_file()
    ]
    if not positions:
        others = " or ".join(POSITION_FILES[1:])
        missing(f"{spatial / POSITION_FILES[0]} not found (nor {others})")
    scalefactors = spatial / SCALEFACTORS_NAME
    if not scalefactors.is_file():
        missing(f"{scalefactors} not found")
    images = [spatial / name for name in IMAGE_NAMES if (spatial / name).is_file()]
    return [str(path) for path in (h5, positions[0], scalefactors, *images)]


def is_hdf5(path):
    """HDF5's signature at offset 0, 512, 1024, ... (after a user block, if any)."""
    size, offset = path.stat().st_size, 0
    with path.open("rb") as file:
        while offset + len(HDF5_SIGNATURE) <= size:
            file.seek(offset)
            if file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                return True
            offset = max(512, 2 * offset)
    return False


def h5ad_file(section):
    """The AnnData file of an `h5ad` section: an input of its preprocessing, so
    replacing it reruns what depends on it. A missing or unreadable one stops the
    workflow with one line naming the section and the path."""
    path = Path(config["sections"][section]["h5ad"])

    def unusable(what):
        stop(f"section {section}: {what} (sections.{section}.h5ad)")

    if not path.is_file():
        unusable(f"AnnData file {path} not found")
    try:
        readable = is_hdf5(path)
    except OSError as err:
        unusable(f"cannot read {path}: {err.strerror}")
    if not readable:
        unusable(f"{path} is not an HDF5 file (an AnnData .h5ad)")
    return str(path)


def section_inputs(wildcards):
    return section_files(wildcards.section)


def section_files(section):
    """Files the preprocessing of a section reads (made by a rule, a local folder's,
    or an AnnData file)."""
    source = section_source(section)
    if source == "h5ad":
        return [h5ad_file(section)]
    if source == "simulate":
        return [spaceranger_folder(section)]
    if source == "local":
        return local_spaceranger_files(section)
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
    sections = sensitivity_setting("sections", SECTIONS)  # known: check_config
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


# Spatial domains: the sections with an annotation (domain_key and n_domains).
DOMAIN_SECTIONS = [s for s in SECTIONS if "domain_key" in config["sections"][s]]
DOMAIN_FIGURE_SEED = SEEDS[0]  # the training run the domains figure shows


def domain_runs():
    """The runs of Table 1 (main_runs) on the sections with a domain_key."""
    return sorted({run for run in main_runs() if run[0] in DOMAIN_SECTIONS})


def domain_run_dir(section, model, alpha, seed):
    return (
        f"results/domains/runs/{section}/{model}/alpha{alpha_label(alpha)}/seed{seed}"
    )


def domain_settings(section):
    """What clustering a section's runs needs: its annotation, number of domains and
    the top-level `domains` (defaults filled by the schema)."""
    spec = config["sections"][section]
    return canonical(
        {
            "domain_key": spec["domain_key"],
            "n_domains": spec["n_domains"],
            **config["domains"],
        }
    )


def obs_columns(path):
    """The obs column names of an AnnData file, or None when the file does not say
    (an old layout, an unreadable file: its preprocessing reports those)."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            order = file["obs"].attrs["column-order"]
    except (OSError, KeyError, TypeError):
        return None
    return [c.decode() if isinstance(c, bytes) else str(c) for c in order]


def annotated_section(section):
    """A section whose runs are clustered: it has a domain_key naming a column of its
    AnnData file (a simulated section: its true domains, 'domain'). Otherwise the
    workflow stops, before any job, with one line naming the key."""
    spec = config["sections"].get(section, {})
    where = f"(sections.{section}.domain_key)"
    if "domain_key" not in spec:
        stop(f"section {section}: no domain_key, so its runs are not clustered {where}")
    key, source = spec["domain_key"], section_source(section)
    # a simulated section's annotation is the simulation's truth, kept as obs["domain"]
    if source == "simulate":
        if key != "domain":
            stop(
                f"section {section}: a simulate section's annotation is 'domain', not {key!r} {where}"
            )
        return section
    if source != "h5ad":
        stop(
            f"section {section}: domain_key {key!r} names an annotation column, which only "
            f"an h5ad section has (the spots of a {source} section carry none) {where}"
        )
    path = h5ad_file(section)
    columns = obs_columns(path)
    if columns is not None and key not in columns:
        stop(
            f"section {section}: {path} has no obs column {key!r} "
            f"(its columns: {', '.join(columns) or 'none'}) {where}"
        )
    return section


def domain_run_inputs(wildcards):
    section = annotated_section(wildcards.section)  # stops, naming the key, if not
    run = run_dir(section, wildcards.model, wildcards.alpha, wildcards.seed)
    return {
        "latent": f"{run}/latent.h5ad",
        "section": f"results/preprocessed/{section}.h5ad",
    }


def domain_figure_inputs(wildcards):
    section = annotated_section(wildcards.section)
    runs = [
        domain_run_dir(section, model, alpha, DOMAIN_FIGURE_SEED)
        for model in MODELS
        for alpha in (0.0, ALPHA_ON)
    ]
    return {
        "section": f"results/preprocessed/{section}.h5ad",
        "labels": [f"{run}/labels.tsv" for run in runs],
        "scores": [f"{run}/scores.tsv" for run in runs],
    }


def domain_joint_runs():
    """Each joint run with each annotated section of its group:
    (group, section, model, alpha, seed)."""
    return [
        (group, section, model, alpha, seed)
        for group, model, alpha, seed in joint_runs()
        for section in JOINT[group]
        if section in DOMAIN_SECTIONS
    ]


def domain_joint_run_dir(group, section, model, alpha, seed):
    run = f"{model}/alpha{alpha_label(alpha)}/seed{seed}"
    return f"results/domains/joint/{group}/{section}/{run}"


def domain_joint_run_inputs(wildcards):
    annotated_section(wildcards.section)  # stops, naming the key, if not
    run = joint_run_dir(
        wildcards.group, wildcards.model, wildcards.alpha, wildcards.seed
    )
    return {
        "latent": f"{run}/latent.h5ad",
        "group": f"results/joint/preprocessed/{wildcards.group}.h5ad",
    }


def domain_scores_files(wildcards):
    """The scores of every run the domains table collects: each annotated section's
    own runs, and the joint runs on it."""
    if not DOMAIN_SECTIONS:
        stop(
            "no section has a domain_key, so there are no domains to collect "
            "(sections.<name>.domain_key and n_domains)"
        )
    return [f"{domain_run_dir(*run)}/scores.tsv" for run in domain_runs()] + [
        f"{domain_joint_run_dir(*run)}/scores.tsv" for run in domain_joint_runs()
    ]


def domain_outputs():
    """The domains table, its summary and one figure per annotated section; none
    when no section has a domain_key."""
    if not DOMAIN_SECTIONS:
        return []
    tables = [
        f"results/domains/{name}"
        for name in ("domains.tsv", "domains_summary.csv", "domains_summary.md")
    ]
    figures = [
        f"results/domains/{section}.{ext}"
        for section in DOMAIN_SECTIONS
        for ext in ("png", "pdf")
    ]
    return [*tables, *figures]


# Joint runs: each `joint` group of sections trained as one model (batch_key: the section).
JOINT = config["joint"]  # group -> its sections, in order
JOINT_FIGURE_SEED = SEEDS[0]  # the training seed the joint figure shows


def joint_run_dir(group, model, alpha, seed):
    return f"results/joint/runs/{group}/{model}/alpha{alpha_label(alpha)}/seed{seed}"


def joint_runs(group=None):
    """Every group (or one) x model x {0, alpha} x seed, as Table 1's runs."""
    if group is not None:
        joint_group(group)  # stops, naming the key, for an unknown group
    return [
        (name, model, alpha, seed)
        for name in ([group] if group is not None else JOINT)
        for model in MODELS
        for alpha in (0.0, ALPHA_ON)
        for seed in SEEDS
    ]


def joint_group(group):
    """A group's sections; the workflow stops, naming the key, for a group not in `joint`."""
    if group not in JOINT:
        stop(f"no joint group {group} (joint: {', '.join(JOINT) or 'none'})")
    return JOINT[group]


def joint_sources(wildcards):
    """Where each section of a group is read from, and its coordinate and label settings."""
    sources = {}
    for section in joint_group(wildcards.group):
        spec = config["sections"][section]
        source = {"folder": spaceranger_folder(section), "h5ad": spec.get("h5ad")}
        for key in (*H5AD_COORDINATE_KEYS, "domain_key"):
            if key in spec:
                source[key] = spec[key]
        sources[section] = canonical(source)
    return sources


def joint_preprocess_settings(group):
    """The preprocessing shared by a group's sections (check_joint made them agree)."""
    settings = preprocess_settings(joint_group(group)[0])
    return {k: v for k, v in settings.items() if k not in H5AD_COORDINATE_KEYS}


def joint_inputs(wildcards):
    """Files the preprocessing of a group reads: each of its sections' inputs."""
    return [
        path
        for section in joint_group(wildcards.group)
        for path in section_files(section)
    ]


def joint_clusters(group):
    """Clusters of a group's joint latents: its sections' largest n_domains (an
    annotated section's, a simulated one's), else domains.joint_clusters."""
    given = []
    for section in JOINT[group]:
        spec = config["sections"][section]
        given.append(spec.get("n_domains", spec.get("simulate", {}).get("n_domains")))
    given = [n for n in given if n is not None]
    return max(given) if given else config["domains"]["joint_clusters"]


def joint_cluster_settings(group):
    """How a group's joint latents are clustered: the config's `domains`, its number of clusters."""
    settings = {k: v for k, v in config["domains"].items() if k != "joint_clusters"}
    return canonical({**settings, "n_domains": joint_clusters(group)})


def joint_scores_inputs(wildcards):
    """Every run of a group, in joint_runs' order, and the group's preprocessed spots."""
    return {
        "latents": [
            f"{joint_run_dir(*run)}/latent.h5ad" for run in joint_runs(wildcards.group)
        ],
        "group": f"results/joint/preprocessed/{wildcards.group}.h5ad",
    }


def joint_figure_inputs(wildcards):
    runs = [
        (wildcards.group, model, alpha, JOINT_FIGURE_SEED)
        for model in MODELS
        for alpha in (0.0, ALPHA_ON)
    ]
    return {
        "latents": [f"{joint_run_dir(*run)}/latent.h5ad" for run in runs],
        "scores": f"results/joint/scores/{wildcards.group}/scores.tsv",
        "clusters": f"results/joint/scores/{wildcards.group}/clusters.tsv",
    }


def joint_metrics_files():
    return [f"{joint_run_dir(*run)}/sections.tsv" for run in joint_runs()]


def joint_outputs():
    """The joint runs' metrics, scores and one figure per group; none without `joint`."""
    if not JOINT:
        return []
    tables = [
        "results/metrics/joint_runs.tsv",
        *(f"results/joint/scores.{ext}" for ext in ("tsv", "md", "html")),
    ]
    figures = [
        f"results/joint/{group}.{ext}" for group in JOINT for ext in ("png", "pdf")
    ]
    return [*tables, *figures]


def table1_inputs(wildcards):
    """The runs of Table 1: every single-section run, and the joint runs' per-section metrics."""
    inputs = {"runs": "results/metrics/runs.tsv"}
    if JOINT:
        inputs["joint"] = "results/metrics/joint_runs.tsv"
    return inputs


def final_outputs():
    tables = [
        f"results/table1/{name}"
        for name in (
            "table1.csv",
            "table1.md",
            "table1.tex",
            "table1.html",
            "table1_vs_published.csv",
            "table1_vs_published.md",
            "table1_vs_published.html",
        )
    ]
    figures = [
        f"results/figures/{fig}.{ext}"
        for fig in ("figure4", "figure5", "figure6")
        for ext in ("png", "pdf")
    ]
    return [
        "results/metrics/runs.tsv",
        *tables,
        *figures,
        *domain_outputs(),
        *joint_outputs(),
    ]


# Stale locks. Snakemake's lock files (.snakemake/locks/N.input.lock,
# N.output.lock) hold only the locked paths, not who holds them, and stay
# behind when Snakemake is killed (SIGKILL, power loss). At start each run
# leaves an owner mark (host and pid) beside them; the lock folder, marks
# included, goes when the run ends. A later run finding locks whose owners on
# this host are all gone says so in one line, with the command to run.
LOCK_DIR = Path(".snakemake/locks")


def lock_owner_mark():
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    (LOCK_DIR / f"owner.{socket.gethostname()}.{os.getpid()}").touch()


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a reused pid is not our Snakemake
        return b"snakemake" in Path(os.sep, "proc", str(pid), "cmdline").read_bytes()
    except OSError:
        return True


def shown_path(path):
    """A path as the user would type it: relative when under the working folder."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def stale_lock_hint():
    """One line when Snakemake's locks were left by processes that are gone, else None."""
    if not workflow.is_main_process or "--unlock" in sys.argv:
        return None
    if not any(LOCK_DIR.glob("*.lock")):
        return None
    owners = [
        mark.name.split(".", 1)[1].rsplit(".", 1) for mark in LOCK_DIR.glob("owner.*")
    ]
    host = socket.gethostname()
    if not owners or any(h != host or process_alive(int(pid)) for h, pid in owners):
        return None
    configs = "".join(
        f" --configfile {shown_path(path)}" for path in workflow.overwrite_configfiles
    )
    pids = ", ".join(pid for _, pid in owners)
    return (
        f"Stale lock: the Snakemake run (pid {pids}) that locked this folder was killed; "
        f"remove its lock with `snakemake --unlock{configs}` and run again "
        "(incomplete outputs are redone)."
    )
