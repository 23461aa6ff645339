"""Exact prequential ranks of decayed popularity, sublinear in the catalog.

`DecayedPopularityEvaluator` learns `learners.popularity.DecayedPopularity`'s counts itself and ranks
every event as `learners.evaluate.PrequentialEvaluator` ranks that model from `prequential_step`: the
same ranks, bit for bit, and the same report (HR, NDCG, MRR, AUC, coverage), without a batch x items
score matrix. A micro-batch is scored with the counts from before it, as float32 `counts * 2**((ref -
clock) / half_life)`; items first seen inside the batch have no score yet (-inf).

An item-only score changes only for the items a batch touches; a common factor keeps the others'
order. So the counts of all scored items are a sorted array A (as of the last merge), those changed
since a small sorted array D, and their entries in A a sorted array O: items scoring above s =
bsearch(A) - bsearch(O) + bsearch(D), the searches comparing float32 scores (ties as the dense
evaluator sees them). D is merged into A in one linear pass past about sqrt(256 items) entries; a
rebase of the counts (every 200 half-lives) scales A, O and D alike, which keeps them sorted. The
user's history (a linked list of the events that added an item) is then taken out one item at a time.
Cost per event: log(items) + history; coverage walks the top of A and D on the sampled events. Only
the "events" clock (`DecayedPopularity(unit="events")`).

>>> from learners.base import Interactions
>>> def batch(pairs):
...     return Interactions.from_records([{"user_id": u, "item_id": i, "ts": 0.0} for u, i in pairs])
>>> ev = DecayedPopularityEvaluator(half_life=2000.0, k=1)
>>> ev.observe_and_learn(batch([("a", "x"), ("b", "x"), ("a", "y")]))["rank"].tolist()  # b's x: alone
[0.0]
>>> ev.observe_and_learn(batch([("c", "y"), ("c", "x")]))["rank"].tolist()  # x (2) above y (1)
[1.0, 0.0]
>>> ev.report()["evaluated"], round(ev.report()["hr@1"], 3)
(3, 0.667)
"""

from __future__ import annotations

import math
import time
from itertools import repeat
from typing import Any

import numba
import numpy as np

from learners.base import Interactions
from learners.evaluate import PrequentialEvaluator
from learners.ids import grow_rows
from learners.popularity import _MAX_EXPONENT

_NEG_INF = np.float32(-np.inf)
# counters: items seen, items scored (in A or D), history nodes, evaluable so far, evaluated so far,
# stamp of the latest coverage walk
_SEEN, _SCORED, _NODES, _EVALUABLE, _EVALUATED, _STAMP = range(6)


@numba.njit(cache=True, nogil=True, inline="always")
def _n_above(values: np.ndarray, factor: float, s: np.float32, strict: bool) -> int:
    """Entries of the sorted `values` whose float32 score (value * factor) is > s (>= s if not strict)."""
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        x = np.float32(values[mid] * factor)
        if x > s or (not strict and x == s):
            hi = mid
        else:
            lo = mid + 1
    return values.shape[0] - lo


@numba.njit(cache=True, nogil=True)
def _cover(a_val, a_item, d_val, d_item, changed, hmark, cur, factor, k, covered, top, top_s, ties):
    """Mark the event's top-k list (scored items not stamped `cur` in hmark, by score, ties at the k-th
    score by item number as the dense evaluator's column order) as covered."""
    i, j = a_val.shape[0] - 1, d_val.shape[0] - 1
    got, need, n_tie = 0, 0, 0
    kth = _NEG_INF
    while True:
        while i >= 0 and changed[a_item[i]]:
            i -= 1
        if i < 0 and j < 0:
            break
        if j < 0 or (i >= 0 and a_val[i] >= d_val[j]):
            x, c = a_item[i], a_val[i]
            i -= 1
        else:
            x, c = d_item[j], d_val[j]
            j -= 1
        if hmark[x] == cur:
            continue
        s = np.float32(c * factor)
        if got < k:
            top[got], top_s[got] = x, s
            got += 1
            if got == k:
                kth = s
                for q in range(k):
                    if top_s[q] > kth:
                        covered[top[q]] = True
                    else:
                        need += 1
                for q in range(k):
                    if top_s[q] == kth:
                        n_tie = _keep_smallest(ties, n_tie, need, top[q])
            continue
        if s < kth:
            break
        n_tie = _keep_smallest(ties, n_tie, need, x)  # s == kth: the scores never increase
    if got < k:
        for q in range(got):
            covered[top[q]] = True
    else:
        for q in range(n_tie):
            covered[ties[q]] = True


