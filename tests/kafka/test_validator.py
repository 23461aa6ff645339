"""The validator process: the same answers as validating in the worker, dead letters acknowledged in
the topic before it answers, and a worker that keeps every event when the child dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bench.e2e import flood_payloads, interleave
from learners.synthetic import generate
from stream.app import ensure_topics
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.publisher import read_topic
from stream.schema import validate_interactions
from stream.validator import ValidatorProcess
from stream.worker import RawRecord, WorkerProcess

pytestmark = pytest.mark.kafka


def _records(n: int, seed: int) -> tuple[list[RawRecord], list[str]]:
    """Good and malformed records interleaved on two partitions, with the reason of each bad one."""
    good = encode_events(generate(n_events=n, seed=seed).log)
    bad = flood_payloads(n, seed=seed)
    mixed = interleave(good, [(raw, reason) for raw, reason in bad], seed=seed)
    records = [RawRecord("interactions", i % 2, i // 2, 1_000_000 + i, key, value)
               for i, (key, value) in enumerate(mixed)]
    reasons = {raw: reason for raw, reason in bad}
    return records, [reasons[r.value] for r in records if r.key == b"flood"]


def test_answers_match_validation_in_the_worker_and_letters_are_in_the_topic(
        kafka_bootstrap: str, topic_prefix: str) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    ensure_topics(settings)
    records, bad_reasons = _records(300, seed=3)
    chunks = [records[:250], records[250:]]
    record_ts = [[r.timestamp / 1000.0 for r in chunk] for chunk in chunks]
    validator = ValidatorProcess(settings).start()

    async def run() -> list:
        futures = [validator.submit(chunk, ts) for chunk, ts in zip(chunks, record_ts, strict=True)]
        return [await f for f in futures]  # two requests in flight, answered in order
    try:
        answers = asyncio.run(run())
    finally:
        validator.close()
    letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=10)

    for chunk, ts, answer in zip(chunks, record_ts, answers, strict=True):
        inline = validate_interactions([r.value for r in chunk], ts,
                                       lambda i, c=chunk: f"{c[i].topic}:{c[i].partition}:{c[i].offset}")
        assert answer.batch.user.tolist() == inline.batch.user.tolist()
        assert answer.batch.event_id.tolist() == inline.batch.event_id.tolist()
        np.testing.assert_array_equal(answer.batch.ts, inline.batch.ts)
        np.testing.assert_array_equal(answer.positions, inline.positions)
        assert answer.rejected == [i for i, _ in inline.rejects]
        assert answer.reasons == [rej.reason for _, rej in inline.rejects]
    # every refused record is in the dead-letter topic by the time its answer came, with its origin
    assert len(letters) == len(bad_reasons) == 300
    by_origin = {(int(dict(x.headers)["source.partition"]), int(dict(x.headers)["source.offset"])): x
                 for x in letters}
    for r in records:
        if r.key == b"flood":
            letter = by_origin[(r.partition, r.offset)]
            assert letter.value == r.value
            assert dict(letter.headers)["source.topic"] == b"interactions"


def _validator_pid(worker_pid: int) -> int | None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == worker_pid and b"multiprocessing.spawn" in cmdline:
            return int(pid)
    return None


def _validated(worker: WorkerProcess, n: int) -> dict[str, int]:
    """The worker's validation counts once `n` interaction records are validated (`wait_applied` can
    return before the fetches that hold only refused records are validated)."""
    health = worker.wait_health(lambda h: h["validation"]["in_place"] + h["validation"]["in_child"] >= n,
                                60, f"{n} records validated")
    return health["validation"]


def test_worker_keeps_every_event_when_the_validator_dies(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    good = encode_events(generate(n_events=3000, seed=5).log)
    bad = flood_payloads(1000, seed=5)
    mixed = interleave(good, bad, seed=5)
    quarter, half = len(mixed) // 4, len(mixed) // 2
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity"]) as worker:
        worker.wait_ready()
        deadline = time.monotonic() + 30
        while (child := _validator_pid(worker.proc.pid)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert child is not None, "the worker runs no validator process"
        producer = make_producer(settings)
        try:
            # the first fetches are validated in place; a quarter of them refused, the next go to the
            # child (sent after the first are counted, so that they cannot share their fetch)
            send_records(producer, settings.topic("interactions"), mixed[:quarter])
            _validated(worker, quarter)
            send_records(producer, settings.topic("interactions"), mixed[quarter:half])
            before = _validated(worker, half)
            assert before["in_child"] >= half - quarter
            os.kill(child, signal.SIGKILL)
            send_records(producer, settings.topic("interactions"), mixed[half:])
        finally:
            producer.close()
        health = worker.wait_applied(len(good), timeout=60)
        letters = read_topic(kafka_bootstrap, settings.topic("interactions.dlq"), timeout=30,
                             until=lambda rs: len(rs) >= len(bad))
        assert worker.proc.poll() is None
        assert "validator process" in worker.log_tail(200)
    assert health["events_applied"] == len(good)
    assert sorted({x.value for x in letters}) == sorted({raw for raw, _ in bad})


def test_good_records_are_validated_in_place_and_a_flood_in_the_child(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    good = encode_events(generate(n_events=4000, seed=8).log)
    bad = flood_payloads(2000, seed=8)
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), good[:2000])
            clean = worker.wait_applied(2000, timeout=60)["validation"]
            flood = interleave(good[2000:], bad, seed=8)
            send_records(producer, settings.topic("interactions"), flood[:1000])
            first = _validated(worker, 3000)
            send_records(producer, settings.topic("interactions"), flood[1000:])
            worker.wait_applied(len(good), timeout=60)
            after = _validated(worker, len(good) + len(bad))
        finally:
            producer.close()
    assert clean == {"in_place": 2000, "in_child": 0, "refused": 0}
    # half of the first flood fetch refused: every later fetch goes to the child
    assert after["in_child"] - first["in_child"] == len(flood) - 1000
    assert after["in_place"] == first["in_place"]
    assert after["refused"] == len(bad)

