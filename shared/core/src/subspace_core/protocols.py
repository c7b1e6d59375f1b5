"""The core's evaluation protocols (registered when the core plugin is imported)."""

from subspace_core.eval import image_classification_protocol, register_protocol

__all__ = ["FMNIST_MEAN", "FMNIST_STD"]

# Mean and std of the Fashion-MNIST training pixels scaled to [0, 1].
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530

register_protocol(
    image_classification_protocol(
        "fmnist_test",
        "fashion_mnist",
        "test",
        mean=FMNIST_MEAN,
        std=FMNIST_STD,
        description="Fashion-MNIST official 10k test split; top-1 accuracy (%) and mean NLL.",
    )
)
