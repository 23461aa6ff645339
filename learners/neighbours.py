"""Bounded per-item neighbour lists: the sparse replacement of an item x item matrix.

Each item keeps at most `width` neighbours with a weight, in fixed-size rows of two arrays (column,
weight), so memory is items x width whatever the catalog. Adding weight to a pair (a, b) finds b in a's
row; when b is absent and the row is full, b takes the slot of the weakest neighbour with that weight
plus the weight it adds, and that inherited part is remembered as the slot's error (the space-saving
scheme: every neighbour whose true weight exceeds the row's minimum is kept; `weight - error` is a lower
bound of the true weight and is what scoring reads). Rows wider than `BUCKET` slots are split into
buckets chosen by a hash of the neighbour, and the scheme runs per bucket, so adding a pair costs one
bucket's compares whatever the width.

>>> import numpy as np
>>> table = NeighbourTable(width=2)
>>> table.resize(4)
>>> add_pair(table.cols, table.weights, table.errors, 0, 1, 1.0)
>>> add_pair(table.cols, table.weights, table.errors, 0, 2, 3.0)
>>> add_pair(table.cols, table.weights, table.errors, 0, 3, 0.5)  # full: 3 replaces 1 (weight 1.0)
>>> table.row(0)  # the slot's error (1.0) is taken off: 3's weight is at least 0.5
{3: 0.5, 2: 3.0}
"""

from __future__ import annotations

import numba
import numpy as np

_EMPTY = -1
BUCKET = 16


