"""Smoke tests of the `subzoo` command as users call it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from subspace_core.cli import main
from subspace_core.zoo import get_model_entry, resolve_checkpoint

CANARY = "core/mlp_tiny.fmnist"


def run_json(capsys, *argv: str):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_console_script_lists_the_canary_as_pretrained():
    exe = shutil.which("subzoo") or str(Path(sys.executable).parent / "subzoo")
    out = subprocess.run([exe, "models", "list", "--json"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    models = {m["id"]: m for m in json.loads(out)}
    assert models[CANARY]["pretrained"] is True


def test_models_info_json(capsys):
    info = run_json(capsys, "models", "info", CANARY, "--json")
    cfg = get_model_entry(CANARY).pretrained_cfg
    assert info["pretrained_cfg"]["sha256"] == cfg.sha256
    assert info["protocols"] == ["fmnist_test"]


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["models", "info", "core/nope.x"]) == 2
    assert "core/nope.x" in capsys.readouterr().err


def test_data_list_has_the_core_datasets(capsys):
    names = {d["name"] for d in run_json(capsys, "data", "list", "--json")}
    assert {"fashion_mnist", "mnist_10k", "digits"} <= names


def test_eval_reproduces_the_card(capsys, tmp_path):
    results = tmp_path / "results.csv"
    doc = run_json(capsys, "eval", CANARY, "--json", "--results-file", str(results))
    claimed = get_model_entry(CANARY).pretrained_cfg.metrics["fmnist_test"]["top1"]
    assert abs(doc["metrics"]["top1"] - claimed) <= 0.5
    assert results.read_text().count(CANARY) == len(doc["metrics"])


def test_eval_refuses_a_checkpoint_with_one_flipped_byte(capsys, tmp_path):
    cfg = get_model_entry(CANARY).pretrained_cfg
    data = bytearray(resolve_checkpoint(cfg).path.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / cfg.file
    bad.write_bytes(bytes(data))
    assert main(["eval", CANARY, "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and cfg.sha256 in err


def test_bench_quick_reports_ratios(capsys, tmp_path):
    doc = run_json(capsys, "bench", "core", "--quick", "--out", str(tmp_path), "--json", "-")
    ratios = {(r["metric"], r["baseline"]): r for r in doc["ratios"]}
    # the shipped MLP must beat both classical baselines on accuracy
    assert all(r["method_better"] for (metric, _), r in ratios.items() if metric == "top1")
    assert (tmp_path / "bench.csv").is_file()
    assert (tmp_path / "bench_core_canary.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_selects_single_benchmarks_by_name(capsys, tmp_path):
    doc = run_json(capsys, "bench", "core/canary", "--quick", "--out", str(tmp_path), "--json", "-")
    assert {r["benchmark"] for r in doc["measurements"]} == {"core/canary"}
    assert main(["bench", "core/no_such_benchmark", "--out", str(tmp_path)]) == 2
    assert "core/no_such_benchmark" in capsys.readouterr().err


def test_bench_kernels_rejects_packages(capsys):
    assert main(["bench", "kernels", "core"]) == 2


def test_train_reproduces_within_one_point(capsys, tmp_path):
    doc = run_json(capsys, "train", CANARY, "--out", str(tmp_path), "--json")
    claimed = get_model_entry(CANARY).pretrained_cfg.metrics["fmnist_test"]["top1"]
    assert abs(doc["eval"]["metrics"]["top1"] - claimed) <= 1.0


def test_train_quick_writes_a_verified_checkpoint(capsys, tmp_path):
    doc = run_json(capsys, "train", CANARY, "--out", str(tmp_path), "--quick", "--json")
    checkpoint = Path(doc["checkpoint"])
    assert checkpoint.is_file() and Path(str(checkpoint) + ".sha256").is_file()
    assert doc["eval"]["metrics"]["top1"] > 70.0  # one epoch on 10k images
