"""``subzoo train ID``: run the model's recipe, then evaluate what it produced."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from subspace_core.cli.eval_cmd import result_table
from subspace_core.console import stderr_console
from subspace_core.eval import evaluate
from subspace_core.io import sha256_file
from subspace_core.train import import_recipe
from subspace_core.zoo import get_model_entry


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="retrain a model with its recipe and evaluate it")
    parser.add_argument("model_id")
    parser.add_argument("--out", default=None, help="output folder (default runs/<id>)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run of the recipe")
    parser.add_argument("--no-eval", action="store_true", help="skip evaluating the result")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    entry = get_model_entry(args.model_id)
    if entry.recipe is None:
        raise ValueError(f"model_id: {entry.id} has no recipe")
    out = Path(args.out or Path("runs") / entry.id.replace("/", "_"))
    recipe = import_recipe(entry.recipe)
    stderr_console().print(f"training {entry.id} with {entry.recipe} → {out}")
    start = time.perf_counter()
    checkpoint = recipe(out, quick=args.quick, progress=not args.json)
    seconds = time.perf_counter() - start
    digest = sha256_file(checkpoint)
    shipped = entry.pretrained_cfg.sha256 if entry.pretrained_cfg else None
    document = {"model": entry.id, "checkpoint": str(checkpoint), "sha256": digest,
                "identical_to_shipped": digest == shipped, "train_seconds": seconds,
                "quick": args.quick}
    if not args.no_eval and entry.pretrained_cfg is not None:
        result = evaluate(entry.id, checkpoint_path=checkpoint)
        document["eval"] = result.to_dict()
        if not args.json:
            Console().print(result_table(result))
    if args.json:
        emit_json(document)
    else:
        same = " — bit-identical to the shipped checkpoint" if digest == shipped else ""
        Console().print(f"checkpoint: {checkpoint} (trained in {seconds:.1f} s){same}")
    return 0
