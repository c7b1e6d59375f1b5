"""Benchmark ``peft/intrinsic_dimension``: ``d_int90`` of an MLP on MNIST and Fashion-MNIST.

Li et al. (2018, arXiv:1804.08838) train a 784-200-200-10 ReLU MLP (``D = 199,210``
parameters) in random ``d``-dimensional subspaces ``θ = θ0 + P θ_d`` and call ``d_int90`` the
smallest ``d`` whose test accuracy reaches 90 % of the full network's; for MNIST they report
``d_int90 ≈ 750``. This benchmark measures it with
:class:`~subspace_peft.adapters.intrinsic.IntrinsicModel` (Fastfood projection, one global
``P``) and :func:`~subspace_peft.adapters.intrinsic.find_intrinsic_dimension`:

* data: ``mnist_10k`` (9,000 train / 1,000 test real MNIST digits; the paper uses the 60,000 /
  10,000 split) and ``fashion_mnist`` (60,000 / 10,000); pixels / 255, flattened;
* baseline: the same MLP (same ``θ0``, seed 0) trained in full by Adam (lr ``lr_full``) for the
  same number of steps and batch size as every subspace run;
* subspace runs: Adam on ``θ_d`` only (lr ``lr_subspace``), ``steps`` minibatches of
  ``batch_size`` drawn with a fixed seed (the same batches for every run), test accuracy at
  the end; ``d`` searched over ``dims`` (``scan``: all of them, the accuracy curve;
  ``bisect``: about ``log2`` of them, assuming accuracy grows with ``d``).

Reported per dataset: full-training accuracy, accuracy at every evaluated ``d``, ``d_int90``
(``d_int90 / D`` as a fraction of the parameters); the paper's value for MNIST goes to the
JSON summary as ``paper_d_int90`` (a reference, not a row of the table). With a
finite training budget the subspace runs are further from convergence than the full run,
so ``d_int90`` here is an over-estimate that decreases with ``steps``.

``quick`` (about 30-60 s on two busy cores): 400 steps, ``d`` in (300, 750, 1500), scan.
Full (target under 15 minutes on 2 cores): 3,000 steps (43 epochs of ``mnist_10k``, 6.4 of
Fashion-MNIST), bisection over a 16-point grid from 100 to 5,000. Writes
``peft_intrinsic.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console
from subspace_peft.adapters.intrinsic import (
    IntrinsicConfig,
    IntrinsicModel,
    find_intrinsic_dimension,
)

__all__ = ["FULL", "INTRINSIC_BENCH", "LABELS", "PAPER_D_INT90", "QUICK",
           "IntrinsicBenchConfig", "mlp_784", "run_intrinsic"]

LABELS = {"subspace": "random subspace (Fastfood)", "full": "full training"}
#: ``d_int90`` reported by Li et al. for the 784-200-200-10 MLP (MNIST only).
PAPER_D_INT90 = {"mnist_10k": 750}
CASES = {"mnist_10k": "MNIST MLP 784-200-200-10", "fashion_mnist": "Fashion-MNIST MLP "
         "784-200-200-10"}


@dataclass(frozen=True)
class IntrinsicBenchConfig:
    """Sizes and options of one run of :func:`run_intrinsic` (see the module doc)."""

    datasets: tuple[str, ...] = ("mnist_10k", "fashion_mnist")
    dims: tuple[int, ...] = (100, 200, 300, 400, 500, 600, 700, 750, 800, 900, 1000, 1250,
                             1500, 2000, 3000, 5000)
    steps: int = 3000
    batch_size: int = 128
    lr_full: float = 1e-3
    lr_subspace: float = 3e-2
    projection: str = "fastfood"
    search: str = "bisect"
    target_fraction: float = 0.9
    seed: int = 0


FULL = IntrinsicBenchConfig()
QUICK = IntrinsicBenchConfig(dims=(300, 750, 1500), steps=400, search="scan")


def mlp_784(seed: int = 0) -> nn.Sequential:
    """Li et al.'s MNIST MLP: 784-200-200-10 with ReLU (199,210 parameters)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                         nn.Linear(200, 10))


