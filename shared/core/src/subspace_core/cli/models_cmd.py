"""``subzoo models list|info``."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from subspace_core.zoo import get_model_entry, list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="list and describe registered models")
    msub = models.add_subparsers(dest="models_command", required=True)
    ls = msub.add_parser("list", help="list model ids")
    ls.add_argument("pattern", nargs="?", default="*", help="glob over ids, e.g. 'ssm/*'")
    ls.add_argument("--package", help="only this package area (core, ssm, peft, ...)")
    ls.add_argument("--pretrained", action="store_true", help="only ids with a checkpoint")
    ls.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ls.set_defaults(handler=list_cmd)
    info = msub.add_parser("info", help="describe one model id")
    info.add_argument("model_id")
    info.add_argument("--json", action="store_true", help="one JSON document on stdout")
    info.set_defaults(handler=info_cmd)


def list_cmd(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    ids = list_models(args.pattern, package=args.package, pretrained=True if args.pretrained else None)
    entries = [get_model_entry(i) for i in ids]
    if args.json:
        emit_json([
            {"id": e.id, "package": e.area, "pretrained": e.has_pretrained,
             "protocols": list(e.protocols), "description": e.description,
             "num_params": e.pretrained_cfg.num_params if e.pretrained_cfg else None,
             "metrics": {p: dict(m) for p, m in e.pretrained_cfg.metrics.items()}
             if e.pretrained_cfg else {}}
            for e in entries
        ])
        return 0
    table = Table(title=f"{len(entries)} models")
    for column in ("id", "pretrained", "params", "headline metric", "description"):
        table.add_column(column)
    for e in entries:
        cfg = e.pretrained_cfg
        headline = ""
        if cfg and cfg.metrics:
            proto, metrics = next(iter(cfg.metrics.items()))
            name, value = next(iter(metrics.items()))
            headline = f"{proto} {name} {value:g}"
        table.add_row(e.id, "yes" if cfg else "no", f"{cfg.num_params:,}" if cfg else "",
                      headline, e.description)
    Console().print(table)
    return 0


def info_cmd(args: argparse.Namespace) -> int:
    from subspace_core.cli import emit_json

    entry = get_model_entry(args.model_id)
    document = entry.to_dict()
    if args.json:
        emit_json(document)
        return 0
    table = Table(title=entry.id, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in document.items():
        if key != "pretrained_cfg":
            table.add_row(key, str(value))
    for key, value in (document["pretrained_cfg"] or {}).items():
        table.add_row(key, str(value))
    Console().print(table)
    return 0
