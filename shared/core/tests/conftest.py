"""Test set-up of subspace-core.

Without a GPU, Triton kernels can only run in Triton's CPU interpreter, and the variable
must be set before any ``@triton.jit`` decorator runs; kernel modules are imported lazily,
so setting it here (at collection, before any test imports them) is early enough. On a
CUDA machine it is left alone so the kernels compile for the GPU.
"""

from __future__ import annotations

import os

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
