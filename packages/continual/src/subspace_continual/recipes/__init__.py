"""Training recipes of the package's shipped checkpoints (``subzoo train ID``)."""
