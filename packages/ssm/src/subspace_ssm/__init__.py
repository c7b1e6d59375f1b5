"""Subspace Zoo SSM: S4, S4D, S5, PTD initialisation and Mamba-1, CPU-first.

Layers (inputs ``[batch, L, d_model]``, optional right-padding masks, recurrent ``step``):
:class:`S4D` (diagonal; inits LegS/Inv/Lin/Real/PTD; ZOH or bilinear; FFT convolution;
bidirectional; state passing), :class:`S4` (DPLR HiPPO-LegS, Cauchy generating function),
:class:`S5` (MIMO diagonal, parallel scan; LegS or PTD init), :class:`Mamba` (selective
scan from ``subspace_core.ops.selective_scan``), :class:`MultiHeadScan` (MHS: multi-head
scan in parallel subspaces with scan-route attention, for 2-D inputs). Initialisations: :mod:`subspace_ssm.hippo`,
:mod:`subspace_ssm.init`, :mod:`subspace_ssm.ptd`. Model: :class:`SSMClassifier`.
Optimizer grouping: :func:`ssm_param_groups`. Tasks (ListOps, Pathfinder, sequential
FMNIST, byte-level text, retrieval, Fourier-mode noise): :mod:`subspace_ssm.data`;
evaluation protocols: :mod:`subspace_ssm.protocols`.
"""

from subspace_ssm.cauchy import cauchy_conj, cauchy_ref
from subspace_ssm.classifier import SSMClassifier
from subspace_ssm.hippo import dplr_legs, hippo_legs, nplr_legs
from subspace_ssm.init import conj_half, diagonal_init
from subspace_ssm.mamba import Mamba
from subspace_ssm.mhs import MHSClassifier, MultiHeadScan, scan_route
from subspace_ssm.optim import mark_ssm_param, ssm_param_groups
from subspace_ssm.ptd import PTDResult, ptd_diagonalize, ptd_legs
from subspace_ssm.s4 import S4
from subspace_ssm.s4d import S4D
from subspace_ssm.s5 import S5
from subspace_ssm.scan import linear_scan

__all__ = [
    "S4",
    "S4D",
    "S5",
    "MHSClassifier",
    "Mamba",
    "MultiHeadScan",
    "PTDResult",
    "SSMClassifier",
    "cauchy_conj",
    "cauchy_ref",
    "conj_half",
    "diagonal_init",
    "dplr_legs",
    "hippo_legs",
    "linear_scan",
    "mark_ssm_param",
    "nplr_legs",
    "ptd_diagonalize",
    "ptd_legs",
    "scan_route",
    "ssm_param_groups",
]
