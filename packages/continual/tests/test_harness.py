"""The harness and the strategies on small synthetic scenarios (no dataset needed)."""

from __future__ import annotations

import pytest
import torch

from subspace_continual.baselines import AGEM, EWC
from subspace_continual.data import synthetic_subspaces as synthetic
from subspace_continual.gpm import GPM
from subspace_continual.harness import Strategy, TrainConfig, make_strategy, run_sequence
from subspace_continual.metrics import summarize

CFG = TrainConfig(epochs=5, batch_size=10, lr=0.1, hidden=(32, 32), seed=0)


def test_run_sequence_fills_the_matrix_and_is_deterministic():
    scenario = synthetic()
    a = run_sequence(Strategy(), scenario, CFG)
    b = run_sequence(Strategy(), scenario, CFG)
    assert a.R.shape == (3, 3) and bool(torch.isfinite(a.R).all())
    assert torch.equal(a.R, b.R) and torch.equal(a.b, b.b)
    assert a.metrics == summarize(a.R, a.b)
    assert a.metrics.la > 80  # it learns every task
    assert a.to_dict()["R"] == a.R.tolist()


def test_gpm_with_full_threshold_keeps_old_tasks_exactly():
    scenario = synthetic("task")
    gpm = run_sequence(GPM(threshold=1.0, num_samples=120), scenario, CFG)
    # old tasks' inputs are fully inside the stored bases -> their outputs never change
    for j in range(3):
        assert gpm.R[j:, j].tolist() == [gpm.R[j, j].item()] * (3 - j)
    assert gpm.metrics.bwt == 0.0
    sizes = gpm.info["basis_sizes"]
    assert sizes["body.0"] == 15  # three 5-dim input subspaces
    assert set(sizes) == {"body.0", "body.2"}  # per-task heads are not protected


def test_gpm_single_head_protects_the_head_and_adam_works():
    scenario = synthetic("domain")
    cfg = TrainConfig(epochs=2, batch_size=10, lr=1e-2, optimizer="adam", hidden=(32, 32))
    gpm = GPM(threshold=1.0, num_samples=120)
    result = run_sequence(gpm, scenario, cfg)
    assert set(result.info["basis_sizes"]) == {"body.0", "body.2", "heads.0"}
    # Adam + mode="auto" projects the update: task 0 is kept exactly
    assert result.R[:, 0].tolist() == [result.R[0, 0].item()] * 3


def test_agem_projection_makes_the_step_non_interfering():
    scenario = synthetic("domain")
    agem = AGEM(per_task=50, ref_batch=50)
    run_sequence(agem, scenario, TrainConfig(epochs=1, hidden=(16,), lr=0.05))
    assert agem.projections > 0
    model = agem.model
    params = [p for p in model.parameters()]
    x, y = scenario.tasks[2].x_train[:10], scenario.tasks[2].y_train[:10]
    for p in params:
        p.grad = None
    torch.nn.functional.cross_entropy(model(x), y).backward()
    torch.manual_seed(0)
    agem.memory._g.manual_seed(5)
    agem.before_step(model, 2)
    agem.memory._g.manual_seed(5)
    xr, yr, _ = agem.memory.sample(50)
    ref = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xr), yr), params)
    dot = sum(float((p.grad * r).sum()) for p, r in zip(params, ref, strict=True))
    assert dot >= -1e-6


def test_ewc_penalty_is_the_fisher_weighted_distance():
    scenario = synthetic("domain", num_tasks=2)
    ewc = EWC(lam=10.0, fisher_samples=60)
    run_sequence(ewc, scenario, TrainConfig(epochs=1, hidden=(16,), lr=0.05))
    model = ewc.model
    # with one stored task: penalty(θ) − penalty(θ*) = (λ/2) Σ F (θ − θ*)²
    theta_star = {n: ewc.B[n] / ewc.A[n].clamp_min(1e-30) for n in ewc.A}
    x, y = scenario.tasks[0].x_train[:5], scenario.tasks[0].y_train[:5]
    base = torch.nn.functional.cross_entropy(model(x), y)
    total = ewc.training_loss(model, x, y, 0)
    # the constant Σ F θ*² is dropped, so compare gradients instead of values
    grads = torch.autograd.grad(total - base, list(model.parameters()))
    for (n, p), gr in zip(model.named_parameters(), grads, strict=True):
        mask = ewc.A[n] > 1e-12
        expected = 10.0 * ewc.A[n] * (p.detach() - theta_star[n])
        torch.testing.assert_close(gr[mask], expected[mask], rtol=1e-4, atol=1e-6)
    assert all(bool((a >= 0).all()) for a in ewc.A.values())


