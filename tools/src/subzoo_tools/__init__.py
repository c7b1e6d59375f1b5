"""Developer tooling for Subspace Zoo (catalog generation and checks)."""
