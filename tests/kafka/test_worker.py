"""The live loop: `LiveLoop` on its own, then `streamrec worker` against the real broker."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from learners.base import Interactions
from learners.popularity import DecayedPopularity
from learners.synthetic import generate
from stream.app import EventConsumer, Fetched
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.publisher import read_topic
from stream.schema import validate_interactions
from stream.validator import Validated
from stream.worker import LiveLoop, RawRecord, WorkerProcess


def records_of(log: Interactions, topic: str = "interactions", partitions: int = 1) -> list[RawRecord]:
    out = []
    per_partition = [0] * partitions
    for n, (key, value) in enumerate(encode_events(log)):
        p = n % partitions
        out.append(RawRecord(topic, p, per_partition[p], 1_000_000 + n, key, value))
        per_partition[p] += 1
    return out


def event(user: str, item: str, ts: float) -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "ts": ts}).encode()


# -- LiveLoop without a broker ----------------------------------------------------------------------
def test_burst_from_one_user_yields_one_list_per_batch() -> None:
    live = LiveLoop(DecayedPopularity(), k=3)
    batch = [RawRecord("interactions", 0, n, 5_000 + n, b"u", event("u", f"i{n % 4}", 10.0 + n))
             for n in range(50)]
    letters, recs = live.apply([], batch)
    assert letters == [] and [key for key, _ in recs] == [b"u"]
    value = json.loads(recs[0][1])
    assert value["user_id"] == "u" and len(value["items"]) == 3
    assert value["event_ts"] == 59.0  # the user's last event of the batch
    assert value["trigger_ts"] == pytest.approx(5.049)  # its record time, in seconds
    assert value["published_ts"] >= value["trigger_ts"]
    assert set(value["items"][0]) == {"item_id", "score", "source"}


def test_debounce_holds_a_users_list_until_due() -> None:
    live = LiveLoop(DecayedPopularity(), k=2, debounce=60.0)
    _, recs = live.apply([], [RawRecord("interactions", 0, 0, 1_000, b"u", event("u", "a", 1.0))])
    assert recs == []
    _, recs = live.apply([], [RawRecord("interactions", 0, 1, 2_000, b"u", event("u", "b", 2.0))])
    assert recs == []  # still inside the window of the first event
    assert live.due_users(now=0.0) == []
    (user, event_ts, trigger), = live.due_users(force=True)
    assert (user, event_ts, trigger) == ("u", 2.0, 2.0)


def test_redelivered_records_are_not_applied_twice() -> None:
    log = generate(n_events=200, seed=3).log
    recs = records_of(log, partitions=2)
    live = LiveLoop(DecayedPopularity(), evaluate=False)
    live.apply([], recs[:120])
    live.apply([], recs[60:])  # a consumer restarted from an older position
    assert live.events_applied == 200
    assert live.offsets == {("interactions", 0): 100, ("interactions", 1): 100}


def _validated_elsewhere(live: LiveLoop, records: list[RawRecord]) -> tuple[list, list, Validated]:
    """What `stream.validator` hands back for `records` (its child runs this same validation)."""
    merged, record_ts = live.merged(records)
    vb = validate_interactions([r.value for r in merged], record_ts,
                               lambda i: f"{merged[i].topic}:{merged[i].partition}:{merged[i].offset}")
    return merged, record_ts, Validated(vb.batch, vb.positions, [i for i, _ in vb.rejects],
                                        [rej.reason for _, rej in vb.rejects])


def test_records_validated_elsewhere_learn_like_records_validated_in_place() -> None:
    log = generate(n_events=300, seed=4).log
    recs = records_of(log, partitions=3)
    bad = [RawRecord("interactions", 3, n, 1_000_000 + n, b"x", b"[1]") for n in range(5)]  # own partition
    in_place = LiveLoop(DecayedPopularity(), k=5)
    in_place.apply([], recs + bad)
    elsewhere = LiveLoop(DecayedPopularity(), k=5)
    for chunk in (recs[:150] + bad, recs[100:]):  # the second one redelivers 50 records
        elsewhere.stage_validated([], *_validated_elsewhere(elsewhere, chunk))
        letters, _ = elsewhere.flush()
        assert letters == []  # the validator process sent them
    assert elsewhere.events_applied == in_place.events_applied == 300
    assert elsewhere.dead_letters == in_place.dead_letters == {"not_object": 5}
    assert elsewhere.offsets == in_place.offsets
    assert elsewhere.validation == {"in_place": 0, "in_child": 355, "refused": 5}  # redelivered ones too
    assert elsewhere.learner.recommend(["u1", "u7"], 5) == in_place.learner.recommend(["u1", "u7"], 5)


def test_revoked_partitions_leave_the_stage_and_their_offsets_unclaimed() -> None:
    log = generate(n_events=120, seed=6).log
    recs = records_of(log, partitions=2)
    live = LiveLoop(DecayedPopularity(), evaluate=False)
    live.apply([], recs[:40])  # 20 per partition learned
    assert live.stage([], recs[40:]) == 80
    assert live.unstage({("interactions", 1)}) == 40
    live.flush()
    assert live.events_applied == 80  # partition 1's staged 40 were never learned here
    assert live.offsets == {("interactions", 0): 60, ("interactions", 1): 20}
    live.apply([], [r for r in recs if r.partition == 1])  # assigned back: replayed from offset 20
    assert live.events_applied == 120
    assert live.unstage({("interactions", 0)}) == 0  # nothing staged


def test_a_fetch_taken_before_a_revocation_is_not_staged_after_it() -> None:
    recs = [RawRecord("interactions", 0, n, 1_000 + n, b"u", event("u", f"i{n}", float(n))) for n in range(5)]
    live = LiveLoop(DecayedPopularity(), evaluate=False)

    async def run() -> tuple[int, int]:
        consumer = EventConsumer(Settings(), live, validate_in_child=False)
        before = await consumer._stage(Fetched([], recs[:3], None, None, consumer.generation))
        consumer.generation += 1  # what a revocation does
        after = await consumer._stage(Fetched([], recs[3:], None, None, 0))
        return before, after
    assert asyncio.run(run()) == (3, 3)
    live.flush()
    assert live.events_applied == 3 and live.offsets == {("interactions", 0): 3}


def test_an_item_first_seen_on_another_worker_earlier_counts_as_evaluated_here() -> None:
    """The global seen set: worker B's event of an item it did not know yet is evaluable when worker A
    saw the item first (by record time); B learns that from A's seen notice, after the event, and
    counts the event as evaluated, ranked last. A, which saw it first, counts nothing."""
    from learners.sparse import SparseRecommender

    a, b = LiveLoop(SparseRecommender(seed=0), k=5), LiveLoop(SparseRecommender(seed=0), k=5)
    assert a.share_items("item-deltas", "w-a") and b.share_items("item-deltas", "w-b")
    for n, live in enumerate((a, b)):  # each worker first sees an item of its own
        live.apply([], [RawRecord("interactions", 0, n, 500 + n, b"u", event("u", f"own{n}", 1.0)),
                        RawRecord("interactions", 0, n + 2, 502 + n, b"v", event("v", f"own{n}", 2.0))])
    evaluated = [live.evaluator.report()["evaluated"] for live in (a, b)]
    assert evaluated == [1, 1]  # v's event of the item u had
    a.apply([], [RawRecord("interactions", 1, 0, 1_000, b"p", event("p", "new", 10.0))])
    b.apply([], [RawRecord("interactions", 2, 0, 2_000, b"q", event("q", "new", 11.0))])
    assert [live.evaluator.report()["evaluated"] for live in (a, b)] == evaluated  # unknown on both
    notice_a, notice_b = a.take_seen_notice(), b.take_seen_notice()
    hits_before = b.evaluator.report()["hr@5"] * evaluated[1]
    assert notice_a is not None and notice_b is not None
    b.apply_deltas([RawRecord("item-deltas", 0, 0, 2_100, b"w-a", notice_a)])
    a.apply_deltas([RawRecord("item-deltas", 0, 1, 2_100, b"w-b", notice_b)])
    assert b.evaluator.report()["evaluated"] == evaluated[1] + 1  # A saw "new" at 1.0 s, B at 2.0 s
    assert a.evaluator.report()["evaluated"] == evaluated[0]
    assert (a.sync["late_evaluated"], b.sync["late_evaluated"]) == (0, 1)
    hits = b.evaluator.report()["hr@5"] * (evaluated[1] + 1)
    assert hits == pytest.approx(hits_before)  # the late event is a miss


def test_learner_failure_dead_letters_the_batch_and_the_loop_goes_on() -> None:
    class Fragile(DecayedPopularity):
        def learn_many(self, batch: Interactions) -> None:
            if "boom" in batch.item.tolist():
                raise RuntimeError("learner bug")
            super().learn_many(batch)

    live = LiveLoop(Fragile(), evaluate=False)
    letters, _ = live.apply([], [RawRecord("interactions", 0, 0, 0, b"u", event("u", "boom", 1.0))])
    assert [dict(d.headers)["reason"] for d in letters] == [b"processing_error"]
    assert b"learner bug" in dict(letters[0].headers)["message"]
    letters, recs = live.apply([], [RawRecord("interactions", 0, 1, 0, b"u", event("u", "fine", 2.0))])
    assert letters == [] and live.events_applied == 1 and recs


def test_checkpoint_restores_state_and_offsets(tmp_path: Path) -> None:
    log = generate(n_events=300, seed=4).log
    recs = records_of(log, partitions=3)
    live = LiveLoop(DecayedPopularity(), state_dir=tmp_path)
    live.apply([], recs[:200])
    live.checkpoint()
    before = live.learner.recommend(["x"], 5)
    live.apply([], recs[200:])  # not checkpointed: lost by a crash, replayed after restart

    fresh = LiveLoop(DecayedPopularity(), state_dir=tmp_path)
    assert fresh.restore().endswith("ckpt-000000000001")
    assert fresh.events_applied == 200
    assert fresh.learner.recommend(["x"], 5) == before
    assert sum(fresh.offsets.values()) == 200
    fresh.apply([], recs)  # the whole partition again: only the 100 unseen records count
    assert fresh.events_applied == 300


@pytest.mark.parametrize("forked", [True, False], ids=["forked-child-writes", "learner-copies"])
def test_a_candidate_scoring_learner_runs_live_with_its_evaluator_and_checkpoints(
        tmp_path: Path, forked: bool) -> None:
    from learners.candidate_eval import CandidateEvaluator
    from learners.sparse import SparseRecommender

    log = generate(n_events=2000, seed=4).log
    recs = records_of(log, partitions=2)
    live = LiveLoop(SparseRecommender(), k=5, state_dir=tmp_path, fork_checkpoints=forked)
    assert isinstance(live.evaluator, CandidateEvaluator)
    letters, published = live.apply([], recs[:1500])
    assert letters == [] and live.events_applied == 1500 and live.dead_letters == {}
    assert live.evaluator.evaluated > 500  # ranked, not dead-lettered
    assert all(len(json.loads(value)["items"]) == 5 for _, value in published)
    users = sorted(set(log.user[:1500].tolist()))[:20]
    before = live.learner.recommend(users, 5)
    snapshot = live.snapshot()  # on the learner's thread: the fork, or the copy
    live.apply([], recs[1500:1600])  # the learner goes on while the snapshot is written
    assert live.learner.recommend(users, 5) != before
    live.write_snapshot(snapshot)
    assert live.last_checkpoint["forked"] is forked
    assert live.last_checkpoint["pause_s"] >= 0 and live.last_checkpoint["write_s"] > 0
    fresh = LiveLoop(SparseRecommender(), k=5, state_dir=tmp_path)
    fresh.restore()  # the state as it was at the snapshot, not after the 100 events that followed
    assert fresh.events_applied == 1500 and fresh.learner.recommend(users, 5) == before
    letters, _ = fresh.apply([], recs)
    assert letters == [] and fresh.events_applied == 2000


def test_a_failed_forked_checkpoint_is_an_error_and_the_worker_keeps_learning(tmp_path: Path) -> None:
    from stream.checkpoint import CheckpointError

    class NoState(DecayedPopularity):
        def state_dict(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("cannot serialise this learner")

    recs = records_of(generate(n_events=300, seed=4).log, partitions=1)
    live = LiveLoop(NoState(), state_dir=tmp_path, fork_checkpoints=True)
    live.apply([], recs[:200])
    with pytest.raises(CheckpointError, match="RuntimeError: cannot serialise this learner"):
        live.checkpoint()
    assert not list(tmp_path.glob("ckpt-*"))
    live.apply([], recs[200:])
    assert live.events_applied == 300


def test_checkpoint_between_stage_and_flush_claims_only_learned_offsets(tmp_path: Path) -> None:
    """A rebalance can checkpoint while a fetch is staged but not yet learned: the checkpoint must not
    claim those records, or a crash right after it would lose them."""
    recs = records_of(generate(n_events=300, seed=4).log, partitions=2)
    live = LiveLoop(DecayedPopularity(), state_dir=tmp_path)
    live.apply([], recs[:100])
    live.stage([], recs[100:])  # fetched and validated, not learned
    live.checkpoint()
    restarted = LiveLoop(DecayedPopularity(), state_dir=tmp_path)
    restarted.restore()
    assert restarted.events_applied == 100 and sum(restarted.offsets.values()) == 100
    restarted.apply([], recs)  # the redelivered partition: the 200 staged-only records are applied now
    assert restarted.events_applied == 300
    live.flush()
    assert live.events_applied == 300 and sum(live.offsets.values()) == 300


def test_items_are_announced_and_bad_items_dead_lettered() -> None:
    live = LiveLoop(DecayedPopularity(), evaluate=False)
    letters, _ = live.apply([
        RawRecord("items", 0, 0, 0, b"new", b'{"item_id": "new", "title": "Fresh", "tags": ["x"]}'),
        RawRecord("items", 0, 1, 0, b"bad", b'{"item_id": "bad", "tags": "x"}'),
    ], [])
    assert [dict(d.headers)["reason"] for d in letters] == [b"bad_tags"]
    assert live.learner.item_cols(np.array(["new", "bad"], dtype=object)).tolist()[1] == -1
    assert live.learner.item_cols(np.array(["new"], dtype=object))[0] >= 0


# -- the worker process on the real broker ----------------------------------------------------------
@pytest.mark.kafka
def test_every_touched_user_gets_a_fresh_list(kafka_bootstrap: str, topic_prefix: str,
                                              tmp_path: Path) -> None:
    log = generate(n_events=600, seed=5).log
    users = set(log.user.tolist())
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "popularity", "--k", "5"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), encode_events(log))
        finally:
            producer.close()
        health = worker.wait_applied(len(log), timeout=30)
        assert health["dlq_total"] == 0 and health["events_applied"] == len(log)
        # the same worker serves its lists and metrics over HTTP
        some_user, web = log.user[0], f"http://127.0.0.1:{worker.web_port}"
        with urllib.request.urlopen(f"{web}/recommendations/{some_user}?k=3") as r:
            served = json.loads(r.read())
        assert served["user_id"] == some_user and len(served["items"]) == 3
        with urllib.request.urlopen(f"{web}/metrics") as r:
            metrics = r.read().decode()
        assert f"streamrec_events_applied_total {float(len(log))}" in metrics

        def all_users(records: list) -> bool:
            return {r.key.decode() for r in records} >= users
        recs = read_topic(kafka_bootstrap, settings.topic("recommendations"), timeout=20, until=all_users)
    seen = {r.key.decode() for r in recs}
    assert seen >= users
    last = {}
    for r in recs:
        value = json.loads(r.value)
        assert value["user_id"] == r.key.decode()
        assert 0 < len(value["items"]) <= 5
        assert value["published_ts"] >= value["trigger_ts"] > 0
        last[value["user_id"]] = value
    # each user's final list answers that user's final event
    final_ts = {u: t for u, t in zip(log.user.tolist(), log.ts.tolist(), strict=True)}
    assert all(last[u]["event_ts"] == pytest.approx(final_ts[u]) for u in users)
    assert worker.proc.returncode == 0  # SIGTERM: clean exit
    assert list((tmp_path / "state").glob("ckpt-*"))  # ... with a checkpoint at shutdown


def test_init_state_starts_warm_from_a_replay_save(tmp_path: Path) -> None:
    from stream.checkpoint import save_checkpoint

    replayed = DecayedPopularity()
    replayed.learn_many(generate(n_events=500, seed=6).log)
    save_checkpoint(tmp_path / "replay", replayed.state_dict(), {"replay:0": 500}, {"source": "replay"})

    live = LiveLoop(DecayedPopularity(), state_dir=tmp_path / "state")
    assert live.restore(init_state=tmp_path / "replay").endswith("ckpt-000000000001")
    assert live.events_applied == 500 and live.offsets == {}  # a replay's offsets mean nothing here
    assert live.learner.recommend(["x"], 5) == replayed.recommend(["x"], 5)
    with pytest.raises(SystemExit, match="does not fit"):
        LiveLoop(_OtherKind(), state_dir=tmp_path / "other").restore(init_state=tmp_path / "replay")


class _OtherKind(DecayedPopularity):
    pass


def test_settings_flags_override_environment_override_defaults() -> None:
    import argparse

    from stream.config import add_worker_arguments

    parser = argparse.ArgumentParser()
    add_worker_arguments(parser)
    env = {"STREAMREC_BOOTSTRAP": "kafka:29092", "STREAMREC_K": "7", "STREAMREC_BATCH_TIMEOUT": "0.2",
           "STREAMREC_SECURITY_PROTOCOL": "SASL_SSL", "STREAMREC_SASL_MECHANISM": "SCRAM-SHA-512",
           "STREAMREC_SASL_USERNAME": "svc", "STREAMREC_SASL_PASSWORD": "secret"}
    s = Settings.from_args(parser.parse_args(["--k", "3", "--topic-prefix", "p."]), env)
    assert (s.bootstrap, s.k, s.batch_timeout, s.topic_prefix) == ("kafka:29092", 3, 0.2, "p.")
    assert s.topic("interactions.dlq") == "p.interactions.dlq" and s.group_id == "p.streamrec"
    assert s.web_host == "127.0.0.1" and s.web_port == 6066
    kw = s.kafka_python_kwargs()
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "svc" and kw["sasl_plain_password"] == "secret"
    with pytest.raises(SystemExit, match="STREAMREC_K"):
        Settings.from_env({"STREAMREC_K": "ten"})


@pytest.mark.parametrize("kind", ["online", "sparse"])
def test_the_deep_stage_fine_tunes_live_and_reaches_the_metrics(tmp_path: Path, kind: str) -> None:
    from learners.deep.reranker import DeepReranker
    from learners.recommender import OnlineRecommender
    from learners.sparse import SparseRecommender
    from stream.metrics import SeriesRecorder, StreamMetrics
    from stream.worker import _no_deep, add_arguments, make_learner

    parser = __import__("argparse").ArgumentParser()
    add_arguments(parser)
    assert _no_deep(parser.parse_args(["--no-deep"]), env={})
    assert _no_deep(parser.parse_args([]), env={"STREAMREC_NO_DEEP": "1"})
    assert not _no_deep(parser.parse_args([]), env={})
    assert make_learner(kind, deep=True).reranker.background is True
    assert make_learner(kind).reranker is None

    model = {"online": OnlineRecommender, "sparse": SparseRecommender}[kind]
    sparse = {"exclude_seen": False} if kind == "sparse" else {}
    learner = model(deep=DeepReranker(every_events=300, background=True, device="cpu", batch_size=64,
                                      **sparse), seed=0)
    metrics, recorder = StreamMetrics(), SeriesRecorder()
    live = LiveLoop(learner, k=5, state_dir=tmp_path, metrics=metrics, recorder=recorder)
    recs = records_of(generate(n_events=1500, seed=2).log)
    for start in range(0, len(recs), 100):
        live.apply([], recs[start:start + 100])
        learner.close()  # the round a batch started ends before the next batch: reproducible
    live.report_finetunes()  # the last batch's round ended after that batch reported
    assert live.finetunes_reported == len(learner.reranker.tuner.rounds) >= 3
    moments = recorder.snapshot()["finetunes"]
    assert len(moments) == live.finetunes_reported and all(m["samples"] > 0 for m in moments)
    assert metrics.summary()["users_held"] == learner.n_users > 0
    assert metrics.summary()["items_held"] == learner.n_items > 0
    assert metrics.current_model_version == learner.model_version >= 1
    assert 1 <= live.publisher.model_version <= learner.model_version  # lists name the deep model
    live.checkpoint()
    assert live.last_checkpoint["forked"]  # torch on CPU: a forked child writes the state
    fresh = LiveLoop(model(deep=DeepReranker(device="cpu", **sparse), seed=0), state_dir=tmp_path)
    fresh.restore()
    assert fresh.learner.model_version == learner.model_version  # the served deep model came back
    # the checkpoint also holds what the stage's features read: the same lists
    users = sorted({r.key.decode() for r in recs[-300:]})[:20]
    assert fresh.learner.recommend(users, k=5) == learner.recommend(users, k=5)


def test_live_loop_detects_the_interest_switch_and_the_learner_adapts() -> None:
    from learners.recommender import OnlineRecommender
    from stream.metrics import StreamMetrics
    from stream.worker import _no_drift, add_arguments, drift_monitor

    parser = __import__("argparse").ArgumentParser()
    add_arguments(parser)
    assert _no_drift(parser.parse_args(["--no-drift"]), env={})
    assert _no_drift(parser.parse_args([]), env={"STREAMREC_NO_DRIFT": "yes"})
    assert not _no_drift(parser.parse_args([]), env={})
    assert drift_monitor(DecayedPopularity()) is None  # nothing to adapt: no monitor

    class Adapting(OnlineRecommender):
        adapted_at: list[int] = []

        def on_drift(self, *args: object, **kwargs: object) -> None:
            self.adapted_at.append(self.events_applied)
            super().on_drift(*args, **kwargs)

    # the stream of tests/learners/test_drift.py: every user's interest switches at a known event
    stream = generate(n_events=16_000, n_users=400, n_items=200, n_clusters=8, cluster_skew=1.0, seed=1)
    switch = stream.truth["switch_at"]
    learner, metrics = Adapting(seed=0), StreamMetrics()
    live = LiveLoop(learner, k=10, metrics=metrics, monitor=drift_monitor(learner))
    recs = records_of(stream.log)
    for start in range(0, len(recs), 200):
        live.apply([], recs[start:start + 200])
    assert live.monitor.detections >= 1
    assert learner.adapted_at and learner.adapted_at[0] >= switch - 200  # not before the switch
    assert min(p for p in live.monitor.positions) >= switch
    assert metrics.summary()["drift_detections"] == live.monitor.detections
    assert f"streamrec_drift_detections_total {live.monitor.detections:.1f}".encode() in metrics.text()


def test_a_periodic_checkpoint_is_written_while_the_loop_goes_on(tmp_path: Path) -> None:
    """`checkpoint(wait=False)` returns once the state is taken; the write (and the offset commit of
    the offsets the checkpoint holds, not later ones) finishes in the background, one at a time."""
    import threading

    from aiokafka import TopicPartition

    live = LiveLoop(DecayedPopularity(), state_dir=tmp_path, fork_checkpoints=False)
    recs = records_of(generate(n_events=300, seed=4).log, partitions=1)
    live.apply([], recs[:200])
    release = threading.Event()
    write = live.write_snapshot

    def slow_write(snapshot):  # type: ignore[no-untyped-def]
        release.wait(10)
        return write(snapshot)
    live.write_snapshot = slow_write  # type: ignore[method-assign]

    class Sender:
        async def settle(self) -> None:
            pass

    class Consumer:
        committed: list = []

        def assignment(self) -> set:
            return {TopicPartition("interactions", 0)}

        async def commit(self, offsets: dict) -> None:
            self.committed.append(offsets)

    async def scenario() -> None:
        consumer = EventConsumer(Settings(), live, validate_in_child=False)
        consumer.sender, consumer.consumer = Sender(), Consumer()
        assert await consumer.checkpoint(wait=False)  # returns while the write waits
        live.apply([], recs[200:])  # the loop goes on learning meanwhile
        assert not list(tmp_path.glob("ckpt-*"))
        assert not await consumer.checkpoint(wait=False)  # one write at a time
        release.set()
        await consumer.settle_checkpoint()
        assert [p.name for p in tmp_path.glob("ckpt-*")] == ["ckpt-000000000001"]
        assert Consumer.committed == [{TopicPartition("interactions", 0): 200}]

    asyncio.run(scenario())
