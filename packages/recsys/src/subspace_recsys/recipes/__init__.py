"""Recipes that train the shipped checkpoints of subspace-recsys (``subzoo train ID``)."""
