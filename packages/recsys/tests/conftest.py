"""Shared fixtures of the recsys tests: a private redis-server, single-threaded torch."""

from __future__ import annotations

import pytest
import torch

from subspace_recsys.testing_redis import RedisServerUnavailable, redis_server


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops on shared CPUs; one thread also makes CPU reductions run in a fixed order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def redis_url():
    """URL of a redis-server private to the test module (tests use distinct stream names);
    skips when the binary is missing."""
    try:
        with redis_server() as server:
            yield server.url
    except RedisServerUnavailable as exc:
        pytest.skip(str(exc))
