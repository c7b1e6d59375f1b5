"""The ``subzoo`` command: one CLI for every Subspace Zoo package.

Each subcommand prints a rich table for people, or exactly one JSON document on stdout
with ``--json``; progress and logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from subspace_core.cli import bench_cmd, data_cmd, eval_cmd, models_cmd, train_cmd
from subspace_core.console import stderr_console

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subzoo", description="Subspace Zoo: models, data, evaluation and benchmarks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models_cmd, data_cmd, eval_cmd, train_cmd, bench_cmd):
        module.add_parser(sub)
    return parser


def emit_json(document: object) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        stderr_console().print(f"[bold red]error:[/] {message}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
