"""Downloading 10x files: mirrors, retries, checks, messages; against real local HTTP servers."""

from __future__ import annotations

import hashlib
import http.server
import random
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import anndata as ad
import pytest
import yaml
from _workflow import REPO, copy_workflow, snakemake

import dpst
from dpst_study.download import USER_AGENT, DownloadError, download, mirror_urls

SAMPLE = "SAMPLE_X"
FILE = "filtered_feature_bc_matrix.h5"
NAME = f"{SAMPLE}_{FILE}"
CONTENT = random.Random(0).randbytes(200_000)
EXPECTED = {
    "size": len(CONTENT),
    "md5": hashlib.md5(CONTENT).hexdigest(),
    "sha256": hashlib.sha256(CONTENT).hexdigest(),
}
OTHER_ADVICE = (
    "Check download.mirrors and the section's `files` checksums in the config, or point "
    "the section at a local Space Ranger folder (sections.<name>.local)."
)
OFFLINE_ADVICE = (
    "No mirror could be reached: without network access, point the section at a local "
    "Space Ranger folder (sections.<name>.local in the config) or run the offline demo "
    "(--configfile config/demo.yaml)."
)


# ------------------------------------------------------------------ servers
class Mirror:
    """An HTTP server on 127.0.0.1 whose every GET is answered by ``respond(handler, n)``
    (n counts the requests); it records each request's path and User-Agent."""

    def __init__(self, respond):
        self.requests: list[tuple[str, str]] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append((self.path, self.headers.get("User-Agent", "")))
                respond(self, len(mirror.requests))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve():
    """Start Mirrors; at teardown, let stalled handlers finish and stop the servers."""
    mirrors, release = [], threading.Event()

    def start(respond):
        mirrors.append(Mirror(lambda handler, n: respond(handler, n, release)))
        return mirrors[-1]

    yield start
    release.set()
    for mirror in mirrors:
        mirror.close()


def send(handler, body: bytes, length: int | None = None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)
    handler.wfile.flush()


def good(handler, n, release):
    send(handler, CONTENT)


