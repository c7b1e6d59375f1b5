"""DDP with 2 gloo ranks on CPU equals single-process training on the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import torch
from torch import nn

from subspace_peft.optim import GaLoreAdamW, galore_param_groups

STEPS = 4
GLOBAL_BATCH = 16

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel as DDP

    from subspace_peft.optim import GaLoreAdamW, galore_param_groups

    rank, world, init_method, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    opt = GaLoreAdamW(galore_param_groups(model, [r"^[02]$"], rank=4, update_proj_gap=2,
                                          scale=0.5, fira=True), lr=1e-2, weight_decay=0.01)
    ddp = DDP(model)
    for t in range({steps}):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn({batch}, 8, generator=g), torch.randn({batch}, 3, generator=g)
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        opt.zero_grad()
        nn.functional.mse_loss(ddp(xs), ys).backward()  # DDP averages: = global mean loss
        opt.step()
    if rank == 0:
        torch.save(model.state_dict(), out)
    dist.barrier()
    dist.destroy_process_group()
    """
).replace("{steps}", str(STEPS)).replace("{batch}", str(GLOBAL_BATCH))


def single_process() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 16), nn.Tanh(),
                          nn.Linear(16, 3))
    opt = GaLoreAdamW(galore_param_groups(model, [r"^[02]$"], rank=4, update_proj_gap=2,
                                          scale=0.5, fira=True), lr=1e-2, weight_decay=0.01)
    for t in range(STEPS):
        g = torch.Generator().manual_seed(t)
        x, y = torch.randn(GLOBAL_BATCH, 8, generator=g), torch.randn(GLOBAL_BATCH, 3, generator=g)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    return model


def test_ddp_two_gloo_ranks_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ddp.pt"
    with socket.socket() as sock:  # a free TCP port on 127.0.0.1 for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", f"tcp://127.0.0.1:{port}",
                               str(out)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    ddp_state = torch.load(out, weights_only=True)
    ref = single_process()
    for name, p in ref.state_dict().items():
        err = float((ddp_state[name] - p).norm() / p.norm())
        assert err <= 1e-5, (name, err)
