"""The contract between learners, the prequential evaluator, replay and the live worker.

Events travel in columnar micro-batches (`Interactions`); ids stay external strings at this
boundary and each learner maps them to dense columns itself (`learners.ids.IdIndex`).

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

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, sl: slice | np.ndarray) -> Interactions:
        return Interactions(
            self.user[sl], self.item[sl], self.value[sl], self.ts[sl], self.kind[sl],
            None if self.event_id is None else self.event_id[sl],
        )

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
        return cls(
            np.concatenate([b.user for b in bs]), np.concatenate([b.item for b in bs]),
            np.concatenate([b.value for b in bs]), np.concatenate([b.ts for b in bs]),
            np.concatenate([b.kind for b in bs]), ids,
        )


@dataclass(frozen=True)
class ItemMeta:
    """Catalog metadata of one item (the `items` topic contract), used for cold start."""

    item_id: str
    title: str = ""
    tags: tuple[str, ...] = ()
    ts: float = 0.0


class Recommendation(NamedTuple):
    item_id: str
    score: float
    source: str  # the signal that contributed most, e.g. "cooccurrence", "mf", "popularity", "content"


@dataclass
class State:
    """Learner state split the way it is sharded: per-user (keyed by user id, moves with a Kafka
    partition) and global item-side state. Arrays only plus JSON-able metadata: no pickle."""

    users: dict[str, np.ndarray] = field(default_factory=dict)
    items: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Recommender(Protocol):
    """What the evaluator, replay and the worker need from a learner.

    `score_many` must only use state learned from events *before* the batch, plus the batch's own
    earlier events as context (a user's recent items), never an event's own item or later ones.
    """

    def learn_many(self, batch: Interactions) -> None: ...

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Scores for each event's user over the known items, as (scores[n_events, n_cols], item_cols)
        where item_cols[j] is the model column of score column j (see `item_ids`)."""
        ...

    def recommend(self, user_ids: Sequence[str], k: int = 10) -> list[list[Recommendation]]: ...

    def add_items(self, items: Sequence[ItemMeta]) -> None: ...

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        """External item ids of model columns."""
        ...

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        """Model columns of external item ids, -1 where unknown."""
        ...

    def state_dict(self) -> State: ...

    def load_state_dict(self, state: State) -> None: ...
