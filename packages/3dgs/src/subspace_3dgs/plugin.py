"""The 3dgs plugin: registers the package's datasets, models, protocols and benchmarks (none yet)."""
