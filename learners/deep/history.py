"""Each user's recent items and their times, as the context of the events of a micro-batch.

`RecentItems.context` gives, for every event of a batch, the user's previous items (most recent
first, -1 padding) and their times: those learned before the batch, then the user's earlier events
in the same batch, never the event itself or later ones. Users are external ids mapped to dense
columns (`learners.ids.IdIndex`, bounded by `max_users`).

>>> import numpy as np
>>> recent = RecentItems(length=2)
>>> users = np.array(["a", "b", "a"], dtype=object)
>>> cols, items, _ = recent.context(users, np.array([7, 8, 9]), np.array([0.0, 1.0, 2.0]))
>>> items.tolist()  # a's second event sees its first
[[-1, -1], [-1, -1], [7, -1]]
>>> _ = recent.learn(users, np.array([7, 8, 9]), np.array([0.0, 1.0, 2.0]))
>>> recent.context(np.array(["a"], dtype=object), np.array([1]), np.array([3.0]))[1].tolist()
[[9, 7]]
"""

from __future__ import annotations

import numpy as np

from learners.cooccurrence import group_layout
from learners.ids import IdIndex, grow_rows


class RecentItems:
    """The last `length` items (and times) of every user, with in-batch context."""

    def __init__(self, length: int = 10, max_users: int | None = None) -> None:
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.length = length
        self.max_users = max_users
        self._users = IdIndex(capacity=max_users)
        self._items = np.full((16, length), -1, dtype=np.int64)
        self._ts = np.zeros((16, length))
        self._looked_up: tuple[np.ndarray, np.ndarray] | None = None

    def context(
        self, users: np.ndarray, items: np.ndarray, ts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user columns with -1 for unknown users, recent items [n, L], their times [n, L])."""
        users = np.asarray(users, dtype=object)
        cols = self._users.cols(users, add=False)
        self._looked_up = (users, cols)  # `learn` of the same batch reuses the lookup
        codes = cols.copy()
        unknown = codes < 0
        if unknown.any():  # unknown users told apart by id: codes past the known columns
            _, inverse = np.unique(users[unknown].astype(str), return_inverse=True)
            codes[unknown] = self._users.n_cols + inverse
        recent, recent_ts, _ = self._with_batch(codes, cols, np.asarray(items, np.int64), np.asarray(ts))
        return cols, recent, recent_ts

    def learn(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Remember a learned batch; returns (user columns, user columns freed for reuse)."""
        users = np.asarray(users, dtype=object)
        items = np.asarray(items, np.int64)
        ts = np.asarray(ts, np.float64)
        looked_up, self._looked_up = self._looked_up, None
        if looked_up is not None and looked_up[0] is users:
            before = looked_up[1]
        else:
            before = self._users.cols(users, add=False)
        cols = self._users.cols(users)
        freed = self._users.pop_freed()
        self._items = grow_rows(self._items, self._users.n_cols, fill=-1)
        self._ts = grow_rows(self._ts, self._users.n_cols)
        self._items[freed] = -1
        self._ts[freed] = 0.0
        if len(freed):
            before = np.where(np.isin(cols, freed), -1, before)
        before = np.where(before >= 0, cols, -1)
        recent, recent_ts, last = self._with_batch(cols, before, items, ts)
        # a user's state after the batch: their last event's context with that event in front
        self._items[cols[last]] = np.concatenate([items[last, None], recent[last, :-1]], axis=1)
        self._ts[cols[last]] = np.concatenate([ts[last, None], recent_ts[last, :-1]], axis=1)
        return cols, freed

    def _with_batch(self, codes: np.ndarray, cols: np.ndarray, items: np.ndarray, ts: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each event's recent items and times given its user's `codes` (one int per user) and stored
        columns `cols` (-1: nothing stored); and the position of each user's last event."""
        n, length = len(codes), self.length
        known = cols >= 0
        stored = np.full((n, length), -1, dtype=np.int64)
        stored_ts = np.zeros((n, length))
        stored[known] = self._items[cols[known]]
        stored_ts[known] = self._ts[cols[known]]
        order, starts, position = group_layout(codes)  # each user's events together, in stream order
        ends = np.r_[starts[1:], n] - 1  # sorted position of each user's last event
        # [n, L] at once: the lag-th previous item is the batch's (sorted) event lag back when the user
        # has that many earlier events in the batch, else slot lag - 1 - position of the stored list
        lag = np.arange(1, length + 1)
        from_batch = position[:, None] >= lag
        back = np.maximum(np.arange(n)[:, None] - lag, 0)
        slot = np.clip(lag - 1 - position[:, None], 0, length - 1)
        s_stored, s_stored_ts = stored[order], stored_ts[order]
        rows = np.arange(n)[:, None]
        recent = np.empty((n, length), dtype=np.int64)
        recent_ts = np.empty((n, length))
        recent[order] = np.where(from_batch, items[order][back], s_stored[rows, slot])
        recent_ts[order] = np.where(from_batch, ts[order][back], s_stored_ts[rows, slot])
        return recent, recent_ts, order[ends]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The users (ids, "" for free columns) with their recent items and times, by column."""
        ids, last_seen = self._users.state_arrays()
        n = len(ids)
        return {"user_id": ids, "last_seen": last_seen, "items": self._items[:n].copy(),
                "ts": self._ts[:n].copy()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore `state_arrays` (columns keep their positions)."""
        items = np.asarray(arrays["items"], np.int64)
        if items.ndim != 2 or items.shape[1] != self.length:
            raise ValueError(f"recent items saved {items.shape[1:]} wide; this context keeps {self.length}")
        self._users.load_arrays(arrays["user_id"], arrays["last_seen"])
        n = len(items)
        self._items = np.full((max(n, 16), self.length), -1, dtype=np.int64)
        self._ts = np.zeros((max(n, 16), self.length))
        self._items[:n] = items
        self._ts[:n] = arrays["ts"]
        self._looked_up = None

