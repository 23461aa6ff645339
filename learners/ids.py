"""Dynamic map between external string ids and dense array columns.

New ids get a column the first time they are seen, at any time, with no restart. Memory stays
bounded: with `capacity` the least recently seen ids are evicted when the index is full, and with
`max_idle` ids unseen for that long (in events, or in seconds of event time with `clock="time"`) are
expired. Freed columns are reused; every eviction bumps `generation` and queues the freed columns so
the owners of per-column arrays can reset those rows (`pop_freed`).

>>> import numpy as np
>>> index = IdIndex(capacity=2)
>>> index.cols(np.array(["a", "b", "a"], dtype=object)).tolist()
[0, 1, 0]
>>> index.cols(np.array(["c"], dtype=object)).tolist()  # full: "b" was seen least recently
[1]
>>> index.ids(np.array([0, 1])).tolist(), index.generation, index.pop_freed().tolist()
(['a', 'c'], 1, [1])
>>> index.cols(np.array(["b", "zz"], dtype=object), add=False).tolist()
[-1, -1]
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat
from typing import Any, Literal

import numpy as np

_NO_ID = ""


def grow_rows(array: np.ndarray, n_rows: int, fill: Any = 0, minimum: int = 16) -> np.ndarray:
    """`array` with at least `n_rows` rows, doubling its length (to at least `minimum`) when it must
    grow."""
    if len(array) >= n_rows:
        return array
    new_len = max(n_rows, 2 * len(array), minimum)
    grown = np.full((new_len, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def first_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Of `rows` (ascending), the first to hold each distinct value of `values`, in row order (ids as
    object arrays are compared as str).

    >>> first_rows(np.array(["b", "a", "b", "c", "a"], dtype=object), np.array([0, 1, 2, 3, 4])).tolist()
    [0, 1, 3]
    """
    if not len(rows):
        return rows
    picked = values[rows]
    if picked.dtype == object:
        picked = picked.astype(str)
    return rows[np.sort(np.unique(picked, return_index=True)[1])]


