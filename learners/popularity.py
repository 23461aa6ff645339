"""Most-popular baselines: all-time counts and exponentially decayed ("trending") counts.

Both are complete `Recommender`s (the live worker starts with `DecayedPopularity`) and their counting
core, `DecayedCounts`, is a feature source of `OnlineRecommender` (built in, or as an extra
`learners.base.Source`: `PopularitySource`).

>>> from learners.base import Interactions
>>> model = DecayedPopularity(half_life=2.0)
>>> model.learn_many(Interactions.from_records(
...     [{"user_id": "u", "item_id": i, "ts": t} for t, i in enumerate(["a", "a", "a", "b", "b"])]))
>>> [r.item_id for r in model.recommend(["u"], k=2)[0]]  # "b" is more recent
['b', 'a']
>>> [r.item_id for r in Popularity().recommend(["u"])[0]]  # nothing learned yet
[]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from learners.base import BatchContext, Interactions, ItemMeta, Recommendation, State
from learners.ids import IdIndex, grow_rows

# Counts are stored multiplied by 2**((t - ref) / half_life); rebase before float64 overflows.
_MAX_EXPONENT = 200.0


class DecayedCounts:
    """Per-column counts where an event's weight halves every `half_life` clock units.

    The clock is the event position in the stream (`unit="events"`) or event time (`"seconds"`).
    `half_life=inf` gives plain counts."""

    def __init__(self, half_life: float = math.inf, unit: Literal["events", "seconds"] = "events") -> None:
        if not half_life > 0:
            raise ValueError(f"half_life must be positive, got {half_life}")
        if unit not in ("events", "seconds"):
            raise ValueError(f"unit must be 'events' or 'seconds', got {unit!r}")
        self.half_life = float(half_life)
        self.unit = unit
        self.counts = np.zeros(16)
        self.ref = 0.0  # clock value at which stored counts have weight 1
        self.clock = 0.0  # latest clock value seen
        self.n_events = 0

    def event_clock(self, ts: np.ndarray) -> np.ndarray:
        """Clock value of each event of a batch (not yet learned)."""
        if self.unit == "seconds":
            return np.asarray(ts, dtype=np.float64)
        return self.n_events + np.arange(len(ts), dtype=np.float64)

    def learn(self, cols: np.ndarray, ts: np.ndarray, weight: np.ndarray | float = 1.0) -> None:
        if not len(cols):
            return
        self.counts = grow_rows(self.counts, int(cols.max()) + 1)
        clock = self.event_clock(ts)
        if math.isinf(self.half_life):
            w = np.broadcast_to(np.asarray(weight, dtype=np.float64), cols.shape)
        else:
            top = float(clock.max())
            if (top - self.ref) / self.half_life > _MAX_EXPONENT:
                self.counts *= 2.0 ** ((self.ref - top) / self.half_life)
                self.ref = top
            w = weight * np.exp2((clock - self.ref) / self.half_life)
        self.counts += np.bincount(cols, weights=w, minlength=len(self.counts))[: len(self.counts)]
        self.clock = max(self.clock, float(clock.max()))
        self.n_events += len(cols)

    def values(self, n_cols: int) -> np.ndarray:
        """Decayed counts at the latest clock for columns [0, n_cols) (float64)."""
        self.counts = grow_rows(self.counts, n_cols)
        if math.isinf(self.half_life):
            return self.counts[:n_cols]
        return self.counts[:n_cols] * 2.0 ** ((self.ref - self.clock) / self.half_life)

    def reset(self, cols: np.ndarray) -> None:
        self.counts[cols[cols < len(self.counts)]] = 0.0

    def state(self, n_cols: int) -> tuple[np.ndarray, dict[str, float]]:
        return self.values(n_cols).copy(), {"clock": self.clock, "n_events": self.n_events}

    def load(self, counts: np.ndarray, meta: dict[str, float]) -> None:
        self.counts = np.asarray(counts, dtype=np.float64).copy()
        self.clock = self.ref = float(meta["clock"])
        self.n_events = int(meta["n_events"])


class DecayedPopularity:
    """Recommends the items with the most interactions, older ones counting less (`half_life`).

    Parameters
    ----------
    half_life
        Clock units after which an interaction counts half (`math.inf`: never decays).
    unit
        "events" (position in the stream) or "seconds" (event time).
    max_items
        Capacity of the item index (least recently seen items are evicted beyond it).
    """

    name = "popularity"

    def __init__(
        self,
        half_life: float = 20_000.0,
        unit: Literal["events", "seconds"] = "events",
        max_items: int | None = None,
    ) -> None:
        self.half_life = half_life
        self.unit = unit
        self.max_items = max_items
        self._items = IdIndex(capacity=max_items)
        self._item_index_loads = 0  # loaded states (each brings a new item index)
        self._counts = DecayedCounts(half_life, unit)
        self._interactions = np.zeros(16, dtype=np.int64)

    def learn_many(self, batch: Interactions) -> None:
        cols = self._items.cols(batch.item)
        freed = self._items.pop_freed()
        self._counts.reset(freed)
        self._interactions = grow_rows(self._interactions, self._items.n_cols)
        self._interactions[freed] = 0
        self._counts.learn(cols, batch.ts)
        np.add.at(self._interactions, cols, 1)

    def _scores(self) -> tuple[np.ndarray, np.ndarray]:
        cols = self._items.live_cols()
        return self._counts.values(self._items.n_cols)[cols].astype(np.float32), cols

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Every event gets the same scores: popularity does not depend on the user."""
        row, cols = self._scores()
        return np.repeat(row[None, :], len(batch), axis=0), cols

    def recommend(self, user_ids: Sequence[str], k: int = 10) -> list[list[Recommendation]]:
        row, cols = self._scores()
        top = np.argsort(-row, kind="stable")[:k]
        ids = self._items.ids(cols[top])
        ranked = [Recommendation(str(i), float(s), self.name) for i, s in zip(ids, row[top], strict=True)]
        return [list(ranked) for _ in user_ids]

    def add_items(self, items: Sequence[ItemMeta]) -> None:
        """Make announced items known (they rank last until they get interactions)."""
        if items:
            self._items.cols(np.asarray([m.item_id for m in items], dtype=object))
            freed = self._items.pop_freed()
            self._counts.reset(freed)
            self._interactions = grow_rows(self._interactions, self._items.n_cols)
            self._interactions[freed] = 0

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self._items.ids(cols)

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        return self._items.cols(item_ids, add=False)

    @property
    def events_applied(self) -> int:
        return self._counts.n_events

    @property
    def item_index_version(self) -> tuple[int, int]:
        """Changes whenever an item column changes hands (eviction, a loaded state): the evaluator
        re-checks its cached item columns only then."""
        return self._item_index_loads, self._items.generation

    def state_dict(self) -> State:
        ids, last_seen = self._items.state_arrays()
        counts, clock = self._counts.state(self._items.n_cols)
        return State(
            users={},
            items={
                "item_id": ids,
                "last_seen": last_seen,
                "count": counts,
                "n_events": self._interactions[: len(ids)].copy(),
            },
            meta={
                "kind": type(self).__name__,
                "half_life": None if math.isinf(self.half_life) else self.half_life,
                "unit": self.unit,
                "events_applied": self.events_applied,
                **clock,
            },
        )

    def load_state_dict(self, state: State) -> None:
        if state.meta.get("kind") != type(self).__name__:
            raise ValueError(f"state of {state.meta.get('kind')!r} cannot load into {type(self).__name__}")
        self._items = IdIndex(capacity=self.max_items)
        self._item_index_loads += 1
        self._items.load_arrays(state.items["item_id"], state.items["last_seen"])
        self._counts = DecayedCounts(self.half_life, self.unit)
        self._counts.load(state.items["count"], state.meta)
        self._interactions = np.asarray(state.items["n_events"], dtype=np.int64).copy()


