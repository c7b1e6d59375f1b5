"""Benchmarks ``peft/minilm_sentiment`` (GaLore vs full fine-tuning vs LoRA),
``peft/minilm_adapters`` and ``peft/minilm_adapters_20ng`` (SVFit, CorDA and SaRA vs LoRA and
full fine-tuning, on sentiment and on 20 Newsgroups topics) on MiniLM.

all-MiniLM-L6-v2 (22.6M parameters) + a linear head is fine-tuned for Rotten Tomatoes
sentiment (``rotten_tomatoes``: 10,201 / 1,275 / 1,275 snippets) by each method on the same
harness (:mod:`subspace_peft.finetune`): same split, seed, batch order (32 per batch),
max length 64 tokens, epochs, linear warm-up (6 %) / decay schedule, gradient clipping at 1;
each method at its own learning rate (:data:`TUNED_LR`, picked on validation accuracy from
a 4-point sweep per method, listed in :data:`LR_SWEEP`). Reported per method: test accuracy
of the best-validation epoch (%), its difference to full fine-tuning (points), validation
accuracy, trainable parameters, optimizer-state bytes (exact, from the optimizer's state
tensors after training; in all, and ``matrix_state`` for the 36 encoder matrices GaLore
projects), mean training loss over the last 10 % of steps, and training wall time.
Target (issue 4): GaLore within 1 point of full fine-tuning.

Learning-rate sweep (full setting: 1 epoch of 319 steps, seed 0, CPU, one thread;
validation / test accuracy in %, best validation per method between asterisks)::

    full (AdamW)     5e-5 81.33 / 81.88   1e-4 82.59 / 82.04   *2e-4 84.39 / 82.35*
                     4e-4 81.33 / 81.73
    GaLore (r=8)     1e-4 81.10 / 81.57   2e-4 82.67 / 81.25   *4e-4 83.06 / 82.12*
                     8e-4 78.98 / 79.84   (r=16, 2e-4: 82.51 / 81.96)
    LoRA (r=8)       5e-4 80.86 / 80.71   1e-3 81.25 / 81.41   *2e-3 82.43 / 80.86*
                     4e-3 79.76 / 78.90

With 1,275 examples per split one accuracy has a standard error of about 1.1 points, so
single-seed differences of a point are within noise. The full run at :data:`TUNED_LR`
reproduces the starred rows exactly (test: full 82.35 %, GaLore 82.12 % = -0.24 points,
LoRA 80.86 %); optimizer state 172.2 / 93.3 / 2.5 MiB, of which the 36 encoder matrices
81.0 / 2.1 / 2.5 MiB (GaLore's remaining state is AdamW's on the 11.7M-entry word
embedding, which it does not project). A training step costs the same for the three
methods here (0.42-0.44 s for 32 snippets on 2 idle cores).

``peft/minilm_adapters`` runs the same harness and setting for SVFit (every singular value of
the 36 matrices: 13,824 + head 770 = 14,594 trainable), CorDA in both modes (rank 8,
calibrated on 8 training batches: 332,546 trainable, as LoRA) and the LoRA / full rows above.
Its learning rates come from a shorter sweep (same full setting, one thread, validation /
test accuracy in %; ``runs/peft/sweep.py`` of the session that added them)::

    SVFit            2e-2 80.24 / 79.06   *4e-2 80.86 / 79.69*  8e-2 78.27 / 79.61
    CorDA KPM (r=8)  *1e-3 81.49 / 80.39*
    CorDA IPM (r=8)  *3e-4 80.86 / 80.78*  1e-3 78.90 / 78.59

so at one epoch SVFit trails LoRA (82.43 / 80.86) by 1.6 validation and 1.2 test points with
22.8x fewer trainable parameters: the issue's target (SVFit >= LoRA with >= 10x fewer) is
not met in this budget. Both CorDA modes land within about a point of LoRA (the
instruction-previewed one, which adapts the principal components, wants the smaller rate).

SaRA (the smallest 10 % of each matrix's entries, 2.1M trainable + head) runs at full
fine-tuning's rate (2e-4), not swept. On 20 Newsgroups (``peft/minilm_adapters_20ng``) (11,314 training documents, of which
:data:`NEWSGROUPS_VALIDATION` are held out for validation; 7,532 test; the first 64 tokens of
each document) every method runs at its Rotten Tomatoes rate: the rates were not re-tuned for
the 20-way task. Full run (one epoch of 322 steps, ``zoo/results/bench/
peft_minilm_adapters_20ng_full_cpu.csv``), validation / test accuracy and trainable
parameters::

    SVFit         86.0 / 78.25     21,524
    LoRA (r=8)    84.9 / 77.90    339,476
    CorDA KPM     79.8 / 74.44    339,476
    CorDA IPM     74.4 / 70.55    339,476
    SaRA          68.3 / 66.56    693,385
    full          86.3 / 79.54   22.6 M

so on 20 Newsgroups SVFit meets the target (+0.35 test points over LoRA with 15.8x fewer
trainable parameters) while on Rotten Tomatoes it misses it. CorDA and SaRA lose 3-11 points
here at their sentiment rates (SaRA's rate was never swept).

``quick`` checks the wiring (about 10 s of training per method; its accuracies, 67-73 %,
are far from converged and say nothing about the comparison): 512 training and 256 test
snippets, 32 steps of 16, no validation, the same learning rates.
"""

