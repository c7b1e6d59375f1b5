"""Recipes that train the shipped checkpoints of subspace-safety (``subzoo train ID``)."""
