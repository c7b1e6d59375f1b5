"""Shipped checkpoints of subspace-recsys (safetensors, sha256 in the registry)."""