def closed_port_url() -> str:
    """A URL on a port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def fetch(mirrors: list[str], dest: Path, **kwargs) -> str:
    settings = {"timeout": 5, "retries": 0, "retry_wait": 0, **EXPECTED, **kwargs}
    return download(mirror_urls(mirrors, SAMPLE, FILE), dest, **settings)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.part"))


def url_of(base: str) -> str:
    return f"{base}/{SAMPLE}/{NAME}"


# ------------------------------------------------------------ the function
def test_server_refusing_urllibs_agent_serves_ours(serve, tmp_path):
    def refuse_python_urllib(handler, n, release):  # as 10x's CDN does
        if handler.headers.get("User-Agent", "").startswith("Python-urllib/"):
            handler.send_error(403)
        else:
            send(handler, CONTENT)

    mirror = serve(refuse_python_urllib)
    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(url_of(mirror.url), timeout=5)

    dest = tmp_path / NAME
    assert fetch([mirror.url], dest) == url_of(mirror.url)
    assert dest.read_bytes() == CONTENT
    agent = mirror.requests[-1][1]
    assert agent == USER_AGENT
    assert agent.startswith(f"dpst/{dpst.__version__} (distance-preserving VAEs")


def test_dead_first_mirror_falls_through_to_the_next(serve, tmp_path):
    mirror = serve(good)
    dest = tmp_path / NAME
    assert fetch([closed_port_url(), mirror.url], dest, retries=1) == url_of(mirror.url)
    assert dest.read_bytes() == CONTENT
    assert mirror.requests == [(f"/{SAMPLE}/{NAME}", USER_AGENT)]


def test_wrong_bytes_of_the_right_size_move_on_to_the_next_mirror(serve, tmp_path):
    wrong = bytearray(CONTENT)
    wrong[1000] ^= 0xFF
    bad = serve(lambda handler, n, release: send(handler, bytes(wrong)))
    mirror = serve(good)
    dest = tmp_path / NAME
    assert fetch([bad.url, mirror.url], dest, retries=2) == url_of(mirror.url)
    assert dest.read_bytes() == CONTENT
    assert len(bad.requests) == 1  # a checksum failure is not retried at the same mirror
    assert leftovers(tmp_path) == []


def test_404_names_url_and_status_and_is_not_retried(serve, tmp_path):
    missing = serve(lambda handler, n, release: handler.send_error(404))
    dead = closed_port_url()
    with pytest.raises(DownloadError) as caught:
        fetch([missing.url, dead], tmp_path / NAME, retries=2)
    message = str(caught.value)
    assert message == (
        f"could not download {NAME} from any mirror: "
        f"{url_of(missing.url)} (HTTP 404 Not Found); "
        f"{url_of(dead)} (cannot connect: Connection refused, 3 attempts). {OTHER_ADVICE}"
    )
    assert len(missing.requests) == 1
    assert "offline" not in message and "network" not in message
    assert not (tmp_path / NAME).exists() and leftovers(tmp_path) == []


def test_500_is_retried_then_named_with_url_and_status(serve, tmp_path):
    failing = serve(lambda handler, n, release: handler.send_error(500))
    with pytest.raises(DownloadError) as caught:
        fetch([failing.url], tmp_path / NAME, retries=2)
    message = str(caught.value)
    assert message == (
        f"could not download {NAME} from any mirror: "
        f"{url_of(failing.url)} (HTTP 500 Internal Server Error, 3 attempts). {OTHER_ADVICE}"
    )
    assert len(failing.requests) == 3
    assert "offline" not in message and "network" not in message


def test_transient_failure_is_retried_at_the_same_mirror(serve, tmp_path):
    def unavailable_once(handler, n, release):
        if n == 1:
            handler.send_error(503)
        else:
            send(handler, CONTENT)

    mirror = serve(unavailable_once)
    dest = tmp_path / NAME
    assert fetch([mirror.url], dest, retries=1) == url_of(mirror.url)
    assert dest.read_bytes() == CONTENT and len(mirror.requests) == 2


def stall_after(n_bytes: int, seconds: float):
    """A mirror that sends the first ``n_bytes`` of the file, then nothing for ``seconds``."""

    def respond(handler, n, release):
        send(handler, CONTENT[:n_bytes], length=len(CONTENT))
        release.wait(seconds)

    return respond


def test_stall_reports_the_bytes_received(serve, tmp_path):
    mirror = serve(stall_after(5000, 30))
    with pytest.raises(DownloadError) as caught:
        fetch([mirror.url], tmp_path / NAME, timeout=0.5)
    assert str(caught.value) == (
        f"could not download {NAME} from any mirror: {url_of(mirror.url)} "
        f"(stalled after 5000 of {len(CONTENT)} bytes: no data for 0.5 s). {OTHER_ADVICE}"
    )
    assert not (tmp_path / NAME).exists() and leftovers(tmp_path) == []


def test_broken_off_transfer_reports_bytes_and_is_retried(serve, tmp_path):
    def close_after_3000(handler, n, release):
        send(handler, CONTENT[:3000], length=len(CONTENT))  # then the connection closes

    mirror = serve(close_after_3000)
    with pytest.raises(DownloadError) as caught:
        fetch([mirror.url], tmp_path / NAME, retries=1)
    assert str(caught.value) == (
        f"could not download {NAME} from any mirror: {url_of(mirror.url)} "
        f"(broke off after 3000 of {len(CONTENT)} bytes: the server closed the connection, "
        f"2 attempts). {OTHER_ADVICE}"
    )
    assert len(mirror.requests) == 2


def test_only_connection_failures_suggest_working_offline(tmp_path):
    dead = [closed_port_url(), closed_port_url()]
    with pytest.raises(DownloadError) as caught:
        fetch(dead, tmp_path / NAME)
    assert str(caught.value) == (
        f"could not download {NAME} from any mirror: "
        f"{url_of(dead[0])} (cannot connect: Connection refused); "
        f"{url_of(dead[1])} (cannot connect: Connection refused). {OFFLINE_ADVICE}"
    )


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "sha256 only"])
def test_bad_file_leaves_nothing_and_names_the_failed_check(serve, tmp_path, damage):
    served, expected = CONTENT, dict(EXPECTED)
    if damage == "truncated":
        served = CONTENT[: len(CONTENT) // 2]
        reason = f"{len(served)} bytes, the config expects {len(CONTENT)}: truncated or a different file"
    elif damage == "corrupt":
        served = CONTENT[:-1] + bytes([CONTENT[-1] ^ 1])
        reason = (
            f"md5 {hashlib.md5(served).hexdigest()} does not match the config's "
            f"{EXPECTED['md5']}: corrupt or a different file"
        )
    else:  # size and md5 hold, sha256 does not: the run still fails, naming sha256
        expected["sha256"] = "0" * 64
        reason = f"sha256 {EXPECTED['sha256']} does not match the config's {'0' * 64}: corrupt or a different file"
    mirror = serve(lambda handler, n, release: send(handler, served))
    with pytest.raises(DownloadError) as caught:
        download(mirror_urls([mirror.url], SAMPLE, FILE), tmp_path / NAME, **{**expected, "timeout": 5, "retries": 0})
    assert str(caught.value) == (
        f"could not download {NAME} from any mirror: {url_of(mirror.url)} ({reason}). {OTHER_ADVICE}"
    )
    assert not (tmp_path / NAME).exists() and leftovers(tmp_path) == []


def test_killed_download_leaves_nothing_after_the_next_run(serve, tmp_path):
    stalling, mirror = serve(stall_after(5000, 60)), serve(good)
    dest = tmp_path / NAME
    # a sibling file's partial download in the same folder must survive the sweep
    sibling = tmp_path / f".{SAMPLE}_spatial.tar.gz.abc123.part"
    sibling.write_bytes(b"in progress")
    code = (
        "from dpst_study.download import download, mirror_urls\n"
        f"download(mirror_urls([{stalling.url!r}], {SAMPLE!r}, {FILE!r}), {str(dest)!r}, "
        f"size={EXPECTED['size']}, md5={EXPECTED['md5']!r}, timeout=60, retries=0)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO / "workflow")  # dpst_study
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size == 5000 for p in tmp_path.glob(f".{NAME}.*.part")):
            assert process.poll() is None and time.monotonic() < deadline, "download never started"
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait()
    [killed_leftover] = tmp_path.glob(f".{NAME}.*.part")

    fetch([mirror.url], dest)
    assert dest.read_bytes() == CONTENT
    assert not killed_leftover.exists()
    assert leftovers(tmp_path) == [sibling]


# ------------------------------------------------- through the workflow
def checksum(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}


def publish_10x_sample(root: Path, sample_id: str, tmp_path: Path) -> dict:
    """Serve a simulated section under 10x's file names; return its `files` entry."""
    outs = dpst.sim.write_spaceranger(
        dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=5), tmp_path / f"outs_{sample_id}"
    )
    folder = root / sample_id
    folder.mkdir(parents=True)
    h5 = folder / f"{sample_id}_filtered_feature_bc_matrix.h5"
    shutil.copy(outs / "filtered_feature_bc_matrix.h5", h5)
    tarball = folder / f"{sample_id}_spatial.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(outs / "spatial", arcname="spatial")
    return {"filtered_feature_bc_matrix.h5": checksum(h5), "spatial.tar.gz": checksum(tarball)}


