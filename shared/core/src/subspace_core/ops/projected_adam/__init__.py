"""``projected_adam``: one fused GaLore / Fira Adam step on a weight matrix.

Public entry point :func:`projected_adam` validates its inputs and dispatches to the
pure-PyTorch reference (:func:`projected_adam_ref`, the spec; maths and shapes in
``reference.py``) or to the Triton kernels (``triton.py``, registered as the custom op
``torch.ops.subzoo.projected_adam``). The Triton module is imported only when chosen.
"""

from __future__ import annotations

import torch

from subspace_core.ops._dispatch import select_backend
from subspace_core.ops.projected_adam.reference import (
    FIRA_GAMMA,
    SIDES,
    check_inputs,
    projected_adam_ref,
    projection_side,
)

__all__ = ["FIRA_GAMMA", "SIDES", "projected_adam", "projected_adam_ref", "projection_side"]


def _triton_supports(*tensors: torch.Tensor) -> tuple[bool, str]:
    """Whether the Triton kernels handle these inputs, and why not."""
    if any(t.dtype == torch.bfloat16 and not t.is_cuda for t in tensors):
        # Triton's CPU interpreter gives silently wrong bf16 results (its float32 -> bf16
        # conversion truncates; STACK.md), so bf16 runs on the GPU only.
        return False, "bfloat16 tensors need CUDA (the Triton CPU interpreter rounds bf16 wrongly)"
    return True, ""


def projected_adam(
    W: torch.Tensor,
    G: torch.Tensor,
    P: torch.Tensor,
    M: torch.Tensor,
    V: torch.Tensor,
    *,
    step: int,
    side: str,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    alpha: float = 1.0,
    fira_state: torch.Tensor | None = None,
    fira_gamma: float = FIRA_GAMMA,
    backend: str = "auto",
) -> None:
    """One GaLore (or Fira, with ``fira_state``) Adam step on ``W``, in place.

    Args:
        W: weight ``[m, n]``, float32/float16/bfloat16; updated in place.
        G: gradient of W, ``[m, n]``, float32/float16/bfloat16.
        P: orthonormal basis: ``[m, r]`` for ``side="left"`` (R = Pᵀ G, ``[r, n]``),
            ``[n, r]`` for ``side="right"`` (R = G P, ``[m, r]``).
        M, V: Adam moments of R, float32, shape of R; updated in place.
        step: 1-based step count of M and V (bias correction).
        side: ``"left"`` or ``"right"``; :func:`projection_side` gives GaLore's choice.
        lr, beta1, beta2, eps, weight_decay: AdamW hyper-parameters (decoupled decay).
        alpha: GaLore's scale of the back-projected update.
        fira_state: pass a float32 scalar tensor (start at ``torch.zeros(())``) to enable
            Fira (norm-scaled out-of-subspace gradient and norm-growth limiter); it holds
            the limiter's previous norm and is updated in place.
        fira_gamma: Fira's norm-growth limit γ.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see ``subspace_core.ops``).

    Returns None. This is an optimizer step: it runs under ``torch.no_grad()`` and has no
    autograd formula. Errors name the argument, the expected and the actual value.
    """
    check_inputs(W, G, P, M, V, step=step, side=side, beta1=beta1, beta2=beta2,
                 fira_state=fira_state, fira_gamma=fira_gamma)
    tensors = (W, G, P, M, V) if fira_state is None else (W, G, P, M, V, fira_state)
    supported, reason = _triton_supports(*tensors)
    chosen = select_backend("projected_adam", backend, *tensors, supported=supported,
                            reason=reason)
    kwargs = dict(step=step, side=side, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                  weight_decay=weight_decay, alpha=alpha, fira_state=fira_state,
                  fira_gamma=fira_gamma)
    with torch.no_grad():
        if chosen == "torch":
            projected_adam_ref(W, G, P, M, V, **kwargs)
        else:
            from subspace_core.ops.projected_adam.triton import projected_adam_triton

            projected_adam_triton(W, G, P, M, V, **kwargs)
