"""MatryoshkaKVModel: PCA initialisation, nested-rank distillation, save / load."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from subspace_peft.adapters.base import (
    ADAPTER_FORMAT,
    _check_fingerprint,
    _fingerprint,
    find_targets,
    read_adapter_file,
)
from subspace_peft.adapters.matryoshka_kv.config import MatryoshkaKVConfig
from subspace_peft.adapters.matryoshka_kv.layer import KVStatistics, MatryoshkaKVAttention

__all__ = ["MatryoshkaKVModel", "distillation_kl", "orthogonality_error"]

_TENSORS = ("key_basis", "value_basis")


def distillation_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over tokens of ``KL(p_teacher || p_student)`` (nats); logits ``[..., V]``,
    ``mask [...]`` (1 = scored token) optional."""
    t = F.log_softmax(teacher_logits.float(), dim=-1)
    s = F.log_softmax(student_logits.float(), dim=-1)
    kl = (t.exp() * (t - s)).sum(-1)
    if mask is None:
        return kl.mean()
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1.0)


class MatryoshkaKVModel(nn.Module):
    """A decoder whose selected attention modules cache keys / values in nested subspaces.

    Every parameter of ``model`` is frozen; the trainable tensors are each wrapped layer's
    ``key_skew, value_skew [H_kv, d, d]`` (:class:`MatryoshkaKVAttention`). Typical use::

        kv = MatryoshkaKVModel(model, MatryoshkaKVConfig())
        kv.calibrate(lambda: model(calibration_ids))      # PCA bases (training-free)
        loss = kv.distillation_loss(ids)                   # one Matryoshka training step
        kv.set_ranks(32)                                    # deploy: half of the KV cache

    Args:
        model: a Hugging Face Llama-family causal LM (or its bare decoder), modified in place.
        config: which attention modules, the rank schedule, the initial basis.
    """

    method = "matryoshka_kv"

    def __init__(self, model: nn.Module, config: MatryoshkaKVConfig | None = None) -> None:
        super().__init__()
        self.config = config or MatryoshkaKVConfig()
        names = find_targets(model, self.config.target_modules, (nn.Module,))
        modules = dict(model.named_modules())
        names = [n for n in names if not isinstance(modules[n], MatryoshkaKVAttention)
                 and not any(n.startswith(m + ".") for m in names if m != n)]
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self._names: list[str] = []
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else model
            setattr(parent, child, MatryoshkaKVAttention(modules[name]))
            self._names.append(name)
        dims = {layer.head_dim for layer in self.attention_layers().values()}
        if len(dims) != 1:
            raise ValueError(f"target_modules: the selected attention modules have different "
                             f"head sizes {sorted(dims)}; select one kind at a time")
        self.head_dim = dims.pop()
        schedule = self.config.rank_schedule
        if schedule is None:
            step = max(1, self.head_dim // 8)
            schedule = tuple(range(step, self.head_dim + 1, step))
        if max(schedule) > self.head_dim:
            raise ValueError(f"rank_schedule: ranks must be <= head_dim={self.head_dim}, got "
                             f"{schedule}")
        self.rank_schedule: tuple[int, ...] = tuple(schedule)
        self._fingerprints = {n: _fingerprint(layer.base.k_proj.weight)
                              for n, layer in self.attention_layers().items()}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    # ----------------------------------------------------------------- access
    def attention_layers(self) -> dict[str, MatryoshkaKVAttention]:
        """``{qualified name: wrapper}`` in model order."""
        modules = dict(self.model.named_modules())
        return {n: modules[n] for n in self._names}

    def adapter_parameters(self) -> list[nn.Parameter]:
        """The trainable skew parameters (two per wrapped layer)."""
        return [p for layer in self.attention_layers().values()
                for p in (layer.key_skew, layer.value_skew)]

    def num_adapter_parameters(self) -> int:
        """Scalars in :meth:`adapter_parameters` (the antisymmetric part is what acts)."""
        return sum(p.numel() for p in self.adapter_parameters())

    # ----------------------------------------------------------------- initialisation
    @torch.no_grad()
    def calibrate(self, run: Callable[[], Any], *, init: str | None = None) -> int:
        """Collect post-RoPE key / value second moments while ``run()`` pushes calibration
        text through the model, and (``init="pca"``) set every basis to their principal
        directions. ``init`` (default: the config's) overrides ``config.init`` for this call.
        Returns the number of calibration tokens per layer."""
        init = self.config.init if init is None else init
        if init not in ("pca", "identity"):
            raise ValueError(f"init: expected 'pca' or 'identity', got {init!r}")
        layers = self.attention_layers().values()
        for layer in layers:
            layer.statistics = KVStatistics(layer.kv_heads, layer.head_dim)
        was_training = self.model.training
        self.model.eval()
        try:
            with self.ranks(self.head_dim):
                run()
            tokens = 0
            for layer in layers:
                if init == "pca":
                    layer.init_from_statistics(layer.statistics)
                tokens = layer.statistics.tokens
        finally:
            for layer in layers:
                layer.statistics = None
            self.model.train(was_training)
        return tokens

    # ----------------------------------------------------------------- ranks
    def set_ranks(self, key_rank: int | Mapping[str, int],
                  value_rank: int | Mapping[str, int] | None = None) -> None:
        """Set the kept key / value dimensions of every layer (an int) or per layer (a
        ``{name: rank}`` mapping covering every wrapped layer); values default to keys."""
        value_rank = key_rank if value_rank is None else value_rank
        for name, layer in self.attention_layers().items():
            layer.set_ranks(self._pick("key_rank", key_rank, name),
                            self._pick("value_rank", value_rank, name))

    def _pick(self, what: str, value: int | Mapping[str, int], name: str) -> int:
        if isinstance(value, Mapping):
            if name not in value:
                raise ValueError(f"{what}: the mapping has no rank for layer {name!r}")
            return value[name]
        return value

    def current_ranks(self) -> dict[str, tuple[int, int]]:
        """``{name: (key_rank, value_rank)}``."""
        return {n: (layer.key_rank, layer.value_rank)
                for n, layer in self.attention_layers().items()}

    @contextlib.contextmanager
    def ranks(self, key_rank: int | Mapping[str, int],
              value_rank: int | Mapping[str, int] | None = None) -> Iterator[None]:
        """Context manager: :meth:`set_ranks` inside, the previous ranks restored after."""
        before = self.current_ranks()
        self.set_ranks(key_rank, value_rank)
        try:
            yield
        finally:
            self.set_ranks({n: k for n, (k, _) in before.items()},
                           {n: v for n, (_, v) in before.items()})

    def sample_ranks(self, generator: torch.Generator | None = None) -> None:
        """Draw every layer's key and value rank uniformly from :attr:`rank_schedule`."""
        choices = torch.tensor(self.rank_schedule)
        n = len(self._names)
        draws = choices[torch.randint(len(choices), (2, n), generator=generator)].tolist()
        self.set_ranks(dict(zip(self._names, draws[0], strict=True)),
                       dict(zip(self._names, draws[1], strict=True)))

    def cache_fraction(self) -> float:
        """Kept fraction of the wrapped layers' KV cache at the current ranks."""
        layers = self.attention_layers().values()
        kept = sum(layer.kv_heads * (layer.key_rank + layer.value_rank) for layer in layers)
        full = sum(layer.kv_heads * 2 * layer.head_dim for layer in layers)
        return kept / full

    # ----------------------------------------------------------------- training
    def distillation_loss(self, input_ids: torch.Tensor, *,
                          attention_mask: torch.Tensor | None = None,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """One Matryoshka step's loss: ``KL(full-rank model || model at sampled ranks)``.

        The full-rank wrapped model *is* the original model (orthogonal bases), so it serves
        as the teacher without a second copy. The ranks are re-drawn per call
        (:meth:`sample_ranks`) and left in place afterwards.

        Args:
            input_ids: ``[B, T]`` token ids.
            attention_mask: ``[B, T]`` (1 = real token) or None.
        """
        with torch.no_grad(), self.ranks(self.head_dim):
            teacher = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                 use_cache=False).logits
        self.sample_ranks(generator)
        student = self.model(input_ids=input_ids, attention_mask=attention_mask,
                             use_cache=False).logits
        return distillation_kl(teacher, student, attention_mask)

    # ----------------------------------------------------------------- save / load
    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """``{name.key_basis, name.value_basis}``: each layer's current ``[H_kv, d, d]``
        orthogonal bases (fp32, what :meth:`load_adapter_state_dict` restores)."""
        out = {}
        for name, layer in self.attention_layers().items():
            with torch.no_grad():
                u_k, u_v = layer.bases()
            out[f"{name}.key_basis"] = u_k.detach().float().cpu().contiguous()
            out[f"{name}.value_basis"] = u_v.detach().float().cpu().contiguous()
        return out

    @torch.no_grad()
    def load_adapter_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Set every layer's bases from :meth:`adapter_state_dict` output (skews zeroed)."""
        layers = self.attention_layers()
        expected = {f"{n}.{t}" for n in layers for t in _TENSORS}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise ValueError(f"state: missing {missing[:4]}, unexpected {extra[:4]}")
        for name, layer in layers.items():
            for tensor, base in zip(_TENSORS, (layer.key_base, layer.value_base), strict=True):
                value = state[f"{name}.{tensor}"]
                if tuple(value.shape) != tuple(base.shape):
                    raise ValueError(f"state[{name}.{tensor!r}]: expected shape "
                                     f"{tuple(base.shape)}, got {tuple(value.shape)}")
                base.copy_(value.to(base))
            layer.key_skew.zero_()
            layer.value_skew.zero_()

    def save_adapter(self, path: str | Path, *, metadata: Mapping[str, Any] | None = None
                     ) -> str:
        """Write the bases to ``path`` (safetensors + ``.sha256`` sidecar); returns the
        sha256. The metadata records the config and a fingerprint of each ``k_proj``."""
        from subspace_core.zoo import save_state_dict

        meta: dict[str, Any] = {"format": ADAPTER_FORMAT, "method": self.method,
                                "config": self.config.to_dict(),
                                "layers": {n: {"fingerprint": f}
                                           for n, f in self._fingerprints.items()},
                                "modules_to_save": []}
        if metadata:
            meta["user"] = dict(metadata)
        return save_state_dict(self.adapter_state_dict(), path, metadata=meta)

    @classmethod
    def from_file(cls, model: nn.Module, path: str | Path, *, sha256: str | None = None
                  ) -> MatryoshkaKVModel:
        """Wrap ``model`` (the original base, modified in place) with the bases saved at
        ``path`` (verified against ``sha256``, default: the sidecar)."""
        tensors, meta = read_adapter_file(path, sha256=sha256)
        if meta.get("method") != cls.method:
            raise ValueError(f"{path}: a {meta.get('method')!r} adapter, expected "
                             f"{cls.method!r}")
        self = cls(model, MatryoshkaKVConfig.from_dict(meta["config"]))
        layers = self.attention_layers()
        if sorted(layers) != sorted(meta["layers"]):
            raise ValueError(f"{path}: saved for layers {sorted(meta['layers'])[:3]}... "
                             f"({len(meta['layers'])}), this model has "
                             f"{sorted(layers)[:3]}... ({len(layers)})")
        for name, layer in layers.items():
            _check_fingerprint(name, meta["layers"][name]["fingerprint"],
                               layer.base.k_proj.weight)
        self.load_adapter_state_dict(tensors)
        return self

    def unload(self) -> nn.Module:
        """Put the original attention modules back; returns the plain model."""
        modules = dict(self.model.named_modules())
        for name in self._names:
            parent_name, _, child = name.rpartition(".")
            parent = modules[parent_name] if parent_name else self.model
            setattr(parent, child, modules[name].base)
        self._names = []
        return self.model


@torch.no_grad()
def orthogonality_error(model: MatryoshkaKVModel) -> float:
    """Largest ``|UᵀU − I|`` entry over every wrapped layer's key and value basis."""
    worst = 0.0
    for layer in model.attention_layers().values():
        for u in layer.bases():
            eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device)
            worst = max(worst, float((u.transpose(-1, -2) @ u - eye).abs().max()))
    return worst

