"""``subzoo eval ID``."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from subspace_core.eval import evaluate


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("eval", help="evaluate a pretrained model on its protocol")
    parser.add_argument("model_id")
    parser.add_argument("--protocol", help="protocol name (default: the model's first)")
    parser.add_argument("--checkpoint", help="evaluate this safetensors file instead")
    parser.add_argument("--results-file", help="append one CSV row per metric to this file")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    result = evaluate(args.model_id, args.protocol, checkpoint_path=args.checkpoint,
                      results_file=args.results_file, device=args.device)
    if args.json:
        emit_json(result.to_dict())
        return 0
    Console().print(result_table(result))
    return 0


def result_table(result) -> Table:
    table = Table(title=f"{result.model} on {result.protocol}")
    for column in ("metric", "measured", "claimed (card)", "difference"):
        table.add_column(column)
    for metric, value in result.metrics.items():
        claimed = result.claimed.get(metric)
        diff = "" if claimed is None else f"{value - claimed:+.4g}"
        table.add_row(metric, f"{value:.4g}", "" if claimed is None else f"{claimed:.4g}", diff)
    return table
