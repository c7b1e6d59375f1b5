"""Real spherical harmonics up to degree 3, in the basis and sign convention of 3DGS / gsplat.

The basis functions are the real harmonics built from the complex ``Y_l^m`` *including* the
Condon-Shortley phase ``(-1)^m``:

* ``m < 0``: ``sqrt(2) * Im(Y_l^{|m|})``
* ``m = 0``: ``Y_l^0``
* ``m > 0``: ``sqrt(2) * Re(Y_l^m)``

ordered ``m = -l, ..., l`` within each degree (coefficient index ``l * l + l + m``). This is why
degree 1 reads ``(-C1 y, C1 z, -C1 x)``: the Condon-Shortley phase is kept rather than cancelled
as in the "chemistry" real harmonics. Keeping the same convention as 3DGS means trained
coefficients are interchangeable with the reference implementation and with gsplat.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "SH_C0",
    "eval_sh",
    "max_sh_degree",
    "num_sh_bases",
    "rgb_to_sh",
    "sh_to_rgb",
]

SH_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (
    1.0925484305920792,
    -1.0925484305920792,
    0.31539156525252005,
    -1.0925484305920792,
    0.5462742152960396,
)
_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of coefficients ``K = (degree + 1)^2`` of a real SH expansion."""
    if not isinstance(degree, int) or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"degree: expected an int in [0, {MAX_SH_DEGREE}], got {degree!r}")
    return (degree + 1) ** 2


def max_sh_degree(num_bases: int) -> int:
    """Inverse of :func:`num_sh_bases`: the degree whose expansion has ``num_bases`` terms."""
    degree = math.isqrt(num_bases) - 1
    if (degree + 1) ** 2 != num_bases or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(
            f"num_bases: expected one of 1, 4, 9, 16 (a square (d+1)^2, d <= {MAX_SH_DEGREE}), "
            f"got {num_bases}"
        )
    return degree


def _basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """SH basis values ``[N, (degree+1)^2]`` at unit directions ``dirs [N, 3]``."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2.0 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            _C3[0] * y * (3.0 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4.0 * zz - xx - yy),
            _C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            _C3[4] * x * (4.0 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Evaluate a real SH expansion per point.

    Args:
        degree: degree to evaluate, ``0 <= degree <= 3``; only the first ``(degree+1)^2``
            coefficients are used, so a lower degree than ``coeffs`` holds is allowed
            (3DGS raises the degree progressively during training).
        coeffs: ``[N, K, C]`` coefficients, ``K >= (degree+1)^2``.
        dirs: ``[N, 3]`` directions; normalised here (a zero vector gives NaN-free zeros for the
            non-constant terms).

    Returns:
        ``[N, C]`` values ``sum_k coeffs[:, k] * Y_k(dirs)`` (no +0.5 offset, no clamping).
    """
    n_bases = num_sh_bases(degree)
    if coeffs.ndim != 3:
        raise ValueError(f"coeffs: expected shape [N, K, C], got {tuple(coeffs.shape)}")
    if coeffs.shape[1] < n_bases:
        raise ValueError(
            f"coeffs: degree {degree} needs K >= {n_bases} coefficients, got K={coeffs.shape[1]}"
        )
    if dirs.shape != (coeffs.shape[0], 3):
        raise ValueError(f"dirs: expected shape [{coeffs.shape[0]}, 3], got {tuple(dirs.shape)}")
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = _basis(degree, unit.to(coeffs.dtype))
    return torch.einsum("nk,nkc->nc", basis, coeffs[:, :n_bases])


def rgb_to_sh(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient whose rendered colour (``C0 * c + 0.5``) equals ``rgb``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh_dc: torch.Tensor) -> torch.Tensor:
    """Colour ``C0 * c + 0.5`` of a DC coefficient (inverse of :func:`rgb_to_sh`)."""
    return sh_dc * SH_C0 + 0.5
