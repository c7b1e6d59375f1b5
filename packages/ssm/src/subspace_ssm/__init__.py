"""Subspace Zoo SSM: S4, S4D, S5, PTD initialisation, Mamba-1 and MHS, CPU-first."""

__all__: list[str] = []
