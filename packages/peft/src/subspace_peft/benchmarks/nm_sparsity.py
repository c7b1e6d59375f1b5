"""Benchmark ``peft/nm_sparsity``: progressive gradient flow vs SR-STE for N:M training.

Bambhaniya et al. (2024, arXiv:2402.04744) report that SR-STE (Zhou et al. 2021) loses
accuracy in the high-sparsity regime (e.g. 1:8) because the pruned weights keep receiving the
full, noisy gradient, and that letting the gradient flow to the pruned weights decay during
training (MDGF / SDGF) recovers part of it. This benchmark trains the same MLP
(784-256-128-10, ReLU) on Fashion-MNIST with :func:`~subspace_peft.sparsity.apply_nm_sparsity`
on its two hidden linears (the 10-way head stays dense) at **equal training budget** — same
initial weights, same minibatches (fixed seed), same Adam learning rate and number of steps —
and reports the test accuracy of the *finalized* model (exactly N:M, :meth:`NMSparsity.finalize`):

* ``dense`` — the same MLP trained without sparsity (reference, no N:M constraint);
* ``SR-STE`` — :class:`~subspace_peft.sparsity.NMSchedule` ``"srste"`` (``λ_W = 2e-4``);
* ``MDGF-exp`` — ``"mdgf"`` with the exponential decay ``f(t) = exp(−κ t)``, ``κ`` chosen so
  that ``f`` reaches ``decay_floor`` (1 %) after ``decay_fraction`` (half) of the steps; the
  gradient to the pruned weights is the decayed-mask derivative (``β = f``);
* full mode only: ``DGF-exp`` (strict N:M forward, decaying gradient to the pruned weights,
  same ``κ``) and ``SDGF-stepwise`` (patterns ``(M−1):M → … → N:M`` in equal frames).

for the patterns 2:4 and 1:8. Data: ``fashion_mnist`` (60,000 / 10,000), pixels / 255,
flattened. ``quick`` (under a minute on two busy cores): 400 steps of batch 128, SR-STE and
MDGF only. Full (target under 10 minutes on 2 cores): 2,000 steps (4.3 epochs), all recipes.
The N:M mask is recomputed from the dense weights at every step, which makes a sparse step
about 3-4x the cost of a dense one on CPU. Writes ``peft_nm_sparsity.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console
from subspace_peft.sparsity import NMSchedule, apply_nm_sparsity, is_nm_sparse

__all__ = [
    "FULL",
    "LABELS",
    "NMMLP",
    "NM_SPARSITY_BENCH",
    "QUICK",
    "NMBenchConfig",
    "run_nm_sparsity",
]

LABELS = {"mdgf": "MDGF-exp (progressive gradient flow)", "srste": "SR-STE",
          "dense": "dense", "dgf": "DGF-exp (decaying gradient)",
          "sdgf": "SDGF-stepwise"}


@dataclass(frozen=True)
class NMBenchConfig:
    """Sizes and options of one run of :func:`run_nm_sparsity` (see the module doc)."""

    patterns: tuple[tuple[int, int], ...] = ((2, 4), (1, 8))
    recipes: tuple[str, ...] = ("srste", "mdgf", "dgf", "sdgf")
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    decay_fraction: float = 0.5
    decay_floor: float = 0.01
    seed: int = 0


FULL = NMBenchConfig()
QUICK = NMBenchConfig(recipes=("srste", "mdgf"), steps=400)


class NMMLP(nn.Module):
    """784-256-128-10 ReLU MLP (``fc1``, ``fc2`` sparsified; ``head`` dense)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.fc2(F.relu(self.fc1(x)))))


def _schedule(recipe: str, cfg: NMBenchConfig) -> NMSchedule:
    # κ with exp(−κ · decay_fraction · steps) = decay_floor
    kappa = math.log(1.0 / cfg.decay_floor) / (cfg.decay_fraction * cfg.steps)
    if recipe == "srste":
        return NMSchedule("srste")
    if recipe in ("mdgf", "dgf"):
        return NMSchedule(recipe, decay_fn="exp", decay_coef=kappa)
    if recipe == "sdgf":
        return NMSchedule("sdgf", sdgf_kind="stepwise", total_steps=cfg.steps)
    raise ValueError(f"recipe: expected one of {list(LABELS)}, got {recipe!r}")


