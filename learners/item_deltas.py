"""Item-side deltas: what one worker learned about items, for the other workers to apply.

Workers of one consumer group each learn the events of their own `interactions` partitions. The
user side stays with the partition; the item side (counts, trending counts, neighbour pairs) is global:
each worker sends what its own events changed, per source partition, as an `ItemDelta`, and applies
everyone else's. A delta covers the item-side events of one partition between offsets `first` and
`last`; a model applies a delta only when `first` is at or past what it already holds of that
partition (`SparseRecommender.item_watermarks`), so an event's item side enters each model exactly once,
learned there or applied from a delta, across restarts and partition moves (a new owner re-learns the
events before the watermark for the user side only).

Entries are touched items only: per item its event count and trending sum, per item pair its raw pair
weight (both directions get it), per first pick (an item some user picked first) its raw weight in the
first-picks row. Weights are raw: the receiver scales them by its own drift boost, and its event clock
moves on by the delta's event count (the clock counts every worker's events).

The wire form (`to_bytes` / `from_bytes`) is a JSON header and little-endian arrays; `from_bytes`
refuses anything malformed with a `ValueError` saying what (the stream dead-letters it).

>>> import numpy as np
>>> delta = ItemDelta(partition=3, first=10, last=12, events=3, item_ids=["a", "b"],
...                   counts=np.array([2, 1]), trend_sums=np.array([1.5, 1.0]),
...                   pair_a=np.array([0]), pair_b=np.array([1]), pair_w=np.array([1.0]))
>>> back = ItemDelta.from_bytes(delta.to_bytes())
>>> back.partition, back.first, back.last, back.item_ids, back.counts.tolist(), back.pair_w.tolist()
(3, 10, 12, ['a', 'b'], [2, 1], [1.0])
>>> ItemDelta.from_bytes(b"hello")
Traceback (most recent call last):
ValueError: not an item delta (bad magic)
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"SRD1"
MAX_ID_BYTES = 1024  # an item id's UTF-8 bytes (the event schema caps ids well below)
_HEADER = struct.Struct("<4sI")


@dataclass
class ItemDelta:
    """The item-side change of events `first`..`last` (offsets, inclusive) of one partition."""

    partition: int
    first: int
    last: int
    events: int  # item-side events it covers (the receiver's event clock moves on by this)
    item_ids: list[str]
    counts: np.ndarray  # (I,) events per item (0: only a pair partner)
    trend_sums: np.ndarray  # (I,) sum of 2 ** ((event clock - end clock) / half-life) per item
    pair_a: np.ndarray  # (P,) positions in item_ids
    pair_b: np.ndarray  # (P,)
    pair_w: np.ndarray  # (P,) raw pair weight (before any drift boost)
    meta: dict[str, Any] = field(default_factory=dict)  # sender, record times (set by the stream)
    first_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (F,) positions in item_ids
    first_w: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (F,) raw first-pick weight

    def to_bytes(self) -> bytes:
        encoded = [s.encode("utf-8") for s in self.item_ids]
        lengths = np.fromiter((len(b) for b in encoded), np.uint32, len(encoded))
        header = {"partition": int(self.partition), "first": int(self.first), "last": int(self.last),
                  "events": int(self.events), "items": len(encoded), "pairs": int(len(self.pair_a)),
                  "firsts": int(len(self.first_pos)), "meta": self.meta}
        head = json.dumps(header, separators=(",", ":")).encode()
        return b"".join([
            _HEADER.pack(MAGIC, len(head)), head, lengths.tobytes(), b"".join(encoded),
            np.asarray(self.counts, "<u4").tobytes(), np.asarray(self.trend_sums, "<f8").tobytes(),
            np.asarray(self.pair_a, "<u4").tobytes(), np.asarray(self.pair_b, "<u4").tobytes(),
            np.asarray(self.pair_w, "<f4").tobytes(), np.asarray(self.first_pos, "<u4").tobytes(),
            np.asarray(self.first_w, "<f4").tobytes()])

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ItemDelta:
        """Decode and check a delta; ValueError with the reason for anything that is not a sound one."""
        if not raw or len(raw) < _HEADER.size or raw[:4] != MAGIC:
            raise ValueError("not an item delta (bad magic)")
        _, head_len = _HEADER.unpack_from(raw)
        at = _HEADER.size
        try:
            header = json.loads(raw[at:at + head_len])
            partition, first, last, events = (int(header[k])
                                              for k in ("partition", "first", "last", "events"))
            n_items, n_pairs = int(header["items"]), int(header["pairs"])
            n_firsts = int(header.get("firsts", 0))
            meta = header.get("meta", {})
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"item delta header unreadable: {exc}") from None
        if not isinstance(meta, dict):
            raise ValueError("item delta meta is not an object")
        if (partition < 0 or first < 0 or last < first or events < 1 or n_items < 1 or n_pairs < 0
                or n_firsts < 0):
            raise ValueError(f"item delta header out of range: {header}")
        at += head_len
        need = at + 4 * n_items
        if len(raw) < need:
            raise ValueError("item delta truncated")
        lengths = np.frombuffer(raw, "<u4", n_items, at)
        if int(lengths.max()) > MAX_ID_BYTES or int(lengths.min()) < 1:
            raise ValueError("item delta holds an empty or oversize item id")
        at = need
        blob_end = at + int(lengths.sum())
        expected = blob_end + 12 * n_items + 12 * n_pairs + 8 * n_firsts
        if len(raw) != expected:
            raise ValueError(f"item delta of {len(raw)} bytes, its header says {expected}")
        ends = np.cumsum(lengths).tolist()
        raw_ids = raw[at:blob_end]
        try:
            ids = [raw_ids[a:b].decode("utf-8") for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        except UnicodeDecodeError:
            raise ValueError("item delta ids are not UTF-8") from None
        at = blob_end
        counts = np.frombuffer(raw, "<u4", n_items, at).astype(np.int64)
        at += 4 * n_items
        trend_sums = np.frombuffer(raw, "<f8", n_items, at).copy()
        at += 8 * n_items
        pair_a = np.frombuffer(raw, "<u4", n_pairs, at).astype(np.int64)
        at += 4 * n_pairs
        pair_b = np.frombuffer(raw, "<u4", n_pairs, at).astype(np.int64)
        at += 4 * n_pairs
        pair_w = np.frombuffer(raw, "<f4", n_pairs, at).astype(np.float64)
        at += 4 * n_pairs
        first_pos = np.frombuffer(raw, "<u4", n_firsts, at).astype(np.int64)
        at += 4 * n_firsts
        first_w = np.frombuffer(raw, "<f4", n_firsts, at).astype(np.float64)
        if int(counts.sum()) != events:
            raise ValueError("item delta counts do not add up to its events")
        if not (np.isfinite(trend_sums).all() and (trend_sums >= 0).all()
                and np.isfinite(pair_w).all() and (pair_w >= 0).all()
                and np.isfinite(first_w).all() and (first_w >= 0).all()):
            raise ValueError("item delta holds non-finite or negative weights")
        if n_pairs and (int(pair_a.max()) >= n_items or int(pair_b.max()) >= n_items):
            raise ValueError("item delta pair refers past its items")
        if n_firsts and int(first_pos.max()) >= n_items:
            raise ValueError("item delta first pick refers past its items")
        if len(set(ids)) != n_items:
            raise ValueError("item delta repeats an item id")
        return cls(partition, first, last, events, ids, counts, trend_sums, pair_a, pair_b, pair_w, meta,
                   first_pos, first_w)


SEEN_MAGIC = b"SRS1"


def seen_to_bytes(item_ids: list[str], first_ts: list[float | None] | None = None) -> bytes:
    """A notice of items first seen by one worker (sent at once, ahead of the delta with their counts),
    with the Kafka record time of each item's first event there when known: a worker that saw the
    same item first itself, later, learns from it that its own first event was evaluable after all.

    >>> seen_from_bytes(seen_to_bytes(["a", "b"], [12.5, None]))
    (['a', 'b'], [12.5, None])
    >>> seen_from_bytes(seen_to_bytes(["a"]))
    (['a'], [None])
    """
    stamps = list(first_ts) if first_ts is not None else [None] * len(item_ids)
    if len(stamps) != len(item_ids):
        raise ValueError("one first-event time per item id")
    body = {"ids": item_ids, "first_ts": stamps}
    return SEEN_MAGIC + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _stamp_ok(t: Any) -> bool:
    return t is None or (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t))


def seen_from_bytes(raw: bytes) -> tuple[list[str], list[float | None]]:
    """(item ids, their first-event record times or None) of a `seen_to_bytes` notice (a bare JSON
    list of ids, the first form, has no times); ValueError for anything else."""
    try:
        body = json.loads(raw[len(SEEN_MAGIC):])
    except (ValueError, UnicodeDecodeError):
        raise ValueError("seen notice unreadable") from None
    if isinstance(body, dict):
        ids, stamps = body.get("ids"), body.get("first_ts")
    else:
        ids, stamps = body, None
    if not (raw.startswith(SEEN_MAGIC) and isinstance(ids, list)
            and all(isinstance(i, str) and i for i in ids)):
        raise ValueError("not a seen notice")
    if stamps is None:
        stamps = [None] * len(ids)
    if not (isinstance(stamps, list) and len(stamps) == len(ids) and all(_stamp_ok(t) for t in stamps)):
        raise ValueError("seen notice times do not match its ids")
    return ids, [None if t is None else float(t) for t in stamps]


class FirstSightings:
    """Items this worker saw first, each with the record time of that first event, until another
    worker's seen notice of the same item tells who saw it first.

    With several workers an item is evaluable from its first event anywhere (the global seen set). A
    worker whose event of an item comes before the other worker's notice of it could not rank it: the
    item was unknown here. When that notice arrives with an earlier first event (record time, then
    worker id on a tie), `settle` returns the event: it counts as evaluated, ranked last.

    >>> sightings = FirstSightings("w1")
    >>> sightings.add(["x", "y"], [10.0, 12.0], [("p0", 5), ("p0", 6)])
    >>> sightings.settle(["x", "y", "z"], [9.0, 13.0, 1.0], "w2")  # w2 saw x earlier, y later
    [('p0', 5)]
    >>> len(sightings)  # both settled
    0
    """

    def __init__(self, worker_id: str, capacity: int = 100_000) -> None:
        self.worker_id = worker_id
        self.capacity = capacity
        self._open: dict[str, tuple[float, Any]] = {}  # item -> (record time, event), oldest first

    def __len__(self) -> int:
        return len(self._open)

    def add(self, item_ids: Any, record_ts: Any, events: Any) -> None:
        """This worker's first events of these items (record times None: not comparable, skipped)."""
        for item, ts, event in zip(item_ids, record_ts, events, strict=True):
            if ts is not None and math.isfinite(ts):
                self._open[str(item)] = (float(ts), event)
        while len(self._open) > self.capacity:  # the oldest sightings go first (dicts keep order)
            del self._open[next(iter(self._open))]

    def settle(self, item_ids: Any, first_ts: Any, sender: str) -> list[Any]:
        """Another worker's first events of items; returns the events of ours that came after theirs."""
        late = []
        for item, ts in zip(item_ids, first_ts, strict=True):
            mine = self._open.pop(item, None) if ts is not None else None
            if mine is not None and (ts, sender) < (mine[0], self.worker_id):
                late.append(mine[1])
        return late