@numba.njit(cache=True, nogil=True, inline="always")
def _keep_smallest(ties: np.ndarray, n: int, cap: int, x: int) -> int:
    """Insert x into the ascending ties[:n], keeping at most `cap` smallest; returns the new n."""
    if n == cap:
        if cap == 0 or x >= ties[n - 1]:
            return n
        n -= 1
    q = n
    while q > 0 and ties[q - 1] > x:
        ties[q] = ties[q - 1]
        q -= 1
    ties[q] = x
    return n + 1


@numba.njit(cache=True, nogil=True)
def rank_events(users, items, factor, counts, scored, changed, seen, hmark, covered, head, hist_len,
                node_item, node_prev, a_val, a_item, o_val, d_val, d_item, counters, k, coverage_every,
                evaluate_every, out_evaluable, out_rank, out_ncand):
    """Rank a batch's events in order with the scores from before the batch (`counts * factor` as
    float32 for scored items, -inf for items first seen in the batch) and add each event to the seen
    items and its user's history."""
    top = np.empty(k, np.int64)
    top_s = np.empty(k, np.float32)
    ties = np.empty(k, np.int64)
    for e in range(users.shape[0]):
        u, t = users[e], items[e]
        st = np.float32(counts[t] * factor) if scored[t] else _NEG_INF
        in_hist = False
        h_greater, h_equal = 0, 0  # history items scoring above / as the target
        node = head[u]
        while node >= 0:
            h = node_item[node]
            if h == t:
                in_hist = True
                break
            s = np.float32(counts[h] * factor) if scored[h] else _NEG_INF
            if s > st:
                h_greater += 1
            elif s == st:
                h_equal += 1
            node = node_prev[node]
        evaluable = seen[t] and not in_hist
        if evaluable:
            counters[_EVALUABLE] += 1
            if (counters[_EVALUABLE] - 1) % evaluate_every != 0:
                evaluable = False
        out_evaluable[e] = evaluable
        if evaluable:
            if scored[t]:
                greater = (_n_above(a_val, factor, st, True) - _n_above(o_val, factor, st, True)
                           + _n_above(d_val, factor, st, True))
                at_least = (_n_above(a_val, factor, st, False) - _n_above(o_val, factor, st, False)
                            + _n_above(d_val, factor, st, False))
                equal = at_least - greater
            else:  # every scored item is above; the batch's earlier new items tie
                greater = counters[_SCORED]
                equal = counters[_SEEN] - counters[_SCORED]
            out_rank[e] = (greater - h_greater) + 0.5 * (equal - h_equal - 1)
            out_ncand[e] = counters[_SEEN] - hist_len[u]
            counters[_EVALUATED] += 1
            if (counters[_EVALUATED] - 1) % coverage_every == 0:
                counters[_STAMP] += 1
                cur = counters[_STAMP]
                node = head[u]
                while node >= 0:
                    hmark[node_item[node]] = cur
                    node = node_prev[node]
                _cover(a_val, a_item, d_val, d_item, changed, hmark, cur, factor, k, covered, top, top_s,
                       ties)
        if not in_hist:
            node = counters[_NODES]
            node_item[node], node_prev[node] = t, head[u]
            head[u] = node
            hist_len[u] += 1
            counters[_NODES] += 1
        if not seen[t]:
            seen[t] = True
            counters[_SEEN] += 1


@numba.njit(cache=True, nogil=True)
def learn_counts(items, w, batch, counts, acc, touched, scored, changed, o_val, d_val, d_item, counters):
    """`DecayedCounts.learn` after a rebase: counts += the batch's per-item sums of `w` (summed in event
    order, as bincount does); returns the new O, D values and D items."""
    m = 0
    order_items = np.empty(items.shape[0], np.int64)
    for e in range(items.shape[0]):
        t = items[e]
        if touched[t] != batch:
            touched[t] = batch
            acc[t] = 0.0
            order_items[m] = t
            m += 1
        acc[t] += w[e]
    new_val = np.empty(m, np.float64)
    o_add = np.empty(m, np.float64)
    n_o = 0
    for q in range(m):
        t = order_items[q]
        old = counts[t]
        counts[t] = old + acc[t]
        new_val[q] = counts[t]
        if not scored[t]:
            scored[t] = True
            counters[_SCORED] += 1
            changed[t] = True
        elif not changed[t]:
            changed[t] = True
            o_add[n_o] = old  # its entry in A, to be taken out of A's counts
            n_o += 1
        # else its D entry is replaced (dropped below: it was touched in this batch)
    by_val = np.argsort(new_val)
    new_val = new_val[by_val]
    new_item = order_items[:m][by_val]
    out_val, out_item = _merge_dropping(d_val, d_item, touched, batch, new_val, new_item)
    o_new = np.sort(o_add[:n_o])
    o_out = np.empty(o_val.shape[0] + n_o, np.float64)
    p, q = 0, 0
    for r in range(o_out.shape[0]):
        if q >= n_o or (p < o_val.shape[0] and o_val[p] <= o_new[q]):
            o_out[r] = o_val[p]
            p += 1
        else:
            o_out[r] = o_new[q]
            q += 1
    return o_out, out_val, out_item


