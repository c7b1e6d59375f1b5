"""``subspace_core.ops.lowrank_linear``: ``lowrank_linear`` and ``svd_linear`` references
against explicit compositions and gradcheck, the fused Triton kernel (forward and backward)
under the CPU interpreter and on GPU against autograd of the references, dispatch, the
custom ops, bad inputs and the kernel benchmarks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from subspace_core.bench import registry as bench_registry
from subspace_core.bench import run_kernel_benchmarks
from subspace_core.ops import BackendUnavailable, triton_available
from subspace_core.ops import lowrank_linear as lr_module
from subspace_core.ops.lowrank_linear import bench as lr_bench
from subspace_core.ops.lowrank_linear import (
    lowrank_linear,
    lowrank_linear_ref,
    svd_linear,
    svd_linear_ref,
)
from subspace_core.testing import assert_close_to_ref


def _t(shape, gen, dtype=torch.float64, device="cpu", std=None, grad=False):
    std = shape[0] ** -0.5 if std is None else std
    t = (torch.randn(shape, generator=gen, dtype=torch.float64) * std).to(device, dtype)
    return t.requires_grad_(grad)


def _lowrank_args(lead=(2, 5), d_in=12, d_out=10, r=3, *, seed=0, dtype=torch.float64,
                  device="cpu", bias=True, grads=(True, True, True, True, True)):
    g = torch.Generator().manual_seed(seed)
    x = _t((*lead, d_in), g, dtype, device, std=1.0, grad=grads[0])
    W = _t((d_in, d_out), g, dtype, device, grad=grads[1])
    A = _t((d_in, r), g, dtype, device, grad=grads[2])
    B = _t((r, d_out), g, dtype, device, grad=grads[3])
    b = _t((d_out,), g, dtype, device, std=0.5, grad=grads[4]) if bias else None
    return x, W, A, B, b


def _svd_args(lead=(2, 5), d_in=12, d_out=10, k=6, *, seed=0, dtype=torch.float64,
              device="cpu", bias=True, grads=(True, True, True, True, True)):
    g = torch.Generator().manual_seed(seed)
    x = _t((*lead, d_in), g, dtype, device, std=1.0, grad=grads[0])
    U = _t((d_in, k), g, dtype, device, grad=grads[1])
    S = (torch.rand(k, generator=g, dtype=torch.float64) + 0.5).to(device, dtype)
    S.requires_grad_(grads[2])
    Vh = _t((k, d_out), g, dtype, device, grad=grads[3])
    b = _t((d_out,), g, dtype, device, std=0.5, grad=grads[4]) if bias else None
    return x, U, S, Vh, b


# --- references against the definitions ---------------------------------------------------


def test_lowrank_ref_matches_explicit_composition_and_nn_linear():
    x, W, A, B, b = _lowrank_args()
    y = lowrank_linear_ref(x, W, A, B, b, scale=0.7)
    assert y.shape == (2, 5, 10) and y.dtype == torch.float64
    merged = W + 0.7 * A @ B  # the merged weight of a LoRA layer
    expected = torch.einsum("bmi,io->bmo", x, merged) + b
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # nn.Linear convention: weight [d_out, d_in] = W.T
    torch.testing.assert_close(lowrank_linear_ref(x, W, A, B, b, 0.0), F.linear(x, W.T, b),
                               rtol=1e-12, atol=1e-12)
    # a 1-D x is a single row; no bias
    torch.testing.assert_close(lowrank_linear_ref(x[0, 0], W, A, B), x[0, 0] @ (W + A @ B),
                               rtol=1e-12, atol=1e-12)


def test_svd_ref_matches_weight_and_its_svd():
    x, U, S, Vh, b = _svd_args()
    y = svd_linear_ref(x, U, S, Vh, b)
    expected = x @ (U @ torch.diag(S) @ Vh) + b
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    # the layout is torch.linalg.svd's: W [d_in, d_out] = U diag(S) Vh
    W = torch.randn(12, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    torch.testing.assert_close(svd_linear_ref(x, U, S, Vh), x @ W, rtol=1e-10, atol=1e-10)


def test_lowrank_ref_gradients_match_the_documented_formulas():
    x, W, A, B, b = _lowrank_args()
    s = 0.7
    y = lowrank_linear_ref(x, W, A, B, b, s)
    G = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y.backward(G)
    X, G2 = x.reshape(-1, 12).detach(), G.reshape(-1, 10)
    H, P = X @ A.detach(), s * G2 @ B.detach().T
    expected = {"x": G2 @ W.detach().T + P @ A.detach().T, "W": X.T @ G2, "A": X.T @ P,
                "B": s * H.T @ G2, "b": G2.sum(0)}
    for name, t in zip("xWABb", (x, W, A, B, b), strict=True):
        got = t.grad.reshape(-1, t.shape[-1]) if name == "x" else t.grad
        torch.testing.assert_close(got, expected[name], rtol=1e-12, atol=1e-12)


def test_references_pass_gradcheck_in_float64():
    args = _lowrank_args(lead=(3,), d_in=5, d_out=4, r=2)
    assert torch.autograd.gradcheck(lambda *a: lowrank_linear_ref(*a, scale=1.5), args)
    args = _svd_args(lead=(3,), d_in=5, d_out=4, k=3)
    assert torch.autograd.gradcheck(svd_linear_ref, args)


# --- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_lowrank_bad_inputs_name_argument_expected_and_actual(backend):
    x, W, A, B, b = _lowrank_args(grads=(False,) * 5)

    def call(**over):
        args = {"x": x, "W": W, "A": A, "B": B, "bias": b, **over}
        return lowrank_linear(args["x"], args["W"], args["A"], args["B"], args["bias"],
                              over.get("scale", 1.0), backend=backend)

    with pytest.raises(ValueError, match=r"W: expected shape \(12, d_out\).*got \(10, 12\)"):
        call(W=W.T)
    with pytest.raises(ValueError, match=r"A: expected shape \(12, r\).*got \(11, 3\)"):
        call(A=A[:11])
    with pytest.raises(ValueError, match=r"B: expected shape \(3, 10\).*got \(4, 10\); "
                                         r"rank mismatch: A has r=3 columns, B has 4 rows"):
        call(B=torch.zeros(4, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"B: expected shape \(3, 10\).*got \(3, 9\)"):
        call(B=B[:, :9])
    with pytest.raises(ValueError, match=r"bias: expected shape \(10,\) \(d_out\), got \(9,\)"):
        call(bias=b[:9])
    with pytest.raises(TypeError, match=r"A: expected dtype torch.float64 \(the dtype of x\), "
                                        r"got torch.float32"):
        call(A=A.float())
    with pytest.raises(ValueError, match=r"W: expected device cpu \(the device of x\), got meta"):
        call(W=W.to("meta"))
    with pytest.raises(TypeError, match=r"scale: expected a Python float, got Tensor"):
        call(scale=torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"x: expected a floating dtype, got torch.int64"):
        call(x=torch.ones(2, 12, dtype=torch.long))


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_svd_bad_inputs_name_argument_expected_and_actual(backend):
    x, U, S, Vh, b = _svd_args(grads=(False,) * 5)
    with pytest.raises(ValueError, match=r"U: expected shape \(12, k\).*got \(6, 12\)"):
        svd_linear(x, U.T, S, Vh, b, backend=backend)
    with pytest.raises(ValueError, match=r"S: expected shape \(6,\) \(k of U\), got \(5,\)"):
        svd_linear(x, U, S[:5], Vh, b, backend=backend)
    with pytest.raises(ValueError, match=r"Vh: expected shape \(6, d_out\).*got \(5, 10\)"):
        svd_linear(x, U, S, Vh[:5], b, backend=backend)
    with pytest.raises(ValueError, match=r"bias: expected shape \(10,\)"):
        svd_linear(x, U, S, Vh, b[:3], backend=backend)
    with pytest.raises(TypeError, match=r"S: expected dtype torch.float64"):
        svd_linear(x, U, S.float(), Vh, b, backend=backend)


# --- dispatch ------------------------------------------------------------------------------


def test_auto_on_cpu_is_the_reference(monkeypatch):
    calls = []
    real_lr, real_svd = lr_module.lowrank_linear_ref, lr_module.svd_linear_ref
    monkeypatch.setattr(lr_module, "lowrank_linear_ref",
                        lambda *a: calls.append("lr") or real_lr(*a))
    monkeypatch.setattr(lr_module, "svd_linear_ref", lambda *a: calls.append("svd") or real_svd(*a))
    lowrank_linear(*_lowrank_args())
    svd_linear(*_svd_args())
    assert calls == ["lr", "svd"]


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    expected = ("triton is not installed" if not triton_available()
                else r"backend='triton' needs CUDA tensors")
    args = _lowrank_args(dtype=torch.float32)
    with pytest.raises(BackendUnavailable, match="lowrank_linear: " + expected):
        lowrank_linear(*args, backend="triton")
    with pytest.raises(BackendUnavailable, match="svd_linear: " + expected):
        svd_linear(*_svd_args(dtype=torch.float32), backend="triton")


def test_triton_support_reasons():
    assert lr_module.triton_supports(torch.float16, False) == (True, "")
    assert lr_module.triton_supports(torch.bfloat16, True) == (True, "")
    assert "interpreter" in lr_module.triton_supports(torch.bfloat16, False)[1]
    assert "float64" in lr_module.triton_supports(torch.float64, True)[1]


# --- Triton under the CPU interpreter ------------------------------------------------------


@pytest.fixture
def interpreter(triton_interpreter):
    return triton_interpreter("subspace_core.ops.lowrank_linear.triton")


def _fwd_bwd(fn, args, backend, seed=7, **kwargs):
    """Output and gradients of every argument (None where it needs none)."""
    args = [a.detach().clone().requires_grad_(a.requires_grad) if a is not None else None
            for a in args]
    y = fn(*args, **kwargs, backend=backend)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)).to(y.dtype)
    if any(a is not None and a.requires_grad for a in args):
        y.backward(grad_y.to(y.device))
    return [y] + [None if a is None else a.grad for a in args]


def _compare(fn, args, backend, *, scale=1.0, **kwargs):
    """``backend`` against the reference run in float64 (fp32) or in the same dtype (fp16:
    the kernel must be at least about as accurate as the composed fp16 reference)."""
    dtype = args[0].dtype
    out = _fwd_bwd(fn, args, backend, **kwargs)
    exact = _fwd_bwd(fn, [None if a is None else a.double() for a in args], "torch", **kwargs)
    same = _fwd_bwd(fn, args, "torch", **kwargs)
    for name, o, e, s in zip(["y", *"01234"], out, exact, same, strict=True):
        assert (o is None) == (e is None), name
        if o is None:
            continue
        assert o.dtype == dtype, name
        if dtype == torch.float32:
            assert_close_to_ref(o, e.float(), scale=10 * scale, msg=f"{name}: ")
        else:
            err_kernel = (o.double() - e).abs().max().item()
            err_ref = (s.double() - e).abs().max().item()
            assert err_kernel <= 2 * err_ref + 1e-3 * scale * e.abs().max().item(), (
                f"{name}: kernel error {err_kernel:.2e}, reference error {err_ref:.2e}")


FROZEN = {  # which of (x, W|U, A|S, B|Vh, bias) require grad
    "all": (True, True, True, True, True),
    "lora": (True, False, True, True, False),     # frozen base weight and bias
    "factors_only": (False, False, True, True, False),
}


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("frozen", list(FROZEN))
def test_triton_interpreter_lowrank_forward_backward(interpreter, frozen, dtype):
    # ragged sizes: 70 rows (3 row tiles), d_in 40 (2 k-tiles), d_out 36, r 5 (< 16)
    args = _lowrank_args((2, 35), 40, 36, 5, dtype=dtype, grads=FROZEN[frozen])
    _compare(lowrank_linear, args, "triton", scale=0.5)


@pytest.mark.interpret
@pytest.mark.parametrize(("lead", "d_in", "d_out", "r", "bias"), [
    ((1,), 8, 3, 1, False),      # one row, tiny everything
    ((33,), 20, 17, 70, True),   # rank past two 64-wide rank tiles
])
def test_triton_interpreter_lowrank_edge_shapes(interpreter, lead, d_in, d_out, r, bias):
    args = _lowrank_args(lead, d_in, d_out, r, dtype=torch.float32, bias=bias)
    _compare(lowrank_linear, args, "triton", scale=2.0)


@pytest.mark.interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("frozen", ["all", "sigma_only"])
def test_triton_interpreter_svd_forward_backward(interpreter, frozen, dtype):
    grads = {"all": FROZEN["all"], "sigma_only": (True, False, True, False, False)}[frozen]
    args = _svd_args((2, 21), 40, 36, 24, dtype=dtype, grads=grads)
    _compare(svd_linear, args, "triton")


@pytest.mark.interpret
def test_triton_interpreter_fused_kernel_on_strided_operands(interpreter):
    """``(a ⊙ c) b + α·C D + bias`` with every term at once, on transposed views."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 33, generator=g).T          # [33, 40], column-major
    b = torch.randn(37, 40, generator=g).T          # [40, 37], transposed view
    c = torch.randn(33, 18, generator=g)
    d = torch.randn(37, 18, generator=g).T          # [18, 37], transposed view
    colscale = torch.rand(40, generator=g) + 0.5
    bias = torch.randn(37, generator=g)
    y = torch.ops.subzoo.lowrank_matmul(a, b, c, d, colscale, bias, 0.3)
    expected = (a.double() * colscale.double()) @ b.double() + 0.3 * c.double() @ d.double()
    assert_close_to_ref(y, (expected + bias.double()).float(), scale=10)
    plain = torch.ops.subzoo.lowrank_matmul(a, b, None, None, None, None, 1.0)
    assert_close_to_ref(plain, (a.double() @ b.double()).float(), scale=10)


