"""Bucketised cuckoo hash index from int64 keys to slots, vectorised in torch.

Every key has two candidate buckets of ``slots_per_bucket`` slots, chosen by one 64-bit
mixing hash that also gives the key a 15-bit tag. A batched lookup gathers the tags of
both buckets ``[B, 2 * slots]`` (16 bytes per bucket), takes the first matching tag and
confirms it with one read of the full key (the rare false tag match falls back to
comparing every candidate key), so there is no Python loop per id. Each slot carries a
payload: the key's row in the embedding storage (-1 while the key is still being counted
for admission), its occurrence count and the time it was last seen. Keys are distinct
by construction, so two keys never share a slot or a row.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from subspace_recsys.hashing import fmix64, shr64

__all__ = ["EMPTY", "CuckooIndex", "mix64"]

EMPTY = -1  # key of a free slot; real keys are non-negative


def mix64(keys: torch.Tensor) -> torch.Tensor:
    """murmur3's 64-bit finaliser of ``keys [*]`` (int64, wrapping arithmetic) -> int64 [*].

    A bijection on 64-bit words, so distinct keys get distinct hashes, and every output bit
    depends on every input bit (ids like ``(field << 40) | value`` spread evenly).
    """
    return fmix64(keys)


def _buckets_for(capacity: int, slots: int, max_load: float) -> int:
    needed = max(1, math.ceil(capacity / (slots * max_load)))
    return 1 << (needed - 1).bit_length()


class CuckooIndex(nn.Module):
    """Key -> slot index with two hash choices and ``slots_per_bucket`` slots per bucket.

    Buffers (all ``[num_buckets, slots_per_bucket]``, flat slot = bucket * slots + j):
    ``keys`` int64 (``EMPTY`` = free), ``rows`` int64 (-1 = no row yet), ``counts`` int64,
    ``last_seen`` float64. ``num_buckets`` is a power of two; the index doubles it and
    rehashes when the load would pass ``max_load`` or a batch of displacements fails.

    Args:
        capacity: number of keys to hold before the first growth.
        slots_per_bucket: power of two in [1, 64]; 8 int64 keys fill one 64-byte cache line.
        max_load: fraction of slots that may be used before growing, in (0, 1).
        max_rounds: rounds of cuckoo displacement tried before growing instead.
    """

    def __init__(
        self,
        capacity: int = 1024,
        *,
        slots_per_bucket: int = 8,
        max_load: float = 0.9,
        max_rounds: int = 32,
    ) -> None:
        super().__init__()
        _check_int("capacity", capacity, minimum=1)
        _check_int("slots_per_bucket", slots_per_bucket, minimum=1)
        if slots_per_bucket > 64 or slots_per_bucket & (slots_per_bucket - 1):
            raise ValueError(
                f"slots_per_bucket: expected a power of two in [1, 64], got {slots_per_bucket}"
            )
        if not isinstance(max_load, (int, float)) or not 0.0 < max_load < 1.0:
            raise ValueError(f"max_load: expected a number in (0, 1), got {max_load!r}")
        _check_int("max_rounds", max_rounds, minimum=1)
        self.slots = slots_per_bucket
        self.max_load = float(max_load)
        self.max_rounds = max_rounds
        self._size = 0
        self._displaced = False
        self._allocate(_buckets_for(capacity, slots_per_bucket, self.max_load))

    # -- storage ---------------------------------------------------------------------------

    def _allocate(self, num_buckets: int) -> None:
        shape = (num_buckets, self.slots)
        self.register_buffer("keys", torch.full(shape, EMPTY, dtype=torch.int64))
        self.register_buffer("rows", torch.full(shape, -1, dtype=torch.int64))
        self.register_buffer("counts", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("last_seen", torch.zeros(shape, dtype=torch.float64))
        # 16-bit fingerprints of the keys (0 = free slot): a lookup compares these first, so
        # it reads 32 bytes per id instead of two 64-byte buckets of keys. Derived from the
        # keys, hence not saved.
        self.register_buffer("tags", torch.zeros(shape, dtype=torch.int16), persistent=False)
        self._size = 0

    @property
    def num_buckets(self) -> int:
        return self.keys.shape[0]

    @property
    def capacity(self) -> int:
        """Number of slots (``num_buckets * slots_per_bucket``)."""
        return self.keys.numel()

    def __len__(self) -> int:
        """Number of keys held (admitted or still counting)."""
        return self._size

    def live_slots(self) -> torch.Tensor:
        """Flat indices ``[N]`` of the occupied slots, ascending."""
        return torch.nonzero(self.keys.view(-1) != EMPTY).view(-1)

    # -- lookup ----------------------------------------------------------------------------

    def _candidates(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Hash ``keys [P]`` once -> (hash [P], bucket pair [P, 2], tag [P] int16).

        Bits 0-23 pick the first bucket, 24-47 the second and 48-63 the tag, so the three
        are independent up to 2**24 buckets (beyond, only the false-tag rate rises). Tags
        are odd, so the free-slot tag 0 never matches.
        """
        h = mix64(keys)
        mask = self.num_buckets - 1
        buckets = torch.stack((h & mask, shr64(h, 24) & mask), dim=1)
        tag = ((shr64(h, 48) | 1) - 32768).to(torch.int16)
        return h, buckets, tag

    def _gather_tags(self, buckets: torch.Tensor) -> torch.Tensor:
        """Tags of the flat bucket indices ``buckets [Q]`` -> int16 ``[Q, slots]``.

        index_select on a 2-D tensor copies row by row and is ~7x slower than on a 1-D one,
        so a bucket's tags are read as one wide element (16 bytes = one complex128).
        """
        width = 2 * self.slots  # bytes of tags per bucket
        if width <= 8:
            dtype = {2: torch.int16, 4: torch.int32, 8: torch.int64}[width]
            wide = self.tags.view(dtype).view(-1)
            return wide.index_select(0, buckets).view(torch.int16).view(-1, self.slots)
        chunks = width // 16
        wide = self.tags.view(torch.complex128).view(-1)
        if chunks > 1:
            buckets = (buckets.unsqueeze(1) * chunks + torch.arange(chunks)).view(-1)
        return wide.index_select(0, buckets).view(torch.int16).view(-1, self.slots)

    def _probe(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(slot [P], found [P] bool) of ``keys [P]``; slot is in range but meaningless
        where not found. The hot read path."""
        n, s = keys.shape[0], self.slots
        _, buckets, tag = self._candidates(keys)
        hit = self._gather_tags(buckets.view(-1)).view(n, 2 * s) == tag.unsqueeze(1)
        j, any_hit = _first_true(hit)
        shift = s.bit_length() - 1
        bucket = buckets.gather(1, shr64(j, shift).unsqueeze(1)).squeeze(1)
        slot = (bucket << shift) | (j & (s - 1))
        found = self.keys.view(-1).index_select(0, slot) == keys
        # A tag matched but the key did not (a 15-bit fingerprint clash, ~5e-4 per id):
        # such ids may sit at a later match, so compare their full keys.
        unsure = torch.nonzero(any_hit & ~found).view(-1)
        if unsure.shape[0]:
            exact = self._find_exact(keys[unsure], buckets[unsure])
            found[unsure] = exact >= 0
            slot[unsure] = exact.clamp(min=0)
        return slot, found

    def _find_exact(self, keys: torch.Tensor, buckets: torch.Tensor | None = None) -> torch.Tensor:
        """Like :meth:`find` but compares every candidate key (no tags)."""
        n, s = keys.shape[0], self.slots
        if buckets is None:
            _, buckets, _ = self._candidates(keys)
        cand = self.keys.index_select(0, buckets.view(-1)).view(n, 2 * s)
        hit = cand == keys.unsqueeze(1)
        # keys are unique in the index, so a row of ``hit`` has at most one True
        j = hit.to(torch.uint8).argmax(dim=1)
        bucket = buckets.gather(1, (j // s).unsqueeze(1)).squeeze(1)
        slot = bucket * s + j % s
        return slot.masked_fill_(~hit.any(dim=1), -1)

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Flat slot of each key of ``keys [P]`` (int64, non-negative), -1 where absent."""
        slot, found = self._probe(keys)
        return slot.masked_fill_(~found, -1)

    def lookup_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """Row of each key of ``keys [P]``, -1 where absent or not admitted; int64 ``[P]``."""
        slot, found = self._probe(keys)
        rows = self.rows.view(-1).index_select(0, slot)
        return rows.masked_fill_(~found, -1)

    # -- mutation --------------------------------------------------------------------------

    def insert(self, keys: torch.Tensor) -> bool:
        """Add ``keys [P]`` (int64, distinct, none present) with row -1, count 0, last_seen 0.

        Growth (a rehash into twice the buckets) happens first when the load would pass
        ``max_load``, and again whenever displacement gives up. Returns whether keys that
        were already present may have moved to other slots (then re-``find`` them).
        """
        n = keys.shape[0]
        return self.put(
            keys,
            torch.full((n,), -1, dtype=torch.int64),
            torch.zeros(n, dtype=torch.int64),
            torch.zeros(n, dtype=torch.float64),
        )

    def reserve(self, num_keys: int) -> None:
        """Grow now (one rehash) so that ``num_keys`` keys in total fit without growing."""
        num_buckets = self.num_buckets
        while num_keys > self.max_load * num_buckets * self.slots:
            num_buckets *= 2
        if num_buckets != self.num_buckets:
            self._rehash(num_buckets, self._no_entries())

    def _no_entries(self) -> tuple[torch.Tensor, ...]:
        return (
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.int64),
            torch.zeros(0, dtype=torch.float64),
        )

    def put(
        self, keys: torch.Tensor, rows: torch.Tensor, counts: torch.Tensor, seen: torch.Tensor
    ) -> bool:
        """Insert absent distinct ``keys [P]`` with the given payload (``[P]`` each); returns
        whether present keys may have moved (see :meth:`insert`)."""
        n = keys.shape[0]
        if n == 0:
            return False
        num_buckets = self.num_buckets
        while self._size + n > self.max_load * num_buckets * self.slots:
            num_buckets *= 2
        entries = (keys, rows, counts, seen)
        if num_buckets != self.num_buckets:
            self._rehash(num_buckets, entries)
            return True
        self._displaced = False
        left = self._place(*entries)
        if left is not None:
            self._rehash(2 * num_buckets, left)
            return True
        return self._displaced

    def remove(self, slots: torch.Tensor) -> None:
        """Free the occupied flat ``slots [P]`` (distinct)."""
        for buf, empty in zip(self._flat_buffers(), (EMPTY, 0, -1, 0, 0.0), strict=True):
            buf.index_fill_(0, slots, empty)
        self._size -= int(slots.shape[0])

    def _rehash(self, num_buckets: int, extra: tuple[torch.Tensor, ...]) -> None:
        live = self.live_slots()
        entries = tuple(
            torch.cat((buf.view(-1)[live], more))
            for buf, more in zip(
                (self.keys, self.rows, self.counts, self.last_seen), extra, strict=True
            )
        )
        while True:
            self._allocate(num_buckets)
            if self._place(*entries) is None:
                return
            num_buckets *= 2

    def _flat_buffers(self) -> tuple[torch.Tensor, ...]:
        return tuple(
            buf.view(-1) for buf in (self.keys, self.tags, self.rows, self.counts, self.last_seen)
        )

    def _place(self, keys, rows, counts, seen):
        """Place entries (distinct keys, absent from the index); the ones left, or None."""
        s = self.slots
        h, buckets, tags = self._candidates(keys)
        # pending entries as (key, tag, row, count, last_seen), the order of _flat_buffers,
        # then the hash, the bucket pair and which of the two buckets the entry was just
        # kicked out of (-1: never placed)
        entry = [keys, tags, rows, counts, seen, h, buckets, torch.full_like(keys, -1)]
        for rnd in range(self.max_rounds):
            # the emptier bucket first (power of two choices keeps the load even), then the
            # other one for the entries that found no room (their bucket filled up first)
            free = self._gather_tags(entry[6].view(-1)) == 0
            n_free = _count_true(free).view(-1, 2)
            choice = (n_free[:, 1] > n_free[:, 0]).long()
            for attempt in range(2):
                bucket = entry[6].gather(1, choice.unsqueeze(1)).squeeze(1)
                known = None
                if attempt == 0:  # reuse the free masks read above
                    pair = free.view(-1, 2, s)
                    known = torch.where(choice.bool().unsqueeze(1), pair[:, 1], pair[:, 0])
                placed = self._fill_free(bucket, entry[:5], known)
                if placed is not None:
                    left = torch.nonzero(~placed).view(-1)
                    entry = [e.index_select(0, left) for e in entry]
                    choice = choice.index_select(0, left)
                if entry[0].shape[0] == 0:
                    return None
                choice = 1 - choice
            # Both buckets full: each entry evicts the occupant of one slot of the bucket it
            # was not kicked out of; the slot walks with the round so cycles get broken.
            self._displaced = True
            h, buckets, kicked_from = entry[5:]
            n = h.shape[0]
            walk = shr64(h, 40) + rnd
            choice = torch.where(kicked_from >= 0, 1 - kicked_from, walk & 1)
            bucket = buckets.gather(1, choice.unsqueeze(1)).squeeze(1)
            target = bucket * s + (walk & (s - 1))
            # entries aiming at the same slot: the first one (in batch order) wins
            uniq, inverse = torch.unique(target, return_inverse=True)
            first = torch.full((uniq.shape[0],), n, dtype=torch.int64)
            first.scatter_reduce_(0, inverse, torch.arange(n), reduce="amin")
            won = torch.zeros(n, dtype=torch.bool).index_fill_(0, first, True)
            slot = target.index_select(0, first)
            flats = self._flat_buffers()
            victims = [buf.index_select(0, slot) for buf in flats]
            for buf, val in zip(flats, entry[:5], strict=True):
                buf.index_copy_(0, slot, val.index_select(0, first))
            # a slot freed up by the bucket contention of this round has no occupant to move
            occupied = torch.nonzero(victims[0] != EMPTY).view(-1)
            self._size += int(slot.shape[0] - occupied.shape[0])
            victims = [v.index_select(0, occupied) for v in victims]
            vh, vbuckets, _ = self._candidates(victims[0])
            from_bucket = bucket.index_select(0, first).index_select(0, occupied)
            victims += [vh, vbuckets, (vbuckets[:, 0] != from_bucket).long()]
            lost = torch.nonzero(~won).view(-1)
            entry = [
                torch.cat((e.index_select(0, lost), v)) for e, v in zip(entry, victims, strict=True)
            ]
        keys, _, rows, counts, seen = entry[:5]
        return keys, rows, counts, seen

    def _fill_free(
        self, bucket: torch.Tensor, entry: list[torch.Tensor], free: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """Put each entry in a free slot of ``bucket [P]`` if one is left; mask of placed
        (None when nothing was placed).

        Entries sharing a bucket are ranked in batch order and the k-th takes the k-th free
        slot, so a batch never writes two keys to one slot and the layout is deterministic.
        """
        s, n = self.slots, bucket.shape[0]
        if free is None:
            free = self._gather_tags(bucket) == 0  # [P, S]
        order = torch.argsort(bucket, stable=True)
        sorted_bucket = bucket.index_select(0, order)
        starts = torch.ones(n, dtype=torch.bool)
        starts[1:] = sorted_bucket[1:] != sorted_bucket[:-1]
        position = torch.arange(n)
        group_start = torch.cummax(torch.where(starts, position, 0), dim=0).values
        rank = torch.empty_like(position).index_copy_(0, order, position - group_start)
        ok = rank < _count_true(free)
        chosen = torch.nonzero(ok).view(-1)
        if chosen.shape[0] == 0:
            return None
        free = free.index_select(0, chosen)
        rank = rank.index_select(0, chosen)
        j = _first_true(free)[0]
        later = torch.nonzero(rank > 0).view(-1)
        if later.shape[0]:  # only entries sharing a bucket need the k-th free slot, k > 0
            f = free.index_select(0, later)
            nth = f & (f.cumsum(dim=1) - 1 == rank.index_select(0, later).unsqueeze(1))
            j.index_copy_(0, later, nth.to(torch.uint8).argmax(dim=1))
        slot = bucket.index_select(0, chosen) * s + j
        for buf, val in zip(self._flat_buffers(), entry, strict=True):
            buf.index_copy_(0, slot, val.index_select(0, chosen))
        self._size += int(slot.shape[0])
        return ok

    def _rebuild_tags(self) -> None:
        live = self.live_slots()
        self.tags.zero_()
        self.tags.view(-1)[live] = self._candidates(self.keys.view(-1)[live])[2]

    # -- persistence -----------------------------------------------------------------------

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Arrays of any [num_buckets, slots] shape load: resize ours to match first.
        names = ("keys", "rows", "counts", "last_seen")
        shapes = {tuple(state_dict[prefix + n].shape) for n in names if prefix + n in state_dict}
        if len(shapes) > 1:
            error_msgs.append(
                f"{prefix}keys/rows/counts/last_seen: expected one shared shape, got {shapes}"
            )
            return
        if shapes:
            (shape,) = shapes
            nb, slots = shape if len(shape) == 2 else (0, 0)
            # both must be powers of two: lookups select buckets and slots with bit masks
            if nb < 1 or nb & (nb - 1) or not 1 <= slots <= 64 or slots & (slots - 1):
                error_msgs.append(
                    f"{prefix}keys: expected shape [num_buckets, slots_per_bucket], both powers "
                    f"of two and slots_per_bucket <= 64, got {list(shape)}"
                )
                return
            self.slots = int(slots)
            if tuple(self.keys.shape) != shape:
                self._allocate(nb)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._size = int((self.keys != EMPTY).sum())
        self._rebuild_tags()

    def check_consistency(self) -> None:
        """Raise ValueError unless the arrays form a valid index (used after loading)."""
        live = self.keys.view(-1) != EMPTY
        keys = self.keys.view(-1)[live]
        if bool((self.keys.view(-1)[~live] != EMPTY).any()) or bool((keys < 0).any()):
            raise ValueError("index.keys: expected non-negative ids or -1 (free slot)")
        if keys.unique().shape[0] != keys.shape[0]:
            raise ValueError("index.keys: expected distinct ids, found duplicates")
        if not torch.equal(self._find_exact(keys), self.live_slots()):
            raise ValueError("index.keys: some ids are not in one of their two hash buckets")
        if bool((self.counts.view(-1)[live] < 0).any()):
            raise ValueError("index.counts: expected non-negative counts")
        free_rows = self.rows.view(-1)[~live]
        if bool((free_rows != -1).any()):
            raise ValueError("index.rows: expected -1 in every free slot")


# byte b of this constant (from the top) is b: (2**(8 * b) * _BYTE_INDEX) >> 56 == b
_BYTE_INDEX = 0x0001020304050607


def _first_true(hit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the first True of each row of ``hit [P, K]`` (any valid index if none)
    and whether the row has one.

    Reductions over a short last dimension are slow in torch; for K a multiple of 8 the
    bools are read as int64 words (little-endian: element b of a word is bit 8b) and the
    lowest set one located with one multiply, which is several times faster.
    """
    k = hit.shape[1]
    if k % 8 or not hit.is_contiguous() or sys.byteorder != "little":
        return hit.to(torch.uint8).argmax(dim=1), hit.any(dim=1)
    words = hit.view(torch.int64)  # [P, K / 8]
    first = None
    any_hit = None
    for w in reversed(range(k // 8)):
        word = words[:, w]
        byte = shr64((word & -word) * _BYTE_INDEX, 56) + 8 * w
        nonzero = word != 0
        if first is None:  # rows without a hit keep this word's (in-range) index
            first, any_hit = byte, nonzero
        else:
            first = torch.where(nonzero, byte, first)
            any_hit |= nonzero
    return first, any_hit


# every byte of a word summed into its top byte (the bytes here are 0 or 1)
_BYTE_SUM = 0x0101010101010101


def _count_true(mask: torch.Tensor) -> torch.Tensor:
    """Number of True per row of ``mask [P, K]`` -> int64 ``[P]`` (no slow short-row sum)."""
    k = mask.shape[1]
    if k % 8 or not mask.is_contiguous():  # (a byte sum does not depend on byte order)
        return mask.sum(dim=1)
    words = mask.view(torch.int64)
    total = shr64(words[:, 0] * _BYTE_SUM, 56)
    for w in range(1, k // 8):
        total += shr64(words[:, w] * _BYTE_SUM, 56)
    return total


def _check_int(name: str, value, *, minimum: int) -> None:
    # constructor arguments: every bad value (wrong type included) is a ValueError
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
