"""FSDP2 (``fully_shard``) with 2 gloo ranks on CPU equals single-process training.

Two worker processes train the same model under FSDP2 in four configurations — GaLore and
Fira, each with the gather mode (``full_param``) and the sharding-aware mode
(``sharded_projected_step``) — on the same global batches (16 samples, 8 per rank) as a
single-process run. The model has a right-side projected weight (``0``: [24, 8], 12 + 12
rows), a left-side one with uneven shards (``2``: [15, 24], 8 + 7 rows) and a plain-AdamW
group (biases and ``4``: [3, 15], 2 + 1 rows). 4 steps with ``update_proj_gap=2``:
refreshes at steps 0 and 2, the second re-projecting the moments.

The plain group is stepped batched (as ``SubspaceOptimizer.step()`` does) in the gather runs and
parameter by parameter through ``step_dtensor_param`` in the sharded runs. Checked: the
final parameters and the whole optimizer state (basis, moments, Fira norm,
step count) against the single-process run, and that the state is bit-identical on both
ranks (the replicated GaLore state, and the sharded moments once gathered).

Tolerances (relative Frobenius error per tensor): parameters 2e-6, optimizer state 5e-5.
The only differences are float32 reduction order: FSDP2 averages two 8-sample gradient
means where the single process takes one 16-sample mean, and the sharded mode sums ``Pᵀ G``
over two row blocks. Observed: parameters <= 1e-7, state <= 1.5e-6 (largest for the
bases: a basis moves by the gradient perturbation over the spectral gap, hence the looser
state tolerance).

Basis signs: a refreshed basis is defined up to the sign of each vector (the refresh does
no sign fix, and Householder QR chooses signs by ``-sign(α)``, discontinuous at ``α = 0``),
so a 1e-7 difference in the gradient can flip a vector — it does here, in the Fira run's
second refresh of ``0.weight``. AdamW is exactly equivariant to that (the flipped
coordinate's ``exp_avg`` flips; ``exp_avg_sq``, Fira's φ and ν and the update ``P N`` do
not), so the comparison first aligns each basis vector's sign with the reference's,
checking that it is a sign flip (``|cos| ≈ 1``) and not a rotation, and flips the
matching row (left side) or column (right side) of ``exp_avg``.

The workers are forked from this process after it has imported FSDP and run the reference
(which imports ``torch._dynamo``): fresh interpreters would each spend 10-30 s importing
(the environment sets ``PYTHONDONTWRITEBYTECODE``, so torch is recompiled from source on
every start). A forked child sets 1 intra-op thread first (OpenMP is not fork-safe), as
DataLoader workers do.

The workers use :class:`GaLoreAdamW` itself: ``SubspaceOptimizer.step()`` routes projected
DTensor parameters through :func:`step_dtensor_param` with the group's ``dtensor_mode``.
"""

from __future__ import annotations

import multiprocessing
import socket
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from torch import nn

from subspace_peft.optim import GaLoreAdamW, galore_param_groups, resolve_side
from subspace_peft.optim.distributed import (
    full_param,
    is_dtensor,
    sharded_projected_step,
    step_dtensor_param,
)

STEPS = 4
GLOBAL_BATCH = 16
WORLD = 2
TOL_PARAM = 2e-6
TOL_STATE = 5e-5
CONFIGS = [("gather", False), ("gather", True), ("sharded", False), ("sharded", True)]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 15), nn.Tanh(),
                         nn.Linear(15, 3))


def make_groups(model: nn.Module, fira: bool, mode: str = "gather") -> list[dict]:
    return galore_param_groups(model, [r"^[02]$"], rank=4, update_proj_gap=2, scale=0.5,
                               fira=fira, dtensor_mode=mode)


