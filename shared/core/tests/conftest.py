"""Test set-up of subspace-core.

Without a GPU, Triton kernels can only run in Triton's CPU interpreter, and the variable
must be set before any ``@triton.jit`` decorator runs; kernel modules are imported lazily,
so setting it here (at collection, before any test imports them) is early enough. On a
CUDA machine it is left alone so the kernels compile for the GPU.
"""

from __future__ import annotations

import http.server
import importlib
import os
import threading

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread.

    Small linear-algebra problems gain nothing from threads, and on a shared 2-core box the
    spin-waiting threads make such tests several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def http_server():
    """A local HTTP server on 127.0.0.1, yielding ``(base_url, routes, hits)``.

    ``routes[path]`` is either the body (served with status 200) or
    ``(status, body, content_length)`` where a ``content_length`` other than ``len(body)``
    fakes a truncated or oversized response; ``hits`` lists the requested paths.
    """
    routes: dict[str, bytes | tuple[int, bytes, int | None]] = {}
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            route = routes.get(self.path, (404, b"not found", None))
            status, body, length = (200, route, None) if isinstance(route, bytes) else route
            self.send_response(status)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):  # keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def triton_interpreter():
    """``load(module)`` imports a Triton kernel module for a CPU interpreter test, or skips
    the test (saying why) when Triton or ``TRITON_INTERPRET=1`` is missing."""
    from subspace_core.ops import interpreter_enabled, triton_available

    def load(module: str):
        if not triton_available():
            pytest.skip("triton is not importable (install subspace-core[triton])")
        if not interpreter_enabled():
            pytest.skip("needs TRITON_INTERPRET=1 (conftest sets it on machines without CUDA)")
        return importlib.import_module(module)

    return load
