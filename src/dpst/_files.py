"""Writing files and folders so that a crash, an interrupt or a second writer never loses or garbles one.

Everything the project writes goes through :func:`atomic_path`: the new version
is written beside the final path under a hidden temporary name, flushed to disk,
and only then put in place by one rename. The old version stays whole until the
new one is complete; a folder replaces a folder by an atomic exchange of the two
names (Linux ``renameat2``), so no moment exists at which neither is there. Writers
of one path take turns (an advisory lock on a hidden file beside it, removed
when released), and temporaries left by a writer that was killed are removed by
the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, writers do not take turns
    fcntl = None  # type: ignore[assignment]

# renameat2(2): swap two paths atomically
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _turn(path: Path) -> Iterator[None]:
    """Hold the advisory lock of ``path``: writers of one path take turns instead of colliding.

    The lock file lives only while it is held. A writer that got the lock on a
    file another writer has since removed tries again, so two writers never hold
    the locks of two different files at once.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock = path.with_name(f"{_temporary_prefix(path)}lock")
    while True:
        handle = open(lock, "a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the file was removed while we waited: lock the one there now
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held, so no one locks the removed file and proceeds
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of ``path`` left by writers that died (under the lock no other writer is at work)."""
    prefix = _temporary_prefix(path)
    for leftover in path.parent.glob(f"{glob_escape(prefix)}*.tmp*"):
        _remove(leftover)


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped (a path may hold ``[``)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _fsync(path: Path) -> None:
    """Flush a file, or every file of a folder and the folder itself, to disk."""
    if path.is_dir():
        for inner in path.rglob("*"):
            if inner.is_file():
                _fsync_one(inner, os.O_RDONLY)
        _fsync_one(path, os.O_RDONLY)
    elif path.exists():
        _fsync_one(path, os.O_RDONLY)


def _fsync_one(path: Path, flags: int) -> None:
    try:
        descriptor = os.open(path, flags)
    except OSError:  # pragma: no cover - a file system that cannot open folders
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - some file systems do not sync folders
        pass
    finally:
        os.close(descriptor)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2); False where the system cannot."""
    rename = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if rename is None:
        return False
    result = rename(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _replace(new: Path, path: Path) -> None:
    """Put ``new`` at ``path``; an existing folder at ``path`` stays whole until ``new`` is there."""
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(new, path)  # a file, or nothing yet: one atomic rename
        return
    if _exchange(new, path):
        _remove(new)  # the old folder, now under the temporary name
        return
    # elsewhere: aside, in, then away; recover_folder() puts the old one back after a crash in between
    aside = path.with_name(f"{_temporary_prefix(path)}{uuid.uuid4().hex}.tmp.old")
    os.rename(path, aside)
    os.rename(new, path)
    _remove(aside)


def recover_folder(path: str | os.PathLike) -> None:
    """Put back the old version of a folder whose replacement was cut between its two renames.

    Only where :func:`atomic_path` cannot exchange folders atomically (no Linux
    ``renameat2``): if ``path`` is missing and an old version waits beside it, that
    version is restored. Elsewhere it does nothing.

    Parameters
    ----------
    path
        The folder.
    """
    path = Path(path)
    if path.exists():
        return
    old = sorted(path.parent.glob(f"{glob_escape(_temporary_prefix(path))}*.tmp.old"))
    if old:
        os.rename(old[-1], path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Write to a temporary name that becomes ``path`` only when the block succeeds.

    The temporary name lies beside ``path``, is hidden and keeps its suffix
    (writers that pick the format from the suffix still work). On success the new
    file or folder is flushed to disk and renamed into place in one step; an
    existing folder is exchanged with it atomically, so ``path`` always holds a
    complete version, old or new, whatever stops the process. When the block
    raises, the temporary is removed and ``path`` is left as it was. Writers of one
    path take turns; temporaries of writers that were killed are removed.

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
    with _turn(path):
        recover_folder(path)
        _remove_stale_temporaries(path)
        tmp = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}.tmp{path.suffix}")
        try:
            yield tmp
            _fsync(tmp)
            _replace(tmp, path)
            _fsync_one(path.parent, os.O_RDONLY)
        finally:
            _remove(tmp)