@pytest.mark.interpret
def test_triton_interpreter_unsupported_inputs_raise(interpreter):
    args = _lowrank_args(dtype=torch.bfloat16)
    with pytest.raises(BackendUnavailable, match="bfloat16 is computed wrongly"):
        lowrank_linear(*args, backend="triton")
    with pytest.raises(BackendUnavailable, match=r"dtype torch\.float64"):
        svd_linear(*_svd_args(), backend="triton")


@pytest.mark.interpret
def test_custom_ops_are_registered_and_pass_opcheck(interpreter):
    for name in ("lowrank_matmul", "lowrank_linear", "svd_linear"):
        assert hasattr(torch.ops.subzoo, name)
    x, W, A, B, b = _lowrank_args((6,), 8, 5, 2, dtype=torch.float32)
    torch.library.opcheck(torch.ops.subzoo.lowrank_linear.default, (x, W, A, B, b, 0.5))
    x, U, S, Vh, b = _svd_args((6,), 8, 5, 3, dtype=torch.float32,
                               grads=(True, False, True, False, True))
    torch.library.opcheck(torch.ops.subzoo.svd_linear.default, (x, U, S, Vh, None))
    g = torch.Generator().manual_seed(1)
    a, b, c, d, colscale, bias = (torch.randn(shape, generator=g) for shape in
                                  ((6, 8), (8, 5), (6, 2), (2, 5), (8,), (5,)))
    torch.library.opcheck(torch.ops.subzoo.lowrank_matmul.default,
                          (a, b.T.contiguous().T, c, d, colscale, bias, 2.0))
    torch.library.opcheck(torch.ops.subzoo.lowrank_matmul.default,
                          (a, b, None, None, None, None, 1.0))
    with pytest.raises(ValueError, match=r"d: expected shape \(2, 5\), got \(3, 5\)"):
        torch.ops.subzoo.lowrank_matmul(a, b, c, torch.zeros(3, 5), None, None, 1.0)


