"""Training recipes of the core's shipped checkpoints (one module per checkpoint)."""
