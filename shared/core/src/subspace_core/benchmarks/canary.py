"""The core's benchmark: the pretrained canary against classical baselines on Fashion-MNIST.

It is the end-to-end check of the zoo path (verified checkpoint → protocol data → metrics)
and a sanity bar: a shipped model must beat a nearest-class-mean and a linear classifier
trained in the same process on the same data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from subspace_core.bench import (
    BenchContext,
    Benchmark,
    Measurement,
    median_time,
    register_benchmark,
)
from subspace_core.data import load_dataset
from subspace_core.eval import normalize_images
from subspace_core.protocols import FMNIST_MEAN, FMNIST_STD
from subspace_core.zoo import load

METHOD = "mlp_tiny (pretrained)"
NEAREST_MEAN = "nearest class mean"
LINEAR = "softmax regression"


def _scores(name: str, logits_fn, x, y, case: str, device: torch.device) -> list[Measurement]:
    with torch.no_grad():
        predictions = logits_fn(x).argmax(dim=1)
        timing = median_time(lambda: logits_fn(x), device, warmup=1, repeats=5)
    return [
        Measurement(case, name, "top1", 100.0 * (predictions == y).float().mean().item(), "%"),
        Measurement(case, name, "throughput", len(x) / timing["median"], "img/s"),
    ]


def _softmax_regression(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Linear:
    torch.manual_seed(0)
    linear = torch.nn.Linear(x[0].numel(), 10)
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-3)
    flat = x.flatten(1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(flat), generator=generator).split(256):
            loss = F.cross_entropy(linear(flat[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return linear


def run_canary(ctx: BenchContext) -> list[Measurement]:
    train = load_dataset("fashion_mnist", "train")
    test = load_dataset("fashion_mnist", "test")
    x_train = normalize_images(train.x, FMNIST_MEAN, FMNIST_STD)
    x_test = normalize_images(test.x, FMNIST_MEAN, FMNIST_STD).to(ctx.device)
    y_test = test.y.to(ctx.device)
    case = "fmnist_test"

    model = load("core/mlp_tiny.fmnist", device=ctx.device)
    rows = _scores(METHOD, model, x_test, y_test, case, ctx.device)

    means = torch.stack([x_train[train.y == c].flatten(1).mean(0) for c in range(10)])
    means = means.to(ctx.device)
    rows += _scores(NEAREST_MEAN, lambda x: -torch.cdist(x.flatten(1), means), x_test, y_test,
                   case, ctx.device)

    linear = _softmax_regression(x_train, train.y, epochs=1 if ctx.quick else 5).to(ctx.device)
    rows += _scores(LINEAR, lambda x: linear(x.flatten(1)), x_test, y_test, case, ctx.device)
    return rows


register_benchmark(
    Benchmark(
        name="core/canary",
        method=METHOD,
        baselines=(NEAREST_MEAN, LINEAR),
        run=run_canary,
        description="Pretrained canary vs nearest-class-mean and softmax regression on "
        "Fashion-MNIST test (top-1 %, inference images/s).",
    )
)
