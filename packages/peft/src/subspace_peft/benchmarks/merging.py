"""Benchmark ``peft/merging``: merging task-specific fine-tunes of one pretrained model.

Setup (a small-scale stand-in for the papers' eight CLIP ViT fine-tunes, on data available
offline):

* **pretrained model**: a small conv net trunk (two 3x3 conv + max-pool blocks with 16 and
  32 channels, then a 128-wide linear layer, ReLU; 206k parameters) trained with a temporary
  head on the first 50,000 Fashion-MNIST training images (upright, 10 classes);
* **tasks** (10 classes each, 28x28 grey images in [0, 1]): ``mnist`` (``mnist_10k``),
  ``digits`` (scikit-learn's 8x8 digits resized to 20x20 and centred in 28x28 like MNIST),
  ``fashion_rot90`` (Fashion-MNIST rotated by 90°) and ``fashion_inv`` (Fashion-MNIST with
  inverted grey levels); the Fashion tasks train on the last 10,000 training images (not
  seen in pretraining) and test on the test split;
* **heads**: as with CLIP's zero-shot heads in the papers, each task's head is fitted once on
  the frozen pretrained trunk (a linear probe) and then frozen; fine-tuning trains the trunk
  only, and heads are never merged. The heads are cosine classifiers (``s · n(f) n(W)ᵀ``, CLIP's
  form): with an unnormalised linear head the entropy objective of AdaMerging / Concrete
  could lower the entropy by merely inflating the features. "pretrained" is the pretrained
  trunk with those heads;
* **fine-tunes**: the trunk trained by Adam (lr 1e-4) on each task;
* **merging** of the ``T = 4`` trunks (all trunk parameters):

  - task arithmetic, ``λ`` picked on a labelled validation split (500 images) held out from
    each task's training data (grid 0.1 … 1.0, best average accuracy);
  - TIES-merging (density 0.2, ``λ`` picked on the same grid);
  - AdaMerging task-wise and layer-wise (the paper's settings: init 0.3, coefficients
    clamped to [0, 1], Adam lr 1e-3, 500 steps; batches of 32 unlabeled test inputs per task);
  - Concrete TA (``λ`` = task arithmetic's choice) and Concrete AM (layer-wise): masks learned
    on the unlabeled test inputs (:mod:`subspace_peft.merging.concrete`; temperature 0.5,
    initial logits 0, Adam lr 1e-2, 300 mask steps, one inner step of lr 0.1 for AM),
    binarised by a Bernoulli draw and rescaled, then (AM) AdaMerging through the mask;
  - a control for the learned mask: task arithmetic through a *random* shared mask with
    Concrete TA's kept fraction and the same rescaling (DARE-like).

Test-time adaptation on the unlabeled test inputs is the papers' protocol for AdaMerging and
the Concrete methods; no label of the test sets is used by any merging method.

Reported per task and on average: test accuracy of each method, the individual fine-tunes
and the pretrained model; normalised accuracy (merged / individual, averaged); for the
masks the kept fraction of task-vector entries; seconds per method. Writes
``peft_merging.json`` (accuracies, chosen ``λ``, learned coefficients, entropies, timings).

At this scale the entropy is a biased proxy: on the digits task (360 test images) it keeps
falling as the coefficients grow past the accuracy optimum, so AdaMerging can trade that
task away; the numbers are reported as measured.

``quick`` (target < 90 s on two busy cores): 800 pretraining and 300 fine-tuning steps of 64
images, 1,000 test inputs per task, 150 AdaMerging and 100 mask steps. Full (< 10 min):
2,000 / 600 steps of 128 images, all test inputs, 500 AdaMerging and 300 mask steps.
"""


from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console
from subspace_peft.merging import (
    AdaMergingConfig,
    ConcreteConfig,
    TaskVectorMerger,
    adamerging,
    concrete_merging,
    keep_fraction,
    load_merged,
    rescale_mask,
    task_arithmetic,
    task_vectors,
    ties_merging,
)

__all__ = ["FULL", "LABELS", "MERGING_BENCH", "QUICK", "TASKS", "CosineHead",
           "MergingBenchConfig", "MergingSetup", "load_task", "merge_all", "prepare_merging",
           "run_merging"]

