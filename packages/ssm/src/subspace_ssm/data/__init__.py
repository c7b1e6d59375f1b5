"""Long-sequence tasks (no LRA files exist on these machines, see ``shared/DATA.md``, so the
synthetic tasks are generated, deterministically by seed).

=====================  ==========================================  ===================
task                   inputs                                      classes
=====================  ==========================================  ===================
sequential FMNIST      float ``[N, 784, 1]`` (pixel per step)      10
ListOps                int64 tokens ``[N, L]`` + mask, vocab 18    10 (value)
Pathfinder             float ``[N, 1024, 1]`` (32×32, 0/1 pixels)  2 (connected)
byte-level text        int64 bytes ``[N, L <= 4096]`` + mask       8 (R8) / 20 (20NG)
retrieval              pairs of byte documents                     2 (same newsgroup)
=====================  ==========================================  ===================

and :mod:`subspace_ssm.data.noise`, the Fourier-mode input noise of the PTD robustness
protocol.
"""

from subspace_ssm.data.base import SequenceSplit, seeded_subset
from subspace_ssm.data.listops import decode as listops_decode
from subspace_ssm.data.listops import encode as listops_encode
from subspace_ssm.data.listops import evaluate as listops_evaluate
from subspace_ssm.data.listops import generate_listops
from subspace_ssm.data.noise import add_fourier_noise, fourier_mode_noise, mode_band
from subspace_ssm.data.pathfinder import (
    PathfinderExample,
    draw_pathfinder,
    generate_pathfinder,
    pathfinder_images,
)
from subspace_ssm.data.sfmnist import (
    SFMNIST_LEN,
    SFMNIST_MEAN,
    SFMNIST_STD,
    images_to_sequences,
    load_sfmnist,
)
from subspace_ssm.data.text import (
    BYTE_VOCAB,
    TEXT_DATASETS,
    RetrievalSplit,
    load_byte_text,
    load_retrieval_pairs,
    retrieval_pairs,
)

__all__ = [
    "BYTE_VOCAB",
    "SFMNIST_LEN",
    "SFMNIST_MEAN",
    "SFMNIST_STD",
    "TEXT_DATASETS",
    "PathfinderExample",
    "RetrievalSplit",
    "SequenceSplit",
    "add_fourier_noise",
    "draw_pathfinder",
    "fourier_mode_noise",
    "generate_listops",
    "generate_pathfinder",
    "images_to_sequences",
    "listops_decode",
    "listops_encode",
    "listops_evaluate",
    "load_byte_text",
    "load_retrieval_pairs",
    "load_sfmnist",
    "mode_band",
    "pathfinder_images",
    "retrieval_pairs",
    "seeded_subset",
]
