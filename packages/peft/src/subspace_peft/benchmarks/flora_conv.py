"""Benchmark ``peft/flora_conv``: FLoRA vs LoRA (Hugging Face ``peft``) on the conv layers of
a CNN transferred from MNIST to Fashion-MNIST.

Why this setting: FLoRA (Si et al. 2024, arXiv:2405.14739) keeps a conv kernel's N-d
structure in its update (:mod:`subspace_peft.adapters.flora`), while ``peft``'s conv LoRA
factors the ``[out, in·k·k]`` unfolding of the kernel. The comparison only means something
where adapting the conv weights matters, i.e. where the pretrained features are not already
good for the new task: a CNN pretrained on handwritten digits and moved to clothing images.

Setup (every number fixed by :class:`FLoRAConvConfig`):

* **network** (:class:`ConvNet`): ``conv1 .. convN`` 3x3 convolutions (He init, padding 1,
  bias, ReLU; default channels 32, 32, 64, 64), a 2x2 max-pool after each of the first two (28 -> 14
  -> 7 pixels), global average pooling and a linear classifier ``head``;
* **pretraining**: the net, seeded, trained by Adam with a cosine schedule on ``mnist_10k``
  (9,000 training images; its MNIST test accuracy is logged as a sanity check);
* **transfer** to ``fashion_mnist``: the head is replaced by a fresh, seeded 10-way linear
  layer (the same initial head for every method); a held-out validation part (``val_size``
  images of a seeded permutation of the training split) chooses each method's learning rate
  among its sweep (quick mode: one fixed rate per method, no choice); every run uses the same
  number of steps, the same minibatches (same generator seed), the same Adam optimiser and
  cosine schedule; the head is trained in every method:

  - ``head only (linear probe)``: everything but the head frozen;
  - ``full fine-tuning``: every parameter trained;
  - ``LoRA (HF peft)``: :func:`peft.get_peft_model` with ``LoraConfig(r, lora_alpha=r,
    target_modules=[conv names], modules_to_save=["head"])`` on the plain ``nn.Module``
    (peft's ``lora.Conv2d``: ``lora_A`` a ``k x k`` conv ``in -> r`` and ``lora_B`` a 1x1 conv
    ``r -> out``, i.e. ``ΔW = B A`` on the flattened ``[out, in·k·k]`` kernel, ``r (out +
    in·k·k)`` scalars per conv; ``lora_alpha = r`` makes the scaling 1, FLoRA's default scale);
  - ``FLoRA``: :class:`~subspace_peft.adapters.flora.FLoRAModel` on the same convs
    (``FLoRAConfig(rank=r, kernel_rank, scale, modules_to_save=("head",))``; core
    ``[min(r, out), min(r, in), 3, 3]`` by default, ``∏ r_k + Σ n_k r_k`` scalars per conv).

  The first entries of ``flora_ranks`` / ``lora_ranks`` are reported as ``FLoRA`` and
  ``LoRA (HF peft)`` (the method and its baseline); further ranks as ``FLoRA r=<r>`` /
  ``LoRA r=<r> (HF peft)``. With the default channels, LoRA r=8 trains 10,824 conv scalars
  and r=4 5,412, FLoRA r=8 4,433 and r=12 7,909 (plus the 650 of the head).

Measurements per method (case :data:`CASE`): ``test_accuracy`` (%, Fashion-MNIST test split),
``trainable_params`` (checked against the analytic count, :func:`analytic_trainable`) and
``train_seconds`` (wall time of the chosen run's training steps, evaluation excluded; peft's
conv LoRA runs two extra convolutions per layer, FLoRA composes ``ΔW`` and runs one).
Writes ``peft_flora_conv.json`` (config, every learning rate's validation accuracy, the
chosen rates, pretraining accuracy and timings).

Budgets (one thread, shared CPU): ``quick`` 300 pretraining and 250 transfer steps of 64
images, one rate per method, 2,000 test images (about a minute); full 1,500 pretraining and
600 transfer steps (0.7 epoch), three rates per method (4,000 validation images), LoRA at
r = 8 and 4, FLoRA at r = 8 and 12, all 10,000 test images (target under 10 minutes).
Importing ``peft`` (and so ``transformers``) takes several seconds of that.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark
from subspace_core.console import stderr_console

__all__ = [
    "CASE",
    "FLORA_CONV_BENCH",
    "FULL",
    "LABELS",
    "METHODS",
    "QUICK",
    "AdaptResult",
    "ConvNet",
    "FLoRAConvConfig",
    "adapt",
    "analytic_trainable",
    "build_method",
    "load_flora_conv_data",
    "method_label",
    "pretrain",
    "run_flora_conv",
    "with_new_head",
]

CASE = "MNIST -> Fashion-MNIST CNN"
#: The methods, in the order they run (the keys of :data:`LABELS` and of the config's lrs).
METHODS = ("head", "full", "lora", "flora")
LABELS = {"head": "head only (linear probe)", "full": "full fine-tuning",
          "lora": "LoRA (HF peft)", "flora": "FLoRA"}


def method_label(method: str, rank: int | None = None, primary: bool = True) -> str:
    """Reported name: :data:`LABELS` for the primary rank, ``"FLoRA r=12"`` /
    ``"LoRA r=4 (HF peft)"`` for further ranks."""
    if method not in LABELS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if primary or method in ("head", "full"):
        return LABELS[method]
    return f"FLoRA r={rank}" if method == "flora" else f"LoRA r={rank} (HF peft)"


# ----------------------------------------------------------------------------- config
def _check_int(name: str, value: object, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}{' or None' if allow_none else ''}, "
                         f"got {value!r}")


def _check_tuple(name: str, value: object, kind: type, positive: bool = True) -> None:
    ok = isinstance(value, tuple) and len(value) > 0 and all(
        isinstance(v, kind) and not isinstance(v, bool) and (not positive or v > 0)
        and math.isfinite(v) for v in value)
    if not ok:
        raise ValueError(f"{name}: expected a non-empty tuple of positive {kind.__name__}s, "
                         f"got {value!r}")


@dataclass(frozen=True)
class FLoRAConvConfig:
    """Sizes and options of one run of :func:`run_flora_conv` (see the module doc).

    Attributes:
        channels: output channels of ``conv1 .. convN`` (input: 1 grey channel).
        pools: number of leading convs followed by a 2x2 max-pool.
        pretrain_steps / lr_pretrain: MNIST pretraining (Adam, cosine schedule).
        pretrain_size: MNIST training images used (None: all 9,000).
        steps / batch_size: transfer steps and minibatch size, the same for every method.
        lrs_head, lrs_full, lrs_lora, lrs_flora: each method's learning-rate sweep (the
            rate with the best validation accuracy is kept; one entry: no validation).
        lora_ranks / flora_ranks: ranks run (the first of each is the reported
            ``LoRA (HF peft)`` / ``FLoRA``).
        kernel_rank / flora_scale: FLoRA's spatial core rank (None: the kernel size) and
            scale ``s``.
        val_size: Fashion-MNIST training images held out for the learning-rate choice.
        train_size: Fashion-MNIST training images trained on (None: all not held out).
        test_size: test images evaluated (None: all 10,000; else a seeded subset).
        seed: seeds the nets, the new head, the split and the minibatches.
    """

    channels: tuple[int, ...] = (32, 32, 64, 64)
    pools: int = 2
    pretrain_steps: int = 1500
    lr_pretrain: float = 3e-3
    pretrain_size: int | None = None
    steps: int = 600
    batch_size: int = 64
    lrs_head: tuple[float, ...] = (1e-1, 3e-1, 1.0)
    lrs_full: tuple[float, ...] = (3e-3, 1e-2, 3e-2)
    lrs_lora: tuple[float, ...] = (1e-2, 2e-2, 4e-2)
    lrs_flora: tuple[float, ...] = (1e-2, 2e-2, 4e-2)
    lora_ranks: tuple[int, ...] = (8, 4)
    flora_ranks: tuple[int, ...] = (8, 12)
    kernel_rank: int | None = None
    flora_scale: float = 1.0
    val_size: int = 4000
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_tuple("channels", self.channels, int)
        for name in ("pools", "seed"):
            _check_int(name, getattr(self, name), 0)
        for name in ("pretrain_steps", "steps", "batch_size", "val_size"):
            _check_int(name, getattr(self, name), 1)
        for name in ("pretrain_size", "train_size", "test_size"):
            _check_int(name, getattr(self, name), 1, allow_none=True)
        _check_int("kernel_rank", self.kernel_rank, 1, allow_none=True)
        for name in ("lora_ranks", "flora_ranks"):
            _check_tuple(name, getattr(self, name), int)
            if len(set(getattr(self, name))) != len(getattr(self, name)):
                raise ValueError(f"{name}: expected distinct ranks, got {getattr(self, name)}")
        for method in METHODS:
            _check_tuple(f"lrs_{method}", getattr(self, f"lrs_{method}"), float)
        for name in ("lr_pretrain", "flora_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: expected a finite float > 0, got {value!r}")
        # 28x28 images: each pool halves the side (floor), 28 -> 14 -> 7 -> 3 -> 1.
        if self.pools > 4:
            raise ValueError(f"pools: expected at most 4 (28x28 images), got {self.pools}")

    def lrs(self, method: str) -> tuple[float, ...]:
        """The learning-rate sweep of ``method`` (one of :data:`METHODS`)."""
        if method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
        return getattr(self, f"lrs_{method}")


FULL = FLoRAConvConfig()
# Quick: one fixed rate per method from 250-step probes (rates 3e-3 ... 1e-1; every method
# preferred the higher rates at this short budget). LoRA and FLoRA share 2e-2: at 3e-2 LoRA's
# validation accuracy swung by 8 points between two seeds (66 / 74 %), at 2e-2 both adapters
# were within 2.5 points over seeds. The full sweeps bracket the rates a first 600-step sweep
# chose (head 0.3, full 1e-2, LoRA and FLoRA r=8 3e-2, FLoRA r=12 1e-2; 0.1 collapsed both
# adapters to chance).
QUICK = replace(FULL, pretrain_steps=300, steps=250, lrs_head=(1e-1,), lrs_full=(1e-2,),
                lrs_lora=(2e-2,), lrs_flora=(2e-2,), lora_ranks=(8,), flora_ranks=(8,),
                test_size=2000)


# ----------------------------------------------------------------------------- model
class ConvNet(nn.Module):
    """``conv1 .. convN`` (3x3, padding 1, ReLU; 2x2 max-pool after the first ``pools``),
    global average pooling, linear ``head``; convs He-initialised (under the global RNG).

    Input ``[B, 1, 28, 28]`` (or ``[B, 28, 28]``), output logits ``[B, classes]``.
    """

    def __init__(self, channels: Sequence[int] = (32, 32, 64, 64), pools: int = 2,
                 classes: int = 10) -> None:
        super().__init__()
        self.depth = len(channels)
        self.pools = pools
        widths = (1, *channels)
        for i in range(self.depth):
            conv = nn.Conv2d(widths[i], widths[i + 1], 3, padding=1)
            # He init (fan_in, ReLU), zero bias: torch's default conv init (a = √5) shrinks
            # the activations layer by layer, and behind global average pooling the net then
            # trains several times slower (MNIST 79 % vs 94 % after 300 steps).
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            setattr(self, f"conv{i + 1}", conv)
        self.head = nn.Linear(widths[-1], classes)

    def conv_names(self) -> list[str]:
        """``["conv1", ..., "convN"]``."""
        return [f"conv{i + 1}" for i in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x[:, None]
        for i, name in enumerate(self.conv_names()):
            x = F.relu(getattr(self, name)(x))
            if i < self.pools:
                x = F.max_pool2d(x, 2)
        return self.head(x.mean(dim=(2, 3)))


def with_new_head(net: ConvNet, seed: int, classes: int = 10) -> ConvNet:
    """A deep copy of ``net`` with a freshly initialised ``head`` (``nn.Linear`` default
    init drawn under ``seed``; the global RNG is left as it was), every parameter trainable."""
    out = copy.deepcopy(net)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(net.head.in_features, classes)
    out.head = head.to(device=net.head.weight.device, dtype=net.head.weight.dtype)
    return out.requires_grad_(True)


def analytic_trainable(method: str, channels: Sequence[int], rank: int | None = None,
                       kernel_rank: int | None = None, classes: int = 10,
                       kernel: int = 3) -> int:
    """Trainable scalars of ``method`` on a :class:`ConvNet` of ``channels`` (head included).

    * head: ``c_N · classes + classes``;
    * full: every conv ``out · in · k² + out`` plus the head;
    * lora: ``Σ r (out + in · k²)`` over the convs plus the head (peft: no LoRA bias);
    * flora: ``Σ (∏ r_k + Σ n_k r_k)`` over the convs with ``r = (min(r, out), min(r, in),
      s, s)``, ``s = k`` or ``min(kernel_rank, k)``, plus the head.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method in ("lora", "flora"):
        _check_int("rank", rank, 1)
    widths = (1, *channels)
    head = widths[-1] * classes + classes
    total = head
    for c_in, c_out in itertools.pairwise(widths):
        if method == "full":
            total += c_out * c_in * kernel * kernel + c_out
        elif method == "lora":
            total += rank * (c_out + c_in * kernel * kernel)
        elif method == "flora":
            s = kernel if kernel_rank is None else min(kernel_rank, kernel)
            r0, r1 = min(rank, c_out), min(rank, c_in)
            total += r0 * r1 * s * s + c_out * r0 + c_in * r1 + 2 * kernel * s
    return total


