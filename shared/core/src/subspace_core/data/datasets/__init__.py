"""The datasets the core registers (imported by ``subspace_core.data``)."""

from subspace_core.data.datasets.digits import DIGITS
from subspace_core.data.datasets.fashion_mnist import FASHION_MNIST
from subspace_core.data.datasets.minilm import ALL_MINILM_L6_V2
from subspace_core.data.datasets.mnist import MNIST_10K
from subspace_core.data.datasets.text import NEWSGROUPS20, REUTERS, REUTERS_R52

__all__ = [
    "ALL_MINILM_L6_V2",
    "DIGITS",
    "FASHION_MNIST",
    "MNIST_10K",
    "NEWSGROUPS20",
    "REUTERS",
    "REUTERS_R52",
]
