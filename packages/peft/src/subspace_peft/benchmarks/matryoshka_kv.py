"""Benchmark ``peft/matryoshka_kv``: SmolLM2-135M's KV cache compressed to a fraction of its
size by MatryoshkaKV vs the training-free PCA projection it starts from.

Every one of the 30 layers' 3 key-value heads (head size 64) caches ``r`` of 64 key and
``r`` of 64 value dimensions (cache fraction ``r / 64``) through orthogonal bases of three
kinds, all with the same wrapper (:class:`~subspace_peft.adapters.matryoshka_kv.
MatryoshkaKVAttention`): the identity (keep the first ``r`` coordinates; naive truncation),
PCA of calibration keys / values (:meth:`~MatryoshkaKVModel.calibrate`; the paper's
initialisation and its training-free baseline) and MatryoshkaKV (PCA, then distillation with
nested ranks). Score: perplexity on held-out 20 Newsgroups text
(:mod:`subspace_peft.adapters.matryoshka_kv.protocol`). One set of trained bases serves every
``r`` — that is the Matryoshka property the curve tests.

The trained bases are the shipped ``peft/matryoshka_kv_smollm2.newsgroups20`` checkpoint
(trained by its recipe, 240 steps, about an hour on a shared 2-core CPU: too long to repeat
inside a benchmark); a config with ``train_steps`` trains that many steps in the run instead.
``--quick`` scores half the cache only, on 4 windows. Ratios are MatryoshkaKV / PCA
perplexity (lower is better).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console

__all__ = ["FULL", "MATRYOSHKA_KV_BENCH", "QUICK", "MatryoshkaKVBenchConfig",
           "run_matryoshka_kv"]

METHOD = "MatryoshkaKV"
PCA = "PCA (training-free)"
IDENTITY = "truncation (identity basis)"
MODEL_ID = "peft/matryoshka_kv_smollm2.newsgroups20"


@dataclass(frozen=True)
class MatryoshkaKVBenchConfig:
    """Sizes of one run.

    Attributes:
        ranks: kept key / value dimensions per head (of 64) scored.
        eval_windows: held-out windows of 256 tokens scored per perplexity.
        train_steps: distillation steps run in the benchmark (the recipe's settings); None
            scores the shipped checkpoint instead.
    """

    ranks: tuple[int, ...]
    eval_windows: int
    train_steps: int | None


FULL = MatryoshkaKVBenchConfig(ranks=(8, 16, 24, 32, 40, 48, 56), eval_windows=16,
                               train_steps=None)
QUICK = MatryoshkaKVBenchConfig(ranks=(32,), eval_windows=4, train_steps=None)


def _log(message: str) -> None:
    stderr_console().print(f"[dim]matryoshka_kv bench:[/dim] {message}")


def _trained_bases(ctx: BenchContext, cfg: MatryoshkaKVBenchConfig) -> dict[str, torch.Tensor]:
    from subspace_core.io import sha256_file
    from subspace_core.zoo import get_model_entry, load_state_dict
    from subspace_core.zoo.pretrained import resolve_checkpoint

    if cfg.train_steps is None:
        found = resolve_checkpoint(get_model_entry(MODEL_ID).pretrained_cfg, progress=False)
        return load_state_dict(found.path, sha256=found.sha256)
    from subspace_peft.recipes.matryoshka_kv_smollm2 import train

    path = train(Path(ctx.out_dir) / "matryoshka_kv_train", steps=cfg.train_steps,
                 progress=False)
    return load_state_dict(path, sha256=sha256_file(path))


def run_matryoshka_kv(ctx: BenchContext, cfg: MatryoshkaKVBenchConfig | None = None
                      ) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``)."""
    from subspace_peft.adapters.matryoshka_kv import MatryoshkaKVConfig, MatryoshkaKVModel
    from subspace_peft.adapters.matryoshka_kv.protocol import kv_perplexity, newsgroups_streams
    from subspace_peft.smollm2 import load_smollm2

    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    trained = _trained_bases(ctx, cfg)
    streams = newsgroups_streams()
    model = load_smollm2().to(ctx.device)

    def ppl() -> float:
        return kv_perplexity(model, streams.evaluation, windows=cfg.eval_windows,
                             device=ctx.device)

    original = ppl()
    _log(f"original ppl {original:.3f}")
    kv = MatryoshkaKVModel(model, MatryoshkaKVConfig(init="identity"))
    curves: dict[str, dict[int, float]] = {IDENTITY: {}, PCA: {}, METHOD: {}}
    for label in curves:
        if label == PCA:
            kv.calibrate(lambda: [model.model(input_ids=b.to(ctx.device), use_cache=False)
                                  for b in streams.calibration.split(4)], init="pca")
        elif label == METHOD:
            kv.load_adapter_state_dict(trained)
        for r in cfg.ranks:
            kv.set_ranks(r)
            curves[label][r] = ppl()
            _log(f"{label} r={r}: ppl {curves[label][r]:.3f}")
    head_dim = kv.head_dim
    case = "SmolLM2-135M, 20NG test, {} x 256 tokens, KV cache {}/{}"
    rows = [Measurement(case.format(cfg.eval_windows, r, head_dim), label, "perplexity", curve[r],
                        "", False)
            for r in cfg.ranks for label, curve in curves.items()]
    rows.append(Measurement(case.format(cfg.eval_windows, head_dim, head_dim), "original (full cache)",
                            "perplexity", original, "", False))
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"config": asdict(cfg), "quick": ctx.quick, "original_ppl": original,
               "head_dim": head_dim,
               "curves": {k: {str(r): v for r, v in c.items()} for k, c in curves.items()}}
    (out / "matryoshka_kv.json").write_text(json.dumps(summary, indent=1))
    _plot(curves, original, head_dim, out / "matryoshka_kv_curve.png")
    return rows


def _plot(curves: dict[str, dict[int, float]], original: float, head_dim: int,
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from subspace_core.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for label, curve in curves.items():
        ranks = sorted(curve)
        ax.plot([100 * r / head_dim for r in ranks], [curve[r] for r in ranks], marker="o",
                label=label)
    ax.axhline(original, color="k", lw=0.8, ls="--", label="original (full cache)")
    ax.set_yscale("log")
    ax.set_xlabel("KV cache kept (%)")
    ax.set_ylabel("perplexity (20NG test)")
    ax.set_title("SmolLM2-135M, every layer and head at the same rank", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


MATRYOSHKA_KV_BENCH = register_benchmark(Benchmark(
    name="peft/matryoshka_kv",
    method=METHOD,
    baselines=(PCA, IDENTITY),
    run=run_matryoshka_kv,
    description="SmolLM2-135M with every key / value head cached at r of 64 dimensions: "
    "held-out 20 Newsgroups perplexity of MatryoshkaKV's trained nested bases vs the PCA "
    "bases it starts from and vs plain truncation, at cache fractions 1/8..7/8 (PNG "
    "matryoshka_kv_curve.png), with the shipped checkpoint's bases.",
))
