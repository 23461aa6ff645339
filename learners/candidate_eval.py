"""Exact prequential ranks from candidates and an ordered background, sublinear in the catalog.

Same protocol as `learners.evaluate.PrequentialEvaluator` (rank of the event's item among all items
seen so far minus the user's history, ties half, every evaluable event), for models that score only
candidates (`SparseRecommender.score_then_learn`): the score of any other item is its background value.
Per event, candidates are compared directly; the items scoring their background value are counted with
two binary searches in the sorted background and a Fenwick tree over it that holds which items are
seen; the candidates, the user's history and the target are then taken out of that count one by one.
Cost per event: candidates + history + log(items). User histories are compact per-user lists in one
pool (item column and the column's generation, so an evicted and reused column is not mistaken for the
old item).

>>> import numpy as np
>>> from learners.base import Interactions
>>> from learners.sparse import SparseRecommender
>>> model, ev = SparseRecommender(), CandidateEvaluator(k=1)
>>> batch = Interactions.from_records([{"user_id": u, "item_id": i, "ts": 0.0}
...                                    for u, i in [("a", "x"), ("b", "y"), ("b", "x")]])
>>> _ = ev.observe_candidates(batch, model.score_then_learn(batch), model)
>>> ev.report()["evaluated"]  # only b's "x" is evaluable; "y" is b's history
1
"""

from __future__ import annotations

import time
from typing import Any

import numba
import numpy as np

from learners.background import Background
from learners.base import RATING, Interactions, get_hook
from learners.evaluate import PrequentialEvaluator
from learners.ids import first_rows, grow_rows


@numba.njit(cache=True, nogil=True, inline="always")
def _bit_add(tree: np.ndarray, i: int, delta: int) -> None:
    i += 1
    while i < tree.shape[0]:
        tree[i] += delta
        i += i & -i


@numba.njit(cache=True, nogil=True, inline="always")
def _bit_prefix(tree: np.ndarray, i: int) -> int:
    total = 0
    while i > 0:
        total += tree[i]
        i -= i & -i
    return total


