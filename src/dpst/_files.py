"""Writing files so that a crash or a full disk never leaves a partial one at its final path."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Write to a temporary name that becomes ``path`` only when the block succeeds.

    The temporary name lies beside ``path``, is hidden and keeps its suffix
    (writers that pick the format from the suffix still work). When the
    block raises, the temporary file or folder is removed and ``path`` is
    left as it was; a crash or a full disk never leaves a partial file at
    ``path``. A folder already at ``path`` is replaced.

    Parameters
    ----------
    path
        Final path of the file or folder; its parent folder is created.

    Yields
    ------
    pathlib.Path
        The temporary path to write to.

    Examples
    --------
    >>> with atomic_path("results/table.csv") as tmp:
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
