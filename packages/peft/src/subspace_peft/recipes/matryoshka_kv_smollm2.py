"""Recipe of ``peft/matryoshka_kv_smollm2.newsgroups20``: MatryoshkaKV bases for SmolLM2-135M.

PCA initialisation on the calibration windows, then :data:`STEPS` Adam steps (lr :data:`LR`,
batches of :data:`BATCH` windows of 256 tokens from the 20 Newsgroups training stream) of
distillation from the full-rank model into the model at ranks drawn per layer from the
nested schedule 8, 16, ..., 64. Snapshots every :data:`SNAPSHOT_EVERY` steps; a log line per
step (JSON lines). Budget: one thread, 54 min measured on a 2-core CPU shared with 3-4 other
jobs (about 13 s a step; less on an idle machine).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from subspace_core.train import checkpoint_file

__all__ = ["BATCH", "LR", "MODEL_ID", "SEED", "STEPS", "train"]

MODEL_ID = "peft/matryoshka_kv_smollm2.newsgroups20"
STEPS = 240
BATCH = 2
LR = 1e-3
SEED = 0
SNAPSHOT_EVERY = 40


def train(out_dir: str | Path, *, quick: bool = False, steps: int | None = None,
          progress: bool = True) -> Path:
    """Calibrate and train the bases; write the checkpoint (and snapshots, ``log.jsonl``) under
    ``out_dir``; returns the checkpoint's path. ``quick``: 4 steps (a wiring check)."""
    from subspace_core.console import stderr_console
    from subspace_core.zoo import save_state_dict
    from subspace_peft.adapters.matryoshka_kv import MatryoshkaKVConfig, MatryoshkaKVModel
    from subspace_peft.adapters.matryoshka_kv.protocol import SEQ_LEN, newsgroups_streams
    from subspace_peft.adapters.zoo import ShippedAdapter
    from subspace_peft.models.perplexity import eval_windows
    from subspace_peft.smollm2 import load_smollm2

    total = steps if steps is not None else (4 if quick else STEPS)
    out_dir = Path(out_dir)
    (out_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = load_smollm2()
    streams = newsgroups_streams()
    kv = MatryoshkaKVModel(model, MatryoshkaKVConfig())
    kv.calibrate(lambda: [model.model(input_ids=b, use_cache=False)
                          for b in streams.calibration.split(4)])
    windows = eval_windows(streams.train, SEQ_LEN - 1, total * BATCH)
    order = torch.randperm(windows.shape[0], generator=generator)
    optimizer = torch.optim.Adam(kv.adapter_parameters(), lr=LR)
    meta = {"model_id": MODEL_ID, "recipe": __name__, "lr": LR, "batch": BATCH, "steps": total,
            "seed": SEED, "quick": quick, "rank_schedule": list(kv.rank_schedule)}

    def save(path: Path, step: int) -> None:
        save_state_dict(ShippedAdapter(kv).state_dict(), path, metadata={**meta, "step": step})

    log = (out_dir / "log.jsonl").open("w")
    console = stderr_console()
    start = time.perf_counter()
    kv.train()
    for step in range(total):
        batch = windows[order[step * BATCH:(step + 1) * BATCH]]
        loss = kv.distillation_loss(batch, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(kv.adapter_parameters(), 1.0)
        optimizer.step()
        record = {"step": step + 1, "kl": loss.item(), "cache_fraction": kv.cache_fraction(),
                  "seconds": time.perf_counter() - start}
        log.write(json.dumps(record) + "\n")
        log.flush()
        if progress:
            console.print(f"matryoshka_kv step {step + 1}/{total} kl {record['kl']:.4f} "
                          f"({record['seconds']:.0f} s)")
        if (step + 1) % SNAPSHOT_EVERY == 0:
            save(out_dir / "snapshots" / f"step_{step + 1:04d}.safetensors", step + 1)
    log.close()
    kv.eval()
    path = out_dir / checkpoint_file(MODEL_ID)
    save(path, total)
    return path
