"""The safety plugin: registers the protocols ``zero_shot``, ``safree_erasure`` and ``fake_detection``, the
models ``safety/lit_clip_mnv2_minilm.fmnist_mnist`` (:mod:`subspace_safety.zoo`),
``safety/concept_sneaker.lit_clip`` (:mod:`subspace_safety.zoo_concepts`) and
``safety/effort_mnv2_b14.fmnist_dcgan``
(:mod:`subspace_safety.zoo_detectors`), and the benchmarks
``safety/safree_erasure`` (:mod:`subspace_safety.benchmarks`), ``safety/eigenshield_pgd``
(:mod:`subspace_safety.bench_eigenshield`) and ``safety/effort_detection``
(:mod:`subspace_safety.bench_effort`)."""

from subspace_safety import bench_effort as _bench_effort  # noqa: F401  effort_detection
from subspace_safety import bench_eigenshield as _bench_eigenshield  # noqa: F401  eigenshield_pgd
from subspace_safety import benchmarks as _benchmarks  # noqa: F401  safree_erasure
from subspace_safety import zoo as _zoo  # noqa: F401  zero_shot, the LiT CLIP
from subspace_safety import zoo_concepts as _zoo_concepts  # noqa: F401  safree_erasure, concepts
from subspace_safety import zoo_detectors as _zoo_detectors  # noqa: F401  fake_detection