@numba.njit(cache=True, nogil=True, inline="always")
def _merge_dropping(a_val, a_item, mark, drop, b_val, b_item):
    """Sorted (a_val, a_item) without the entries whose item has mark == drop, merged with sorted
    (b_val, b_item) in one linear pass (ties: A's entry first)."""
    n_keep = 0
    for p in range(a_item.shape[0]):
        if mark[a_item[p]] != drop:
            n_keep += 1
    out_val = np.empty(n_keep + b_val.shape[0], np.float64)
    out_item = np.empty(n_keep + b_val.shape[0], np.int64)
    p, q = 0, 0
    for r in range(out_val.shape[0]):
        while p < a_item.shape[0] and mark[a_item[p]] == drop:
            p += 1
        if q >= b_val.shape[0] or (p < a_item.shape[0] and a_val[p] <= b_val[q]):
            out_val[r], out_item[r] = a_val[p], a_item[p]
            p += 1
        else:
            out_val[r], out_item[r] = b_val[q], b_item[q]
            q += 1
    return out_val, out_item


@numba.njit(cache=True, nogil=True)
def merge_changed(a_val, a_item, changed, d_val, d_item):
    """A without the changed items' stale entries, merged with D (one linear pass); clears `changed`."""
    out_val, out_item = _merge_dropping(a_val, a_item, changed, True, d_val, d_item)
    for q in range(d_item.shape[0]):
        changed[d_item[q]] = False
    return out_val, out_item


