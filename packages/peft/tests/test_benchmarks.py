"""The peft benchmarks measure what they claim (small, fast instances)."""

import pytest
import torch

from subspace_peft.benchmarks.measured_memory import _micro_case
from subspace_peft.benchmarks.refresh import METHODS, refresh_measurements


def _drifting_gradients(m: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two gradients with a decaying spectrum whose top subspace moved a little."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(m, m, generator=g))[0]
    V = torch.linalg.qr(torch.randn(n, n, generator=g))[0]
    s = 1.0 / torch.arange(1, min(m, n) + 1).float() ** 1.5
    first = (U[:, : s.numel()] * s) @ V[:, : s.numel()].T
    second = first + 0.02 * torch.randn(m, n, generator=g) / (m * n) ** 0.25
    return first, second


def test_refresh_benchmark_scores_bases_against_the_exact_subspace():
    grads = [("w", *_drifting_gradients(48, 96, 0)), ("w", *_drifting_gradients(48, 96, 1))]
    rows = refresh_measurements("toy", grads, 8, torch.device("cpu"), repeats=1)
    energy = {r.method: r.value for r in rows if r.metric == "captured_energy"}
    times = {r.method: r.value for r in rows if r.metric == "refresh_time"}
    assert set(energy) == set(times) == set(METHODS)
    assert energy["full SVD (GaLore)"] == pytest.approx(100.0, abs=1e-3)
    # the warm start recovers the top-8 subspace of the drifted gradient
    assert 99.0 <= energy["warm subspace iteration (ours)"] <= 100.0 + 1e-3
    assert all(t > 0 for t in times.values())


def test_refresh_benchmark_energy_drops_for_a_wrong_basis():
    first, second = _drifting_gradients(40, 40, 2)
    flipped = torch.flip(second, dims=(0,))  # a different top subspace for the left side
    rows = refresh_measurements("toy", [("w", first, flipped)], 4, torch.device("cpu"), 1)
    energy = {r.method: r.value for r in rows if r.metric == "captured_energy"}
    assert energy["full SVD (GaLore)"] == pytest.approx(100.0, abs=1e-3)
    assert energy["warm subspace iteration (ours)"] > 95.0  # 2 iterations recover it anyway


@pytest.mark.parametrize("method", ["adamw", "galore", "qgalore", "lora"])
def test_measured_state_matches_the_analytic_count(method):
    measured, analytic = _micro_case(method)
    if method == "adamw":
        assert measured == analytic + 4 * 56  # torch keeps one fp32 step tensor per parameter
    else:
        assert analytic <= measured <= 1.005 * analytic  # + step counters, similarity queue


def test_adapter_run_keeps_the_methods_finished_before_a_crash(tmp_path, monkeypatch):
    """A full run takes hours: each finished method is written at once, so a run stopped
    part-way keeps its measurements."""
    import json
    from types import SimpleNamespace

    import subspace_peft.finetune as finetune_module
    import subspace_peft.hf as hf_module
    from subspace_core.bench import BenchContext
    from subspace_peft.benchmarks import finetuning

    class Split:
        labels = torch.tensor([0, 1, 1])

        def __len__(self) -> int:
            return 3

    def fake_finetune(cfg, *args, **kwargs):
        if cfg.method == "lora":
            raise KeyboardInterrupt  # the run is stopped during the second method
        return SimpleNamespace(lr=cfg.lr, steps=1, test_accuracy=0.5, val_accuracy=0.6,
                               val_history=[0.6], best_epoch=0, trainable_params=10,
                               total_params=100, optimizer_state_bytes=80,
                               matrix_state_bytes=80, train_seconds=1.0, losses=[0.7])

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    monkeypatch.setattr(hf_module, "load_minilm", lambda: None)
    monkeypatch.setattr(hf_module, "load_minilm_tokenizer", lambda: None)
    monkeypatch.setattr(finetuning, "_splits",
                        lambda settings, tokenizer, task: dict.fromkeys(
                            ("train", "validation", "test"), Split()))
    ctx = BenchContext(quick=True, device=torch.device("cpu"), out_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        finetuning._run_methods(ctx, ("svfit", "lora", "full"), "summary.json")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert list(saved["methods"]) == ["svfit"]
    assert saved["methods"]["svfit"]["test_accuracy"] == 0.5

    # a rerun into the same folder resumes: svfit is not trained again, the others are
    trained = []

    def counting_finetune(cfg, *args, **kwargs):
        trained.append(cfg.method)
        return SimpleNamespace(lr=cfg.lr, steps=1, test_accuracy=0.7, val_accuracy=0.6,
                               val_history=[0.6], best_epoch=0, trainable_params=20,
                               total_params=100, optimizer_state_bytes=80,
                               matrix_state_bytes=80, train_seconds=1.0, losses=[0.7])

    monkeypatch.setattr(finetune_module, "finetune", counting_finetune)
    _, results, rows = finetuning._run_methods(ctx, ("svfit", "lora", "full"), "summary.json")
    assert trained == ["lora", "full"]
    assert results["svfit"].test_accuracy == 0.5 and results["svfit"].method == "svfit"
    assert {r.method for r in rows} == {finetuning.LABELS[m] for m in ("svfit", "lora", "full")}
    assert list(json.loads((tmp_path / "summary.json").read_text())["methods"]) == [
        "svfit", "lora", "full"]

    # other settings (here: the full ones) are not mixed with the quick record
    trained.clear()
    full_ctx = BenchContext(quick=False, device=torch.device("cpu"), out_dir=tmp_path)
    finetuning._run_methods(full_ctx, ("svfit", "full"), "summary.json")
    assert trained == ["svfit", "full"]
