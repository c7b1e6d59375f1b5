"""Recipes that retrain the shipped checkpoints of subspace-3dgs (one module per model)."""
