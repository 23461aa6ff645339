"""Malformed payloads go to `interactions.dlq` (raw bytes, reason headers) while good events flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.config import Settings
from stream.producer import make_producer
from stream.publisher import read_topic
from stream.worker import WorkerProcess

pytestmark = pytest.mark.kafka

# (payload, the reason the DLQ must carry)
MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00garbage", "not_utf8"),
    (b"{not json", "not_json"),
    (b"", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"item_id": "i1"}', "missing_field"),
    (b'{"user_id": true, "item_id": "i1"}', "wrong_type"),
    (b'{"user_id": "u1", "item_id": "i1", "value": NaN}', "non_finite"),
    (b'{"user_id": "u1", "item_id": "i1", "ts": 1700000000000}', "out_of_range"),
    (json.dumps({"user_id": "u" * 300, "item_id": "i1"}).encode(), "oversize"),
    (b'{"user_id": "", "item_id": "i1"}', "empty_id"),
    (b'{"user_id": "u1", "item_id": "i1", "type": "teleport"}', "unknown_type"),
    (b'{"user_id": "u1", "item_id": "i1", "value": "5"}', "wrong_type"),
]


def test_malformed_payloads_are_dead_lettered_and_good_ones_applied(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    good = [{"event_id": f"g{n}", "user_id": f"user{n % 7}", "item_id": f"item{n % 11}", "type": "click",
             "ts": 1000.0 + n} for n in range(70)]
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        topic = settings.topic("interactions")
        try:
            for n, event in enumerate(good):  # interleave: a bad record between good ones
                producer.send(topic, value=json.dumps(event).encode(), key=event["user_id"].encode())
                if n < len(MALFORMED):
                    producer.send(topic, value=MALFORMED[n][0], key=b"user0")
            producer.flush()
        finally:
            producer.close()
        health = worker.wait_applied(len(good), timeout=30)
        letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=20,
                             until=lambda rs: len(rs) >= len(MALFORMED))
        recs = read_topic(kafka_bootstrap, settings.topic("recommendations"), timeout=20,
                          until=lambda rs: {r.key for r in rs} >= {f"user{n}".encode() for n in range(7)})

    assert health["events_applied"] == len(good)
    assert health["dlq_total"] == len(MALFORMED)
    assert len(letters) == len(MALFORMED)
    by_value = {}
    for letter in letters:
        headers = {k: v.decode() for k, v in letter.headers}
        assert set(headers) == {"reason", "message", "source.topic", "source.partition", "source.offset"}
        assert headers["source.topic"] == settings.topic("interactions")
        assert int(headers["source.offset"]) >= 0 and headers["message"]
        assert letter.key == b"user0"
        by_value[letter.value] = headers["reason"]
    # raw bytes come back untouched (even the non-UTF-8 one) with the precise reason
    assert by_value == {raw: reason for raw, reason in MALFORMED}
    assert {r.key for r in recs} >= {f"user{n}".encode() for n in range(7)}
