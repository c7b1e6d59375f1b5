"""Pathfinder (Linsley et al., 2018; LRA's 32×32 version), generated on the fly.

Each image holds ``2 + n_distractors`` dashed curved paths and two endpoint markers (3×3
squares). Label 1 ("connected"): both markers sit on the two ends of the same path;
label 0: one marker on an end of path A, the other on an end of path B (of the four end
pairs, the one whose distance is closest to A's own end-to-end distance, so the marker
distance does not give the label away). Positive and negative images have the same number
of paths, markers and (on average) ink.

A path is a random walk of unit steps whose heading turns by ``U(-max_turn, max_turn)``
radians per step, rasterised to pixels (consecutive pixels 8-connected) and drawn dashed:
``dash`` pixels on, ``gap`` off. Paths keep a Chebyshev distance >= 3 pixels from every
other path (gaps included, so the underlying curves never touch), so with ``gap=0`` the
two markers of a positive image are in one 8-connected component of ink and those of a
negative image are not (the tests check exactly this). Pixels are 0 (background) or 1
(ink). Example ``i`` has label ``i mod 2`` (exactly balanced) and is drawn from its own
generator seeded by ``(seed, i)``: a set is a prefix of any larger set with the same
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from subspace_ssm.data.base import SequenceSplit

__all__ = ["PathfinderExample", "draw_pathfinder", "generate_pathfinder", "pathfinder_images"]

_SEP = 2  # other paths stay outside this Chebyshev radius of a path's pixels


@dataclass(frozen=True)
class PathfinderExample:
    """One image and how it was drawn.

    Attributes:
        image: float32 ``[size, size]`` in {0, 1}.
        label: 1 if the markers are connected by a path, else 0.
        paths: pixel coordinates ``[(row, col), ...]`` of every path (undashed), the two
            candidate paths A and B first, then the distractors.
        markers: the two marker centres ``((row, col), (row, col))``.
        marker_paths: index into ``paths`` of the path each marker sits on.
    """

    image: np.ndarray
    label: int
    paths: tuple[tuple[tuple[int, int], ...], ...]
    markers: tuple[tuple[int, int], tuple[int, int]]
    marker_paths: tuple[int, int]


def _walk(rng: np.random.Generator, size: int, length: int, max_turn: float,
          blocked: np.ndarray, tries: int = 200) -> list[tuple[int, int]] | None:
    """Pixels of one path avoiding ``blocked`` and the border (None if no path was found)."""
    lo, hi = 1, size - 2  # keep a 1-pixel margin: markers (3×3) stay inside the image
    for _ in range(tries):
        pos = rng.uniform(lo, hi, size=2)
        start = (int(np.rint(pos[0])), int(np.rint(pos[1])))
        if blocked[start]:
            continue
        heading = rng.uniform(0, 2 * np.pi)
        cells = [start]
        stuck = 0
        while len(cells) < length and stuck < 20:
            turn = heading + rng.uniform(-max_turn, max_turn)
            nxt = pos + np.array([np.sin(turn), np.cos(turn)])
            cell = (int(np.rint(nxt[0])), int(np.rint(nxt[1])))
            ok = lo <= cell[0] <= hi and lo <= cell[1] <= hi and not blocked[cell]
            # no touching its own earlier pixels (except the last two): no blobs or loops
            if ok and cell != cells[-1]:
                ok = all(max(abs(cell[0] - r), abs(cell[1] - c)) > 1 for r, c in cells[:-2])
            if not ok:
                stuck += 1
                heading += rng.uniform(-np.pi / 2, np.pi / 2)  # try to steer away
                continue
            stuck = 0
            pos, heading = nxt, turn
            if cell != cells[-1]:
                cells.append(cell)
        if len(cells) == length:
            return cells
    return None


def _block(blocked: np.ndarray, cells: list[tuple[int, int]], radius: int) -> None:
    size = blocked.shape[0]
    for r, c in cells:
        blocked[max(0, r - radius):min(size, r + radius + 1),
                max(0, c - radius):min(size, c + radius + 1)] = True


def draw_pathfinder(rng: np.random.Generator, label: int, *, size: int = 32,
                    path_length: int = 20, n_distractors: int = 2, dash: int = 3, gap: int = 2,
                    max_turn: float = 0.5, max_tries: int = 100) -> PathfinderExample:
    """Draw one example with the given ``label`` (see the module doc)."""
    if label not in (0, 1):
        raise ValueError(f"label: expected 0 or 1, got {label!r}")
    for _ in range(max_tries):
        blocked = np.zeros((size, size), dtype=bool)
        paths: list[list[tuple[int, int]]] = []
        for _ in range(2 + n_distractors):
            cells = _walk(rng, size, path_length, max_turn, blocked)
            if cells is None:
                break
            paths.append(cells)
            _block(blocked, cells, _SEP)
        if len(paths) == 2 + n_distractors:
            break
    else:
        raise RuntimeError(f"draw_pathfinder: could not place {2 + n_distractors} paths of "
                           f"{path_length} pixels in {size}x{size} in {max_tries} tries")
    a, b = paths[0], paths[1]
    if label == 1:
        markers, marker_paths = (a[0], a[-1]), (0, 0)
    else:
        chord = np.hypot(a[0][0] - a[-1][0], a[0][1] - a[-1][1])
        pairs = [(p, q) for p in (a[0], a[-1]) for q in (b[0], b[-1])]
        markers = min(pairs, key=lambda pq: abs(np.hypot(pq[0][0] - pq[1][0],
                                                         pq[0][1] - pq[1][1]) - chord))
        marker_paths = (0, 1)
    image = np.zeros((size, size), dtype=np.float32)
    period = dash + gap
    for cells in paths:
        for k, (r, c) in enumerate(cells):
            if k % period < dash:
                image[r, c] = 1.0
    for r, c in markers:
        image[r - 1:r + 2, c - 1:c + 2] = 1.0
    return PathfinderExample(image, label, tuple(tuple(p) for p in paths),
                             (tuple(markers[0]), tuple(markers[1])), marker_paths)


def pathfinder_images(n: int, *, seed: int = 0, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float32 [n, size, size] in {0, 1}, labels int64 [n])``; ``kwargs`` as
    :func:`draw_pathfinder` (size, path_length, n_distractors, dash, gap, max_turn)."""
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    images, labels = [], []
    for i in range(n):
        ex = draw_pathfinder(np.random.default_rng([seed, i]), i % 2, **kwargs)
        images.append(torch.from_numpy(ex.image))
        labels.append(ex.label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def generate_pathfinder(n: int, *, seed: int = 0, **kwargs) -> SequenceSplit:
    """``n`` examples as pixel sequences ``x`` float32 ``[n, size², 1]`` (row-major), 2 classes."""
    images, labels = pathfinder_images(n, seed=seed, **kwargs)
    return SequenceSplit(images.reshape(n, -1, 1), labels, 2)