class DeltaRecorder:
    """Collects a model's item-side learning per source partition between `take` calls.

    The model appends, per micro-batch, its item-side events (partition, offset, item column, event
    clock) and learned pairs (partition, item column, partner column, raw weight; partner -1: a first
    pick); `take` aggregates them into one `ItemDelta` per partition (touched entries only, pairs summed
    in a canonical direction) and starts over."""

    def __init__(self) -> None:
        self._events: list[tuple[np.ndarray, ...]] = []
        self._pairs: list[tuple[np.ndarray, ...]] = []

    def add(self, partition: np.ndarray, offset: np.ndarray, cols: np.ndarray, clock: np.ndarray,
            pair_partition: np.ndarray, pair_offset: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray,
            pair_w: np.ndarray) -> None:
        """One micro-batch: its item-side events and its learned pairs (with their event's partition
        and offset)."""
        if len(partition):
            self._events.append((partition.astype(np.int64), offset.astype(np.int64), cols.astype(np.int64),
                                 clock.astype(np.float64)))
        if len(pair_a):
            self._pairs.append((pair_partition.astype(np.int64), pair_offset.astype(np.int64),
                                pair_a.astype(np.int64), pair_b.astype(np.int64), pair_w.astype(np.float64)))

    def drop_cols(self, dead: np.ndarray) -> None:
        """Forget what was recorded about columns being freed (evicted items: their state is gone)."""
        self._events = [tuple(a[~dead[e[2]]] for a in e) for e in self._events]
        self._pairs = [tuple(a[~(dead[p[2]] | ((p[3] >= 0) & dead[np.maximum(p[3], 0)]))] for a in p)
                       for p in self._pairs]

    def take(self, ids_of: Any, clock_now: float, half_life: float,
             max_events: int = 1500) -> list[ItemDelta]:
        """Deltas of the item-side events since the last call, per partition in offset order, each of
        at most `max_events` events (a delta stays well under Kafka's 1 MB message limit); `ids_of`:
        columns -> external ids."""
        if not self._events:
            self._pairs = []
            return []
        part, offset, cols, clock = (np.concatenate(a) for a in zip(*self._events, strict=True))
        if self._pairs:
            pairs = [np.concatenate(a) for a in zip(*self._pairs, strict=True)]
        else:
            pairs = [np.zeros(0, np.int64)] * 4 + [np.zeros(0)]
        self._events, self._pairs = [], []
        decay = 2.0 ** ((clock - clock_now) / half_life)
        order = np.lexsort((offset, part))
        part, offset, cols, decay = part[order], offset[order], cols[order], decay[order]
        pair_order = np.lexsort((pairs[1], pairs[0]))
        pairs = [a[pair_order] for a in pairs]
        deltas = []
        for p in np.unique(part).tolist():
            lo, hi = np.searchsorted(part, [p, p + 1])
            plo, phi = np.searchsorted(pairs[0], [p, p + 1])
            for a in range(lo, hi, max_events):
                b = min(a + max_events, hi)
                first, last = int(offset[a]), int(offset[b - 1])
                qa, qb = plo + np.searchsorted(pairs[1][plo:phi], [first, last + 1])
                deltas.append(_delta(p, first, last, cols[a:b], decay[a:b], pairs[2][qa:qb], pairs[3][qa:qb],
                                     pairs[4][qa:qb], ids_of))
        return deltas


