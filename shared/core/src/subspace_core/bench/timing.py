"""Wall-clock timing with device synchronisation and median statistics."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["median_time"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 3,
    repeats: int = 20,
    min_total_s: float = 0.0,
) -> dict[str, float]:
    """Median, min and IQR (seconds) of ``fn()`` over ``repeats`` runs after ``warmup``.

    Keeps repeating past ``repeats`` until ``min_total_s`` seconds were spent timing, so
    very fast ops still get a stable median.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats or spent < min_total_s:
        start = time.perf_counter()
        fn()
        _sync(device)
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
        if len(times) >= 10_000:
            break
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median": statistics.median(times), "min": min(times), "iqr": q[2] - q[0],
            "runs": float(len(times))}
