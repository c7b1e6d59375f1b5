"""The continual plugin: registers the package's datasets, models, protocols and benchmarks."""
