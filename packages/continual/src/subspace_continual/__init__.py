"""Subspace Zoo continual learning: gradient-subspace methods (GPM-style, FOT) and exact metrics.

- :mod:`~subspace_continual.metrics`: accuracy matrix, ACC, BWT, forgetting, FWT, Avalanche
  conversions.
- :mod:`~subspace_continual.memory`: :class:`SubspaceMemory` (per-layer bases, energy
  threshold, projection for Linear/Conv2d, SGD and Adam).
- :mod:`~subspace_continual.data`: Permuted-MNIST, Split-Fashion-MNIST, power-law schedules.
- :mod:`~subspace_continual.harness`, :mod:`~subspace_continual.gpm`,
  :mod:`~subspace_continual.baselines`: one training harness; GPM, EWC, ER, A-GEM, and
  NMC on frozen pretrained features (the class-incremental sanity row).
- :mod:`~subspace_continual.hlop`: HLOP, Hebbian/anti-Hebbian subspace neurons (online PCA)
  for orthogonal projection without SVDs.
- :mod:`~subspace_continual.fot`: federated FOT / FedAvg and robust aggregators (mean,
  coordinate median, Flag), in-process; :mod:`~subspace_continual.distributed` runs the same
  algorithm over ``torch.distributed`` ranks (imported on demand).
- :mod:`~subspace_continual.models`: the harness MLP and :class:`ContinualMLP` (the zoo's
  checkpoint model: weights + stored bases + accuracy record);
  :mod:`~subspace_continual.zoo`: protocols ``pmnist_cl`` / ``split_fmnist_cl`` and the
  shipped ``continual/gpm_mlp.pmnist`` / ``continual/fot_mlp.split_fmnist``.
"""

from subspace_continual.baselines import AGEM, EWC, EpisodicMemory, ExperienceReplay, NMCBaseline
from subspace_continual.data import (
    Scenario,
    Task,
    permuted_mnist,
    power_law_schedule,
    split_fashion_mnist,
    synthetic_subspaces,
)
from subspace_continual.fot import (
    Collective,
    FedConfig,
    aggregate,
    flag_aggregate,
    run_federated,
)
from subspace_continual.gpm import GPM
from subspace_continual.harness import (
    ContinualResult,
    ScheduleResult,
    Strategy,
    TrainConfig,
    evaluate,
    make_strategy,
    run_schedule,
    run_sequence,
)
from subspace_continual.hlop import HLOP, HebbianSubspace
from subspace_continual.memory import LayerUpdate, SubspaceMemory
from subspace_continual.metrics import (
    ContinualMetrics,
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    summarize,
    to_avalanche,
)
from subspace_continual.models import ContinualMLP, MultiHeadMLP

__all__ = [
    "AGEM",
    "EWC",
    "GPM",
    "HLOP",
    "Collective",
    "ContinualMLP",
    "ContinualMetrics",
    "ContinualResult",
    "EpisodicMemory",
    "ExperienceReplay",
    "FedConfig",
    "HebbianSubspace",
    "LayerUpdate",
    "MultiHeadMLP",
    "NMCBaseline",
    "Scenario",
    "ScheduleResult",
    "Strategy",
    "SubspaceMemory",
    "Task",
    "TrainConfig",
    "aggregate",
    "average_accuracy",
    "backward_transfer",
    "evaluate",
    "flag_aggregate",
    "forgetting",
    "forward_transfer",
    "make_strategy",
    "permuted_mnist",
    "power_law_schedule",
    "run_federated",
    "run_schedule",
    "run_sequence",
    "split_fashion_mnist",
    "summarize",
    "synthetic_subspaces",
    "to_avalanche",
]
