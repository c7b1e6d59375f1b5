"""MHS: routes, shapes, gradients, causality along a route, transpose/rotation equivariance."""

from __future__ import annotations

import pytest
import torch

from subspace_ssm.mhs import PATTERNS, MHSClassifier, MultiHeadScan, scan_route


def test_scan_routes_visit_every_pixel_in_the_documented_order():
    H, W = 3, 4
    assert scan_route("row", H, W).tolist() == list(range(12))
    assert scan_route("col", H, W).tolist() == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert scan_route("snake_row", H, W).tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert scan_route("snake_col", H, W).tolist() == [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3]
    assert scan_route("diag", H, W).tolist() == [0, 1, 4, 2, 5, 8, 3, 6, 9, 7, 10, 11]
    assert scan_route("antidiag", H, W).tolist()[:3] == [8, 4, 9]  # from the bottom-left
    for name in ("row", "col", "snake_row", "snake_col", "diag", "antidiag"):
        perm = scan_route(name, H, W)
        assert sorted(perm.tolist()) == list(range(12))
        assert torch.equal(scan_route(name + "_rev", H, W), perm.flip(0))
    # consecutive pixels of the snakes are neighbours
    for name in ("snake_row", "snake_col"):
        p = scan_route(name, 5, 6)
        r, c = p // 6, p % 6
        assert bool(((r.diff().abs() + c.diff().abs()) == 1).all())
    with pytest.raises(ValueError, match="name"):
        scan_route("spiral", 3, 3)


@pytest.mark.parametrize("scanner", ["selective", "s4d"])
def test_mhs_shapes_route_weights_and_gradients(scanner):
    torch.manual_seed(0)
    mhs = MultiHeadScan(12, n_heads=3, d_head=4, scanner=scanner, d_state=4)
    x = torch.randn(2, 5, 6, 12, requires_grad=True)
    y, weights = mhs(x, return_route_weights=True)
    assert y.shape == (2, 5, 6, 12)
    assert [w.shape for w in weights] == [(2, 4, 5, 6)] * 3  # 2 routes + reversed per head
    for w in weights:  # zero query at init: the plain mean of the routes
        torch.testing.assert_close(w, torch.full_like(w, 0.25))
    with torch.no_grad():
        mhs.route_query.normal_()
    y, weights = mhs(x, return_route_weights=True)
    torch.testing.assert_close(weights[0].sum(1), torch.ones(2, 5, 6))
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in mhs.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_single_row_route_is_causal_in_raster_order():
    torch.manual_seed(0)
    mhs = MultiHeadScan(4, n_heads=2, d_head=2, patterns=[("row",), ("row",)], reverse=False,
                        d_state=4)
    H, W = 3, 4
    x = torch.randn(1, H, W, 4)
    jac = torch.autograd.functional.jacobian(lambda t: mhs(t), x)  # [1,H,W,6, 1,H,W,6]
    dep = jac.abs().sum(dim=(0, 3, 4, 7)).reshape(H * W, H * W)  # [out pixel, in pixel]
    later = torch.triu(torch.ones(H * W, H * W, dtype=torch.bool), diagonal=1)
    assert float(dep[later].max()) == 0.0           # nothing from later pixels
    assert bool((dep[~later] > 0).all())             # everything from earlier ones


def test_column_route_is_causal_in_column_order():
    torch.manual_seed(0)
    mhs = MultiHeadScan(4, n_heads=1, d_head=4, patterns=[("col",)], reverse=False,
                        scanner="s4d", d_state=4)
    H, W = 3, 3
    x = torch.randn(1, H, W, 4)
    jac = torch.autograd.functional.jacobian(lambda t: mhs(t), x)
    dep = jac.abs().sum(dim=(0, 3, 4, 7)).reshape(H * W, H * W)
    order = scan_route("col", H, W)
    dep = dep[order][:, order]  # rows/cols in visiting order
    later = torch.triu(torch.ones(H * W, H * W, dtype=torch.bool), diagonal=1)
    assert float(dep[later].max()) < 1e-6 * float(dep.max())  # FFT round-off only


@pytest.mark.parametrize("scanner", ["selective", "s4d"])
def test_mhs_commutes_with_transposition_for_transpose_closed_patterns(scanner):
    torch.manual_seed(0)
    mhs = MultiHeadScan(8, n_heads=2, d_head=4, patterns=["raster", "snake"], scanner=scanner,
                        d_state=4)
    with torch.no_grad():
        mhs.route_query.normal_()  # non-uniform route attention
    x = torch.randn(2, 5, 5, 8)
    torch.testing.assert_close(mhs(x.transpose(1, 2)), mhs(x).transpose(1, 2),
                               rtol=1e-4, atol=1e-5)
    # a pattern that is not closed under transposition breaks it
    one_way = MultiHeadScan(8, n_heads=1, d_head=4, patterns=[("row",)], reverse=False,
                            scanner=scanner, d_state=4)
    assert not torch.allclose(one_way(x.transpose(1, 2)), one_way(x).transpose(1, 2), atol=1e-3)


def test_mhs_commutes_with_half_turn_for_reversed_raster_and_diagonal():
    torch.manual_seed(0)
    mhs = MultiHeadScan(8, n_heads=2, d_head=4, patterns=["raster", "diagonal"], d_state=4)
    with torch.no_grad():
        mhs.route_query.normal_()
    x = torch.randn(2, 4, 6, 8)
    rot = lambda t: t.flip(1, 2)  # noqa: E731  180° rotation
    torch.testing.assert_close(mhs(rot(x)), rot(mhs(x)), rtol=1e-4, atol=1e-5)


def test_mhs_classifier_images_and_sequences():
    torch.manual_seed(0)
    model = MHSClassifier(10, image_size=(8, 8), patch=2, d_model=12, n_layers=1, n_heads=3,
                          d_state=4)
    img = torch.randn(3, 8, 8)
    logits = model(img)
    assert logits.shape == (3, 10)
    seq = img.reshape(3, 64, 1)  # row-major pixel sequence, as sFMNIST gives it
    torch.testing.assert_close(model(seq), logits)
    torch.testing.assert_close(model(seq, mask=torch.ones(3, 64, dtype=torch.bool)), logits)
    with pytest.raises(ValueError, match="patch"):
        model(torch.randn(1, 7, 8))
    with pytest.raises(ValueError, match="mask"):
        model(seq, mask=torch.arange(64)[None].expand(3, 64) < 10)
    with pytest.raises(ValueError, match="patterns"):
        MultiHeadScan(8, n_heads=1, patterns=["spiral"])
    with pytest.raises(ValueError, match="scanner"):
        MultiHeadScan(8, scanner="lstm")
    assert set(PATTERNS) == {"raster", "snake", "diagonal"}
