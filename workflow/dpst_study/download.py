"""Fetch 10x files from a list of mirrors, verified, into place; unpack spatial/.

Why requests and a short read loop of our own, not pooch: pooch's HTTPDownloader
streams with ``iter_content`` in fixed chunks, so bytes of a partial chunk never
reach the file. Measured against a server that stalls after 5000 bytes, it had
written 4096 bytes (1 KiB chunks) or 0 (64 KiB chunks), so a stall could not be
reported at its true size. ``pooch.retrieve`` also names its temporary file
``tmpXXXXXXXX`` (``NamedTemporaryFile``), which no later run can tie to the file it
belonged to, verifies a single hash (we check size, md5 and sha256 in one pass),
and has no retries of its own (``Pooch.fetch`` retries 404s and hash mismatches
alike). requests is the HTTP library pooch itself uses.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import requests
import urllib3
from tqdm.auto import tqdm

USER_AGENT = (
    f"dpst/{version('dpst')} (distance-preserving VAEs for spatial transcriptomics; "
    f"python-requests/{requests.__version__})"
)
# Identity encoding: a server must not gzip the .h5/.tar.gz on the wire, so the
# bytes written are the file's bytes that size, md5 and sha256 describe.
REQUEST_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
READ_SIZE = 1 << 20
# Statuses worth another attempt at the same mirror; any other 4xx moves on at once.
TRANSIENT_STATUSES = {408, 429}

OFFLINE_ADVICE = (
    "No mirror could be reached: without network access, point the section at a local "
    "Space Ranger folder (sections.<name>.local in the config) or run the offline demo "
    "(--configfile config/demo.yaml)."
)
OTHER_ADVICE = (
    "Check download.mirrors and the section's `files` checksums in the config, or point "
    "the section at a local Space Ranger folder (sections.<name>.local)."
)


class DownloadError(RuntimeError):
    """A download failed or its content is not what the config expects."""


@dataclass(eq=False)  # identity equality, as exceptions have
class AttemptFailed(Exception):
    """Why one attempt at one URL failed."""

    reason: str
    transient: bool = False  # worth another attempt at the same URL
    unreachable: bool = False  # no connection at all (offline, DNS, refused)

    def __str__(self) -> str:
        return self.reason


def mirror_urls(mirrors: Sequence[str], sample_id: str, file: str) -> list[str]:
    """URLs of one 10x file, one per mirror: ``{base}/{sample_id}/{sample_id}_{file}``."""
    return [f"{base.rstrip('/')}/{sample_id}/{sample_id}_{file}" for base in mirrors]


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    size: int,
    md5: str,
    sha256: str | None = None,
    timeout: float = 60,
    retries: int = 2,
    retry_wait: float = 2.0,
) -> str:
    """Fetch the first of ``urls`` that serves the expected file into ``dest``.

    Each URL gets ``1 + retries`` attempts on transient failures (connection errors,
    timeouts, 5xx, broken-off transfers), waiting ``retry_wait`` s times the attempt
    number between them; a 4xx or content that fails a check moves on to the next
    URL at once. Only a complete file whose size, md5 and (if given) sha256 match
    ever appears at ``dest``. Returns the URL that served it.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_partial_downloads(dest)
    if not urls:
        raise DownloadError(f"no mirror to download {dest.name} from: download.mirrors is empty")
    failures: list[tuple[str, AttemptFailed, int]] = []
    for url in urls:
        for attempt in range(1, retries + 2):
            try:
                fetch_verified(url, dest, size=size, md5=md5, sha256=sha256, timeout=timeout)
                return url
            except AttemptFailed as failure:
                if failure.transient and attempt <= retries:
                    wait = retry_wait * attempt
                    print(f"{url}: {failure}; attempt {attempt + 1} of {retries + 1} in {wait:g} s", file=sys.stderr)
                    time.sleep(wait)
                    continue
                failures.append((url, failure, attempt))
                break
    raise DownloadError(failure_summary(dest.name, failures))


def failure_summary(name: str, failures: list[tuple[str, AttemptFailed, int]]) -> str:
    """One line: every URL tried, why it failed, and what to do next."""
    tried = "; ".join(
        f"{url} ({failure}{f', {attempts} attempts' if attempts > 1 else ''})" for url, failure, attempts in failures
    )
    offline = all(failure.unreachable for _, failure, _ in failures)
    advice = OFFLINE_ADVICE if offline else OTHER_ADVICE
    return f"could not download {name} from any mirror: {tried}. {advice}"


