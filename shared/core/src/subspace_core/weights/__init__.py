"""Shipped checkpoints of the core (safetensors, verified by sha256 on load)."""
