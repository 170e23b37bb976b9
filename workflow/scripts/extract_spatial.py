"""Unpack spatial/ (positions, scale factors, images) from a 10x spatial tarball."""

from dpst_study.download import DownloadError, extract_spatial
from dpst_study.jobs import logged_to

with logged_to(snakemake.log[0], expected=(DownloadError,)):
    extract_spatial(snakemake.input[0], snakemake.output[0])
