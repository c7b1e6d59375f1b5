"""Benchmarks of the peft package (importing ``optimizer_memory`` registers it)."""