from __future__ import annotations

import json

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.io import atomic_path

__all__ = ["ADAPTER_METHODS", "ADAPTER_TASKS", "FULL", "LABELS", "LR_SWEEP", "MINILM_ADAPTERS",
           "MINILM_ADAPTERS_20NG", "MINILM_SENTIMENT", "QUICK", "TUNED_LR", "run_minilm_adapters",
           "run_minilm_adapters_20ng", "run_minilm_sentiment"]

LABELS = {
    "galore": "GaLore (r=8, AdamW)",
    "full": "Full fine-tuning (AdamW)",
    "lora": "LoRA (r=8, HF peft)",
    "svfit": "SVFit (all singular values)",
    "corda_kpm": "CorDA KPM (r=8)",
    "corda_ipm": "CorDA IPM (r=8)",
    "sara": "SaRA (10 % smallest weights)",
}
#: The methods of ``peft/minilm_adapters``: SVFit first (the method), then its baselines.
ADAPTER_METHODS = ("svfit", "lora", "corda_kpm", "corda_ipm", "sara", "full")
#: The tasks of ``peft/minilm_adapters`` (the first) and ``peft/minilm_adapters_20ng``.
ADAPTER_TASKS = ("rotten_tomatoes", "newsgroups20")
#: 20 Newsgroups has no validation split: this many training documents (a seeded draw) are
#: held out as one.
NEWSGROUPS_VALIDATION = 1000
#: Learning rates swept in the full setting (validation accuracy decides; results in the
#: module docstring).
LR_SWEEP = {
    "full": (5e-5, 1e-4, 2e-4, 4e-4),
    "galore": (1e-4, 2e-4, 4e-4, 8e-4),
    "lora": (5e-4, 1e-3, 2e-3, 4e-3),
    "svfit": (2e-2, 4e-2, 8e-2),
    "corda_kpm": (1e-3,),
    "corda_ipm": (3e-4, 1e-3),
}
#: The learning rate each method runs at (best validation accuracy in :data:`LR_SWEEP`).
TUNED_LR = {"full": 2e-4, "galore": 4e-4, "lora": 2e-3, "svfit": 4e-2, "corda_kpm": 1e-3,
            "corda_ipm": 3e-4, "sara": 2e-4}
#: Sizes: train/validation/test examples (None = the whole split), epochs, batch size.
FULL = {"train": None, "validation": None, "test": None, "epochs": 1, "batch_size": 32}
QUICK = {"train": 512, "validation": 0, "test": 256, "epochs": 1, "batch_size": 16}


def _task_splits(task: str) -> dict[str, tuple[list[str], torch.Tensor]]:
    """``{split: (texts, labels)}`` of a task: Rotten Tomatoes' own three splits; 20
    Newsgroups' test split and its training split less :data:`NEWSGROUPS_VALIDATION`
    documents (a seeded draw), which are the validation split."""
    from subspace_peft.data import load_rotten_tomatoes, load_text

    if task == "rotten_tomatoes":
        return {split: (d.texts, torch.as_tensor(d.labels)) for split in
                ("train", "validation", "test") for d in (load_rotten_tomatoes(split),)}
    if task != "newsgroups20":
        raise ValueError(f"task: expected one of {ADAPTER_TASKS}, got {task!r}")
    train, test = load_text(task, "train"), load_text(task, "test")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    held = order[:NEWSGROUPS_VALIDATION].sort().values.tolist()
    kept = order[NEWSGROUPS_VALIDATION:].sort().values.tolist()
    labels = torch.as_tensor(train.labels)
    return {"train": ([train.texts[i] for i in kept], labels[kept]),
            "validation": ([train.texts[i] for i in held], labels[held]),
            "test": (test.texts, torch.as_tensor(test.labels))}


