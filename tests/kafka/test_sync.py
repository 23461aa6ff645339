"""Workers of one group share item-side state through the `item-deltas` topic (stream.sync): every
worker ends with the integer item counts of the whole stream, each event counted once, across a
rebalance (a worker joins mid-stream) and a crash and restart (SIGKILL, no final checkpoint); a
restarted worker takes its users back from the `user-state` changelog; corrupt records on `item-deltas`
and `user-state` are dead-lettered and change nothing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from learners.synthetic import generate
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.sync import counts_digest
from stream.worker import WorkerProcess

pytestmark = pytest.mark.kafka

WORKER_ARGS = ["--learner", "sparse", "--no-deep", "--batch-size", "500", "--sync-seconds", "0.5",
               "--partitions", "4"]


def _log(n_events: int, n_users: int, seed: int) -> tuple[list, str]:
    """A synthetic log's records and the digest of its per-item counts (what every worker must hold)."""
    log = generate(n_events=n_events, n_users=n_users, n_items=300, seed=seed).log
    return encode_events(log), counts_digest(dict(Counter(log.item.tolist())))


def _audited(bootstrap: str, prefix: str, folder: Path, name: str, args: list[str]
             ) -> tuple[WorkerProcess, Path]:
    """A worker (not started) whose state lives in folder/name and whose audit log is folder/name.jsonl."""
    audit = folder / f"{name}.jsonl"
    return WorkerProcess(bootstrap, prefix, folder / name, args=[*args, "--audit-log", str(audit)]), audit


def _final(audit: Path) -> list[dict]:
    return [line for line in map(json.loads, audit.read_text().splitlines()) if line["kind"] == "final"]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_workers_share_item_counts_exactly_once_across_a_rebalance_and_a_crash(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    records, expected = _log(12_000, n_users=400, seed=5)
    first, middle, last = records[:4000], records[4000:8000], records[8000:]
    a, audit_a = _audited(kafka_bootstrap, topic_prefix, tmp_path, "a", WORKER_ARGS)
    b, audit_b = _audited(kafka_bootstrap, topic_prefix, tmp_path, "b", WORKER_ARGS)
    producer = make_producer(settings)
    topic = settings.topic("interactions")
    try:
        with a:
            a.wait_ready()
            send_records(producer, topic, first)
            a.wait_applied(len(first), timeout=90)
            # garbage on item-deltas: dead-lettered with its reason, no state touched
            garbage = [(b"0", b"not a delta"), (b"1", b"SRD1\x00")]
            send_records(producer, settings.topic("item-deltas"), garbage)
            for partition in range(4):  # and on the user changelog: refused when a partition is restored
                producer.send(settings.topic("user-state"), key=b"zz", value=b'{"user_id": 7',
                              partition=partition)
            producer.flush()
            flowing = threading.Thread(target=send_records, args=(producer, topic, middle),
                                       kwargs={"rate": 1500.0})
            flowing.start()
            with b.start():
                b.wait_ready(timeout=90)  # the group rebalanced mid-stream
                flowing.join()
                _wait(lambda: a.health()["events_applied"] + b.health()["events_applied"] >= 8000, 90,
                      "events missing after the rebalance")
                b.kill()  # a crash: B's last deltas may or may not be out; its partitions go to A
                send_records(producer, topic, last[:2000])
                _wait(lambda: _held(a) == 10_000, 120, "A did not take over B's partitions")
                b.start()  # restarts from its checkpoint (or from nothing) and catches up on the deltas
                b.wait_ready(timeout=90)
                send_records(producer, topic, last[2000:])
                _wait(lambda: _held(a) == _held(b) == len(records), 90, "the workers never held every event")
                refused = a.health()["dlq"].get("bad_delta", 0)
                users_b = b.health()["users"]
                refused_users = b.health()["dlq"].get("bad_user_state", 0)
            assert b.stop() == 0
        # A stopped too (context exit); both wrote their final counts
    finally:
        producer.close()
    finals_a, finals_b = _final(audit_a), _final(audit_b)
    assert finals_a and finals_b
    assert finals_a[-1]["item_counts_digest"] == expected
    assert finals_b[-1]["item_counts_digest"] == expected
    assert refused == 2
    # B got its partitions back from A: their users came from the changelog (A's last checkpoint), and
    # the corrupt changelog record of each such partition was refused
    assert users_b["restored"] > 0 and refused_users >= 1
    print(f"users restored {users_b['restored']} in {users_b['restore_s']:.3f} s")
    # every event learned by exactly one worker for its user (the crashed one's lost events again by A)
    assert finals_a[-1]["events_applied"] + finals_b[-1]["events_applied"] == len(records)


def _held(worker: WorkerProcess) -> int:
    """Events whose item side the worker's state holds (learned there or applied from a delta)."""
    return sum(int(o) for o in worker.health()["sync"]["item_watermarks"].values())


def test_a_worker_joining_later_starts_from_the_item_state_snapshot(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A worker with no state of its own loads the newest item-state snapshot (the item side of another
    worker's checkpoint) and reads item-deltas from the position it reflects: it ends with the log's
    counts without having read the deltas before that position."""
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    records, expected = _log(9_000, n_users=300, seed=6)
    args = [*WORKER_ARGS, "--checkpoint-events", "1000", "--snapshot-seconds", "0.01"]
    a, audit_a = _audited(kafka_bootstrap, topic_prefix, tmp_path, "a", args)
    c, audit_c = _audited(kafka_bootstrap, topic_prefix, tmp_path, "c", args)
    producer = make_producer(settings)
    topic = settings.topic("interactions")
    try:
        with a:
            a.wait_ready()
            send_records(producer, topic, records[:6000])
            _wait(lambda: a.health()["sync"].get("snapshots_sent", 0) >= 2 and _held(a) == 6000, 90,
                  "no snapshot written")
            with c:
                c.wait_ready(timeout=90)
                loaded = c.health()["sync"].get("snapshot_loaded")
                send_records(producer, topic, records[6000:])
                _wait(lambda: _held(a) == _held(c) == len(records), 90, "the workers never held every event")
                applied = a.health()["events_applied"] + c.health()["events_applied"]
    finally:
        producer.close()
    print(f"snapshot loaded: {loaded}; applied a + c = {applied}")
    assert loaded is not None and loaded["position"] > 0  # it skipped the deltas before the snapshot
    assert _final(audit_a)[-1]["item_counts_digest"] == expected
    assert _final(audit_c)[-1]["item_counts_digest"] == expected
    assert applied == len(records)
