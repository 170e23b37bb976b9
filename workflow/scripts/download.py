"""Download one 10x file, verify size and md5, move it into place."""

from dpst.workflow import DownloadError, download, logged_to

with logged_to(snakemake.log[0], expected=(DownloadError,)):
    download(
        snakemake.params.url,
        snakemake.output[0],
        size=snakemake.params.expected["bytes"],
        md5=snakemake.params.expected["md5"],
        timeout=snakemake.params.timeout,
    )
    print(f"downloaded {snakemake.params.url} -> {snakemake.output[0]}")
