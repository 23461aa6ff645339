"""Candidates and their features for the deep re-ranker (the first stage of the two-stage pattern).

Given the online sources' score rows for a micro-batch (one row per event, one column per item),
`CandidateFeatures.build` keeps each event's top-C items of the blend that the user has not
interacted with yet (the evaluation protocol's candidates) and describes every candidate:

- per source: its score standardized over the row's candidates, a signed log of the raw score, and
  the score's share of the row's positive mass (how peaked the source is on it);
- the blend's standardized score and the candidate's rank in the first stage;
- the item's all-time and recent (decayed) interaction counts, events since it was last seen and
  since it first appeared (its age);
- the user: seconds since their previous event, the popularity of their last item, how many recent
  items they have.

Users and items are the recommender's dense columns; each event's recent items (most recent first,
the batch's earlier events included) come with the batch. Everything is computed from state learned
before the batch, vectorized over (event, candidate).

>>> import numpy as np
>>> feats = CandidateFeatures(n_candidates=2)
>>> blend = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)
>>> recent = np.array([[-1, -1]])
>>> c = feats.build(np.array([0]), recent, np.zeros((1, 2)), np.zeros(1), blend, {"pop": blend}, np.arange(3))
>>> c.items.tolist(), c.features.shape, c.n_valid.tolist()
([[1, 2]], (1, 2, 12), [2])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from learners.deep.select import top_columns
from learners.ids import grow_rows

OWN_FEATURES: tuple[str, ...] = (
    "blend_z", "blend_rank", "count_log", "recent_log", "since_seen_log", "age_log",
    "user_gap_log", "last_item_count_log", "user_recent_log",
)
PER_SOURCE: tuple[str, ...] = ("z", "signed_log", "share")


@dataclass(frozen=True)
class Candidates:
    """The candidates of a batch: item columns [n, C] (-1 padding), features [n, C, F] float32,
    n_valid [n] (valid candidates come first), each event's recent items [n, L], and where each
    candidate came from in the scored rows [n, C] (score-matrix or row position; -1 padding)."""

    items: np.ndarray
    features: np.ndarray
    n_valid: np.ndarray
    history: np.ndarray
    slots: np.ndarray | None = None

    def label(self, item_cols: np.ndarray) -> np.ndarray:
        """Position of each event's taken item among its candidates, -1 when it is not one."""
        item_cols = np.asarray(item_cols)
        hit = (self.items == item_cols[:, None]) & (item_cols[:, None] >= 0)
        return np.where(hit.any(1), hit.argmax(1), -1)


