"""Unpack spatial/ (positions, scale factors, images) from a 10x spatial tarball."""

from dpst.workflow import DownloadError, extract_spatial, fail, logged_to

with logged_to(snakemake.log[0]):
    try:
        extract_spatial(snakemake.input[0], snakemake.output[0])
        error = None
    except DownloadError as err:
        error = str(err)
if error:
    fail(error, snakemake.log[0])
