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
from learners.neighbours import NeighbourTable, insert_ranked
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


@numba.njit(cache=True, nogil=True)
def _link(cols, weights, a, held, w, norm, norms, slot, width):
    """Item a's content neighbours from the holders of its tokens (`held`, in token order, each with its
    token's idf^2 `w`): a holder's score is its weights summed in that order over the norms, the best
    `width` (ties: first appearance first) are inserted both ways. `slot` (-1 per column) is scratch,
    left as found."""
    others = np.empty(held.shape[0], np.int64)
    sums = np.empty(held.shape[0])
    m = 0
    for q in range(held.shape[0]):
        o = held[q]
        if o == a:
            continue
        if slot[o] < 0:
            slot[o] = m
            others[m] = o
            sums[m] = 0.0
            m += 1
        sums[slot[o]] += w[q]
    sims = np.empty(m)
    for q in range(m):
        slot[others[q]] = -1
        sims[q] = sums[q] / (norm * norms[others[q]])
    # the best `width` in descending order, ties by first appearance (a stable sort's first `width`)
    best = np.empty(min(width, m), np.int64)
    n_best = 0
    for q in range(m):
        n_best = insert_ranked(sims, q, best, n_best, best.shape[0])
    for r in range(n_best):
        q = best[r]
        insert_best(cols, weights, a, others[q], sims[q])
        insert_best(cols, weights, others[q], a, sims[q])


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
        if postings < 1:
            raise ValueError(f"postings must be at least 1, got {postings}")
        self.width = width
        self.postings = postings
        self.table = NeighbourTable(width)
        self._index: dict[str, list] = {}  # token -> [int64 buffer of holder cols, length]
        # col -> (every token it was filed under, over re-announcements too; its idf norm)
        self._item_tokens: dict[int, tuple[list[str], float]] = {}
        self._norm = np.zeros(0)  # idf norm per announced col (the same as in _item_tokens)
        self._slot = np.zeros(0, np.int64)  # scratch of `_link`
        self.n_items = 0

    def resize(self, n_items: int) -> None:
        """Rows follow the catalog once an item was announced (before that the table stays empty: the
        kernels read content rows only where they exist)."""
        if self.n_items:
            self.table.resize(n_items)

    def _idf(self, token: str) -> float:
        holders = self._index.get(token)
        return math.log1p((self.n_items + 1) / ((holders[1] if holders else 0) + 1))

    def _append(self, token: str, col: int) -> None:
        """col joins the token's holders (an int64 buffer and its length: reading the newest `postings`
        is a slice, not a list converted per announcement)."""
        holders = self._index.get(token)
        if holders is None:
            holders = self._index[token] = [np.empty(8, np.int64), 0]
        buf, n = holders
        if n == len(buf):
            buf = holders[0] = np.concatenate([buf, np.empty(len(buf), np.int64)])
        buf[n] = col
        n += 1
        if n > 4 * self.postings:  # only the newest holders are read
            buf[: self.postings] = buf[n - self.postings: n]
            n = self.postings
        holders[1] = n

    def add(self, cols: np.ndarray, metas: Sequence[ItemMeta]) -> None:
        """Announce items at `cols` (re-announcing replaces an item's tokens for later items)."""
        if len(cols) != len(metas):
            raise ValueError("one column per ItemMeta")
        if not len(cols):
            return
        self.table.resize(int(np.max(cols)) + 1)
        cols_table, weights = self.table.cols, self.table.weights
        postings = self.postings
        for col, meta in zip(np.asarray(cols).tolist(), metas, strict=True):
            toks = list(dict.fromkeys(tokens(meta)))
            if not toks:
                continue
            if col not in self._item_tokens:
                self.n_items += 1
            idf = [self._idf(t) for t in toks]
            norm = math.sqrt(sum(v * v for v in idf))
            parts, w2 = [], []
            for t, v in zip(toks, idf, strict=True):
                holders = self._index.get(t)
                if holders is not None and holders[1]:
                    buf, n = holders
                    parts.append(buf[max(n - postings, 0): n])
                    w2.append(v * v)
            if parts:
                if len(self._slot) < len(self._norm):
                    self._slot = np.full(len(self._norm), -1, np.int64)
                held = np.concatenate(parts)
                w = np.repeat(np.asarray(w2), [len(h) for h in parts])
                _link(cols_table, weights, col, held, w, norm, self._norm, self._slot, self.width)
            filed = self._item_tokens.get(col)
            self._item_tokens[col] = (toks if filed is None else list(dict.fromkeys(filed[0] + toks)), norm)
            if col >= len(self._norm):
                grown = np.zeros(max(col + 1, 2 * len(self._norm), 64))
                grown[: len(self._norm)] = self._norm
                self._norm = grown
            self._norm[col] = norm
            for t in toks:
                self._append(t, col)

    def reset_items(self, freed: np.ndarray, n_items: int) -> None:
        """Forget the items at `freed` (evicted): their rows, their neighbour entries and their places in
        the token index (only the tokens they were filed under are read)."""
        tokens_of_freed: set[str] = set()
        for col in freed.tolist():
            filed = self._item_tokens.pop(col, None)
            if filed is not None:
                self.n_items -= 1
                tokens_of_freed.update(filed[0])
        self.table.reset_items(freed, n_items)
        for token in tokens_of_freed:
            holders = self._index.get(token)
            if holders is None:
                continue
            live = holders[0][: holders[1]]
            alive = ~np.isin(live, freed)
            if not alive.all():
                kept = live[alive]
                holders[0][: len(kept)] = kept
                holders[1] = len(kept)
