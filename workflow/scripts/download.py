"""Download one 10x file, verify size and md5, move it into place."""

from dpst.workflow import DownloadError, download, fail, logged_to

with logged_to(snakemake.log[0]):
    try:
        download(
            snakemake.params.url,
            snakemake.output[0],
            size=snakemake.params.expected["bytes"],
            md5=snakemake.params.expected["md5"],
            timeout=snakemake.params.timeout,
        )
    except DownloadError as err:
        error = str(err)
    else:
        error = None
        print(f"downloaded {snakemake.params.url} -> {snakemake.output[0]}")
if error:
    fail(error, snakemake.log[0])
