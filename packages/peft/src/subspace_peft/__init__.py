"""Subspace Zoo PEFT: gradient-subspace optimizers and weight-subspace adapters."""

__all__: list[str] = []
