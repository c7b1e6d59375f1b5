"""Principal angles, Grassmann distances, exp/log/retraction and the Grassmann optimizers,
checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from subspace_core.linalg.grassmann import (
    GrassmannAdam,
    GrassmannSGD,
    chordal_distance,
    geodesic_distance,
    grassmann_exp,
    grassmann_log,
    grassmann_retraction,
    principal_angles,
    projection_distance,
    tangent_projection,
)
from subspace_core.testing import assert_close_to_ref

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("single_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthonormal(n: int, p: int, gen: torch.Generator, dtype=F64) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, p, generator=gen, dtype=dtype)).Q


def _rotation(p: int, gen: torch.Generator) -> torch.Tensor:
    return _orthonormal(p, p, gen)


def _pair_with_angles(n: int, theta: torch.Tensor, gen: torch.Generator):
    """Frames U, V [n, p] whose principal angles are exactly ``theta`` (then rotated bases).

    U = [q_1 … q_p], V = [cos θ_i q_i + sin θ_i q_{p+i}] with orthonormal q's: UᵀV =
    diag(cos θ), so θ are the angles; random p×p rotations hide the diagonal structure.
    """
    p = theta.numel()
    Q = _orthonormal(n, 2 * p, gen)
    U, W = Q[:, :p], Q[:, p:]
    V = U * torch.cos(theta) + W * torch.sin(theta)
    return U @ _rotation(p, gen), V @ _rotation(p, gen)


def _tangent(U: torch.Tensor, gen: torch.Generator, norm: float) -> torch.Tensor:
    H = tangent_projection(U, torch.randn(U.shape, generator=gen, dtype=U.dtype))
    return H * (norm / torch.linalg.matrix_norm(H, ord=2))


# --------------------------------------------------------------------------- principal angles


def test_principal_angles_of_constructed_subspaces():
    theta = torch.tensor([0.1, 0.5, 1.0, 1.4], dtype=F64)
    U, V = _pair_with_angles(12, theta, _gen(0))
    assert_close_to_ref(principal_angles(U, V), theta, scale=100)


def test_principal_angles_are_accurate_for_tiny_angles():
    theta = torch.tensor([1e-12, 1e-10, 1e-8, 0.3], dtype=F64)
    U, V = _pair_with_angles(20, theta, _gen(1))
    got = principal_angles(U, V)
    assert torch.allclose(got[:3], theta[:3], rtol=1e-3, atol=0)  # relative accuracy
    # Why the sines: arccos of the cosines is off by orders of magnitude at 1e-12.
    naive = torch.arccos(torch.linalg.svdvals(U.mT @ V).clamp(max=1))
    assert not torch.allclose(naive[0], theta[0], rtol=1.0, atol=0)


def test_principal_angles_orthogonal_and_equal_subspaces():
    gen = _gen(2)
    Q = _orthonormal(9, 6, gen)
    right = torch.full((3,), math.pi / 2, dtype=F64)
    assert_close_to_ref(principal_angles(Q[:, :3], Q[:, 3:]), right, scale=100)
    M = torch.randn(3, 3, generator=gen, dtype=F64)  # any invertible change of basis
    assert principal_angles(Q[:, :3], Q[:, :3] @ M).abs().max() < 1e-7


def test_principal_angles_of_different_dimensions():
    theta = torch.tensor([0.2, 0.7], dtype=F64)
    gen = _gen(3)
    U, V = _pair_with_angles(10, theta, gen)
    spanning = torch.cat([U, V, torch.randn(10, 1, generator=gen, dtype=F64)], 1)
    outside = torch.linalg.qr(spanning).Q[:, -1:]  # orthogonal to both U and V
    bigger = torch.cat([U, outside], dim=1)
    # Adding a direction orthogonal to V to U changes no angle and adds none.
    assert_close_to_ref(principal_angles(bigger, V), theta, scale=100)
    assert_close_to_ref(principal_angles(V, bigger), theta, scale=100)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 10), p=st.integers(1, 4), q=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_principal_angles_properties(n, p, q, seed):
    p, q = min(p, n), min(q, n)
    gen = _gen(seed)
    U = torch.randn(n, p, generator=gen, dtype=F64)
    V = torch.randn(n, q, generator=gen, dtype=F64)
    theta = principal_angles(U, V)
    assert theta.shape == (min(p, q),)
    assert (theta >= 0).all() and (theta <= math.pi / 2 + 1e-12).all()
    assert (theta.diff() >= -1e-12).all()  # ascending
    assert_close_to_ref(principal_angles(V, U), theta, scale=1e4)  # symmetric
    # Depends on the spans only: invariant to any invertible change of basis.
    M = torch.randn(p, p, generator=gen, dtype=F64) + 3 * torch.eye(p, dtype=F64)
    assert_close_to_ref(principal_angles(U @ M, V), theta, rtol=0, atol=1e-7)


def test_principal_angles_batched_and_broadcast():
    gen = _gen(4)
    U = torch.randn(3, 1, 8, 2, generator=gen, dtype=F64)
    V = torch.randn(4, 8, 3, generator=gen, dtype=F64)
    got = principal_angles(U, V)
    assert got.shape == (3, 4, 2)
    assert_close_to_ref(got[2, 1], principal_angles(U[2, 0], V[1]))


def test_principal_angles_preserves_dtype_and_assume_orthonormal():
    gen = _gen(5)
    U, V = _orthonormal(7, 3, gen, torch.float32), _orthonormal(7, 3, gen, torch.float32)
    a = principal_angles(U, V, orthonormalize=False)
    assert a.dtype == torch.float32
    assert_close_to_ref(a, principal_angles(U.double(), V.double()).float(), scale=10)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(5, 2), torch.zeros(6, 2)), "V: expected the same ambient dimension"),
        ((torch.zeros(2, 5), torch.zeros(2, 1)), r"U: expected a frame \[..., n, p\]"),
        ((torch.zeros(5), torch.zeros(5, 1)), "U: expected a frame"),
        ((torch.zeros(5, 2, dtype=torch.int64), torch.zeros(5, 1)), "U: expected a real floating"),
    ],
)
def test_principal_angles_rejects_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        principal_angles(*args)


# --------------------------------------------------------------------------- distances


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 10), p=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_distances_against_definitions(n, p, seed):
    gen = _gen(seed)
    U, V = _orthonormal(n, p, gen), _orthonormal(n, p, gen)
    theta = principal_angles(U, V)
    assert_close_to_ref(geodesic_distance(U, V), theta.norm())
    assert_close_to_ref(chordal_distance(U, V), torch.sin(theta).norm())
    diff = U @ U.mT - V @ V.mT
    assert_close_to_ref(projection_distance(U, V), torch.linalg.matrix_norm(diff) / math.sqrt(2),
                        scale=1e4)
    assert_close_to_ref(projection_distance(U, V, norm="2"),
                        torch.linalg.matrix_norm(diff, ord=2), scale=1e4)
    for distance in (geodesic_distance, chordal_distance, projection_distance):
        d = distance(U, V)
        assert_close_to_ref(distance(V, U), d, scale=1e4)  # symmetric
        Q1, Q2 = _rotation(p, gen), _rotation(p, gen)
        assert_close_to_ref(distance(U @ Q1, V @ Q2), d, rtol=0, atol=1e-9)  # basis-free
        assert distance(U, U @ Q1) < 1e-7  # zero for the same subspace


def test_projection_distance_of_different_dimensions():
    gen = _gen(6)
    U, V = _orthonormal(8, 3, gen), _orthonormal(8, 1, gen)
    diff = U @ U.mT - V @ V.mT
    assert_close_to_ref(projection_distance(U, V), torch.linalg.matrix_norm(diff) / math.sqrt(2),
                        scale=1e4)
    assert_close_to_ref(projection_distance(U, V, norm="2"), torch.linalg.matrix_norm(diff, ord=2),
                        scale=1e4)
    with pytest.raises(ValueError, match="norm: expected 'fro' or '2'"):
        projection_distance(U, V, norm="nuc")


def test_distance_ordering_and_triangle_inequality():
    gen = _gen(7)
    U, V, W = (_orthonormal(10, 3, gen) for _ in range(3))
    assert chordal_distance(U, V) <= geodesic_distance(U, V)
    assert geodesic_distance(U, W) <= geodesic_distance(U, V) + geodesic_distance(V, W) + 1e-12


# --------------------------------------------------------------------------- exp, log, retraction


def test_tangent_projection_is_an_orthogonal_projection():
    gen = _gen(8)
    U = _orthonormal(9, 3, gen)
    G = torch.randn(9, 3, generator=gen, dtype=F64)
    H = tangent_projection(U, G)
    assert (U.mT @ H).abs().max() < 1e-14
    assert_close_to_ref(tangent_projection(U, H), H)
    assert torch.dot((G - H).flatten(), H.flatten()).abs() < 1e-12


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 10), p=st.integers(1, 3), seed=st.integers(0, 2**16),
       size=st.floats(0.01, 1.5))
def test_exp_log_round_trip(n, p, seed, size):
    p = min(p, n - 1)
    gen = _gen(seed)
    U = _orthonormal(n, p, gen)
    H = _tangent(U, gen, size)  # ‖H‖₂ < π/2: inside the injectivity radius
    Y = grassmann_exp(U, H)
    assert_close_to_ref(Y.mT @ Y, torch.eye(p, dtype=F64), scale=100)
    assert_close_to_ref(geodesic_distance(U, Y), torch.linalg.matrix_norm(H), scale=1e4)
    assert_close_to_ref(grassmann_log(U, Y), H, scale=1e4)


def test_log_then_exp_reaches_the_subspace():
    gen = _gen(9)
    U, V = _orthonormal(12, 4, gen), _orthonormal(12, 4, gen)
    H = grassmann_log(U, V)
    assert (U.mT @ H).abs().max() < 1e-13
    assert projection_distance(grassmann_exp(U, H), V) < 1e-12
    assert_close_to_ref(torch.linalg.matrix_norm(H), geodesic_distance(U, V), scale=1e3)
    # Along the geodesic the distance grows linearly.
    assert_close_to_ref(geodesic_distance(U, grassmann_exp(U, 0.3 * H)),
                        0.3 * geodesic_distance(U, V), scale=1e4)


def test_exp_log_batched():
    gen = _gen(10)
    U, V = _orthonormal(8, 2, gen), _orthonormal(8, 2, gen)
    Ub, Vb = torch.stack([U, V]), torch.stack([V, U])
    H = grassmann_log(Ub, Vb)
    assert_close_to_ref(H[0], grassmann_log(U, V))
    assert projection_distance(grassmann_exp(Ub, H), Vb).max() < 1e-12


def test_exp_of_zero_and_retraction_of_zero_are_identity():
    U = _orthonormal(6, 2, _gen(11))
    assert_close_to_ref(grassmann_exp(U, torch.zeros_like(U)), U)
    assert_close_to_ref(grassmann_retraction(U, torch.zeros_like(U)), U, scale=10)


def test_retraction_is_orthonormal_and_first_order_close_to_exp():
    gen = _gen(12)
    U = _orthonormal(10, 3, gen)
    H = _tangent(U, gen, 1.0)
    errors = []
    for t in (1e-1, 1e-2):
        R = grassmann_retraction(U, t * H)
        assert_close_to_ref(R.mT @ R, torch.eye(3, dtype=F64), scale=100)
        errors.append(geodesic_distance(R, grassmann_exp(U, t * H)).item())
    # Retraction and exponential agree to first order: the gap shrinks at least like t².
    assert errors[1] < errors[0] / 50


def test_exp_rejects_mismatched_tangent():
    U = _orthonormal(6, 2, _gen(13))
    with pytest.raises(ValueError, match=r"H: expected trailing shape \(6, 2\)"):
        grassmann_exp(U, torch.zeros(6, 3, dtype=F64))


# --------------------------------------------------------------------------- optimizers


def _eigenspace_problem(n: int = 12, p: int = 3, seed: int = 0):
    """Symmetric A with a clear gap after its top-p eigenvalues; the top-p eigenspace."""
    gen = _gen(seed)
    Q = _orthonormal(n, n, gen)
    eigenvalues = torch.cat([torch.tensor([4.0, 3.5, 3.0]), torch.linspace(1.0, 0.0, n - p)])
    A = (Q * eigenvalues.to(F64)) @ Q.mT
    top = torch.linalg.eigh(A).eigenvectors[:, -p:]
    return A, top, _orthonormal(n, p, gen)


def _train(optimizer_cls, steps: int, **kwargs) -> tuple[torch.Tensor, torch.Tensor, float]:
    A, top, start = _eigenspace_problem()
    U = torch.nn.Parameter(start.clone())
    optimizer = optimizer_cls([U], **kwargs)
    worst = 0.0
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -torch.trace(U.mT @ A @ U)  # minimised by the top-p eigenspace
        loss.backward()
        optimizer.step()
        eye = torch.eye(U.shape[1], dtype=F64)
        worst = max(worst, (U.detach().mT @ U.detach() - eye).abs().max().item())
    return U.detach(), top, worst


@pytest.mark.parametrize(
    ("optimizer_cls", "steps", "kwargs"),
    [
        (GrassmannSGD, 150, dict(lr=0.1)),
        (GrassmannSGD, 100, dict(lr=0.05, momentum=0.8)),
        (GrassmannSGD, 100, dict(lr=0.05, momentum=0.8, nesterov=True, step_map="exp")),
        (GrassmannAdam, 300, dict(lr=0.02)),
        (GrassmannAdam, 300, dict(lr=0.02, second_moment="elementwise", step_map="exp")),
    ],
)
def test_optimizers_find_the_top_eigenspace(optimizer_cls, steps, kwargs):
    U, top, worst_orthonormality = _train(optimizer_cls, steps, **kwargs)
    assert worst_orthonormality < 1e-12
    assert principal_angles(U, top).max() < 1e-3


def test_maximize_flag_is_the_negated_objective():
    A, top, start = _eigenspace_problem()
    U = torch.nn.Parameter(start.clone())
    optimizer = GrassmannSGD([U], lr=0.1, maximize=True)
    for _ in range(150):
        optimizer.zero_grad()
        torch.trace(U.mT @ A @ U).backward()
        optimizer.step()
    assert principal_angles(U.detach(), top).max() < 1e-3


def test_optimizer_moments_stay_tangent_and_batched_frames_are_independent():
    gen = _gen(14)
    U = torch.nn.Parameter(torch.stack([_orthonormal(7, 2, gen), _orthonormal(7, 2, gen)]))
    target = torch.randn(2, 7, 2, generator=gen, dtype=F64)
    for optimizer in (GrassmannAdam([U], lr=0.01), GrassmannSGD([U], lr=0.01, momentum=0.9)):
        for _ in range(3):
            optimizer.zero_grad()
            (U * target).sum().backward()
            optimizer.step()
        state = optimizer.state[U]
        moment = state.get("exp_avg", state.get("momentum_buffer"))
        assert (U.detach().mT @ moment).abs().max() < 1e-13  # transported by projection
    assert optimizer.state[U]["momentum_buffer"].shape == U.shape
    scalar_v = GrassmannAdam([U]).param_groups[0]["second_moment"]
    assert scalar_v == "scalar"


def test_adam_scalar_second_moment_is_one_per_frame():
    gen = _gen(15)
    U = torch.nn.Parameter(torch.stack([_orthonormal(5, 2, gen) for _ in range(3)]))
    optimizer = GrassmannAdam([U], lr=0.01)
    U.grad = torch.randn(U.shape, generator=gen, dtype=F64)
    optimizer.step()
    assert optimizer.state[U]["exp_avg_sq"].shape == (3, 1, 1)


def test_optimizer_preserves_float32_orthonormality():
    gen = _gen(16)
    U = torch.nn.Parameter(_orthonormal(20, 4, gen, torch.float32))
    optimizer = GrassmannAdam([U], lr=0.05)
    for _ in range(50):
        optimizer.zero_grad()
        (U.square() * torch.arange(20.0)[:, None]).sum().backward()
        optimizer.step()
    assert U.dtype == torch.float32
    assert (U.detach().mT @ U.detach() - torch.eye(4)).abs().max() < 1e-5


def test_optimizers_reject_non_orthonormal_or_bad_parameters():
    with pytest.raises(ValueError, match=r"params\[0\] of param group 0: expected an orthonormal"):
        GrassmannSGD([torch.nn.Parameter(torch.ones(5, 2))], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\] of param group 0: expected a frame"):
        GrassmannAdam([torch.nn.Parameter(torch.ones(5))])
    U = torch.nn.Parameter(_orthonormal(5, 2, _gen(17)))
    with pytest.raises(ValueError, match="step_map: expected one of"):
        GrassmannSGD([U], lr=0.1, step_map="cayley")
    with pytest.raises(ValueError, match="momentum: expected"):
        GrassmannSGD([U], lr=0.1, momentum=1.5)
    with pytest.raises(ValueError, match="second_moment"):
        GrassmannAdam([U], second_moment="diag")
    optimizer = GrassmannSGD([U], lr=0.1)
    with pytest.raises(ValueError, match="param group 1: expected an orthonormal"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(4, 2))]})
    assert len(optimizer.param_groups) == 1  # the rejected group was not kept
