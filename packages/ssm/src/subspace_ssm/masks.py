"""Variable-length batches: validation of padding masks and the helpers layers need.

A mask is a bool tensor ``[batch, L]``, True on the real positions of each sequence, which
must come first (right padding): ``mask[b] = [True] * length_b + [False] * (L − length_b)``.
Layers zero the padded inputs, so causal and bidirectional convolutions alike leave the
outputs at real positions unchanged, and report the state after each sequence's last real
position.
"""

from __future__ import annotations

import torch

__all__ = ["check_mask", "lengths_of", "right_align"]


def check_mask(mask: torch.Tensor | None, batch: int, L: int) -> torch.Tensor | None:
    """Validate ``mask`` (None passes through); return it as bool ``[batch, L]``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != (batch, L):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a bool tensor of shape {(batch, L)}, got {shape}")
    mask = mask.bool()
    if L > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("mask: expected right padding (True on a prefix of each row), got a "
                         "row with True after False")
    return mask


def lengths_of(mask: torch.Tensor) -> torch.Tensor:
    """Lengths ``[batch]`` (int64) of a valid right-padding mask."""
    return mask.sum(-1)


def right_align(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Rotate each row of ``x [batch, ..., L]`` so that its last real step lands at ``L − 1``.

    With zero padding after the real steps, the rotated row starts with the zeros, so a
    scan over it ends in the state after the last real step.
    """
    L = x.shape[-1]
    idx = (torch.arange(L, device=x.device)[None, :] + lengths[:, None]) % L  # [batch, L]
    idx = idx.view(idx.shape[0], *([1] * (x.dim() - 2)), L).expand_as(x)
    return torch.gather(x, -1, idx)
