"""CTR data: global feature ids, batches, MovieLens-100K as CTR, and a Criteo-shaped generator.

Feature ids
    A CTR example has ``F`` categorical fields; field ``f``'s raw value ``v`` (an integer in
    ``[0, 2**40)``) becomes the *global id* ``(f << 40) | v`` (:func:`global_ids`), so one
    embedding table can hold every field and two fields never share an id.

Batches
    :class:`CTRBatch` (``ids [B, F]`` global ids, ``dense [B, D] | None``, ``label [B]``
    0/1 floats, ``timestamp [B]`` seconds) is what models and trainers consume;
    :class:`CTRSplit` holds a whole split and :func:`iter_batches` cuts it into batches.

MovieLens-100K (registered as the dataset ``movielens_100k``)
    The GroupLens 100K ratings as packaged by RecBole (files of the PyPI wheel
    ``recbole==1.2.1``, read with ``zipfile``, never installed): 100,000 ratings of 1,682
    movies by 943 users, 1997-09 to 1998-04. As CTR: a rating >= 4 is a click (55.4 % of
    ratings). See :func:`load_movielens_ctr` for the fields and the time-ordered split.

Criteo-shaped synthetic stream
    :class:`CriteoLikeGenerator`: 13 dense + 26 Zipfian categorical fields with labels from
    a planted logistic model with pairwise field interactions (Criteo itself cannot be
    obtained offline).
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from subspace_core.data.registry import fetch, register_dataset
from subspace_core.data.sources import LocalDir, PyPIWheelMember
from subspace_core.data.spec import DatasetSpec, FileSpec

__all__ = [
    "FIELD_SHIFT",
    "MAX_FIELD_VALUE",
    "MOVIELENS_100K",
    "MOVIELENS_FIELDS",
    "MOVIELENS_SPLITS",
    "CTRBatch",
    "CTRSplit",
    "CriteoLikeGenerator",
    "field_of",
    "global_ids",
    "iter_batches",
    "load_movielens_ctr",
    "value_of",
]

#: Bits reserved for a field's raw value inside a global id.
FIELD_SHIFT = 40
#: Raw values must be below this (``2**40``).
MAX_FIELD_VALUE = 1 << FIELD_SHIFT
# Fields above this would push (f << 40) past the int64 sign bit.
_MAX_FIELDS = 1 << (63 - FIELD_SHIFT)


# --------------------------------------------------------------------------- global ids


def global_ids(values: torch.Tensor) -> torch.Tensor:
    """Global ids ``(f << 40) | values[:, f]`` of raw field values.

    Args:
        values: integer tensor ``[B, F]``; column ``f`` holds field ``f``'s raw values, each in
            ``[0, 2**40)``.

    Returns:
        ``torch.int64 [B, F]``.
    """
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch.Tensor, got {type(values).__name__}")
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise TypeError(f"values: expected an integer dtype, got {values.dtype}")
    if values.dim() != 2:
        raise ValueError(f"values: expected shape [B, F], got {tuple(values.shape)}")
    num_fields = values.shape[1]
    if num_fields > _MAX_FIELDS:
        raise ValueError(f"values: expected at most {_MAX_FIELDS} fields, got {num_fields}")
    values = values.to(torch.int64)
    if values.numel():
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= MAX_FIELD_VALUE:
            raise ValueError(
                f"values: expected raw values in [0, 2**{FIELD_SHIFT}), got range [{lo}, {hi}]"
            )
    fields = torch.arange(num_fields, dtype=torch.int64, device=values.device)
    return (fields << FIELD_SHIFT) | values


def _check_ids(ids: torch.Tensor, name: str = "ids") -> torch.Tensor:
    """``ids`` itself when it is a non-negative int64 tensor; TypeError/ValueError naming
    ``name`` otherwise."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(ids).__name__}")
    if ids.dtype != torch.int64:
        raise TypeError(f"{name}: expected dtype torch.int64, got {ids.dtype}")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"{name}: expected non-negative ids, got min {int(ids.min())}")
    return ids


def field_of(ids: torch.Tensor) -> torch.Tensor:
    """Field index of each global id (any shape, int64)."""
    _check_ids(ids)
    return ids >> FIELD_SHIFT


