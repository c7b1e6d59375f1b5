"""The safety plugin: registers the protocol ``zero_shot`` and the shipped model
``safety/lit_clip_mnv2_minilm.fmnist_mnist`` (:mod:`subspace_safety.zoo`)."""

from subspace_safety import zoo as _zoo  # noqa: F401  protocol and shipped model
