"""TableDelta: the changes of a collisionless table since its last export (for sync)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from safetensors.torch import load as _load_bytes
from safetensors.torch import save as _save_bytes

__all__ = ["TableDelta"]


@dataclass
class TableDelta:
    """Upserts and evictions to replay on another table (a serving or standby copy).

    Attributes:
        ids: ``[N]`` int64, ascending: ids admitted or updated since the last export.
        values: ``[N, dim]`` float32, their rows.
        evicted: ``[M]`` int64, ascending: ids evicted since the last export and not
            admitted again since.
        last_seen: ``[N]`` float64, when each id was last seen (so the copy expires it at
            the same time), or None.
        state: optimizer state rows, name -> ``[N, ...]`` (``{}`` unless asked for), so the
            copy can take over training.
    """

    ids: torch.Tensor
    values: torch.Tensor
    evicted: torch.Tensor
    last_seen: torch.Tensor | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("ids", "evicted"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.dim() != 1:
                raise ValueError(f"{name}: expected a 1-D int64 tensor, got {_describe(t)}")
        n = self.ids.shape[0]
        v = self.values
        if not isinstance(v, torch.Tensor) or v.dim() != 2 or v.shape[0] != n:
            raise ValueError(f"values: expected a [{n}, dim] tensor, got {_describe(v)}")
        if not v.is_floating_point():
            raise ValueError(f"values: expected a float tensor, got {_describe(v)}")
        s = self.last_seen
        if s is not None and (not isinstance(s, torch.Tensor) or tuple(s.shape) != (n,)):
            raise ValueError(f"last_seen: expected a [{n}] tensor or None, got {_describe(s)}")
        for name, t in self.state.items():
            if not isinstance(t, torch.Tensor) or t.dim() < 1 or t.shape[0] != n:
                raise ValueError(f"state[{name!r}]: expected a [{n}, ...] tensor, got {t!r}")

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def __len__(self) -> int:
        """Number of upserted ids."""
        return self.ids.shape[0]

    def nbytes(self) -> int:
        """Bytes of all the tensors (what a transport has to carry)."""
        return sum(t.numel() * t.element_size() for t in self.to_tensors().values())

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor dict (e.g. for safetensors); inverse of :meth:`from_tensors`."""
        out = {"ids": self.ids, "values": self.values, "evicted": self.evicted}
        if self.last_seen is not None:
            out["last_seen"] = self.last_seen
        out.update({f"state.{k}": v for k, v in self.state.items()})
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> TableDelta:
        missing = {"ids", "values", "evicted"} - set(tensors)
        if missing:
            raise ValueError(f"tensors: expected keys ids, values, evicted; missing {missing}")
        state = {k[len("state.") :]: v for k, v in tensors.items() if k.startswith("state.")}
        return cls(
            tensors["ids"], tensors["values"], tensors["evicted"], tensors.get("last_seen"), state
        )

    def to_bytes(self) -> bytes:
        """Serialise to safetensors bytes (no pickle), e.g. to publish on a stream."""
        return _save_bytes({k: v.contiguous() for k, v in self.to_tensors().items()})

    @classmethod
    def from_bytes(cls, data: bytes) -> TableDelta:
        return cls.from_tensors(_load_bytes(data))


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"{t.dtype} tensor of shape {list(t.shape)}"
    return type(t).__name__
