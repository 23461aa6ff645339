"""Malformed payloads go to `interactions.dlq` (raw bytes, reason headers) while good events flow."""

from __future__ import annotations

import json
import urllib.request
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


def _counted(worker: WorkerProcess, dead_letters: int) -> dict:
    """`/health` once its `dlq_total` reached `dead_letters`: the good events of one partition can all
    be applied before the other partition's bad records are dead-lettered."""
    return worker.wait_health(lambda h: h["dlq_total"] >= dead_letters, 10, "every bad record counted")


def _interleave(settings: Settings, topic: str, good: list[dict], user_field: str, bad: list[bytes],
                bad_key: bytes) -> None:
    """Produce the good events keyed by their user, a bad payload after each of the first ones."""
    producer = make_producer(settings)
    try:
        for n, event in enumerate(good):
            producer.send(topic, value=json.dumps(event).encode(), key=str(event[user_field]).encode())
            if n < len(bad):
                producer.send(topic, value=bad[n], key=bad_key)
        producer.flush()
    finally:
        producer.close()


def test_malformed_payloads_are_dead_lettered_and_good_ones_applied(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    good = [{"event_id": f"g{n}", "user_id": f"user{n % 7}", "item_id": f"item{n % 11}", "type": "click",
             "ts": 1000.0 + n} for n in range(70)]
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity"]) as worker:
        worker.wait_ready()
        bad = [payload for payload, _ in MALFORMED]  # a bad record between good ones
        _interleave(settings, settings.topic("interactions"), good, "user_id", bad, b"user0")
        worker.wait_applied(len(good), timeout=30)
        letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=20,
                             until=lambda rs: len(rs) >= len(MALFORMED))
        health = _counted(worker, len(MALFORMED))
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


def test_a_worker_reads_an_existing_topic_with_other_field_names(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Retailrocket-shaped events (visitorid, itemid, ms timestamps, their own event names) on a topic
    another system owns: learned like ours, their bad records dead-lettered with reasons naming the
    fields, and no `<prefix>interactions` topic created beside it."""
    from kafka.admin import KafkaAdminClient

    from stream.broker import create_topics

    theirs = f"{topic_prefix}shop-events"
    create_topics(kafka_bootstrap, [theirs], partitions=2)
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    names = {0: "view", 1: "addtocart", 2: "transaction"}
    good = [{"visitorid": 1000 + n % 5, "itemid": 70 + n % 9, "timestamp": 1433221332117 + 1000 * n,
             "event": names[n % 3]} for n in range(60)]
    bad = [(b'{"visitorid": 1, "itemid": 2, "event": "wishlist"}', "unknown_type", "event 'wishlist'"),
           (b'{"user_id": "u", "item_id": "i"}', "missing_field", "visitorid is missing"),
           (b'{"visitorid": 1, "itemid": 2, "timestamp": 1e20}', "out_of_range", "timestamp=")]
    args = ["--learner", "popularity", "--interactions-topic", theirs,
            "--columns", "user=visitorid,item=itemid,ts=timestamp,type=event", "--ts-unit", "ms",
            "--types", "addtocart=cart,transaction=purchase"]
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state", args=args) as worker:
        worker.wait_ready()
        _interleave(settings, theirs, good, "visitorid", [b[0] for b in bad], b"1")
        worker.wait_applied(len(good), timeout=30)
        letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=20,
                             until=lambda rs: len(rs) >= len(bad))
        health = _counted(worker, len(bad))
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/recommendations/1000?k=3") as r:
            served = json.loads(r.read())
    assert health["events_applied"] == len(good) and health["dlq_total"] == len(bad)
    reasons = {letter.value: {k: v.decode() for k, v in letter.headers} for letter in letters}
    for raw, reason, message in bad:
        assert reasons[raw]["reason"] == reason and message in reasons[raw]["message"]
        assert reasons[raw]["source.topic"] == theirs
    assert served["user_id"] == "1000" and len(served["items"]) == 3
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        assert settings.topic("interactions") not in admin.list_topics()
    finally:
        admin.close()


def test_topic_flags_name_and_configure_the_topics() -> None:
    from stream.app import topic_configs

    env = {"STREAMREC_INTERACTIONS_TOPIC": "shop-events", "STREAMREC_RETENTION_MS": "3600000"}
    s = Settings.from_env(env, topic_prefix="p.", dlq_retention_ms=60_000)
    assert s.topic("interactions") == "shop-events" and s.topic("interactions.dlq") == "p.interactions.dlq"
    configs = topic_configs(s)
    assert configs["interactions"] == {"retention.ms": "3600000"}
    assert configs["interactions.dlq"] == {"retention.ms": "60000"}
    assert configs["recommendations"]["cleanup.policy"] == "compact"
    assert "interactions" not in topic_configs(Settings())  # the broker's default retention
    with pytest.raises(SystemExit, match="unknown event type 'basket'"):
        Settings(types="addtocart=basket").field_map()
