"""Sparse Spectral Training: :class:`SSTLinear`, :func:`convert_to_sst`, :class:`SSTController`."""

from subspace_peft.sst.layer import SSTController, SSTLinear, convert_to_sst, sst_param_groups

__all__ = ["SSTController", "SSTLinear", "convert_to_sst", "sst_param_groups"]
