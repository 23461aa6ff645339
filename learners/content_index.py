"""Content neighbours of catalog items, computed once when an item is announced.

An announced item's tokens (title words, tags: `learners.content.tokens`) are looked up in an inverted
index; the items sharing a token are its content candidates, and the best `width` by the cosine of
idf-weighted token sets become its neighbours (and it becomes theirs, where it beats their weakest).
A token held by very many items (a genre, "the") only contributes its `postings` most recent holders,
so announcing an item costs tokens x postings, whatever the catalog.

>>> import numpy as np
>>> from learners.base import ItemMeta
>>> index = ContentNeighbours(width=2)
>>> index.add(np.array([0, 1, 2]), [ItemMeta("a", "Blue jazz night", ("jazz",)),
...     ItemMeta("b", "Cool jazz", ("jazz",)), ItemMeta("c", "Metal storm", ("metal",))])
>>> sorted(index.table.row(0))  # "c" shares nothing with "a"
[1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from learners.base import ItemMeta
from learners.neighbours import NeighbourTable
from learners.tokens import tokens


@numba.njit(cache=True, nogil=True)
def insert_best(cols: np.ndarray, weights: np.ndarray, a: int, b: int, w: float) -> None:
    """Keep b in a's row with weight w when it beats the weakest neighbour (rows hold the best)."""
    weakest = 0
    weakest_w = np.inf
    for s in range(cols.shape[1]):
        c = cols[a, s]
        if c == b:
            weights[a, s] = w
            return
        if c < 0:
            cols[a, s] = b
            weights[a, s] = w
            return
        if weights[a, s] < weakest_w:
            weakest_w = weights[a, s]
            weakest = s
    if w > weakest_w:
        cols[a, weakest] = b
        weights[a, weakest] = w


class ContentNeighbours:
    """Inverted token index and per-item content neighbours (see the module docstring).

    Parameters
    ----------
    width
        Content neighbours kept per item.
    postings
        Most recent holders of a token looked at when an item is announced.
    """

    def __init__(self, width: int = 32, postings: int = 256) -> None:
        self.width = width
        self.postings = postings
        self.table = NeighbourTable(width)
        self._index: dict[str, list[int]] = {}
        self._item_tokens: dict[int, tuple[list[str], float]] = {}  # col -> (tokens, idf norm)
        self.n_items = 0

    def resize(self, n_items: int) -> None:
        """Rows follow the catalog once an item was announced (before that the table stays empty: the
        kernels read content rows only where they exist)."""
        if self.n_items:
            self.table.resize(n_items)

    def _idf(self, token: str) -> float:
        return math.log1p((self.n_items + 1) / (len(self._index.get(token, ())) + 1))

    def add(self, cols: np.ndarray, metas: Sequence[ItemMeta]) -> None:
        """Announce items at `cols` (re-announcing replaces an item's tokens for later items)."""
        if len(cols) != len(metas):
            raise ValueError("one column per ItemMeta")
        if not len(cols):
            return
        self.table.resize(int(np.max(cols)) + 1)
        cols_table, weights = self.table.cols, self.table.weights
        for col, meta in zip(np.asarray(cols).tolist(), metas, strict=True):
            toks = list(dict.fromkeys(tokens(meta)))
            if not toks:
                continue
            if col not in self._item_tokens:
                self.n_items += 1
            idf = {t: self._idf(t) for t in toks}
            norm = math.sqrt(sum(v * v for v in idf.values()))
            scores: dict[int, float] = {}
            for t in toks:
                holders = self._index.get(t)
                if not holders:
                    continue
                w = idf[t] * idf[t]
                for other in holders[-self.postings:]:
                    if other != col:
                        scores[other] = scores.get(other, 0.0) + w
            if scores:
                others = np.fromiter(scores.keys(), np.int64, len(scores))
                sims = np.fromiter(scores.values(), np.float64, len(scores))
                sims /= norm * np.array([self._item_tokens[o][1] for o in others.tolist()])
                best = np.argsort(-sims, kind="stable")[: self.width]
                for j, s in zip(others[best].tolist(), sims[best].tolist(), strict=True):
                    insert_best(cols_table, weights, col, j, s)
                    insert_best(cols_table, weights, j, col, s)
            self._item_tokens[col] = (toks, norm)
            for t in toks:
                self._index.setdefault(t, []).append(col)
                if len(self._index[t]) > 4 * self.postings:  # only the newest holders are read
                    del self._index[t][: -self.postings]

    def reset_items(self, freed: np.ndarray, n_items: int) -> None:
        for col in freed.tolist():
            if self._item_tokens.pop(col, None) is not None:
                self.n_items -= 1
        self.table.reset_items(freed, n_items)
        dead = set(freed.tolist())
        for t, holders in self._index.items():
            if any(h in dead for h in holders):
                self._index[t] = [h for h in holders if h not in dead]
