"""The ssm plugin: registers the package's models."""

from subspace_ssm import zoo as _zoo  # noqa: F401  ssm/<arch>_small.<task> entries