# --- GPU -----------------------------------------------------------------------------------


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frozen", list(FROZEN))
def test_gpu_lowrank_matches_reference(frozen, dtype):
    args = _lowrank_args((4, 300), 520, 390, 24, dtype=dtype, device="cuda",
                         grads=FROZEN[frozen])
    _compare(lowrank_linear, args, "triton", scale=2.0)
    assert lowrank_linear(*args).is_cuda


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("frozen", ["all", "sigma_only"])
def test_gpu_svd_matches_reference(frozen, dtype):
    grads = {"all": FROZEN["all"], "sigma_only": (True, False, True, False, False)}[frozen]
    args = _svd_args((4, 300), 520, 390, 200, dtype=dtype, device="cuda", grads=grads)
    _compare(svd_linear, args, "triton", scale=2.0)


@pytest.mark.gpu
@gpu
def test_gpu_torch_compile_traces_the_custom_ops():
    args = _lowrank_args((64,), 256, 128, 16, dtype=torch.float16, device="cuda",
                         grads=FROZEN["lora"])
    compiled = torch.compile(lambda *a: lowrank_linear(*a, scale=0.5, backend="triton"),
                             fullgraph=True)
    y = compiled(*args)
    y.float().sum().backward()
    assert_close_to_ref(y, lowrank_linear_ref(*args, scale=0.5), scale=4)