def build_method(method: str, pretrained: ConvNet, cfg: FLoRAConvConfig,
                 rank: int | None = None) -> nn.Module:
    """The model ``method`` trains, before any step: the pretrained net with the new head
    (:func:`with_new_head`, seed ``cfg.seed + 1``) and the method's trainable set (adapter
    factors drawn under seed ``cfg.seed + 3``; the global RNG is left as it was).

    ``pretrained`` is not modified. ``rank`` is required for ``"lora"`` / ``"flora"``.
    Returns a module mapping ``[B, 1, 28, 28]`` to logits ``[B, 10]``; its trainable tensors
    are those with ``requires_grad``.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method in ("lora", "flora"):
        _check_int("rank", rank, 1)
    net = with_new_head(pretrained, cfg.seed + 1)
    convs = net.conv_names()
    if method == "head":
        net.requires_grad_(False)
        net.head.requires_grad_(True)
        return net
    if method == "full":
        return net
    # Both adapters draw their random factors from the global RNG (FLoRA's on the weight's
    # device): seed it (seed + 3) so that a run does not depend on what ran before it, and
    # restore it afterwards.
    device = pretrained.head.weight.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 3)
        if method == "lora":
            from peft import LoraConfig, get_peft_model

            # lora_alpha = r: scaling alpha / r = 1, FLoRA's default scale; no dropout
            # (FLoRA's conv layer has none either).
            config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0,
                                target_modules=convs, modules_to_save=["head"], bias="none")
            return get_peft_model(net, config)
        from subspace_peft.adapters.flora import FLoRAConfig, FLoRAModel

        return FLoRAModel(net, FLoRAConfig(target_modules="|".join(convs), rank=rank,
                                           kernel_rank=cfg.kernel_rank, scale=cfg.flora_scale,
                                           modules_to_save=("head",)))


# ----------------------------------------------------------------------------- data
def load_flora_conv_data(cfg: FLoRAConvConfig, device: torch.device
                         ) -> dict[str, torch.Tensor]:
    """Images ``[N, 1, 28, 28]`` in [0, 1] and labels ``[N]``: ``"pre_x"/"pre_y"`` (MNIST
    pretraining), ``"pre_test_x"/"pre_test_y"`` (MNIST test), ``"train_x"/"train_y"``,
    ``"val_x"/"val_y"`` (held out from the Fashion-MNIST training split by a seeded
    permutation) and ``"test_x"/"test_y"`` (Fashion-MNIST test, all or a seeded subset)."""
    # The loaders of peft/merging (uint8 -> [0, 1] float), not a second copy of them.
    from subspace_peft.benchmarks.merging import _fashion, load_task

    gen = torch.Generator().manual_seed(cfg.seed)
    mnist = load_task("mnist")
    pre_n = len(mnist["x_train"]) if cfg.pretrain_size is None else min(
        cfg.pretrain_size, len(mnist["x_train"]))
    xtr, ytr = _fashion("train")
    if cfg.val_size >= len(xtr):
        raise ValueError(f"val_size: expected < {len(xtr)} (Fashion-MNIST training images), "
                         f"got {cfg.val_size}")
    perm = torch.randperm(len(xtr), generator=gen)
    val, tr = perm[:cfg.val_size], perm[cfg.val_size:]
    if cfg.train_size is not None:
        tr = tr[:cfg.train_size]
    xte, yte = _fashion("test")
    if cfg.test_size is not None:
        keep = torch.randperm(len(xte), generator=gen)[:cfg.test_size]
        xte, yte = xte[keep], yte[keep]
    out = {"pre_x": mnist["x_train"][:pre_n], "pre_y": mnist["y_train"][:pre_n],
           "pre_test_x": mnist["x_test"], "pre_test_y": mnist["y_test"],
           "train_x": xtr[tr], "train_y": ytr[tr], "val_x": xtr[val], "val_y": ytr[val],
           "test_x": xte, "test_y": yte}
    return {k: (v[:, None] if k.endswith("_x") else v).contiguous().to(device)
            for k, v in out.items()}


# ----------------------------------------------------------------------------- training
def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
           batch_size: int, seed: int) -> tuple[float, float]:
    """Adam with a cosine decay to 0 over ``steps``; minibatches drawn (with replacement)
    by a generator seeded with ``seed``, so every call with the same seed sees the same
    batches. Returns the wall time of the steps (seconds) and the mean loss of the last 20
    steps (NaN or inf when the run diverged: a sweep's too-high rate is recorded, not
    fatal)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:  # pragma: no cover - every method trains at least the head
        raise RuntimeError("flora_conv: the model has no trainable parameter")
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 0.5 * (1.0 + math.cos(math.pi * t / steps)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    tail = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen).to(x.device)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
        if step >= steps - 20:
            tail.append(loss.detach())  # no host sync inside the loop
    seconds = time.perf_counter() - t0
    return seconds, float(torch.stack(tail).mean())


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
                  for i in range(0, len(x), 1000))
    return correct / len(x)


