"""The contract between learners, the prequential evaluator, replay and the live worker.

Read top to bottom, this module is the plug-in contract:

* `Interactions`: the columnar micro-batches of events a learner learns from; ids stay external strings
  at this boundary and each learner maps them to dense columns itself (`learners.ids.IdIndex`);
* `ItemMeta`: catalog entries (cold start), `Recommendation`: one item of a served list, `State`: what
  a checkpoint stores;
* `Recommender`: the methods every learner has, then `OPTIONAL_HOOKS` (the ones the worker, replay and
  the evaluator use when a learner offers them; callers ask with `has_hook` / `get_hook`);
* `SOURCES`: the documented values of `Recommendation.source`;
* `BatchContext` and `Source`: a signal plugged into `learners.recommender.OnlineRecommender`.

`learners.checks.check_recommender` tests a learner against this contract; the README's "Write your own
learner" walks through one.

>>> import numpy as np
>>> batch = Interactions.from_records([
...     {"user_id": "u1", "item_id": "i1", "type": "click", "value": 1.0, "ts": 10.0},
...     {"user_id": "u2", "item_id": "i2", "type": "rating", "value": 4.0, "ts": 11.0},
... ])
>>> len(batch), batch.kind.tolist()
(2, [1, 4])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating")
EVENT_TYPE_CODE: dict[str, int] = {name: code for code, name in enumerate(EVENT_TYPES)}
RATING = EVENT_TYPE_CODE["rating"]


@dataclass(frozen=True)
class Interactions:
    """A time-ordered micro-batch of interaction events, one array per field."""

    user: np.ndarray  # object array of str user ids
    item: np.ndarray  # object array of str item ids
    value: np.ndarray  # float32: rating, or weight of an implicit event
    ts: np.ndarray  # float64 epoch seconds
    kind: np.ndarray  # uint8 code into EVENT_TYPES
    event_id: np.ndarray | None = None  # object array of str, when known
    # where each event came from, when read from Kafka: source partition (int32) and offset (int64);
    # a learner sharing item-side state between workers needs them (`learners.item_deltas`)
    partition: np.ndarray | None = None
    offset: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, sl: slice | np.ndarray) -> Interactions:
        return Interactions(
            self.user[sl], self.item[sl], self.value[sl], self.ts[sl], self.kind[sl],
            None if self.event_id is None else self.event_id[sl],
            None if self.partition is None else self.partition[sl],
            None if self.offset is None else self.offset[sl],
        )

    def with_source(self, partition: np.ndarray, offset: np.ndarray) -> Interactions:
        """This batch with each event's source partition and offset."""
        return Interactions(self.user, self.item, self.value, self.ts, self.kind, self.event_id,
                            np.asarray(partition, np.int32), np.asarray(offset, np.int64))

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]]) -> Interactions:
        """Build a batch from validated event dicts (the `interactions` topic contract)."""
        n = len(records)
        user = np.empty(n, dtype=object)
        item = np.empty(n, dtype=object)
        user[:] = [str(r["user_id"]) for r in records]
        item[:] = [str(r["item_id"]) for r in records]
        event_id = None
        if n and all("event_id" in r for r in records):
            event_id = np.empty(n, dtype=object)
            event_id[:] = [str(r["event_id"]) for r in records]
        return cls(
            user=user,
            item=item,
            value=np.fromiter((float(r.get("value", 1.0)) for r in records), np.float32, n),
            ts=np.fromiter((float(r["ts"]) for r in records), np.float64, n),
            kind=np.fromiter((EVENT_TYPE_CODE[r.get("type", "click")] for r in records), np.uint8, n),
            event_id=event_id,
        )

    @classmethod
    def concat(cls, batches: Iterable[Interactions]) -> Interactions:
        bs = list(batches)
        ids = None
        if bs and all(b.event_id is not None for b in bs):
            ids = np.concatenate([b.event_id for b in bs])
        sourced = bool(bs) and all(b.partition is not None and b.offset is not None for b in bs)
        return cls(
            np.concatenate([b.user for b in bs]), np.concatenate([b.item for b in bs]),
            np.concatenate([b.value for b in bs]), np.concatenate([b.ts for b in bs]),
            np.concatenate([b.kind for b in bs]), ids,
            np.concatenate([b.partition for b in bs]) if sourced else None,
            np.concatenate([b.offset for b in bs]) if sourced else None,
        )


@dataclass(frozen=True)
class ItemMeta:
    """Catalog metadata of one item (the `items` topic contract), used for cold start."""

    item_id: str
    title: str = ""
    tags: tuple[str, ...] = ()
    ts: float = 0.0