LABELS = {
    "pretrained": "pretrained (probe heads)",
    "individual": "individual fine-tunes",
    "ta": "task arithmetic",
    "ties": "TIES-merging",
    "am_task": "AdaMerging (task-wise)",
    "am_layer": "AdaMerging (layer-wise)",
    "concrete_ta": "Concrete TA",
    "random_mask": "random mask, TA (DARE-like)",
    "concrete_am": "Concrete AM (layer-wise)",
}
TASKS = ("mnist", "digits", "fashion_rot90", "fashion_inv")
CASE = "MLP trunk, 4 tasks"
_PRETRAIN_IMAGES = 50_000  # Fashion-MNIST train images used for pretraining


def _adamerging_default() -> AdaMergingConfig:
    return AdaMergingConfig(steps=500, lr=1e-3, batch_size=32)


def _concrete_ta_default() -> ConcreteConfig:
    return ConcreteConfig(mode="task_arithmetic", steps=300, lr=1e-2, batch_size=32)


def _concrete_am_default() -> ConcreteConfig:
    return ConcreteConfig(mode="adamerging", steps=300, lr=1e-2, batch_size=32, inner_lr=0.1,
                          adamerging=_adamerging_default())


@dataclass(frozen=True)
class MergingBenchConfig:
    """Sizes and options of one run of :func:`run_merging` (see the module doc)."""

    tasks: tuple[str, ...] = TASKS
    arch: str = "cnn"
    hidden: tuple[int, ...] = (16, 32, 128)
    pretrain_steps: int = 2000
    probe_steps: int = 500
    finetune_steps: int = 600
    batch_size: int = 128
    lr_pretrain: float = 1e-3
    lr_probe: float = 1e-2
    lr_finetune: float = 1e-4
    val_per_task: int = 500
    test_per_task: int | None = None
    lambdas: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    ties_density: float = 0.2
    adamerging: AdaMergingConfig = field(default_factory=_adamerging_default)
    concrete_ta: ConcreteConfig = field(default_factory=_concrete_ta_default)
    concrete_am: ConcreteConfig = field(default_factory=_concrete_am_default)
    seed: int = 0


FULL = MergingBenchConfig()
QUICK = replace(
    FULL, pretrain_steps=800, probe_steps=200, finetune_steps=300, batch_size=64,
    test_per_task=1000,
    adamerging=replace(FULL.adamerging, steps=150),
    concrete_ta=replace(FULL.concrete_ta, steps=100),
    concrete_am=replace(FULL.concrete_am, steps=100,
                        adamerging=replace(FULL.adamerging, steps=150)))


