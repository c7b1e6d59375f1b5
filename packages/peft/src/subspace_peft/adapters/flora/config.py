"""FLoRA options (:class:`FLoRAConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from subspace_peft.adapters.base import AdapterConfig

__all__ = ["FLoRAConfig"]


@dataclass(kw_only=True)
class FLoRAConfig(AdapterConfig):
    """Tucker ranks and scale of the FLoRA update of every target.

    ``target_modules`` may select ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and
    ``nn.Conv3d`` modules (see :func:`~subspace_peft.adapters.flora.model.find_flora_targets`).
    A weight ``[out, in/groups, k_1, ..., k_m]`` gets the core ranks
    ``(min(rank, out), min(rank, in/groups), s_1, ..., s_m)`` with ``s_j = k_j`` (FLoRA's
    default: the spatial modes keep their full size, so the core keeps the kernel's spatial
    structure) or ``min(kernel_rank, k_j)`` when ``kernel_rank`` is given.

    Attributes:
        rank: core rank of the two channel modes (output and input channels / features).
        kernel_rank: core rank of every spatial mode; None (default) = the kernel size.
        scale: the factor ``s`` of ``ΔW = s · G ×_0 U_0 ... ×_{N-1} U_{N-1}`` (the reference
            implementation's default is 1.0).
    """

    method = "flora"
    rank: int = 8
    kernel_rank: int | None = None
    scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("rank", "kernel_rank"):
            value = getattr(self, name)
            if value is None and name == "kernel_rank":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1"
                                 f"{' or None' if name == 'kernel_rank' else ''}, got {value!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise ValueError(f"scale: expected a float, got {self.scale!r}")
        self.scale = float(self.scale)
