"""MHS: multi-head scan in parallel low-dimensional subspaces, with scan-route attention
(Ji, 2024, "MHS-VM: Multi-Head Scanning in Parallel Subspaces for Vision Mamba",
arXiv:2406.05992), for 2-D inputs.

A 1-D scan sees an image in one order; MHS looks at it along several orders at low cost:

1. **Subspaces.** One linear map projects the features ``[b, H, W, d_model]`` into
   ``n_heads`` subspaces of ``d_head`` dimensions (``d_head · n_heads`` may be < d_model).
2. **Routes.** Head ``j`` has a scan pattern — two routes through the H×W grid
   (:data:`PATTERNS`: ``raster`` = row-major and column-major, ``snake`` = boustrophedon by
   rows and by columns, ``diagonal`` = by anti-diagonals and by diagonals) plus, with
   ``reverse=True``, the same routes backwards: k = 4 sequences of length H·W. Each is
   scanned by the head's SSM (``scanner="selective"``: a Mamba-style selective scan,
   :func:`subspace_core.ops.selective_scan.selective_scan`; ``"s4d"``: an S4D kernel by FFT
   convolution), whose parameters the head's routes share, and put back in image order.
3. **Scan-route attention.** Per head and pixel, the k route outputs ``y_r`` are fused by a
   softmax over routes of the scores ``⟨q_j, LayerNorm(y_r)⟩ / √d_head`` (a learned query
   per head, zero at init, so fusion starts as the plain mean):
   ``y = Σ_r α_r y_r``. (The paper's gated fusion weights the route sum by the routes'
   coefficient of variation; here the weighting is a learned attention, as the issue asks.)
4. **Back.** The heads are concatenated, normalised and projected back to d_model.

Everything but the scans is pointwise, so properties of the routes carry over exactly and
are tested: a head with the single route ``row`` is causal in raster order; with route
sets closed under transposition (``raster``, ``snake``) MHS commutes with transposing a
square image; with ``raster``/``diagonal`` and ``reverse=True`` it commutes with a 180°
rotation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from subspace_core.ops.selective_scan import selective_scan
from subspace_ssm.fftconv import fft_conv
from subspace_ssm.optim import mark_ssm_param
from subspace_ssm.s4d import S4DKernel

__all__ = ["PATTERNS", "ROUTES", "MHSClassifier", "MultiHeadScan", "scan_route"]

#: scan pattern → its two routes.
PATTERNS: dict[str, tuple[str, str]] = {
    "raster": ("row", "col"),
    "snake": ("snake_row", "snake_col"),
    "diagonal": ("diag", "antidiag"),
}
ROUTES = ("row", "col", "snake_row", "snake_col", "diag", "antidiag")
SCANNERS = ("selective", "s4d")


def scan_route(name: str, H: int, W: int) -> torch.Tensor:
    """The order in which route ``name`` visits an H×W grid: ``perm [H·W]`` (int64), where
    ``perm[t]`` is the row-major index ``r·W + c`` of the pixel visited at step t.

    Routes: ``row`` (row by row, left to right), ``col`` (column by column, top to bottom),
    ``snake_row`` / ``snake_col`` (alternating direction every row / column), ``diag``
    (anti-diagonals r + c = const in increasing order, each top to bottom), ``antidiag``
    (diagonals c − r = const from the bottom-left corner, each top to bottom); a ``_rev``
    suffix visits the same pixels backwards.
    """
    base, rev = (name[:-4], True) if name.endswith("_rev") else (name, False)
    if base not in ROUTES:
        raise ValueError(f"name: expected one of {ROUTES} (optionally with '_rev'), got {name!r}")
    if H < 1 or W < 1:
        raise ValueError(f"H, W: expected a grid of at least 1x1, got {H}x{W}")
    r = torch.arange(H)[:, None].expand(H, W)
    c = torch.arange(W)[None, :].expand(H, W)
    idx = (r * W + c).flatten()
    r, c = r.flatten(), c.flatten()
    if base == "row":
        key = r * W + c
    elif base == "col":
        key = c * H + r
    elif base == "snake_row":
        key = r * W + torch.where(r % 2 == 0, c, W - 1 - c)
    elif base == "snake_col":
        key = c * H + torch.where(c % 2 == 0, r, H - 1 - r)
    elif base == "diag":
        key = (r + c) * H + r
    else:  # antidiag
        key = (c - r + H - 1) * H + r
    perm = idx[torch.argsort(key)]
    return perm.flip(0) if rev else perm


class _SelectiveEngine(nn.Module):
    """Mamba's SSM without its projections and gate: ``[B, L, d] → [B, L, d]``."""

    def __init__(self, d: int, d_state: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        self.d, self.d_state = d, d_state
        self.dt_rank = max(1, math.ceil(d / 16))
        self.x_proj = nn.Linear(d, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        mark_ssm_param(self.dt_proj.bias)
        self.A_log = mark_ssm_param(nn.Parameter(
            torch.log(torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d, 1))))
        self.D = mark_ssm_param(nn.Parameter(torch.ones(d)))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = dt @ self.dt_proj.weight.T  # bias goes in as delta_bias
        y = selective_scan(u.transpose(1, 2), dt.transpose(1, 2), -torch.exp(self.A_log.float()),
                           B.transpose(1, 2), C.transpose(1, 2), self.D.float(), None,
                           self.dt_proj.bias.float(), True)
        return y.transpose(1, 2)


class _S4DEngine(nn.Module):
    """The S4D SSM (FFT convolution) plus its D skip: ``[B, L, d] → [B, L, d]``."""

    def __init__(self, d: int, d_state: int):
        super().__init__()
        self.kernel = S4DKernel(d, d_state)
        self.D = nn.Parameter(torch.randn(d))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        x = u.transpose(1, 2)
        y = fft_conv(x, self.kernel.kernel(x.shape[-1])[0]) + self.D[:, None] * x
        return y.transpose(1, 2)


class MultiHeadScan(nn.Module):
    """Multi-head scan with scan-route attention on ``[batch, H, W, d_model]`` (module doc).

    Args:
        d_model: feature size.
        n_heads: number of subspaces / scan heads.
        d_head: subspace size (default ``d_model // n_heads``).
        patterns: a scan pattern per head (names of :data:`PATTERNS`), or a tuple of route
            names per head; default cycles through raster, snake, diagonal.
        reverse: add every route backwards (k = 2 × routes per head).
        scanner: ``"selective"`` (selective scan) or ``"s4d"`` (S4D convolution).
        d_state: SSM state size per channel.
    """

    def __init__(self, d_model: int, n_heads: int = 3, d_head: int | None = None, *,
                 patterns: Sequence[str | Sequence[str]] | None = None, reverse: bool = True,
                 scanner: str = "selective", d_state: int = 16):
        super().__init__()
        if n_heads < 1:
            raise ValueError(f"n_heads: expected an int >= 1, got {n_heads}")
        d_head = d_model // n_heads if d_head is None else d_head
        if d_head < 1:
            raise ValueError(f"d_head: expected >= 1, got {d_head} (d_model={d_model}, "
                             f"n_heads={n_heads})")
        if scanner not in SCANNERS:
            raise ValueError(f"scanner: expected one of {SCANNERS}, got {scanner!r}")
        names = list(PATTERNS)
        patterns = [names[j % len(names)] for j in range(n_heads)] if patterns is None else list(patterns)
        if len(patterns) != n_heads:
            raise ValueError(f"patterns: expected one per head ({n_heads}), got {len(patterns)}")
        self.routes: list[tuple[str, ...]] = []
        for p in patterns:
            if isinstance(p, str):
                if p not in PATTERNS:
                    raise ValueError(f"patterns: expected names in {tuple(PATTERNS)} or route "
                                     f"tuples, got {p!r}")
                base = PATTERNS[p]
            else:
                base = tuple(p)
                for r in base:
                    scan_route(r, 1, 1)  # validates the name
            self.routes.append(base + tuple(f"{r}_rev" for r in base) if reverse else base)
        self.d_model, self.n_heads, self.d_head = d_model, n_heads, d_head
        self.in_proj = nn.Linear(d_model, n_heads * d_head, bias=False)
        engine = _SelectiveEngine if scanner == "selective" else _S4DEngine
        self.engines = nn.ModuleList(engine(d_head, d_state) for _ in range(n_heads))
        self.route_norm = nn.ModuleList(nn.LayerNorm(d_head) for _ in range(n_heads))
        self.route_query = nn.Parameter(torch.zeros(n_heads, d_head))
        self.out_norm = nn.LayerNorm(n_heads * d_head)
        self.out_proj = nn.Linear(n_heads * d_head, d_model, bias=False)
        self._perm_cache: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _perms(self, head: int, H: int, W: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (head, H, W)
        if key not in self._perm_cache:
            perms = torch.stack([scan_route(r, H, W) for r in self.routes[head]])  # [k, L]
            self._perm_cache[key] = (perms, torch.argsort(perms, dim=1))
        perms, inv = self._perm_cache[key]
        return perms.to(device), inv.to(device)

    def forward(self, x: torch.Tensor, return_route_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x [batch, H, W, d_model]`` → ``[batch, H, W, d_model]``; with
        ``return_route_weights`` also the attention weights per head, ``[batch, k, H, W]``."""
        if x.dim() != 4 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (batch, H, W, {self.d_model}), got {tuple(x.shape)}")
        b, H, W, _ = x.shape
        L = H * W
        heads = self.in_proj(x).reshape(b, L, self.n_heads, self.d_head)
        outs, weights = [], []
        for j, engine in enumerate(self.engines):
            perms, inv = self._perms(j, H, W, x.device)
            k = perms.shape[0]
            u = heads[:, :, j]                                           # [b, L, dh]
            seqs = u[:, perms]                                           # [b, k, L, dh]
            ys = engine(seqs.reshape(b * k, L, self.d_head)).reshape(b, k, L, self.d_head)
            ys = torch.gather(ys, 2, inv[None, :, :, None].expand(b, k, L, self.d_head))
            scores = self.route_norm[j](ys) @ self.route_query[j] / math.sqrt(self.d_head)
            alpha = torch.softmax(scores, dim=1)                         # [b, k, L]
            outs.append((alpha[..., None] * ys).sum(1))                  # [b, L, dh]
            weights.append(alpha.reshape(b, k, H, W))
        y = self.out_proj(self.out_norm(torch.cat(outs, dim=-1))).reshape(b, H, W, self.d_model)
        return (y, weights) if return_route_weights else y


class MHSClassifier(nn.Module):
    """Image classifier on MHS layers: patch embedding, ``n_layers × [x + MHS(LN(x))]``,
    LayerNorm, mean pooling, linear head.

    Takes images ``[batch, H, W]`` / ``[batch, C, H, W]`` or pixel sequences
    ``[batch, H·W, C]`` (row-major, as the sequential tasks give them) when ``image_size``
    is set. ``patch`` pixels × ``patch`` pixels become one token (``patch=1``: per pixel).

    Args:
        n_classes: number of classes.
        image_size: ``(H, W)`` of sequence inputs (None: only image inputs).
        in_channels: C.
        patch: patch size (must divide H and W).
        d_model, n_layers, n_heads, d_head, d_state, scanner, patterns, reverse: see
            :class:`MultiHeadScan`.
        dropout: residual dropout.
    """

    def __init__(self, n_classes: int, *, image_size: tuple[int, int] | None = None,
                 in_channels: int = 1, patch: int = 1, d_model: int = 32, n_layers: int = 2,
                 n_heads: int = 3, d_head: int | None = None, d_state: int = 16,
                 scanner: str = "selective", patterns=None, reverse: bool = True,
                 dropout: float = 0.0):
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch: expected an int >= 1, got {patch}")
        self.image_size, self.in_channels, self.patch = image_size, in_channels, patch
        self.embed = nn.Conv2d(in_channels, d_model, patch, stride=patch)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers))
        self.layers = nn.ModuleList(
            MultiHeadScan(d_model, n_heads, d_head, patterns=patterns, reverse=reverse,
                          scanner=scanner, d_state=d_state) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and self.image_size is not None and \
                x.shape[1] == self.image_size[0] * self.image_size[1] and x.shape[2] == self.in_channels:
            return x.transpose(1, 2).reshape(x.shape[0], self.in_channels, *self.image_size)
        if x.dim() == 3 and self.in_channels == 1:
            return x[:, None]
        if x.dim() == 4 and x.shape[1] == self.in_channels:
            return x
        raise ValueError(f"x: expected images [batch, {self.in_channels}, H, W]"
                         f"{' or [batch, H, W]' if self.in_channels == 1 else ''}"
                         + (f" or sequences [batch, {self.image_size[0] * self.image_size[1]}, "
                            f"{self.in_channels}]" if self.image_size else "")
                         + f", got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[batch, n_classes]`` (``mask`` must be None: images have no padding)."""
        if mask is not None and not bool(mask.all()):
            raise ValueError("mask: MHSClassifier takes whole images; got a mask with padding")
        img = self._images(x)
        if img.shape[-2] % self.patch or img.shape[-1] % self.patch:
            raise ValueError(f"x: expected H and W divisible by patch={self.patch}, got "
                             f"{tuple(img.shape[-2:])}")
        h = self.embed(img).permute(0, 2, 3, 1)  # [b, H', W', d]
        for norm, layer in zip(self.norms, self.layers, strict=True):
            h = h + self.dropout(layer(norm(h)))
        return self.head(self.norm(h).mean(dim=(1, 2)))