class Popularity(DecayedPopularity):
    """All-time most interacted items (`DecayedPopularity` without decay)."""

    def __init__(self, max_items: int | None = None) -> None:
        super().__init__(half_life=math.inf, unit="events", max_items=max_items)


class PopularitySource:
    """Decayed popularity as a `learners.base.Source` of `OnlineRecommender(sources=[...])`: every event
    scores each item column by the log of its decayed count, e.g. a trending signal on event *time*
    (the built-in "trending" and "now" count in events).

    >>> from learners.base import Interactions, Source
    >>> from learners.recommender import OnlineRecommender
    >>> hourly = PopularitySource("hourly", half_life=3600.0, unit="seconds")
    >>> isinstance(hourly, Source)
    True
    >>> model = OnlineRecommender(sources=[hourly], seed=0)
    >>> model.learn_many(Interactions.from_records(
    ...     [{"user_id": "u", "item_id": i, "ts": t} for t, i in zip([0, 3600, 7200], "aab")]))
    >>> [round(float(x), 3) for x in hourly.counts.values(2)]  # a: 0.25 + 0.5 two hours on; b: 1
    [0.75, 1.0]
    """

    def __init__(self, name: str = "trending_time", half_life: float = 3600.0,
                 unit: Literal["events", "seconds"] = "seconds") -> None:
        self.name = name
        self.counts = DecayedCounts(half_life, unit)

    def learn(self, ctx: BatchContext) -> None:
        self.counts.learn(ctx.items[ctx.items >= 0], ctx.ts[ctx.items >= 0])

    def _row(self, n_items: int) -> np.ndarray:
        return np.log1p(self.counts.values(n_items)).astype(np.float32)

    def score(self, ctx: BatchContext) -> np.ndarray:
        """The same row for every event (a read-only broadcast view)."""
        return np.broadcast_to(self._row(ctx.n_items), (len(ctx.users), ctx.n_items))

    def score_pairs(self, ctx: BatchContext, cols: np.ndarray) -> np.ndarray:
        return self._row(max(ctx.n_items, int(cols.max(initial=-1)) + 1))[cols]

    def reset_items(self, cols: np.ndarray) -> None:
        self.counts.reset(cols)


