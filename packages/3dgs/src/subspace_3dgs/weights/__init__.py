"""Shipped checkpoints of subspace-3dgs (safetensors, sha256 in the registry)."""