def value_of(ids: torch.Tensor) -> torch.Tensor:
    """Raw field value of each global id (any shape, int64)."""
    _check_ids(ids)
    return ids & (MAX_FIELD_VALUE - 1)


# --------------------------------------------------------------------------- batches


def _check_float_vector(t: object, name: str, n: int) -> None:
    if not isinstance(t, torch.Tensor) or not t.dtype.is_floating_point:
        kind = getattr(t, "dtype", type(t).__name__)
        raise TypeError(f"{name}: expected a floating-point tensor, got {kind}")
    if tuple(t.shape) != (n,):
        raise ValueError(f"{name}: expected shape [{n}], got {tuple(t.shape)}")


@dataclass(frozen=True)
class CTRBatch:
    """A batch of CTR examples.

    Attributes:
        ids: ``torch.int64 [B, F]`` global feature ids (:func:`global_ids`).
        dense: ``float [B, D]`` dense features, or ``None``.
        label: ``float [B]`` clicks, 0 or 1.
        timestamp: ``float [B]`` event times in seconds (float64 where the data has
            Unix times, whose float32 spacing would be 64 s).
    """

    ids: torch.Tensor
    dense: torch.Tensor | None
    label: torch.Tensor
    timestamp: torch.Tensor

    def __post_init__(self) -> None:
        _check_ids(self.ids, "CTRBatch.ids")
        if self.ids.dim() != 2:
            raise ValueError(f"CTRBatch.ids: expected shape [B, F], got {tuple(self.ids.shape)}")
        n = self.ids.shape[0]
        _check_float_vector(self.label, "CTRBatch.label", n)
        _check_float_vector(self.timestamp, "CTRBatch.timestamp", n)
        if n and not bool(((self.label == 0) | (self.label == 1)).all()):
            raise ValueError("CTRBatch.label: expected only 0/1 values")
        if self.dense is not None:
            if not isinstance(self.dense, torch.Tensor) or not self.dense.dtype.is_floating_point:
                raise TypeError(
                    f"CTRBatch.dense: expected a floating-point tensor or None, "
                    f"got {getattr(self.dense, 'dtype', type(self.dense).__name__)}"
                )
            if self.dense.dim() != 2 or self.dense.shape[0] != n:
                raise ValueError(
                    f"CTRBatch.dense: expected shape [{n}, D], got {tuple(self.dense.shape)}"
                )

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def num_fields(self) -> int:
        return int(self.ids.shape[1])

    def batch(self, index: torch.Tensor | slice) -> CTRBatch:
        """The examples at ``index`` (a slice or an int64 index tensor) as a :class:`CTRBatch`."""
        return CTRBatch(
            ids=self.ids[index],
            dense=None if self.dense is None else self.dense[index],
            label=self.label[index],
            timestamp=self.timestamp[index],
        )

    @property
    def now(self) -> float:
        """The batch's latest timestamp (what a model's ``now`` argument gets)."""
        return float(self.timestamp.max()) if len(self) else 0.0


@dataclass(frozen=True)
class CTRSplit(CTRBatch):
    """A whole split: a :class:`CTRBatch` plus its field names and raw values.

    Attributes:
        field_names: one name per column of ``ids``.
        values: ``torch.int64 [N, F]`` raw field values (``ids == global_ids(values)``).
    """

    field_names: tuple[str, ...] = ()
    values: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.field_names) != self.num_fields:
            raise ValueError(
                f"CTRSplit.field_names: expected {self.num_fields} names, "
                f"got {len(self.field_names)}"
            )


