"""Faults on the real broker: a worker killed mid-stream, a broker restart, a flood of bad payloads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from bench.e2e import flood_payloads, interleave
from learners.synthetic import generate
from stream.app import ensure_topics
from stream.broker import LocalKafka
from stream.checkpoint import load_latest_checkpoint
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.publisher import read_topic
from stream.worker import WorkerProcess

pytestmark = pytest.mark.kafka

# Checkpoint often so that a kill lands between checkpoints with work on both sides of it.
WORKER_ARGS = ["--learner", "popularity", "--batch-size", "200", "--checkpoint-events", "1500",
               "--checkpoint-seconds", "0.5"]


def produce_in_background(settings: Settings, records: list, rate: float) -> threading.Thread:
    def run() -> None:
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), records, rate=rate)
        finally:
            producer.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    log = generate(n_events=12_000, seed=11).log
    records = encode_events(log)
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    ensure_topics(settings)
    state = tmp_path / "state"
    first = WorkerProcess(kafka_bootstrap, topic_prefix, state, args=WORKER_ARGS)
    with first:
        first.wait_ready()
        producing = produce_in_background(settings, records, rate=4000)
        first.wait_applied(3000, timeout=60)
        deadline = time.monotonic() + 20
        while not first.health()["checkpoint"]["path"] and time.monotonic() < deadline:
            time.sleep(0.05)
        before = first.health()
        first.kill()  # SIGKILL: no shutdown hook, no final checkpoint
    assert before["checkpoint"]["path"], "no checkpoint before the kill"
    assert before["events_applied"] < len(log), "the stream was over before the kill"
    saved = load_latest_checkpoint(state)
    assert saved is not None
    saved_applied = saved[2]["applied_count"]
    assert 0 < saved_applied < len(log) and sum(saved[1].values()) == saved_applied

    second = WorkerProcess(kafka_bootstrap, topic_prefix, state, args=WORKER_ARGS,
                           log_path=tmp_path / "second.log")
    with second:
        restored = second.wait_ready()
        # it resumed from the checkpoint (state and the offsets it reflects), not from zero
        assert restored["events_applied"] >= saved_applied
        producing.join(timeout=60)
        second.wait_applied(len(log), timeout=60)
        time.sleep(1.0)  # any replayed duplicate would show up as an overshoot now
        after = second.health()
    assert after["events_applied"] == len(log)
    assert after["dlq_total"] == 0


def test_broker_restart_neither_crashes_the_worker_nor_loses_events(
        local_kafka: LocalKafka, topic_prefix: str, tmp_path: Path) -> None:
    log = generate(n_events=3000, seed=12).log
    records = encode_events(log)
    half = len(records) // 2
    settings = Settings(bootstrap=local_kafka.bootstrap, topic_prefix=topic_prefix)
    with WorkerProcess(local_kafka.bootstrap, topic_prefix, tmp_path / "state", args=WORKER_ARGS) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), records[:half])
        finally:
            producer.close()
        worker.wait_applied(half, timeout=30)
        local_kafka.down()
        time.sleep(3.0)
        assert worker.proc.poll() is None, worker.log_tail()
        local_kafka.up(timeout=120)
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), records[half:])
        finally:
            producer.close()
        health = worker.wait_applied(len(records), timeout=90)
        assert worker.proc.poll() is None
        late_users = {key for key, _ in records[half:]}
        recs = read_topic(local_kafka.bootstrap, settings.topic("recommendations"), timeout=60,
                          until=lambda rs: {r.key for r in rs} >= late_users)
    assert health["events_applied"] == len(records)
    assert {r.key for r in recs} >= late_users


def test_flood_of_malformed_payloads_all_dead_lettered_every_good_event_applied(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    log = generate(n_events=4000, seed=13).log
    good = encode_events(log)
    bad = flood_payloads(4000, seed=13)
    assert len({reason for _, reason in bad}) >= 10
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), interleave(good, bad, seed=13))
        finally:
            producer.close()
        health = worker.wait_applied(len(good), timeout=60)
        letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=60,
                             until=lambda rs: len(rs) >= len(bad))
        health = worker.wait_health(lambda h: h["dlq_total"] >= len(bad), 30, "every bad record counted")
    assert health["events_applied"] == len(good)
    expected: dict[str, int] = {}
    for _, reason in bad:
        expected[reason] = expected.get(reason, 0) + 1
    assert health["dlq"] == expected
    got: dict[str, int] = {}
    for letter in letters:
        reason = dict(letter.headers)["reason"].decode()
        got[reason] = got.get(reason, 0) + 1
    assert got == expected
    assert sorted(letter.value for letter in letters) == sorted(raw for raw, _ in bad)
