"""A throwaway local ``redis-server`` for tests and benchmarks.

:func:`redis_server` starts the real binary on a free 127.0.0.1 port in a temporary
directory with persistence off, waits until it answers ``PING`` and stops it on exit. It
speaks RESP over a plain socket, so it works without redis-py installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RedisServer", "RedisServerUnavailable", "find_redis_server", "redis_server"]

_DEFAULT_BINARY = "/usr/bin/redis-server"


class RedisServerUnavailable(RuntimeError):
    """No usable ``redis-server`` binary, or it did not come up (tests skip with this text)."""


@dataclass(frozen=True)
class RedisServer:
    """A running server: ``url`` (``redis://127.0.0.1:<port>/0``), ``host``, ``port``, ``pid``."""

    host: str
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def find_redis_server(binary: str | os.PathLike | None = None) -> Path:
    """Path of the ``redis-server`` binary: ``binary`` if given (and nothing else), else
    ``$SUBZOO_REDIS_SERVER``, else ``/usr/bin/redis-server``, else the first one on ``PATH``.

    Raises :class:`RedisServerUnavailable` naming every place tried.
    """
    tried: list[str] = []
    if binary is not None:
        candidates = [binary]
    else:
        candidates = [os.environ.get("SUBZOO_REDIS_SERVER"), _DEFAULT_BINARY]
        candidates.append(shutil.which("redis-server"))
    for candidate in candidates:
        if not candidate:
            continue
        path = Path(candidate)
        tried.append(str(path))
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise RedisServerUnavailable(
        f"redis-server binary not found (tried {', '.join(tried) or 'nothing'}); install it "
        "(Debian/Ubuntu: apt-get install redis-server) or set SUBZOO_REDIS_SERVER"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@contextmanager
def redis_server(
    *, binary: str | os.PathLike | None = None, startup_timeout: float = 10.0
) -> Iterator[RedisServer]:
    """Run a private ``redis-server`` for the duration of the ``with`` block.

    No RDB snapshots and no AOF (``--save '' --appendonly no``), so nothing outlives the
    block; its working directory is a temporary folder removed afterwards.

    Raises :class:`RedisServerUnavailable` when the binary is missing or the server does
    not answer ``PING`` within ``startup_timeout`` seconds (its log is quoted).
    """
    path = find_redis_server(binary)
    host = "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="subzoo-redis-") as workdir:
        log_path, err_path = Path(workdir) / "redis.log", Path(workdir) / "redis.stderr"
        last_error = ""
        # The free port can be taken between probing and binding; a few fresh tries cover it.
        for _ in range(3):
            port = _free_port()
            args = [
                str(path), "--port", str(port), "--bind", host, "--dir", workdir,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(log_path),
            ]  # fmt: skip
            with open(err_path, "wb") as err:
                process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
                )
            deadline = time.monotonic() + startup_timeout
            while time.monotonic() < deadline and process.poll() is None:
                if _answers_ping(host, port):
                    break
                time.sleep(0.02)
            else:
                _stop(process)
                output = [p.read_text(errors="replace") for p in (err_path, log_path) if p.exists()]
                last_error = "".join(output).strip()[-2000:]
                continue
            try:
                yield RedisServer(host=host, port=port, pid=process.pid)
            finally:
                _stop(process)
            return
        raise RedisServerUnavailable(
            f"{path} did not answer PING within {startup_timeout} s on 127.0.0.1; "
            f"its output: {last_error or '(none)'}"
        )
