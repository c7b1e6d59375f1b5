"""8-bit block-wise optimizer moments (GaLoreAdamW(state_bits=8) / GaLoreAdamW8bit): the
quantisation maps, state memory, training close to float32, weights_only and bit-exact
resume."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from subspace_peft.optim import GaLoreAdamW, GaLoreAdamW8bit, blockwise, galore_param_groups


def make_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                         nn.Linear(128, 10))


def data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X, A = torch.randn(512, 64, generator=g), torch.randn(64, 10, generator=g)
    idx = torch.randint(0, 512, (64,), generator=torch.Generator().manual_seed(step))
    return X[idx], torch.tanh(X[idx] @ A)


def groups(model: nn.Module, projected: bool, **options) -> list[dict]:
    if projected:
        return galore_param_groups(model, [r"^[02]$"], rank=16, update_proj_gap=40, scale=1.0,
                                   **options)
    return [{"params": list(model.parameters()), **options}]


def train(model: nn.Module, opt: torch.optim.Optimizer, steps) -> list[float]:
    losses = []
    for t in steps:
        x, y = data(t)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ------------------------------------------------------------------- the maps
def test_block_layout_pads_less_than_one_element_per_block():
    assert blockwise.block_layout(1000, 256) == (4, 250)
    assert blockwise.block_layout(1001, 256) == (4, 251)
    assert blockwise.block_layout(100, 256) == (1, 100)
    for n in (1, 255, 256, 257, 4099, 44032):
        b, g = blockwise.block_layout(n, 256)
        assert g <= 256 and 0 <= b * g - n < b


def test_second_moment_map_has_no_zero_and_keeps_large_entries_accurate():
    """√V is stored with codes (k + 1)·s: a zero or tiny V next to a large one in its block
    comes back as at least (absmax(√V) / 256)², never 0 (no m / ε blow-up)."""
    V = torch.zeros(3, 300)
    V[0, 0], V[0, 1], V[1] = 4.0, 1e-12, torch.rand(300) + 0.5
    codes, scales = blockwise.quantize_sqrt_unsigned(V, 256, seed=0)
    assert codes.dtype == torch.uint8 and scales.dtype == torch.float32
    back = blockwise.dequantize_sqrt_unsigned(codes, scales, V.shape)
    assert back.shape == V.shape and (back > 0).all()
    block_max = V.reshape(-1)[: codes.shape[1]].max().sqrt()
    assert float(back.reshape(-1)[: codes.shape[1]].min()) >= float(block_max / 256) ** 2 * 0.99
    big = V >= 0.5
    rel = ((back[big].sqrt() - V[big].sqrt()) / V[big].sqrt()).abs()
    assert float(rel.max()) < 2 / 256 * math.sqrt(1.5 / 0.5)  # within two codes of √V


def test_stochastic_rounding_is_unbiased_and_seeded():
    torch.manual_seed(0)
    M = torch.randn(4096) * 1e-3
    V = torch.rand(4096) * 1e-6
    m_mean, v_mean = torch.zeros_like(M), torch.zeros_like(V)
    trials = 200
    state: dict = {}
    for seed in range(trials):
        state.clear()
        with blockwise.dequantized_moments(state, ("exp_avg", "exp_avg_sq"), 256, 0,
                                           seed=seed) as work:
            work["exp_avg"], work["exp_avg_sq"] = M.clone(), V.clone()
        assert "exp_avg" not in state and state["exp_avg_codes"].dtype == torch.int8
        with blockwise.dequantized_moments(state, ("exp_avg", "exp_avg_sq"), 256, 0) as work:
            m_mean += work["exp_avg"] / trials
            v_mean += work["exp_avg_sq"].sqrt() / trials
            work.clear()  # nothing to write back
    step_m = M.reshape(16, 256).abs().amax(1, keepdim=True) / 127
    assert float(((m_mean - M).reshape(16, 256).abs() / step_m).max()) < 0.3
    # √V above the first code is unbiased (below it the map rounds up, by design)
    u = V.sqrt().reshape(16, 256)
    step_v = u.amax(1, keepdim=True) / 256
    above = u > 2 * step_v
    err = ((v_mean.reshape(16, 256) - u).abs() / step_v)[above]
    assert float(err.max()) < 0.3
    a, b = {}, {}
    for s in (a, b):
        with blockwise.dequantized_moments(s, ("exp_avg",), 256, 0, seed=7) as work:
            work["exp_avg"] = M.clone()
    assert torch.equal(a["exp_avg_codes"], b["exp_avg_codes"])


# ------------------------------------------------------------------ optimizer
@pytest.mark.parametrize("projected", [False, True])
def test_state_bytes_are_a_quarter_of_float32(projected):
    """Bytes of the tensors the optimizer holds for the moments: codes + fp32 block scales,
    n (1 + 4/256) bytes per moment, against 4 n for float32."""
    fp32, q8 = make_model(), make_model()
    opt32 = GaLoreAdamW(groups(fp32, projected), lr=1e-3)
    opt8 = GaLoreAdamW8bit(groups(q8, projected), lr=1e-3, state_min_size=0)
    train(fp32, opt32, range(2))
    train(q8, opt8, range(2))
    moments32 = moments8 = 0
    for p32, p8 in zip(fp32.parameters(), q8.parameters(), strict=True):
        s32, s8 = opt32.state[p32], opt8.state[p8]
        n = s32["exp_avg"].numel()
        moments32 += 8 * n
        assert "exp_avg" not in s8 and "exp_avg_sq" not in s8
        b, g = blockwise.block_layout(n, 256)
        for key, dtype in (("exp_avg", torch.int8), ("exp_avg_sq", torch.uint8)):
            codes, scales = s8[key + "_codes"], s8[key + "_scales"]
            assert codes.dtype == dtype and codes.shape == (b, g)
            assert scales.dtype == torch.float32 and scales.shape == (b,)
            moments8 += codes.numel() + 4 * scales.numel()
        assert s8["moment_shape"].tolist() == list(s32["exp_avg"].shape)
    ratio = moments8 / moments32
    assert 0.25 <= ratio <= 0.25 * (1 + 4 / 256) + 0.01, ratio
    # everything held except the projector (the float32 basis is not a moment)
    total32 = sum(blockwise.state_nbytes({k: v for k, v in s.items() if k != "projector"})
                  for s in opt32.state.values())
    total8 = sum(blockwise.state_nbytes({k: v for k, v in s.items() if k != "projector"})
                 for s in opt8.state.values())
    assert total8 < 0.27 * total32  # steps and moment shapes included


@pytest.mark.parametrize("projected", [False, True])
def test_loss_curve_tracks_float32(projected):
    fp32, q8 = make_model(), make_model()
    a = train(fp32, GaLoreAdamW(groups(fp32, projected), lr=3e-3, weight_decay=0.01),
              range(120))
    b = train(q8, GaLoreAdamW8bit(groups(q8, projected), lr=3e-3, weight_decay=0.01,
                                  state_min_size=0), range(120))
    assert b[-1] < 0.5 * b[0]  # it trains
    dev = max(abs(x - y) / x for x, y in zip(a, b, strict=True))
    assert dev < 0.03, dev
    assert a != b  # the moments really were quantised


def test_small_tensors_keep_float32_moments_and_equal_the_float32_optimizer():
    """Below state_min_size (4096 elements by default) nothing is quantised."""
    ref, ours = make_model(), make_model()
    ref_opt = GaLoreAdamW(ref.parameters(), lr=1e-3, weight_decay=0.1)
    our_opt = GaLoreAdamW8bit([{"params": [ours[4].weight, ours[4].bias]},
                               {"params": [p for i in (0, 2) for p in ours[i].parameters()],
                                "state_min_size": 10**9}], lr=1e-3, weight_decay=0.1)
    train(ref, ref_opt, range(3))
    train(ours, our_opt, range(3))
    for a, b in zip(ref.parameters(), ours.parameters(), strict=True):
        assert torch.equal(a, b)
        assert our_opt.state[b]["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize("config", [{}, {"fira": True}])
def test_resume_is_bit_exact_and_weights_only(config, tmp_path):
    def make_opt(model):
        return GaLoreAdamW8bit(galore_param_groups(model, [r"^[02]$"], rank=16,
                                                   update_proj_gap=3, **config),
                               lr=1e-3, weight_decay=0.01, state_min_size=0)

    full = make_model()
    train(full, make_opt(full), range(8))
    first = make_model()
    first_opt = make_opt(first)
    train(first, first_opt, range(4))  # refreshes (with moment re-projection) at 0 and 3
    torch.save({"model": first.state_dict(), "optim": first_opt.state_dict()},
               tmp_path / "c.pt")
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = make_model(seed=3)
    resumed.load_state_dict(ckpt["model"])
    opt = make_opt(resumed)
    opt.load_state_dict(ckpt["optim"])
    assert opt.state[resumed[0].weight]["exp_avg_codes"].dtype == torch.int8
    train(resumed, opt, range(4, 8))  # across the refresh at 6
    for a, b in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_state_bits_is_a_clear_error():
    with pytest.raises(ValueError, match=r"state_bits: expected None or 8, got 4"):
        GaLoreAdamW(make_model().parameters(), state_bits=4)
    with pytest.raises(ValueError, match=r"state_block_size: expected an int >= 2, got 1"):
        GaLoreAdamW8bit(make_model().parameters(), state_block_size=1)
