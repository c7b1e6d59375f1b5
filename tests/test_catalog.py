"""The generated catalog is fresh, and every shipped checkpoint is what its card claims."""

from __future__ import annotations

import pytest

from subspace_core.io import sha256_file
from subspace_core.zoo import (
    count_parameters,
    get_model_entry,
    list_models,
    load_state_dict,
    resolve_checkpoint,
)
from subzoo_tools.catalog import latest_results, load_result_rows, stale_files

PRETRAINED = list_models(pretrained=True)


def test_catalog_is_fresh(repo_root):
    stale = stale_files(repo_root)
    assert not stale, f"zoo/ is stale, run `uv run subzoo-catalog`: {stale}"


def test_there_is_a_pretrained_canary():
    assert "core/mlp_tiny.fmnist" in PRETRAINED


@pytest.mark.parametrize("model_id", PRETRAINED)
def test_checkpoint_matches_its_cfg(model_id):
    cfg = get_model_entry(model_id).pretrained_cfg
    resolved = resolve_checkpoint(cfg, progress=False)
    assert resolved.source == "package file", "shipped checkpoints live inside their package"
    assert sha256_file(resolved.path) == cfg.sha256
    assert resolved.path.stat().st_size == cfg.num_bytes
    state = load_state_dict(resolved.path, sha256=cfg.sha256)
    assert count_parameters(state) == cfg.num_params
    assert cfg.num_bytes <= 5 * 1024 * 1024, "DESIGN.md: a shipped checkpoint is <= 5 MB"


@pytest.mark.parametrize("model_id", PRETRAINED)
def test_claimed_metrics_match_results_rows(model_id, repo_root):
    cfg = get_model_entry(model_id).pretrained_cfg
    latest = latest_results(load_result_rows(repo_root))
    assert cfg.metrics, f"{model_id} claims no metric"
    for protocol, metrics in cfg.metrics.items():
        for metric, claimed in metrics.items():
            row = latest.get((model_id, protocol, metric))
            assert row is not None, f"no results row for {model_id} {protocol}/{metric}"
            assert row.checkpoint_sha256 == cfg.sha256, "results were measured on another file"
            assert abs(row.value - claimed) <= 1e-3 * max(1.0, abs(claimed)), (
                f"{model_id} {protocol}/{metric}: claimed {claimed}, measured {row.value}"
            )


def test_package_weights_budget(repo_root):
    for weights in repo_root.glob("**/src/*/weights"):
        total = sum(p.stat().st_size for p in weights.glob("*.safetensors"))
        assert total <= 25 * 1024 * 1024, f"{weights}: {total} bytes > 25 MB"


def _slow_if_any_protocol_is(model_id: str):
    from subspace_core.eval import get_protocol

    metrics = get_model_entry(model_id).pretrained_cfg.metrics
    slow = any(get_protocol(name).slow for name in metrics)
    return pytest.param(model_id, marks=pytest.mark.slow) if slow else model_id


@pytest.mark.parametrize("model_id", [_slow_if_any_protocol_is(m) for m in PRETRAINED])
def test_eval_reproduces_the_claimed_metrics(model_id):
    """`subzoo eval` on the shipped file gives the card's numbers (what users will run)."""
    from subspace_core.eval import evaluate

    entry = get_model_entry(model_id)
    for protocol, claimed in entry.pretrained_cfg.metrics.items():
        measured = evaluate(model_id, protocol).metrics
        for metric, value in claimed.items():
            assert measured[metric] == pytest.approx(value, rel=1e-3, abs=1e-3), (
                f"{model_id} {protocol}/{metric}: card {value}, measured {measured[metric]}"
            )
