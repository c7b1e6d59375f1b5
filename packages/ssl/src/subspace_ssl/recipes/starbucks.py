"""Recipe for ``ssl/starbucks_minilm_l6.ng20r8``: Starbucks fine-tuning of all-MiniLM-L6-v2.

Model: :class:`~subspace_ssl.starbucks.StarbucksMiniLM`, the frozen base MiniLM + LoRA rank 8
(alpha 16) on the query/key/value/attention-output/FFN linears of all six layers (331,776
parameters; the checkpoint holds only these). Loss:
:func:`~subspace_ssl.starbucks.starbucks_loss` over the fixed size-ordered schedule
``(1,32),(2,64),(3,128),(4,192),(5,256),(6,384)`` (temperature 0.05, KL weight 1), plus
(``distill_grid=True``, weight 1) the same KL self-distillation from the full-size pair for
the 24 evaluation-grid pairs off the schedule. Why the extension: in a 24-step probe (same
settings otherwise; kNN on 1,000 train / 500 test documents) the paper's loss alone lifted
the middle layers on 20 Newsgroups (+4 to +7 points at layers 3-5) but cost layer 6
truncated to 32/64/128/256 dims 6.0/7.2/3.8/2.8 points: nothing trains those pairs, and the
updated lower layers move what they inherited from the pretrained model. With the grid
distillation the same probe lost 3.8/4.6/3.2/2.0 there, still a loss: whether the full run
closes it is not yet measured. R8 moved by at most ~1 point either way (the noise of 500
queries). ``distill_grid=False`` trains the paper's loss alone.

Training signal: self-supervised *independent cropping* (Contriever, Izacard et al. 2022):
two random spans of ``crop_tokens`` WordPiece tokens from the first ``window_tokens`` of the
same training document are a positive pair; the other documents of the batch are the
negatives; dropout (0.1, the checkpoint's) adds noise on top (documents shorter than a crop
give two dropout views of the whole text, SimCSE's signal). Why this signal:

* no labels -- the evaluation is kNN on the topic labels of 20 Newsgroups / R8, so a
  supervised contrastive loss on those labels would measure supervision, not 2D
  Matryoshka training, and the comparison with the (unsupervised) base would be unfair;
* spans of one post share its topic, so the positives carry exactly the information topic
  kNN needs, unlike SimCSE's dropout-only views of an already contrastively trained model;
* it uses the *training* documents of both corpora (no test document is ever seen), batches
  drawn from one corpus at a time so the in-batch negatives are not trivially separable.

Data: the train splits of ``newsgroups20`` (11,293 documents) and ``reuters`` (R8, 5,485),
strings from :func:`subspace_core.data.datasets.text.load_text`. Each batch holds
``batch_size`` documents of one corpus (a seeded permutation per corpus and epoch, cut into
full batches, the batch order shuffled); both views of the batch go through one forward
pass (``2 x batch_size`` sequences of at most ``crop_tokens + 2`` tokens). The crops of step
``s`` are drawn from ``numpy.random.default_rng([seed, s])``, so a resumed run replays the
same data exactly.

Optimisation: AdamW (lr 5e-4, no weight decay) on the LoRA factors only, 20 linear warm-up
steps then cosine decay to 0, gradient-norm clip 1.0.

Budget: sized for <= 60 minutes on 2 CPU cores shared with other jobs, one thread: a step
(32 documents, 64 crops of <= 66 tokens) took 5.6 s at load 4.5 and 7.7 s at load 6.5, so
400 steps take 37-51 min, plus ~1 min to load and tokenise. The evaluation afterwards
(base and Starbucks, 3,000 documents per dataset each) adds ~16 min at load 6. The
training state (adapter + AdamW moments + RNG, :func:`subspace_core.train.save_training_state`)
is written every ``save_every`` steps and the run resumes from it. At the end the adapter is
written to ``out_dir/starbucks_minilm_l6.ng20r8.safetensors`` (+ ``.sha256``), and, unless
``evaluate=False``, :func:`subspace_ssl.text_knn.compare_knn_grids` scores the base and the
Starbucks model on the same documents (``knn_grids.json``, ``knn_grids.png``; embeddings
cached in ``out_dir/embeddings``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from subspace_core.train import warmup_cosine as lr_factor
from subspace_ssl.starbucks import GRID_DIMS, GRID_LAYERS, STARBUCKS_SCHEDULE, check_schedule

__all__ = ["CHECKPOINT_FILE", "MODEL_ID", "QUICK", "RecipeConfig", "crop_batch", "lr_factor",
           "train"]  # fmt: skip

logger = logging.getLogger(__name__)

MODEL_ID = "ssl/starbucks_minilm_l6.ng20r8"
CHECKPOINT_FILE = "starbucks_minilm_l6.ng20r8.safetensors"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class RecipeConfig:
    """Hyper-parameters of one run (see the module docstring)."""

    corpora: tuple[str, ...] = ("newsgroups20", "reuters")
    steps: int = 400
    batch_size: int = 32
    crop_tokens: int = 64
    window_tokens: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_steps: int = 20
    clip_norm: float = 1.0
    temperature: float = 0.05
    kl_weight: float = 1.0
    distill_grid: bool = True  # also distil every grid pair off the schedule from the full one
    distill_weight: float = 1.0
    rank: int = 8
    alpha: float = 16.0
    schedule: tuple[tuple[int, int], ...] = field(default=STARBUCKS_SCHEDULE)
    seed: int = 0
    max_docs: int | None = None  # per corpus (quick mode); None = every training document
    threads: int | None = None  # torch intra-op threads; None = leave as is
    save_every: int = 25
    log_every: int = 10
    evaluate: bool = True
    eval_n_train: int | None = 2000
    eval_n_test: int | None = 1000


#: The smoke-test overrides of ``quick=True`` (proves the path; not a reproduction).
QUICK: dict[str, Any] = {"steps": 6, "batch_size": 8, "crop_tokens": 32, "window_tokens": 96,
                         "max_docs": 64, "warmup_steps": 2, "save_every": 3, "log_every": 2,
                         "eval_n_train": 120, "eval_n_test": 60}  # fmt: skip


def _tokenized_corpora(cfg: RecipeConfig, tokenizer) -> list[list[list[int]]]:
    """Per corpus, the WordPiece ids (no special tokens) of the first ``window_tokens``
    tokens of every non-empty training document (the first ``max_docs`` with quick)."""
    from subspace_core.data.datasets.text import load_text

    corpora = []
    for name in cfg.corpora:
        texts = load_text(name, "train").texts[: cfg.max_docs]
        ids = tokenizer(texts, add_special_tokens=False, truncation=True,
                        max_length=cfg.window_tokens)["input_ids"]  # fmt: skip
        corpora.append([d for d in ids if d])
    return corpora


def _batch_plan(
    sizes: list[int], batch_size: int, steps: int, seed: int
) -> list[tuple[int, np.ndarray]]:
    """``steps`` batches ``(corpus, document indices)``: per epoch a seeded permutation of
    each corpus cut into full batches, all batches of the epoch shuffled together."""
    if min(sizes) < batch_size:
        raise ValueError(f"batch_size: expected <= the smallest corpus ({min(sizes)} documents), "
                         f"got {batch_size}")  # fmt: skip
    rng = np.random.default_rng(seed)
    plan: list[tuple[int, np.ndarray]] = []
    while len(plan) < steps:
        epoch = []
        for c, n in enumerate(sizes):
            perm = rng.permutation(n)
            epoch += [
                (c, perm[i : i + batch_size]) for i in range(0, n - batch_size + 1, batch_size)
            ]
        plan += [epoch[i] for i in rng.permutation(len(epoch))]
    return plan[:steps]


def crop_batch(
    docs: list[list[int]],
    crop_tokens: int,
    rng: np.random.Generator,
    *,
    cls_id: int,
    sep_id: int,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent random crops of each document, as one padded batch.

    Returns ``input_ids``, ``attention_mask`` ``[2B, T]``: rows ``0..B-1`` are the first
    crops, rows ``B..2B-1`` the second, each ``[CLS] span [SEP]`` with ``span`` =
    ``min(crop_tokens, len(doc))`` consecutive tokens starting uniformly at random.
    """
    if crop_tokens < 1:
        raise ValueError(f"crop_tokens: expected >= 1, got {crop_tokens}")
    rows = []
    for _view in range(2):
        for doc in docs:
            span = min(crop_tokens, len(doc))
            start = int(rng.integers(0, len(doc) - span + 1))
            rows.append([cls_id, *doc[start : start + span], sep_id])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


