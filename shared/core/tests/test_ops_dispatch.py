"""Backend dispatch rules shared by every op."""

from __future__ import annotations

import pytest
import torch

from subspace_core.ops import _dispatch
from subspace_core.ops._dispatch import BackendUnavailable, select_backend

CPU = torch.zeros(2)


def test_auto_on_cpu_is_the_reference(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert select_backend("op", "auto", CPU) == "torch"


def test_explicit_torch_always_works():
    assert select_backend("op", "torch", CPU, supported=False) == "torch"


def test_explicit_triton_on_cpu_raises_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(BackendUnavailable, match=r"op: backend='triton' needs CUDA tensors"):
        select_backend("op", "triton", CPU)


def test_explicit_triton_runs_under_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert select_backend("op", "triton", CPU) == "triton"


def test_unsupported_inputs_never_fall_back_silently(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(BackendUnavailable, match="does not support these inputs: bf16"):
        select_backend("op", "triton", CPU, supported=False, reason="bf16")


def test_missing_triton_is_named(monkeypatch):
    monkeypatch.setattr(_dispatch, "triton_available", lambda: False)
    with pytest.raises(BackendUnavailable, match="triton is not installed"):
        select_backend("op", "triton", CPU)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend: expected one of"):
        select_backend("op", "cuda", CPU)


def test_env_forces_reference_for_auto(monkeypatch):
    monkeypatch.setenv("SUBZOO_BACKEND", "torch")
    fake_cuda = torch.zeros(1, device="meta")
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert select_backend("op", "auto", fake_cuda) == "torch"
    monkeypatch.delenv("SUBZOO_BACKEND")
    monkeypatch.setattr(_dispatch, "triton_available", lambda: True)
    assert select_backend("op", "auto", fake_cuda) == "triton"
