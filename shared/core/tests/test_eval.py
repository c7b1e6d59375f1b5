"""Tests of ``subspace_core.eval``: protocol registry, results CSV, the ``evaluate`` runner."""

from __future__ import annotations

import csv
import math
import re
import sys
import uuid
from dataclasses import replace

import pytest
import torch
from torch import nn

from subspace_core import plugins
from subspace_core.eval import (
    Protocol,
    ResultRow,
    append_results,
    environment_info,
    evaluate,
    get_protocol,
    list_protocols,
    normalize_images,
    read_results,
    register_protocol,
)
from subspace_core.eval import protocol as protocol_module
from subspace_core.eval.results import FIELDS
from subspace_core.io import ChecksumError, sha256_file
from subspace_core.zoo import PretrainedCfg, register_model, save_state_dict
from subspace_core.zoo import registry as zoo_registry

FILE = "eval_tiny.safetensors"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Private model and protocol registries, no plugin imports, private $SUBZOO_HOME."""
    monkeypatch.setattr(zoo_registry, "_REGISTRY", dict(zoo_registry._REGISTRY))
    monkeypatch.setattr(protocol_module, "_PROTOCOLS", dict(protocol_module._PROTOCOLS))
    monkeypatch.setattr(
        plugins, "_loaded", set(plugins._loaded) | set(plugins.available_plugins())
    )
    monkeypatch.setenv("SUBZOO_HOME", str(tmp_path / "home"))


@pytest.fixture
def area_module(tmp_path, monkeypatch):
    """``subspace_test``: the importable package that owns the ``test/...`` model ids."""
    root = tmp_path / "area_pkgs"
    (root / "subspace_test").mkdir(parents=True)
    (root / "subspace_test" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    sys.modules.pop("subspace_test", None)
    yield "subspace_test"
    sys.modules.pop("subspace_test", None)


def _row(**overrides) -> ResultRow:
    fields = {
        "date": "2025-01-01T00:00:00Z",
        "model": "test/lin_tiny.x",
        "protocol": "test_proto",
        "metric": "acc",
        "value": 12.5,
        "num_params": 8,
        "package": "subspace-test",
        "package_version": "0.1.0",
        "git_sha": "abc123",
        "device": "cpu",
        "torch_version": torch.__version__,
        "checkpoint_sha256": "a" * 64,
    }
    fields.update(overrides)
    return ResultRow(**fields)


def _protocol(name: str, calls: list | None = None) -> Protocol:
    def run(model: nn.Module, device: torch.device) -> dict[str, float]:
        if calls is not None:
            calls.append((model.training, next(model.parameters()).device, device))
        out = model(torch.ones(1, 3, device=device))
        return {"out_sum": out.sum().item(), "out_first": out[0, 0].item()}

    return Protocol(
        name=name,
        dataset="none",
        split="none",
        preprocessing="ones(1, 3)",
        metrics=("out_sum", "out_first"),
        higher_is_better=(True, False),
        run=run,
        description="sum of the output on a fixed input",
    )


def _model_with_checkpoint(tmp_path, protocols=("test_eval_proto",), metrics=None):
    state = {
        "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "bias": torch.tensor([0.5, -0.5]),
    }
    path = tmp_path / "ckpt" / FILE
    digest = save_state_dict(state, path)
    path.with_name(FILE + ".sha256").unlink()  # the cfg hash is the pin
    model_id = f"test/lin_{uuid.uuid4().hex[:8]}.tiny"
    cfg = PretrainedCfg(
        file=FILE,
        sha256=digest,
        num_bytes=path.stat().st_size,
        num_params=8,
        license="Apache-2.0",
        paper="none (test)",
        recipe="some.module:train",
        metrics=metrics if metrics is not None else {protocols[0]: {"out_sum": 15.0}},
        data={"dataset": "none", "input_shape": [3]},
    )

    @register_model(model_id, pretrained_cfg=cfg, protocols=protocols)
    def build(**kwargs):
        return nn.Linear(3, 2, **kwargs)

    return model_id, path, digest


# --- protocol registry ---------------------------------------------------------------------


def test_eval_protocol_flags_must_match_metrics():
    with pytest.raises(ValueError, match="higher_is_better"):
        replace(_protocol("test_x"), higher_is_better=(True,))


def test_eval_protocol_registry():
    proto = register_protocol(_protocol("test_eval_registry"))
    assert get_protocol("test_eval_registry") is proto
    assert "test_eval_registry" in list_protocols()
    assert proto.to_dict()["metrics"] == ["out_sum", "out_first"]
    with pytest.raises(ValueError, match="already registered"):
        register_protocol(_protocol("test_eval_registry"))
    with pytest.raises(KeyError, match="test_eval_registry"):  # the message lists the known ones
        get_protocol("test_eval_nope")


def test_eval_normalize_images():
    x = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    out = normalize_images(x, mean=0.5, std=0.25)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], (x[0].float() / 255 - 0.5) / 0.25)
    with pytest.raises(ValueError, match="x"):
        normalize_images(x.float(), 0.5, 0.25)
    with pytest.raises(ValueError, match="x"):
        normalize_images(x[0], 0.5, 0.25)


# --- results CSV ---------------------------------------------------------------------------


def test_eval_results_append_twice_header_once(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    first = [_row(metric="acc", value=12.5), _row(metric="nll", value=0.25)]
    second = [_row(model="test/other_tiny.x", value=99.0, num_params=1234)]
    assert append_results(path, first) == path
    append_results(str(path), second)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(FIELDS)
    assert sum(line == lines[0] for line in lines) == 1
    assert len(lines) == 4
    rows = read_results(path)
    assert rows == [*first, *second]
    assert isinstance(rows[0].value, float) and isinstance(rows[0].num_params, int)
    assert rows[2].num_params == 1234 and rows[2].value == 99.0


def test_eval_results_empty_file_gets_header(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("")
    append_results(path, [_row()])
    assert read_results(path) == [_row()]
    assert path.read_text().splitlines()[0] == ",".join(FIELDS)


def test_eval_results_refuse_other_header(tmp_path):
    path = tmp_path / "results.csv"
    original = "model,metric,value\nx,acc,1.0\n"
    path.write_text(original)
    with pytest.raises(ValueError) as info:
        append_results(path, [_row()])
    assert str(path) in str(info.value) and "header" in str(info.value)
    assert path.read_text() == original  # nothing appended


def test_eval_results_values_with_commas_roundtrip(tmp_path):
    path = tmp_path / "results.csv"
    row = _row(model="test/a_b.c", device='NVIDIA "H100", 80GB', value=float("1e-7"))
    append_results(path, [row])
    assert read_results(path) == [row]


def test_eval_environment_info_core():
    env = environment_info("core", torch.device("cpu"))
    assert env["package"] == "subspace-core"
    assert env["device"] == "cpu"
    assert env["torch_version"] == torch.__version__
    assert env["package_version"] and env["git_sha"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", env["date"])
    assert set(env) | {"model", "protocol", "metric", "value", "num_params",
                       "checkpoint_sha256"} == set(FIELDS)


# --- evaluate ------------------------------------------------------------------------------


def test_eval_evaluate_end_to_end(tmp_path, area_module):
    calls: list = []
    register_protocol(_protocol("test_eval_proto", calls))
    model_id, path, digest = _model_with_checkpoint(tmp_path)
    cache = tmp_path / "home" / "weights" / FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(path.read_bytes())
    results = tmp_path / "out" / "results.csv"

    result = evaluate(model_id, results_file=results)

    # out = W @ 1 + b = [0+1+2+0.5, 3+4+5-0.5] = [3.5, 11.5]
    assert result.model == model_id and result.protocol == "test_eval_proto"
    assert result.metrics == {"out_sum": 15.0, "out_first": 3.5}
    assert result.claimed == {"out_sum": 15.0}
    assert calls == [(False, torch.device("cpu"), torch.device("cpu"))]  # eval mode, on device
    rows = read_results(results)
    assert rows == list(result.rows)
    assert [(r.metric, r.value) for r in rows] == [("out_sum", 15.0), ("out_first", 3.5)]
    for row in rows:
        assert row.model == model_id and row.protocol == "test_eval_proto"
        assert row.num_params == 8
        assert row.checkpoint_sha256 == digest == sha256_file(cache)
        assert row.device == "cpu"
        assert row.package == "subspace-test"
        assert row.torch_version == torch.__version__
    summary = result.to_dict()
    assert summary["num_params"] == 8 and summary["checkpoint_sha256"] == digest
    assert summary["device"] == "cpu"

    # a second evaluation appends (header once)
    evaluate(model_id, "test_eval_proto", results_file=results)
    assert len(read_results(results)) == 4
    assert results.read_text().count("checkpoint_sha256") == 1


def test_eval_evaluate_explicit_checkpoint_without_results_file(tmp_path, area_module):
    register_protocol(_protocol("test_eval_proto"))
    model_id, path, digest = _model_with_checkpoint(tmp_path)
    result = evaluate(model_id, checkpoint_path=path)
    assert result.metrics["out_sum"] == 15.0
    assert result.rows[0].checkpoint_sha256 == digest
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.csv"))


def test_eval_evaluate_tampered_checkpoint_writes_no_rows(tmp_path, area_module):
    register_protocol(_protocol("test_eval_proto"))
    model_id, path, digest = _model_with_checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    results = tmp_path / "results.csv"
    with pytest.raises(ChecksumError, match=digest):
        evaluate(model_id, checkpoint_path=path, results_file=results)
    assert not results.exists()


def test_eval_evaluate_rejects_foreign_protocol(tmp_path, area_module):
    register_protocol(_protocol("test_eval_proto"))
    register_protocol(_protocol("test_eval_other"))
    model_id, path, _ = _model_with_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="test_eval_other"):
        evaluate(model_id, "test_eval_other", checkpoint_path=path)


def test_eval_evaluate_second_protocol_and_no_claim(tmp_path, area_module):
    register_protocol(_protocol("test_eval_proto"))
    register_protocol(_protocol("test_eval_second"))
    model_id, path, _ = _model_with_checkpoint(
        tmp_path, protocols=("test_eval_proto", "test_eval_second")
    )
    result = evaluate(model_id, "test_eval_second", checkpoint_path=path)
    assert result.protocol == "test_eval_second" and result.claimed == {}
    assert {r.protocol for r in result.rows} == {"test_eval_second"}


def test_eval_evaluate_model_without_checkpoint():
    model_id = f"test/bare_{uuid.uuid4().hex[:8]}.tiny"
    register_model(model_id)(lambda: nn.Linear(3, 2))
    with pytest.raises(ValueError, match="no shipped checkpoint"):
        evaluate(model_id)


def test_eval_results_header_matches_dataclass(tmp_path):
    path = tmp_path / "r.csv"
    append_results(path, [_row()])
    with open(path, newline="") as fh:
        assert next(csv.reader(fh)) == FIELDS


def test_protocol_doc_takes_the_paragraph_after_the_heading():
    from subspace_core.eval import protocol_doc

    doc = """Module.

**Protocol ``alpha``**: first line
second line.

**Protocol ``beta``** (a note). Its text.
"""
    assert protocol_doc(doc, "alpha") == "first line\nsecond line."
    assert protocol_doc(doc, "beta") == "(a note). Its text."
    with pytest.raises(ValueError, match="gamma"):
        protocol_doc(doc, "gamma")
    with pytest.raises(ValueError, match="module_doc"):
        protocol_doc(None, "alpha")


def test_roc_auc_equals_the_pairwise_count_with_ties_as_half():
    from subspace_core.eval import roc_auc

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (60,), generator=g).float()  # many ties
    positive = torch.rand(60, generator=g) < 0.4
    pos, neg = scores[positive], scores[~positive]
    pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert roc_auc(scores, positive) == pytest.approx(float(pairs.mean()))
    assert roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([False, True])) == 1.0
    assert math.isnan(roc_auc(torch.tensor([0.1, 0.9]), torch.tensor([True, True])))
