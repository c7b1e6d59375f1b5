"""Turntable renders of trained Gaussians and an animated GIF writer.

The cameras come from :func:`~subspace_3dgs.cameras.orbit_cameras` (a ring at a fixed
elevation around ``target``, z up, the convention of
:func:`~subspace_3dgs.scenes.make_scene`), so a turntable of a scene trained on
``make_scene`` views shows the object the way it was captured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from subspace_core.io import atomic_path

from .cameras import orbit_cameras
from .gaussians import Gaussians
from .rasterize import rasterize

__all__ = ["render_turntable", "save_gif"]


@torch.no_grad()
def render_turntable(
    gaussians: Gaussians,
    *,
    n_frames: int = 36,
    size: int = 128,
    radius: float = 3.0,
    elevation_deg: float = 20.0,
    fov_deg: float = 45.0,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    background: Sequence[float] = (1.0, 1.0, 1.0),
    sh_degree: int | None = None,
) -> list[np.ndarray]:
    """Render ``n_frames`` views evenly spaced in azimuth on a ring around ``target``.

    Args:
        gaussians: the splats to render (RGB; extra features are not rendered).
        n_frames: number of frames (one full turn, the last frame one step before the first).
        size: frame width = height in pixels.
        radius, elevation_deg, fov_deg, target: the ring of cameras (see
            :func:`~subspace_3dgs.cameras.orbit_cameras`).
        background: RGB in [0, 1] behind the splats.
        sh_degree: SH degree to evaluate (None: all the module has).

    Returns:
        ``n_frames`` arrays uint8 ``[size, size, 3]``.
    """
    if not isinstance(gaussians, Gaussians):
        raise TypeError(f"gaussians: expected a Gaussians module, got {type(gaussians).__name__}")
    for name, value in (("n_frames", n_frames), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    bg = torch.as_tensor(background, dtype=torch.float32)
    if bg.shape != (3,):
        raise ValueError(f"background: expected 3 values, got shape {list(bg.shape)}")
    cams = orbit_cameras(n_frames, radius, elevation_deg, tuple(target), fov_deg, size, size)
    frames = []
    for cam in cams:
        out = rasterize(gaussians, cam.viewmat, cam.K, cam.width, cam.height, background=bg,
                        render_features=False, sh_degree=sh_degree, checkpoint=False)  # fmt: skip
        # round, not truncate: 0.999 must become 255
        frames.append((out.rgb.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy())
    return frames


def save_gif(frames: Sequence[np.ndarray], path: str | Path, *, fps: float = 12.0) -> Path:
    """Write ``frames`` (uint8 ``[H, W, 3]``, all the same size) as a looping GIF, atomically.

    Returns the path written.
    """
    from PIL import Image

    if not frames:
        raise ValueError("frames: expected at least one frame, got none")
    first = np.asarray(frames[0])
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3 or f.shape != first.shape:
            raise ValueError(
                f"frames[{i}]: expected uint8 {list(first.shape[:2])} + [3], got {f.dtype} "
                f"{list(f.shape)}"
            )
    if not fps > 0:
        raise ValueError(f"fps: expected > 0, got {fps!r}")
    images = [Image.fromarray(np.asarray(f)) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        # format given explicitly: the temporary name may not end in .gif
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=round(1000 / fps), loop=0)  # fmt: skip
    return path