@pytest.fixture
def file_server(serve, tmp_path):
    """A mirror serving the files under tmp_path/served: (that folder, its URL)."""
    root = tmp_path / "served"
    root.mkdir()

    def from_folder(handler, n, release):
        path = root / handler.path.lstrip("/")
        if path.is_file():
            send(handler, path.read_bytes())
        else:
            handler.send_error(404)

    return root, serve(from_folder).url


@pytest.fixture
def workdir(tmp_path):
    return copy_workflow(tmp_path / "wf")


def write_config(workdir: Path, config: dict) -> str:
    path = workdir / "config" / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path.relative_to(workdir))


def download_config(mirrors: list[str], sections: dict) -> dict:
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    demo["sections"] = sections
    demo["download"] = {"mirrors": mirrors, "timeout": 10, "retries": 0}
    for key in ("sensitivity", "figure4", "joint"):  # they name the demo's sections
        demo.pop(key, None)
    return demo


def test_download_then_preprocess_from_local_server(workdir, file_server, tmp_path):
    root, url = file_server
    files = publish_10x_sample(root, "SAMPLE_A", tmp_path)
    sections = {"T1": {"sample_id": "SAMPLE_A", "files": files}}
    config = download_config([closed_port_url(), url], sections)  # the first mirror is dead
    snakemake(workdir, "results/preprocessed/T1.h5ad", "--cores", "1", "--configfile", write_config(workdir, config))
    h5 = workdir / "resources/10x/SAMPLE_A/SAMPLE_A_filtered_feature_bc_matrix.h5"
    assert checksum(h5) == files["filtered_feature_bc_matrix.h5"]
    assert (workdir / "resources/10x/SAMPLE_A/spatial/scalefactors_json.json").exists()
    log = (workdir / "logs/download/SAMPLE_A_filtered_feature_bc_matrix.h5.log").read_text()
    assert f"downloaded {url}/SAMPLE_A/SAMPLE_A_filtered_feature_bc_matrix.h5" in log
    preprocessed = ad.read_h5ad(workdir / "results/preprocessed/T1.h5ad")
    assert "spatial_um" in preprocessed.obsm and "counts" in preprocessed.layers


