"""The safety plugin: registers the package's datasets, models, protocols and benchmarks
with the core (none yet; issue 11)."""
