"""Download one 10x file from the first mirror that serves it verified (size, md5, sha256)."""

from dpst_study.download import DownloadError, download, mirror_urls
from dpst_study.jobs import logged_to

settings = snakemake.config["download"]
expected = snakemake.params.expected
with logged_to(snakemake.log[0], expected=(DownloadError,)):
    url = download(
        mirror_urls(settings["mirrors"], snakemake.wildcards.sample_id, snakemake.wildcards.file),
        snakemake.output[0],
        size=expected["bytes"],
        md5=expected["md5"],
        sha256=expected.get("sha256"),
        timeout=settings["timeout"],
        retries=settings["retries"],
    )
    print(f"downloaded {url} -> {snakemake.output[0]} (size, md5 and sha256 as in the config)")
