"""Training recipes, one per shipped checkpoint (``subzoo train ID`` runs them)."""