def _splits(settings: dict, tokenizer, task: str = "rotten_tomatoes"):
    from subspace_peft.finetune import encode

    out = {}
    for split, (texts, labels) in _task_splits(task).items():
        n = settings[split]
        if n == 0:
            out[split] = None
            continue
        if n is not None and n < len(texts):
            keep = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))[:n]
            keep = keep.sort().values.tolist()
            texts, labels = [texts[i] for i in keep], labels[keep]
        out[split] = encode(texts, labels, tokenizer)
    return out


def _tail_mean(losses: list[float]) -> float:
    """Mean training loss over the last 10 % of the steps (at least one)."""
    tail = losses[-max(1, len(losses) // 10):]
    return sum(tail) / len(tail)


def _run_methods(ctx: BenchContext, methods: tuple[str, ...], summary_file: str,
                 task: str = "rotten_tomatoes") -> tuple[str, dict, list[Measurement]]:
    """Fine-tune each of ``methods`` at its :data:`TUNED_LR` on one task and data setting;
    the rows every method gets, and the raw results by method (also written to
    ``summary_file``)."""
    from subspace_peft.finetune import FinetuneConfig, finetune
    from subspace_peft.hf import load_minilm, load_minilm_tokenizer

    settings = QUICK if ctx.quick else FULL
    tokenizer = load_minilm_tokenizer()
    encoder = load_minilm()
    data = _splits(settings, tokenizer, task)
    n_train = len(data["train"])
    num_classes = int(data["train"].labels.max()) + 1
    case = (f"MiniLM-L6 {task}, {settings['epochs']} epoch(s) x {n_train:,} "
            f"(batch {settings['batch_size']})")
    summary = {"case": case, "task": task, "quick": ctx.quick, "settings": settings,
               "methods": {}}
    finished = _finished_methods(ctx, summary_file, summary)
    results = {}
    for name in methods:
        if name in finished:
            results[name] = finished[name]
            summary["methods"][name] = _method_summary(name, finished[name])
            continue
        cfg = FinetuneConfig(name, TUNED_LR[name], epochs=settings["epochs"],
                             batch_size=settings["batch_size"])
        results[name] = finetune(cfg, data["train"], data["validation"], data["test"],
                                 encoder=encoder, device=ctx.device, num_classes=num_classes)
        # written after every method, so a run stopped part-way keeps what it measured
        summary["methods"][name] = _method_summary(name, results[name])
        _write_summary(ctx, summary_file, summary)
    full_acc = 100.0 * results["full"].test_accuracy
    rows: list[Measurement] = []
    for name, r in results.items():
        label = LABELS[name]
        acc = 100.0 * r.test_accuracy
        rows += [
            Measurement(case, label, "test_acc", acc, "%", True),
            Measurement(case, label, "test_acc_vs_full", acc - full_acc, "pts", True),
        ]
        if r.val_accuracy is not None:
            rows.append(Measurement(case, label, "val_acc", 100.0 * r.val_accuracy, "%", True))
        rows += [
            Measurement(case, label, "trainable_params", r.trainable_params / 1e6, "M", False),
            Measurement(case, label, "optimizer_state", r.optimizer_state_bytes / 2**20, "MiB",
                        False),
            Measurement(case, label, "matrix_state", r.matrix_state_bytes / 2**20, "MiB",
                        False),
            Measurement(case, label, "train_loss", _tail_mean(r.losses), "", False),
            Measurement(case, label, "train_wall", r.train_seconds, "s", False),
        ]
    return case, results, rows


def _method_summary(name: str, r) -> dict:
    """The JSON record of one method's :class:`~subspace_peft.finetune.FinetuneResult`."""
    return {
        "label": LABELS[name], "lr": r.lr, "steps": r.steps, "test_accuracy": r.test_accuracy,
        "val_accuracy": r.val_accuracy, "val_history": r.val_history,
        "best_epoch": r.best_epoch, "trainable_params": r.trainable_params,
        "total_params": r.total_params, "optimizer_state_bytes": r.optimizer_state_bytes,
        "matrix_state_bytes": r.matrix_state_bytes,
        "train_seconds": r.train_seconds, "losses": r.losses,
    }


def _finished_methods(ctx: BenchContext, summary_file: str, summary: dict) -> dict:
    """The results an earlier, interrupted run wrote to ``summary_file`` in the same output
    folder, by method, when it ran the same case, task and settings, and each method at its
    current :data:`TUNED_LR` (anything else is measured again); a rerun resumes from them."""
    from subspace_peft.finetune import FinetuneResult

    path = ctx.out_dir / summary_file
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if any(earlier.get(k) != summary[k] for k in ("case", "task", "quick", "settings")):
        return {}
    return {name: FinetuneResult(method=name, **{k: v for k, v in record.items()
                                                if k != "label"})
            for name, record in earlier.get("methods", {}).items()
            if record.get("lr") == TUNED_LR.get(name)}


def _write_summary(ctx: BenchContext, summary_file: str, summary: dict) -> None:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(ctx.out_dir / summary_file) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))


