"""Shipped checkpoints of subspace-safety (safetensors, sha256 in the registry)."""
