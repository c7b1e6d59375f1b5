"""Subspace Zoo: 3D Gaussian splatting with a pure-PyTorch rasterizer and feature subspaces.

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_3dgs.plugin`) does. Status (issue 10): the differentiable CPU rasterizer
(RGB and features of any width in one pass) with gsplat as the CUDA backend, cameras,
multi-view scenes rendered from real meshes, NeRF-synthetic and COLMAP loaders, the standard
3DGS PLY layout, the trainer with adaptive density control, Feature 3DGS (a low-dimensional
feature subspace decoded to MobileNetV2 teacher features), Momentum-GS (block-wise training
with an EMA teacher), a turntable GIF, and the zoo.
"""

from subspace_3dgs.blocks import BlockPartition, partition_points
from subspace_3dgs.cameras import (
    Camera,
    camera_center,
    fibonacci_cameras,
    intrinsics_from_fov,
    look_at,
    orbit_cameras,
)
from subspace_3dgs.colmap import ColmapModel, read_colmap_model
from subspace_3dgs.densify import DensifyConfig, DensityController
from subspace_3dgs.feature_field import (
    FeatureDecoder,
    FeatureField,
    FeatureFieldConfig,
    feature_fidelity,
    render_feature_map,
    segment_by_query,
    segment_gaussians,
    train_feature_field,
)
from subspace_3dgs.gaussians import Gaussians, quat_to_rotmat
from subspace_3dgs.meshes import load_mesh
from subspace_3dgs.metrics import photometric_loss, psnr, ssim
from subspace_3dgs.momentum import MomentumConfig, ema_update, train_momentum_gs
from subspace_3dgs.ply import read_splat_ply, write_splat_ply
from subspace_3dgs.projection import project_gaussians, view_dependent_colors
from subspace_3dgs.rasterize import RenderOutput, rasterize, rasterize_dense, rasterize_gaussians
from subspace_3dgs.scenes import Scene, View, load_colmap_or_nerf, make_scene, render_mesh
from subspace_3dgs.sh import eval_sh, rgb_to_sh, sh_to_rgb
from subspace_3dgs.teacher import Teacher, teacher_maps
from subspace_3dgs.train import TrainConfig, evaluate, train_gaussians
from subspace_3dgs.turntable import render_turntable, save_gif

__all__ = [
    "BlockPartition",
    "Camera",
    "ColmapModel",
    "DensifyConfig",
    "DensityController",
    "FeatureDecoder",
    "FeatureField",
    "FeatureFieldConfig",
    "Gaussians",
    "MomentumConfig",
    "RenderOutput",
    "Scene",
    "Teacher",
    "TrainConfig",
    "View",
    "camera_center",
    "ema_update",
    "eval_sh",
    "evaluate",
    "feature_fidelity",
    "fibonacci_cameras",
    "intrinsics_from_fov",
    "load_colmap_or_nerf",
    "load_mesh",
    "look_at",
    "make_scene",
    "orbit_cameras",
    "partition_points",
    "photometric_loss",
    "project_gaussians",
    "psnr",
    "quat_to_rotmat",
    "rasterize",
    "rasterize_dense",
    "rasterize_gaussians",
    "read_colmap_model",
    "read_splat_ply",
    "render_feature_map",
    "render_mesh",
    "render_turntable",
    "rgb_to_sh",
    "save_gif",
    "segment_by_query",
    "segment_gaussians",
    "sh_to_rgb",
    "ssim",
    "teacher_maps",
    "train_feature_field",
    "train_gaussians",
    "train_momentum_gs",
    "view_dependent_colors",
    "write_splat_ply",
]
