"""Throughput baseline of torchrec's managed-collision (ZCH) remapper, in another interpreter.

torchrec with fbgemm-gpu pins a torch version that the workspace environment does not have,
so this file is two things:

* a script run *by path* with an interpreter that has torchrec (it imports only torch,
  torchrec and the standard library, never ``subspace_recsys``)::

      OMP_NUM_THREADS=1 /tmp/trvenv/bin/python path/to/torchrec_baseline.py \\
          --num-ids 1000000 --batch 65536 --repeats 5 --seed 0

  It prints one JSON object on stdout (everything else goes to stderr);
* :func:`run_in_interpreter`, importable from the workspace environment without torchrec,
  which runs the script in the interpreter named by ``$SUBZOO_TORCHREC_PYTHON`` (or any
  other) and returns that JSON object as a dict.

What is measured, on ``torchrec.modules.mc_modules.MCHManagedCollisionModule`` with
``eviction_interval=1`` and one feature fed as ``{"f": JaggedTensor(values, lengths=1s)}``
(the input form of torchrec's own tests):

* ``inserts_per_s``: ``num_ids / t`` where ``t`` is the wall time of one pass of
  ``module(features)`` in training mode over all ``num_ids`` distinct ids, ``batch`` ids a
  call, on a freshly built module (construction not timed). Every call is
  ``preprocess`` (identity: no input hash function) + ``profile`` (copy the ids into the
  history buffer, then, because the eviction interval is 1, coalesce the history:
  ``torch.unique`` of the batch, score the whole table plus the new ids, argsort, write the
  admitted ids, re-sort the whole table) + ``remap`` (searchsorted). torchrec admits ids in
  bulk at each eviction, and each admission re-sorts the ``zch_size`` table, so the cost per
  batch grows with the table. Median over ``repeats`` passes, each on a new module.
* ``lookups_per_s``: ``num_ids / t`` where ``t`` is the wall time of ``module.remap(features)``
  in eval mode over all ids (already in the table, in another random order), ``batch`` ids a
  call. Median over ``repeats`` passes on the last filled module.
* ``collisions``: among ids found in the table, ids minus distinct output slots (0 means
  every live id owns its slot). ``misses``: ids that remap to the table's miss slot
  ``zch_size - 1`` (torchrec reserves it, so at most ``zch_size - 1`` ids fit; the default
  ``zch_size`` is ``num_ids + 1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCRIPT_PATH = Path(__file__).resolve()
TORCHREC_PYTHON_ENV = "SUBZOO_TORCHREC_PYTHON"
_STDERR_TAIL_CHARS = 4000
_POLICIES = ("distance_lfu", "lru")


class _RaisingParser(argparse.ArgumentParser):
    # In the parent process bad options must become exceptions, not sys.exit.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(f"torchrec baseline option: {message}")


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def build_parser(*, raise_errors: bool = False) -> argparse.ArgumentParser:
    """The script's command line; ``raise_errors`` turns usage errors into ``ValueError``."""
    cls = _RaisingParser if raise_errors else argparse.ArgumentParser
    parser = cls(description="torchrec MCHManagedCollisionModule throughput (prints JSON)")
    parser.add_argument("--num-ids", type=_int_at_least(1), default=1_000_000)
    parser.add_argument("--batch", type=_int_at_least(1), default=65536)
    parser.add_argument("--repeats", type=_int_at_least(1), default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--zch-size",
        type=_int_at_least(2),
        default=None,
        help="table slots; default num_ids + 1 (one slot is torchrec's miss slot)",
    )
    parser.add_argument("--policy", choices=_POLICIES, default="distance_lfu")
    parser.add_argument("--threads", type=_int_at_least(1), default=None)
    parser.add_argument(
        "--return-mapping",
        action="store_true",
        help="add the ids and their output slots to the JSON (small num_ids only)",
    )
    return parser