class CandidateFeatures:
    """Per-item and per-user statistics for candidate features, updated with `learn`.

    Parameters
    ----------
    n_candidates
        Candidates kept per event (top of the blend).
    recent_half_life
        Half-life, in events, of the "recent" item counts.
    exclude_seen
        Never make an item the user already interacted with a candidate (bitmap of users x items).
    per_source
        Each source also proposes its own top `per_source` items (the blend fills the rest).
    """

    def __init__(
        self,
        n_candidates: int = 50,
        recent_half_life: float = 2000.0,
        exclude_seen: bool = True,
        per_source: int = 0,
    ) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be positive, got {n_candidates}")
        self.n_candidates = n_candidates
        self.recent_half_life = recent_half_life
        self.exclude_seen = exclude_seen
        self.per_source = per_source
        self.source_names: tuple[str, ...] | None = None
        self._seen = np.zeros((16, 2), dtype=np.uint8)  # users x items, bit-packed
        self._count = np.zeros(16)
        self._recent = np.zeros(16)  # stored at weight 2**((clock - ref) / half_life)
        self._ref = 0.0
        self._last = np.full(16, -1.0)
        self._first = np.full(16, -1.0)
        self.events = 0

    @property
    def n_features(self) -> int:
        if self.source_names is None:
            raise ValueError("n_features is known after the first build (it depends on the sources)")
        return len(OWN_FEATURES) + len(PER_SOURCE) * len(self.source_names)

    # ----------------------------------------------------------------------------- features
    def build(
        self,
        users: np.ndarray,
        recent: np.ndarray,
        recent_ts: np.ndarray,
        ts: np.ndarray,
        blend: np.ndarray,
        sources: Mapping[str, np.ndarray],
        item_cols: np.ndarray,
    ) -> Candidates:
        """Candidates of each event and their features.

        `users` are user columns (-1 unknown), `recent`/`recent_ts` each event's previous items and
        their times (most recent first, -1 padding), `blend` score rows [n, m] and `sources[name]` score
        rows [n, m] or one row [m] shared by all events, whose column j is item column `item_cols[j]`.
        Only the candidates' entries of the sources are read, plus each source row's positive mass."""
        n, m = blend.shape
        names = self._source_names(sources)
        c = self.n_candidates
        item_cols = np.asarray(item_cols, dtype=np.int64)
        recent = np.asarray(recent, dtype=np.int64)
        finite = _finite(blend)  # a copy: the user's own items become -inf
        if self.exclude_seen:  # the user's own items are no recommendation (nor evaluated as one)
            self._mask_seen(finite, np.asarray(users, dtype=np.int64), recent, item_cols)
        if m > c:
            top = self._generate(finite, sources, names, c)
        else:
            top = np.broadcast_to(np.arange(m), (n, m)).copy()
        key = np.take_along_axis(finite, top, 1)
        if self.per_source and m > c:  # sources may propose the blend's items again
            key[_duplicates(top)] = -np.inf  # an item proposed twice keeps one slot
        order = np.argsort(-key, axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)  # [n, c'] columns of the score matrix, best first
        top_blend = np.take_along_axis(key, order, 1)
        valid = np.isfinite(top_blend)
        cand = np.where(valid, item_cols[top], -1)
        raw = [_at_columns(sources[name], top) for name in names]
        return self._describe(cand, top, top_blend, valid, raw, recent, recent_ts, ts)

    def build_rows(
        self,
        recent: np.ndarray,
        recent_ts: np.ndarray,
        ts: np.ndarray,
        cand_items: np.ndarray,
        blend: np.ndarray,
        sources: Mapping[str, np.ndarray],
        masses: Mapping[str, np.ndarray] | None = None,
    ) -> Candidates:
        """Candidates of each event from per-event candidate rows (a model that scores candidates only,
        `learners.sparse.SparseRecommender`): `cand_items` [n, M] item columns, `blend` [n, M] their
        scores (-inf: not a candidate: padding, the user's own items), `sources[name]` [n, M] each
        source's raw value there. The best `n_candidates` finite entries of each row are kept; a source's
        positive mass is `masses[name]` [n, 1] when given (rows that hold only the chosen few of more
        candidates), else its sum over the row's finite entries. `Candidates.slots` are row positions.

        >>> feats = CandidateFeatures(n_candidates=2, exclude_seen=False)
        >>> blend = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
        >>> c = feats.build_rows(np.full((1, 2), -1), np.zeros((1, 2)), np.zeros(1),
        ...                      np.array([[7, 8, 9, 10]]), blend, {"pop": blend})
        >>> c.items.tolist(), c.slots.tolist(), c.n_valid.tolist()
        ([[8, 10]], [[1, 3]], [2])
        """
        names = self._source_names(sources)
        finite = _finite(blend)
        n, m = finite.shape
        c = min(self.n_candidates, m)
        if m > c:
            top = np.argpartition(-finite, c - 1, axis=1)[:, :c]
        else:
            top = np.broadcast_to(np.arange(m), (n, m)).copy()
        key = np.take_along_axis(finite, top, 1)
        order = np.argsort(-key, axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)
        top_blend = np.take_along_axis(key, order, 1)
        valid = np.isfinite(top_blend)
        cand = np.where(valid, np.take_along_axis(np.asarray(cand_items, np.int64), top, 1), -1)
        inside = np.isfinite(finite)
        raw = []
        for name in names:
            row = np.where(inside, np.asarray(sources[name], np.float32), 0.0)
            row[~np.isfinite(row)] = 0.0
            mass = (np.maximum(row, 0.0).sum(1, keepdims=True) if masses is None
                    else np.asarray(masses[name], np.float32).reshape(n, 1))
            raw.append((np.take_along_axis(row, top, 1), mass))
        return self._describe(cand, top, top_blend, valid, raw, np.asarray(recent, np.int64), recent_ts, ts)

    def _source_names(self, sources: Mapping[str, np.ndarray]) -> tuple[str, ...]:
        """The sources' names, sorted; the first call fixes them (the feature layout depends on them)."""
        names = tuple(sorted(sources))
        if self.source_names is None:
            self.source_names = names
        elif names != self.source_names:
            raise ValueError(f"sources changed from {self.source_names} to {names}")
        return names

    def _describe(
        self,
        cand: np.ndarray,
        slots: np.ndarray,
        top_blend: np.ndarray,
        valid: np.ndarray,
        raw: list[tuple[np.ndarray, np.ndarray]],
        recent: np.ndarray,
        recent_ts: np.ndarray,
        ts: np.ndarray,
    ) -> Candidates:
        """Features of the chosen candidates `cand` [n, c'] (item columns, best first, -1 where not
        `valid`), from their blend scores and each source's (raw scores, row's positive mass)."""
        n, width = cand.shape
        c = self.n_candidates
        n_valid = valid.sum(1)
        f = np.zeros((self.n_features, n, width), dtype=np.float32)  # feature-major: contiguous writes
        f[0] = _row_z(top_blend, valid)
        f[1] = np.log1p(np.arange(width, dtype=np.float32))
        safe = np.where(valid, cand, 0)
        self._grow(int(max(safe.max(initial=0), recent.max(initial=0))) + 1)
        f[2] = np.log1p(self._count[safe])
        f[3] = np.log1p(self._recent[safe] * 2.0 ** ((self._ref - self.events) / self.recent_half_life))
        last, first = self._last[safe], self._first[safe]
        seen = last >= 0
        f[4] = np.log1p(np.where(seen, self.events - last, self.events + 1.0))
        f[5] = np.where(seen, np.log1p(np.maximum(self.events - first, 0.0)), 0.0)
        has_prev = recent[:, 0] >= 0 if recent.shape[1] else np.zeros(n, dtype=bool)
        if has_prev.any():
            gap = np.maximum(np.asarray(ts, dtype=np.float64) - np.asarray(recent_ts)[:, 0], 0.0)
            f[6] = np.where(has_prev, np.log1p(gap), 0.0)[:, None]
            last_count = self._count[np.maximum(recent[:, 0], 0)]
            f[7] = np.where(has_prev, np.log1p(last_count), 0.0)[:, None]
        f[8] = np.log1p((recent >= 0).sum(1, keepdims=True))
        base = len(OWN_FEATURES)
        for s, (values, mass) in enumerate(raw):
            j = base + len(PER_SOURCE) * s
            f[j] = _row_z(values, valid)
            f[j + 1] = np.sign(values) * np.log1p(np.abs(values))
            f[j + 2] = np.where(mass > 0, values / np.where(mass > 0, mass, 1.0), 0.0)
        if not valid.all():
            f[:, ~valid] = 0.0
        feats = np.zeros((n, c, self.n_features), dtype=np.float32)
        _to_rows(f, feats[:, :width])
        items = np.full((n, c), -1, dtype=np.int64)
        items[:, :width] = cand
        positions = np.full((n, c), -1, dtype=np.int64)
        positions[:, :width] = np.where(valid, slots, -1)
        return Candidates(items=items, features=feats, n_valid=n_valid.astype(np.int64), history=recent,
                          slots=positions)

    def _generate(
        self, finite: np.ndarray, sources: Mapping[str, np.ndarray], names: tuple[str, ...], c: int
    ) -> np.ndarray:
        """Candidate score columns [n, c]: the blend's best, plus each source's own `per_source` best
        (items a single source is sure of but the blend under-weights)."""
        k = self.per_source if self.per_source * len(names) < c else 0
        parts = [top_columns(finite, c - k * len(names))]
        if k:
            blocked = ~np.isfinite(finite)  # unknown or the user's own items
            for name in names:
                row = np.where(blocked, -np.inf, np.nan_to_num(np.asarray(sources[name], dtype=np.float32),
                                                               nan=-np.inf))
                parts.append(top_columns(row, k))
        return np.concatenate(parts, axis=1)

    def _mask_seen(
        self, scores: np.ndarray, users: np.ndarray, recent: np.ndarray, item_cols: np.ndarray
    ) -> None:
        """Set -inf where the column's item is one of the event's user's items: the bitmap of their
        learned events plus their recent items (which include the batch's earlier events)."""
        n, m = scores.shape
        known = (users >= 0) & (users < len(self._seen))
        width = self._seen.shape[1] * 8
        if known.any() and (item_cols < width).any():
            identity = m <= width and np.array_equal(item_cols, np.arange(m))
            if identity:  # the common layout (score column j is item column j): no column gather
                bits = np.unpackbits(self._seen[users[known]], axis=1, count=m).view(bool)
            else:
                inside = item_cols < width
                bits = np.zeros((int(known.sum()), m), dtype=bool)
                unpacked = np.unpackbits(self._seen[users[known]], axis=1).view(bool)
                bits[:, inside] = unpacked[:, item_cols[inside]]
            if known.all():
                np.copyto(scores, np.float32(-np.inf), where=bits)
            else:
                block = scores[known]
                np.copyto(block, np.float32(-np.inf), where=bits)
                scores[known] = block
        if recent.size:
            lookup = np.full(int(max(item_cols.max(initial=0), recent.max(initial=0))) + 1, -1, np.int64)
            lookup[item_cols] = np.arange(m)
            cols = np.where(recent >= 0, lookup[np.maximum(recent, 0)], -1)
            rows, which = np.nonzero(cols >= 0)
            scores[rows, cols[rows, which]] = -np.inf

    # ----------------------------------------------------------------------------- learning
    def learn(self, users: np.ndarray, item_cols: np.ndarray) -> None:
        """Update the statistics with a learned batch (user and item columns; events in order)."""
        n = len(users)
        if n == 0:
            return
        users = np.asarray(users, dtype=np.int64)
        item_cols = np.asarray(item_cols, dtype=np.int64)
        self._grow(int(item_cols.max()) + 1)
        clock = self.events + np.arange(n, dtype=np.float64)
        if (clock[-1] - self._ref) / self.recent_half_life > 200.0:
            self._recent *= 2.0 ** ((self._ref - clock[-1]) / self.recent_half_life)
            self._ref = clock[-1]
        np.add.at(self._count, item_cols, 1.0)
        np.add.at(self._recent, item_cols, 2.0 ** ((clock - self._ref) / self.recent_half_life))
        self._last[item_cols] = clock  # later events of the same item win (fancy assignment order)
        new = self._first[item_cols] < 0
        # each new item's first event in the batch (clocks grow: np.unique's first index is the earliest);
        # touches the batch's items only, never every item
        cols, first = np.unique(item_cols[new], return_index=True)
        self._first[cols] = clock[new][first]
        if self.exclude_seen:
            width = max(self._seen.shape[1], (int(item_cols.max()) + 8) // 8)
            if width > self._seen.shape[1]:
                grown = np.zeros((len(self._seen), max(width, 2 * self._seen.shape[1])), dtype=np.uint8)
                grown[:, : self._seen.shape[1]] = self._seen
                self._seen = grown
            self._seen = grow_rows(self._seen, int(users.max()) + 1)
            np.bitwise_or.at(self._seen, (users, item_cols >> 3), (128 >> (item_cols & 7)).astype(np.uint8))
        self.events += n

    def reset_items(self, item_cols: np.ndarray) -> None:
        """Forget the statistics of recycled item columns (their ids were evicted)."""
        cols = np.asarray(item_cols, dtype=np.int64)
        cols = cols[cols < len(self._count)]
        self._count[cols] = 0.0
        self._recent[cols] = 0.0
        self._last[cols] = -1.0
        self._first[cols] = -1.0
        inside = cols[cols < self._seen.shape[1] * 8]
        keep = np.full(self._seen.shape[1], 255, dtype=np.uint8)
        np.bitwise_and.at(keep, inside >> 3, ~(128 >> (inside & 7)).astype(np.uint8))
        self._seen &= keep

    def reset_users(self, user_cols: np.ndarray) -> None:
        """Forget the items of recycled user columns."""
        cols = np.asarray(user_cols, dtype=np.int64)
        self._seen[cols[cols < len(self._seen)]] = 0

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The per-item statistics (by item column) and the clock: what `load_state_arrays` restores."""
        return {"count": self._count.copy(), "recent": self._recent.copy(), "last": self._last.copy(),
                "first": self._first.copy(), "clock": np.array([self._ref, self.events], np.float64)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore `state_arrays` (item columns keep their positions); the users x items bitmap, when
        kept, refills from the stream."""
        self._count = np.array(arrays["count"], np.float64)
        self._recent = np.array(arrays["recent"], np.float64)
        self._last = np.array(arrays["last"], np.float64)
        self._first = np.array(arrays["first"], np.float64)
        self._ref, events = (float(x) for x in arrays["clock"])
        self.events = int(events)

    def _grow(self, n_cols: int) -> None:
        self._count = grow_rows(self._count, n_cols)
        self._recent = grow_rows(self._recent, n_cols)
        self._last = grow_rows(self._last, n_cols, fill=-1.0)
        self._first = grow_rows(self._first, n_cols, fill=-1.0)


def _finite(blend: np.ndarray) -> np.ndarray:
    """A float32 copy of the scores with nan and +inf as -inf (no candidate)."""
    finite = np.array(blend, dtype=np.float32)
    if finite.size and not finite.max() < np.inf:  # one reduction spots nan (it propagates) and +inf
        finite[np.isnan(finite) | (finite == np.inf)] = -np.inf
    return finite


def _duplicates(cols: np.ndarray) -> np.ndarray:
    """Mask of entries repeating an earlier entry of the same row."""
    order = np.argsort(cols, axis=1, kind="stable")
    ordered = np.take_along_axis(cols, order, 1)
    repeat = np.zeros_like(cols, dtype=bool)
    dup_sorted = np.zeros_like(cols, dtype=bool)
    dup_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(repeat, order, dup_sorted, 1)
    return repeat


def _row_z(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standardize each row over its valid entries (the invalid ones' outputs mean nothing)."""
    count = np.maximum(valid.sum(1, keepdims=True), 1)
    v = np.where(valid, values, 0.0)
    mean = v.sum(1, keepdims=True) / count
    d = v - mean  # = values - mean where valid
    var = np.where(valid, d * d, 0.0).sum(1, keepdims=True) / count
    return (d / np.sqrt(var + 1e-12)).astype(np.float32)


def _to_rows(feature_major: np.ndarray, out: np.ndarray) -> None:
    """out[e, m, k] = feature_major[k, e, m]: numba's blocked copy where numba is installed (numpy's
    strided transpose took a third of the features' time), else numpy's."""
    try:
        from learners.kernels import feature_rows
    except ImportError:  # e.g. a GPU box with torch and numpy only
        out[...] = feature_major.transpose(1, 2, 0)
        return
    feature_rows(feature_major, out)


def _at_columns(source: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A source's scores at cols [n, c] (non-finite as 0) and each row's positive mass [n, 1]: the
    only reads of the (n, m) matrix, one pass for the mass."""
    source = np.asarray(source)
    if source.ndim == 1:
        raw = source[cols].astype(np.float32)
        row = np.where(np.isfinite(source), source, 0.0).astype(np.float32)
        mass = np.full((len(cols), 1), np.maximum(row, 0.0).sum(), dtype=np.float32)
    else:
        raw = np.take_along_axis(source, cols, 1).astype(np.float32)
        # most sources are non-negative (counts, similarities): then the mass is a plain sum
        mass = (source.sum(1, keepdims=True, dtype=np.float32) if source.size and source.min() >= 0
                else np.maximum(source, 0.0).sum(1, keepdims=True, dtype=np.float32))
        bad = ~np.isfinite(mass[:, 0])
        if bad.any():  # nan/inf entries count as 0, as in the gathered scores
            rows = source[bad]
            mass[bad, 0] = np.maximum(np.where(np.isfinite(rows), rows, 0.0), 0.0).sum(1)
    raw[~np.isfinite(raw)] = 0.0
    return raw, mass
