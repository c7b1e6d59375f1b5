"""``subspace_core.ops.projected_adam``: the reference against independent formulations
(torch.optim.AdamW, explicit projectors, a host-side Fira limiter), the Triton kernels
under the CPU interpreter and on GPU against the reference, dispatch, the custom op, bad
input errors and the kernel benchmark."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from subspace_core.bench import registry as bench_registry
from subspace_core.bench import run_kernel_benchmarks
from subspace_core.ops import BackendUnavailable, triton_available
from subspace_core.ops import projected_adam as pa_module
from subspace_core.ops.projected_adam import (
    FIRA_GAMMA,
    projected_adam,
    projected_adam_ref,
    projection_side,
)
from subspace_core.ops.projected_adam import bench as pa_bench
from subspace_core.testing import assert_close_to_ref

CPU = torch.device("cpu")
BETAS = (0.9, 0.999)
EPS = 1e-8


def _basis(rows: int, rank: int, *, seed: int = 0, dtype=torch.float32, device=CPU):
    gen = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(rows, rank, generator=gen, dtype=torch.float64)).Q
    return q.to(device, dtype)


def _grads(m: int, n: int, steps: int, *, seed: int = 1, scales=None, dtype=torch.float32,
           device=CPU):
    gen = torch.Generator().manual_seed(seed)
    scales = scales or [1.0] * steps
    return [(s * torch.randn(m, n, generator=gen)).to(device, dtype) for s in scales]


def _state(m: int, n: int, rank: int, side: str, *, fira: bool, device=CPU):
    shape = (rank, n) if side == "left" else (m, rank)
    fira_state = torch.zeros((), device=device) if fira else None
    return torch.zeros(shape, device=device), torch.zeros(shape, device=device), fira_state


def _shape(side: str) -> tuple[int, int]:
    # Shapes for which GaLore's own rule picks `side`, so both the rule and the op agree.
    return (24, 40) if side == "left" else (40, 24)


# --- the reference against independent formulations -------------------------------------


def test_projection_side_follows_galore_std():
    assert projection_side((64, 48)) == "right"  # m >= n: P is [n, r]
    assert projection_side((48, 64)) == "left"  # m < n: P is [m, r]
    assert projection_side((32, 32)) == "right"
    with pytest.raises(ValueError, match=r"shape: expected a 2-D weight shape"):
        projection_side((2, 3, 4))


def _adamw_in_subspace(W0, grads, P, side, *, lr, alpha, weight_decay):
    """Expected trajectory, float64: torch.optim.AdamW on R as a parameter gives N (lr=1,
    parameter reset to 0 before each step so -param is exactly its update), then
    W <- W (1 - lr wd) - lr alpha back(N)."""
    left = side == "left"
    p = P.double()
    r_param = torch.nn.Parameter(torch.zeros(
        (P.shape[1], W0.shape[1]) if left else (W0.shape[0], P.shape[1]), dtype=torch.float64))
    opt = torch.optim.AdamW([r_param], lr=1.0, betas=BETAS, eps=EPS, weight_decay=0.0)
    w = W0.double().clone()
    trajectory = []
    for g in grads:
        g = g.double()
        r_param.grad = p.T @ g if left else g @ p
        with torch.no_grad():
            r_param.zero_()
        opt.step()
        n_upd = -r_param.detach()
        back = p @ n_upd if left else n_upd @ p.T
        w = w * (1 - lr * weight_decay) - lr * alpha * back
        state = opt.state[r_param]
        trajectory.append((w.clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone(),
                           n_upd, r_param.grad.clone()))
    return trajectory


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("side", ["left", "right"])
def test_reference_is_adamw_on_the_projected_gradient(side, weight_decay):
    m, n = _shape(side)
    rank = 6
    P = _basis(m if side == "left" else n, rank)
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(2))
    grads = _grads(m, n, 5, scales=[1.0, 0.3, 2.0, 1.0, 0.5])
    expected = _adamw_in_subspace(W, grads, P, side, lr=0.05, alpha=0.25,
                                  weight_decay=weight_decay)
    M, V, _ = _state(m, n, rank, side, fira=False)
    for t, (g, (w_exp, m_exp, v_exp, _, _)) in enumerate(zip(grads, expected, strict=True), 1):
        projected_adam_ref(W, g, P, M, V, step=t, side=side, lr=0.05, alpha=0.25,
                           weight_decay=weight_decay)
        assert_close_to_ref(M, m_exp.float(), scale=10, msg=f"M step {t}: ")
        assert_close_to_ref(V, v_exp.float(), scale=10, msg=f"V step {t}: ")
        assert_close_to_ref(W, w_exp.float(), scale=10, msg=f"W step {t}: ")


@pytest.mark.parametrize("side", ["left", "right"])
def test_full_rank_identity_basis_is_exactly_torch_adamw(side):
    """P = I (r = the basis dimension): the op must be torch.optim.AdamW on W, decay included."""
    m, n = _shape(side)
    P = torch.eye(m if side == "left" else n)
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(3))
    param = torch.nn.Parameter(W.clone())
    opt = torch.optim.AdamW([param], lr=0.01, betas=BETAS, eps=EPS, weight_decay=0.1)
    M, V, _ = _state(m, n, P.shape[1], side, fira=False)
    for t, g in enumerate(_grads(m, n, 4), 1):
        param.grad = g.clone()
        opt.step()
        projected_adam_ref(W, g, P, M, V, step=t, side=side, lr=0.01, weight_decay=0.1)
        assert_close_to_ref(W, param.detach(), msg=f"step {t}: ")


def _fira_expected(W0, grads, P, side, *, lr, alpha, weight_decay, gamma=FIRA_GAMMA):
    """Fira written differently: explicit projector I - P Pᵀ for the residual, AdamW in the
    subspace for N, and the limiter as host-side Python floats with an explicit branch."""
    left = side == "left"
    p = P.double()
    eye = torch.eye(p.shape[0], dtype=torch.float64)
    complement = eye - p @ p.T
    traj = _adamw_in_subspace(W0, grads, P, side, lr=lr, alpha=alpha, weight_decay=0.0)
    w = W0.double().clone()
    prev = None
    out = []
    for t, (g, (_, _, _, n_upd, r)) in enumerate(zip(grads, traj, strict=True), 1):
        g = g.double()
        residual = complement @ g if left else g @ complement
        if left:  # one factor per column of R [r, n] -> scales the columns of S
            phi = n_upd.norm(dim=0) / (r.norm(dim=0) + 1e-8)
            scaled = residual * phi.unsqueeze(0)
        else:  # one factor per row of R [m, r] -> scales the rows of S
            phi = n_upd.norm(dim=1) / (r.norm(dim=1) + 1e-8)
            scaled = residual * phi.unsqueeze(1)
        c_t = math.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t)
        nu = scaled.norm().item() / c_t
        limited = False
        if prev is not None and nu / (prev + 1e-8) > gamma:
            factor = (nu / (prev + 1e-8)) / gamma
            scaled, nu, limited = scaled / factor, nu / factor, True
        prev = nu
        back = p @ n_upd if left else n_upd @ p.T
        w = w * (1 - lr * weight_decay) - lr * (alpha * back + scaled)
        out.append((w.clone(), nu, limited))
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("side", ["left", "right"])
def test_reference_fira_matches_an_independent_formulation(side, weight_decay):
    m, n = _shape(side)
    rank = 5
    P = _basis(m if side == "left" else n, rank)
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(4))
    grads = _grads(m, n, 6, scales=[1.0, 1.0, 4.0, 0.25, 3.0, 1.0])
    expected = _fira_expected(W, grads, P, side, lr=0.05, alpha=0.5, weight_decay=weight_decay)
    M, V, state = _state(m, n, rank, side, fira=True)
    for t, (g, (w_exp, nu_exp, _)) in enumerate(zip(grads, expected, strict=True), 1):
        projected_adam_ref(W, g, P, M, V, step=t, side=side, lr=0.05, alpha=0.5,
                           weight_decay=weight_decay, fira_state=state)
        assert_close_to_ref(state, torch.tensor(nu_exp), scale=10, msg=f"state step {t}: ")
        assert_close_to_ref(W, w_exp.float(), scale=10, msg=f"W step {t}: ")
    limited = [lim for _, _, lim in expected]
    assert any(limited) and not all(limited[1:]), limited  # both branches were exercised


@pytest.mark.parametrize("side", ["left", "right"])
def test_fira_limiter_caps_growth_at_gamma(side):
    m, n = _shape(side)
    rank = 4
    P = _basis(m if side == "left" else n, rank)
    (g1,) = _grads(m, n, 1)
    # Same projected gradient R, ten times the out-of-subspace part: ‖φ ⊙ S‖ jumps ~10x.
    in_subspace = P @ (P.T @ g1) if side == "left" else (g1 @ P) @ P.T
    g2 = in_subspace + 10.0 * (g1 - in_subspace)
    W = torch.zeros(m, n)
    M, V, state = _state(m, n, rank, side, fira=True)
    projected_adam_ref(W, g1, P, M, V, step=1, side=side, lr=1.0, fira_state=state)
    first = state.item()
    assert first > 0  # no history: stored unlimited
    # Step 2 without Fira on copies gives the GaLore part; the rest of the W change is the
    # applied residual, whose norm must be exactly c_2 * gamma * first.
    W_galore, M2, V2 = W.clone(), M.clone(), V.clone()
    projected_adam_ref(W_galore, g2, P, M2, V2, step=2, side=side, lr=1.0)
    W_before = W.clone()
    projected_adam_ref(W, g2, P, M, V, step=2, side=side, lr=1.0, fira_state=state)
    assert state.item() == pytest.approx(FIRA_GAMMA * first, rel=1e-6)
    applied = -(W - W_before) - (-(W_galore - W_before))
    c_2 = math.sqrt(1 - BETAS[1] ** 2) / (1 - BETAS[0] ** 2)
    assert applied.norm().item() == pytest.approx(c_2 * FIRA_GAMMA * first, rel=1e-4)


def test_fira_residual_vanishes_at_full_rank():
    """With P = I nothing is outside the subspace: Fira equals GaLore."""
    m, n = _shape("right")
    P = torch.eye(n)
    W1 = torch.randn(m, n)
    W2 = W1.clone()
    M1, V1, _ = _state(m, n, n, "right", fira=False)
    M2, V2, state = _state(m, n, n, "right", fira=True)
    for t, g in enumerate(_grads(m, n, 3), 1):
        projected_adam_ref(W1, g, P, M1, V1, step=t, side="right", lr=0.1)
        projected_adam_ref(W2, g, P, M2, V2, step=t, side="right", lr=0.1, fira_state=state)
    assert_close_to_ref(W2, W1)
    assert state.item() < 1e-4


def test_reference_low_precision_weights_update_through_float32():
    m, n = _shape("left")
    P = _basis(m, 4)
    W32 = torch.randn(m, n)
    W16 = W32.to(torch.bfloat16)
    g = _grads(m, n, 1)[0]
    M1, V1, _ = _state(m, n, 4, "left", fira=False)
    M2, V2, _ = _state(m, n, 4, "left", fira=False)
    projected_adam_ref(W32, g, P, M1, V1, step=1, side="left", lr=0.1)
    projected_adam_ref(W16, g.to(torch.bfloat16), P.to(torch.bfloat16), M2, V2, step=1,
                       side="left", lr=0.1)
    assert W16.dtype == torch.bfloat16
    assert_close_to_ref(W16, W32)


# --- bad inputs ----------------------------------------------------------------------------


def _good(side="right"):
    m, n = 12, 8
    rank = 3
    P = torch.linalg.qr(torch.randn(m if side == "left" else n, rank)).Q
    M, V, state = _state(m, n, rank, side, fira=True)
    return dict(W=torch.randn(m, n), G=torch.randn(m, n), P=P, M=M, V=V, step=1, side=side,
                fira_state=state)


@pytest.mark.parametrize(
    ("change", "error", "pattern"),
    [
        ({"G": torch.randn(12, 9)}, ValueError,
         r"G: expected shape \(12, 8\) \(the shape of W\), got \(12, 9\)"),
        ({"P": torch.randn(12, 3)}, ValueError,
         r"P: expected shape \(n=8, r\) with 1 <= r <= 8 for side='right'.*got \(12, 3\)"),
        ({"side": "left"}, ValueError,
         r"P: expected shape \(m=12, r\) .*for side='left'.*got \(8, 3\)"),
        ({"M": torch.zeros(12, 3, dtype=torch.float16)}, TypeError,
         r"M: expected dtype torch.float32, got torch.float16"),
        ({"V": torch.zeros(3, 8)}, ValueError,
         r"V: expected shape \(12, 3\) \(the projected gradient for side='right'\), got \(3, 8\)"),
        ({"W": torch.randn(12, 8).double()}, TypeError,
         r"W: expected dtype float32, float16, bfloat16, got torch.float64"),
        ({"W": torch.randn(12, 8, 1)}, ValueError, r"W: expected a 2-D tensor, got shape"),
        ({"side": "up"}, ValueError, r"side: expected one of \('left', 'right'\), got 'up'"),
        ({"step": 0}, ValueError, r"step: expected an int >= 1.*got 0"),
        ({"fira_state": torch.zeros(1)}, ValueError,
         r"fira_state: expected a float32 scalar tensor \(shape \(\)\), got torch.float32 of "
         r"shape \(1,\)"),
        ({"G": torch.randn(12, 8, device="meta")}, ValueError,
         r"G: expected device cpu \(the device of W\), got meta"),
    ],
)
def test_bad_inputs_name_argument_expected_and_actual(change, error, pattern):
    args = {**_good(), **change}
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    with pytest.raises(error, match=pattern):
        projected_adam(W, G, P, M, V, **args)
    with pytest.raises(error, match=pattern):  # the reference validates the same way
        projected_adam_ref(W, G, P, M, V, **args)


def test_bad_hyperparameters():
    args = _good()
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    with pytest.raises(ValueError, match=r"beta2: expected a value in \[0, 1\), got 1.0"):
        projected_adam(W, G, P, M, V, beta2=1.0, **args)
    with pytest.raises(ValueError, match=r"fira_gamma: expected a growth limit >= 1, got 0.5"):
        projected_adam(W, G, P, M, V, fira_gamma=0.5, **args)


# --- dispatch ------------------------------------------------------------------------------


def test_auto_on_cpu_runs_the_reference(monkeypatch):
    calls = []
    real = pa_module.projected_adam_ref
    monkeypatch.setattr(pa_module, "projected_adam_ref",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    args = _good()
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    before = W.clone()
    projected_adam(W, G, P, M, V, **args)
    projected_adam(W, G, P, M, V, backend="torch", **{**args, "step": 2})
    assert calls == [1, 1]
    assert not torch.equal(W, before)


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args = _good()
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    before = W.clone()
    expected = ("triton is not installed" if not triton_available()
                else r"projected_adam: backend='triton' needs CUDA tensors")
    with pytest.raises(BackendUnavailable, match=expected):
        projected_adam(W, G, P, M, V, backend="triton", **args)
    assert torch.equal(W, before)


def test_bad_backend_name():
    args = _good()
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    with pytest.raises(ValueError, match="backend: expected one of"):
        projected_adam(W, G, P, M, V, backend="cuda", **args)


# --- Triton under the CPU interpreter ------------------------------------------------------


@pytest.fixture
def interpreter(triton_interpreter):
    return triton_interpreter("subspace_core.ops.projected_adam.triton")


def _compare_backends(W, grads, P, side, *, fira, backend, device=CPU, scale=1.0, **hyper):
    """Run the reference and ``backend`` side by side for len(grads) steps, compare all state."""
    m, n = W.shape
    rank = P.shape[1]
    ref_state = [W.clone(), *_state(m, n, rank, side, fira=fira, device=device)]
    out_state = [W.clone(), *_state(m, n, rank, side, fira=fira, device=device)]
    for t, g in enumerate(grads, 1):
        for (w, mom1, mom2, st), bk in ((ref_state, "torch"), (out_state, backend)):
            projected_adam(w, g, P, mom1, mom2, step=t, side=side, fira_state=st, backend=bk,
                           **hyper)
        for name, a, e in zip("WMVS", out_state, ref_state, strict=True):
            if e is not None:
                assert_close_to_ref(a, e, scale=scale, msg=f"{name} step {t}: ")
    return out_state


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fira", [False, True], ids=["galore", "fira"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_triton_interpreter_matches_reference(interpreter, side, fira, dtype):
    m, n = (48, 64) if side == "left" else (64, 48)
    P = _basis(m if side == "left" else n, 8, dtype=dtype)
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(5)).to(dtype)
    grads = _grads(m, n, 3, scales=[1.0, 5.0, 0.5], dtype=dtype)
    _compare_backends(W, grads, P, side, fira=fira, backend="triton", lr=0.05, alpha=0.5,
                      weight_decay=0.1)


@pytest.mark.interpret
@pytest.mark.parametrize("side", ["left", "right"])
def test_triton_interpreter_strided_inputs_and_ragged_tiles(interpreter, side):
    """Transposed W/G views, a sliced P, transposed moments, sizes off every block size and
    a rank spanning two k-blocks."""
    m, n, rank = (45, 70, 40) if side == "left" else (70, 45, 40)
    gen = torch.Generator().manual_seed(6)
    W_ref = torch.randn(m, n, generator=gen)
    W = W_ref.T.contiguous().T  # same values, column-major
    grads = [g.T.contiguous().T for g in _grads(m, n, 2)]
    rows = m if side == "left" else n
    P = torch.cat([_basis(rows, rank), torch.randn(rows, 3)], dim=1)[:, :rank]
    shape = (rank, n) if side == "left" else (m, rank)
    M_t, V_t = torch.zeros(shape[::-1]).T, torch.zeros(shape[::-1]).T
    M_r, V_r, st_r = _state(m, n, rank, side, fira=True)
    st_t = torch.zeros(())
    for t, g in enumerate(grads, 1):
        projected_adam(W_ref, g.contiguous(), P.contiguous(), M_r, V_r, step=t, side=side,
                       lr=0.05, fira_state=st_r, backend="torch")
        projected_adam(W, g, P, M_t, V_t, step=t, side=side, lr=0.05, fira_state=st_t,
                       backend="triton")
    assert not W.is_contiguous() and not M_t.is_contiguous()
    for name, a, e in (("W", W, W_ref), ("M", M_t, M_r), ("V", V_t, V_r), ("S", st_t, st_r)):
        assert_close_to_ref(a, e, msg=f"{name}: ")


@pytest.mark.interpret
def test_triton_bf16_on_cpu_is_refused_not_miscomputed(interpreter):
    args = _good()
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    with pytest.raises(BackendUnavailable, match="bfloat16 tensors need CUDA"):
        projected_adam(W.bfloat16(), G.bfloat16(), P, M, V, backend="triton", **args)


@pytest.mark.interpret
def test_custom_op_is_registered_and_passes_opcheck(interpreter):
    op = torch.ops.subzoo.projected_adam
    assert "Tensor(a0!) W" in str(op.default._schema)
    m, n, rank = 32, 24, 4
    P = _basis(n, rank)
    W, G = torch.randn(m, n), torch.randn(m, n)
    M, V = torch.zeros(m, rank), torch.rand(m, rank)
    torch.library.opcheck(op.default, (W, G, P, M, V, torch.zeros(()), 3, "right", 0.1, 0.9,
                                       0.999, 1e-8, 0.1, 0.5, FIRA_GAMMA))


@pytest.mark.interpret
def test_triton_step_traces_under_torch_compile(interpreter):
    m, n, rank = 32, 24, 4
    P = _basis(n, rank)
    grads = _grads(m, n, 3)

    def step(W, G, M, V, state, t):
        projected_adam(W, G, P, M, V, step=t, side="right", lr=0.1, fira_state=state,
                       backend="triton")
        return W.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    W = torch.randn(m, n)
    W_ref = W.clone()
    M, V, st = _state(m, n, rank, "right", fira=True)
    M_r, V_r, st_r = _state(m, n, rank, "right", fira=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dynamo notes the lru_cache in dispatch
        for t, g in enumerate(grads, 1):
            compiled(W, g, M, V, st, t)
            projected_adam_ref(W_ref, g, P, M_r, V_r, step=t, side="right", lr=0.1,
                               fira_state=st_r)
    assert_close_to_ref(W, W_ref)
    assert_close_to_ref(st, st_r)


# --- GPU parity ------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16],
                         ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("fira", [False, True], ids=["galore", "fira"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_triton_gpu_matches_reference(side, fira, dtype):
    pytest.importorskip("triton")
    cuda = torch.device("cuda")
    m, n = (384, 520) if side == "left" else (520, 384)
    P = _basis(m if side == "left" else n, 40, dtype=dtype, device=cuda)
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(7)).to(cuda, dtype)
    grads = _grads(m, n, 4, scales=[1.0, 5.0, 0.5, 1.0], dtype=dtype, device=cuda)
    _compare_backends(W, grads, P, side, fira=fira, backend="triton", device=cuda, scale=10,
                      lr=0.05, alpha=0.5, weight_decay=0.1)


@pytest.mark.gpu
@needs_cuda
def test_auto_picks_triton_for_cuda_tensors(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.delenv("SUBZOO_BACKEND", raising=False)
    from subspace_core.ops.projected_adam import triton as pa_triton

    calls = []
    real = pa_triton.projected_adam_triton
    monkeypatch.setattr(pa_triton, "projected_adam_triton",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    args = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in _good().items()}
    W, G, P, M, V = (args.pop(k) for k in "WGPMV")
    projected_adam(W, G, P, M, V, **args)
    assert calls == [1]


# --- kernel benchmark ------------------------------------------------------------------------


@pytest.fixture
def private_kernel_registry(monkeypatch):
    monkeypatch.setattr(bench_registry, "_KERNEL_BENCHMARKS",
                        dict(bench_registry._KERNEL_BENCHMARKS))


def test_bench_register_is_idempotent(private_kernel_registry):
    kb = pa_bench.register()
    assert pa_bench.register() is kb
    assert bench_registry.get_kernel_benchmark("projected_adam") is kb
    assert kb.supports("torch", CPU) and not kb.supports("triton", CPU)
    assert kb.supports("triton", torch.device("cuda"))
    full = kb.cases(False)
    assert {"m": 4096, "n": 4096, "rank": 128, "dtype": "bfloat16", "fira": True} in full
    assert len(full) > 2


def test_bench_quick_runs_the_reference_on_cpu(private_kernel_registry):
    pa_bench.register()
    for case in pa_bench.benchmark().cases(True):
        W, G, P, M, V, state, side = pa_bench.make_inputs(case, CPU)
        projected_adam(W, G, P, M, V, step=1, side=side, fira_state=state)  # valid inputs
    report = run_kernel_benchmarks(["projected_adam"], None, CPU, quick=True)
    methods = {m["method"] for m in report.measurements}
    assert methods == {"torch"}
    assert len(report.measurements) == len(pa_bench.benchmark().cases(True))
    assert all(m["value"] > 0 for m in report.measurements)
