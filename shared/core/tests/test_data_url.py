"""The canonical-URL path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from subspace_core.data import (
    DatasetSpec,
    DatasetUnavailable,
    FileSpec,
    LocalDir,
    Url,
    fetch,
    register_dataset,
)
from subspace_core.data import registry as registry_module
from subspace_core.data.sources import url as url_module

GOOD = bytes(range(256)) * 4096  # 1 MiB, several read chunks
GOOD_FILE = FileSpec("data.bin", hashlib.sha256(GOOD).hexdigest(), len(GOOD))
SECOND = b"labels\n" * 10
SECOND_FILE = FileSpec("labels.txt", hashlib.sha256(SECOND).hexdigest(), len(SECOND))
TAMPERED = bytearray(GOOD)
TAMPERED[1234] ^= 0xFF
TAMPERED = bytes(TAMPERED)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        body, mode = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":  # announce everything, send half, hang up
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.routes = {
            "/good/data.bin": (GOOD, "full"),
            "/good/labels.txt": (SECOND, "full"),
            "/tampered/data.bin": (TAMPERED, "full"),
            "/tampered/labels.txt": (SECOND, "full"),
            "/truncated/data.bin": (GOOD, "truncate"),
            "/wrongsize/data.bin": (GOOD + b"extra", "full"),
        }
        self.httpd.requests = []
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def url(self, prefix: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{prefix}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 whose port was just closed: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/data"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SUBZOO_TEST_DATA_UNSET", raising=False)
    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))
    return tmp_path / "home"


def _register(name: str, *sources, files=(GOOD_FILE,)) -> None:
    register_dataset(
        DatasetSpec(
            name=name,
            files=files,
            sources=sources,
            loader=lambda files, split: (np.zeros((1, 1)), np.zeros(1, dtype=np.int64)),
            license="MIT",
            description="test dataset",
            homepage="https://example.invalid",
            classes=("only",),
        )
    )


def _cached(home: Path, name: str) -> list[str]:
    root = home / "data" / name
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _leftovers(home: Path) -> list[Path]:
    tmp = home / "tmp"
    return [p for p in tmp.rglob("*")] if tmp.exists() else []


def _blocks(lines: list[str]) -> list[str]:
    """The message's per-source blocks: a numbered line and its indented details."""
    blocks: list[str] = []
    for line in lines:
        if re.match(r"\s+\d+\. ", line):
            blocks.append(line)
        else:
            blocks[-1] += "\n" + line
    return blocks


def test_good_file_is_downloaded_verified_and_cached(server, home):
    _register("url_good", Url(server.url("good")))
    paths = fetch("url_good", progress=True)  # exercises the progress bar too
    assert paths["data.bin"] == home / "data" / "url_good" / "data.bin"
    assert paths["data.bin"].read_bytes() == GOOD
    assert server.requests == ["/good/data.bin"]
    # A cache hit does not touch the network.
    assert fetch("url_good", progress=False) == paths
    assert server.requests == ["/good/data.bin"]
    assert _leftovers(home) == []


def test_wrong_hash_is_rejected_not_cached_and_next_source_tried(server, home):
    _register("url_tampered", Url(server.url("tampered")), Url(server.url("good")))
    paths = fetch("url_tampered", progress=False)
    assert server.requests == ["/tampered/data.bin", "/good/data.bin"]
    assert paths["data.bin"].read_bytes() == GOOD
    assert _cached(home, "url_tampered") == ["data.bin"]


def test_wrong_hash_alone_fails_and_caches_nothing(server, home):
    _register("url_only_tampered", Url(server.url("tampered")))
    with pytest.raises(DatasetUnavailable) as info:
        fetch("url_only_tampered", progress=False)
    message = str(info.value)
    assert "checksum mismatch for data.bin: expected sha256 " + GOOD_FILE.sha256 in message
    assert hashlib.sha256(TAMPERED).hexdigest() in message
    assert _cached(home, "url_only_tampered") == []
    assert _leftovers(home) == []
    # Nothing was cached, so the next fetch asks the server again.
    with pytest.raises(DatasetUnavailable):
        fetch("url_only_tampered", progress=False)
    assert server.requests == ["/tampered/data.bin", "/tampered/data.bin"]


def test_dead_server_falls_through_to_the_next_source(server, dead_url, home):
    _register(
        "url_dead_first",
        Url(dead_url),
        Url(server.url("good")),
        files=(GOOD_FILE, SECOND_FILE),
    )
    paths = fetch("url_dead_first", progress=False)
    assert paths["data.bin"].read_bytes() == GOOD
    assert paths["labels.txt"].read_bytes() == SECOND
    assert server.requests == ["/good/data.bin", "/good/labels.txt"]


