"""Tests of ``subspace_core.io``: hashing, atomic writes, verified downloads, $SUBZOO_HOME."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from subspace_core import io as sio
from subspace_core.io import (
    ChecksumError,
    DownloadError,
    atomic_path,
    download_url,
    sha256_bytes,
    sha256_file,
    subzoo_home,
)

PAYLOAD = bytes(range(256)) * 64  # 16 KiB


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- hashing -------------------------------------------------------------------------------


def test_io_sha256_bytes_matches_hashlib():
    assert sha256_bytes(b"") == hashlib.sha256(b"").hexdigest()
    assert sha256_bytes(PAYLOAD) == hashlib.sha256(PAYLOAD).hexdigest()


def test_io_sha256_file_is_chunked_and_exact(tmp_path, monkeypatch):
    path = tmp_path / "blob.bin"
    path.write_bytes(PAYLOAD + b"tail")
    monkeypatch.setattr(sio, "_CHUNK", 1000)  # force many chunks, one partial
    assert sha256_file(path) == hashlib.sha256(PAYLOAD + b"tail").hexdigest()
    assert sha256_file(str(path)) == sha256_file(path)


def test_io_checksum_error_message_and_attributes():
    err = ChecksumError("some/file.safetensors", "a" * 64, "b" * 64)
    assert isinstance(err, ValueError)
    assert (err.what, err.expected, err.actual) == ("some/file.safetensors", "a" * 64, "b" * 64)
    text = str(err)
    assert "some/file.safetensors" in text and "a" * 64 in text and "b" * 64 in text


# --- subzoo_home -----------------------------------------------------------------------------


def test_io_subzoo_home_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "zoo"))
    assert subzoo_home() == tmp_path / "zoo"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SUBZOO_HOME")
    assert subzoo_home() == Path.home() / ".cache" / "subzoo"
    monkeypatch.setenv("SUBZOO_HOME", "")  # empty means unset
    assert subzoo_home() == Path.home() / ".cache" / "subzoo"


# --- atomic_path -----------------------------------------------------------------------------


def test_io_atomic_path_writes_new_file_and_creates_parents(tmp_path):
    dest = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        assert not dest.exists()  # nothing visible until the body succeeds
        tmp.write_text("new")
    assert dest.read_text() == "new"
    assert _leftovers(dest.parent) == ["out.txt"]


def test_io_atomic_path_replaces_existing_file(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with atomic_path(str(dest)) as tmp:
        tmp.write_text("new content")
        assert dest.read_text() == "old"
    assert dest.read_text() == "new content"
    assert _leftovers(tmp_path) == ["out.txt"]


def test_io_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(dest) as tmp:
        tmp.write_text("half writ")
        raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert _leftovers(tmp_path) == ["out.txt"]  # no temp file left behind


def test_io_atomic_path_no_file_when_body_raises_and_none_existed(tmp_path):
    dest = tmp_path / "out.txt"
    with pytest.raises(KeyError), atomic_path(dest) as tmp:
        tmp.write_text("partial")
        raise KeyError("x")
    assert _leftovers(tmp_path) == []


# --- download_url ----------------------------------------------------------------------------


def test_io_download_url_good_file(tmp_path, http_server):
    base, routes, hits = http_server
    routes["/w.bin"] = (200, PAYLOAD, None)
    dest = tmp_path / "cache" / "w.bin"
    out = download_url(f"{base}/w.bin", dest, sha256=sha256_bytes(PAYLOAD), progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(dest.parent) == ["w.bin"]
    assert hits == ["/w.bin"]


def test_io_download_url_with_progress_bar(tmp_path, http_server):
    base, routes, _ = http_server
    routes["/w.bin"] = (200, PAYLOAD, None)
    dest = tmp_path / "w.bin"
    download_url(f"{base}/w.bin", dest, sha256=sha256_bytes(PAYLOAD), progress=True)
    assert dest.read_bytes() == PAYLOAD


def test_io_download_url_without_pin_accepts_any_bytes(tmp_path, http_server):
    base, routes, _ = http_server
    routes["/w.bin"] = (200, b"whatever", None)
    dest = tmp_path / "w.bin"
    download_url(f"{base}/w.bin", dest, sha256=None, progress=False)
    assert dest.read_bytes() == b"whatever"


def test_io_download_url_checksum_mismatch_leaves_nothing(tmp_path, http_server):
    base, routes, _ = http_server
    tampered = bytearray(PAYLOAD)
    tampered[100] ^= 0xFF
    routes["/w.bin"] = (200, bytes(tampered), None)
    dest = tmp_path / "cache" / "w.bin"
    expected = sha256_bytes(PAYLOAD)
    with pytest.raises(ChecksumError) as info:
        download_url(f"{base}/w.bin", dest, sha256=expected, progress=False)
    assert info.value.expected == expected
    assert info.value.actual == sha256_bytes(bytes(tampered))
    assert f"{base}/w.bin" in str(info.value)
    assert _leftovers(dest.parent) == []


def test_io_download_url_mismatch_keeps_previous_file(tmp_path, http_server):
    base, routes, _ = http_server
    routes["/w.bin"] = (200, b"evil", None)
    dest = tmp_path / "w.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(ChecksumError):
        download_url(f"{base}/w.bin", dest, sha256=sha256_bytes(b"good"), progress=False)
    assert dest.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == ["w.bin"]


def test_io_download_url_http_error_is_download_error(tmp_path, http_server):
    base, _, _ = http_server
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError, match="404"):
        download_url(f"{base}/missing.bin", dest, sha256="0" * 64, progress=False)
    assert _leftovers(tmp_path) == []


def test_io_download_url_short_read_leaves_nothing(tmp_path, http_server):
    base, routes, _ = http_server
    routes["/short.bin"] = (200, PAYLOAD[:1000], len(PAYLOAD))  # promises more than it sends
    dest = tmp_path / "short.bin"
    with pytest.raises(DownloadError, match="short read"):
        download_url(f"{base}/short.bin", dest, sha256=sha256_bytes(PAYLOAD), progress=False)
    assert _leftovers(tmp_path) == []


def test_io_download_url_unreachable_host(tmp_path):
    url = f"http://127.0.0.1:{_dead_port()}/w.bin"
    dest = tmp_path / "w.bin"
    with pytest.raises(DownloadError) as info:
        download_url(url, dest, sha256="0" * 64, timeout=5, progress=False)
    assert isinstance(info.value, OSError)
    assert url in str(info.value)
    assert _leftovers(tmp_path) == []


def test_io_download_url_bad_url_is_download_error(tmp_path):
    with pytest.raises(DownloadError):
        download_url("not a url", tmp_path / "x", sha256=None, progress=False)
    assert _leftovers(tmp_path) == []
