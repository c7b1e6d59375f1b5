"""``subspace_core.ops.quantize``: the reference against its definition (error bound, group
scales, int4 packing, unbiased stochastic rounding), the Triton kernels under the CPU
interpreter and on GPU against the reference, dispatch, the custom ops, bad inputs and the
kernel benchmarks."""

from __future__ import annotations

import math

import pytest
import torch

from subspace_core.bench import registry as bench_registry
from subspace_core.bench import run_kernel_benchmarks
from subspace_core.ops import BackendUnavailable, triton_available
from subspace_core.ops import quantize as q_module
from subspace_core.ops.quantize import (
    QuantizedTensor,
    dequantize,
    dequantize_ref,
    pack_int4,
    quantize,
    quantize_ref,
    unpack_int4,
)
from subspace_core.ops.quantize import bench as q_bench

MODES = [(8, True), (8, False), (4, True), (4, False)]
MODE_IDS = ["int8-sym", "int8-asym", "int4-sym", "int4-asym"]


def _x(shape, *, seed=0, dtype=torch.float32, device="cpu", scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(device, dtype)


def _groups(t: torch.Tensor, group_size: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], t.shape[-1] // group_size, group_size)


def _codes(q: QuantizedTensor) -> torch.Tensor:
    """Integer codes (int32) of ``q`` in the order of the original elements."""
    if q.bits == 8:
        return q.data.to(torch.int32)
    nibbles = unpack_int4(q.data).to(torch.int32)
    return nibbles - 8 if q.symmetric else nibbles


def _error_in_scales(x: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """|dequant - x| per element, in units of its group's scale."""
    err = (dequantize_ref(q, torch.float64) - x.double()).abs()
    return _groups(err, q.group_size) / q.scales.double().unsqueeze(-1)


# --- reference against the definition ------------------------------------------------------


@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_deterministic_error_is_at_most_half_a_scale(bits, symmetric, dtype):
    x = _x((3, 4, 64), dtype=dtype)
    q = quantize_ref(x, bits, 32, symmetric=symmetric)
    assert _error_in_scales(x, q).max() <= 0.5 + 1e-5
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    codes = _codes(q)
    assert codes.min() >= lo and codes.max() <= hi
    assert codes.min() == lo or codes.max() == hi  # the scale uses the full code range


@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
def test_layout_dtypes_and_shapes(bits, symmetric):
    x = _x((2, 3, 128))
    q = quantize_ref(x, bits, 64, symmetric=symmetric)
    assert q.shape == (2, 3, 128) and q.bits == bits and q.group_size == 64
    assert q.data.shape == ((2, 3, 64) if bits == 4 else (2, 3, 128))
    assert q.data.dtype == (torch.int8 if bits == 8 and symmetric else torch.uint8)
    assert q.scales.shape == (2, 3, 2) and q.scales.dtype == torch.float32
    assert q.symmetric == symmetric
    assert (q.zeros is None) == symmetric
    if not symmetric:
        assert q.zeros.shape == (2, 3, 2) and q.zeros.dtype == torch.float32
    per_group = 4 if symmetric else 8
    assert q.nbytes == q.data.numel() * q.data.element_size() + 2 * 3 * 2 * per_group
    for dtype in (torch.float32, torch.float16, torch.float64):
        assert dequantize_ref(q, dtype).dtype == dtype


def test_group_scales_and_zero_points_follow_the_definition():
    x = _x((5, 96))
    groups = _groups(x, 32)
    q = quantize_ref(x, 8, 32, symmetric=True)
    torch.testing.assert_close(q.scales, groups.abs().amax(-1) / 127, rtol=0, atol=0)
    q = quantize_ref(x, 4, 32, symmetric=False)
    gmin, gmax = groups.amin(-1), groups.amax(-1)
    scales = (gmax - gmin) / 15
    torch.testing.assert_close(q.scales, scales, rtol=0, atol=0)
    torch.testing.assert_close(q.zeros, -gmin / scales, rtol=0, atol=0)
    # the extremes of every group get the extreme codes and come back (almost) exactly
    codes = _groups(_codes(q), 32)
    assert (codes.amin(-1) == 0).all() and (codes.amax(-1) == 15).all()
    back = _groups(dequantize_ref(q), 32)
    torch.testing.assert_close(back.amin(-1), gmin, rtol=0, atol=1e-6)
    torch.testing.assert_close(back.amax(-1), gmax, rtol=0, atol=1e-6)


def test_group_size_none_is_one_group_per_row():
    x = _x((4, 48))
    q = quantize_ref(x, 8, None, symmetric=True)
    assert q.group_size == 48 and q.scales.shape == (4, 1)
    torch.testing.assert_close(q.scales[:, 0], x.abs().amax(-1) / 127, rtol=0, atol=0)


def test_groups_are_independent():
    """A huge value in one group leaves every other group's codes untouched."""
    x = _x((2, 64))
    y = x.clone()
    y[0, 5] = 1e4
    qx, qy = quantize_ref(x, 4, 16), quantize_ref(y, 4, 16)
    changed = (_groups(_codes(qx), 16) != _groups(_codes(qy), 16)).any(-1)
    assert changed.tolist() == [[True, False, False, False], [False, False, False, False]]


@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
def test_constant_zero_and_one_sided_groups(bits, symmetric):
    """All-zero and constant groups are exact (no 0/0); an all-positive group uses the
    whole code range (Q-GaLore's clamped zero-point would saturate it at 255·s)."""
    x = torch.stack([torch.zeros(16), torch.full((16,), -2.5), torch.linspace(10, 11, 16)])
    q = quantize_ref(x, bits, 16, symmetric=symmetric)
    back = dequantize_ref(q)
    assert torch.isfinite(back).all()
    assert torch.equal(back[0], x[0])
    torch.testing.assert_close(back[1], x[1], rtol=1e-6, atol=0)
    assert _error_in_scales(x, q)[2].max() <= 0.5 + 1e-5
    if not symmetric:
        assert q.scales[2] == pytest.approx(1 / (2**bits - 1), rel=1e-5)


def test_ties_round_to_even():
    x = torch.tensor([[0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 3.0, 127.0]])
    q = quantize_ref(x, 8, None, symmetric=True)  # scale = 127 / 127 = 1
    assert q.scales.item() == 1.0
    assert q.data.tolist() == [[0, 0, 2, 2, 0, -2, 3, 127]]


def test_int4_packing_nibble_order_and_round_trip():
    codes = torch.tensor([[1, 2, 15, 0, 7, 8]], dtype=torch.uint8)
    packed = pack_int4(codes)
    assert packed.dtype == torch.uint8
    assert packed.tolist() == [[0x21, 0x0F, 0x87]]  # element 2j in the low nibble
    assert torch.equal(unpack_int4(packed), codes)
    everything = torch.arange(256, dtype=torch.uint8).reshape(4, 64)
    assert torch.equal(pack_int4(unpack_int4(everything)), everything)
    with pytest.raises(ValueError, match="even last dim"):
        pack_int4(torch.zeros(3, dtype=torch.uint8))


def test_int4_symmetric_nibbles_are_code_plus_8():
    x = torch.tensor([[-7.0, 7.0, 0.0, 3.0]])
    q = quantize_ref(x, 4, None, symmetric=True)  # scale = 1
    assert unpack_int4(q.data).tolist() == [[1, 15, 8, 11]]
    assert dequantize_ref(q).tolist() == x.tolist()


# --- stochastic rounding -------------------------------------------------------------------


def _check_unbiased(x: torch.Tensor, samples: torch.Tensor, scales: torch.Tensor,
                    group_size: int) -> None:
    """``samples [N, ...x.shape]`` of dequant(quant(x)): each element's sample mean within
    6 standard errors of x (rounding noise has std ≤ s/2); every sample is a neighbour code."""
    n = samples.shape[0]
    s = scales.double().unsqueeze(-1)
    err = _groups(samples.double() - x.double(), group_size) / s
    assert err.abs().max() < 1.0 + 1e-5  # floor or ceil of v, never further
    mean = err.mean(0)
    assert mean.abs().max() <= 6 * 0.5 / math.sqrt(n), mean.abs().max()
    # and the rounding is really random: nearly every element takes both neighbour codes
    # (asymmetric: a group's min and max sit exactly on the grid and never move)
    assert (samples.double().std(0) > 0).double().mean() > 0.75


@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
def test_stochastic_rounding_is_unbiased(bits, symmetric):
    n = 4000
    x = _x((2, 32), seed=3)
    # N copies of x in one call: groups are per row, so each copy gets x's scales
    q = quantize_ref(x.expand(n, 2, 32), bits, 16, symmetric=symmetric, stochastic=True,
                     seed=7)
    ref_scales = quantize_ref(x, bits, 16, symmetric=symmetric).scales
    assert torch.equal(q.scales[0], ref_scales)
    _check_unbiased(x, dequantize_ref(q), ref_scales, 16)


def test_deterministic_rounding_is_biased_where_stochastic_is_not():
    """The test above has power: a constant off-grid value keeps its rounding error when
    rounded to nearest, and loses it on average when rounded stochastically."""
    x = torch.tensor([[0.0, 1.0] + [0.3] * 62])  # scale = 1/255, 0.3 is off the grid
    s = quantize_ref(x, 8, None).scales.item()
    det = dequantize_ref(quantize_ref(x, 8, None))[0, 2]
    assert abs(det.item() - 0.3) > 0.05 * s
    sto = dequantize_ref(quantize_ref(x.expand(2000, 64), 8, None, stochastic=True, seed=1))
    assert abs(sto[:, 2:].double().mean().item() - 0.3) < 0.02 * s


def test_stochastic_seed_generator_and_global_rng():
    x = _x((4, 64))
    a = quantize_ref(x, 4, 32, stochastic=True, seed=11)
    assert torch.equal(a.data, quantize_ref(x, 4, 32, stochastic=True, seed=11).data)
    assert not torch.equal(a.data, quantize_ref(x, 4, 32, stochastic=True, seed=12).data)
    gen_a = torch.Generator().manual_seed(5)
    gen_b = torch.Generator().manual_seed(5)
    assert torch.equal(quantize_ref(x, 8, 32, stochastic=True, generator=gen_a).data,
                       quantize_ref(x, 8, 32, stochastic=True, generator=gen_b).data)
    torch.manual_seed(3)
    first = quantize_ref(x, 8, 32, stochastic=True).data
    torch.manual_seed(3)
    assert torch.equal(first, quantize_ref(x, 8, 32, stochastic=True).data)


# --- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_bad_inputs_name_argument_expected_and_actual(backend):
    x = _x((4, 96))
    with pytest.raises(ValueError, match=r"bits: expected 4 or 8, got 3"):
        quantize(x, 3, 32, backend=backend)
    with pytest.raises(ValueError, match=r"bits: expected 4 or 8, got True"):
        quantize(x, True, 32, backend=backend)
    with pytest.raises(ValueError, match=r"group_size: expected a divisor of the last dim of x "
                                         r"\(96\), got 64"):
        quantize(x, 8, 64, backend=backend)
    with pytest.raises(ValueError, match=r"group_size: expected an even size for bits=4.*got 3"):
        quantize(_x((4, 9)), 4, 3, backend=backend)
    with pytest.raises(ValueError, match=r"group_size: expected a positive int or None, got 0"):
        quantize(x, 8, 0, backend=backend)
    with pytest.raises(TypeError, match=r"x: expected a floating dtype .* got torch.int64"):
        quantize(torch.ones(4, 32, dtype=torch.long), 8, 32, backend=backend)
    with pytest.raises(ValueError, match=r"x: expected shape \[..., n\] with n >= 1, got \(\)"):
        quantize(torch.tensor(1.0), 8, 1, backend=backend)
    with pytest.raises(ValueError, match=r"seed, generator: expected at most one"):
        quantize(x, 8, 32, stochastic=True, seed=1, generator=torch.Generator(),
                 backend=backend)
    with pytest.raises(ValueError, match=r"seed: expected a non-negative int, got -1"):
        quantize(x, 8, 32, stochastic=True, seed=-1, backend=backend)
    with pytest.raises(ValueError, match="backend: expected one of"):
        quantize(x, 8, 32, backend="cuda")


def test_bad_quantized_tensor_is_refused():
    q = quantize_ref(_x((4, 64)), 4, 32)
    with pytest.raises(TypeError, match="q: expected a QuantizedTensor, got Tensor"):
        dequantize(q.data)
    bad = QuantizedTensor(q.data, q.scales, q.zeros, (4, 32), 4, 32)
    with pytest.raises(ValueError, match=r"q.data: expected shape \(4, 16\), got \(4, 32\)"):
        dequantize(bad)
    bad = QuantizedTensor(q.data, q.scales[:, :1], q.zeros, q.shape, 4, 32)
    with pytest.raises(ValueError, match=r"q.scales: expected shape \(4, 2\), got \(4, 1\)"):
        dequantize(bad)
    bad = QuantizedTensor(q.data.to(torch.int8), q.scales, q.zeros, q.shape, 4, 32)
    with pytest.raises(TypeError, match=r"q\.data: expected torch\.uint8, got torch\.int8"):
        dequantize(bad)


# --- dispatch ------------------------------------------------------------------------------


def test_auto_on_cpu_is_the_reference(monkeypatch):
    calls = []
    real = q_module.quantize_ref

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(q_module, "quantize_ref", spy)
    x = _x((4, 64))
    q = quantize(x, 8, 32)
    assert calls == [1]
    assert torch.equal(q.data, real(x, 8, 32).data)
    assert torch.equal(dequantize(q), dequantize_ref(q))


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    expected = ("triton is not installed" if not triton_available()
                else r"quantize: backend='triton' needs CUDA tensors")
    with pytest.raises(BackendUnavailable, match=expected):
        quantize(_x((4, 64)), 8, 32, backend="triton")
    q = quantize_ref(_x((4, 64)), 8, 32)
    with pytest.raises(BackendUnavailable, match="dequantize: backend='triton'"):
        dequantize(q, backend="triton")


def test_triton_support_reasons():
    assert q_module.triton_supports(torch.float32, 256, False) == (True, "")
    assert q_module.triton_supports(torch.bfloat16, 256, True) == (True, "")
    assert "interpreter" in q_module.triton_supports(torch.bfloat16, 256, False)[1]
    assert "float64" in q_module.triton_supports(torch.float64, 256, True)[1]
    assert "group_size 16384" in q_module.triton_supports(torch.float32, 16384, True)[1]


# --- Triton under the CPU interpreter ------------------------------------------------------


@pytest.fixture
def interpreter(triton_interpreter):
    return triton_interpreter("subspace_core.ops.quantize.triton")


def _assert_same_quantized(a: QuantizedTensor, b: QuantizedTensor) -> None:
    assert (a.shape, a.bits, a.group_size) == (b.shape, b.bits, b.group_size)
    assert a.data.dtype == b.data.dtype
    assert torch.equal(a.data, b.data), (a.data.int() - b.data.int()).abs().max()
    assert torch.equal(a.scales, b.scales)
    assert (a.zeros is None) == (b.zeros is None)
    if a.zeros is not None:
        assert torch.equal(a.zeros, b.zeros)


@pytest.mark.interpret
@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_triton_interpreter_matches_reference_exactly(interpreter, bits, symmetric, dtype):
    """Deterministic mode is bit-exact: power-of-two and ragged groups (48 → tile 64),
    several programs, a constant group and exact ties."""
    x = _x((3, 5, 96), dtype=dtype)
    x[0, 0, :48] = 0.25
    x[1, 1, :4] = torch.tensor([0.0, 1.0, 0.5, 1.5]).to(dtype)  # ties after scaling
    for group_size in (32, 48):
        ref = quantize_ref(x, bits, group_size, symmetric=symmetric)
        out = quantize(x, bits, group_size, symmetric=symmetric, backend="triton")
        _assert_same_quantized(out, ref)
        for out_dtype in (torch.float32, torch.float16):
            assert torch.equal(dequantize(out, out_dtype, backend="triton"),
                               dequantize_ref(ref, out_dtype))


@pytest.mark.interpret
@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
def test_triton_interpreter_stochastic_is_unbiased(interpreter, bits, symmetric):
    """Philox noise: same distribution as the reference (not the same bits)."""
    n = 2000
    x = _x((2, 32), seed=3)
    q = quantize(x.expand(n, 2, 32), bits, 16, symmetric=symmetric, stochastic=True,
                 seed=9, backend="triton")
    ref_scales = quantize_ref(x, bits, 16, symmetric=symmetric).scales
    assert torch.equal(q.scales[0], ref_scales)
    _check_unbiased(x, dequantize(q, backend="triton"), ref_scales, 16)


@pytest.mark.interpret
def test_triton_interpreter_stochastic_seeding(interpreter):
    x = _x((4, 64))
    a = quantize(x, 4, 32, stochastic=True, seed=11, backend="triton")
    assert torch.equal(a.data, quantize(x, 4, 32, stochastic=True, seed=11,
                                        backend="triton").data)
    assert not torch.equal(a.data, quantize(x, 4, 32, stochastic=True, seed=12,
                                            backend="triton").data)
    torch.manual_seed(0)  # without a seed, Philox's seed comes from torch's RNG
    first = quantize(x, 8, 32, stochastic=True, backend="triton").data
    torch.manual_seed(0)
    assert torch.equal(first, quantize(x, 8, 32, stochastic=True, backend="triton").data)
    gen = torch.Generator().manual_seed(0)
    again = torch.Generator().manual_seed(0)
    assert torch.equal(quantize(x, 8, 32, stochastic=True, generator=gen, backend="triton").data,
                       quantize(x, 8, 32, stochastic=True, generator=again,
                                backend="triton").data)


@pytest.mark.interpret
def test_triton_interpreter_unsupported_inputs_raise(interpreter):
    with pytest.raises(BackendUnavailable, match="bfloat16 is computed wrongly"):
        quantize(_x((2, 32), dtype=torch.bfloat16), 8, 32, backend="triton")
    with pytest.raises(BackendUnavailable, match=r"dtype torch\.float64"):
        quantize(_x((2, 32), dtype=torch.float64), 8, 32, backend="triton")
    # auto never falls back to an unsupported kernel: float64 quantizes by the reference
    q = quantize(_x((2, 32), dtype=torch.float64), 8, 32)
    assert q.data.shape == (2, 32)


@pytest.mark.interpret
def test_custom_ops_are_registered_and_pass_opcheck(interpreter):
    assert hasattr(torch.ops.subzoo, "quantize") and hasattr(torch.ops.subzoo, "dequantize")
    x = _x((4, 64))
    for bits, symmetric in ((4, False), (8, True)):
        args = (x, bits, 32, symmetric, True, 3)
        torch.library.opcheck(torch.ops.subzoo.quantize.default, args)
        data, scales, zeros = torch.ops.subzoo.quantize(*args)
        dq_args = (data, scales, None if symmetric else zeros, bits, 32, torch.float16)
        torch.library.opcheck(torch.ops.subzoo.dequantize.default, dq_args)


# --- GPU -----------------------------------------------------------------------------------


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_matches_reference(bits, symmetric, dtype):
    x = _x((64, 4096), dtype=dtype, device="cuda")
    for group_size in (128, 256, 96):
        ref = quantize_ref(x, bits, group_size, symmetric=symmetric)
        out = quantize(x, bits, group_size, symmetric=symmetric, backend="triton")
        _assert_same_quantized(out, ref)
        assert torch.equal(dequantize(out, dtype, backend="triton"), dequantize_ref(ref, dtype))
    assert quantize(x, bits, 128, symmetric=symmetric).data.is_cuda  # auto picks triton


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(("bits", "symmetric"), MODES, ids=MODE_IDS)
def test_gpu_stochastic_is_unbiased(bits, symmetric):
    x = _x((4, 256), seed=3, device="cuda")
    q = quantize(x.expand(20000, 4, 256), bits, 128, symmetric=symmetric, stochastic=True,
                 seed=1, backend="triton")
    ref_scales = quantize_ref(x, bits, 128, symmetric=symmetric).scales
    _check_unbiased(x, dequantize(q, backend="triton"), ref_scales, 128)


@pytest.mark.gpu
@gpu
def test_gpu_quantize_bandwidth_target():
    """Quantize (INT8 stochastic, bf16 4096 × 11008) at ≥ 60 % of the DRAM bandwidth."""
    from subspace_core.bench import median_time

    device = torch.device("cuda")
    peak = q_bench.peak_bandwidth_gbs(device)
    if peak is None:
        pytest.skip("torch does not report this device's memory clock / bus width")
    case = {"shape": [4096, 11008], "bits": 8, "group_size": 256, "symmetric": False,
            "stochastic": True, "dtype": "bfloat16"}
    x = _x(case["shape"], dtype=torch.bfloat16, device="cuda")
    stats = median_time(lambda: quantize(x, 8, 256, stochastic=True, seed=0,
                                         backend="triton"), device, repeats=50)
    achieved = q_bench.bandwidth_gbs(case, stats["median"])
    assert achieved >= 0.6 * peak, f"{achieved:.0f} GB/s of {peak:.0f} GB/s peak"


# --- benchmark -----------------------------------------------------------------------------


@pytest.fixture
def private_kernel_registry(monkeypatch):
    monkeypatch.setattr(bench_registry, "_KERNEL_BENCHMARKS",
                        dict(bench_registry._KERNEL_BENCHMARKS))


def test_kernel_benchmarks_register_once_and_run_quick_on_cpu(private_kernel_registry):
    assert q_bench.register() == (q_bench.QUANTIZE_BENCH, q_bench.DEQUANTIZE_BENCH)
    assert q_bench.register() == (q_bench.QUANTIZE_BENCH, q_bench.DEQUANTIZE_BENCH)
    assert bench_registry.get_kernel_benchmark("quantize") is q_bench.QUANTIZE_BENCH
    for bench in (q_bench.QUANTIZE_BENCH, q_bench.DEQUANTIZE_BENCH):
        assert bench.baseline == "torch" and set(bench.backends) == {"torch", "triton"}
        assert bench.supports("torch", torch.device("cpu"))
        assert not bench.supports("triton", torch.device("cpu"))
        assert bench.supports("triton", torch.device("cuda"))
        for case in bench.cases(False):
            assert case["MB_moved"] == round(q_bench.bytes_moved(case) / 1e6, 3)
    report = run_kernel_benchmarks(["quantize", "dequantize"], ["torch"], torch.device("cpu"),
                                   quick=True)
    assert {m["benchmark"] for m in report.measurements} == {"kernels/quantize",
                                                            "kernels/dequantize"}
    assert all(m["value"] > 0 for m in report.measurements)
    case = q_bench.QUANTIZE_BENCH.cases(True)[0]
    # 256² fp32 in, 256² int8 out, 256 fp32 scales and zero-points
    assert q_bench.bytes_moved(case) == 256 * 256 * 5 + 256 * 8
    assert q_bench.bandwidth_gbs(case, 1e-3) == pytest.approx(q_bench.bytes_moved(case) / 1e6)
    assert q_bench.peak_bandwidth_gbs(torch.device("cpu")) is None