def test_all_sources_failing_give_one_error_naming_each_source(server, dead_url, home):
    sources = (
        LocalDir("$SUBZOO_TEST_DATA_UNSET/x"),
        Url(dead_url),
        Url(server.url("missing")),
        Url(server.url("tampered")),
        Url(server.url("truncated")),
    )
    _register("url_all_fail", *sources, files=(GOOD_FILE, SECOND_FILE))
    with pytest.raises(DatasetUnavailable) as info:
        fetch("url_all_fail", progress=False)
    err = info.value
    message = str(err)
    assert err.dataset == "url_all_fail"
    # labels.txt came from the tampered server's prefix (its copy there is right).
    assert err.missing == ("data.bin",)
    assert _cached(home, "url_all_fail") == ["labels.txt"]
    lines = message.splitlines()
    assert "dataset 'url_all_fail': no source could provide 1 file(s) ['data.bin']" in lines[0]
    expectations = [
        ("1. local dir $SUBZOO_TEST_DATA_UNSET/x", "$SUBZOO_TEST_DATA_UNSET is not set"),
        (f"2. URL {dead_url}", "refused"),
        (f"3. URL {server.url('missing')}", "HTTP 404"),
        (f"4. URL {server.url('tampered')}", "checksum mismatch"),
        (f"5. URL {server.url('truncated')}", "connection closed after"),
    ]
    blocks = _blocks(lines[1:])
    assert len(blocks) == len(expectations), message
    for (head, reason), block in zip(expectations, blocks, strict=True):
        assert head in block, (head, message)
        assert reason in block, (reason, message)
    # After the refused connection, the dead server's second file was not retried.
    dead = [a for a in err.attempts if a.source == f"URL {dead_url}"]
    assert [a.file for a in dead] == ["data.bin", "labels.txt"]
    assert dead[1].reason.startswith("skipped (unreachable earlier in this fetch")
    assert _leftovers(home) == []


def test_truncated_download_is_not_cached(server, home):
    _register("url_truncated", Url(server.url("truncated")))
    with pytest.raises(
        DatasetUnavailable, match=r"connection closed after 524288 of 1048576 bytes"
    ):
        fetch("url_truncated", progress=False)
    assert _cached(home, "url_truncated") == []
    assert _leftovers(home) == []


def test_announced_size_mismatch_is_refused_before_downloading(server, home):
    _register("url_wrongsize", Url(server.url("wrongsize")))
    with pytest.raises(DatasetUnavailable, match=f"announces {len(GOOD) + 5} bytes, expected"):
        fetch("url_wrongsize", progress=False)
    assert _cached(home, "url_wrongsize") == []


def test_interrupted_download_leaves_no_partial_file(server, home, monkeypatch):
    """Ctrl-C in the middle of a download: it propagates, and nothing half-written stays."""
    seen = []

    def interrupt_after_first_chunk(self, n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(url_module, "_CHUNK", 64 * 1024)
    monkeypatch.setattr(url_module.ByteProgress, "advance", interrupt_after_first_chunk)
    _register("url_interrupted", Url(server.url("good")))
    with pytest.raises(KeyboardInterrupt):
        fetch("url_interrupted", progress=False)
    assert len(seen) == 2
    assert _cached(home, "url_interrupted") == []
    assert _leftovers(home) == []
    # The next fetch completes normally.
    monkeypatch.undo()
    monkeypatch.setenv("SUBZOO_HOME", str(home))
    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))
    _register("url_interrupted", Url(server.url("good")))
    assert fetch("url_interrupted", progress=False)["data.bin"].read_bytes() == GOOD


def test_url_validation_and_names():
    with pytest.raises(
        ValueError, match=r"Url\.base: expected an http\(s\):// URL, got 'ftp://x/y'"
    ):
        Url("ftp://x/y")
    with pytest.raises(ValueError, match=r"Url\.timeout"):
        Url("https://example.invalid", timeout=0)
    u = Url("https://example.invalid/base/", names={"data.bin": "v2/data.bin.gz"})
    assert u.url_for(GOOD_FILE) == "https://example.invalid/base/v2/data.bin.gz"
    assert u.url_for(SECOND_FILE) == "https://example.invalid/base/labels.txt"
    absolute = Url("https://a.invalid", names={"data.bin": "https://b.invalid/x"})
    assert absolute.url_for(GOOD_FILE) == "https://b.invalid/x"
    assert u.describe() == "URL https://example.invalid/base/"