#: Fields that do not change the trained weights (may differ when a run is resumed).
_RUN_ONLY = ("threads", "save_every", "log_every", "evaluate", "eval_n_train", "eval_n_test")


def _config_json(cfg: RecipeConfig) -> dict[str, Any]:
    """The config as stored in the training state (tuples as lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def _same_training(stored: dict[str, Any] | None, cfg: RecipeConfig) -> bool:
    if stored is None:
        return False
    current = _config_json(cfg)
    return all(stored.get(k) == v for k, v in current.items() if k not in _RUN_ONLY)


def train(out_dir: str | Path, *, quick: bool = False, progress: bool = True, **overrides) -> Path:
    """Train (or resume in ``out_dir``); writes ``out_dir/`` :data:`CHECKPOINT_FILE`.

    ``overrides`` replace fields of :class:`RecipeConfig` (after :data:`QUICK`'s with
    ``quick``); e.g. ``schedule=((6, 384),)`` trains the full-size-only baseline with the same
    signal. A run resumed in an ``out_dir`` written with another config is refused.
    Returns the adapter's path.
    """
    from subspace_core.console import progress_bar
    from subspace_core.train import load_training_state, save_training_state
    from subspace_ssl.starbucks import StarbucksMiniLM, save_adapter, starbucks_loss

    cfg = replace(RecipeConfig(), **(QUICK if quick else {}))
    cfg = replace(cfg, **overrides)
    cfg = replace(cfg, schedule=check_schedule(cfg.schedule), corpora=tuple(cfg.corpora))
    if cfg.crop_tokens > cfg.window_tokens:
        raise ValueError(f"crop_tokens: expected <= window_tokens ({cfg.window_tokens}), "
                         f"got {cfg.crop_tokens}")  # fmt: skip
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = StarbucksMiniLM(rank=cfg.rank, alpha=cfg.alpha)
    tok = model.tokenizer
    corpora = _tokenized_corpora(cfg, tok)
    plan = _batch_plan([len(c) for c in corpora], cfg.batch_size, cfg.steps, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    resumed = load_training_state(out_dir, model, optimizer)
    start = 0
    if resumed is not None:
        start, extra = resumed
        if not _same_training(extra.get("config"), cfg):
            raise ValueError(f"out_dir: {out_dir} holds a run with another config "
                             f"({extra.get('config')}); use a fresh out_dir")  # fmt: skip
        logger.info("resuming %s at step %d/%d", MODEL_ID, start, cfg.steps)
    distill_pairs = (
        [(layer, dim) for layer in GRID_LAYERS for dim in GRID_DIMS] if cfg.distill_grid else []
    )
    model.train()
    began, window = time.perf_counter(), []
    with progress_bar(enabled=progress) as bar, open(out_dir / LOG_FILE, "a") as log:
        task = bar.add_task("starbucks", total=cfg.steps, completed=start)
        for step in range(start, cfg.steps):
            corpus, idx = plan[step]
            rng = np.random.default_rng([cfg.seed, step])
            ids, mask = crop_batch([corpora[corpus][i] for i in idx], cfg.crop_tokens, rng,
                                   cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
                                   pad_id=tok.pad_token_id)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps)
            pooled = model(ids, mask)
            half = len(idx)
            out = starbucks_loss(pooled[:, :half], pooled[:, half:], cfg.schedule,
                                 temperature=cfg.temperature, kl_weight=cfg.kl_weight,
                                 distill_pairs=distill_pairs,
                                 distill_weight=cfg.distill_weight)  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            optimizer.step()
            bar.advance(task)
            window.append(float(out.loss.detach()))
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                seconds = (time.perf_counter() - began) / (step + 1 - start)
                record = {
                    "step": step + 1, "loss": sum(window) / len(window),
                    "corpus": cfg.corpora[corpus], "grad_norm": float(grad_norm),
                    "lr": optimizer.param_groups[0]["lr"], "s_per_step": seconds,
                    "contrastive": {f"{ly},{d}": v for (ly, d), v in out.contrastive.items()},
                    "kl": {f"{ly},{d}": v for (ly, d), v in out.kl.items()},
                }  # fmt: skip
                log.write(json.dumps(record) + "\n")
                log.flush()
                logger.info("step %d/%d loss %.4f (%.2f s/step)", step + 1, cfg.steps,
                            record["loss"], seconds)  # fmt: skip
                window = []
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                save_training_state(out_dir, model, optimizer, epoch=step + 1,
                                    extra={"config": _config_json(cfg)})  # fmt: skip
    path = out_dir / CHECKPOINT_FILE
    digest = save_adapter(model, path, metadata={"model_id": MODEL_ID, "recipe": __name__,
                                                 "config": _config_json(cfg)})  # fmt: skip
    logger.info("wrote %s (sha256 %s)", path, digest)
    if cfg.evaluate:
        from subspace_ssl.text_knn import compare_knn_grids

        base = StarbucksMiniLM(rank=cfg.rank, alpha=cfg.alpha)  # fresh adapter = the base
        compare_knn_grids(base, model, out_dir, model_tag=digest[:12],
                          n_train=cfg.eval_n_train, n_test=cfg.eval_n_test,
                          progress=progress)  # fmt: skip
    return path
