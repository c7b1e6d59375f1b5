"""``subzoo data list|fetch``."""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from subspace_core import data


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="list and fetch registered datasets")
    dsub = parser.add_subparsers(dest="data_command", required=True)
    ls = dsub.add_parser("list", help="list datasets")
    ls.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ls.set_defaults(handler=list_cmd)
    fetch = dsub.add_parser("fetch", help="fetch a dataset into the cache ($SUBZOO_HOME)")
    fetch.add_argument("name")
    fetch.add_argument("--json", action="store_true", help="one JSON document on stdout")
    fetch.set_defaults(handler=fetch_cmd)


def list_cmd(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    specs = [data.get_dataset(name) for name in data.list_datasets()]
    if args.json:
        emit_json([
            {"name": s.name, "files": [f.name for f in s.files], "license": s.license,
             "description": s.description, "sources": [src.describe() for src in s.sources]}
            for s in specs
        ])
        return 0
    table = Table(title=f"{len(specs)} datasets")
    for column in ("name", "files", "licence", "sources (in order)"):
        table.add_column(column)
    for s in specs:
        table.add_row(s.name, str(len(s.files)), s.license,
                      "\n".join(src.describe() for src in s.sources))
    Console().print(table)
    return 0


def fetch_cmd(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    start = time.perf_counter()
    paths = data.fetch(args.name)
    elapsed = time.perf_counter() - start
    if args.json:
        emit_json({"name": args.name, "files": {k: str(v) for k, v in paths.items()},
                   "seconds": elapsed})
        return 0
    table = Table(title=f"{args.name}: {len(paths)} files in {elapsed:.1f} s")
    table.add_column("file")
    table.add_column("path")
    for name, path in paths.items():
        table.add_row(name, str(path))
    Console().print(table)
    return 0