@numba.njit(cache=True, nogil=True, inline="always")
def bucket_of(b: int, width: int) -> tuple[int, int]:
    """Slots [start, stop) of a's row where neighbour b may live: rows wider than `BUCKET` are split
    into buckets of `BUCKET` slots chosen by a hash of b, so adding a pair costs `BUCKET` compares
    whatever the width (space-saving runs per bucket)."""
    if width <= BUCKET:
        return 0, width
    h = (np.uint64(b) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    start = int(h % np.uint64(width // BUCKET)) * BUCKET
    return start, start + BUCKET


@numba.njit(cache=True, nogil=True, inline="always")
def insert_ranked(scores, r, best, n, size):
    """Offer entry r to `best[:n]`, the indices of the `size` best entries offered so far by
    `scores`, descending (ties: the earlier offered first); returns the new n. Offered in index order,
    that is a stable sort's first `size`, at one compare for most entries once `best` is full."""
    s = scores[r]
    if n == size and s <= scores[best[n - 1]]:
        return n
    p = n if n < size else size - 1
    while p > 0 and scores[best[p - 1]] < s:
        if p < size:
            best[p] = best[p - 1]
        p -= 1
    best[p] = r
    return n + 1 if n < size else n


@numba.njit(cache=True, nogil=True)
def add_pair(cols: np.ndarray, weights: np.ndarray, errors: np.ndarray, a: int, b: int, w: float) -> None:
    """Add `w` to the weight of neighbour b in a's row (space-saving replacement when full)."""
    row_cols = cols[a]
    width = row_cols.shape[0]
    start, stop = bucket_of(b, width)
    weakest = start
    weakest_w = np.inf
    for s in range(start, stop):
        c = row_cols[s]
        if c == b:
            weights[a, s] += w
            return
        if c == _EMPTY:
            row_cols[s] = b
            weights[a, s] = w
            errors[a, s] = 0.0
            return
        if weights[a, s] < weakest_w:
            weakest_w = weights[a, s]
            weakest = s
    row_cols[weakest] = b
    errors[a, weakest] = weakest_w
    weights[a, weakest] = weakest_w + w


@numba.njit(cache=True, nogil=True)
def _drop_cols(cols: np.ndarray, weights: np.ndarray, errors: np.ndarray, dead: np.ndarray, n: int) -> None:
    for a in range(n):
        for s in range(cols.shape[1]):
            c = cols[a, s]
            if c != _EMPTY and c < dead.shape[0] and dead[c]:  # a row may hold columns past `dead`
                cols[a, s] = _EMPTY
                weights[a, s] = 0.0
                errors[a, s] = 0.0


@numba.njit(cache=True, nogil=True)
def _narrow_rows(cols: np.ndarray, weights: np.ndarray, errors: np.ndarray, new_cols: np.ndarray,
                 new_weights: np.ndarray, new_errors: np.ndarray) -> None:
    """Each row's entries, strongest first, into the narrower rows' buckets while they have room."""
    width = new_cols.shape[1]
    for a in range(cols.shape[0]):
        order = np.argsort(-weights[a])
        for s in order:
            c = cols[a, s]
            if c == _EMPTY:
                continue
            start, stop = bucket_of(c, width)
            for t in range(start, stop):
                if new_cols[a, t] == _EMPTY:
                    new_cols[a, t] = c
                    new_weights[a, t] = weights[a, s]
                    new_errors[a, t] = errors[a, s]
                    break


class NeighbourTable:
    """`width` strongest neighbours per item column (see the module docstring).

    With a `budget` (entries over all rows), rows are narrowed by halves, down to `min_width`, when the
    rows held would exceed it: a small catalog keeps wide rows, a large one stays inside the budget, and
    each row keeps its strongest entries.

    >>> table = NeighbourTable(width=64, budget=64 * 100)
    >>> table.resize(100)
    >>> table.width
    64
    >>> table.resize(150)  # 150 rows x 64 > budget
    >>> table.width, table.cols.shape[1]
    (32, 32)
    """

    def __init__(self, width: int = 64, budget: int | None = None, min_width: int = BUCKET) -> None:
        if width < 1:
            raise ValueError(f"width must be positive, got {width}")
        self.max_width = width
        self.width = width
        self.budget = budget
        self.min_width = min(min_width, width)
        self.cols = np.full((0, width), _EMPTY, dtype=np.int32)
        self.weights = np.zeros((0, width), dtype=np.float32)
        self.errors = np.zeros((0, width), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.cols)

    def _narrow(self, width: int) -> None:
        n = len(self.cols)
        cols = np.full((n, width), _EMPTY, dtype=np.int32)
        weights = np.zeros((n, width), dtype=np.float32)
        errors = np.zeros((n, width), dtype=np.float32)
        _narrow_rows(self.cols, self.weights, self.errors, cols, weights, errors)
        self.cols, self.weights, self.errors, self.width = cols, weights, errors, width

    def resize(self, n_items: int) -> None:
        """Room for columns [0, n_items) (grows by half again, so appends are amortised O(1))."""
        have = len(self.cols)
        if n_items <= have:
            return
        size = max(n_items, have + have // 2, 64)
        width = self.width
        # the width follows the catalog (rows asked for), not the over-allocation, so a model narrows at
        # the same catalog size however it grew
        while self.budget is not None and width > self.min_width and n_items * width > self.budget:
            width = max(width // 2, self.min_width)
        if width != self.width:
            self._narrow(width)
        for name, fill in (("cols", _EMPTY), ("weights", 0.0), ("errors", 0.0)):
            old = getattr(self, name)
            grown = np.full((size, self.width), fill, dtype=old.dtype)
            grown[:have] = old
            setattr(self, name, grown)

    def row(self, col: int) -> dict[int, float]:
        """Neighbour -> weight lower bound of one column (for tests and inspection)."""
        live = self.cols[col] != _EMPTY
        lower = (self.weights[col] - self.errors[col])[live]
        return {int(c): float(w) for c, w in zip(self.cols[col][live], lower, strict=True)}

    def reset_items(self, freed: np.ndarray, n_items: int) -> None:
        """Forget freed columns: their rows, and their entries in every other row (one pass, at eviction
        time only)."""
        freed = freed[freed < len(self.cols)]  # rows never allocated hold nothing
        if not len(freed):
            return
        self.cols[freed] = _EMPTY
        self.weights[freed] = 0.0
        self.errors[freed] = 0.0
        self.drop_neighbours(freed, n_items)

    def drop_neighbours(self, freed: np.ndarray, n_rows: int) -> None:
        """Forget freed columns as entries of rows [0, n_rows) (their own rows are left as they are)."""
        if not len(freed):
            return
        dead = np.zeros(max(len(self.cols), int(freed.max()) + 1), dtype=np.bool_)
        dead[freed] = True
        _drop_cols(self.cols, self.weights, self.errors, dead, min(n_rows, len(self.cols)))

    def forget(self, factor: float) -> None:
        self.weights *= factor
        self.errors *= factor

    def nbytes(self) -> int:
        return self.cols.nbytes + self.weights.nbytes + self.errors.nbytes

    def state(self, n_items: int, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_cols": self.cols[:n_items].copy(),
                f"{prefix}_weights": self.weights[:n_items].copy(),
                f"{prefix}_errors": self.errors[:n_items].copy()}

    def load(self, items: dict[str, np.ndarray], prefix: str) -> None:
        cols = np.asarray(items[f"{prefix}_cols"], dtype=np.int32)
        if cols.ndim != 2 or not 1 <= cols.shape[1] <= self.max_width:
            raise ValueError(f"saved {prefix} neighbours have shape {cols.shape}; "
                             f"this table is at most {self.max_width} wide")
        self.width = cols.shape[1]
        self.cols = cols.copy()
        self.weights = np.asarray(items[f"{prefix}_weights"], dtype=np.float32).copy()
        self.errors = np.asarray(items[f"{prefix}_errors"], dtype=np.float32).copy()
