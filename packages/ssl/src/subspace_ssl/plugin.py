"""The ssl plugin: registers the package's models, protocols and benchmarks."""
