"""Shipped checkpoints of subspace-ssm (safetensors, verified by sha256 on load)."""
