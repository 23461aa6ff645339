"""Top-K lists as `recommendations` messages: one JSON value per user, keyed by user id.

The worker publishes through it after every micro-batch; the HTTP layer calls `payloads` /
`recommendations_for` to answer `/recommendations/{user}` with the same shape.

Value: `{user_id, items: [{item_id, score, source}], model_version, event_ts, trigger_ts,
published_ts}`: `event_ts` is the triggering event's own time, `trigger_ts` the Kafka record time of
that event (when it was produced) and `published_ts` when this list left the worker, so
end-to-end latency = published_ts - trigger_ts.

>>> from learners.popularity import DecayedPopularity
>>> from learners.base import Interactions
>>> model = DecayedPopularity()
>>> model.learn_many(Interactions.from_records([{"user_id": "u1", "item_id": "i9", "ts": 1.0}]))
>>> pub = RecommendationPublisher(model, k=3)
>>> [(key, value["items"]) for key, value in pub.payloads(["u1"], published_ts=5.0)]
[(b'u1', [{'item_id': 'i9', 'score': 1.0, 'source': 'popularity'}])]
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from learners.base import Recommender

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class RecommendationPublisher:
    """Builds `recommendations` records from a learner's `recommend` (one vectorised call per batch)."""

    def __init__(self, learner: Recommender, k: int = 10) -> None:
        self.learner = learner
        self.k = k
        self.model_version: int | str = 0

    def payloads(
        self, users: Sequence[str], event_ts: Sequence[float | None] | None = None,
        trigger_ts: Sequence[float | None] | None = None, published_ts: float | None = None,
        k: int | None = None,
    ) -> list[tuple[bytes, dict[str, Any]]]:
        """(key, value dict) of each user's fresh top-K list."""
        if not users:
            return []
        lists = self.learner.recommend(list(users), k or self.k)
        now = time.time() if published_ts is None else published_ts
        out = []
        for n, (user, recs) in enumerate(zip(users, lists, strict=True)):
            value = {
                "user_id": user,
                "items": [{"item_id": r.item_id, "score": _finite(r.score), "source": r.source}
                          for r in recs],
                "model_version": self.model_version,
                "event_ts": None if event_ts is None else event_ts[n],
                "trigger_ts": None if trigger_ts is None else trigger_ts[n],
                "published_ts": now,
            }
            out.append((user.encode("utf-8"), value))
        return out

    def records(
        self, users: Sequence[str], event_ts: Sequence[float | None] | None = None,
        trigger_ts: Sequence[float | None] | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """(key, value bytes) ready for the compacted `recommendations` topic."""
        return [(key, encode(value)) for key, value in self.payloads(users, event_ts, trigger_ts)]

    def recommendations_for(self, user_id: str, k: int | None = None) -> dict[str, Any]:
        """One user's list as served by `/recommendations/{user_id}`."""
        return self.payloads([user_id], k=k)[0][1]


def encode(value: dict[str, Any]) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def _finite(score: float) -> float | None:
    s = float(score)
    return s if s - s == 0.0 else None  # NaN/inf are not JSON: publish null rather than fail


def read_topic(bootstrap: str | Any, topic: str, timeout: float = 30.0,
               until: Any = None, **consumer_options: Any) -> list[Any]:
    """Every record of `topic` from the beginning, read with a plain kafka-python consumer (no group),
    until `until(records)` is true (without `until`: up to the end offsets at call time) or `timeout`
    seconds pass (then whatever was read). Tests, benches and the acceptance check read published
    lists and dead letters with it.

    `bootstrap` is "host:port" or a `stream.config.Settings` (for SASL/SSL)."""
    from kafka import KafkaConsumer, TopicPartition

    conn = bootstrap.kafka_python_kwargs() if hasattr(bootstrap, "kafka_python_kwargs") else {
        "bootstrap_servers": bootstrap}
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None, auto_offset_reset="earliest",
                             **conn, **consumer_options)
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    try:
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.1)
        if not partitions:
            return records
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps) if until is None else {}
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
            if until is not None:
                if until(records):
                    break
            elif all(consumer.position(tp) >= offset for tp, offset in end.items()):
                break
    finally:
        consumer.close()
    return records