class DecayedPopularityEvaluator(PrequentialEvaluator):
    """Prequential metrics of `DecayedPopularity(half_life, unit="events")` replayed with
    `prequential_step` in the same micro-batches (see the module docstring): it is model and evaluator
    in one; `observe_and_learn` ranks a batch and learns it. Report, rolling means, series and kept
    ranks are `PrequentialEvaluator`'s. `max_changed` (default: about sqrt(256 items), at least 1024)
    bounds the items changed between two merges of the sorted counts."""

    def __init__(self, half_life: float = 20_000.0, max_changed: int | None = None, **kwargs: Any) -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        if kwargs.get("n_negatives") is not None or kwargs.get("max_users") is not None:
            raise ValueError("DecayedPopularityEvaluator ranks against all items and keeps every user")
        if max_changed is not None and max_changed < 1:
            raise ValueError(f"max_changed must be positive or None, got {max_changed}")
        self.half_life = float(half_life)
        self.max_changed = max_changed
        super().__init__(**kwargs)

    def reset(self) -> None:
        super().reset()
        self._counts = np.zeros(0, np.float64)  # stored counts: weight 1 at clock `_ref`
        self._ref = self._clock = 0.0
        self._acc = np.zeros(0, np.float64)
        self._touched = np.zeros(0, np.int64)  # batch number that last touched the item (+1)
        self._scored = np.zeros(0, np.bool_)  # learned in an earlier batch: in A or D
        self._changed = np.zeros(0, np.bool_)  # in D (and, if it was in A, in O) since the last merge
        self._seen_items = np.zeros(0, np.bool_)
        self._hmark = np.zeros(0, np.int64)
        self._covered = np.zeros(0, np.bool_)
        self._head = np.zeros(0, np.int64)  # each user's latest history node, -1 none
        self._hist_n = np.zeros(0, np.int64)
        self._node_item = np.zeros(0, np.int32)
        self._node_prev = np.zeros(0, np.int64)
        self._a_val, self._a_item = np.zeros(0, np.float64), np.zeros(0, np.int64)
        self._o_val = np.zeros(0, np.float64)
        self._d_val, self._d_item = np.zeros(0, np.float64), np.zeros(0, np.int64)
        self._counters = np.zeros(6, np.int64)
        self._batches = 0
        self.merges = 0
        self.rebases = 0

    def _item_codes(self, ids: np.ndarray) -> np.ndarray:
        """Item numbers in order of first appearance (the dense evaluator's slots for this model)."""
        codes = np.fromiter(map(self._item_slot.get, ids.tolist(), repeat(-1)), np.int64, len(ids))
        missing = np.flatnonzero(codes < 0)
        if len(missing):
            new = list(dict.fromkeys(ids[missing].tolist()))
            self._item_slot.update(zip(new, range(len(self._item_slot), len(self._item_slot) + len(new)),
                                       strict=True))
            codes[missing] = np.fromiter(map(self._item_slot.get, ids[missing].tolist()), np.int64,
                                         len(missing))
        return codes

    def _grow(self, n_items: int, n_users: int, n_nodes: int) -> None:
        for name, fill in (("_counts", 0.0), ("_acc", 0.0), ("_touched", 0), ("_scored", False),
                           ("_changed", False), ("_seen_items", False), ("_hmark", 0), ("_covered", False)):
            setattr(self, name, grow_rows(getattr(self, name), n_items, fill, minimum=64))
        self._head = grow_rows(self._head, n_users, -1, minimum=64)
        self._hist_n = grow_rows(self._hist_n, n_users, 0, minimum=64)
        self._node_item = grow_rows(self._node_item, n_nodes, 0, minimum=64)
        self._node_prev = grow_rows(self._node_prev, n_nodes, -1, minimum=64)

    def observe_and_learn(self, batch: Interactions) -> dict[str, np.ndarray]:
        """Rank the batch's evaluable events (scores from before the batch), then learn the batch.
        Returns per-evaluated-event arrays: position, rank, hit, n_candidates."""
        started, cpu = time.perf_counter(), time.process_time()
        n = len(batch)
        users = self._user_slots(batch.user)
        items = self._item_codes(batch.item)
        self._grow(len(self._item_slot), len(self._user_ids), int(self._counters[_NODES]) + n)
        finite = math.isfinite(self.half_life)
        factor = 2.0 ** ((self._ref - self._clock) / self.half_life) if finite else 1.0
        evaluable = np.zeros(n, np.bool_)
        rank = np.zeros(n, np.float64)
        ncand = np.zeros(n, np.int64)
        rank_events(users, items, factor, self._counts, self._scored, self._changed, self._seen_items,
                    self._hmark, self._covered, self._head, self._hist_n, self._node_item, self._node_prev,
                    self._a_val, self._a_item, self._o_val, self._d_val, self._d_item, self._counters,
                    self.k, self.coverage_every, self.evaluate_every, evaluable, rank, ncand)
        rows = np.flatnonzero(evaluable)
        result = {"position": self.events + rows, "rank": rank[rows], "hit": np.empty(0),
                  "n_candidates": ncand[rows]}
        if len(rows):
            self._record(result, batch.ts[rows])
        if n:
            self._learn(items)
        self.evaluable_seen = int(self._counters[_EVALUABLE])
        self._batch_done(batch, started, cpu)
        return result

    def _learn(self, items: np.ndarray) -> None:
        """`DecayedCounts.learn` on the events clock, the same float operations in the same order."""
        clock = self.events + np.arange(len(items), dtype=np.float64)
        if math.isfinite(self.half_life):
            top = float(clock.max())
            if (top - self._ref) / self.half_life > _MAX_EXPONENT:
                scale = 2.0 ** ((self._ref - top) / self.half_life)
                n_items = len(self._item_slot)
                for values in (self._counts[:n_items], self._a_val, self._o_val, self._d_val):
                    values *= scale  # monotone: the sorted arrays stay sorted, O stays equal to A's entries
                self._ref = top
                self.rebases += 1
            w = 1.0 * np.exp2((clock - self._ref) / self.half_life)
        else:
            w = np.ones(len(items))
        self._batches += 1
        self._o_val, self._d_val, self._d_item = learn_counts(
            items, w, self._batches, self._counts, self._acc, self._touched, self._scored, self._changed,
            self._o_val, self._d_val, self._d_item, self._counters)
        self._clock = max(self._clock, float(clock.max()))
        limit = self.max_changed or max(1024, int(math.sqrt(256.0 * self._counters[_SCORED])))
        if len(self._d_val) > limit:
            self._a_val, self._a_item = merge_changed(self._a_val, self._a_item, self._changed, self._d_val,
                                                      self._d_item)
            self._o_val = np.zeros(0, np.float64)
            self._d_val, self._d_item = np.zeros(0, np.float64), np.zeros(0, np.int64)
            self.merges += 1
