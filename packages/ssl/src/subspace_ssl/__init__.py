"""Subspace Zoo: self-supervised subspace objectives (see the package README)."""

__all__: list[str] = []
