"""The core's benchmarks (each module registers one when imported by the core plugin)."""
