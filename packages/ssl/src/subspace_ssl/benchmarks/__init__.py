"""Benchmarks of the ssl package (``subzoo bench ssl``), registered by the plugin."""
