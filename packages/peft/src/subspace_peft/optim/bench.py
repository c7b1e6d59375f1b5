"""Optimizer-step timing of the micro decoder: torch AdamW vs GaLoreAdamW (GaLore, Fira).

Run::

    OMP_NUM_THREADS=1 uv run python -m subspace_peft.optim.bench --clock cpu --steps 40
    OMP_NUM_THREADS=1 uv run python -m subspace_peft.optim.bench --steps 40   # wall clock
    uv run python -m subspace_peft.optim.bench --steps 40                     # all threads

The model is ``MicroDecoder(LLAMA_MICRO)``; the optimizers are the recipe's
(:func:`subspace_peft.recipes.llama_micro_text.make_optimizer`: rank 32 on every
``attn``/``mlp`` weight, refresh every 200 steps). Gradients come from one backward pass on
random tokens and are kept fixed, so only ``optimizer.step()`` is timed. The optimizers are
stepped round-robin; for each, the median of ``steps`` steps (after ``warmup``) without a
refresh is measured, and the median of 3 forced refresh steps; the *amortised* step time is
``median + (refresh − median) / update_proj_gap``. Ratios are against
``torch.optim.AdamW`` with its defaults (which on CPU is the for-loop implementation) and
with ``foreach=True``. ``--clock cpu`` times the CPU time of the calling thread
(``time.thread_time``): on a shared machine it is not inflated by other processes, and
with one thread it is the whole cost of the step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

__all__ = ["main", "time_optimizers"]


def _setup(optimizer: str, seed: int = 0):
    from subspace_peft.models.decoder import MicroDecoder
    from subspace_peft.models.zoo import LLAMA_MICRO
    from subspace_peft.recipes.llama_micro_text import RecipeConfig, make_optimizer

    torch.manual_seed(seed)
    model = MicroDecoder(LLAMA_MICRO)
    tokens = torch.randint(0, 257, (8, 256), generator=torch.Generator().manual_seed(seed))
    logits = model(tokens[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                      tokens[:, 1:].reshape(-1)).backward()
    cfg = RecipeConfig(optimizer="galore" if optimizer.startswith("adamw") else optimizer,
                       lr=1e-3)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif optimizer == "adamw_foreach":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                foreach=True)
    else:
        opt = make_optimizer(model, replace(cfg, optimizer=optimizer))
    return model, opt, cfg.update_proj_gap


def _force_refresh(opt: torch.optim.Optimizer) -> None:
    """Make every projected parameter's next step a refresh step."""
    for g in opt.param_groups:
        if g.get("rank") is not None:
            for p in g["params"]:
                state = opt.state[p]
                state["projector"]["next_refresh"] = state["step"]


def _timed(opt: torch.optim.Optimizer, clock=time.perf_counter) -> float:
    t0 = clock()
    opt.step()
    return clock() - t0


def time_optimizers(names: list[str], steps: int = 30, warmup: int = 5,
                    refreshes: int = 3, clock=time.perf_counter) -> dict[str, dict[str, float]]:
    """Step times in ms per optimizer: ``median`` (no refresh), ``refresh`` and ``amortised``.

    The optimizers are stepped round-robin (one step of each in turn), so that a busy
    machine slows them all alike and the ratios stay meaningful. ``clock``:
    ``time.perf_counter`` (wall) or ``time.thread_time`` (CPU time of the calling thread:
    insensitive to other processes on the machine, meaningful with one thread).
    """
    setups = {n: _setup(n) for n in names}
    opts = {n: s[1] for n, s in setups.items()}
    projected = [n for n, o in opts.items() if not isinstance(o, torch.optim.AdamW)]
    for o in opts.values():
        o.step()  # step 0 (first bases)
    refresh_times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(refreshes):
        for n in projected:
            _force_refresh(opts[n])
            refresh_times[n].append(_timed(opts[n], clock))
    for _ in range(warmup):
        for o in opts.values():
            o.step()
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(steps):
        for n, o in opts.items():
            times[n].append(_timed(o, clock))
    out = {}
    for n in names:
        median = 1e3 * statistics.median(times[n])
        refresh = 1e3 * statistics.median(refresh_times[n]) if refresh_times[n] else median
        gap = setups[n][2]
        out[n] = {"median": median, "refresh": refresh,
                  "amortised": median + (refresh - median) / gap}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--optimizers", default="adamw,adamw_foreach,galore,fira")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter; cpu: time.thread_time (1 thread)")
    args = parser.parse_args(argv)
    names = args.optimizers.split(",")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    results = time_optimizers(names, args.steps, args.warmup, clock=clock)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock {args.clock}")
    base = results.get("adamw")
    base_fe = results.get("adamw_foreach")
    for n, r in results.items():
        line = (f"{n:>14}: median {r['median']:7.3f} ms  refresh {r['refresh']:8.3f} ms  "
                f"amortised {r['amortised']:7.3f} ms")
        if base:
            line += f"  x{r['amortised'] / base['amortised']:.2f} vs AdamW"
        if base_fe:
            line += f"  x{r['amortised'] / base_fe['amortised']:.2f} vs AdamW(foreach)"
        print(line)


if __name__ == "__main__":
    main()