def make_batch(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(t)
    return torch.randn(GLOBAL_BATCH, 8, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)


def _full(x: torch.Tensor) -> torch.Tensor:
    return x.full_tensor() if is_dtensor(x) else x.detach().clone()


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Full parameters and optimizer state as plain tensors (collective under FSDP2)."""
    names = {id(p): n for n, p in model.named_parameters()}
    params = {n: _full(p.detach()) for n, p in model.named_parameters()}
    state = {}
    for group in opt.param_groups:
        for p in group["params"]:
            s = opt.state[p]
            out = {k: _full(v) for k, v in s.items() if isinstance(v, torch.Tensor)}
            out["step"] = torch.tensor(int(s["step"]))
            if "projector" in s:
                out["basis"] = s["projector"]["basis"].clone()
            state[names[id(p)]] = out
    return {"params": params, "state": state}


def single_process(fira: bool) -> dict:
    model = make_model()
    opt = GaLoreAdamW(make_groups(model, fira), lr=1e-2, weight_decay=0.01)
    for t in range(STEPS):
        x, y = make_batch(t)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return snapshot(model, opt)


def _train(rank: int, mesh) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import Shard, distribute_tensor

    results = {}
    for mode, fira in CONFIGS:
        model = make_model()
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        assert all(is_dtensor(p) for p in model.parameters())
        opt = GaLoreAdamW(make_groups(model, fira, mode), lr=1e-2, weight_decay=0.01)
        for t in range(STEPS):
            x, y = make_batch(t)
            opt.zero_grad()
            # FSDP2's reduce-scatter averages the gradients: those of the global mean loss
            loss = nn.functional.mse_loss(model(x.chunk(WORLD)[rank]), y.chunk(WORLD)[rank])
            loss.backward()
            opt.step()
        results[f"{mode}-{fira}"] = snapshot(model, opt)
    # an unsupported layout is refused with a clear error, before any communication
    w = nn.Parameter(distribute_tensor(torch.zeros(6, 4), mesh, [Shard(1)]))
    try:
        sharded_projected_step(None, w, {}, {})
    except NotImplementedError as err:
        results["shard1_error"] = str(err)
    return results


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    try:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD, timeout=timedelta(seconds=60))
        try:
            torch.save(_train(rank, init_device_mesh("cpu", (WORLD,))), out)
            dist.barrier()
        finally:
            dist.destroy_process_group()
    except BaseException:
        Path(out + ".err").write_text(traceback.format_exc())
        raise


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """``{"ranks": [results of rank 0, rank 1], "ref": {fira: single-process snapshot}}``."""
    import torch.distributed.fsdp  # imported once here, not in each forked child

    ref = {fira: single_process(fira) for fira in (False, True)}
    tmp = tmp_path_factory.mktemp("fsdp")
    with socket.socket() as sock:  # a free TCP port on 127.0.0.1 for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    outs = [str(tmp / f"rank{r}.pt") for r in range(WORLD)]
    procs = [ctx.Process(target=_worker, args=(r, port, outs[r])) for r in range(WORLD)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    errors = [Path(o + ".err").read_text() for o in outs if Path(o + ".err").exists()]
    codes = [p.exitcode for p in procs]
    assert codes == [0] * WORLD and not errors, f"exit codes {codes}\n" + "\n".join(errors)
    return {"ranks": [torch.load(o, weights_only=True) for o in outs], "ref": ref}


def _align_signs(got: dict, ref: dict, shape: torch.Size, label: str) -> dict:
    """``got``'s state of a projected weight with its basis signs flipped to ``ref``'s."""
    cos = (got["basis"] * ref["basis"]).sum(0)  # [r]: the bases are orthonormal
    assert torch.allclose(cos.abs(), torch.ones_like(cos), atol=TOL_STATE), (label, cos)
    sign = torch.where(cos < 0, -1.0, 1.0)
    left = resolve_side("std", shape) == "left"  # M: [r, n] (left) / [m, r] (right)
    return {**got, "basis": got["basis"] * sign,
            "exp_avg": got["exp_avg"] * (sign[:, None] if left else sign)}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("mode,fira", CONFIGS)
def test_fsdp2_two_gloo_ranks_equal_single_process(runs, mode, fira):
    ref = runs["ref"][fira]
    for rank, res in enumerate(runs["ranks"]):
        got = res[f"{mode}-{fira}"]
        label = f"rank {rank}, mode={mode}, fira={fira}"
        assert got["params"].keys() == ref["params"].keys()
        for name, p in ref["params"].items():
            err = _rel(got["params"][name], p)
            assert err <= TOL_PARAM, (label, "parameter", name, err)
        assert got["state"].keys() == ref["state"].keys()
        for name, s in ref["state"].items():
            mine = got["state"][name]
            assert mine.keys() == s.keys(), (label, name)
            if "basis" in s:
                mine = _align_signs(mine, s, ref["params"][name].shape, f"{label}, {name}")
            for key, v in s.items():
                g = mine[key]
                assert g.shape == v.shape, (label, name, key, g.shape, v.shape)
                if key == "step":
                    assert int(g) == int(v) == STEPS, (label, name)
                else:
                    err = _rel(g, v)
                    assert err <= TOL_STATE, (label, "state", name, key, err)


@pytest.mark.parametrize("mode,fira", CONFIGS)
def test_fsdp2_state_identical_across_ranks(runs, mode, fira):
    a, b = (res[f"{mode}-{fira}"] for res in runs["ranks"])
    for name, s in a["state"].items():
        for key, v in s.items():
            assert torch.equal(v, b["state"][name][key]), (mode, fira, name, key)
    # the moments of the projected weights are GaLore-sized, not weight-sized
    assert a["state"]["0.weight"]["exp_avg"].shape == (24, 4)  # right side: [m, r]
    assert a["state"]["2.weight"]["exp_avg"].shape == (4, 24)  # left side: [r, n]


def test_sharded_mode_refuses_other_layouts(runs):
    for res in runs["ranks"]:
        msg = res["shard1_error"]
        assert "Shard(dim=1)" in msg and "mode='gather'" in msg, msg


def test_helpers_refuse_plain_tensors():
    p = nn.Parameter(torch.zeros(3, 2))
    p.grad = torch.zeros(3, 2)
    assert not is_dtensor(p)
    with pytest.raises(TypeError, match="expected a DTensor"), full_param(p):
        pass
    with pytest.raises(ValueError, match="mode: expected one of"):
        step_dtensor_param(None, p, {"rank": 2}, {}, mode="scatter")
