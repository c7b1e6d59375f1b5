"""S4D, S4, S5 and Mamba: shapes, recurrent step == convolution/scan mode, stability of both
discretisations, state passing, masks, gradients."""

from __future__ import annotations

import pytest
import torch

from subspace_ssm import S4, S4D, S5, Mamba, cauchy_conj, cauchy_ref
from subspace_ssm.scan import linear_scan, linear_scan_ref

TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _run_steps(layer, u, state):
    ys = []
    for t in range(u.shape[1]):
        y, state = layer.step(u[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def _rel_close(a, b, tol=1e-4):
    a, b = a.detach(), b.detach()
    assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# --- S4D --------------------------------------------------------------------------------------


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["legs", "inv", "lin", "real", "ptd"])
def test_s4d_step_matches_convolution_with_state_in_and_out(init, discretization):
    layer = S4D(6, 16, init=init, discretization=discretization, dt_min=0.01, dt_max=0.1)
    u = torch.randn(2, 17, 6)
    x0 = torch.randn(2, 6, layer.ssm.n_modes, dtype=torch.complex64)
    y, state = layer(u, initial_state=x0, return_state=True)
    assert y.shape == u.shape and state.shape == x0.shape
    y_rec, state_rec = _run_steps(layer, u, x0)
    _rel_close(y_rec, y)
    _rel_close(state_rec, state)


@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_s4d_discretisations_are_stable(discretization):
    layer = S4D(8, 32, init="lin", discretization=discretization, dt_min=1e-3, dt_max=1.0)
    log_a, _, _ = layer.ssm.discrete()
    assert torch.all(torch.exp(log_a).abs() < 1)
    with torch.no_grad():
        layer.ssm.log_dt.fill_(5.0)  # even with a huge step
    assert torch.all(torch.exp(layer.ssm.discrete()[0]).abs() < 1)


def test_s4d_state_passing_two_halves_equal_whole():
    layer = S4D(4, 8)
    u = torch.randn(3, 20, 4)
    y, s = layer(u, return_state=True)
    y1, s1 = layer(u[:, :9], return_state=True)
    y2, s2 = layer(u[:, 9:], initial_state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    torch.testing.assert_close(s2, s, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_s4d_padding_does_not_change_real_positions(bidirectional):
    layer = S4D(4, 8, bidirectional=bidirectional)
    u = torch.randn(2, 12, 4)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 7:] = False
    padded = u.clone()
    padded[1, 7:] = 100.0  # garbage in the padding
    y = layer(padded, mask=mask)
    torch.testing.assert_close(y[1, :7], layer(u[1:, :7])[0], **TOL)
    torch.testing.assert_close(y[0], layer(u[:1])[0], **TOL)
    if not bidirectional:
        _, state = layer(padded, mask=mask, return_state=True)
        torch.testing.assert_close(state[1], layer(u[1:, :7], return_state=True)[1][0], **TOL)


def test_s4d_bidirectional_sees_the_future_and_has_no_step():
    layer = S4D(4, 8, bidirectional=True)
    u = torch.randn(1, 10, 4)
    u2 = u.clone()
    u2[:, 8:] += 1.0
    assert not torch.allclose(layer(u)[:, :5], layer(u2)[:, :5])
    causal = S4D(4, 8)
    torch.testing.assert_close(causal(u)[:, :8], causal(u2)[:, :8])
    with pytest.raises(RuntimeError, match="no recurrent mode"):
        layer.step(u[:, 0], layer.default_state(1))
    with pytest.raises(ValueError, match="bidirectional"):
        layer(u, return_state=True)


def test_s4d_bad_inputs():
    layer = S4D(4, 8)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, L, 4\)"):
        layer(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="right padding"):
        layer(torch.randn(1, 3, 4), mask=torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match=r"state: expected a complex tensor of shape \(1, 4, 4\)"):
        layer.step(torch.randn(1, 4), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"init: expected one of"):
        S4D(4, 8, init="hippo")
    with pytest.raises(ValueError, match=r"discretization: expected one of"):
        S4D(4, 8, discretization="euler")


def _s4d_powers_exact(ssm, exponents):
    """``Ā^e`` for the given exponents ``[..., n]``: ``exp(e · log Ā)`` in float64 from the
    layer's own discrete parameters (the unblocked formula)."""
    log_a, Bb, C = (t.detach().to(torch.complex128) for t in ssm.discrete())
    return log_a, Bb, C, torch.exp(log_a[..., None] * exponents.to(torch.float64))


# long timescales (dt 1e-4: |Ā| within 5e-5 of 1, powers barely decay over 16k lags) as well
# as the default range; every init and both discretisations
@pytest.mark.parametrize("dt", [(1e-3, 1e-1), (1e-4, 1e-4)], ids=["dt-default", "dt-long"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["legs", "inv", "lin", "real", "ptd"])
def test_s4d_blocked_kernel_equals_exact_vandermonde(init, discretization, dt):
    layer = S4D(4, 32, init=init, discretization=discretization, dt_min=dt[0], dt_max=dt[1])
    for L in (1, 2, 17, 1000, 16384):
        with torch.no_grad():
            K = layer.ssm.kernel(L)
        assert K.shape == (1, 4, L) and K.dtype == torch.float32
        _, Bb, C, powers = _s4d_powers_exact(layer.ssm, torch.arange(L))
        W = C * Bb
        exact = 2 * torch.einsum("chm,hml->chl", W, powers).real
        err = float((K.double() - exact).abs().max())
        if init == "ptd":
            # PTD's eigenbasis is ill-conditioned: the terms C_n B̄_n Ā_nˡ are ~10³–10⁴ × |K|
            # and cancel, so float32 rounding of the terms alone (the unblocked float32
            # formula included) exceeds 1e-4·max|K|; bound the error by the terms' scale
            scale = float(2 * (W.abs()[..., None] * powers.abs()).sum(-2).max())
            assert err <= 1e-6 * scale, (L, err / scale)
        else:
            assert err <= 1e-4 * float(exact.abs().max()), (L, err / float(exact.abs().max()))


def test_s4d_blocked_kernel_gradients_equal_exact():
    layer = S4D(3, 16, init="ptd", discretization="bilinear", bidirectional=True).double()
    L = 300  # not a square: a partly used last block
    w = torch.randn(2, 3, L, dtype=torch.float64)

    def exact_kernel():
        log_a, Bb, C = layer.ssm.discrete()
        powers = torch.exp(log_a[..., None] * torch.arange(L, dtype=torch.float64))
        return 2 * torch.einsum("chm,hml->chl", C * Bb, powers).real

    grads = []
    for kernel in (lambda: layer.ssm.kernel(L), exact_kernel):
        layer.zero_grad()
        (kernel() * w).sum().backward()
        grads.append([p.grad.clone() for p in layer.ssm.parameters()])
    for blocked, exact in zip(*grads, strict=True):
        torch.testing.assert_close(blocked, exact, rtol=1e-9, atol=1e-9)


def test_s4d_state_in_and_out_equal_exact_at_long_L():
    layer = S4D(4, 16, init="lin", dt_min=1e-4, dt_max=1e-3)
    L = 5000
    u = torch.randn(2, L, 4)
    lengths = torch.tensor([L, 3001])
    x0 = torch.randn(2, 4, layer.ssm.n_modes, dtype=torch.complex64)
    _, Bb, C, powers = _s4d_powers_exact(layer.ssm, torch.arange(L + 1))
    # zero-input response 2·Re(Σ C Ā^{l+1} x0) and final state Ā^len x0 + B̄ Σ_k Ā^{len−1−k} u_k
    log_a32, _, C32 = layer.ssm.discrete()
    response = layer.ssm.state_to_output(x0, log_a32, C32[0], L)
    exact = 2 * torch.einsum("hm,bhm,hml->bhl", C[0], x0.to(torch.complex128),
                             powers[..., 1:]).real
    assert float((response.detach() - exact).abs().max()) <= 1e-4 * float(exact.abs().max())
    mask = torch.arange(L) < lengths[:, None]
    state = layer.ssm.final_state((u * mask[..., None]).transpose(1, 2), x0, lengths).detach()
    for i, n in enumerate(lengths.tolist()):
        u_i = u[i, :n].T.to(torch.complex128)  # [H, n]
        want = (Bb * torch.einsum("hk,hmk->hm", u_i, powers[..., :n].flip(-1))
                + powers[..., n] * x0[i].to(torch.complex128))
        assert float((state[i] - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_s4d_step_cache_follows_the_parameters_and_gradients_flow():
    layer = S4D(4, 8, init="inv")
    u = torch.randn(2, 9, 4)
    state = layer.default_state(2)
    with torch.inference_mode():
        layer.setup_step()
        _rel_close(_run_steps(layer, u, state)[0], layer(u))
    with torch.no_grad():  # a stale cache is never used
        layer.ssm.log_dt.add_(0.5)
        layer.ssm.B.mul_(2.0)
        _rel_close(_run_steps(layer, u, state)[0], layer(u))
    layer.load_state_dict(S4D(4, 8, init="inv", seed=1).state_dict())
    with torch.no_grad():
        _rel_close(_run_steps(layer, u, state)[0], layer(u))
    # with gradients on, step discretises in the graph: same gradients as convolution mode
    grads = []
    for run in (lambda: _run_steps(layer, u, state)[0], lambda: layer(u)):
        layer.zero_grad()
        run().square().sum().backward()
        grads.append([p.grad.clone() for p in layer.ssm.parameters()])
    for rec, conv in zip(*grads, strict=True):
        _rel_close(rec, conv)
    with torch.inference_mode():  # parameters without version counters: no cache, still right
        made = S4D(4, 8, init="inv")
        _rel_close(_run_steps(made, u, state)[0], made(u))
        made.ssm.log_dt.add_(0.5)
        _rel_close(_run_steps(made, u, state)[0], made(u))
    with pytest.raises(RuntimeError, match="no recurrent mode"):
        S4D(4, 8, bidirectional=True).setup_step()


# --- S4 ----------------------------------------------------------------------------------------


def test_cauchy_fast_path_equals_reference():
    g = torch.Generator().manual_seed(0)

    def c(*s):
        return torch.complex(torch.randn(*s, generator=g, dtype=torch.float64),
                             torch.randn(*s, generator=g, dtype=torch.float64))

    v, w, z = c(3, 6), c(3, 6), c(3, 9)
    full = cauchy_ref(torch.cat([v, v.conj()], -1), z, torch.cat([w, w.conj()], -1))
    torch.testing.assert_close(cauchy_conj(v, z, w), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [16, 15])
def test_s4_cauchy_kernel_equals_powers_of_the_dense_recurrence(L):
    ssm = S4(3, 8, dt_min=0.01, dt_max=0.1).double().ssm
    K = ssm.kernel(L)[0]
    Ab, Bb, C = ssm.dense(L)
    x, powers = Bb, []
    for _ in range(L):
        powers.append((C[0] * x).sum(-1).real)
        x = torch.einsum("hij,hj->hi", Ab, x)
    torch.testing.assert_close(K, torch.stack(powers, -1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("l_max", [12, 40])
def test_s4_step_matches_convolution_and_gradients_flow(l_max):
    layer = S4(4, 16, dt_min=0.01, dt_max=0.1, l_max=l_max)
    u = torch.randn(2, 12, 4)
    y = layer(u)
    layer.setup_step(12)
    y_rec, _ = _run_steps(layer, u, layer.default_state(2))
    _rel_close(y_rec, y.detach())
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    with pytest.raises(RuntimeError, match="setup_step"):
        S4(4, 8).step(u[:, 0], layer.default_state(2))


# --- S5 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("L", [1, 7, 16])
def test_parallel_scan_equals_sequential_loop(L):
    a = torch.randn(2, L, 3, dtype=torch.complex64)
    b = torch.randn(2, L, 3, dtype=torch.complex64)
    h0 = torch.randn(2, 3, dtype=torch.complex64)
    torch.testing.assert_close(linear_scan(a, b, 1, h0), linear_scan_ref(a, b, 1, h0), **TOL)
    torch.testing.assert_close(linear_scan(a.real, b.real, 1), linear_scan_ref(a.real, b.real, 1),
                               **TOL)


@pytest.mark.parametrize(("init", "disc"), [("legs", "zoh"), ("legs", "bilinear"), ("ptd", "zoh")])
def test_s5_convolution_mode_matches_scan_and_backward(init, disc):
    torch.manual_seed(0)
    layer = S5(5, 16, init=init, discretization=disc, blocks=2 if init == "legs" else 1)
    u = torch.randn(2, 300, 5, requires_grad=True)
    x0 = torch.randn(2, layer.n_modes, dtype=torch.complex64)
    for state in (None, x0):
        y_conv = layer(u, initial_state=state)                      # convolution mode
        y_scan, _ = layer(u, initial_state=state, return_state=True)  # parallel scan
        _rel_close(y_conv, y_scan)
        g_conv = torch.autograd.grad(y_conv.square().sum(), [u, layer.log_dt, layer.B])
        g_scan = torch.autograd.grad(y_scan.square().sum(), [u, layer.log_dt, layer.B])
        for a, b in zip(g_conv, g_scan, strict=True):
            _rel_close(a, b)


@pytest.mark.parametrize(("init", "disc"), [("legs", "zoh"), ("legs", "bilinear"), ("ptd", "zoh")])
def test_s5_step_matches_scan_with_state_in_and_out(init, disc):
    layer = S5(5, 16, init=init, discretization=disc, blocks=2 if init == "legs" else 1)
    u = torch.randn(2, 13, 5)
    x0 = torch.randn(2, layer.n_modes, dtype=torch.complex64)
    y, s = layer(u, initial_state=x0, return_state=True)
    y_rec, s_rec = _run_steps(layer, u, x0)
    _rel_close(y_rec, y)
    _rel_close(s_rec, s)
    assert torch.all(layer.discrete()[0].abs() < 1)


def test_s5_halves_and_masks():
    layer = S5(4, 8)
    u = torch.randn(2, 14, 4)
    y, s = layer(u, return_state=True)
    y1, s1 = layer(u[:, :6], return_state=True)
    y2, s2 = layer(u[:, 6:], initial_state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    torch.testing.assert_close(s2, s, **TOL)
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[0, 5:] = False
    ym, sm = layer(u, mask=mask, return_state=True)
    yr, sr = layer(u[:1, :5], return_state=True)
    torch.testing.assert_close(ym[0, :5], yr[0], **TOL)
    torch.testing.assert_close(sm[0], sr[0], **TOL)


# --- Mamba -------------------------------------------------------------------------------------


def test_mamba_step_matches_forward_and_halves_match_whole():
    layer = Mamba(8, d_state=4, d_conv=3)
    u = torch.randn(2, 11, 8)
    y, (conv, ssm) = layer(u, return_state=True)
    assert y.shape == u.shape and conv.shape == (2, 16, 2) and ssm.shape == (2, 16, 4)
    y_rec, (conv_r, ssm_r) = _run_steps(layer, u, layer.default_state(2))
    torch.testing.assert_close(y_rec, y, **TOL)
    torch.testing.assert_close(conv_r, conv, **TOL)
    torch.testing.assert_close(ssm_r, ssm, **TOL)
    y1, s1 = layer(u[:, :4], return_state=True)
    y2, s2 = layer(u[:, 4:], initial_state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, **TOL)
    torch.testing.assert_close(s2[1], ssm, **TOL)


def test_mamba_masks_and_gradients():
    layer = Mamba(8, d_state=4)
    u = torch.randn(2, 9, 8)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    padded = u.clone()
    padded[1, 6:] = 50.0
    y, (conv, ssm) = layer(padded, mask=mask, return_state=True)
    y_ref, (conv_ref, ssm_ref) = layer(u[1:, :6], return_state=True)
    torch.testing.assert_close(y[1, :6], y_ref[0], **TOL)
    torch.testing.assert_close(conv[1], conv_ref[0], **TOL)
    torch.testing.assert_close(ssm[1], ssm_ref[0], **TOL)
    y.square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mamba_ssm_backend_is_refused_without_it():
    layer = Mamba(8, d_state=4, scan_backend="mamba_ssm")
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        layer(torch.randn(1, 3, 8))
    with pytest.raises(ValueError, match="scan_backend: expected one of"):
        Mamba(8, scan_backend="cuda")


@pytest.mark.parametrize("make", [lambda: S4D(4, 8, init="ptd"), lambda: S5(4, 8, init="ptd"),
                                  lambda: S4D(4, 8, bidirectional=True)],
                         ids=["s4d-ptd", "s5-ptd", "s4d-bidir"])
def test_gradients_reach_every_parameter(make):
    layer = make()
    layer(torch.randn(2, 10, 4)).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