class StagePopularity:
    """Decayed item counts per user stage: the log2 bucket of how many events the user had before
    (0, 1, 2-3, 4-7, ...). What users take at their first click differs from what they take after a
    hundred (sign-up pages, landing items, a heavy user's long tail).

    >>> import numpy as np
    >>> pop = StagePopularity(n_stages=4, half_life=1e9)
    >>> pop.learn(stage_of(np.array([0, 0, 5])), np.array([1, 1, 2]))
    >>> [round(float(x), 2) for x in pop.log_table(3)[0]]  # stage 0: item 1 twice
    [0.0, 1.1, 0.0]
    """

    def __init__(self, n_stages: int = 12, half_life: float = 5000.0) -> None:
        self.n_stages = n_stages
        self.half_life = half_life
        self.counts = np.zeros((n_stages, 16))

    def learn(self, stages: np.ndarray, cols: np.ndarray) -> None:
        if not len(cols):
            return
        if self.counts.shape[1] <= cols.max():
            self.counts = grow_rows(self.counts.T, int(cols.max()) + 1).T.copy()
        if math.isfinite(self.half_life):
            self.counts *= 0.5 ** (len(cols) / self.half_life)
        np.add.at(self.counts, (np.minimum(stages, self.n_stages - 1), cols), 1.0)

    def log_table(self, n_cols: int) -> np.ndarray:
        """(n_stages, n_cols) log1p of the counts (float32)."""
        if self.counts.shape[1] < n_cols:
            self.counts = grow_rows(self.counts.T, n_cols).T.copy()
        return np.log1p(self.counts[:, :n_cols]).astype(np.float32)

    def reset(self, cols: np.ndarray) -> None:
        self.counts[:, cols[cols < self.counts.shape[1]]] = 0.0


def stage_of(n_before: np.ndarray) -> np.ndarray:
    """Stage of an event: floor(log2(1 + the user's earlier events))."""
    return np.floor(np.log2(1.0 + np.asarray(n_before, dtype=np.float64))).astype(np.int64)
