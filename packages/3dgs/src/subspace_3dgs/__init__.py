"""Subspace Zoo: 3D Gaussian splatting with a pure-PyTorch rasterizer and feature subspaces.

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_3dgs.plugin`) does. Status (issue 10): the differentiable CPU rasterizer
(RGB and features of any width in one pass), cameras, multi-view scenes rendered from real
meshes, the standard 3DGS PLY layout, and the trainer with adaptive density control; Feature
3DGS, Momentum-GS, the gsplat backend, the zoo and the benchmarks are still to come.
"""

from subspace_3dgs.cameras import (
    Camera,
    camera_center,
    fibonacci_cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
)
from subspace_3dgs.densify import DensifyConfig, DensityController
from subspace_3dgs.gaussians import Gaussians, quat_to_rotmat
from subspace_3dgs.meshes import load_mesh
from subspace_3dgs.metrics import photometric_loss, psnr, ssim
from subspace_3dgs.ply import read_splat_ply, write_splat_ply
from subspace_3dgs.projection import project_gaussians, view_dependent_colors
from subspace_3dgs.rasterize import RenderOutput, rasterize, rasterize_dense, rasterize_gaussians
from subspace_3dgs.scenes import Scene, View, load_colmap_or_nerf, make_scene, render_mesh
from subspace_3dgs.sh import eval_sh, rgb_to_sh, sh_to_rgb
from subspace_3dgs.train import TrainConfig, evaluate, train_gaussians

__all__ = [
    "Camera",
    "DensifyConfig",
    "DensityController",
    "Gaussians",
    "RenderOutput",
    "Scene",
    "TrainConfig",
    "View",
    "camera_center",
    "eval_sh",
    "evaluate",
    "fibonacci_cameras",
    "intrinsics_from_fov",
    "load_colmap_or_nerf",
    "load_mesh",
    "look_at",
    "make_scene",
    "orbit_cameras",
    "photometric_loss",
    "project_gaussians",
    "psnr",
    "quat_to_rotmat",
    "rasterize",
    "rasterize_dense",
    "rasterize_gaussians",
    "read_splat_ply",
    "render_mesh",
    "rgb_to_sh",
    "sh_to_rgb",
    "ssim",
    "train_gaussians",
    "view_dependent_colors",
    "write_splat_ply",
]