def test_corrupt_download_fails_the_job_naming_url_and_check(workdir, file_server, tmp_path):
    root, url = file_server
    files = publish_10x_sample(root, "SAMPLE_B", tmp_path)
    h5 = root / "SAMPLE_B" / "SAMPLE_B_filtered_feature_bc_matrix.h5"
    data = bytearray(h5.read_bytes())
    data[len(data) // 2] ^= 0xFF
    h5.write_bytes(bytes(data))
    config = download_config([url], {"T1": {"sample_id": "SAMPLE_B", "files": files}})
    target = "resources/10x/SAMPLE_B/SAMPLE_B_filtered_feature_bc_matrix.h5"
    result = snakemake(workdir, target, "--cores", "1", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    expected_md5 = files["filtered_feature_bc_matrix.h5"]["md5"]
    assert (
        f"ERROR: could not download SAMPLE_B_filtered_feature_bc_matrix.h5 from any mirror: "
        f"{url}/SAMPLE_B/SAMPLE_B_filtered_feature_bc_matrix.h5 "
        f"(md5 {hashlib.md5(data).hexdigest()} does not match the config's {expected_md5}: "
        f"corrupt or a different file). {OTHER_ADVICE}"
    ) in message
    assert "Traceback" not in message
    folder = workdir / "resources/10x/SAMPLE_B"
    assert not (workdir / target).exists()
    assert not list(folder.glob(".*.part")) if folder.exists() else True


def test_offline_download_says_what_to_do(workdir):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    dead = closed_port_url()
    config["download"] = {"mirrors": [dead], "timeout": 5, "retries": 0}
    sample = "V1_Mouse_Brain_Sagittal_Anterior"
    target = f"resources/10x/{sample}/{sample}_spatial.tar.gz"
    result = snakemake(workdir, target, "--cores", "1", "--configfile", write_config(workdir, config), check=False)
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert (
        f"ERROR: could not download {sample}_spatial.tar.gz from any mirror: "
        f"{dead}/{sample}/{sample}_spatial.tar.gz (cannot connect: Connection refused). "
        f"{OFFLINE_ADVICE}"
    ) in message
    assert "Traceback" not in message


def test_local_spaceranger_folder_skips_the_download(workdir, tmp_path):
    outs = dpst.sim.write_spaceranger(
        dpst.sim.simulate_section(n_spots=150, n_genes=80, seed=6), tmp_path / "outs", positions="v2", root_attrs=False
    )
    config = download_config([closed_port_url()], {"L1": {"local": str(outs)}})
    snakemake(workdir, "results/preprocessed/L1.h5ad", "--cores", "1", "--configfile", write_config(workdir, config))
    assert not (workdir / "resources/10x").exists()
