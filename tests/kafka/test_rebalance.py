"""A second worker joins the group mid-stream: partitions move, and every event is applied by exactly one
of the two workers (the first checkpoints and leaves its staged records of moved partitions alone)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from learners.synthetic import generate
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.worker import WorkerProcess

pytestmark = pytest.mark.kafka


def split(held: tuple[list[str], list[str]]) -> bool:
    """Each of the two workers holds partitions, none of them held by both."""
    first, second = set(held[0]), set(held[1])
    return bool(first) and bool(second) and not first & second


def test_partitions_move_to_a_joining_worker_without_loss_or_double_counting(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    records = encode_events(generate(n_events=12_000, seed=21).log)
    first, rest = records[:6000], records[6000:]
    # info: a failure below shows the rebalance's steps (assigned, revoked, caught up) in the log tails
    args = ["--learner", "popularity", "--batch-size", "500", "--log-level", "info"]
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "a", args=args) as a:
        a.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), first)
            a.wait_applied(len(first), timeout=60)
            # the rest flows while the second worker joins: the rebalance lands mid-stream
            topic = settings.topic("interactions")
            flowing = threading.Thread(target=send_records, args=(producer, topic, rest),
                                       kwargs={"rate": 1000.0})
            flowing.start()
            with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "b", args=args) as b:
                b.wait_ready(timeout=90)  # b holds partitions: the group rebalanced
                deadline = time.monotonic() + 120
                while not split(held := (a.health()["assigned"], b.health()["assigned"])):
                    assert time.monotonic() < deadline, (
                        f"the two workers never split the partitions (held {held}):\n"
                        f"--- a\n{a.log_tail(400)}\n--- b\n{b.log_tail(400)}")
                    time.sleep(0.2)
                flowing.join()
                deadline = time.monotonic() + 90
                while a.health()["events_applied"] + b.health()["events_applied"] < len(records):
                    assert time.monotonic() < deadline, "events missing after the rebalance"
                    time.sleep(0.2)
                time.sleep(2.0)  # anything applied twice would show up by now
                applied = a.health()["events_applied"], b.health()["events_applied"]
                assigned = a.health()["assigned"], b.health()["assigned"]
        finally:
            producer.close()
    assert sum(applied) == len(records)
    assert applied[1] > 0 and all(assigned)