def sweep_partial_downloads(dest: Path) -> None:
    """Delete what killed earlier attempts at ``dest`` left behind.

    Safe while other files download into the same folder: the pattern holds the
    file's name, and Snakemake runs one job per output at a time.
    """
    for leftover in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        leftover.unlink(missing_ok=True)


def fetch_verified(url: str, dest: Path, *, size: int, md5: str, sha256: str | None, timeout: float) -> None:
    """One attempt: stream ``url`` into a hidden file beside ``dest``, check it, move it in."""
    fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            digests = transfer(url, out, size=size, timeout=timeout, label=dest.name)
        for algorithm, expected in (("md5", md5), ("sha256", sha256)):
            actual = digests[algorithm].hexdigest()
            if expected is not None and actual != expected.lower():
                raise AttemptFailed(
                    f"{algorithm} {actual} does not match the config's {expected}: corrupt or a different file"
                )
        os.replace(partial, dest)  # atomic: dest is either absent or complete and verified
    finally:
        Path(partial).unlink(missing_ok=True)


def transfer(url: str, out, *, size: int, timeout: float, label: str) -> dict:
    """Stream ``url`` into ``out``, checking its size; return its md5 and sha256 digests."""
    try:
        # timeout bounds the connection and each wait for data, not the whole transfer
        response = requests.get(url, headers=REQUEST_HEADERS, stream=True, timeout=timeout)
    except requests.exceptions.SSLError as err:  # reached a server, but not a trusted one
        raise AttemptFailed(f"TLS failed: {root_cause(err)}") from None
    except requests.ConnectionError as err:  # ConnectTimeout included
        raise AttemptFailed(f"cannot connect: {root_cause(err)}", transient=True, unreachable=True) from None
    except requests.Timeout:
        raise AttemptFailed(f"no response within {timeout:g} s", transient=True) from None
    except requests.RequestException as err:  # a malformed URL, too many redirects
        raise AttemptFailed(f"request failed: {root_cause(err)}") from None
    with response:
        status = response.status_code
        if status >= 400:
            raise AttemptFailed(
                f"HTTP {status} {response.reason}", transient=status >= 500 or status in TRANSIENT_STATUSES
            )
        announced = response.headers.get("Content-Length")
        if announced is not None and announced.isdigit() and int(announced) != size:
            raise AttemptFailed(f"{announced} bytes, the config expects {size}: truncated or a different file")
        digests = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
        received = 0
        with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label, mininterval=5) as bar:
            try:
                # read1 returns whatever has arrived, so `received` is exact when a
                # transfer stalls or breaks off (a fixed-size read would lose the tail)
                while chunk := response.raw.read1(READ_SIZE, decode_content=False):
                    out.write(chunk)
                    for digest in digests.values():
                        digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > size:
                        raise AttemptFailed(f"more than {size} bytes, the config expects {size}: a different file")
            except urllib3.exceptions.ReadTimeoutError:
                raise AttemptFailed(
                    f"stalled after {received} of {size} bytes: no data for {timeout:g} s", transient=True
                ) from None
            except (urllib3.exceptions.HTTPError, OSError) as err:
                raise AttemptFailed(
                    f"broke off after {received} of {size} bytes: {root_cause(err)}", transient=True
                ) from None
    if received != size:
        raise AttemptFailed(f"{received} bytes, the config expects {size}: truncated or a different file")
    return digests


def root_cause(err: BaseException) -> str:
    """The innermost readable reason ('Connection refused').

    It lies under requests' and urllib3's wrappers, whose own text repeats the
    URL and object addresses.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    best: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, http.client.IncompleteRead):
            best = "the server closed the connection"
        elif isinstance(current, OSError):  # socket.timeout has no strerror, only "timed out"
            best = current.strerror or str(current) or best
        reason = getattr(current, "reason", None)
        current = current.__cause__ or current.__context__ or (reason if isinstance(reason, BaseException) else None)
    return best or str(err)


def extract_spatial(tarball: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack the ``spatial/`` folder of a 10x spatial tarball into ``dest`` (atomically)."""
    dest = Path(dest)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        try:
            with tarfile.open(tarball) as tar:
                tar.extractall(work, filter="data")  # refuses absolute paths and '..'
        except (tarfile.TarError, OSError) as err:
            raise DownloadError(f"{tarball} is not a readable tar.gz archive: {err}") from None
        found = [p for p in work.rglob("spatial") if p.is_dir()]
        if not found:
            raise DownloadError(f"{tarball} holds no spatial/ folder")
        found[0].rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