def run_minilm_sentiment(ctx: BenchContext) -> list[Measurement]:
    """GaLore vs full fine-tuning vs LoRA (issue 4's table)."""
    return _run_methods(ctx, ("full", "galore", "lora"), "peft_minilm_sentiment.json")[2]


def _run_adapter_task(ctx: BenchContext, task: str) -> list[Measurement]:
    """SVFit vs LoRA, CorDA (both modes), SaRA and full fine-tuning on one of
    :data:`ADAPTER_TASKS`: accuracy vs trainable parameters; adds SVFit's accuracy gap to LoRA
    and LoRA's trainable-parameter multiple of SVFit's (target: gap >= 0 with a multiple
    >= 10)."""
    case, results, rows = _run_methods(ctx, ADAPTER_METHODS,
                                       f"peft_minilm_adapters_{task}.json", task)
    svfit, lora = results["svfit"], results["lora"]
    return [
        *rows,
        Measurement(case, LABELS["svfit"], "test_acc_vs_lora",
                    100.0 * (svfit.test_accuracy - lora.test_accuracy), "pts", True),
        Measurement(case, LABELS["svfit"], "lora_params_multiple",
                    lora.trainable_params / svfit.trainable_params, "x", True),
    ]


def run_minilm_adapters(ctx: BenchContext) -> list[Measurement]:
    """The adapter comparison on Rotten Tomatoes sentiment (see :func:`_run_adapter_task`)."""
    return _run_adapter_task(ctx, "rotten_tomatoes")


def run_minilm_adapters_20ng(ctx: BenchContext) -> list[Measurement]:
    """The adapter comparison on 20 Newsgroups topics (see :func:`_run_adapter_task`); its own
    benchmark because the full run takes about as long as the sentiment one again (one
    thread: 1-2 h), so the two can run, and be rerun, separately."""
    return _run_adapter_task(ctx, "newsgroups20")


MINILM_SENTIMENT = register_benchmark(
    Benchmark(
        name="peft/minilm_sentiment",
        method=LABELS["galore"],
        baselines=(LABELS["full"], LABELS["lora"]),
        run=run_minilm_sentiment,
        description="all-MiniLM-L6-v2 fine-tuned for Rotten Tomatoes sentiment on one "
        "harness: GaLore vs full fine-tuning (AdamW) vs LoRA (HF peft): test accuracy, "
        "optimizer-state bytes, trainable parameters, train time. Target: GaLore within 1 "
        "point of full fine-tuning.",
    )
)

_ADAPTERS_DESCRIPTION = (
    "all-MiniLM-L6-v2 fine-tuned for {task} on the same harness by the weight-subspace "
    "adapters (SVFit, CorDA KPM/IPM, SaRA) vs LoRA (HF peft) and full fine-tuning: test "
    "accuracy vs trainable parameters. Target: SVFit >= LoRA's accuracy with >= 10x fewer "
    "trainable parameters.")

MINILM_ADAPTERS = register_benchmark(
    Benchmark(
        name="peft/minilm_adapters",
        method=LABELS["svfit"],
        baselines=tuple(LABELS[m] for m in ADAPTER_METHODS[1:]),
        run=run_minilm_adapters,
        description=_ADAPTERS_DESCRIPTION.format(task="Rotten Tomatoes sentiment"),
    )
)

MINILM_ADAPTERS_20NG = register_benchmark(
    Benchmark(
        name="peft/minilm_adapters_20ng",
        method=LABELS["svfit"],
        baselines=tuple(LABELS[m] for m in ADAPTER_METHODS[1:]),
        run=run_minilm_adapters_20ng,
        description=_ADAPTERS_DESCRIPTION.format(task="20 Newsgroups topics"),
    )
)