class Recommendation(NamedTuple):
    """One item of a served list."""

    item_id: str
    score: float
    source: str  # the signal that contributed most: a key of SOURCES (or an extra Source's name)


@dataclass
class State:
    """Learner state split the way it is sharded: per-user (keyed by user id, moves with a Kafka
    partition) and global item-side state. Arrays only plus JSON-able metadata: no pickle."""

    users: dict[str, np.ndarray] = field(default_factory=dict)
    items: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Recommender(Protocol):
    """What replay, the prequential evaluator and the live worker need from a learner.

    Every learner has the methods below. Item ids are external strings; a learner numbers its items in
    *columns* of its own (`item_ids` / `item_cols` translate), and may hand an evicted item's column to
    another item later.

    The prequential rule: `score_many` scores a micro-batch with the state learned from events *before*
    the batch, plus the batch's own earlier events as context (a user's recent items), never an event's
    own item or a later event's; `learn_many` then learns the batch. A learner that scores candidates
    instead (the optional `score_then_learn`, ranked by `learners.candidate_eval.CandidateEvaluator`)
    may leave `score_many` out.

    Optional hooks: a learner may also offer any of score_then_learn, predict_many, on_drift,
    item_index_version, events_applied, model_version, n_users, n_items, evicted_items, evicted_users,
    state_bytes, knows_user, finetune_rounds, close, reranker, and for workers sharing item-side state
    record_item_deltas, take_item_deltas, take_first_seen, apply_item_delta, item_watermarks, item_counts,
    load_item_state, user_states and load_user_states.
    `OPTIONAL_HOOKS`, right below, says what each means and who uses it; without one, its caller does
    without (see there).

    `learners.checks.check_recommender(model)` runs a short stream through a learner and asserts all of
    this.
    """

    def learn_many(self, batch: Interactions) -> None:
        """Learn a time-ordered micro-batch (an empty batch is a no-op)."""
        ...

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Scores for each event's user over the known items, as (scores[n_events, n_cols], item_cols)
        where item_cols[j] is the model column of score column j (see `item_ids`). Learns nothing."""
        ...

    def recommend(self, user_ids: Sequence[str], k: int = 10) -> list[list[Recommendation]]:
        """One list per user id, in order: up to k distinct known items, best first, leaving out the
        user's recent items; an unknown user gets the cold-start list (e.g. popular items). Changes no
        state (the worker and the HTTP views call it at any time)."""
        ...

    def add_items(self, items: Sequence[ItemMeta]) -> None:
        """Announce catalog items (the `items` topic): known from now on (`item_cols` >= 0), before their
        first interaction; ids already known are fine."""
        ...

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        """External item ids of model columns."""
        ...

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        """Model columns of external item ids, -1 where unknown."""
        ...

    def state_dict(self) -> State:
        """Everything learned, as arrays and JSON-able metadata (checkpoints store it without pickle)."""
        ...

    def load_state_dict(self, state: State) -> None:
        """Replace the state with one `state_dict` gave (a learner of the same kind and shape); raise
        ValueError for one that does not fit."""
        ...


REQUIRED_METHODS: tuple[str, ...] = (
    "learn_many", "score_many", "recommend", "add_items", "item_ids", "item_cols", "state_dict",
    "load_state_dict",
)


class Hook(NamedTuple):
    """An optional `Recommender` hook: how it is called, what it means, who uses it."""

    signature: str
    method: bool  # False: an attribute or property
    meaning: str
    used_by: str


OPTIONAL_HOOKS: dict[str, Hook] = {
    "score_then_learn": Hook(
        "score_then_learn(batch) -> learners.sparse.CandidateScores", True,
        "test then train event by event: each event's candidates and scores from the state before that "
        "event, then the event is learned; replaces score_many + learn_many (a learner with it may leave "
        "score_many out)",
        "learners.evaluate.prequential_step with a learners.candidate_eval.CandidateEvaluator "
        "(bench.replay and the live worker pick one for such a learner)"),
    "predict_many": Hook(
        "predict_many(batch) -> float32[n_events]", True,
        "a rating prediction for each event's (user, item): RMSE on rating events",
        "learners.evaluate.prequential_step (needed by a score_then_learn learner on a log with ratings)"),
    "on_drift": Hook(
        "on_drift(**adapt_args) -> None", True,
        "adapt after a detected drop of the hit rate (forget faster, learn faster for a while)",
        "learners.drift.DriftMonitor / monitor_for (no drift monitor without it), bench.drift"),
    "item_index_version": Hook(
        "item_index_version: hashable", False,
        "changes whenever an item column changes hands (eviction, a loaded state); without it the "
        "evaluator re-checks its cached item columns every batch",
        "learners.evaluate.PrequentialEvaluator, learners.candidate_eval.CandidateEvaluator"),
    "events_applied": Hook(
        "events_applied: int", False,
        "interactions the state reflects (survives checkpoints); without it the worker counts the events "
        "it applied since start",
        "stream.worker.LiveLoop (/health, the dashboard, `wait_applied`)"),
    "model_version": Hook(
        "model_version: int | None", False,
        "version of the serving model, published with every list; None or absent: the worker counts "
        "applied batches instead",
        "stream.worker.LiveLoop (`recommendations` messages, metrics)"),
    "n_users": Hook(
        "n_users: int", False, "users with state",
        "stream.worker metrics (with n_items), bench.replay report"),
    "n_items": Hook(
        "n_items: int", False, "items with state (known items)",
        "stream.worker metrics (with n_users), bench.replay report"),
    "evicted_items": Hook(
        "evicted_items: int", False, "items evicted so far (their state dropped)", "bench.replay report"),
    "evicted_users": Hook(
        "evicted_users: int", False, "users evicted so far (their state dropped)", "bench.replay report"),
    "state_bytes": Hook(
        "state_bytes() -> int", True, "bytes held by the numeric state", "bench.replay report"),
    "knows_user": Hook(
        "knows_user(user_id) -> bool", True,
        "whether the user has state (else `recommend` serves them the cold-start list)",
        "stream.http /recommendations (`known_user`, `cold_start`), via stream.worker"),
    "finetune_rounds": Hook(
        "finetune_rounds(since=0) -> list[(seconds, samples, version or None)]", True,
        "background fine-tune rounds that ended from round `since` on (version None: rejected)",
        "stream.worker.LiveLoop.report_finetunes (metrics, dashboard marks)"),
    "close": Hook(
        "close() -> None", True, "wait for background work (a running fine-tune) before the process exits",
        "stream.worker at shutdown"),
    "record_item_deltas": Hook(
        "record_item_deltas(on=True) -> None", True,
        "start recording the item side learned from sourced events (`Interactions.partition`/`offset`) "
        "for take_item_deltas",
        "stream.worker.LiveLoop.share_items (workers of one group share item-side state, stream.sync)"),
    "take_item_deltas": Hook(
        "take_item_deltas() -> list[learners.item_deltas.ItemDelta]", True,
        "the item-side changes learned here since the last call, per source partition",
        "stream.worker.LiveLoop.take_deltas (sent to the item-deltas topic)"),
    "apply_item_delta": Hook(
        "apply_item_delta(delta) -> bool", True,
        "apply another worker's delta unless the state already holds its events (per-partition "
        "watermark); whether it was applied",
        "stream.worker.LiveLoop.apply_deltas"),
    "take_first_seen": Hook(
        "take_first_seen() -> list[str]", True,
        "items whose first event was learned here since the last call (while recording item deltas)",
        "stream.worker.LiveLoop (told to the other workers at once: their evaluators rank those items "
        "from then on, as one worker would)"),
    "item_watermarks": Hook(
        "item_watermarks: dict[int, int]", False,
        "per source partition, the next offset whose item side the state does not hold yet",
        "stream.worker /health (`sync`)"),
    "load_item_state": Hook(
        "load_item_state(items, meta) -> None", True,
        "start from the item side of another worker's state (state_dict().items and .meta), no users",
        "stream.app.EventConsumer (a worker joining with no state loads the group's item-state snapshot)"),
    "user_states": Hook(
        "user_states(user_ids) -> list[dict]", True,
        "known users' state as JSON-able records (recent items, history, counts)",
        "stream.worker.LiveLoop.user_records (the user-state changelog, flushed at checkpoints)"),
    "load_user_states": Hook(
        "load_user_states(records) -> None", True,
        "replace those users' state with user_states records (a partition handed over)",
        "stream.worker.LiveLoop.restore_users (on assignment of a partition another worker held)"),
    "item_counts": Hook(
        "item_counts() -> dict[str, int]", True, "interactions per known item id",
        "stream.worker (the counts' digest in /health and the audit log: equal on every worker)"),
    "reranker": Hook(
        "reranker: object with stats(), or None", False,
        "the deep second stage re-ranking the learner's lists (learners.deep.DeepReranker)",
        "stream.worker start-up line, bench.replay report (`reranker.stats()`), bench.deep_variants"),
}


def has_hook(model: Any, name: str) -> bool:
    """Whether `model` offers the optional hook `name` (a key of `OPTIONAL_HOOKS`; a misspelt name raises
    KeyError instead of silently reading False).

    >>> from learners.popularity import DecayedPopularity
    >>> has_hook(DecayedPopularity(), "item_index_version"), has_hook(DecayedPopularity(), "on_drift")
    (True, False)
    >>> has_hook(DecayedPopularity(), "on_drfit")
    Traceback (most recent call last):
    KeyError: "'on_drfit' is not an optional Recommender hook (see learners.base.OPTIONAL_HOOKS)"
    """
    _known_hook(name)
    return hasattr(model, name)


def get_hook(model: Any, name: str, default: Any = None) -> Any:
    """The optional hook `name` of `model` (bound method or attribute value), else `default`."""
    _known_hook(name)
    return getattr(model, name, default)


def _known_hook(name: str) -> None:
    if name not in OPTIONAL_HOOKS:
        raise KeyError(f"{name!r} is not an optional Recommender hook (see learners.base.OPTIONAL_HOOKS)")


SOURCES: dict[str, str] = {
    "cooccurrence": ("often taken together with the user's recent items (the session signal); for a user "
                     "with no events yet, often picked first by other users"),
    "trending": "popular lately (decayed counts)",
    "popularity": "popular overall; the popularity baselines' whole list",
    "stage": "popular among users at the same stage (how many events they had before)",
    "now": "popular in the last few hundred events (OnlineRecommender(now=DecayedCounts(...)))",
    "content": "title and tags like those of the user's recent items (ranks announced items before any "
               "interaction)",
    "mf": "matrix factorisation (OnlineRecommender(blend_mf=True))",
    "transitions": "what usually comes next after the user's last items (OnlineRecommender(transitions=...))",
    "seq": "the GRU sequence encoder (learners.deep.sequence.SequenceSource as an extra source)",
    "explore": "an exploration slot: a new item with few interactions, shown so it gets some",
    "deep": "placed in the list by the deep re-ranker (learners.deep): the blend alone would not list it",
}
"""Every value `Recommendation.source` (and so a published item's `source`) takes, with its meaning.
`OnlineRecommender(sources=[...])` adds the `name` of each extra `Source` plugged in."""


@dataclass
class BatchContext:
    """What a `Source` sees of a micro-batch: dense columns and each event's recent-item context.

    `recent[e]` are the item columns of the user's events before event e (most recent first, -1
    padding). `n_items` is the width of score matrices (item columns)."""

    users: np.ndarray  # (B,) user columns
    items: np.ndarray  # (B,) item columns, -1 where unknown (scoring unseen items)
    ts: np.ndarray  # (B,) float64
    value: np.ndarray  # (B,) float32
    kind: np.ndarray  # (B,) uint8
    recent: np.ndarray  # (B, L) int64
    n_items: int
    stage: np.ndarray | None = None  # (B,) log2 bucket of the user's earlier events (learners.popularity)
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """One signal of a blended learner: it scores the item columns for each event of a micro-batch.

    `OnlineRecommender(sources=[...])` owns the ids and columns, calls the source with a `BatchContext`,
    learns the source's weight in its blend online and names it (`Recommendation.source`) on the items it
    contributes most to. `learners.cooccurrence.CoOccurrence`, `learners.popularity.PopularitySource`
    and `learners.deep.sequence.SequenceSource` are sources.

    >>> from learners.cooccurrence import CoOccurrence
    >>> isinstance(CoOccurrence(name="pairs"), Source), isinstance(object(), Source)
    (True, False)
    """

    name: str

    def learn(self, ctx: BatchContext) -> None:
        """Learn a batch's events (`ctx.items`: their item columns), after the batch was scored."""
        ...

    def score(self, ctx: BatchContext) -> np.ndarray:
        """(B, ctx.n_items) scores of every item column for each event, from the state before the batch
        and `ctx.recent` as the user's context."""
        ...

    def score_pairs(self, ctx: BatchContext, cols: np.ndarray) -> np.ndarray:
        """(B, M) scores at the columns cols[B, M]: what `score` gives there (the blend learns from these)."""
        ...

    def reset_items(self, cols: np.ndarray) -> None:
        """The host recycled these columns (evicted items): forget what was learned about them."""
        ...