def iter_batches(
    split: CTRBatch, batch_size: int, *, shuffle: bool = False, seed: int = 0
) -> Iterator[CTRBatch]:
    """Cut ``split`` into batches of ``batch_size`` (the last one may be smaller).

    In order when ``shuffle`` is False (time order for time-sorted splits); otherwise in a
    permutation drawn from ``torch.Generator().manual_seed(seed)`` (same seed, same order).
    """
    if not isinstance(split, CTRBatch):
        raise TypeError(f"split: expected a CTRBatch or CTRSplit, got {type(split).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    n = len(split)
    order = None
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for start in range(0, n, batch_size):
        index = (
            slice(start, start + batch_size) if order is None else order[start : start + batch_size]
        )
        yield CTRBatch(
            ids=split.ids[index],
            dense=None if split.dense is None else split.dense[index],
            label=split.label[index],
            timestamp=split.timestamp[index],
        )


# --------------------------------------------------------------------------- MovieLens-100K

RECBOLE_VERSION = "1.2.1"
_IN_WHEEL = "recbole/dataset_example/ml-100k/"
_INTER = FileSpec(
    "ml-100k.inter", "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", 1979230
)
_USER = FileSpec(
    "ml-100k.user", "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972", 22697
)
_ITEM = FileSpec(
    "ml-100k.item", "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532", 66632
)

#: Splits of the time-ordered 80/10/10 split.
MOVIELENS_SPLITS = ("train", "validation", "test")
#: Field names (columns of ``x`` / ``ids``), in order. ``hour`` and ``weekday`` are dropped
#: by ``load_movielens_ctr(..., time_fields=False)``.
MOVIELENS_FIELDS = (
    "user_id",
    "item_id",
    "age",
    "gender",
    "occupation",
    "zip_region",
    "release_decade",
    "genre_1",
    "genre_2",
    "hour",
    "weekday",
)
#: Occupations of ml-100k.user, sorted; field value = 1 + position (0 = missing).
OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other",
    "programmer", "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip
#: Genres in MovieLens' own order; field value = 1 + position (0 = no such genre).
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: Lower bounds of the MovieLens-1M age groups (<18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+);
#: field value = 1 + group (0 = missing).
AGE_GROUPS = (0, 18, 25, 35, 45, 50, 56)
_CLICK_RATING = 4


def _read_tsv(path: Path, header: Sequence[str]) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        found = next(rows, None)
        if found is None or [h.split(":")[0] for h in found] != list(header):
            raise ValueError(f"{path}: expected columns {list(header)}, got {found}")
        return [row for row in rows if row]


def _age_value(text: str) -> int:
    if not text:
        return 0
    return int(np.searchsorted(AGE_GROUPS, int(text), side="right"))


def _zip_value(text: str) -> int:
    # First character: a US zip code's first digit is its region (0 = north-east .. 9 = west);
    # a few users have Canadian postal codes (a letter first), pooled as one value.
    if not text:
        return 0
    return int(text[0]) + 1 if text[0].isdigit() else 11


@functools.lru_cache(maxsize=2)
def _movielens_arrays(
    inter: str, user: str, item: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values int64 [N, 11], click int64 [N], timestamp float64 [N]) in time order."""
    occupation = {o: i + 1 for i, o in enumerate(OCCUPATIONS)}
    genre = {g: i + 1 for i, g in enumerate(GENRES)}
    users = {}
    for row in _read_tsv(Path(user), ("user_id", "age", "gender", "occupation", "zip_code")):
        gender = {"F": 1, "M": 2}.get(row[2], 0)
        users[int(row[0])] = (_age_value(row[1]), gender, occupation.get(row[3], 0),
                              _zip_value(row[4]))  # fmt: skip
    items = {}
    for row in _read_tsv(Path(item), ("item_id", "movie_title", "release_year", "class")):
        decade = int(row[2]) // 10 * 10 if row[2].strip().isdigit() else 0
        genres = [genre[g] for g in row[3].split() if g in genre] + [0, 0]
        items[int(row[0])] = (decade, genres[0], genres[1])
    rows = _read_tsv(Path(inter), ("user_id", "item_id", "rating", "timestamp"))
    n = len(rows)
    values = np.zeros((n, len(MOVIELENS_FIELDS)), dtype=np.int64)
    click = np.zeros(n, dtype=np.int64)
    stamp = np.zeros(n, dtype=np.float64)
    for i, (u, it, rating, ts) in enumerate(rows):
        u_id, i_id = int(u), int(it)
        values[i, :9] = (u_id, i_id, *users.get(u_id, (0, 0, 0, 0)), *items.get(i_id, (0, 0, 0)))
        click[i] = float(rating) >= _CLICK_RATING
        stamp[i] = float(ts)
    seconds = stamp.astype(np.int64)
    values[:, 9] = (seconds // 3600) % 24  # hour of day, UTC
    values[:, 10] = (seconds // 86400 + 3) % 7  # weekday, Monday = 0 (1970-01-01 was a Thursday)
    # A stable sort keeps the file order among equal timestamps, so the split is deterministic.
    order = np.argsort(stamp, kind="stable")
    out = values[order], click[order], stamp[order]
    for a in out:
        a.setflags(write=False)
    return out


def _split_range(n: int, split: str) -> slice:
    if split not in MOVIELENS_SPLITS:
        raise ValueError(f"split: expected one of {list(MOVIELENS_SPLITS)}, got {split!r}")
    a, b = int(0.8 * n), int(0.9 * n)
    return {"train": slice(0, a), "validation": slice(a, b), "test": slice(b, n)}[split]


def _movielens_split(files: Mapping[str, Path], split: str):
    values, click, stamp = _movielens_arrays(
        str(files[_INTER.name]), str(files[_USER.name]), str(files[_ITEM.name])
    )
    part = _split_range(len(click), split)
    return values[part], click[part], stamp[part]


def _load_movielens(files: Mapping[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    values, click, _ = _movielens_split(files, split)
    return values.copy(), click.copy()


MOVIELENS_100K = register_dataset(
    DatasetSpec(
        name="movielens_100k",
        files=(_INTER, _USER, _ITEM),
        sources=(
            LocalDir("$SUBZOO_DATA_DIR/movielens_100k"),
            PyPIWheelMember(
                "recbole",
                RECBOLE_VERSION,
                {f.name: _IN_WHEEL + f.name for f in (_INTER, _USER, _ITEM)},
            ),
        ),
        loader=_load_movielens,
        license="GroupLens research terms (non-commercial research use, cite Harper & "
        "Konstan 2015; no redistribution); RecBole packaging: MIT",
        description="MovieLens-100K as click-through data: 100,000 ratings (943 users, 1,682 "
        "movies), click = rating >= 4. Time-ordered split: all ratings sorted by timestamp "
        "(stable), train = first 80,000, validation = next 10,000, test = last 10,000. "
        "Registered view: x int64 [N, 11] raw field values (user_id, item_id, age group, "
        "gender, occupation, zip region, release decade, genre_1, genre_2, hour, weekday; "
        "0 = missing; see subspace_recsys.data.load_movielens_ctr); y int64 [N] clicks.",
        homepage="https://grouplens.org/datasets/movielens/100k/",
        classes=("no_click", "click"),
        splits=MOVIELENS_SPLITS,
    )
)


def load_movielens_ctr(split: str, *, time_fields: bool = True, progress: bool = False) -> CTRSplit:
    """MovieLens-100K as CTR: ``split`` is ``train`` (80,000), ``validation`` or ``test``
    (10,000 each).

    Split: every rating sorted by timestamp (stable, so ties keep file order); train is the
    first 80 %, validation the next 10 %, test the last 10 % -- later users and later
    ratings, as in production (many test users have few or no train ratings).

    Label: 1 when the rating is >= 4 (a "click"), else 0.

    Fields (raw values, no vocabulary is built: ids are global, so any non-negative integer
    works; 0 means missing/none):

    ==================  ==========================================================
    ``user_id``          the user id of the file (1..943)
    ``item_id``          the movie id of the file (1..1682)
    ``age``              1 + MovieLens-1M age group (<18, 18-24, ..., 56+), 1..7
    ``gender``           1 = F, 2 = M
    ``occupation``       1 + index in :data:`OCCUPATIONS` (21, sorted)
    ``zip_region``       first zip digit + 1 (1..10); 11 = non-US (letter) code
    ``release_decade``   release year // 10 * 10 (e.g. 1990)
    ``genre_1``          1 + index in :data:`GENRES` of the first listed genre
    ``genre_2``          the same for the second listed genre (0 if single-genre)
    ``hour``             hour of the rating, UTC (0..23)       (``time_fields``)
    ``weekday``          weekday of the rating, UTC, Monday = 0 (``time_fields``)
    ==================  ==========================================================

    Genres are listed in MovieLens' fixed genre order, so ``genre_1``/``genre_2`` are the
    first two genres of a movie in that order (a two-slot truncation of the multi-hot
    genre vector: 81 % of movies have at most two genres).

    Returns:
        :class:`CTRSplit` with ``ids [N, F]`` (global ids), ``dense=None``, ``label [N]``
        float32, ``timestamp [N]`` float64 (Unix seconds, non-decreasing), ``values`` the
        raw field values and ``field_names``.
    """
    files = fetch("movielens_100k", progress=progress)
    values, click, stamp = _movielens_split(files, split)
    num_fields = len(MOVIELENS_FIELDS) if time_fields else len(MOVIELENS_FIELDS) - 2
    raw = torch.from_numpy(values[:, :num_fields].copy())
    return CTRSplit(
        ids=global_ids(raw),
        dense=None,
        label=torch.from_numpy(click.astype(np.float32)),
        timestamp=torch.from_numpy(stamp.copy()),
        field_names=MOVIELENS_FIELDS[:num_fields],
        values=raw,
    )


# --------------------------------------------------------------------------- synthetic stream

_VALUE_MASK = MAX_FIELD_VALUE - 1


class CriteoLikeGenerator:
    """A Criteo-shaped click stream with a known (planted) click model.

    Every example has ``num_dense`` dense and ``num_categorical`` categorical fields.

    * Categorical field ``f`` draws a popularity rank ``r`` in ``[0, V_f)`` with probability
      ``∝ (r + 1) ** -zipf_a`` (Zipf, as real id frequencies), and reports the raw value
      ``(r * M_f + c_f) mod 2**40`` for a random odd ``M_f`` (a bijection, so values look
      like hashed ids and carry no rank order).
    * Dense feature ``j``: a count ``floor(exp(N(mu_j, sigma_j)))`` (log-normal), missing
      with probability ``p_j`` (``mu_j ~ U(0, 3)``, ``sigma_j ~ U(0.5, 1.5)``,
      ``p_j ~ U(0, 0.4)``); missing counts are imputed as 0 and the reported feature is
      ``log(1 + count)`` (the usual Criteo transform).
    * Label ``~ Bernoulli(sigmoid(z))`` with the planted logit
      ``z = base_logit + sum_f w_f[r_f] + w_d . (dense - centre)
      + sum_{(f, g) in pairs} <A_fg[r_f], B_fg[r_g]>``:
      first-order weights ``w_f ~ N(0, (first_order_std * s_f)^2)`` with a per-field
      strength ``s_f ~ U(0, 1)`` (some fields barely matter), ``num_interactions`` random
      field pairs with rank-``interaction_rank`` factors scaled so each pair's term has
      standard deviation ``interaction_std`` (so models with feature interactions win), and
      dense weights of total standard deviation about ``dense_std``. The defaults give a
      click rate near 0.33 and a planted-model AUC near 0.88 (0.75-0.80 without the
      interaction terms). ``num_interactions`` defaults to ``min(6, F * (F - 1) / 2)``.
    * Time: events arrive as a Poisson process at ``events_per_second`` from
      ``start_time``; with ``drift > 0`` the first-order weights rotate towards an
      independent draw ``w'_f`` as ``cos(drift * t_days) w_f + sin(drift * t_days) w'_f``
      (radians per day of stream time), so a model trained on old data goes stale.

    The planted model is drawn from ``seed`` alone; the examples from ``seed`` and the
    number drawn so far: two generators with the same arguments give the same stream.

    Args:
        num_ids_per_field: ``V_f``, one int for every field or one per field
            (each in ``[1, 2**24]``).
    """

    def __init__(
        self,
        num_ids_per_field: int | Sequence[int] = 10_000,
        *,
        zipf_a: float = 1.2,
        num_dense: int = 13,
        num_categorical: int = 26,
        num_interactions: int | None = None,
        interaction_rank: int = 4,
        first_order_std: float = 0.5,
        interaction_std: float = 0.6,
        dense_std: float = 0.5,
        base_logit: float = -1.5,
        drift: float = 0.0,
        events_per_second: float = 100.0,
        start_time: float = 0.0,
        seed: int = 0,
    ) -> None:
        for name, value in (("num_dense", num_dense), ("num_categorical", num_categorical),
                            ("interaction_rank", interaction_rank)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(num_ids_per_field, int) and not isinstance(num_ids_per_field, bool):
            sizes = [num_ids_per_field] * num_categorical
        else:
            sizes = list(num_ids_per_field)
        if len(sizes) != num_categorical or any(
            isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 24 for v in sizes
        ):
            raise ValueError(
                f"num_ids_per_field: expected an int or {num_categorical} ints in [1, 2**24], "
                f"got {num_ids_per_field!r}"
            )
        if not zipf_a > 0:
            raise ValueError(f"zipf_a: expected a positive float, got {zipf_a!r}")
        max_pairs = num_categorical * (num_categorical - 1) // 2
        if num_interactions is None:
            num_interactions = min(6, max_pairs)
        if (
            isinstance(num_interactions, bool)
            or not isinstance(num_interactions, int)
            or not 0 <= num_interactions <= max_pairs
        ):
            raise ValueError(
                f"num_interactions: expected an int in 0..{max_pairs}, got {num_interactions!r}"
            )
        if not events_per_second > 0:
            raise ValueError(
                f"events_per_second: expected a positive float, got {events_per_second!r}"
            )
        for name, value in (("first_order_std", first_order_std), ("dense_std", dense_std),
                            ("interaction_std", interaction_std), ("drift", drift)):  # fmt: skip
            if not value >= 0:
                raise ValueError(f"{name}: expected a non-negative float, got {value!r}")
        self.num_ids_per_field = tuple(sizes)
        self.num_dense = num_dense
        self.num_categorical = num_categorical
        self.zipf_a = float(zipf_a)
        self.base_logit = float(base_logit)
        self.drift = float(drift)
        self.events_per_second = float(events_per_second)
        self.seed = seed

        g = torch.Generator().manual_seed(seed)
        self._cdf = []
        for v in sizes:
            p = torch.arange(1, v + 1, dtype=torch.float64).pow(-self.zipf_a)
            cdf = torch.cumsum(p / p.sum(), 0)
            cdf[-1] = 1.0
            self._cdf.append(cdf)
        self._mult = [int(torch.randint(0, 1 << 22, (), generator=g)) * 2 + 1 for _ in sizes]
        self._offset = [int(torch.randint(0, 1 << 40, (), generator=g)) for _ in sizes]
        self._mult_inv = [pow(m, -1, MAX_FIELD_VALUE) for m in self._mult]

        self.dense_mu = torch.rand(num_dense, generator=g, dtype=torch.float64) * 3
        self.dense_sigma = 0.5 + torch.rand(num_dense, generator=g, dtype=torch.float64)
        self.dense_missing = torch.rand(num_dense, generator=g, dtype=torch.float64) * 0.4
        self.dense_weight = torch.randn(num_dense, generator=g, dtype=torch.float64) * (
            dense_std / math.sqrt(num_dense)
        )
        # Roughly the mean of log(1 + count): the imputed zeros pull it down.
        self._dense_centre = (1 - self.dense_missing) * self.dense_mu.clamp(min=0.5)

        self.field_strength = torch.rand(num_categorical, generator=g, dtype=torch.float64)
        self.first_order = [
            torch.randn(v, generator=g, dtype=torch.float64) * (first_order_std * s)
            for v, s in zip(sizes, self.field_strength.tolist(), strict=True)
        ]
        pairs = torch.combinations(torch.arange(num_categorical), 2)
        chosen = torch.randperm(len(pairs), generator=g)[:num_interactions]
        self.interaction_pairs = tuple(
            (int(a), int(b)) for a, b in pairs[chosen.sort().values].tolist()
        )
        # Each factor entry has std a with k * a**4 = interaction_std**2, so that the
        # pair's inner product has standard deviation interaction_std.
        a = (interaction_std**2 / interaction_rank) ** 0.25
        self._factors = [
            (
                torch.randn(sizes[f], interaction_rank, generator=g, dtype=torch.float64) * a,
                torch.randn(sizes[h], interaction_rank, generator=g, dtype=torch.float64) * a,
            )
            for f, h in self.interaction_pairs
        ]
        # Drawn from a generator of its own, so that drift changes nothing else.
        drift_g = torch.Generator().manual_seed(seed + 2)
        self._drift_target = [
            torch.randn(v, generator=drift_g, dtype=torch.float64) * (first_order_std * s)
            for v, s in zip(sizes, self.field_strength.tolist(), strict=True)
        ] if drift > 0 else None  # fmt: skip
        self._sampler = torch.Generator().manual_seed(seed + 1)
        self._clock = float(start_time)

    @property
    def now(self) -> float:
        """Time of the last event drawn (``start_time`` before the first)."""
        return self._clock

    def ranks_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Popularity ranks ``[B, F]`` (0 = most frequent) of global ids ``[B, F]``."""
        _check_ids(ids)
        if ids.dim() != 2 or ids.shape[1] != self.num_categorical:
            raise ValueError(
                f"ids: expected shape [B, {self.num_categorical}], got {tuple(ids.shape)}"
            )
        ranks = torch.empty_like(ids)
        for f in range(self.num_categorical):
            value = ids[:, f] & _VALUE_MASK
            # Multiplication wraps modulo 2**64, a multiple of 2**40, so the masked product
            # is the exact inverse of the affine map modulo 2**40.
            ranks[:, f] = ((value - self._offset[f]) * self._mult_inv[f]) & _VALUE_MASK
        return ranks

    def planted_logits(
        self,
        ids: torch.Tensor,
        dense: torch.Tensor,
        timestamp: torch.Tensor,
        *,
        interactions: bool = True,
    ) -> torch.Tensor:
        """The planted logit ``z`` (float64 ``[B]``) of examples this generator produced
        (``interactions=False`` leaves out the pairwise terms: the best a first-order
        model could know)."""
        ranks = self.ranks_of(ids)
        if ranks.numel() and int(ranks.max()) >= max(self.num_ids_per_field):
            raise ValueError("ids: expected ids drawn by this generator (rank out of range)")
        z = torch.full((ids.shape[0],), self.base_logit, dtype=torch.float64)
        days = timestamp.double() / 86400.0
        for f in range(self.num_categorical):
            w = self.first_order[f][ranks[:, f]]
            if self._drift_target is not None:
                angle = self.drift * days
                w = torch.cos(angle) * w + torch.sin(angle) * self._drift_target[f][ranks[:, f]]
            z += w
        z += (dense.double() - self._dense_centre) @ self.dense_weight
        if interactions:
            for (f, h), (left, right) in zip(self.interaction_pairs, self._factors, strict=True):
                z += (left[ranks[:, f]] * right[ranks[:, h]]).sum(-1)
        return z

    def sample(self, n: int) -> CTRBatch:
        """The next ``n`` events of the stream (timestamps increase, continuing the clock)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive int, got {n!r}")
        g = self._sampler
        ranks = torch.empty(n, self.num_categorical, dtype=torch.int64)
        values = torch.empty_like(ranks)
        for f, cdf in enumerate(self._cdf):
            u = torch.rand(n, generator=g, dtype=torch.float64)
            r = torch.searchsorted(cdf, u).clamp_(max=len(cdf) - 1)
            ranks[:, f] = r
            values[:, f] = (r * self._mult[f] + self._offset[f]) & _VALUE_MASK
        normal = torch.randn(n, self.num_dense, generator=g, dtype=torch.float64)
        counts = torch.floor(torch.exp(self.dense_mu + self.dense_sigma * normal))
        missing = torch.rand(n, self.num_dense, generator=g, dtype=torch.float64)
        counts = torch.where(missing < self.dense_missing, torch.zeros_like(counts), counts)
        dense = torch.log1p(counts)
        gaps = -torch.log1p(-torch.rand(n, generator=g, dtype=torch.float64))
        timestamp = self._clock + torch.cumsum(gaps / self.events_per_second, 0)
        self._clock = float(timestamp[-1])
        ids = global_ids(values)
        z = self.planted_logits(ids, dense, timestamp)
        label = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(z)).float()
        return CTRBatch(ids=ids, dense=dense.float(), label=label, timestamp=timestamp)

    def batches(self, batch_size: int, num_batches: int | None = None) -> Iterator[CTRBatch]:
        """``num_batches`` consecutive :meth:`sample` calls (endless when None)."""
        if num_batches is not None and (
            isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0
        ):
            raise ValueError(
                f"num_batches: expected a non-negative int or None, got {num_batches!r}"
            )
        produced = 0
        while num_batches is None or produced < num_batches:
            yield self.sample(batch_size)
            produced += 1
