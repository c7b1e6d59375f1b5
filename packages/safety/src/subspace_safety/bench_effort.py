"""Benchmark ``safety/effort_detection``: does an Effort detector generalise to unseen
generators better than full fine-tuning (and LoRA) of the same backbone?

Data: real Fashion-MNIST vs fakes from three generators trained here on Fashion-MNIST
training images (:mod:`subspace_safety.generators`: VAE, DCGAN, DDPM;
:mod:`subspace_safety.fakes` trains, samples and caches them). Each generator's fakes are
split in half: the first half may train a detector, the second half tests it. Real
training images are Fashion-MNIST training images the generators did not see; real test
images come from the test split.

Protocol: a :class:`~subspace_safety.detector.FakeDetector` (MobileNetV2 through stage 4 at
32 px, linear head) is trained on real vs the ``train_on`` generator's fakes, in each mode
of :func:`~subspace_safety.detector.adapt` (Effort, LoRA, full fine-tuning, linear probe),
with the same data, steps, learning rate and seed. Reported per method: ROC AUC and
accuracy (threshold 0, balanced real/fake) on the training generator's held-out fakes
("seen") and on each other generator ("unseen: <name>"), and the mean unseen AUC.
Target: Effort's mean unseen AUC > full fine-tuning's.

Budgets (one CPU thread of a loaded 2-core machine): see :data:`QUICK` and :data:`FULL`.
The first run trains and samples the generators (quick: 55 s, full: 9 min, the DDPM most of
it); later runs read the cached fakes (:mod:`subspace_safety.fakes`). The detectors then take
quick ~3-13 s per method (33 s for the four), full 10-65 s per method (~3 min).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from subspace_core.bench import BenchContext, Benchmark, Measurement, register_benchmark

__all__ = [
    "EFFORT_DETECTION",
    "FULL",
    "QUICK",
    "EffortBenchConfig",
    "detector_data",
    "effort_detection",
    "held_out_data",
    "run_effort_detection",
    "score_detector",
    "train_mode",
]


@dataclass(frozen=True)
class EffortBenchConfig:
    """Sizes of one benchmark run (generator budgets, fake counts, detector budget)."""

    gen_steps: tuple[tuple[str, int], ...]
    samples: int
    gen_train_images: int
    ddpm_timesteps: int
    det_steps: int
    det_real_train: int
    train_on: str = "dcgan"
    det_batch: int = 32
    det_lr: float = 1e-3
    residual_rank: int = 4
    seed: int = 0
    modes: tuple[str, ...] = ("effort", "lora", "full", "probe")

    def recipes(self):
        from subspace_safety.fakes import FakeRecipe

        out = {}
        for name, steps in self.gen_steps:
            kwargs = (("timesteps", self.ddpm_timesteps),) if name == "ddpm" else ()
            out[name] = FakeRecipe(name, steps=steps, samples=self.samples, seed=self.seed,
                                   sample_seed=self.seed + 1,
                                   train_images=self.gen_train_images, kwargs=kwargs)
        return out


#: ``--quick``: tiny generators (blurry, easy fakes) and 40 detector steps.
QUICK = EffortBenchConfig(gen_steps=(("vae", 60), ("dcgan", 60), ("ddpm", 40)), samples=192,
                          gen_train_images=2_000, ddpm_timesteps=20, det_steps=40,
                          det_real_train=1_000)
#: Full run: generators trained for a few hundred steps, 640 fakes each, 300 detector steps.
FULL = EffortBenchConfig(gen_steps=(("vae", 400), ("dcgan", 500), ("ddpm", 300)),
                         samples=640, gen_train_images=10_000, ddpm_timesteps=50,
                         det_steps=300, det_real_train=5_000)


def detector_data(config: EffortBenchConfig, log=print):
    """``(real_train, real_test, {generator: (train fakes, test fakes)})`` of ``config``, uint8
    ``[n, 28, 28]`` each (module doc; trains and samples the generators on a first run,
    cached afterwards)."""
    from subspace_core.data import load_dataset
    from subspace_safety.fakes import cached_fakes

    train = torch.as_tensor(load_dataset("fashion_mnist", "train").x)
    test = torch.as_tensor(load_dataset("fashion_mnist", "test").x)
    fakes = {}
    for name, recipe in config.recipes().items():
        start = time.perf_counter()
        fakes[name] = cached_fakes(recipe, train[:recipe.train_images])
        log(f"fakes {name}: {tuple(fakes[name].shape)} in {time.perf_counter() - start:.1f} s")
    half = config.samples // 2
    real_train = train[config.gen_train_images:config.gen_train_images + config.det_real_train]
    real_test = test[: config.samples - half]
    return real_train, real_test, {n: (f[:half], f[half:]) for n, f in fakes.items()}


def held_out_data(config: EffortBenchConfig = QUICK, *, log=print):
    """``(real_test, {generator: held-out fakes})`` of ``config``: uint8 ``[n, 28, 28]`` each
    (trains and samples the generators on a first run; cached afterwards)."""
    _, real_test, fakes = detector_data(config, log)
    return real_test, {name: test for name, (_, test) in fakes.items()}


def train_mode(config: EffortBenchConfig, mode: str, real: torch.Tensor, fake: torch.Tensor):
    """A fresh ImageNet :class:`~subspace_safety.detector.FakeDetector` adapted in ``mode`` and
    trained on ``real`` vs ``fake`` with ``config``'s budget and seed (one thread:
    bit-reproducible on one machine and torch build). ``"effort"`` gives an
    :class:`~subspace_safety.detector.EffortFakeDetector`, whose state dict is the shippable
    delta."""
    from subspace_safety.detector import EffortFakeDetector, FakeDetector, adapt, train_detector

    torch.manual_seed(config.seed)
    if mode == "effort":
        detector = EffortFakeDetector(residual_rank=config.residual_rank)
    else:
        detector = FakeDetector()
        adapt(detector, mode, residual_rank=config.residual_rank)
    train_detector(detector, real, fake, steps=config.det_steps, batch_size=config.det_batch,
                   lr=config.det_lr, seed=config.seed)
    return detector


def score_detector(detector, real_test: torch.Tensor, fakes: dict, train_on: str) -> dict:
    """ROC AUC and accuracy (threshold 0) of ``detector`` on ``real_test`` vs each
    generator's held-out fakes.

    Args:
        detector: images ``[N, 28, 28]`` -> fake logits ``[N]``.
        real_test: real images ``[n, 28, 28]``.
        fakes: ``{generator: held-out fakes}``.
        train_on: the generator the detector was trained on (its row is ``"seen"``).

    Returns:
        ``{"seen": (auc, acc), "unseen: <gen>": (auc, acc), ..., "mean unseen auc": float}``.
    """
    from subspace_safety.detector import accuracy, detector_scores, roc_auc

    if train_on not in fakes:
        raise ValueError(f"train_on: expected one of {sorted(fakes)}, got {train_on!r}")
    real_scores = detector_scores(detector, real_test)
    row: dict = {}
    unseen = []
    for name, test_fakes in fakes.items():
        scores = torch.cat([real_scores, detector_scores(detector, test_fakes)])
        labels = torch.cat([torch.zeros(real_test.shape[0]), torch.ones(test_fakes.shape[0])])
        key = "seen" if name == train_on else f"unseen: {name}"
        row[key] = (roc_auc(scores, labels), accuracy(scores, labels))
        if name != train_on:
            unseen.append(row[key][0])
    row["mean unseen auc"] = sum(unseen) / len(unseen)
    return row


def effort_detection(config: EffortBenchConfig = QUICK, *, log=print) -> dict[str, dict]:
    """Run the benchmark protocol (module docstring) with ``config``.

    Returns:
        ``{mode: {"seen": (auc, acc), "unseen: <gen>": (auc, acc), ...,
        "mean unseen auc": float, "trainable": int, "seconds": float}}``.
    """
    from subspace_safety.detector import trainable_parameters

    real_train, real_test, fakes = detector_data(config, log)
    if config.train_on not in fakes:
        raise ValueError(f"train_on: expected one of {sorted(fakes)}, got {config.train_on!r}")
    results: dict[str, dict] = {}
    for mode in config.modes:
        start = time.perf_counter()
        detector = train_mode(config, mode, real_train, fakes[config.train_on][0])
        row: dict = {"trainable": trainable_parameters(detector)}
        held_out = {name: test for name, (_, test) in fakes.items()}
        row.update(score_detector(detector, real_test, held_out, config.train_on))
        row["seconds"] = time.perf_counter() - start
        log(f"{mode}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
        results[mode] = row
    return results


_METHOD_NAMES = {"effort": "Effort", "lora": "LoRA", "full": "full fine-tuning",
                 "probe": "linear probe"}


def run_effort_detection(ctx: BenchContext) -> list[Measurement]:
    """The registered benchmark (quick: :data:`QUICK`, else :data:`FULL`), one thread."""
    config = QUICK if ctx.quick else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = effort_detection(config)
    finally:
        torch.set_num_threads(threads)
    case = f"train on {config.train_on}, {config.det_steps} steps"
    rows: list[Measurement] = []
    for mode, row in results.items():
        method = _METHOD_NAMES[mode]
        rows.append(Measurement(case, method, "mean unseen AUC", row["mean unseen auc"]))
        for key, value in row.items():
            if isinstance(value, tuple):
                rows += [Measurement(case, method, f"{key} AUC", value[0]),
                         Measurement(case, method, f"{key} acc", value[1])]
        rows.append(Measurement(case, method, "trainable params", row["trainable"], "",
                                False))
    return rows


EFFORT_DETECTION = register_benchmark(
    Benchmark(
        name="safety/effort_detection",
        method="Effort",
        baselines=("full fine-tuning", "LoRA", "linear probe"),
        run=run_effort_detection,
        description="Real Fashion-MNIST vs VAE/DCGAN/DDPM fakes: detector trained on one "
        "generator, AUC/accuracy on the unseen ones; Effort vs full fine-tuning vs LoRA "
        "(target: Effort's unseen AUC > full fine-tuning's).",
    )
)