def test_make_strategy_names():
    for name in ("finetune", "gpm", "ewc", "er", "agem"):
        assert make_strategy(name).name == name
    with pytest.raises(ValueError, match="method"):
        make_strategy("lwf")
    with pytest.raises(ValueError, match="optimizer"):
        run_sequence(Strategy(), synthetic(), TrainConfig(optimizer="lbfgs"))


def test_schedule_without_recurrence_is_run_sequence():
    from subspace_continual.harness import run_schedule

    scenario = synthetic("domain")
    cfg = TrainConfig(epochs=2, batch_size=10, lr=0.1, hidden=(16, 16))
    seq = run_sequence(GPM(threshold=0.99, num_samples=60), scenario, cfg)
    sched = run_schedule(GPM(threshold=0.99, num_samples=60), scenario, [0, 1, 2], cfg)
    assert torch.equal(sched.A, seq.R)
    assert sched.final_seen_acc == pytest.approx(seq.metrics.acc)
    # seen-task accuracy after session s averages the tasks seen so far
    assert sched.seen_acc[0].item() == pytest.approx(seq.R[0, 0].item())
    assert sched.seen_acc[1].item() == pytest.approx(seq.R[1, :2].mean().item())


def test_power_law_recurrence_environment():
    from subspace_continual.data import power_law_schedule
    from subspace_continual.harness import run_schedule

    scenario = synthetic("domain")
    schedule = power_law_schedule(3, 8, alpha=1.0, new_task_prob=0.4, seed=4)
    assert len(set(schedule)) == 3 and len(schedule) > len(set(schedule))  # recurrences
    cfg = TrainConfig(epochs=1, batch_size=10, lr=0.1, hidden=(16, 16))
    lines: list[str] = []
    result = run_schedule(Strategy(), scenario, schedule, cfg, log=lines.append)
    assert result.A.shape == (8, 3) and bool(torch.isfinite(result.A).all())
    assert result.mean_seen_acc == pytest.approx(float(result.seen_acc.mean()))
    assert "visit 2" in "".join(lines)  # a task was trained again when it recurred
    again = run_schedule(Strategy(), scenario, schedule, cfg)
    assert torch.equal(again.A, result.A)
    with pytest.raises(ValueError, match="schedule"):
        run_schedule(Strategy(), scenario, [0, 3], cfg)


def test_recurring_task_ewc_keeps_one_penalty_per_task_and_replay_stores_once():
    """On a revisit EWC trains without the task's own penalty and replaces its Fisher/anchor
    (summing per session grew A without bound); ER stores a task's examples once."""
    from subspace_continual.baselines import ExperienceReplay
    from subspace_continual.harness import run_schedule

    scenario = synthetic("domain")
    cfg = TrainConfig(epochs=1, batch_size=10, lr=0.1, hidden=(16, 16))
    ewc = EWC(lam=10.0, fisher_samples=40)
    schedule = [0, 1, 0, 0, 2, 0]
    result = run_schedule(ewc, scenario, schedule, cfg)
    assert sorted(ewc.fisher) == [0, 1, 2] and result.recurrence_gain is not None
    for n, a in ewc.A.items():
        assert torch.equal(a, ewc.fisher[0][n] + ewc.fisher[1][n] + ewc.fisher[2][n])
    seen = []
    ewc2 = EWC(lam=10.0, fisher_samples=40)
    original = ewc2.before_task

    def spy(task, optimizer):
        original(task, optimizer)
        seen.append((task.task_id, float(sum(a.sum() for a in ewc2.A.values()))))

    ewc2.before_task = spy
    run_schedule(ewc2, scenario, [0, 1, 0], cfg)
    # before the revisit of task 0 only task 1's Fisher is in A
    assert seen[2][0] == 0
    assert seen[2][1] == pytest.approx(float(sum(f.sum() for f in ewc2.fisher[1].values())))
    # state round trip
    clone = EWC(lam=10.0, fisher_samples=40)
    clone.setup(ewc.model, scenario, cfg)
    clone.load_state_dict(ewc.state_dict())
    assert all(torch.equal(clone.A[n], ewc.A[n]) and torch.equal(clone.B[n], ewc.B[n])
               for n in ewc.A)
    er = ExperienceReplay(per_task=7)
    run_schedule(er, scenario, schedule, cfg)
    assert len(er.memory) == 21 and sorted(er.memory.task.unique().tolist()) == [0, 1, 2]