def _load(name: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    from subspace_core.data import load_dataset

    out = []
    for split in ("train", "test"):
        data = load_dataset(name, split)
        x = torch.as_tensor(data.x).reshape(len(data.x), -1).to(torch.float32) / 255.0
        out += [x.to(device), torch.as_tensor(data.y).to(device)]
    return tuple(out)


def _train(model: nn.Module, params: list[torch.Tensor], data: tuple[torch.Tensor, ...],
           cfg: IntrinsicBenchConfig, lr: float) -> float:
    """``cfg.steps`` Adam steps on fixed-seed minibatches; returns test accuracy."""
    xtr, ytr, xte, yte = data
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(xtr), (cfg.batch_size,), generator=gen).to(xtr.device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(xte[i:i + 2048]).argmax(1) == yte[i:i + 2048]).sum())
                      for i in range(0, len(xte), 2048))
    return correct / len(xte)


def run_intrinsic(ctx: BenchContext, cfg: IntrinsicBenchConfig | None = None
                  ) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``)."""
    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    console = stderr_console()
    rows: list[Measurement] = []
    summary: dict = {"config": asdict(cfg), "quick": ctx.quick, "datasets": {}}
    for name in cfg.datasets:
        case = CASES.get(name, f"{name} MLP 784-200-200-10")
        t0 = time.perf_counter()
        data = _load(name, ctx.device)
        net = mlp_784(cfg.seed).to(ctx.device)
        D = sum(p.numel() for p in net.parameters())
        full_acc = _train(net, list(net.parameters()), data, cfg, cfg.lr_full)
        console.print(f"intrinsic {name}: full training {100 * full_acc:.2f} % "
                      f"({time.perf_counter() - t0:.0f} s)")
        timings: dict[int, float] = {}

        def train_fn(d: int, data=data, name=name, timings=timings) -> float:
            t = time.perf_counter()
            sub = IntrinsicModel(mlp_784(cfg.seed).to(ctx.device),
                                 IntrinsicConfig(dim=d, projection=cfg.projection,
                                                 seed=cfg.seed))
            acc = _train(sub, [sub.theta_d], data, cfg, cfg.lr_subspace)
            timings[d] = time.perf_counter() - t
            console.print(f"intrinsic {name}: d={d} {100 * acc:.2f} % ({timings[d]:.0f} s)")
            return acc

        result = find_intrinsic_dimension(train_fn, cfg.dims, baseline_acc=full_acc,
                                          target_fraction=cfg.target_fraction,
                                          search=cfg.search)
        summary["datasets"][name] = {
            "D": D, "full_accuracy": full_acc, "threshold": result.threshold,
            "d_int90": result.d_int, "accuracies": result.accuracies,
            "seconds_per_subspace_run": timings, "seconds": time.perf_counter() - t0}
        rows.append(Measurement(case, LABELS["full"], "accuracy", 100 * full_acc, "%", True))
        rows.append(Measurement(case, LABELS["full"], "trainable_params", D, "", False))
        for d in sorted(result.accuracies):
            rows.append(Measurement(case, LABELS["subspace"], f"accuracy_d{d}",
                                    100 * result.accuracies[d], "%", True))
        if result.d_int is not None:
            rows.append(Measurement(case, LABELS["subspace"], "d_int90", result.d_int, "",
                                    False))
            rows.append(Measurement(case, LABELS["subspace"], "d_int90_over_D",
                                    100 * result.d_int / D, "%", False))
            rows.append(Measurement(case, LABELS["subspace"], "accuracy",
                                    100 * result.accuracies[result.d_int], "%", True))
            rows.append(Measurement(case, LABELS["subspace"], "trainable_params",
                                    result.d_int, "", False))
        else:
            console.print(f"intrinsic {name}: no d of {cfg.dims} reached "
                          f"{100 * result.threshold:.2f} %")
        if name in PAPER_D_INT90:  # a reference to read the result against, not a measurement
            summary["datasets"][name]["paper_d_int90"] = PAPER_D_INT90[name]
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "peft_intrinsic.json").write_text(json.dumps(summary, indent=2))
    return rows


INTRINSIC_BENCH = register_benchmark(Benchmark(
    name="peft/intrinsic_dimension",
    method=LABELS["subspace"],
    baselines=(LABELS["full"],),
    run=run_intrinsic,
    description="Intrinsic dimension (Li et al. 2018) of a 784-200-200-10 MLP on MNIST "
    "(mnist_10k) and Fashion-MNIST: training in random Fastfood subspaces of dimension d, "
    "d_int90 = smallest d reaching 90 % of full-training test accuracy (paper, MNIST: "
    "about 750).",
))
