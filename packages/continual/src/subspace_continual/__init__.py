"""Subspace Zoo continual learning: gradient-subspace methods (GPM-style, FOT, HLOP) and metrics."""

__all__: list[str] = []