class IdIndex:
    """External str id <-> dense column, with capacity, idle expiry and column reuse.

    Parameters
    ----------
    capacity
        Most live ids; adding beyond it evicts the least recently seen ids (not those of the call).
    max_idle
        Ids unseen for longer than this are dropped by `expire` (called by `cols` every
        `expire_every` calls). In events for `clock="events"`, in seconds for `clock="time"`.
    clock
        "events": the clock is the number of ids looked up so far; "time": callers pass `now`.
    """

    def __init__(
        self,
        capacity: int | None = None,
        max_idle: float | None = None,
        clock: Literal["events", "time"] = "events",
        expire_every: int = 64,
    ) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        if clock not in ("events", "time"):
            raise ValueError(f"clock must be 'events' or 'time', got {clock!r}")
        self.capacity = capacity
        self.max_idle = max_idle
        self.clock = clock
        self.expire_every = expire_every
        self._col: dict[str, int] = {}
        self._ids = np.full(16, _NO_ID, dtype=object)
        self._last_seen = np.full(16, -np.inf)
        self._live = np.zeros(16, bool)  # kept with _ids: comparing a million object ids costs ~10 ms
        self._free: list[int] = []
        self._freed: list[int] = []
        self._n_cols = 0  # high-water mark of columns handed out
        self._events = 0.0
        self._calls = 0
        self.generation = 0

    # ----------------------------------------------------------------------------- lookups
    def __len__(self) -> int:
        return len(self._col)

    def __contains__(self, external_id: object) -> bool:
        return external_id in self._col

    @property
    def n_cols(self) -> int:
        """Columns handed out so far (live or free): per-column arrays need this many rows."""
        return self._n_cols

    @property
    def now(self) -> float:
        """The index clock: events looked up so far, or the latest time passed in."""
        return self._events

    def cols(
        self, ids: Iterable[str] | np.ndarray, add: bool = True, now: float | np.ndarray | None = None
    ) -> np.ndarray:
        """Columns of `ids` (int64); unknown ids are added, or given -1 with `add=False`.

        With `add=True` the ids count as seen at `now` (event clock: the running event count)."""
        ids = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids), dtype=object)
        cols = self.lookup(ids)
        if not add:
            return cols
        return self.add(ids, cols, now)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Columns of `ids` (an object array), -1 where unknown; nothing is added or stamped."""
        # map over a list: ~5x faster than a generator over the object array (a replay's hottest loop)
        return np.fromiter(map(self._col.get, ids.tolist(), repeat(-1)), dtype=np.int64, count=len(ids))

    def add(self, ids: np.ndarray, cols: np.ndarray, now: float | np.ndarray | None = None) -> np.ndarray:
        """`cols(ids)` when `cols = lookup(ids)` is already known: add the unknown ids (cols < 0), stamp
        all as seen; `cols` is filled in place and returned."""
        if self.clock == "time":
            if now is None:
                raise ValueError("IdIndex(clock='time') needs `now` (event time) when adding ids")
            stamps = np.broadcast_to(np.asarray(now, dtype=np.float64), cols.shape)
        else:
            stamps = self._events + 1.0 + np.arange(len(ids), dtype=np.float64)
        if len(stamps):
            self._events = max(self._events, float(stamps.max()))
        missing = np.flatnonzero(cols < 0)
        if len(missing):
            new_ids = list(dict.fromkeys(str(x) for x in ids[missing]))
            self._make_room(len(new_ids), keep=cols[cols >= 0])
            new_cols = [self._allocate(x) for x in new_ids]
            lookup = dict(zip(new_ids, new_cols, strict=True))
            cols[missing] = [lookup[str(x)] for x in ids[missing]]
        self._last_seen[cols] = stamps  # repeated ids: the last (latest) stamp wins
        self._calls += 1
        if self.max_idle is not None and self._calls % self.expire_every == 0:
            self.expire()
        return cols

    def ids(self, cols: np.ndarray) -> np.ndarray:
        """External ids of columns (object array; "" for free columns)."""
        cols = np.asarray(cols, dtype=np.int64)
        if len(cols) and (cols.min() < 0 or cols.max() >= self._n_cols):
            raise IndexError(f"column out of range [0, {self._n_cols})")
        return self._ids[cols]

    def live_cols(self) -> np.ndarray:
        """Columns currently holding an id, ascending."""
        return np.flatnonzero(self._live[: self._n_cols])

    def live_mask(self) -> np.ndarray:
        """Boolean mask over `n_cols` of the columns holding an id (a read-only view)."""
        mask = self._live[: self._n_cols]
        mask.flags.writeable = False
        return mask

    def last_seen(self, cols: np.ndarray) -> np.ndarray:
        return self._last_seen[np.asarray(cols, dtype=np.int64)]

    # ----------------------------------------------------------------------------- eviction
    def expire(self, now: float | None = None) -> np.ndarray:
        """Drop ids unseen for more than `max_idle`; returns the freed columns."""
        if self.max_idle is None:
            return np.empty(0, dtype=np.int64)
        now = self._events if now is None else now
        live = self.live_mask()
        stale = np.flatnonzero(live & (self._last_seen[: self._n_cols] < now - self.max_idle))
        self._release(stale)
        return stale

    def remove(self, ids: Iterable[str]) -> np.ndarray:
        """Forget ids explicitly (e.g. deleted from the catalog); returns their freed columns."""
        cols = self.cols(list(ids), add=False)
        cols = cols[cols >= 0]
        self._release(cols)
        return cols

    def pop_freed(self) -> np.ndarray:
        """Columns freed since the last call: their owners should reset those rows."""
        freed = np.asarray(self._freed, dtype=np.int64)
        self._freed = []
        return freed

    def _make_room(self, n_new: int, keep: np.ndarray) -> None:
        if self.capacity is None:
            return
        if n_new > self.capacity:
            raise ValueError(f"{n_new} new ids in one call exceed the capacity {self.capacity}")
        excess = len(self._col) + n_new - self.capacity
        if excess <= 0:
            return
        age = self._last_seen[: self._n_cols].copy()
        age[~self.live_mask()] = np.inf
        age[keep] = np.inf  # never evict an id of the current call
        oldest = np.argpartition(age, excess - 1)[:excess] if excess < len(age) else np.arange(len(age))
        self._release(oldest[np.isfinite(age[oldest])])

    def _release(self, cols: np.ndarray) -> None:
        if not len(cols):
            return
        for col in cols.tolist():
            del self._col[self._ids[col]]
            self._ids[col] = _NO_ID
            self._live[col] = False
            self._last_seen[col] = -np.inf
        self._free.extend(cols.tolist())
        self._freed.extend(cols.tolist())
        self.generation += 1

    def _allocate(self, external_id: str) -> int:
        if not external_id:
            raise ValueError("ids must be non-empty strings")
        if self._free:
            col = self._free.pop()
        else:
            col = self._n_cols
            self._n_cols += 1
            self._ids = grow_rows(self._ids, self._n_cols, fill=_NO_ID)
            self._last_seen = grow_rows(self._last_seen, self._n_cols, fill=-np.inf)
            self._live = grow_rows(self._live, self._n_cols, fill=False)
        self._col[external_id] = col
        self._live[col] = True
        self._ids[col] = external_id
        return col

    # ----------------------------------------------------------------------------- state
    def state_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids as a str array with "" for free columns, last_seen) over `n_cols` columns."""
        return self._ids[: self._n_cols].astype(str), self._last_seen[: self._n_cols].copy()

    def load_arrays(self, ids: np.ndarray, last_seen: np.ndarray | None = None, now: float = 0.0) -> None:
        """Rebuild from `state_arrays` (columns keep their positions)."""
        ids = np.asarray(ids).astype(object)
        n = len(ids)
        self._ids = np.full(max(n, 16), _NO_ID, dtype=object)
        self._ids[:n] = ids
        self._last_seen = np.full(max(n, 16), -np.inf)
        if last_seen is not None:
            self._last_seen[:n] = last_seen
        self._n_cols = n
        self._live = np.zeros(max(n, 16), bool)
        self._live[:n] = ids != _NO_ID
        self._col = {str(x): c for c, x in enumerate(ids.tolist()) if x != _NO_ID}
        if len(self._col) != int((ids != _NO_ID).sum()):
            raise ValueError("duplicate ids in the saved index")
        self._free = [c for c in range(n - 1, -1, -1) if ids[c] == _NO_ID]
        self._freed = []
        self._events = max(now, float(np.max(self._last_seen[:n], initial=0.0)))
        self.generation += 1