def _kwargs_to_argv(kwargs: dict[str, Any]) -> list[str]:
    parser = build_parser(raise_errors=True)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    argv: list[str] = []
    for name, value in kwargs.items():
        if name not in actions:
            raise TypeError(
                f"run_in_interpreter() got an unexpected keyword argument {name!r}; "
                f"expected one of {sorted(actions)}"
            )
        flag = actions[name].option_strings[0]
        if isinstance(actions[name], argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
            if value:
                argv.append(flag)
        elif value is not None:
            argv += [flag, str(value)]
    # Validate here so that a bad value fails fast, before a slow interpreter start.
    parser.parse_args(argv)
    return argv


def _tail(text: str) -> str:
    return text[-_STDERR_TAIL_CHARS:] if text else "<empty>"


def run_in_interpreter(python: str, *, timeout: float | None = 1800.0, **kwargs: Any) -> dict:
    """Run this file as a script with the interpreter ``python`` and return its JSON result.

    ``kwargs`` are the script's options with underscores (``num_ids=2000, batch=512,
    repeats=3, seed=0, zch_size=None, policy="distance_lfu", threads=None,
    return_mapping=False``). The child runs with ``-I`` so that this file's folder (a package
    of the workspace) is not put on its ``sys.path``.

    Raises TypeError for an unknown option, ValueError for a bad option value, and
    RuntimeError (with the tail of the child's stderr) when the interpreter cannot be
    started, fails, times out or prints no JSON object.
    """
    argv = _kwargs_to_argv(kwargs)
    command = [python, "-I", str(SCRIPT_PATH), *argv]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except OSError as exc:
        raise RuntimeError(
            f"torchrec interpreter {python!r} could not be started ({exc}); set "
            f"{TORCHREC_PYTHON_ENV} to a python that has torchrec and fbgemm-gpu"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        # Depending on where the timeout hit, the captured stderr is bytes, str or None.
        stderr = exc.stderr or ""
        if isinstance(stderr, bytes):
            stderr = stderr.decode(errors="replace")
        raise RuntimeError(
            f"torchrec baseline {command} timed out after {timeout} s; stderr tail:\n"
            f"{_tail(stderr)}"
        ) from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"torchrec baseline {command} exited with status {proc.returncode}; stderr tail:\n"
            f"{_tail(proc.stderr)}"
        )
    json_lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not json_lines:
        raise RuntimeError(
            f"torchrec baseline {command} printed no JSON object; stdout tail:\n"
            f"{_tail(proc.stdout)}\nstderr tail:\n{_tail(proc.stderr)}"
        )
    try:
        return json.loads(json_lines[-1])
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"torchrec baseline {command} printed invalid JSON ({exc}); stderr tail:\n"
            f"{_tail(proc.stderr)}"
        ) from exc


# ---------------------------------------------------------------- measurement (child only)


def _distinct_random_ids(torch: Any, num_ids: int, generator: Any) -> Any:
    """``num_ids`` distinct uniform ids in [0, 2**63 - 1), in random order.

    2**63 - 1 itself is excluded: torchrec marks empty slots with it."""
    high = 2**63 - 1
    ids = torch.empty(0, dtype=torch.int64)
    while ids.numel() < num_ids:
        draw = torch.randint(
            0, high, (num_ids - ids.numel(),), generator=generator, dtype=torch.int64
        )
        ids = torch.cat([ids, draw]).unique()
    return ids[torch.randperm(ids.numel(), generator=generator)[:num_ids]]


def _batches(torch: Any, jagged_tensor: Any, ids: Any, batch: int) -> list[dict]:
    # Built before timing: the timed work is the module, not the JaggedTensor wrappers.
    ones = torch.ones(batch, dtype=torch.int64)
    return [
        {"f": jagged_tensor(values=chunk, lengths=ones[: chunk.numel()])}
        for chunk in ids.split(batch)
    ]


