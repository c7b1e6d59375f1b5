"""Subspace Zoo: 3D Gaussian splatting with a pure-PyTorch rasterizer and feature subspaces.

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_3dgs.plugin`) does.
"""

__all__: list[str] = []
