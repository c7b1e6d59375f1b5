"""Subspace Zoo core."""
