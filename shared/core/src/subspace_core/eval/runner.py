"""``evaluate``: run a model's protocol and record the results."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from subspace_core.eval.protocol import get_protocol
from subspace_core.eval.results import ResultRow, append_results, environment_info
from subspace_core.zoo import count_parameters, get_model_entry, load, resolve_checkpoint

__all__ = ["EvalResult", "evaluate"]


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one (model, protocol) evaluation and the rows written for it."""

    model: str
    protocol: str
    metrics: dict[str, float]
    claimed: dict[str, float]
    rows: tuple[ResultRow, ...]

    def to_dict(self) -> dict:
        first = self.rows[0] if self.rows else None
        return {
            "model": self.model,
            "protocol": self.protocol,
            "metrics": self.metrics,
            "claimed": self.claimed,
            "num_params": first.num_params if first else None,
            "checkpoint_sha256": first.checkpoint_sha256 if first else None,
            "package_version": first.package_version if first else None,
            "git_sha": first.git_sha if first else None,
            "device": first.device if first else None,
        }


def evaluate(
    model_id: str,
    protocol: str | None = None,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    results_file: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Evaluate the pretrained ``model_id`` (or ``checkpoint_path``) on ``protocol``.

    ``protocol`` defaults to the model's first protocol. When ``results_file`` is given,
    one CSV row per metric is appended to it.
    """
    entry = get_model_entry(model_id)
    if entry.pretrained_cfg is None:
        raise ValueError(f"model_id: {model_id} has no shipped checkpoint to evaluate")
    name = protocol or entry.protocols[0]
    if name not in entry.protocols:
        raise ValueError(f"protocol: expected one of {list(entry.protocols)}, got {name!r}")
    proto = get_protocol(name)
    device = torch.device(device)
    resolved = resolve_checkpoint(entry.pretrained_cfg, checkpoint_path, progress=False)
    model = load(model_id, checkpoint_path=resolved.path, sha256=resolved.sha256, device=device)
    metrics = proto.run(model, device)
    num_params = count_parameters(model.state_dict())
    env = environment_info(entry.area, device)
    rows = tuple(
        ResultRow(model=model_id, protocol=name, metric=metric, value=float(value),
                  num_params=num_params, checkpoint_sha256=resolved.sha256, **env)
        for metric, value in metrics.items()
    )
    if results_file is not None:
        append_results(Path(results_file), list(rows))
    claimed = dict(entry.pretrained_cfg.metrics.get(name, {}))
    return EvalResult(model_id, name, {k: float(v) for k, v in metrics.items()}, claimed, rows)