def pretrain(cfg: FLoRAConvConfig, data: dict[str, torch.Tensor]) -> tuple[ConvNet, dict]:
    """The MNIST-pretrained :class:`ConvNet` (seed ``cfg.seed``, frozen) and ``{"seconds",
    "train_loss", "mnist_test_accuracy"}``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ConvNet(cfg.channels, cfg.pools)
    net = net.to(data["pre_x"].device)
    seconds, loss = _train(net, data["pre_x"], data["pre_y"], cfg.pretrain_steps,
                           cfg.lr_pretrain, cfg.batch_size, cfg.seed)
    if not math.isfinite(loss):
        raise RuntimeError(f"flora_conv: pretraining diverged (lr_pretrain {cfg.lr_pretrain})")
    acc = _accuracy(net, data["pre_test_x"], data["pre_test_y"])
    return net.requires_grad_(False), {"seconds": seconds, "train_loss": loss,
                                       "mnist_test_accuracy": acc}


@dataclass
class AdaptResult:
    """One transfer run (:func:`adapt`).

    Attributes:
        model: the trained model; trainable: its trainable scalars; seconds: training time;
        lr: the learning rate; train_loss: mean loss of the last 20 steps (not finite:
        diverged); val_accuracy / test_accuracy: fractions in [0, 1], None when not
        evaluated.
    """

    model: nn.Module
    trainable: int
    seconds: float
    lr: float
    train_loss: float
    val_accuracy: float | None
    test_accuracy: float | None

    def evaluate_test(self, data: dict[str, torch.Tensor]) -> float:
        """Set and return :attr:`test_accuracy` on ``data["test_x"], data["test_y"]``."""
        self.test_accuracy = _accuracy(self.model, data["test_x"], data["test_y"])
        return self.test_accuracy


def adapt(method: str, pretrained: ConvNet, data: dict[str, torch.Tensor],
          cfg: FLoRAConvConfig, lr: float, rank: int | None = None,
          validate: bool = True, test: bool = True) -> AdaptResult:
    """Train :func:`build_method` ``(method, pretrained, cfg, rank)`` on the Fashion-MNIST
    training part for ``cfg.steps`` steps at ``lr`` (minibatch seed ``cfg.seed + 2``, the same
    for every method) and evaluate it on the validation part when ``validate`` and on the
    test set when ``test``."""
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ValueError(f"lr: expected a float > 0, got {lr!r}")
    model = build_method(method, pretrained, cfg, rank)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    seconds, loss = _train(model, data["train_x"], data["train_y"], cfg.steps, lr,
                           cfg.batch_size, cfg.seed + 2)
    val = _accuracy(model, data["val_x"], data["val_y"]) if validate else None
    out = AdaptResult(model, trainable, seconds, float(lr), loss, val, None)
    if test:
        out.evaluate_test(data)
    return out


# ----------------------------------------------------------------------------- run
def _runs(cfg: FLoRAConvConfig) -> list[tuple[str, int | None, bool]]:
    """``(method, rank, primary)`` in run order: head, full, LoRA ranks, FLoRA ranks."""
    out: list[tuple[str, int | None, bool]] = [("head", None, True), ("full", None, True)]
    out += [("lora", r, i == 0) for i, r in enumerate(cfg.lora_ranks)]
    out += [("flora", r, i == 0) for i, r in enumerate(cfg.flora_ranks)]
    return out


def run_flora_conv(ctx: BenchContext, cfg: FLoRAConvConfig | None = None
                   ) -> list[Measurement]:
    """Run the benchmark (``cfg`` default: :data:`QUICK` or :data:`FULL` by ``ctx.quick``);
    returns ``test_accuracy`` (%), ``trainable_params`` and ``train_seconds`` rows for every
    method and rank, and writes ``peft_flora_conv.json`` under ``ctx.out_dir``."""
    cfg = cfg if cfg is not None else (QUICK if ctx.quick else FULL)
    if not isinstance(cfg, FLoRAConvConfig):
        raise TypeError(f"cfg: expected FLoRAConvConfig, got {type(cfg).__name__}")
    console = stderr_console()
    t_start = time.perf_counter()
    data = load_flora_conv_data(cfg, ctx.device)
    net, pre = pretrain(cfg, data)
    console.print(f"flora_conv: pretrained on MNIST, test accuracy "
                  f"{100 * pre['mnist_test_accuracy']:.2f} % ({pre['seconds']:.0f} s)")
    summary: dict = {"config": asdict(cfg), "quick": ctx.quick, "pretrain": pre, "runs": {}}
    rows: list[Measurement] = []
    for method, rank, primary in _runs(cfg):
        label = method_label(method, rank, primary)
        lrs = cfg.lrs(method)
        sweep = [adapt(method, net, data, cfg, lr, rank, validate=len(lrs) > 1, test=False)
                 for lr in lrs]
        # The rate with the best validation accuracy (earliest on ties); only the chosen run
        # sees the test set.
        best = max(sweep, key=lambda r: -math.inf if r.val_accuracy is None else r.val_accuracy)
        best.evaluate_test(data)
        expected = analytic_trainable(method, cfg.channels, rank, cfg.kernel_rank)
        if best.trainable != expected:  # pragma: no cover - would be a bug in an adapter
            raise RuntimeError(f"flora_conv: {label} trains {best.trainable} scalars, the "
                               f"analytic count is {expected}")
        summary["runs"][label] = {
            "method": method, "rank": rank, "lr": best.lr, "trainable": best.trainable,
            "test_accuracy": best.test_accuracy, "seconds": best.seconds,
            "sweep": {str(r.lr): {"val_accuracy": r.val_accuracy, "train_loss": r.train_loss}
                      for r in sweep}}
        console.print(f"flora_conv: {label:<26} {100 * best.test_accuracy:6.2f} %  "
                      f"{best.trainable:>7,} params  lr {best.lr:g}  {best.seconds:.1f} s")
        rows += [Measurement(CASE, label, "test_accuracy", 100 * best.test_accuracy, "%", True),
                 Measurement(CASE, label, "trainable_params", float(best.trainable), "", False),
                 Measurement(CASE, label, "train_seconds", best.seconds, "s", False)]
    summary["seconds_total"] = time.perf_counter() - t_start
    console.print(f"flora_conv: {summary['seconds_total']:.0f} s in all")
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    (ctx.out_dir / "peft_flora_conv.json").write_text(json.dumps(summary, indent=2))
    return rows


FLORA_CONV_BENCH = register_benchmark(Benchmark(
    name="peft/flora_conv",
    method=LABELS["flora"],
    baselines=(LABELS["lora"], LABELS["full"], LABELS["head"]),
    run=run_flora_conv,
    description="A 4-conv CNN pretrained on MNIST, transferred to Fashion-MNIST with a new "
    "head at equal steps / batches / schedule (own learning rate each, chosen on a held-out "
    "validation split): FLoRA (Tucker core on the conv kernels; Si et al. 2024) vs LoRA on "
    "the flattened kernels (Hugging Face peft), full fine-tuning and the head alone; test "
    "accuracy, trainable parameters, training time.",
))
