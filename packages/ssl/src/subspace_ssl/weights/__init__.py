"""Pretrained weights of subspace-ssl (safetensors files shipped in the wheel)."""
