"""Prequential (test-then-train) evaluation of next-item ranking, the same live and in replay.

The protocol: events in time order, every interaction is a positive. Before the model learns event
(u, i): if i was seen in an earlier interaction and is not yet in u's history, rank i among all items
seen so far minus u's history; rank = items scoring strictly higher + half the other items scoring
equal (0-based). HR@K = rank < K, NDCG@K = 1/log2(rank + 2), MRR = mean 1/(rank + 1), AUC = share of
negatives (seen, not in history) scoring below i (ties half): exact over all of them by default, or
over `n_negatives` sampled ones. Coverage@K = distinct items in the top-K lists / items seen (the
top-K lists of every `coverage_every`-th evaluated event: a top-K selection costs more than a rank).
RMSE over rating events when the caller passes rating predictions made before learning.

Within a micro-batch evaluability and history are exact per event: a user's earlier event in the same
batch is already in that user's history, and an item first seen earlier in the batch is a candidate.
Seen items the model cannot score rank as -inf. The evaluator keeps its own item numbering and
per-user history bitmap keyed by external ids, so model columns may be reused after expiry: the
cached column of every item is checked against `model.item_ids` each batch (skipped while a model's
optional `item_index_version` attribute is unchanged). Its item numbers follow the model's columns
when it can, so the score matrix is used in place, without a permutation.

Cost: per evaluated event two comparisons of its score row with the target's score, a masked count
and the candidate mask (unpacked from the bit-packed history), in cache-sized chunks of rows; the
per-event Python work is two dict lookups (user and item ids).

>>> import numpy as np
>>> from learners.base import Interactions
>>> ev = PrequentialEvaluator(k=1)
>>> batch = Interactions.from_records([{"user_id": u, "item_id": i, "ts": 0.0}
...                                    for u, i in [("a", "x"), ("b", "y"), ("b", "x")]])
>>> scores = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 1.0]], np.float32)  # columns: x, y
>>> _ = ev.observe(batch, scores, np.array([0, 1]), model=None, item_ids=np.array(["x", "y"], dtype=object))
>>> ev.ranks().tolist(), ev.report()["hr@1"]  # only b's "x" is evaluable; "y" is b's history
([0.0], 1.0)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np

from learners.base import RATING, Interactions, ItemMeta, Recommender, get_hook, has_hook
from learners.rolling import RollingMean

_BITS = np.array([128, 64, 32, 16, 8, 4, 2, 1], np.uint8)


def _grow(array: np.ndarray, shape: tuple[int, ...], fill: Any = 0) -> np.ndarray:
    """`array` enlarged (doubling) to at least `shape`, kept content in the corner."""
    if all(s <= have for s, have in zip(shape, array.shape, strict=True)):
        return array
    pairs = zip(shape, array.shape, strict=True)
    new_shape = tuple(max(s, 2 * have) if s > have else have for s, have in pairs)
    grown = np.full(new_shape, fill, dtype=array.dtype)
    grown[tuple(slice(0, h) for h in array.shape)] = array
    return grown


def _reduce_rows(mask: np.ndarray) -> np.ndarray:
    """Per-row count of True (faster than count_nonzero(axis=1) on bool matrices)."""
    return np.add.reduce(mask.view(np.uint8), axis=1, dtype=np.int32)


class PrequentialEvaluator:
    """Rank metrics of a stream of micro-batches (see the module docstring for the protocol).

    Parameters
    ----------
    k
        Cut-off of HR@K, NDCG@K and coverage@K.
    n_negatives
        None: AUC against every candidate (exact, from the rank); else that many sampled negatives.
    window
        Evaluated events in the rolling means.
    coverage_every
        Top-K lists are collected for every this-many-th evaluated event.
    keep_events
        Keep per-evaluated-event ranks and positions (replay reports, drift experiments); a live
        worker passes False and keeps only totals and rolling windows.
    evaluate_every
        Rank only every this-many-th evaluable event (for peers too slow to rank every event); the
        others still update the seen items and histories.
    max_cells
        Rows x items ranked at once: chunks that stay in the CPU cache (and bound the masks' memory).
    series_every, series_max
        A point of the rolling series is taken after the batch that completes every `series_every`
        events (at most `series_max` points are kept, the latest).
    max_users
        Users whose history is kept (a live worker's bound: the history costs items/8 bytes per user);
        beyond it the least recently seen user is forgotten and counts as new when back.
    """

    def __init__(
        self,
        k: int = 10,
        n_negatives: int | None = None,
        window: int = 2000,
        coverage_every: int = 32,
        seed: int = 0,
        keep_events: bool = True,
        evaluate_every: int = 1,
        max_cells: int = 1 << 18,
        max_users: int | None = None,
        series_every: int = 500,
        series_max: int = 10_000,
    ) -> None:
        if min(k, window, coverage_every, evaluate_every, max_cells) < 1:
            raise ValueError("k, window, coverage_every, evaluate_every and max_cells must be positive")
        if max_users is not None and max_users < 1:
            raise ValueError(f"max_users must be positive or None, got {max_users}")
        if n_negatives is not None and n_negatives < 1:
            raise ValueError(f"n_negatives must be positive or None, got {n_negatives}")
        self.k = k
        self.n_negatives = n_negatives
        self.window = window
        self.coverage_every = coverage_every
        self.seed = seed
        self.keep_events = keep_events
        self.evaluate_every = evaluate_every
        self.max_cells = max_cells
        self.max_users = max_users
        self.series_every = series_every
        self.series_max = series_max
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._user_slot: dict[str, int] = {}
        self._user_ids: list[str] = []  # external id of each user slot
        self._user_last = np.zeros(64)  # stream position a user was last seen at (for max_users)
        self._free_users: list[int] = []
        self._item_slot: dict[str, int] = {}
        self._slot_item = np.full(64, None, dtype=object)  # external id of each of our item slots
        self._seen = np.zeros(64, bool)  # slot holds an item seen in an earlier batch
        self._holds = np.zeros(64, bool)  # slot holds an item (seen in an earlier batch or this one)
        self._model_col = np.full(64, -1, np.int64)  # cached model column of each slot (verified)
        self._n_slots = 0
        self._history = np.zeros((64, 8), np.uint8)  # users x slots, bit-packed
        self._hist_len = np.zeros(64, np.int64)  # distinct items in each user's history
        self._covered = np.zeros(64, bool)
        self.events = 0
        self.evaluated = 0
        self.evaluable_seen = 0  # evaluable events so far, ranked or skipped by evaluate_every
        self.seconds = 0.0  # wall time spent in evaluable + observe (the evaluator's own cost)
        self.cpu_seconds = 0.0  # the same in process CPU time (less inflated on a loaded machine)
        self._sums = dict.fromkeys(("hit", "ndcg", "rr", "auc", "sq_err"), 0.0)
        self._n_auc = 0
        self._n_rated = 0
        self._rolling = {name: RollingMean(self.window) for name in ("hit", "ndcg", "rr", "auc", "sq_err")}
        self._kept: dict[str, list[np.ndarray]] = {"position": [], "rank": [], "n_candidates": [], "ts": []}
        self._series: deque[dict[str, float]] = deque(maxlen=self.series_max)
        self._last_ts = float("nan")
        self._model_version: Any = None
        self._pending: tuple[Interactions, dict[str, np.ndarray]] | None = None

    # ----------------------------------------------------------------------------- state
    @property
    def n_items(self) -> int:
        """Items seen in interactions so far."""
        return len(self._item_slot)

    @property
    def n_users(self) -> int:
        return len(self._user_slot)

    def _user_slots(self, users: np.ndarray) -> np.ndarray:
        # map over a list: several times faster than over the object array
        slots = np.fromiter(map(self._user_slot.get, users.tolist(), repeat(-1)), np.int64, len(users))
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            new_users = list(dict.fromkeys(users[missing].tolist()))
            if self.max_users is not None:
                self._forget_users(len(self._user_slot) + len(new_users) - self.max_users, slots[slots >= 0])
            for x in new_users:
                if self._free_users:
                    slot = self._free_users.pop()
                    self._user_ids[slot] = x
                else:
                    slot = len(self._user_ids)
                    self._user_ids.append(x)
                self._user_slot[x] = slot
            slots[missing] = [self._user_slot[x] for x in users[missing].tolist()]
        self._user_last = _grow(self._user_last, (len(self._user_ids),), 0.0)
        self._user_last[slots] = self.events + len(users)
        return slots

    def _forget_users(self, excess: int, keep: np.ndarray) -> None:
        """Drop the `excess` least recently seen users (not those of the current batch)."""
        if excess <= 0:
            return
        last = self._user_last[: len(self._user_ids)].copy()
        live = np.zeros(len(self._user_ids), bool)
        live[list(self._user_slot.values())] = True
        last[~live] = np.inf
        last[keep] = np.inf
        oldest = np.argsort(last, kind="stable")[:excess]
        oldest = oldest[np.isfinite(last[oldest])]
        for slot in oldest.tolist():
            del self._user_slot[self._user_ids[slot]]
            self._user_ids[slot] = ""
            self._free_users.append(slot)
        rows = oldest[oldest < len(self._history)]
        self._history[rows] = 0
        self._hist_len[oldest[oldest < len(self._hist_len)]] = 0

    def _plan(self, batch: Interactions) -> dict[str, np.ndarray]:
        """Per-event facts before the batch changes any state: user, known item slot (-1 new), first
        position of a new item, which events are evaluable and which add to a user's history."""
        n = len(batch)
        slot = np.fromiter(map(self._item_slot.get, batch.item, repeat(-1)), np.int64, n)
        users = self._user_slots(batch.user)  # user slots are harmless to add early
        new = slot < 0
        position = np.arange(n)
        first_pos = np.full(n, n, np.int64)  # a new item is a candidate after its first position
        if new.any():
            new_idx = np.flatnonzero(new)
            lookup: dict[str, int] = {}
            for p, x in zip(new_idx.tolist(), batch.item[new_idx].tolist(), strict=True):
                lookup.setdefault(x, p)
            first_pos[new_idx] = [lookup[x] for x in batch.item[new_idx].tolist()]
        # in the history bitmap before the batch
        in_history = np.zeros(n, bool)
        known = np.flatnonzero(~new & (users < self._history.shape[0]))
        if len(known):
            s = slot[known]
            inside = s < self._history.shape[1] * 8
            k2, s2 = known[inside], s[inside]
            in_history[k2] = (self._history[users[k2], s2 >> 3] & _BITS[s2 & 7]) != 0
        # repeats of a (user, item) pair inside the batch: new items are told apart by first position
        width = len(self._slot_item) + n + 1
        key = users * width + np.where(new, len(self._slot_item) + first_pos, slot)
        _, first_of_pair = np.unique(key, return_index=True)
        repeated = np.ones(n, bool)
        repeated[first_of_pair] = False
        evaluable = (~new | (first_pos < position)) & ~in_history & ~repeated
        n_evaluable = int(evaluable.sum())
        if self.evaluate_every > 1:
            rows = np.flatnonzero(evaluable)
            evaluable[rows[(self.evaluable_seen + np.arange(len(rows))) % self.evaluate_every != 0]] = False
        return {
            "user": users, "slot": slot, "new": new, "first_pos": first_pos,
            "new_firsts": np.flatnonzero(new & (first_pos == position)),
            "evaluable": evaluable, "n_evaluable": np.int64(n_evaluable),
            "adds": ~repeated & ~in_history,  # the event puts a new item into its user's history
        }

    def evaluable(self, batch: Interactions) -> np.ndarray:
        """Which events of `batch` will be ranked (call before `observe`, e.g. to skip scoring)."""
        started, cpu = time.perf_counter(), time.process_time()
        plan = self._plan(batch)
        self._pending = (batch, plan)
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        return plan["evaluable"].copy()

    def _assign_new_slots(self, batch: Interactions, plan: dict[str, np.ndarray], model: Recommender | None,
                          item_ids: np.ndarray | None, item_cols: np.ndarray | None) -> None:
        firsts = plan["new_firsts"]
        if not len(firsts):
            return
        ids = batch.item[firsts]
        wanted = self._model_cols(ids, model, item_ids, item_cols)
        top_col = int(item_cols.max()) + 1 if item_cols is not None and len(item_cols) else 0
        size = max(int(wanted.max()) + 1, top_col, self._n_slots) + len(ids)
        self._slot_item = _grow(self._slot_item, (size,), None)
        taken = self._slot_item != None  # noqa: E711 (elementwise)
        top = max(self._n_slots, top_col)
        slots = np.empty(len(ids), np.int64)
        for j, col in enumerate(wanted.tolist()):
            # take the model's column number when it is free here, so scores need no permutation;
            # otherwise the next number past the model's columns (likely the one it will give)
            if col >= 0 and not taken[col]:
                slots[j] = col
            else:
                while taken[top]:
                    top += 1
                slots[j] = top
            taken[slots[j]] = True
        self._slot_item[slots] = ids
        self._item_slot.update(zip(ids.tolist(), slots.tolist(), strict=True))
        self._n_slots = max(self._n_slots, int(slots.max()) + 1)
        for name, fill in (("_seen", False), ("_holds", False), ("_covered", False), ("_model_col", -1)):
            setattr(self, name, _grow(getattr(self, name), (self._n_slots,), fill))
        self._holds[slots] = True
        self._model_col[slots] = wanted
        new_idx = np.flatnonzero(plan["new"])
        slot_at_first = np.zeros(len(batch), np.int64)
        slot_at_first[firsts] = slots
        plan["slot"][new_idx] = slot_at_first[plan["first_pos"][new_idx]]

    @staticmethod
    def _model_cols(ids: np.ndarray, model: Recommender | None, item_ids: np.ndarray | None,
                    item_cols: np.ndarray | None) -> np.ndarray:
        if model is not None:
            return np.asarray(model.item_cols(np.asarray(ids, dtype=object)), np.int64)
        if item_ids is None or item_cols is None:
            return np.full(len(ids), -1, np.int64)
        lookup = dict(zip(np.asarray(item_ids).tolist(), np.asarray(item_cols).tolist(), strict=True))
        return np.fromiter((lookup.get(x, -1) for x in ids.tolist()), np.int64, len(ids))

    def _refresh_model_cols(self, model: Recommender | None, item_ids: np.ndarray | None,
                            item_cols: np.ndarray) -> None:
        """Check the cached model column of every slot still holds our item (columns may be reused
        after expiry) and look up the ones that do not or were unknown."""
        # a model that numbers its item index versions (bumped whenever a column changes hands)
        # spares the check while nothing changed and no slot waits for its column
        version = get_hook(model, "item_index_version") if model is not None else None
        if version is not None and version == self._model_version and bool(
                np.all(self._model_col[: self._n_slots][self._holds[: self._n_slots]] >= 0)):
            return
        self._model_version = version
        slots = np.flatnonzero(self._holds[: self._n_slots])
        cols = self._model_col[slots]
        known = cols >= 0
        stale = ~known
        if known.any():
            if model is not None:
                try:
                    current = np.asarray(model.item_ids(cols[known]), dtype=object)
                except (IndexError, KeyError):
                    current = np.full(int(known.sum()), None, dtype=object)
            else:
                lookup = dict(zip(np.asarray(item_cols).tolist(), np.asarray(item_ids).tolist(), strict=True))
                current = np.array([lookup.get(c) for c in cols[known].tolist()], dtype=object)
            stale[np.flatnonzero(known)] = current != self._slot_item[slots[known]]
        if stale.any():
            redo = slots[stale]
            self._model_col[redo] = self._model_cols(self._slot_item[redo], model, item_ids, item_cols)

    # ----------------------------------------------------------------------------- scoring
    def _score_layout(self, item_cols: np.ndarray, n_cols: int) -> np.ndarray | None:
        """None when our slot numbers equal the score columns (no permutation needed, slots past the
        last score column have no score); else the score column of every slot (n_cols: no score)."""
        n_slots = self._n_slots
        slots = np.arange(n_slots)
        model_cols = self._model_col[:n_slots]
        identity = n_cols == 0 or (item_cols[0] == 0 and item_cols[-1] == n_cols - 1
                                   and np.array_equal(item_cols, np.arange(n_cols)))
        same = (model_cols == slots) | ~self._holds[:n_slots] | ((model_cols < 0) & (slots >= n_cols))
        if identity and bool(np.all(same)):
            return None
        position = np.full(max(int(item_cols.max(initial=-1)) + 1, 1), n_cols, np.int64)
        position[item_cols] = np.arange(n_cols)
        inside = (model_cols >= 0) & (model_cols < len(position))
        take = np.full(n_slots, n_cols, np.int64)
        take[inside] = position[model_cols[inside]]
        return take

    def _user_groups(self, plan: dict[str, np.ndarray]) -> None:
        """Per event, from the same user's earlier events in the batch: the history size before the
        event, and the (later position, earlier slot) pairs that make the in-batch history."""
        user, adds = plan["user"], plan["adds"]
        n = len(user)
        order = np.argsort(user, kind="stable")  # groups by user, batch order inside a group
        sorted_users = user[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_users[1:] != sorted_users[:-1])))
        group_start = np.repeat(starts, np.diff(np.append(starts, n)))
        adds_sorted = adds[order]
        running = np.cumsum(adds_sorted)
        added = running - adds_sorted  # exclusive running count of additions
        before = added - added[group_start] if n else added  # the same user's additions earlier
        self._hist_len = _grow(self._hist_len, (len(self._user_ids),), 0)
        hist_len = np.empty(n, np.int64)
        hist_len[order] = self._hist_len[user[order]] + before
        plan["hist_len"] = hist_len
        # pairs: for each evaluable event, the earlier same-user events that added an item
        counts = np.where(plan["evaluable"][order], before, 0)
        total = int(counts.sum())
        if not total:
            plan["pair_pos"] = plan["pair_slot"] = np.empty(0, np.int64)
            return
        adding = order[adds_sorted]  # the additions, grouped by user, in batch order
        later = np.repeat(order, counts)
        offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        earlier = adding[np.repeat(added[group_start], counts) + offset]
        by_pos = np.argsort(later, kind="stable")
        plan["pair_pos"], plan["pair_slot"] = later[by_pos], plan["slot"][earlier][by_pos]

    def _candidates(self, plan: dict[str, np.ndarray], pos: np.ndarray, seen: np.ndarray) -> np.ndarray:
        """Bool matrix (positions x slots): seen before the event and not in the user's history."""
        packed = seen[None, :] & ~self._history[plan["user"][pos], : len(seen)]
        cand = np.unpackbits(packed, axis=1, count=self._n_slots).view(bool)
        new_firsts = plan["new_firsts"]
        if len(new_firsts):  # items first seen in this batch: candidates after their first position
            cand[:, plan["slot"][new_firsts]] = new_firsts[None, :] < pos[:, None]
        pair_pos = plan["pair_pos"]
        a, b = np.searchsorted(pair_pos, [pos[0], pos[-1] + 1])
        if b > a:
            row_of = np.full(pos[-1] - pos[0] + 1, -1, np.int64)
            row_of[pos - pos[0]] = np.arange(len(pos))
            rows = row_of[pair_pos[a:b] - pos[0]]
            ok = rows >= 0
            cand[rows[ok], plan["pair_slot"][a:b][ok]] = False
        return cand

    def observe(
        self,
        batch: Interactions,
        scores: np.ndarray | None = None,
        item_cols: np.ndarray | None = None,
        model: Recommender | None = None,
        predictions: np.ndarray | None = None,
        item_ids: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Rank the batch's evaluable events with `scores` (from `score_many` on the state before the
        batch) and update the seen items and histories. `model` maps columns to ids (`item_ids`,
        `item_cols`); without a model pass `item_ids` (external id of each score column).
        Returns per-evaluated-event arrays: position, rank, hit, n_candidates."""
        started, cpu = time.perf_counter(), time.process_time()
        n = len(batch)
        if self._pending is not None and self._pending[0] is batch:
            plan = self._pending[1]
        else:
            plan = self._plan(batch)
        self._pending = None
        if scores is not None:
            if item_cols is None:
                raise ValueError("observe needs item_cols with scores")
            scores = np.asarray(scores)
            item_cols = np.asarray(item_cols, np.int64)
            if scores.ndim != 2 or scores.shape != (n, len(item_cols)):
                raise ValueError(f"scores must have shape (len(batch), len(item_cols)) = "
                                 f"({n}, {len(item_cols)}), got {scores.shape}")
            if model is None and item_ids is None:
                raise ValueError("observe needs the model (or item_ids) to map score columns to items")
        self._assign_new_slots(batch, plan, model, item_ids, item_cols)
        if n:
            self._history = _grow(self._history, (len(self._user_ids), (self._n_slots + 7) // 8), 0)
        self._user_groups(plan)
        rows = np.flatnonzero(plan["evaluable"])
        result = {"position": self.events + rows, "rank": np.empty(0), "hit": np.empty(0),
                  "n_candidates": np.empty(0, np.int64)}
        if len(rows):
            if scores is None:
                raise ValueError("this batch has evaluable events: observe needs their scores")
            self._refresh_model_cols(model, item_ids, item_cols)
            layout = self._score_layout(item_cols, scores.shape[1])
            seen = np.packbits(self._seen[: self._n_slots])
            chunk = max(16, self.max_cells // max(self._n_slots, 1))
            ranks = [  # row chunks that stay in cache
                self._rank(plan, rows[lo: lo + chunk], scores, layout, seen, self.evaluated + lo)
                for lo in range(0, len(rows), chunk)
            ]
            result["rank"] = np.concatenate(ranks)
            # candidates = items seen before the event minus the user's history (all seen items)
            firsts = np.zeros(n, np.int64)
            firsts[plan["new_firsts"]] = 1
            seen_before = self.n_items - len(plan["new_firsts"]) + np.cumsum(firsts) - firsts
            result["n_candidates"] = (seen_before - plan["hist_len"])[rows]
            self._record(result, batch.ts[rows])
        if predictions is not None:
            predictions = np.asarray(predictions, np.float64)
            rated = (batch.kind == RATING) & np.isfinite(predictions)  # no prediction: not counted
            if rated.any():
                err = (predictions[rated] - batch.value[rated]) ** 2
                self._sums["sq_err"] += float(err.sum())
                self._n_rated += int(rated.sum())
                self._rolling["sq_err"].extend(err)
        self._learn(plan)
        self.evaluable_seen += int(plan["n_evaluable"])
        self._batch_done(batch, started, cpu)
        return result

    def _batch_done(self, batch: Interactions, started: float, cpu: float) -> None:
        """Count a batch observed from `started` (perf_counter) / `cpu` (process_time): events, time,
        the last event time, and a series point when one is due (every evaluator's `observe` ends here)."""
        n = len(batch)
        self.events += n
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        if n:
            self._last_ts = float(batch.ts[-1])
        if self.events // self.series_every > (self.events - n) // self.series_every:
            self._snapshot()

    def _rank(self, plan: dict[str, np.ndarray], ev_pos: np.ndarray, scores: np.ndarray,
              layout: np.ndarray | None, seen_packed: np.ndarray, first_evaluated: int) -> np.ndarray:
        """Ranks of the evaluable positions `ev_pos` (one cache-sized chunk)."""
        n_slots, n_cols = self._n_slots, scores.shape[1]
        span = ev_pos[-1] - ev_pos[0] + 1
        if 3 * span <= 4 * len(ev_pos):  # mostly evaluable: a slice beats a gather; extra rows ignored
            pos = np.arange(ev_pos[0], ev_pos[-1] + 1)
            block, pick = scores[ev_pos[0]: ev_pos[-1] + 1], ev_pos - ev_pos[0]
        else:
            pos, block, pick = ev_pos, scores[ev_pos], None
        cand = self._candidates(plan, pos, seen_packed)
        target_slot = plan["slot"][pos]
        if layout is None:  # slots are score columns; slots past the last column have no score
            width = min(n_slots, n_cols)
            matrix = block[:, :width]
            tail = np.add.reduce(cand[:, width:].view(np.uint8), axis=1, dtype=np.int32) \
                if n_slots > width else 0
            cand = cand[:, :width]
        else:
            padded = np.concatenate([block, np.full((len(pos), 1), -np.inf, block.dtype)], axis=1)
            matrix, width, tail = np.take(padded, layout, axis=1), n_slots, 0
        inside = target_slot < width
        target = np.full((len(pos), 1), -np.inf, matrix.dtype)
        target[inside, 0] = matrix[np.flatnonzero(inside), target_slot[inside]]
        target[np.isnan(target)] = -np.inf  # a NaN score ranks last (other NaNs compare below anything)
        # one count gives both: sum over candidates of [s > t] + [s >= t] = 2 * higher + equal (incl. self)
        both = np.greater(matrix, target).view(np.uint8)
        both += np.greater_equal(matrix, target).view(np.uint8)
        both *= cand.view(np.uint8)
        twice = np.add.reduce(both, axis=1, dtype=np.int32)
        twice += np.where(target[:, 0] == -np.inf, tail, 0)  # scoreless slots tie with a scoreless target
        rank = 0.5 * (twice - 1)
        rows = np.arange(len(pos)) if pick is None else pick
        sample = rows[(first_evaluated + np.arange(len(ev_pos))) % self.coverage_every == 0]
        if len(sample):
            self._collect_top(matrix[sample], cand[sample])
        if self.n_negatives is not None:
            auc = self._sampled_auc(matrix[rows], cand[rows], target[rows], target_slot[rows])
            self._sums["auc"] += float(np.nansum(auc))
            self._n_auc += int(np.isfinite(auc).sum())
            self._rolling["auc"].extend(auc[np.isfinite(auc)])
        if pick is not None:
            rank = rank[pick]
        return rank

    def _collect_top(self, matrix: np.ndarray, cand: np.ndarray) -> None:
        """Mark the items of these rows' top-K lists (candidates only) as covered."""
        sub = np.where(cand, matrix, -np.inf)
        n = sub.shape[1]
        k = min(self.k, n)
        # a partition (not an argpartition: several times faster) gives each row's K-th best score;
        # all above it are in the list, and ties at it fill the remaining places in column order
        kth = np.partition(sub, n - k, axis=1)[:, n - k: n - k + 1]
        above = sub > kth
        at = (sub == kth) & cand
        need = k - np.add.reduce(above.view(np.uint8), axis=1, dtype=np.int32)
        top = above | (at & (np.cumsum(at, axis=1, dtype=np.int32) <= need[:, None]))
        self._covered[: n] |= np.logical_or.reduce(top & cand, axis=0)

    def _sampled_auc(self, matrix: np.ndarray, cand: np.ndarray, target: np.ndarray,
                     target_slot: np.ndarray) -> np.ndarray:
        """Uniform draws over the slots, kept when they are candidates other than the target."""
        cols = self._rng.integers(0, matrix.shape[1], size=(len(matrix), self.n_negatives))
        rows = np.arange(len(matrix))[:, None]
        ok = cand[rows, cols] & (cols != target_slot[:, None])
        s = matrix[rows, cols]
        wins = ((s < target) + 0.5 * (s == target)) * ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return wins.sum(1) / ok.sum(1)

    def _record(self, result: dict[str, np.ndarray], ts: np.ndarray) -> None:
        rank, n_cand = result["rank"], result["n_candidates"]
        hit = (rank < self.k).astype(np.float64)
        ndcg = hit / np.log2(rank + 2.0)
        rr = 1.0 / (rank + 1.0)
        result["hit"] = hit
        for name, values in (("hit", hit), ("ndcg", ndcg), ("rr", rr)):
            self._sums[name] += float(values.sum())
            self._rolling[name].extend(values)
        if self.n_negatives is None:
            ok = n_cand > 1
            auc = (n_cand[ok] - 1 - rank[ok]) / (n_cand[ok] - 1)
            self._sums["auc"] += float(auc.sum())
            self._n_auc += int(ok.sum())
            self._rolling["auc"].extend(auc)
        self.evaluated += len(rank)
        if self.keep_events:
            for name, values in (("position", result["position"]), ("rank", rank), ("n_candidates", n_cand),
                                 ("ts", ts)):
                self._kept[name].append(values)

    def _learn(self, plan: dict[str, np.ndarray]) -> None:
        slots, users, adds = plan["slot"], plan["user"], plan["adds"]
        if not len(slots):
            return
        self._seen[slots] = True
        np.bitwise_or.at(self._history, (users[adds], slots[adds] >> 3), _BITS[slots[adds] & 7])
        np.add.at(self._hist_len, users[adds], 1)  # O(batch), not O(users) like a bincount

    def _snapshot(self) -> None:
        point = {"events": float(self.events), "evaluated": float(self.evaluated), "ts": self._last_ts}
        for name in ("hit", "ndcg", "rr", "auc"):
            point[name] = self._rolling[name].get()
        if self._n_rated:
            point["rmse"] = float(np.sqrt(self._rolling["sq_err"].get()))
        self._series.append(point)

    # ----------------------------------------------------------------------------- results
    def ranks(self) -> np.ndarray:
        """Rank of every evaluated event so far (needs keep_events)."""
        return np.concatenate(self._kept["rank"]) if self._kept["rank"] else np.empty(0)

    def kept(self) -> dict[str, np.ndarray]:
        """Per evaluated event: stream position, rank, number of candidates, ts (needs keep_events)."""
        return {name: np.concatenate(v) if v else np.empty(0) for name, v in self._kept.items()}

    def rolling(self) -> dict[str, float]:
        """Current rolling means over the last `window` evaluated events."""
        names = {"hit": f"hr@{self.k}", "ndcg": f"ndcg@{self.k}", "rr": "mrr", "auc": "auc"}
        out = {label: self._rolling[name].get() for name, label in names.items()}
        if self._n_rated:
            out["rmse"] = float(np.sqrt(self._rolling["sq_err"].get()))
        return out

    def series(self) -> list[dict[str, float]]:
        """Points every `series_every` events (and now): counts so far and the rolling means then."""
        if self.events and (not self._series or self._series[-1]["events"] != self.events):
            self._snapshot()
        return list(self._series)

    def report(self) -> dict[str, Any]:
        """Totals over the whole stream so far."""
        n = max(self.evaluated, 1)
        out: dict[str, Any] = {
            "events": self.events,
            "evaluated": self.evaluated,
            f"hr@{self.k}": self._sums["hit"] / n if self.evaluated else float("nan"),
            f"ndcg@{self.k}": self._sums["ndcg"] / n if self.evaluated else float("nan"),
            "mrr": self._sums["rr"] / n if self.evaluated else float("nan"),
            "auc": self._sums["auc"] / self._n_auc if self._n_auc else float("nan"),
            f"coverage@{self.k}": float(self._covered.sum()) / max(self.n_items, 1),
            "items_seen": self.n_items,
            "users_seen": self.n_users,
            "evaluator_us_per_event": 1e6 * self.seconds / max(self.events, 1),
            "evaluator_cpu_us_per_event": 1e6 * self.cpu_seconds / max(self.events, 1),
        }
        if self._n_rated:
            out["rmse"] = float(np.sqrt(self._sums["sq_err"] / self._n_rated))
        return out


def add_due_items(model: Recommender, items: Sequence[ItemMeta], until_ts: float, start: int = 0) -> int:
    """Announce catalog items with `ts <= until_ts` (items sorted by ts) from index `start`; returns the
    next index. Metadata is catalog, not feedback, so announcing before scoring leaks nothing."""
    stop = start
    while stop < len(items) and items[stop].ts <= until_ts:
        stop += 1
    if stop > start:
        model.add_items(list(items[start:stop]))
    return stop


def evaluator_for(model: Recommender, **kwargs: Any) -> PrequentialEvaluator:
    """The evaluator of a model, as replay and the live worker pick it: candidate-scoring models
    (`score_then_learn`) get the sublinear `CandidateEvaluator`."""
    if has_hook(model, "score_then_learn"):
        from learners.candidate_eval import CandidateEvaluator

        return CandidateEvaluator(**kwargs)
    return PrequentialEvaluator(**kwargs)


def prequential_step(model: Recommender, evaluator: PrequentialEvaluator, batch: Interactions,
                     monitor: Any | None = None) -> dict[str, np.ndarray]:
    """Test then train on one micro-batch: score (state before the batch) -> observe -> learn.

    Replay and the live worker both call this. `monitor` (e.g. `learners.drift.DriftMonitor`) gets the
    batch's hits after evaluation and may call `model.on_drift()` before the model learns.

    A candidate-scoring model (`score_then_learn`, e.g. `learners.sparse.SparseRecommender`) with a
    `learners.candidate_eval.CandidateEvaluator` tests and trains event by event in one pass; the
    monitor then reacts after the batch."""
    if has_hook(model, "score_then_learn") and hasattr(evaluator, "observe_candidates"):
        predictions = None
        if bool((batch.kind == RATING).any()):
            predictions = model.predict_many(batch)
        cands = model.score_then_learn(batch)
        result = evaluator.observe_candidates(batch, cands, model, predictions=predictions)
        if monitor is not None and len(result["rank"]):
            monitor.update(result["hit"], model, result["position"])
        return result
    evaluable = evaluator.evaluable(batch)
    scores = cols = None
    if evaluable.any():
        scores, cols = model.score_many(batch)
    predictions = None
    if has_hook(model, "predict_many") and bool((batch.kind == RATING).any()):
        predictions = model.predict_many(batch)
    result = evaluator.observe(batch, scores, cols, model, predictions=predictions)
    if monitor is not None and len(result["rank"]):
        monitor.update(result["hit"], model, result["position"])
    model.learn_many(batch)
    return result
