"""The peft plugin: registers the package's models, datasets, protocols and benchmarks."""
