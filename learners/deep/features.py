"""Candidates and their features for the deep re-ranker (the first stage of the two-stage pattern).

Given the online sources' score rows for a micro-batch (one row per event, one column per known item),
`CandidateFeatures.build` keeps each event's top-C items of the blend that the user has not interacted
with yet (the evaluation protocol's candidates) and describes every candidate:

- per source: its score standardized over the row's candidates, and a signed log of the raw score;
- the blend's standardized score and the candidate's rank in the first stage;
- the item's all-time and recent (decayed) interaction counts, events since it was last seen and
  since it first appeared (its age);
- the user's own history with it (how recently, how often it is among their last `history` items,
  with the batch's earlier events as context) and the length of the user's history.

Everything is computed from state learned before the batch, vectorized over (event, candidate).

>>> import numpy as np
>>> feats = CandidateFeatures(n_candidates=2, history=3)
>>> blend = np.array([[0.1, 0.9, 0.5]], dtype=np.float32)
>>> c = feats.build(np.array(["u"], dtype=object), np.array([7]), blend, {"pop": blend}, np.array([7, 8, 9]))
>>> c.items.tolist(), c.features.shape, c.n_valid.tolist()
([[8, 9]], (1, 2, 11), [2])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from learners.ids import IdIndex, grow_rows

OWN_FEATURES: tuple[str, ...] = (
    "blend_z", "blend_rank", "count_log", "recent_log", "since_seen_log", "age_log",
    "user_seen_recency", "user_seen_count", "user_history_log",
)


@dataclass(frozen=True)
class Candidates:
    """The candidates of a batch: model item columns [n, C] (-1 padding), features [n, C, F] float32,
    n_valid [n] and each event's user history [n, L] of item columns (-1 padding)."""

    items: np.ndarray
    features: np.ndarray
    n_valid: np.ndarray
    history: np.ndarray

    def label(self, item_cols: np.ndarray) -> np.ndarray:
        """Position of each event's taken item among its candidates, -1 when it is not one."""
        hit = self.items == np.asarray(item_cols)[:, None]
        return np.where(hit.any(1), hit.argmax(1), -1)