def _load(device: torch.device) -> tuple[torch.Tensor, ...]:
    from subspace_core.data import load_dataset

    out = []
    for split in ("train", "test"):
        data = load_dataset("fashion_mnist", split)
        x = torch.as_tensor(data.x).reshape(len(data.x), -1).to(torch.float32) / 255.0
        out += [x.to(device), torch.as_tensor(data.y).long().to(device)]
    return tuple(out)


def _train(recipe: str | None, pattern: tuple[int, int] | None, data: tuple[torch.Tensor, ...],
           cfg: NMBenchConfig, device: torch.device) -> dict:
    """One run; returns test accuracy, final train loss (mean of the last 50 steps), time."""
    xtr, ytr, xte, yte = data
    net = NMMLP(cfg.seed).to(device)
    handle = None
    if recipe is not None:
        handle = apply_nm_sparsity(net, ("fc1", "fc2"), *pattern, _schedule(recipe, cfg))
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)  # the same minibatches for every run
    t0 = time.perf_counter()
    losses = []
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(xtr), (cfg.batch_size,), generator=gen).to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        if handle is not None:
            handle.step()
        losses.append(float(loss.detach()))
    if handle is not None:
        handle.finalize()
        for name in ("fc1", "fc2"):
            if not is_nm_sparse(getattr(net, name).weight, *pattern):  # pragma: no cover
                raise RuntimeError(f"nm_sparsity: {name} is not {pattern} after finalize")
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(xte[i:i + 4096]).argmax(1) == yte[i:i + 4096]).sum())
                      for i in range(0, len(xte), 4096))
    tail = losses[-50:]
    return {"accuracy": correct / len(xte), "train_loss": sum(tail) / len(tail),
            "seconds": time.perf_counter() - t0}


def run_nm_sparsity(ctx: BenchContext, cfg: NMBenchConfig | None = None) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``)."""
    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    console = stderr_console()
    data = _load(ctx.device)
    summary: dict = {"config": asdict(cfg), "quick": ctx.quick, "runs": {}}
    dense = _train(None, None, data, cfg, ctx.device)
    summary["runs"]["dense"] = dense
    console.print(f"nm_sparsity: dense {100 * dense['accuracy']:.2f} % "
                  f"({dense['seconds']:.0f} s)")
    rows: list[Measurement] = []
    for n, m in cfg.patterns:
        case = f"Fashion-MNIST MLP {n}:{m}"
        rows.append(Measurement(case, LABELS["dense"], "accuracy", 100 * dense["accuracy"],
                                "%", True))
        rows.append(Measurement(case, LABELS["dense"], "train_loss", dense["train_loss"], "",
                                False))
        for recipe in cfg.recipes:
            res = _train(recipe, (n, m), data, cfg, ctx.device)
            summary["runs"][f"{recipe} {n}:{m}"] = res
            console.print(f"nm_sparsity: {n}:{m} {LABELS[recipe]} {100 * res['accuracy']:.2f} %"
                          f" (train loss {res['train_loss']:.3f}, {res['seconds']:.0f} s)")
            rows.append(Measurement(case, LABELS[recipe], "accuracy", 100 * res["accuracy"],
                                    "%", True))
            rows.append(Measurement(case, LABELS[recipe], "train_loss", res["train_loss"], "",
                                    False))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "peft_nm_sparsity.json").write_text(json.dumps(summary, indent=2))
    return rows


NM_SPARSITY_BENCH = register_benchmark(Benchmark(
    name="peft/nm_sparsity",
    method=LABELS["mdgf"],
    baselines=(LABELS["srste"], LABELS["dense"]),
    run=run_nm_sparsity,
    description="N:M sparse training (2:4, 1:8) of a 784-256-128-10 MLP on Fashion-MNIST at "
    "equal budget: progressive gradient flow (MDGF, exponential decay; Bambhaniya et al. "
    "2024) vs SR-STE (Zhou et al. 2021), dense training as reference; test accuracy of the "
    "finalized (exactly N:M) model.",
))
