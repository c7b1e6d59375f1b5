"""Benchmark ``safety/eigenshield_pgd`` (``subzoo bench safety``).

PGD attack success rate (ASR, lower is better) on the zero-shot Fashion-MNIST classifier of
the shipped LiT CLIP, undefended vs EigenShield vs a PCA projection of the same rank, for
two threat models (``transfer``: the attacker ignores the defence; ``adaptive``: PGD through
the filter), plus the clean top-1 of each on the 10,000 test images. The runner reports
EigenShield / baseline ratios; the issue's target is ASR ratio <= 0.5 vs ``undefended`` at a
clean-accuracy cost <= 3 points. Details: :mod:`subspace_safety.robustness`.

Sizes: full = :class:`~subspace_safety.robustness.EigenShieldEvalConfig` defaults (filters
in the 1,280-d tower-feature space fitted on 20,000 training images, 256 noise-perturbed
calibration images, 150 attacked test images, eps 2/4/8 of 255, PGD-10 with step eps/4;
~10 min on one busy core); quick = :func:`quick_config` (5,000 fit images, 32 calibration
images, 24 attacked images, eps 4/255, PGD-5).
"""

from __future__ import annotations

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = ["EIGENSHIELD_PGD", "quick_config", "run_eigenshield_pgd"]

_NAMES = {"none": "undefended", "eigenshield": "EigenShield", "pca": "PCA (same rank)"}


def quick_config():
    """The ``--quick`` sizes: a few dozen attacked images, one eps, PGD-5."""
    from subspace_safety.robustness import EigenShieldEvalConfig

    return EigenShieldEvalConfig(n_fit=5_000, n_cal=32, n_attack=24, eps=(4 / 255,), steps=5)


def run_eigenshield_pgd(ctx: BenchContext) -> list[Measurement]:
    """Run the evaluation (quick or full) and turn it into measurements."""
    import torch

    import subspace_safety.zoo  # noqa: F401  registers the shipped model
    from subspace_safety.robustness import EigenShieldEvalConfig, evaluate_eigenshield_pgd

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: a second thread only stalls
    try:
        config = quick_config() if ctx.quick else EigenShieldEvalConfig()
        res = evaluate_eigenshield_pgd(config=config, verbose=True)
    finally:
        torch.set_num_threads(threads)
    steps = res["config"]["steps"]
    rows = [Measurement("clean, 10,000 test images", _NAMES[name], "top1", acc)
            for name, acc in res["clean_acc"].items()]
    rows.append(Measurement("clean, 10,000 test images", "EigenShield", "rank",
                            res["defense"]["rank"], "", False))
    rows.append(Measurement("clean, 10,000 test images", "EigenShield", "clean_cost_points",
                            100 * (res["clean_acc"]["none"] - res["clean_acc"]["eigenshield"]),
                            "pt", False))
    for threat, by_eps in res["asr"].items():
        for eps, by_defense in by_eps.items():
            case = f"PGD-{steps} L-inf eps {eps}, {threat}, {config.n_attack} images"
            rows += [Measurement(case, _NAMES[name], "asr", value, "", False)
                     for name, value in by_defense.items()]
    return rows


EIGENSHIELD_PGD = register_benchmark(Benchmark(
    name="safety/eigenshield_pgd",
    method="EigenShield",
    baselines=("undefended", "PCA (same rank)"),
    run=run_eigenshield_pgd,
    description="PGD L-inf attack success rate on the LiT CLIP's zero-shot Fashion-MNIST "
    "classifier: EigenShield vs undefended vs same-rank PCA (transfer and adaptive), and "
    "clean top-1 (target: ASR halved at <= 3 points clean cost).",
))