# --- benchmark -----------------------------------------------------------------------------


@pytest.fixture
def private_kernel_registry(monkeypatch):
    monkeypatch.setattr(bench_registry, "_KERNEL_BENCHMARKS",
                        dict(bench_registry._KERNEL_BENCHMARKS))


def test_kernel_benchmarks_register_once_and_run_quick_on_cpu(private_kernel_registry):
    both = (lr_bench.LOWRANK_LINEAR_BENCH, lr_bench.SVD_LINEAR_BENCH)
    assert lr_bench.register() == both and lr_bench.register() == both
    assert bench_registry.get_kernel_benchmark("svd_linear") is lr_bench.SVD_LINEAR_BENCH
    for bench in both:
        assert bench.baseline == "torch" and set(bench.backends) == {"torch", "triton"}
        assert not bench.supports("triton", torch.device("cpu"))
        assert bench.supports("triton", torch.device("cuda"))
        assert {c["pass"] for c in bench.cases(False)} == {"fwd", "fwd+bwd"}
    report = run_kernel_benchmarks(["lowrank_linear", "svd_linear"], ["torch"],
                                   torch.device("cpu"), quick=True)
    cases = {(m["benchmark"], m["case"].split("pass=")[1]) for m in report.measurements}
    assert cases == {(f"kernels/{op}", p) for op in ("lowrank_linear", "svd_linear")
                     for p in ("fwd", "fwd+bwd")}
