"""Shipped checkpoints of subspace-peft (safetensors, verified by sha256 on load)."""
