"""Subspace Zoo: concept subspaces for safe generation and robust embeddings.

Importing the package does not register anything with the core; the ``subzoo`` plugin
(:mod:`subspace_safety.plugin`) does. Status (issue 11): started.
"""

__all__: list[str] = []
