"""Shipped checkpoints of subspace-continual (safetensors, verified by sha256 on load)."""