@numba.njit(cache=True, nogil=True)
def build_tree(seen: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Fenwick tree over background positions: 1 where the column at that position is seen."""
    n = order.shape[0]
    tree = np.zeros(n + 1, np.int64)
    for p in range(n):
        tree[p + 1] = 1 if seen[order[p]] else 0
    for i in range(1, n + 1):
        j = i + (i & -i)
        if j <= n:
            tree[j] += tree[i]
    return tree


@numba.njit(cache=True, nogil=True, inline="always")
def _bg(values: np.ndarray, default: float, col: int) -> float:
    return values[col] if col < values.shape[0] else default


@numba.njit(cache=True, nogil=True)
def evaluate_batch(start, users, targets, cand_n, cand_cols, cand_scores, target_scores, values,
                   sorted_values, position, order, default, tree, seen, col_gen, hist_start, hist_len,
                   hist_cap, pool_items, pool_gen, counters, hmark, cmark, covered, k, coverage_every,
                   evaluate_every, out_evaluable, out_rank, out_ncand):
    """Rank events [start, n) in order and learn them; returns where it stopped (n, or an event whose
    history needs a bigger pool). counters: [stamp, pool top, n seen, n seen in snapshot, n seen past
    it, evaluable so far, evaluated so far]."""
    n_snap = values.shape[0]
    top_k_cols = np.empty(k, np.int64)
    top_k_vals = np.empty(k, np.float64)
    for e in range(start, users.shape[0]):
        u = users[e]
        t = targets[e]
        if hist_len[u] == hist_cap[u] and counters[1] + 2 * hist_cap[u] + 8 > pool_items.shape[0]:
            return e
        counters[0] += 1
        cur = counters[0]
        h0 = hist_start[u]
        n_hist = 0
        for q in range(hist_len[u]):
            h = pool_items[h0 + q]
            if pool_gen[h0 + q] == col_gen[h]:
                hmark[h] = cur
                n_hist += 1
        in_hist = hmark[t] == cur
        evaluable = seen[t] and not in_hist
        if evaluable:
            counters[5] += 1
            if (counters[5] - 1) % evaluate_every != 0:
                evaluable = False
        out_evaluable[e] = evaluable
        if evaluable:
            st = target_scores[e]
            if np.isnan(st):
                st = -np.inf
            greater = 0
            equal = 0
            lo = np.searchsorted(sorted_values, st, side="left")
            hi = np.searchsorted(sorted_values, st, side="right")
            below_hi = _bit_prefix(tree, hi)
            bg_greater = counters[3] - below_hi
            bg_equal = below_hi - _bit_prefix(tree, lo)
            if default > st:
                bg_greater += counters[4]
            elif default == st:
                bg_equal += counters[4]
            nc = cand_n[e]
            # branch-free counts (the comparisons are unpredictable): a seen candidate other than the
            # target leaves the background count, and, outside the history, counts by its own score
            for m in range(nc):
                c = cand_cols[e, m]
                cmark[c] = cur
                counted = np.int64(seen[c]) & np.int64(c != t)
                v = _bg(values, default, c)
                bg_greater -= counted & np.int64(v > st)
                bg_equal -= counted & np.int64(v == st)
                scored = counted & np.int64(hmark[c] != cur)
                s = cand_scores[e, m]
                greater += scored & np.int64(s > st)
                equal += scored & np.int64(s == st)
            for q in range(hist_len[u]):  # branch-free too: a history item out of the background count
                h = pool_items[h0 + q]
                out = np.int64(pool_gen[h0 + q] == col_gen[h]) & np.int64(cmark[h] != cur)
                v = _bg(values, default, h)
                bg_greater -= out & np.int64(v > st)
                bg_equal -= out & np.int64(v == st)
            v = _bg(values, default, t)  # the target is seen: out of the background count too
            if v > st:
                bg_greater -= 1
            elif v == st:
                bg_equal -= 1
            out_rank[e] = greater + bg_greater + 0.5 * (equal + bg_equal)
            out_ncand[e] = counters[2] - n_hist
            counters[6] += 1
            if (counters[6] - 1) % coverage_every == 0:
                # the event's top-k list: best candidates and best background items, merged
                filled = 0
                for m in range(nc):
                    c = cand_cols[e, m]
                    if not seen[c] or hmark[c] == cur:
                        continue
                    s = cand_scores[e, m]
                    filled = _push(top_k_cols, top_k_vals, filled, c, s)
                taken = 0
                p = n_snap - 1
                while p >= 0 and taken < k:
                    c = order[p]
                    p -= 1
                    if not seen[c] or hmark[c] == cur or cmark[c] == cur:
                        continue
                    filled = _push(top_k_cols, top_k_vals, filled, c, values[c])
                    taken += 1
                for q in range(filled):
                    covered[top_k_cols[q]] = True
        # learn: the item joins the user's history and the seen items
        if not in_hist:
            if hist_len[u] == hist_cap[u]:
                new_cap = max(2 * hist_cap[u], 4)
                new_start = counters[1]
                for q in range(hist_len[u]):
                    pool_items[new_start + q] = pool_items[h0 + q]
                    pool_gen[new_start + q] = pool_gen[h0 + q]
                hist_start[u] = new_start
                hist_cap[u] = new_cap
                counters[1] += new_cap
            pool_items[hist_start[u] + hist_len[u]] = t
            pool_gen[hist_start[u] + hist_len[u]] = col_gen[t]
            hist_len[u] += 1
        if not seen[t]:
            seen[t] = True
            _count_seen_one(t, tree, position, n_snap, counters)
    return users.shape[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _count_seen_one(c, tree, position, n_snap, counters):
    """A newly seen column into the seen counts (and the tree, when it is in the snapshot)."""
    counters[2] += 1
    if c < n_snap:
        _bit_add(tree, position[c], 1)
        counters[3] += 1
    else:
        counters[4] += 1


@numba.njit(cache=True, nogil=True)
def _count_seen(cols, tree, position, counters):
    """Newly seen columns into the seen counts (`mark_seen`)."""
    for c in cols:
        _count_seen_one(c, tree, position, position.shape[0], counters)


@numba.njit(cache=True, nogil=True, inline="always")
def _push(cols, vals, filled, c, v):
    """Keep the k best (value, column) pairs seen so far in cols/vals."""
    k = cols.shape[0]
    if filled < k:
        cols[filled] = c
        vals[filled] = v
        return filled + 1
    worst = 0
    for q in range(1, k):
        if vals[q] < vals[worst]:
            worst = q
    if v > vals[worst]:
        cols[worst] = c
        vals[worst] = v
    return filled


class CandidateEvaluator(PrequentialEvaluator):
    """`PrequentialEvaluator` for candidate-scoring models (see the module docstring); the same
    metrics, rolling windows, series and report."""

    def reset(self) -> None:
        super().reset()
        self._seen_cols = np.zeros(0, np.bool_)
        self._col_gen = np.zeros(0, np.int32)
        self._owner = np.zeros(0, dtype=object)  # item id each seen column held when first seen
        self._hmark = np.zeros(0, np.int64)
        self._cmark = np.zeros(0, np.int64)
        self._covered_cols = np.zeros(0, np.bool_)
        self._hist_start = np.zeros(0, np.int64)
        self._hist_len_u = np.zeros(0, np.int64)
        self._hist_cap = np.zeros(0, np.int64)
        self._pool_items = np.zeros(1 << 12, np.int64)
        self._pool_gen = np.zeros(1 << 12, np.int32)
        self._counters = np.zeros(7, np.int64)
        self._tree = np.zeros(1, np.int64)
        self._tree_version: Any = None
        self._index_version: Any = None

    @property
    def n_items(self) -> int:
        return int(self._counters[2]) if hasattr(self, "_counters") else 0

    def _forget_users(self, excess: int, keep: np.ndarray) -> None:
        if excess <= 0:
            return
        before = set(self._user_slot.values())
        super()._forget_users(excess, keep)
        gone = np.asarray(sorted(before - set(self._user_slot.values())), np.int64)
        gone = gone[gone < len(self._hist_len_u)]
        self._hist_len_u[gone] = 0  # the pool space is left behind (bounded by the live histories)

    def _check_columns(self, model: Any, n_cols: int) -> None:
        """After the model's columns changed hands (eviction, a loaded state), seen columns whose item
        is gone count as unseen, and history entries of the old item as stale (generation)."""
        version = get_hook(model, "item_index_version")
        if version is not None and version == self._index_version:
            return
        self._index_version = version
        cols = np.flatnonzero(self._seen_cols[:n_cols])
        if not len(cols):
            return
        now = model.item_ids(cols)
        moved = cols[now != self._owner[cols]]
        if len(moved):
            self._seen_cols[moved] = False
            self._col_gen[moved] += 1
            self._counters[2] -= len(moved)
            self._tree_version = None  # rebuilt below with the seen counts

    def _sync_background(self, background: Background) -> None:
        if self._tree_version == background.version:
            return
        n = len(background)
        seen = self._seen_cols
        self._tree = build_tree(seen, background.order)
        self._position = background.position
        in_snap = int(seen[:n].sum())
        self._counters[3] = in_snap
        self._counters[4] = int(self._counters[2]) - in_snap
        self._tree_version = background.version

    def _grow_cols(self, n_cols: int) -> None:
        if len(self._seen_cols) < n_cols:
            self._seen_cols = grow_rows(self._seen_cols, n_cols, False, minimum=64)
            self._col_gen = grow_rows(self._col_gen, n_cols, minimum=64)
            self._owner = grow_rows(self._owner, n_cols, None, minimum=64)
            self._hmark = grow_rows(self._hmark, n_cols, minimum=64)
            self._cmark = grow_rows(self._cmark, n_cols, minimum=64)
            self._covered_cols = grow_rows(self._covered_cols, n_cols, False, minimum=64)

    def mark_seen(self, cols: np.ndarray, item_ids: np.ndarray, model: Any) -> int:
        """Count items as seen that this evaluator did not see an event of: another worker did (their
        counts came in an item delta), so they are in the ranked set and evaluable here too, as with
        one worker. Returns how many were new."""
        cols = np.asarray(cols, np.int64)
        keep = cols >= 0
        cols, item_ids = cols[keep], np.asarray(item_ids, dtype=object)[keep]
        if not len(cols):
            return 0
        self._grow_cols(int(cols.max()) + 1)
        self._check_columns(model, len(self._seen_cols))
        new = ~self._seen_cols[cols]
        cols, item_ids = cols[new], item_ids[new]
        self._seen_cols[cols] = True
        self._owner[cols] = item_ids
        if self._tree_version is None:  # no tree yet: it is built from the seen columns
            self._counters[2] += len(cols)
        else:
            _count_seen(cols, self._tree, self._position, self._counters)
        return len(cols)

    def count_unranked(self, ts: Any) -> int:
        """Count events that were evaluable but could not be ranked here, ranked last: their item was
        first seen on another worker, whose notice came after the event (`FirstSightings`). `ts`: the
        events' times. Returns how many."""
        ts = np.asarray(ts, np.float64)
        if not len(ts):
            return 0
        last = max(int(self._counters[2]), self.k)  # below every seen item, and out of any list
        self._record({"position": np.full(len(ts), -1, np.int64), "rank": np.full(len(ts), float(last)),
                      "hit": np.empty(0), "n_candidates": np.full(len(ts), last + 1)}, ts)
        return len(ts)

    def set_histories(self, user_ids: np.ndarray, item_ids: list[np.ndarray], model: Any) -> None:
        """Replace users' histories (a partition's users handed over from another worker): the items
        count as seen, and as the user's history from now on."""
        flat = np.concatenate(item_ids) if item_ids else np.zeros(0, dtype=object)
        cols = model.item_cols(flat) if len(flat) else np.zeros(0, np.int64)
        self.mark_seen(cols, flat, model)
        slots = self._user_slots(np.asarray(user_ids, dtype=object))
        n_users = len(self._user_ids)
        if len(self._hist_start) < n_users:
            self._hist_start = grow_rows(self._hist_start, n_users, minimum=64)
            self._hist_len_u = grow_rows(self._hist_len_u, n_users, minimum=64)
            self._hist_cap = grow_rows(self._hist_cap, n_users, minimum=64)
        lengths = np.fromiter((len(h) for h in item_ids), np.int64, len(item_ids))
        known = cols >= 0
        top = int(self._counters[1])
        need = top + len(cols)
        if need > len(self._pool_items):
            self._pool_items = grow_rows(self._pool_items, 2 * need, minimum=64)
            self._pool_gen = grow_rows(self._pool_gen, len(self._pool_items), minimum=64)
        self._pool_items[top:need] = np.where(known, cols, 0)
        # an unknown item's entry gets a generation no column has: never read as history
        self._pool_gen[top:need] = np.where(known, self._col_gen[np.maximum(cols, 0)], -1)
        self._hist_start[slots] = top + np.cumsum(lengths) - lengths
        self._hist_len_u[slots] = lengths
        self._hist_cap[slots] = lengths
        self._counters[1] = need

    def observe_candidates(self, batch: Interactions, cands: Any, model: Any,
                           predictions: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Rank the batch's evaluable events from `cands` (`CandidateScores`) and learn the batch."""
        started, cpu = time.perf_counter(), time.process_time()
        n = len(batch)
        users = self._user_slots(batch.user)
        n_users = len(self._user_ids)
        if len(self._hist_start) < n_users:
            self._hist_start = grow_rows(self._hist_start, n_users, minimum=64)
            self._hist_len_u = grow_rows(self._hist_len_u, n_users, minimum=64)
            self._hist_cap = grow_rows(self._hist_cap, n_users, minimum=64)
        targets = np.asarray(cands.target_col, np.int64)
        n_cols = max(int(targets.max(initial=-1)) + 1, len(cands.background),
                     int(cands.cols.max(initial=-1)) + 1 if cands.cols.size else 0)
        self._grow_cols(n_cols)
        self._check_columns(model, len(self._seen_cols))
        background = cands.background
        self._sync_background(background)
        unseen = ~self._seen_cols[targets]
        unseen_rows = np.zeros(0, np.int64)
        if unseen.any():
            self._owner[targets[unseen]] = batch.item[unseen]
            unseen_rows = first_rows(targets, np.flatnonzero(unseen))
        evaluable = np.zeros(n, np.bool_)
        rank = np.zeros(n, np.float64)
        ncand = np.zeros(n, np.int64)
        pos = 0
        while pos < n:
            pos = evaluate_batch(pos, users, targets, cands.n, cands.cols, cands.scores, cands.target_score,
                                 background.values, background.sorted_values, background.position,
                                 background.order, background.default, self._tree, self._seen_cols,
                                 self._col_gen, self._hist_start, self._hist_len_u, self._hist_cap,
                                 self._pool_items, self._pool_gen, self._counters, self._hmark, self._cmark,
                                 self._covered_cols, self.k, self.coverage_every, self.evaluate_every,
                                 evaluable, rank, ncand)
            if pos < n:  # the pool is full: double it and go on from that event
                self._pool_items = grow_rows(self._pool_items, 2 * len(self._pool_items), minimum=64)
                self._pool_gen = grow_rows(self._pool_gen, len(self._pool_items), minimum=64)
        rows = np.flatnonzero(evaluable)
        # unseen_rows: each item's first event that this evaluator could not rank (not seen before)
        result = {"position": self.events + rows, "rank": rank[rows], "hit": np.empty(0),
                  "n_candidates": ncand[rows], "unseen_rows": unseen_rows}
        if len(rows):
            self._record(result, batch.ts[rows])
        if predictions is not None:
            predictions = np.asarray(predictions, np.float64)
            rated = (batch.kind == RATING) & np.isfinite(predictions)
            if rated.any():
                err = (predictions[rated] - batch.value[rated]) ** 2
                self._sums["sq_err"] += float(err.sum())
                self._n_rated += int(rated.sum())
                self._rolling["sq_err"].extend(err)
        self.evaluable_seen = int(self._counters[5])
        self._batch_done(batch, started, cpu)
        return result

    def report(self) -> dict[str, Any]:
        out = super().report()
        out[f"coverage@{self.k}"] = float(self._covered_cols.sum()) / max(self.n_items, 1)
        out["items_seen"] = self.n_items
        return out