class CandidateFeatures:
    """Per-item and per-user statistics for candidate features, updated with `learn`.

    Parameters
    ----------
    n_candidates
        Candidates kept per event (top of the blend).
    history
        Recent items remembered per user.
    exclude_seen
        Never make an item the user already interacted with a candidate (bitmap of users x items).
    recent_half_life
        Half-life, in events, of the "recent" item counts.
    max_users
        Capacity of the user index (least recently seen users are forgotten beyond it).
    """

    def __init__(
        self,
        n_candidates: int = 50,
        history: int = 20,
        exclude_seen: bool = True,
        recent_half_life: float = 2000.0,
        max_users: int | None = None,
    ) -> None:
        if n_candidates < 1 or history < 1:
            raise ValueError("n_candidates and history must be positive")
        self.n_candidates = n_candidates
        self.history = history
        self.exclude_seen = exclude_seen
        self.recent_half_life = recent_half_life
        self.max_users = max_users
        self.source_names: tuple[str, ...] | None = None
        self._users = IdIndex(capacity=max_users)
        self._hist = np.full((16, history), -1, dtype=np.int64)
        self._user_n = np.zeros(16, dtype=np.int64)
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
        return len(OWN_FEATURES) + 2 * len(self.source_names)

    # ----------------------------------------------------------------------------- features
    def build(
        self,
        users: np.ndarray,
        batch_items: np.ndarray,
        blend: np.ndarray,
        sources: Mapping[str, np.ndarray],
        item_cols: np.ndarray,
    ) -> Candidates:
        """Candidates of each event (top-C of `blend`, whose columns are the model columns `item_cols`)
        and their features; `batch_items` (the events' own item columns, -1 unknown) serve only as the
        context of the same user's later events in the batch."""
        n, m = blend.shape
        names = tuple(sorted(sources))
        if self.source_names is None:
            self.source_names = names
        elif names != self.source_names:
            raise ValueError(f"sources changed from {self.source_names} to {names}")
        c = self.n_candidates
        item_cols = np.asarray(item_cols, dtype=np.int64)
        hist = self._event_history(users, batch_items)
        finite = np.where(np.isfinite(blend), blend, -np.inf)
        if self.exclude_seen:  # the user's own items are no recommendation (nor evaluated as one)
            finite[self._seen_mask(users, batch_items, item_cols)] = -np.inf
        if m > c:
            top = np.argpartition(-finite, c - 1, axis=1)[:, :c]
        else:
            top = np.broadcast_to(np.arange(m), (n, m)).copy()
        order = np.argsort(-np.take_along_axis(finite, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)  # [n, c'] columns of the score matrix, best first
        top_blend = np.take_along_axis(finite, top, 1)
        valid = np.isfinite(top_blend)
        n_valid = valid.sum(1)
        cand = np.where(valid, item_cols[top], -1)
        width = top.shape[1]

        feats = np.zeros((n, c, self.n_features), dtype=np.float32)
        f = feats[:, :width]
        f[..., 0] = _row_z(top_blend, valid)
        f[..., 1] = np.log1p(np.arange(width, dtype=np.float32))
        safe = np.where(valid, cand, 0)
        self._grow(int(safe.max(initial=0)) + 1)
        f[..., 2] = np.log1p(self._count[safe])
        f[..., 3] = np.log1p(self._recent[safe] * 2.0 ** ((self._ref - self.events) / self.recent_half_life))
        seen = self._last[safe] >= 0
        f[..., 4] = np.where(seen, np.log1p(self.events - self._last[safe]), np.log1p(self.events + 1.0))
        f[..., 5] = np.where(seen, np.log1p(self.events - self._first[safe]), 0.0)
        same = (cand[:, :, None] == hist[:, None, :]) & (cand[:, :, None] >= 0)
        steps = np.arange(1, self.history + 1, dtype=np.float32) / self.history
        f[..., 6] = (same * steps).max(-1)
        f[..., 7] = same.sum(-1)
        f[..., 8] = np.log1p((hist >= 0).sum(1, keepdims=True))
        base = len(OWN_FEATURES)
        for s, name in enumerate(names):
            raw = np.take_along_axis(np.asarray(sources[name], dtype=np.float32), top, 1)
            raw = np.where(np.isfinite(raw), raw, 0.0)
            f[..., base + 2 * s] = _row_z(raw, valid)
            f[..., base + 2 * s + 1] = np.sign(raw) * np.log1p(np.abs(raw))
        f[~valid] = 0.0
        items = np.full((n, c), -1, dtype=np.int64)
        items[:, :width] = cand
        return Candidates(items=items, features=feats, n_valid=n_valid.astype(np.int64), history=hist)

    def _seen_mask(self, users: np.ndarray, batch_items: np.ndarray, item_cols: np.ndarray) -> np.ndarray:
        """[n, m]: score column j's item is among the event's user's items (earlier batch events too)."""
        n, m = len(users), len(item_cols)
        ucols = self._users.cols(users, add=False)
        known = ucols >= 0
        mask = np.zeros((n, m), dtype=bool)
        width = self._seen.shape[1] * 8
        inside = item_cols < width
        if known.any() and inside.any():
            bits = np.unpackbits(self._seen[ucols[known]], axis=1)
            mask[np.ix_(known, inside)] = bits[:, item_cols[inside]].astype(bool)
        batch_items = np.asarray(batch_items, dtype=np.int64)
        if n > 1:
            lookup = np.full(int(max(item_cols.max(initial=0), batch_items.max(initial=0))) + 1, -1, np.int64)
            lookup[item_cols] = np.arange(m)
            order, rank = _group_ranks(users)
            sorted_cols = np.where(batch_items >= 0, lookup[np.maximum(batch_items, 0)], -1)[order]
            rows = np.arange(n)
            for j in range(1, int(rank.max(initial=0)) + 1):  # the j-th earlier event of the same user
                take = (rank >= j) & (sorted_cols[np.maximum(rows - j, 0)] >= 0)
                mask[order[take], sorted_cols[rows[take] - j]] = True
        return mask

    def _event_history(self, users: np.ndarray, batch_items: np.ndarray | None) -> np.ndarray:
        """Each event's user's last `history` items before it: the stored history, then the batch's
        earlier events of the same user (`batch_items`, item columns, -1 unknown) when given."""
        n, length = len(users), self.history
        ucols = self._users.cols(users, add=False)
        stored = np.where((ucols >= 0)[:, None], self._hist[np.maximum(ucols, 0)], -1)
        if batch_items is None or n == 0:
            return stored
        order, rank = _group_ranks(users)
        sorted_items = np.asarray(batch_items, dtype=np.int64)[order]
        sorted_stored = stored[order]
        rows = np.arange(n)
        out = np.empty((n, length), dtype=np.int64)
        for j in range(1, length + 1):  # the j-th most recent item before each event
            in_batch = sorted_items[np.maximum(rows - j, 0)]
            in_store = sorted_stored[rows, np.clip(length - (j - rank), 0, length - 1)]
            out[:, length - j] = np.where(rank >= j, in_batch, in_store)
        result = np.empty_like(out)
        result[order] = out
        return result

    # ----------------------------------------------------------------------------- learning
    def learn(self, users: np.ndarray, item_cols: np.ndarray) -> None:
        """Update the statistics with a learned batch (item columns of the same index as `build`)."""
        n = len(users)
        if n == 0:
            return
        item_cols = np.asarray(item_cols, dtype=np.int64)
        hist = self._event_history(users, item_cols)
        ucols = self._users.cols(users)
        freed = self._users.pop_freed()  # rows of forgotten users, some reused right now
        self._hist = grow_rows(self._hist, self._users.n_cols, fill=-1)
        self._user_n = grow_rows(self._user_n, self._users.n_cols)
        self._seen = grow_rows(self._seen, self._users.n_cols)
        self._hist[freed] = -1
        self._user_n[freed] = 0
        self._seen[freed] = 0
        # the last event of each user in the batch carries that user's final history
        last = np.unique(ucols[::-1], return_index=True)[1]
        last = n - 1 - last
        self._hist[ucols[last]] = np.concatenate([hist[last, 1:], item_cols[last, None]], axis=1)
        np.add.at(self._user_n, ucols, 1)
        if self.exclude_seen:
            width = max(self._seen.shape[1], (int(item_cols.max()) + 8) // 8)
            if width > self._seen.shape[1]:
                grown = np.zeros((len(self._seen), max(width, 2 * self._seen.shape[1])), dtype=np.uint8)
                grown[:, : self._seen.shape[1]] = self._seen
                self._seen = grown
            np.bitwise_or.at(self._seen, (ucols, item_cols >> 3), (128 >> (item_cols & 7)).astype(np.uint8))

        self._grow(int(item_cols.max()) + 1)
        clock = self.events + np.arange(n, dtype=np.float64)
        if (clock[-1] - self._ref) / self.recent_half_life > 200.0:
            self._recent *= 2.0 ** ((self._ref - clock[-1]) / self.recent_half_life)
            self._ref = clock[-1]
        np.add.at(self._count, item_cols, 1.0)
        np.add.at(self._recent, item_cols, 2.0 ** ((clock - self._ref) / self.recent_half_life))
        self._last[item_cols] = clock  # later events of the same item win (fancy assignment order)
        new = self._first[item_cols] < 0
        first = np.full(len(self._first), np.inf)
        np.minimum.at(first, item_cols[new], clock[new])
        self._first = np.where(np.isfinite(first), first, self._first)
        self.events += n

    def reset_items(self, item_cols: np.ndarray) -> None:
        """Forget the statistics of freed item columns (their ids were evicted)."""
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

    def _grow(self, n_cols: int) -> None:
        self._count = grow_rows(self._count, n_cols)
        self._recent = grow_rows(self._recent, n_cols)
        self._last = grow_rows(self._last, n_cols, fill=-1.0)
        self._first = grow_rows(self._first, n_cols, fill=-1.0)


def _group_ranks(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stable order grouping the events by user, and each event's number of earlier events of the
    same user in the batch (in that order)."""
    keys = np.asarray(users).astype(str)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    n = len(keys)
    start = np.r_[0, np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1] if n else np.zeros(0, int)
    rank = np.arange(n) - np.repeat(start, np.diff(np.r_[start, n]))
    return order, rank


def _row_z(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Standardize each row over its valid entries."""
    count = np.maximum(valid.sum(1, keepdims=True), 1)
    v = np.where(valid, values, 0.0)
    mean = v.sum(1, keepdims=True) / count
    var = (np.where(valid, (values - mean) ** 2, 0.0)).sum(1, keepdims=True) / count
    return ((v - mean) / np.sqrt(var + 1e-12)).astype(np.float32)