def _delta(partition: int, first: int, last: int, cols: np.ndarray, decay: np.ndarray, pair_a: np.ndarray,
           pair_b: np.ndarray, pair_w: np.ndarray, ids_of: Any) -> ItemDelta:
    """One delta: per touched item its events and trending sum, per pair (canonical direction) its
    summed weight, per first pick (partner -1) its summed weight; pair partners join the items (with no
    events of their own here)."""
    picked = pair_b < 0
    first_cols, first_where = np.unique(pair_a[picked], return_inverse=True)
    first_w = np.bincount(first_where, weights=pair_w[picked], minlength=len(first_cols))
    pair_a, pair_b, pair_w = pair_a[~picked], pair_b[~picked], pair_w[~picked]
    lo, hi = np.minimum(pair_a, pair_b), np.maximum(pair_a, pair_b)
    keys, where = np.unique(lo * (1 << 31) + hi, return_inverse=True)
    weights = np.bincount(where, weights=pair_w, minlength=len(keys))
    pair_cols = np.stack([keys >> 31, keys & ((1 << 31) - 1)])
    item_cols = np.union1d(np.union1d(cols, pair_cols.ravel()), first_cols)
    at = np.searchsorted(item_cols, cols)
    counts = np.bincount(at, minlength=len(item_cols))
    trend = np.bincount(at, weights=decay, minlength=len(item_cols))
    return ItemDelta(
        partition=int(partition), first=first, last=last, events=len(cols),
        item_ids=[str(x) for x in ids_of(item_cols)], counts=counts, trend_sums=trend,
        pair_a=np.searchsorted(item_cols, pair_cols[0]), pair_b=np.searchsorted(item_cols, pair_cols[1]),
        pair_w=weights, first_pos=np.searchsorted(item_cols, first_cols), first_w=first_w)
