"""The datasets the core registers (imported by ``subspace_core.data``)."""

from subspace_core.data.datasets.digits import DIGITS
from subspace_core.data.datasets.fashion_mnist import FASHION_MNIST
from subspace_core.data.datasets.mnist import MNIST_10K

__all__ = ["DIGITS", "FASHION_MNIST", "MNIST_10K"]