def _measure(args: argparse.Namespace) -> dict:
    import torch
    import torchrec
    from torchrec.modules.mc_modules import (
        DistanceLFU_EvictionPolicy,
        LRU_EvictionPolicy,
        MCHManagedCollisionModule,
    )
    from torchrec.sparse.jagged_tensor import JaggedTensor

    try:
        import fbgemm_gpu

        fbgemm_version = getattr(fbgemm_gpu, "__version__", "unknown")
    except Exception as exc:  # torchrec runs its CPU path without it; say why it is absent.
        fbgemm_version = f"not importable: {exc}"

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    zch_size = args.zch_size if args.zch_size is not None else args.num_ids + 1
    policies = {"distance_lfu": DistanceLFU_EvictionPolicy, "lru": LRU_EvictionPolicy}

    def new_module() -> Any:
        return MCHManagedCollisionModule(
            zch_size=zch_size,
            device=torch.device("cpu"),
            eviction_policy=policies[args.policy](),
            eviction_interval=1,
            input_hash_size=2**63 - 1,
        )

    generator = torch.Generator().manual_seed(args.seed)
    ids = _distinct_random_ids(torch, args.num_ids, generator)
    lookup_order = ids[torch.randperm(args.num_ids, generator=generator)]
    insert_batches = _batches(torch, JaggedTensor, ids, args.batch)
    lookup_batches = _batches(torch, JaggedTensor, lookup_order, args.batch)

    insert_seconds, insert_cpu_seconds = [], []
    module = None
    with torch.no_grad():
        for _ in range(args.repeats):
            module = new_module().train()
            start, cpu_start = time.perf_counter(), time.process_time()
            for features in insert_batches:
                module(features)
            insert_seconds.append(time.perf_counter() - start)
            insert_cpu_seconds.append(time.process_time() - cpu_start)

        module.eval()
        lookup_seconds, lookup_cpu_seconds = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            for features in lookup_batches:
                module.remap(features)
            lookup_seconds.append(time.perf_counter() - start)
            lookup_cpu_seconds.append(time.process_time() - cpu_start)

        slots = torch.cat([module.remap(f)["f"].values() for f in insert_batches])
        miss_slot = zch_size - 1
        hit = slots != miss_slot
        distinct_hit_slots = int(slots[hit].unique().numel())
        live_ids = int((module._mch_sorted_raw_ids != torch.iinfo(torch.int64).max).sum())

    result = {
        "torch": torch.__version__,
        "torchrec": getattr(torchrec, "__version__", "unknown"),
        "fbgemm_gpu": fbgemm_version,
        "python": sys.version.split()[0],
        "threads": torch.get_num_threads(),
        "module": "torchrec.modules.mc_modules.MCHManagedCollisionModule",
        "eviction_policy": type(module._eviction_policy).__name__,
        "eviction_interval": 1,
        "num_ids": args.num_ids,
        "zch_size": zch_size,
        "batch": args.batch,
        "repeats": args.repeats,
        "seed": args.seed,
        "inserts_per_s": args.num_ids / statistics.median(insert_seconds),
        "insert_seconds": insert_seconds,
        "inserts_per_cpu_s": args.num_ids / statistics.median(insert_cpu_seconds),
        "lookups_per_s": args.num_ids / statistics.median(lookup_seconds),
        "lookup_seconds": lookup_seconds,
        "lookups_per_cpu_s": args.num_ids / statistics.median(lookup_cpu_seconds),
        "live_ids": live_ids,
        "misses": int((~hit).sum()),
        "distinct_slots": distinct_hit_slots,
        "collisions": int(hit.sum()) - distinct_hit_slots,
        "notes": {
            "inserts": (
                "median wall time of one training-mode pass of module(features) over all "
                "num_ids distinct ids, batch ids a call, fresh module each repeat; "
                "eviction_interval=1 so each call runs profile (history append + unique + "
                "eviction scoring + argsort + admission + full-table re-sort) and remap; "
                "module construction and JaggedTensor building not timed"
            ),
            "lookups": (
                "median wall time of eval-mode module.remap(features) (searchsorted into the "
                "sorted table) over all ids in another random order, batch ids a call"
            ),
            "collisions": (
                "among ids found in the table: ids minus distinct output slots; misses = ids "
                "remapped to the reserved miss slot zch_size - 1 (capacity is zch_size - 1)"
            ),
            "ids": "distinct uniform int64 in [0, 2**63 - 1), torch.Generator seeded by --seed",
            "device": "cpu, torch.no_grad()",
            "cpu_rates": (
                "*_per_cpu_s use process CPU time instead of wall time (same median): with one "
                "torch thread they are less sensitive to other processes on a shared machine"
            ),
        },
    }
    if args.return_mapping:
        result["ids"] = ids.tolist()
        result["slots"] = slots.tolist()
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the options, measure, print one JSON line on stdout."""
    # Run by path, Python puts this package folder first on sys.path, where its modules could
    # shadow top-level names that torch or torchrec import.
    here = str(SCRIPT_PATH.parent)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != here]
    args = build_parser().parse_args(argv)
    # Anything torch, torchrec or fbgemm print (even from C++) goes to stderr, so that stdout
    # holds only the JSON object.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = _measure(args)
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
