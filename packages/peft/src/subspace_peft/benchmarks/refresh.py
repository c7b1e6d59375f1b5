"""Benchmark ``peft/projector_refresh``: time and quality of one GaLore basis refresh per layer.

GaLore recomputes each projected layer's basis every ``update_proj_gap`` steps with a full
SVD of the gradient (``torch.linalg.svd``). Ours warm-starts a few block power iterations
from the previous basis (:class:`~subspace_peft.optim.projector.SubspaceProjector`,
``method="subspace_iteration"``, ``iters=2``); the cold randomized SVD is the middle
ground. Each case uses two *real* gradients of the same weights on two different batches
(``G_prev`` gives the previous basis, the refresh is timed on ``G_next``) and reports, per
layer shape at rank ``r = d/4``:

* ``refresh_time`` (ms, median over repeats) of the basis computation alone;
* ``captured_energy`` (%): ``‖Pᵀ G‖²_F / ‖U_rᵀ G‖²_F`` with ``U_r`` the exact top-``r``
  singular vectors — 100 % is the best any rank-``r`` basis can do.

Cases: the shipped micro decoder (``peft/llama_micro.text_galore``; d = 128, r = 32) on
20 Newsgroups + R8 bytes (layers 0 and 5 in the quick run, all six in the full one), and in the full run SmolLM2-135M's real weights
(d = 576, r = 144; layers 0, 15 and 29) on 20 Newsgroups text.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import nn

from subspace_core.bench import (
    BenchContext,
    Benchmark,
    Measurement,
    median_time,
    register_benchmark,
)
from subspace_peft.optim.projector import SubspaceProjector

__all__ = ["METHODS", "PROJECTOR_REFRESH", "refresh_measurements", "run_projector_refresh"]

#: label -> SubspaceProjector method (None: GaLore's full ``torch.linalg.svd``).
METHODS: dict[str, str | None] = {
    "warm subspace iteration (ours)": "subspace_iteration",
    "full SVD (GaLore)": None,
    "randomized SVD (cold)": "randomized",
}


def _captured(P: torch.Tensor, A: torch.Tensor, best: float) -> float:
    return 100.0 * float((P.T @ A).pow(2).sum()) / best


def refresh_measurements(
    case: str,
    grads: Iterable[tuple[str, torch.Tensor, torch.Tensor]],
    rank: int,
    device: torch.device,
    repeats: int,
) -> list[Measurement]:
    """Time and score every method on ``(shape label, G_prev, G_next)`` triples.

    Rows are averaged over the triples with the same shape label (e.g. all ``q_proj`` of
    the chosen layers); ``case`` prefixes the measurement case.
    """
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    energy: dict[tuple[str, str], list[float]] = defaultdict(list)
    for label, g_prev, g_next in grads:
        r = min(rank, *g_next.shape)
        for method, name in METHODS.items():
            proj = SubspaceProjector(tuple(g_next.shape), r, method=name or "exact")
            A = g_next.float() if proj.side == "left" else g_next.float().T
            best = float(torch.linalg.svdvals(A)[:r].pow(2).sum())
            if name == "subspace_iteration":
                proj.refresh(g_prev)  # the previous basis the refresh warm-starts from

            def compute(A=A, r=r, proj=proj, g=g_next, full=name is None):
                if full:
                    return torch.linalg.svd(A, full_matrices=False)[0][:, :r]
                return proj.compute_basis(g)

            timing = median_time(compute, device, warmup=1, repeats=repeats)
            times[label, method].append(1e3 * timing["median"])
            energy[label, method].append(_captured(compute(), A, best))
    rows = []
    for (label, method), values in times.items():
        where = f"{case}: {label}"
        rows.append(Measurement(where, method, "refresh_time", sum(values) / len(values), "ms",
                                False))
        captured = energy[label, method]
        rows.append(Measurement(where, method, "captured_energy",
                                sum(captured) / len(captured), "%", True))
    return rows


def _linear_grads(model: nn.Module, loss_fn, batches, pattern: str, label_of
                  ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Gradients of the 2-D weights whose names match ``pattern`` on two batches."""
    weights = {n: p for n, p in model.named_parameters() if p.dim() == 2 and re.search(pattern, n)}
    per_batch = []
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        per_batch.append({n: p.grad.detach().clone() for n, p in weights.items()})
    model.zero_grad(set_to_none=True)
    return [(label_of(n), per_batch[0][n], per_batch[1][n]) for n in weights]


def _micro_decoder_grads(device: torch.device, layers: str):
    from subspace_core.data.datasets.text import lm_corpus
    from subspace_core.zoo import load

    model = load("peft/llama_micro.text_galore").float().to(device)
    tokens = lm_corpus("train")
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        starts = torch.randint(0, tokens.numel() - 257, (8,), generator=gen)
        batches.append(torch.stack([tokens[s:s + 257] for s in starts.tolist()]).to(device))

    def loss_fn(m, batch):
        logits = m(batch[:, :-1])
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())

    return _linear_grads(model, loss_fn, batches, rf"layers\.({layers})\..*(attn|mlp)",
                         lambda n: n.split(".", 2)[-1].removesuffix(".weight"))


def _smollm2_grads(device: torch.device):
    from subspace_core.data.datasets.text import load_text
    from subspace_peft.smollm2 import load_smollm2

    model, tokenizer = load_smollm2(with_tokenizer=True)
    model = model.to(device)
    texts = load_text("newsgroups20", "train").texts
    batches = [tokenizer(texts[i:i + 4], return_tensors="pt", truncation=True, max_length=128,
                         padding="max_length").to(device) for i in (0, 4)]
    if tokenizer.pad_token is None:
        raise RuntimeError("SmolLM2's tokenizer has no pad token")

    def loss_fn(m, batch):
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return m(**batch, labels=labels).loss

    return _linear_grads(model, loss_fn, batches, r"layers\.(0|15|29)\..*(q_proj|k_proj|up_proj|down_proj)",
                         lambda n: n.split(".")[-2])


def run_projector_refresh(ctx: BenchContext) -> list[Measurement]:
    repeats = 3 if ctx.quick else 7
    layers = "0|5" if ctx.quick else r"\d+"
    rows = refresh_measurements("llama_micro r=32", _micro_decoder_grads(ctx.device, layers), 32,
                                ctx.device, repeats)
    if not ctx.quick:
        rows += refresh_measurements("SmolLM2-135M r=144", _smollm2_grads(ctx.device), 144,
                                     ctx.device, repeats)
    return rows


PROJECTOR_REFRESH = register_benchmark(
    Benchmark(
        name="peft/projector_refresh",
        method="warm subspace iteration (ours)",
        baselines=("full SVD (GaLore)", "randomized SVD (cold)"),
        run=run_projector_refresh,
        description="One basis refresh per layer on real gradients (rank d/4): time and "
        "captured gradient energy vs the exact top-r subspace, warm-started subspace "
        "iteration vs GaLore's full SVD and a cold randomized SVD.",
    )
)