# ------------------------------------------------------------------------------ data
def _fashion(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from subspace_core.data import load_dataset

    data = load_dataset("fashion_mnist", split)
    return torch.as_tensor(data.x).float() / 255.0, torch.as_tensor(data.y).long()


def load_task(name: str) -> dict[str, torch.Tensor]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` of a task: images ``[N, 28, 28]`` in
    [0, 1], labels ``[N]`` in 0..9. ``"pretrain"`` is the pretraining set (no test split)."""
    from subspace_core.data import load_dataset

    if name in ("pretrain", "fashion_rot90", "fashion_inv"):
        xtr, ytr = _fashion("train")
        if name == "pretrain":
            return {"x_train": xtr[:_PRETRAIN_IMAGES], "y_train": ytr[:_PRETRAIN_IMAGES]}
        xte, yte = _fashion("test")
        xtr, ytr = xtr[_PRETRAIN_IMAGES:], ytr[_PRETRAIN_IMAGES:]
        if name == "fashion_rot90":
            xtr, xte = xtr.rot90(1, (1, 2)), xte.rot90(1, (1, 2))
        else:
            xtr, xte = 1.0 - xtr, 1.0 - xte
        return {"x_train": xtr.contiguous(), "y_train": ytr, "x_test": xte.contiguous(),
                "y_test": yte}
    if name == "mnist":
        out = {}
        for split in ("train", "test"):
            data = load_dataset("mnist_10k", split)
            out[f"x_{split}"] = torch.as_tensor(data.x).float() / 255.0
            out[f"y_{split}"] = torch.as_tensor(data.y).long()
        return out
    if name == "digits":
        out = {}
        for split in ("train", "test"):
            data = load_dataset("digits", split)
            x = torch.as_tensor(data.x).float()[:, None] / 16.0  # [N, 1, 8, 8]
            # MNIST digits fill a 20x20 box centred in 28x28: do the same.
            x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False),
                      (4, 4, 4, 4))
            out[f"x_{split}"] = x[:, 0].clamp(0, 1)
            out[f"y_{split}"] = torch.as_tensor(data.y).long()
        return out
    raise KeyError(f"task: expected 'pretrain' or one of {TASKS}, got {name!r}")


# ----------------------------------------------------------------------------- models
def _trunk(arch: str, hidden: tuple[int, ...], seed: int) -> nn.Sequential:
    """``"mlp"``: ``784-hidden`` with ReLU; ``"cnn"``: two 3x3 conv (``hidden[0]``,
    ``hidden[1]`` channels) + 2x2 max-pool blocks and a ``hidden[2]``-wide linear layer."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    if arch == "mlp":
        width = 784
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
    elif arch == "cnn":
        c1, c2, w = hidden
        layers += [nn.Unflatten(1, (1, 28, 28)),
                   nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                   nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                   nn.Flatten(), nn.Linear(c2 * 49, w), nn.ReLU()]
    else:
        raise ValueError(f"arch: expected 'mlp' or 'cnn', got {arch!r}")
    return nn.Sequential(*layers)


class CosineHead(nn.Module):
    """``logits = s · n(f) n(W)ᵀ`` (``n``: L2 normalisation), CLIP's zero-shot head form.

    The logit scale is bounded by ``s``, so minimising prediction entropy cannot be done by
    merely growing the features' norm (with an unnormalised linear head it can, and the
    entropy objective of AdaMerging / Concrete then drifts to over-confident, wrong merges).
    """

    def __init__(self, width: int, classes: int, log_scale: float = 2.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, width) / width ** 0.5)
        self.log_scale = nn.Parameter(torch.tensor(float(log_scale)))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * F.normalize(f, dim=-1) @ F.normalize(self.weight, dim=-1).T


def _train(params: list[nn.Parameter], forward: Callable[[torch.Tensor], torch.Tensor],
           x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, batch_size: int,
           seed: int) -> None:
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen).to(x.device)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x[idx]), y[idx]).backward()
        opt.step()


@torch.no_grad()
def _accuracy(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> float:
    correct = sum(int((forward(x[i:i + 1024]).argmax(1) == y[i:i + 1024]).sum())
                  for i in range(0, len(x), 1024))
    return correct / len(x)


@dataclass
class MergingSetup:
    """Everything the merging methods start from (made by :func:`prepare_merging`).

    Attributes:
        data: ``{task: {"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"}}``.
        trunk: the pretrained trunk (frozen); heads: ``{task: frozen head}``.
        finetuned: the ``T`` fine-tuned trunks; vectors: their task vectors.
        seconds: time of pretraining and fine-tuning.
    """

    cfg: MergingBenchConfig
    data: dict[str, dict[str, torch.Tensor]]
    trunk: nn.Module
    heads: dict[str, nn.Module]
    finetuned: list[nn.Module]
    vectors: list[dict[str, torch.Tensor]]
    seconds: dict[str, float]

    def accuracies(self, model: nn.Module, split: str = "test",
                   tasks: tuple[str, ...] | None = None) -> dict[str, float]:
        """Accuracy of trunk ``model`` + each task's head on the ``split`` of ``tasks`` (all
        by default)."""
        return {t: _accuracy(lambda x, t=t: self.heads[t](model(x)), self.data[t][f"x_{split}"],
                             self.data[t][f"y_{split}"]) for t in (tasks or self.data)}

    def task_forward(self, model: Callable, task: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[task](model(x))

    def unlabeled(self) -> dict[str, torch.Tensor]:
        return {t: d["x_test"] for t, d in self.data.items()}


def prepare_merging(cfg: MergingBenchConfig, device: torch.device) -> MergingSetup:
    """Load the tasks, pretrain the trunk, fit the heads, fine-tune one trunk per task."""
    seconds: dict[str, float] = {}
    gen = torch.Generator().manual_seed(cfg.seed)
    data: dict[str, dict[str, torch.Tensor]] = {}
    for name in cfg.tasks:
        d = load_task(name)
        perm = torch.randperm(len(d["x_train"]), generator=gen)
        val, tr = perm[:cfg.val_per_task], perm[cfg.val_per_task:]
        n_test = len(d["x_test"]) if cfg.test_per_task is None else cfg.test_per_task
        test = torch.randperm(len(d["x_test"]), generator=gen)[:n_test]
        split = {"x_train": d["x_train"][tr], "y_train": d["y_train"][tr],
                 "x_val": d["x_train"][val], "y_val": d["y_train"][val],
                 "x_test": d["x_test"][test], "y_test": d["y_test"][test]}
        data[name] = {k: v.to(device) for k, v in split.items()}

    t0 = time.perf_counter()
    pre = load_task("pretrain")
    trunk = _trunk(cfg.arch, cfg.hidden, cfg.seed).to(device)
    width = cfg.hidden[-1]
    torch.manual_seed(cfg.seed + 1)
    head0 = CosineHead(width, 10).to(device)
    _train([*trunk.parameters(), *head0.parameters()], lambda x: head0(trunk(x)),
           pre["x_train"].to(device), pre["y_train"].to(device), cfg.pretrain_steps,
           cfg.lr_pretrain, cfg.batch_size, cfg.seed)
    trunk.requires_grad_(False)
    seconds["pretrain"] = time.perf_counter() - t0

    # Heads: probes on the frozen pretrained trunk, then frozen (never merged).
    t0 = time.perf_counter()
    heads: dict[str, nn.Module] = {}
    for i, name in enumerate(cfg.tasks):
        torch.manual_seed(cfg.seed + 10 + i)
        head = CosineHead(width, 10).to(device)
        with torch.no_grad():
            x = data[name]["x_train"]
            feats = torch.cat([trunk(x[i:i + 1024]) for i in range(0, len(x), 1024)])
        _train(list(head.parameters()), head, feats, data[name]["y_train"], cfg.probe_steps,
               cfg.lr_probe, cfg.batch_size, cfg.seed + i)
        heads[name] = head.requires_grad_(False)
    seconds["probe"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    finetuned: list[nn.Module] = []
    for i, name in enumerate(cfg.tasks):
        ft = load_merged(trunk, {}).requires_grad_(True)
        _train(list(ft.parameters()), lambda x, ft=ft, name=name: heads[name](ft(x)),
               data[name]["x_train"], data[name]["y_train"], cfg.finetune_steps,
               cfg.lr_finetune, cfg.batch_size, cfg.seed + 100 + i)
        finetuned.append(ft.requires_grad_(False))
    seconds["finetune"] = time.perf_counter() - t0
    return MergingSetup(cfg, data, trunk, heads, finetuned, task_vectors(trunk, finetuned),
                        seconds)


# ------------------------------------------------------------------------------ run
def _mean(acc: dict[str, float]) -> float:
    return sum(acc.values()) / len(acc)


def merge_all(setup: MergingSetup, methods: tuple[str, ...] = tuple(LABELS)
              ) -> tuple[dict[str, dict[str, float]], dict[str, dict], dict[str, float]]:
    """Test accuracies ``{method key: {task: acc}}``, per-method info and seconds of the
    ``methods`` (keys of :data:`LABELS`) on a prepared setup."""
    cfg, trunk, vectors = setup.cfg, setup.trunk, setup.vectors
    unlabeled = setup.unlabeled()
    results: dict[str, dict[str, float]] = {}
    info: dict[str, dict] = {}
    seconds: dict[str, float] = {}

    def pick_lambda(merge: Callable[[float], dict[str, torch.Tensor]]) -> float:
        scores = {lam: _mean(setup.accuracies(load_merged(trunk, merge(lam)), "val"))
                  for lam in cfg.lambdas}
        return max(scores, key=scores.get)

    lam_ta = None
    for key in methods:
        t0 = time.perf_counter()
        if key == "pretrained":
            results[key] = setup.accuracies(trunk)
        elif key == "individual":
            results[key] = {t: setup.accuracies(ft, tasks=(t,))[t]
                            for t, ft in zip(cfg.tasks, setup.finetuned, strict=True)}
        elif key == "ta" or (key == "concrete_ta" and lam_ta is None):
            lam_ta = pick_lambda(lambda lam: task_arithmetic(trunk, vectors, lam))
            info["ta"] = {"lambda": lam_ta}
            if key == "ta":
                results[key] = setup.accuracies(load_merged(
                    trunk, task_arithmetic(trunk, vectors, lam_ta)))
        if key == "ties":
            lam = pick_lambda(lambda lam: ties_merging(trunk, vectors, cfg.ties_density, lam))
            results[key] = setup.accuracies(load_merged(
                trunk, ties_merging(trunk, vectors, cfg.ties_density, lam)))
            info[key] = {"lambda": lam}
        elif key in ("am_task", "am_layer"):
            merger = TaskVectorMerger(trunk, vectors, granularity=key[3:], init=0.3)
            hist = adamerging(merger, unlabeled, setup.task_forward, cfg.adamerging)
            results[key] = setup.accuracies(merger.merge_and_unload())
            info[key] = {"entropy": [hist[0], hist[-1]] if hist else None,
                         "coefficients": merger.coefficient_matrix().detach().cpu().tolist()}
        elif key in ("concrete_ta", "concrete_am"):
            ta = key == "concrete_ta"
            merger = TaskVectorMerger(trunk, vectors, granularity="task" if ta else "layer",
                                      init=lam_ta if ta else 0.3,
                                      clamp=None if ta else (0.0, 1.0))
            res = concrete_merging(merger, unlabeled, setup.task_forward,
                                   cfg.concrete_ta if ta else cfg.concrete_am)
            results[key] = setup.accuracies(load_merged(trunk, res.merged))
            info[key] = {"keep_fraction": res.keep_fraction,
                         "mask_entropy": [res.mask_history[0], res.mask_history[-1]]
                         if res.mask_history else None,
                         "coefficients": res.coefficients.cpu().tolist()}
        elif key == "random_mask":
            # Control: task arithmetic through a *random* shared mask with Concrete TA's kept
            # fraction and the same rescaling, i.e. what the learned mask has to beat.
            if "concrete_ta" not in info:
                raise ValueError("methods: 'random_mask' needs 'concrete_ta' before it")
            keep = info["concrete_ta"]["keep_fraction"]
            gen = torch.Generator().manual_seed(cfg.seed + 7)
            mask = rescale_mask({n: (torch.rand(t.shape, generator=gen) < keep).float().to(t)
                                 for n, t in vectors[0].items()})
            results[key] = setup.accuracies(load_merged(
                trunk, task_arithmetic(trunk, vectors, lam_ta, mask=mask)))
            info[key] = {"keep_fraction": keep_fraction(mask), "lambda": lam_ta}
        elif key not in LABELS:
            raise KeyError(f"methods: expected keys of {list(LABELS)}, got {key!r}")
        seconds[key] = time.perf_counter() - t0
    return results, info, seconds


def run_merging(ctx: BenchContext, cfg: MergingBenchConfig | None = None) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``)."""
    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    console = stderr_console()
    t_start = time.perf_counter()
    setup = prepare_merging(cfg, ctx.device)
    results, info, seconds = merge_all(setup)
    seconds = {**setup.seconds, **seconds, "total": time.perf_counter() - t_start}
    individual = results["individual"]

    rows: list[Measurement] = []
    for key, acc in results.items():
        label = LABELS[key]
        rows.append(Measurement(CASE, label, "avg_accuracy", 100 * _mean(acc), "%", True))
        for t, a in acc.items():
            rows.append(Measurement(CASE, label, f"accuracy_{t}", 100 * a, "%", True))
        if key not in ("pretrained", "individual"):
            # Normalised accuracy (AdaMerging paper): merged / individual, averaged.
            norm = _mean({t: acc[t] / max(individual[t], 1e-12) for t in acc})
            rows.append(Measurement(CASE, label, "normalized_accuracy", 100 * norm, "%", True))
            rows.append(Measurement(CASE, label, "seconds", seconds[key], "s", False))
        if key in ("concrete_ta", "concrete_am", "random_mask"):
            rows.append(Measurement(CASE, label, "kept_fraction",
                                    100 * info[key]["keep_fraction"], "%", False))
        console.print(f"merging: {label:<26} avg {100 * _mean(acc):6.2f} %  " + "  ".join(
            f"{t} {100 * a:5.1f}" for t, a in acc.items()))
    console.print(f"merging: λ_TA={info['ta']['lambda']} λ_TIES={info['ties']['lambda']}, "
                  f"kept by Concrete TA / AM {100 * info['concrete_ta']['keep_fraction']:.1f}"
                  f" / {100 * info['concrete_am']['keep_fraction']:.1f} %; "
                  f"{seconds['total']:.0f} s")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"config": asdict(cfg), "quick": ctx.quick, "accuracy": results,
               "info": info, "seconds": seconds}
    (ctx.out_dir / "peft_merging.json").write_text(json.dumps(summary, indent=2))
    return rows


MERGING_BENCH = register_benchmark(Benchmark(
    name="peft/merging",
    method=LABELS["concrete_am"],
    baselines=tuple(LABELS[k] for k in LABELS if k != "concrete_am"),
    run=run_merging,
    description="Merging 4 fine-tunes (MNIST, sklearn digits, rotated and inverted "
    "Fashion-MNIST) of an MLP pretrained on Fashion-MNIST: task arithmetic, TIES, AdaMerging "
    "(task/layer-wise), Concrete TA and Concrete AM (Tang et al. 2023); average test "
    "accuracy, with the individual fine-tunes and the pretrained model as references.",
))
