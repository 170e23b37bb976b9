"""The study's reproduction, apart from the library: what only the workflow needs.

tables    Table 1 (CSV, Markdown, LaTeX) beside the published values
figures   Figures 4-6 assembled from the library's plots and the runs table
runs      train, evaluate and write one run; collect all runs into one table
jobs      a job's log and its one-line user errors
sections  read a section (Space Ranger folder or AnnData file), or a group of them stacked
joint     the joint runs (a group of sections in one model): clusters, scib-metrics scores, UMAP
domains   spatial domains of the annotated sections' runs, scored against the annotation
download  fetch the 10x sections from mirrors, verified; unpack spatial/

The workflow's scripts import this package (workflow/scripts/dpst_study links
here, as workflow/scripts/dpst links to the library in src/dpst), so a run uses
the code it ships with. It is not part of the ``dpst`` distribution.
"""
