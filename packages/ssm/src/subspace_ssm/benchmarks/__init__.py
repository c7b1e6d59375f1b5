"""Benchmarks of the ssm package (importing a module registers its benchmark)."""
