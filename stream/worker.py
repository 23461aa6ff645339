"""`streamrec worker`: consume events in micro-batches, learn prequentially, publish fresh top-K lists.

`LiveLoop` is the worker without a broker: it validates raw records, turns rejects into dead letters,
runs score -> evaluate -> learn through the same `prequential_step` as offline replay, debounces
per user (one list per user per micro-batch, plus an optional delay), keeps the next offset of every
partition it has applied, and checkpoints state with those offsets. `stream.app.EventConsumer` feeds
it from Kafka inside the Faust worker.

>>> from learners.popularity import DecayedPopularity
>>> live = LiveLoop(DecayedPopularity(), k=2)
>>> letters, recs = live.apply([], [
...     RawRecord("interactions", 0, 0, 100_000, b"u1", b'{"user_id":"u1","item_id":"a","ts":1}'),
...     RawRecord("interactions", 0, 1, 100_500, b"u1", b'not json'),
...     RawRecord("interactions", 0, 2, 101_000, b"u2", b'{"user_id":"u2","item_id":"b","ts":2}')])
>>> [(dict(d.headers)["reason"], dict(d.headers)["source.offset"]) for d in letters]
[(b'not_json', b'1')]
>>> [key for key, _ in recs], live.offsets, live.events_applied
([b'u1', b'u2'], {('interactions', 0): 3}, 2)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from learners.base import Interactions, ItemMeta, Recommender, get_hook, has_hook
from learners.drift import monitor_for as drift_monitor
from learners.ids import first_rows
from stream.config import Settings, add_worker_arguments
from stream.deadletter import DeadLetter, dead_letter
from stream.publisher import RecommendationPublisher
from stream.schema import DEFAULT_FIELDS, Rejection, parse_item, validate_interactions

log = logging.getLogger("streamrec.worker")

LEARNERS: dict[str, str] = {
    "online": "learners.recommender:OnlineRecommender",
    "popularity": "learners.popularity:DecayedPopularity",
    "sparse": "learners.sparse:SparseRecommender",
}


class RawRecord(NamedTuple):
    """A Kafka record as the loop needs it (aiokafka's `ConsumerRecord` has the same attributes);
    `timestamp` is the record time in epoch milliseconds, Kafka's unit."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None


NO_DEEP_ENV = "STREAMREC_NO_DEEP"
NO_DRIFT_ENV = "STREAMREC_NO_DRIFT"
INLINE_VALIDATION_ENV = "STREAMREC_INLINE_VALIDATION"


def make_learner(spec: str, deep: bool = False) -> Recommender:
    """`online` | `sparse` | `popularity` | `module:Class` -> a fresh learner with default
    hyper-parameters; with `deep`, `online` and `sparse` get the deep second stage, fine-tuned in the
    background (a child process on CPU, a thread on CUDA)."""
    target = LEARNERS.get(spec, spec)
    module_name, _, class_name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        if spec == "online":  # the full recommender is optional: fall back to the baseline
            log.warning("learner %s unavailable (%s): using DecayedPopularity", target, exc)
            return make_learner("popularity")
        raise SystemExit(f"cannot load learner {spec!r}: {exc}") from None
    if spec in ("online", "sparse") and deep:
        try:
            from learners.deep import build_source
        except ImportError as exc:  # the deep stage is optional: serve the blend alone
            log.warning("deep stage unavailable (%s): %s learner without it", exc, spec)
        else:
            if spec == "sparse":
                from learners.sparse import DEEP_OPTIONS

                return cls(deep=build_source(seed=0, background=True, **DEEP_OPTIONS))
            return cls(deep=build_source(seed=0, background=True))
    return cls()


def _prequential(k: int, learner: Recommender) -> tuple[Any, Any]:
    """`learners.evaluate`'s `prequential_step` and a fresh evaluator, when available: the sublinear
    `CandidateEvaluator` for a learner that scores candidates (`score_then_learn`), as replay picks it."""
    try:
        from learners.evaluate import evaluator_for, prequential_step
    except ImportError:
        return None, None
    # a live worker keeps totals and rolling windows only, not one rank per event forever
    # and bounds its per-user histories like the learner bounds its users
    return prequential_step, evaluator_for(learner, k=k, keep_events=False, max_users=200_000)


Due = tuple[str, float, float | None]  # (user, event_ts, trigger_ts) of a list to publish


class LiveLoop:
    """The worker's logic without a broker (see the module docstring). All learner calls must run on
    `executor` (one thread) or under `lock`: the learner is not thread-safe."""

    def __init__(self, learner: Recommender, k: int = 10, debounce: float = 0.0, evaluate: bool = True,
                 state_dir: str | Path | None = None, metrics: Any = None, recorder: Any = None,
                 monitor: Any = None, fork_checkpoints: bool | None = None, fields: Any = None) -> None:
        self.learner = learner
        # stream.schema.FieldMap: the interactions' JSON field names (None: ours)
        self.fields = DEFAULT_FIELDS if fields is None else fields
        # checkpoints written by a forked child (stream.forked): the learner pauses for fork() only;
        # None: wherever that is safe
        self.fork_checkpoints = fork_checkpoints
        # learners.drift.DriftMonitor: a drop of the live hit rate makes the learner adapt (on_drift)
        self.monitor = monitor
        self.debounce = debounce
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.metrics = metrics
        self.recorder = recorder  # stream.metrics.SeriesRecorder: fine-tune moments for the dashboard
        self.finetunes_reported = 0  # the learner's fine-tune rounds already sent to metrics/recorder
        self.publisher = RecommendationPublisher(learner, k)
        self.step, self.evaluator = _prequential(k, learner) if evaluate else (None, None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self.lock = threading.RLock()
        # next offset per (topic, partition): the state reflects exactly the records before it
        self.offsets: dict[tuple[str, int], int] = {}
        self.batches_applied = 0
        self.applied_count = 0  # valid interactions learned (kept in checkpoints)
        self.events_restored = 0  # events_applied of the state loaded at start (checkpoint or --init-state)
        self.dead_letters: dict[str, int] = {}
        # interaction records validated here / elsewhere (stream.validator), and refused among them
        self.validation = {"in_place": 0, "in_child": 0, "refused": 0}
        self.records_since_checkpoint = 0  # records consumed (good or not) since the last checkpoint
        self.write_lock = threading.Lock()  # one checkpoint write at a time
        self.checkpoint_timings: dict[str, float | bool] = {}  # the last checkpoint's learner pause and write
        self.last_checkpoint: dict[str, Any] = {"path": None, "offsets": {}, "created": None}
        self.on_checkpoint: Any = None  # called with (path, offsets) after each checkpoint
        self.assignment: list[str] = []  # "topic:partition" this worker consumes (set by the consumer)
        # where the time goes, summed over batches: record time -> start of apply, apply, send
        # (stage = validation and dead letters, flush = learning and lists; *_cpu_s: this thread's CPU)
        self.timing_sums = {"batches": 0, "events": 0, "wait_s": 0.0, "apply_s": 0.0, "send_s": 0.0,
                            "stage_s": 0.0, "stage_cpu_s": 0.0, "flush_s": 0.0, "flush_cpu_s": 0.0,
                            "fetch_s": 0.0, "child_wait_s": 0.0}  # (set by the consumer)
        self._pending: dict[str, tuple[float, float | None, float]] = {}  # user -> (event_ts, trigger, due)
        self._staged = self._empty_stage()  # validated, not yet learned (see `stage`)
        # item-side sharing with the group's other workers (stream.sync): off until `share_items`
        self.deltas_topic: str | None = None
        self.worker_id = ""
        self.audit: Any = None  # stream.sync.AuditLog
        self.sync = {"deltas_sent": 0, "delta_bytes_sent": 0, "deltas_applied": 0, "deltas_skipped": 0,
                     "delta_events_applied": 0, "deltas_refused": 0, "seen_notices_sent": 0,
                     "seen_notices_applied": 0, "late_evaluated": 0}
        self._delta_ts: dict[int, list[float]] = {}  # partition -> [min, max] record time since last take
        self.events_since_deltas = 0
        self.restored_from: str | None = None  # the checkpoint or --init-state the state came from
        self._first_seen: list[tuple[str, float | None]] = []  # (item, record time of its first event
        # here): not yet told to the other workers
        self._sightings: Any = None  # learners.item_deltas.FirstSightings: ours, until a notice settles them
        self._early: dict[str, float | None] = {}  # items told to the others when staged, not yet learned
        # users handed over with their partition (the user-state changelog): off until `hand_users_over`
        self.user_topic: str | None = None
        self._touched_users: dict[tuple[str, int], set[str]] = {}  # since the last changelog flush
        self.users_sent = self.users_restored = 0
        self.restore_s = 0.0

    # -- sharing item-side state -------------------------------------------------------------------
    def share_items(self, deltas_topic: str, worker_id: str) -> bool:
        """Record the item side learned here for the other workers, and apply theirs from
        `deltas_topic`; False when the learner cannot share (it then learns alone)."""
        if get_hook(self.learner, "take_item_deltas") is None:
            log.warning("%s does not share item-side state: this worker learns alone",
                        type(self.learner).__name__)
            return False
        from learners.item_deltas import FirstSightings

        self.learner.record_item_deltas(True)
        self.deltas_topic, self.worker_id = deltas_topic, worker_id
        self._sightings = FirstSightings(worker_id)
        return True

    def take_deltas(self) -> list[tuple[bytes, bytes]]:
        """The item-side deltas learned since the last call, as `item-deltas` (key, value) records."""
        if self.deltas_topic is None:
            return []
        with self.lock:
            deltas = self.learner.take_item_deltas()
            times, self._delta_ts = self._delta_ts, {}
            self.events_since_deltas = 0
        out = []
        now = time.time()
        for d in deltas:
            lo, hi = times.get(d.partition, (None, None))
            d.meta = {"worker": self.worker_id, "record_ts_min": lo, "record_ts_max": hi, "sent_at": now}
            value = d.to_bytes()
            out.append((b"%d" % d.partition, value))
            self.sync["deltas_sent"] += 1
            self.sync["delta_bytes_sent"] += len(value) + 8
            if self.audit is not None:
                self.audit.write("delta_sent", partition=d.partition, first=d.first, last=d.last,
                                 events=d.events, bytes=len(value) + len(out[-1][0]), sent_at=now)
        return out

    def load_item_snapshot(self, folder: str | Path, position: int) -> None:
        """Start from an item-state snapshot written into `folder` (`stream.sync.assemble_snapshot`):
        its item side, and item-deltas read from `position` on."""
        from stream.checkpoint import load_items

        items, meta, _ = load_items(folder)
        with self.lock:
            self.learner.load_item_state(items, meta)
            self.offsets[(self.deltas_topic, 0)] = position
            if self.evaluator is not None and hasattr(self.evaluator, "mark_seen"):
                cols = np.flatnonzero(np.asarray(items["n_events"]) > 0)
                ids = np.asarray(items["item_id"]).astype(object)[cols]
                self.evaluator.mark_seen(self.learner.item_cols(ids), ids, self.learner)

    @property
    def has_seen_notice(self) -> bool:
        """Whether items wait to be told to the other workers (read without the lock: the consumer's
        loop skips a hop to the learner's thread when nothing waits; a miss waits for the next batch)."""
        return bool(self._first_seen)

    @property
    def has_pending_lists(self) -> bool:
        """Whether lists wait for their debounce (read without the lock, like `has_seen_notice`)."""
        return bool(self._pending)

    def take_seen_notice(self) -> bytes | None:
        """The items first seen here since the last call, as an `item-deltas` notice (None: none)."""
        from learners.item_deltas import seen_to_bytes

        with self.lock:
            seen, self._first_seen = self._first_seen, []
        if not seen:
            return None
        self.sync["seen_notices_sent"] += 1
        return seen_to_bytes([i for i, _ in seen], [t for _, t in seen])

    def _apply_seen(self, ids: list[str], first_ts: list[float | None], sender: str) -> None:
        """Items another worker just saw first: known here at once, and ranked by the evaluator from
        now on, as with one worker (their counts follow in a delta). Our own first events of these
        items that came after the sender's could not be ranked here: they count as evaluated, ranked
        last (the global seen set, `FirstSightings`)."""
        array = np.asarray(ids, dtype=object)
        cols = self.learner.item_cols(array)
        if (cols < 0).any():
            self.learner.add_items([ItemMeta(i) for i in array[cols < 0].tolist()])
            cols = self.learner.item_cols(array)
        if self.evaluator is not None and hasattr(self.evaluator, "mark_seen"):
            self.evaluator.mark_seen(cols, array, self.learner)
        self.sync["seen_notices_applied"] += 1
        late = self._sightings.settle(ids, first_ts, sender) if self._sightings is not None else []
        if late and self.evaluator is not None and hasattr(self.evaluator, "count_unranked"):
            self.sync["late_evaluated"] += self.evaluator.count_unranked([ts for _, _, ts in late])
            if self.audit is not None:
                self.audit.write("late_evaluated", partition=[p for p, _, _ in late],
                                 offset=[o for _, o, _ in late])

    def apply_deltas(self, records: Sequence[Any]) -> list[DeadLetter]:
        """Apply the other workers' deltas (`item-deltas` records, in order); a malformed one becomes a
        dead letter and changes nothing. Returns the dead letters."""
        from learners.item_deltas import SEEN_MAGIC, ItemDelta, seen_from_bytes

        letters = []
        with self.lock:
            for r in records:
                tp = (r.topic, r.partition)
                if r.offset < self.offsets.get(tp, 0):
                    continue  # redelivered: already read
                self.offsets[tp] = r.offset + 1
                if r.value is not None and r.value.startswith(SEEN_MAGIC):
                    try:
                        ids, first_ts = seen_from_bytes(r.value)
                    except ValueError as exc:
                        letters.append(dead_letter(r, Rejection("bad_delta", str(exc)[:300])))
                        self.sync["deltas_refused"] += 1
                        continue
                    if (r.key or b"") != self.worker_id.encode():  # our own notice: nothing new here
                        try:
                            self._apply_seen(ids, first_ts, (r.key or b"").decode(errors="replace"))
                        except Exception:  # noqa: BLE001 - a notice only speeds evaluability up
                            log.exception("applying a seen notice failed")
                    continue
                try:
                    delta = ItemDelta.from_bytes(r.value)
                except ValueError as exc:
                    letters.append(dead_letter(r, Rejection("bad_delta", str(exc)[:300])))
                    self.sync["deltas_refused"] += 1
                    continue
                try:
                    applied = self.learner.apply_item_delta(delta)
                except Exception as exc:  # noqa: BLE001 - a learner bug costs this delta, not the worker
                    log.exception("applying an item delta failed")
                    reason = Rejection("bad_delta", f"{type(exc).__name__}: {exc}"[:300])
                    letters.append(dead_letter(r, reason))
                    self.sync["deltas_refused"] += 1
                    continue
                if not applied:
                    self.sync["deltas_skipped"] += 1
                    continue
                self.sync["deltas_applied"] += 1
                self.sync["delta_events_applied"] += delta.events
                if self.evaluator is not None and hasattr(self.evaluator, "mark_seen"):
                    ids = np.asarray(delta.item_ids, dtype=object)[np.asarray(delta.counts) > 0]
                    self.evaluator.mark_seen(self.learner.item_cols(ids), ids, self.learner)
                if self.audit is not None:
                    meta = delta.meta
                    self.audit.write("delta_applied", **{"from": meta.get("worker")},
                                     partition=delta.partition, first=delta.first, last=delta.last,
                                     events=delta.events,
                                     bytes=len(r.value) + len(r.key or b""),
                                     record_ts_min=meta.get("record_ts_min"),
                                     record_ts_max=meta.get("record_ts_max"), applied_at=time.time())
        self._count_dead_letters(Counter(letter.reason for letter in letters))
        return letters

    # -- users that move with their partition ------------------------------------------------------
    def hand_users_over(self, user_topic: str) -> bool:
        """Keep a changelog of users' state on `user_topic` (co-partitioned with interactions), so the
        next owner of a partition restores its users; False when the learner cannot."""
        if None in (get_hook(self.learner, "user_states"), get_hook(self.learner, "load_user_states")):
            return False
        self.user_topic = user_topic
        return True

    def user_records(self) -> list[tuple[int, bytes, bytes]]:
        """(partition, key, value) changelog records of the users touched since the last call; each
        carries the interactions offset its partition's state reflects."""
        if self.user_topic is None:
            return []
        with self.lock:
            touched, self._touched_users = self._touched_users, {}
            out = []
            for (topic, partition), users in touched.items():
                offset = self.offsets.get((topic, partition), 0)
                for state in self.learner.user_states(sorted(users)):
                    value = json.dumps({**state, "partition": partition, "offset": offset},
                                       separators=(",", ":"), ensure_ascii=False).encode()
                    out.append((partition, state["user_id"].encode(), value))
        self.users_sent += len(out)
        return out

    def restore_users(self, records: Sequence[Any]) -> list[DeadLetter]:
        """Load the users of a partition this worker takes over from the changelog records (the latest
        per user wins); a malformed one becomes a dead letter. Returns the dead letters."""
        started = time.perf_counter()
        latest: dict[bytes | None, Any] = {}
        for r in records:
            latest[r.key] = r
        letters, states = [], []
        for r in latest.values():
            if r.value is None:  # a tombstone
                continue
            try:
                state = json.loads(r.value)
                if not (isinstance(state, dict) and isinstance(state.get("user_id"), str)
                        and isinstance(state.get("recent"), list) and isinstance(state.get("history"), list)
                        and all(isinstance(i, str) for i in state["recent"] + state["history"])):
                    raise ValueError("not a user state record")
            except (ValueError, UnicodeDecodeError) as exc:
                letters.append(dead_letter(r, Rejection("bad_user_state", str(exc)[:300])))
                continue
            states.append(state)
        with self.lock:
            self.learner.load_user_states(states)
            if self.evaluator is not None and hasattr(self.evaluator, "set_histories"):
                self.evaluator.set_histories(np.asarray([x["user_id"] for x in states], dtype=object),
                                             [np.asarray(x["history"], dtype=object) for x in states],
                                             self.learner)
        self.users_restored += len(states)
        self.restore_s += time.perf_counter() - started
        self._count_dead_letters(Counter(letter.reason for letter in letters))
        return letters

    def item_counts_digest(self) -> str | None:
        counts = get_hook(self.learner, "item_counts")
        if counts is None:
            return None
        from stream.sync import counts_digest

        with self.lock:
            return counts_digest(counts())

    # -- applying ----------------------------------------------------------------------------------
    def apply(self, items: Sequence[Any], interactions: Sequence[Any]) -> tuple[list[DeadLetter], list]:
        """One micro-batch: items first (new items are known before events about them), then
        interactions. Returns dead letters and due `recommendations` records."""
        self.stage(items, interactions)
        return self.flush()

    def stage(self, items: Sequence[Any], interactions: Sequence[Any]) -> int:
        """Validate records into the pending micro-batch (items are applied at once); returns the
        good interactions pending. The consumer stages several fetches when many records are bad, so
        the learner still sees full batches of good events (its per-batch cost stays amortised)."""
        with self._staging(items) as staged:
            started = time.time()
            records = self._fresh(interactions)
            if records:
                self._validate(records, started)
            staged["consumed"] += len(records)
        return self._pending_good()

    @contextmanager
    def _staging(self, items: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """The stage, under the lock, with `items` applied first; the time spent goes to the timings."""
        with self.lock:
            t0, c0 = time.perf_counter(), time.thread_time()
            staged = self._staged
            if items:
                staged["letters"] += self._apply_items(self._fresh(items))
            yield staged
            seconds = time.perf_counter() - t0
            staged["seconds"] += seconds
            self.timing_sums["stage_s"] += seconds
            self.timing_sums["stage_cpu_s"] += time.thread_time() - c0

    def _pending_good(self) -> int:
        return sum(len(b) for b in self._staged["batches"])

    def merged(self, records: list[Any], started: float | None = None,
               ) -> tuple[list[Any], list[float | None]]:
        """`records` merged by record time (several partitions: a stable sort keeps each partition's
        order) and their record times in seconds (None when unknown); with `started`, their time in
        Kafka + fetch goes to the timings."""
        n = len(records)
        ms = np.array([r.timestamp for r in records], dtype=np.float64)  # None -> nan
        known = ~np.isnan(ms)
        n_known = int(np.count_nonzero(known))
        if started is not None:
            sums = self.timing_sums
            sums["events"] += n_known
            sums["wait_s"] += n_known * started - float(ms[known].sum()) / 1000.0
        if n > 1:
            order = np.argsort(np.where(known, ms, 0.0), kind="stable")
            if bool((order[1:] < order[:-1]).any()):
                records = [records[i] for i in order.tolist()]
                ms, known = ms[order], known[order]
        record_ts = (ms / 1000.0).tolist()
        if n_known < n:
            record_ts = [t if k else None for t, k in zip(record_ts, known.tolist(), strict=True)]
        return records, record_ts

    def _validate(self, records: list[Any], started: float) -> None:
        """Validate interaction records into the stage; bad ones become dead letters."""
        records, record_ts = self.merged(records, started)

        def fallback_id(i: int) -> str:  # only for events without an event_id
            r = records[i]
            return f"{r.topic}:{r.partition}:{r.offset}"
        vb = validate_interactions([r.value for r in records], record_ts, fallback_id, self.fields)
        if vb.rejects:
            self._staged["letters"] += [dead_letter(records[i], rej) for i, rej in vb.rejects]
        self.validation["in_place"] += len(records)
        self.validation["refused"] += len(vb.rejects)
        self._stage_good(records, record_ts, vb.batch, vb.positions)

    def _stage_good(self, records: list[Any], record_ts: list[float | None], batch: Interactions,
                    positions: np.ndarray) -> None:
        staged = self._staged
        if len(batch) == len(records):
            staged["batches"].append(batch)
            staged["records"] += records
            staged["trigger_ts"] += record_ts
        elif len(batch):
            where = positions.tolist()
            staged["batches"].append(batch)
            staged["records"] += [records[i] for i in where]
            record_ts = [record_ts[i] for i in where]
            staged["trigger_ts"] += record_ts
        if self._sightings is not None and len(batch):
            self._notice_unknown(batch, record_ts)

    def _notice_unknown(self, batch: Interactions, record_ts: list[float | None]) -> None:
        """Items this worker has never heard of, told to the others as soon as they are staged, not
        after the batch is learned: the sooner the others know, the fewer of their events of the
        item come before the notice (they could not rank those)."""
        unknown = np.flatnonzero(self.learner.item_cols(batch.item) < 0)
        for row in first_rows(batch.item, unknown).tolist():
            item = str(batch.item[row])
            if item not in self._early:
                self._early[item] = record_ts[row]
                self._first_seen.append((item, record_ts[row]))

    def stage_validated(self, items: Sequence[Any], records: list[Any], record_ts: list[float | None],
                        validated: Any) -> int:
        """`stage` for interaction records validated elsewhere (`stream.validator`, which also
        dead-lettered the refused ones): `records` and `record_ts` as `merged` gave them, in the
        order `validated` refers to. Returns the good interactions pending."""
        with self._staging(items) as staged:
            fresh = self._fresh(records)
            batch, positions, rejected, reasons = validated
            if len(fresh) < len(records):  # redelivered records: learn and count only the fresh ones
                keep = np.zeros(len(records), dtype=bool)
                ids = {id(r) for r in fresh}
                keep[[i for i, r in enumerate(records) if id(r) in ids]] = True
                good = keep[positions]
                batch, positions = batch[good], positions[good]
                reasons = [reason for i, reason in zip(rejected, reasons, strict=True) if keep[i]]
            staged["dlq_reasons"] += reasons
            self.validation["in_child"] += len(records)
            self.validation["refused"] += len(rejected)
            self._stage_good(records, record_ts, batch, positions)
            staged["consumed"] += len(fresh)
        return self._pending_good()

    def unstage(self, partitions: set[tuple[str, int]]) -> int:
        """Forget the staged (validated, not yet learned) interactions of `partitions` and their staged
        offsets: the partitions were revoked, so their next owner applies these records from the last
        checkpoint, and learning them here too would count them twice. Returns the events dropped
        (their dead letters, if any, still go out: the dead-letter topic is at-least-once)."""
        with self.lock:
            staged = self._staged
            for tp in partitions:
                staged["offsets"].pop(tp, None)
            keep = np.fromiter(((r.topic, r.partition) not in partitions for r in staged["records"]), bool,
                               len(staged["records"]))
            if keep.all():
                return 0
            batch = Interactions.concat(staged["batches"])[keep]
            staged["batches"] = [batch] if len(batch) else []
            where = np.flatnonzero(keep).tolist()
            staged["records"] = [staged["records"][i] for i in where]
            staged["trigger_ts"] = [staged["trigger_ts"][i] for i in where]
            return int(len(keep) - len(where))

    def flush(self) -> tuple[list[DeadLetter], list]:
        """Learn the pending micro-batch (score -> evaluate -> learn); returns dead letters and due
        `recommendations` records."""
        with self.lock:
            t0, c0 = time.perf_counter(), time.thread_time()
            staged, self._staged = self._staged, self._empty_stage()
            letters: list[DeadLetter] = staged["letters"]
            n_good = 0
            if staged["batches"]:
                records = staged["records"]
                batch = Interactions.concat(staged["batches"]).with_source(
                    np.fromiter((r.partition for r in records), np.int32, len(records)),
                    np.fromiter((r.offset for r in records), np.int64, len(records)))
                n_good = self._learn(batch, records, staged["trigger_ts"], letters)
            self.offsets.update(staged["offsets"])  # learned, or dead-lettered with the reason
            by_reason = Counter(letter.reason for letter in letters)
            by_reason.update(staged["dlq_reasons"])  # dead-lettered by the validator process
            self._count_dead_letters(by_reason)
            recs = self.due_records()
            flush_s = time.perf_counter() - t0
            elapsed = staged["seconds"] + flush_s
            sums = self.timing_sums
            sums["batches"] += 1
            sums["apply_s"] += elapsed
            sums["flush_s"] += flush_s
            sums["flush_cpu_s"] += time.thread_time() - c0
            if self.metrics is not None:
                self.metrics.observe_batch(staged["consumed"], n_good, elapsed)
            return letters, recs

    def _count_dead_letters(self, by_reason: Counter) -> None:
        """Dead letters per reason into the counts (`/health`) and the metrics."""
        counts = self.dead_letters
        for reason, n in by_reason.items():
            counts[reason] = counts.get(reason, 0) + n
            if self.metrics is not None:
                self.metrics.observe_dlq(reason, n)

    @staticmethod
    def _empty_stage() -> dict[str, Any]:
        return {"batches": [], "records": [], "trigger_ts": [], "letters": [], "consumed": 0, "seconds": 0.0,
                "offsets": {}, "dlq_reasons": []}

    def _fresh(self, records: Sequence[Any]) -> list[Any]:
        """Drop records the state already reflects (redelivered after a restart) or already staged.

        Their offsets are staged, not yet `self.offsets`: `flush` moves them there once the records
        are learned, so a checkpoint taken between stage and flush (a rebalance) never claims
        events its state does not hold."""
        offsets, staged = self.offsets, self._staged["offsets"]
        fresh = []
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset >= staged.get(tp, offsets.get(tp, 0)):
                fresh.append(r)
                staged[tp] = r.offset + 1
        self.records_since_checkpoint += len(fresh)
        return fresh

    def _learn(self, batch: Interactions, records: list[Any], trigger_ts: list[float | None],
               letters: list[DeadLetter]) -> int:
        try:
            result = None
            if self.step is not None:
                result = self.step(self.learner, self.evaluator, batch, monitor=self.monitor)
            else:
                self.learner.learn_many(batch)
        except Exception as exc:  # noqa: BLE001 - a learner bug must not stop the stream
            log.exception("learning a batch of %d events failed: dead-lettering it", len(batch))
            rejection = Rejection("processing_error", f"{type(exc).__name__}: {exc}"[:500])
            letters += [dead_letter(r, rejection) for r in records]
            return 0
        self.batches_applied += 1
        self.applied_count += len(batch)
        if self.deltas_topic is not None:
            self._note_record_times(batch.partition, trigger_ts)
            self.events_since_deltas += len(batch)
            self._note_first_events(batch, result, trigger_ts)
        if self.user_topic is not None:
            topic = records[0].topic  # one interactions topic
            for p in np.unique(batch.partition).tolist():
                users = batch.user[batch.partition == p].tolist()
                self._touched_users.setdefault((topic, p), set()).update(users)
        if self.audit is not None:
            self._audit_events(batch, result, trigger_ts)
        version = get_hook(self.learner, "model_version")
        self.publisher.model_version = self.batches_applied if version is None else version
        if self.metrics is not None:
            self.metrics.set_model_version(int(self.publisher.model_version))
            quality = self.quality()
            if quality:
                self.metrics.set_quality(**quality)
            sizes = get_hook(self.learner, "n_users"), get_hook(self.learner, "n_items")
            if None not in sizes:
                self.metrics.set_sizes(*sizes)
            if self.monitor is not None:
                self.metrics.set_drift_detections(self.monitor.detections)
        self.report_finetunes()
        self._mark_touched(batch.user.tolist(), batch.ts.tolist(), trigger_ts)
        return len(batch)

    def _note_first_events(self, batch: Interactions, result: dict[str, np.ndarray] | None,
                           trigger_ts: list[float | None]) -> None:
        """Items first learned here (told to the other workers with their first event's record time)
        and the events the evaluator could not rank for want of the item (kept until the others'
        notices say who saw it first)."""
        take_first_seen = get_hook(self.learner, "take_first_seen")
        ids = take_first_seen() if take_first_seen is not None else []
        ids, self._early = [i for i in ids if i not in self._early], {}  # told when staged already
        if ids:
            rows = first_rows(batch.item, np.flatnonzero(np.isin(batch.item, np.asarray(ids, dtype=object))))
            stamp = {str(batch.item[r]): trigger_ts[r] for r in rows.tolist()}
            self._first_seen += [(i, stamp.get(i)) for i in ids]
        rows = None if result is None else result.get("unseen_rows")
        if self._sightings is not None and rows is not None and len(rows):
            rows = np.asarray(rows).tolist()
            self._sightings.add(batch.item[rows].tolist(), [trigger_ts[r] for r in rows],
                                [(int(batch.partition[r]), int(batch.offset[r]), float(batch.ts[r]))
                                 for r in rows])

    def _note_record_times(self, partition: np.ndarray, trigger_ts: list[float | None]) -> None:
        """Each partition's first and last record time since the deltas were last taken (the deltas
        carry them: the sync lag is measured from them)."""
        ts = np.array([np.nan if t is None else t for t in trigger_ts], np.float64)
        for p in np.unique(partition).tolist():
            mine = ts[partition == p]
            mine = mine[~np.isnan(mine)]
            if len(mine):
                span = self._delta_ts.setdefault(p, [float(mine.min()), float(mine.max())])
                span[0], span[1] = min(span[0], float(mine.min())), max(span[1], float(mine.max()))

    def _audit_events(self, batch: Interactions, result: dict[str, np.ndarray] | None,
                      trigger_ts: list[float | None]) -> None:
        hit = np.full(len(batch), -1, np.int64)
        if result is not None and self.evaluator is not None and len(result["position"]):
            rows = np.asarray(result["position"]) - (self.evaluator.events - len(batch))
            hit[rows] = (np.asarray(result["rank"]) < self.evaluator.k).astype(np.int64)
        self.audit.write("events", partition=batch.partition.tolist(), offset=batch.offset.tolist(),
                         user=batch.user.tolist(), hit=hit.tolist(), record_ts=list(trigger_ts))

    def report_finetunes(self) -> int:
        """Send the learner's fine-tune rounds that ended since the last call (they run in the
        background) to the metrics and the series recorder; returns how many."""
        rounds_since = get_hook(self.learner, "finetune_rounds")
        if rounds_since is None:
            return 0
        rounds = rounds_since(self.finetunes_reported)
        for seconds, samples, version in rounds:
            if self.metrics is not None:
                self.metrics.observe_finetune(seconds, samples, version)
            if self.recorder is not None:
                self.recorder.mark_finetune(seconds, samples, version)
        self.finetunes_reported += len(rounds)
        return len(rounds)

    def _apply_items(self, records: list[Any]) -> list[DeadLetter]:
        items: list[ItemMeta] = []
        letters = []
        for r in records:
            parsed = parse_item(r.value)
            if isinstance(parsed, Rejection):
                letters.append(dead_letter(r, parsed))
            else:
                items.append(parsed)
        if items:
            try:
                self.learner.add_items(items)
            except Exception as exc:  # noqa: BLE001 - a learner bug must not stop the stream or lose records
                log.exception("announcing %d items failed: dead-lettering them", len(items))
                rejection = Rejection("processing_error", f"{type(exc).__name__}: {exc}"[:500])
                letters += [dead_letter(r, rejection) for r in records
                            if not isinstance(parse_item(r.value), Rejection)]
        return letters

    def quality(self) -> dict[str, float]:
        """Rolling prequential AUC, HR@K, NDCG@K (as `StreamMetrics.set_quality` keywords)."""
        if self.evaluator is None:
            return {}
        rolling = self.evaluator.rolling()
        k = self.evaluator.k
        return {"auc": rolling["auc"], "hr_at_10": rolling[f"hr@{k}"], "ndcg_at_10": rolling[f"ndcg@{k}"]}

    def timings(self) -> dict[str, float]:
        """Mean ms per event waiting in Kafka (record time -> apply starts), per batch applying and
        sending: where the end-to-end latency goes."""
        s = self.timing_sums
        batches = max(s["batches"], 1)
        return {"batches": s["batches"], "events_per_batch": s["events"] / batches,
                "kafka_wait_ms_per_event": 1e3 * s["wait_s"] / max(s["events"], 1),
                "apply_ms_per_batch": 1e3 * s["apply_s"] / batches,
                "send_ms_per_batch": 1e3 * s["send_s"] / batches,
                **{f"{part}_ms_per_batch": 1e3 * s[f"{part}_s"] / batches
                   for part in ("stage", "stage_cpu", "flush", "flush_cpu", "fetch", "child_wait")}}

    # -- publishing --------------------------------------------------------------------------------
    def _mark_touched(self, users: list[str], event_ts: list[float], trigger_ts: list[float | None]) -> None:
        last = {u: i for i, u in enumerate(users)}  # each user's last event in the batch
        due = time.time() + self.debounce
        pending = self._pending
        for user, i in last.items():
            prev = pending.get(user)
            # the first unpublished event sets the deadline: a busy user still gets a list per window
            pending[user] = (event_ts[i], trigger_ts[i], due if prev is None else prev[2])

    def due_users(self, now: float | None = None, force: bool = False) -> list[Due]:
        """Pop the users whose list is due: (user, event_ts, trigger_ts)."""
        pending = self._pending
        if force or self.debounce <= 0:
            due = [(u, e, t) for u, (e, t, _) in pending.items()]
            pending.clear()
            return due
        now = time.time() if now is None else now
        due = [(u, e, t) for u, (e, t, d) in pending.items() if d <= now]
        for u, _, _ in due:
            del pending[u]
        return due

    def due_records(self, force: bool = False) -> list[tuple[bytes, bytes]]:
        """`recommendations` (key, value) records of the users whose list is due."""
        with self.lock:
            due = self.due_users(force=force)
            if not due:
                return []
            users, event_ts, trigger_ts = zip(*due, strict=True)
            try:
                recs = self.publisher.records(users, event_ts, trigger_ts)
            except Exception:  # noqa: BLE001 - a learner bug costs these lists, not the worker
                log.exception("recommend() failed for %d users; their lists are skipped", len(users))
                return []
        if self.metrics is not None:
            now = time.time()
            self.metrics.observe_publish_latency(np.asarray([now - t for t in trigger_ts if t is not None]),
                                                 len(recs))
        return recs

    def final_records(self) -> tuple[list[DeadLetter], list[tuple[bytes, bytes]]]:
        """Everything still pending (shutdown, revocation), as (dead letters, records)."""
        return [], self.due_records(force=True)

    # -- state -------------------------------------------------------------------------------------
    @property
    def events_applied(self) -> int:
        """Valid interactions the learner state reflects: the learner's own count when it keeps one
        (it survives checkpoints and `--init-state`), else the loop's."""
        count = get_hook(self.learner, "events_applied")
        return int(count) if count is not None else self.applied_count

    def checkpoint(self) -> Path | None:
        """Save learner state + offsets + counters atomically under `state_dir`; None without one."""
        return self.write_snapshot(self.snapshot())

    def snapshot(self) -> tuple[Any, dict[str, int], dict[str, Any]] | None:
        """The learner's state, offsets and counters, taken together: the only part of a checkpoint
        that must run on the learner's thread (the app writes it from another one). The state is a
        forked child writing it (`stream.forked`) where that is safe, else a copy."""
        from stream.forked import fork_checkpoint, fork_is_safe

        if self.state_dir is None:
            return None
        started = time.perf_counter()
        with self.lock:
            offsets = {f"{t}:{p}": o for (t, p), o in self.offsets.items()}
            meta = {"model_version": self.publisher.model_version, "batches_applied": self.batches_applied,
                    "applied_count": self.applied_count, "dead_letters": self.dead_letters,
                    "learner": type(self.learner).__name__}
            forked = fork_is_safe() if self.fork_checkpoints is None else self.fork_checkpoints
            if forked:
                with self.write_lock:  # the child writes: one write at a time
                    state = fork_checkpoint(self.learner, self.state_dir, offsets, meta)
            else:
                state = self.learner.state_dict()
            self.records_since_checkpoint = 0
        self.checkpoint_timings["pause_s"] = time.perf_counter() - started
        self.checkpoint_timings["forked"] = forked
        return state, offsets, meta

    def write_snapshot(self, snapshot: tuple[Any, dict[str, int], dict[str, Any]] | None) -> Path | None:
        """Write a `snapshot()` as the newest checkpoint, or wait for its forked child to (any thread;
        one write at a time)."""
        from stream.checkpoint import save_checkpoint
        from stream.forked import ForkedCheckpoint

        if snapshot is None:
            return None
        state, offsets, meta = snapshot
        started = time.perf_counter()
        with self.write_lock:
            if isinstance(state, ForkedCheckpoint):
                started = state.started
                path = state.wait()
            else:
                path = save_checkpoint(self.state_dir, state, offsets, meta)
        self.checkpoint_timings["write_s"] = time.perf_counter() - started
        self.last_checkpoint = {"path": str(path), "offsets": offsets, "created": time.time(),
                                **self.checkpoint_timings}
        if self.on_checkpoint is not None:
            self.on_checkpoint(path, offsets)
        log.info("checkpoint %s at %s", path.name, offsets)
        return path

    def restore(self, init_state: str | Path | None = None) -> str | None:
        """Load the newest checkpoint of `state_dir` (state, offsets, counters); without one, start
        warm from `init_state` (a replay's saved state: its offsets mean nothing here). Returns what
        was loaded; `events_restored` is then the events the loaded state holds (0: nothing loaded)."""
        loaded = self._load_state(init_state)
        self.events_restored = self.events_applied
        return loaded

    def _load_state(self, init_state: str | Path | None) -> str | None:
        from stream.checkpoint import CheckpointFormatError, load_latest_checkpoint

        try:
            found = load_latest_checkpoint(self.state_dir) if self.state_dir is not None else None
        except CheckpointFormatError as exc:
            raise SystemExit(f"--state-dir {self.state_dir}: {exc}") from None
        if found is not None:
            state, offsets, meta = found
            self.restored_from = meta["checkpoint"]["path"]
            self.learner.load_state_dict(state)
            self.offsets = {(t, int(p)): int(o) for t, p, o in
                            ((key.rsplit(":", 1)[0], key.rsplit(":", 1)[1], o) for key, o in offsets.items())}
            self.batches_applied = int(meta.get("batches_applied", 0))
            self.applied_count = int(meta.get("applied_count", 0))
            self.dead_letters = dict(meta.get("dead_letters", {}))
            version = meta.get("model_version", self.batches_applied)
            self.publisher.model_version = version
            self.last_checkpoint = {"path": meta["checkpoint"]["path"], "offsets": offsets,
                                    "created": meta["checkpoint"]["created"]}
            return meta["checkpoint"]["path"]
        if init_state:
            try:
                loaded = load_latest_checkpoint(init_state)
            except CheckpointFormatError as exc:
                raise SystemExit(f"--init-state {init_state}: {exc}") from None
            if loaded is None:
                raise SystemExit(f"--init-state {init_state}: no readable checkpoint there")
            self.restored_from = loaded[2]["checkpoint"]["path"]
            try:
                self.learner.load_state_dict(loaded[0])
            except (ValueError, KeyError) as exc:
                raise SystemExit(f"--init-state {init_state}: does not fit {type(self.learner).__name__} "
                                 f"({exc}); pass the --learner the replay used") from None
            return loaded[2]["checkpoint"]["path"]
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_worker_arguments(parser)
    parser.add_argument("--no-deep", action="store_true", default=None,
                        help=f"the learner without its deep (fine-tuned) second stage [{NO_DEEP_ENV}]")
    parser.add_argument("--no-drift", action="store_true", default=None,
                        help=f"no drift detection / adaptation on the live hit rate [{NO_DRIFT_ENV}]")
    parser.add_argument("--no-sync", action="store_true", default=None,
                        help="learn alone: no item-side deltas sent to or applied from the group's other "
                             "workers (the same as --sync-seconds 0)")
    parser.add_argument("--inline-validation", action="store_true", default=None,
                        help="validate and dead-letter records in the worker's own process instead of a "
                             f"child process beside it [{INLINE_VALIDATION_ENV}]")


def _switched_off(args: argparse.Namespace, flag: str, env_name: str, env: Any = None) -> bool:
    """The `--no-...` flag `flag`, else a true-looking `env_name` variable (1, true, yes, on)."""
    if getattr(args, flag, None):
        return True
    value = (os.environ if env is None else env).get(env_name, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _no_deep(args: argparse.Namespace, env: Any = None) -> bool:
    """--no-deep, else STREAMREC_NO_DEEP."""
    return _switched_off(args, "no_deep", NO_DEEP_ENV, env)


def _no_drift(args: argparse.Namespace, env: Any = None) -> bool:
    """--no-drift, else STREAMREC_NO_DRIFT."""
    return _switched_off(args, "no_drift", NO_DRIFT_ENV, env)


def _health_extra(live: LiveLoop) -> dict[str, Any]:
    return {"events_applied": live.events_applied, "events_restored": live.events_restored,
            "assigned": list(live.assignment),
            "drift_detections": None if live.monitor is None else live.monitor.detections,
            "dlq": dict(live.dead_letters),
            "dlq_total": sum(live.dead_letters.values()), "validation": dict(live.validation),
            "model_version": live.publisher.model_version,
            "checkpoint": dict(live.last_checkpoint), "timings": live.timings(),
            "users": {"changelog": live.user_topic is not None, "sent": live.users_sent,
                      "restored": live.users_restored, "restore_s": live.restore_s},
            "sync": {"on": live.deltas_topic is not None, **live.sync,
                     "item_watermarks": {str(p): o for p, o in
                                         (get_hook(live.learner, "item_watermarks") or {}).items()}},
            "offsets": {f"{t}:{p}": o for (t, p), o in sorted(live.offsets.items())}}


class _LockedRecommender:
    """The learner as the HTTP views see it: every call under the loop's lock."""

    def __init__(self, live: LiveLoop) -> None:
        self.live = live

    def recommend(self, user_ids: Sequence[str], k: int = 10) -> Any:
        with self.live.lock:
            return self.live.learner.recommend(user_ids, k)


def run(args: argparse.Namespace) -> int:
    import faust

    from stream.app import EventConsumer, ensure_topics, make_app
    from stream.http import LiveService, register_routes
    from stream.metrics import SeriesRecorder, StreamMetrics

    settings = Settings.from_args(args)
    if getattr(args, "no_sync", None):
        settings = dataclasses.replace(settings, sync_seconds=0.0)
    fields = settings.field_map()  # a bad --columns / --ts-unit / --types stops here, before connecting
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "aiokafka"):  # client chatter drowns the worker's own debug lines
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        created = ensure_topics(settings)
    except ConnectionError as exc:
        print(f"streamrec worker: {exc}", flush=True)
        return 2
    if created:
        log.info("created topics %s", ", ".join(created))
    metrics, recorder = StreamMetrics(), SeriesRecorder()
    learner = make_learner(settings.learner, deep=not _no_deep(args))
    if "torch" in sys.modules:  # only learners that use torch pay for importing it
        sys.modules["torch"].set_num_threads(max(1, settings.torch_threads))
    monitor = None if _no_drift(args) else drift_monitor(learner)
    modes = {"auto": None, "fork": True, "copy": False}
    if settings.checkpoint_mode not in modes:
        print(f"streamrec worker: checkpoint mode {settings.checkpoint_mode!r} is not one of "
              f"{', '.join(modes)}", flush=True)
        return 2
    live = LiveLoop(learner, k=settings.k, debounce=settings.debounce, state_dir=settings.state_dir,
                    metrics=metrics, recorder=recorder, monitor=monitor,
                    fork_checkpoints=modes[settings.checkpoint_mode], fields=fields)
    loaded = live.restore(settings.init_state or None)
    if has_hook(learner, "score_then_learn"):  # numba's kernels now, not at the first events
        from learners.warmup import warm_up

        spent = warm_up(lambda: make_learner(settings.learner, deep=not _no_deep(args)))
        log.info("kernels ready in %.2f s", spent)
    from stream.app import instance_id

    worker_id = instance_id(settings)
    if settings.sync_seconds > 0:
        live.share_items(settings.topic("item-deltas"), worker_id)
    live.hand_users_over(settings.topic("user-state"))
    if settings.audit_log:
        from stream.sync import AuditLog

        live.audit = AuditLog(settings.audit_log, worker_id)
    service = LiveService(_LockedRecommender(live), metrics, recorder,
                          known_user=get_hook(live.learner, "knows_user"),
                          extra_health=lambda: _health_extra(live))
    live.on_checkpoint = service.note_checkpoint
    if live.last_checkpoint["path"]:
        service.note_checkpoint(live.last_checkpoint["path"], live.last_checkpoint["offsets"])
    metrics.set_model_version(int(live.publisher.model_version or 0))

    def on_lag(lag: dict[tuple[str, int], int]) -> None:
        metrics.set_lag(lag)
        recorder.record(live.events_applied, lag=float(sum(lag.values())), **live.quality())

    app = make_app(settings)
    register_routes(app, service)
    inline = _switched_off(args, "inline_validation", INLINE_VALIDATION_ENV)
    consumer = EventConsumer(settings, live, on_lag=on_lag, validate_in_child=not inline)
    print(json.dumps({"worker": type(learner).__name__,
                      "deep": get_hook(learner, "reranker") is not None, "bootstrap": settings.bootstrap,
                      "topic_prefix": settings.topic_prefix, "restored": loaded,
                      "web": f"http://{settings.web_host}:{settings.web_port}"}), flush=True)
    worker = faust.Worker(app, consumer, loglevel=settings.log_level, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its cursor escapes would litter log files
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if live.audit is not None:
            live.audit.write("final", events_applied=live.events_applied,
                             drift_detections=None if live.monitor is None else live.monitor.detections,
                             item_counts_digest=live.item_counts_digest(), sync=dict(live.sync))
            live.audit.close()
        close = get_hook(learner, "close")
        if close is not None:  # a background fine-tune still running ends before the process does
            close()
    return 0


class WorkerProcess:
    """`streamrec worker` in a child process (tests, benches, demos); a context manager that always
    stops it. `kill()` is the crash (SIGKILL); `stop()` the graceful SIGTERM.

    >>> w = WorkerProcess("127.0.0.1:9092", "t-", "/tmp/state", web_port=16099)  # doctest: +SKIP
    >>> with w.start():                                                          # doctest: +SKIP
    ...     w.wait_ready(); w.health()["events_applied"]
    """

    def __init__(self, bootstrap: str, topic_prefix: str, state_dir: str | Path, web_port: int | None = None,
                 args: Sequence[str] = (), log_path: str | Path | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.state_dir = Path(state_dir)
        if web_port is None:
            from stream.broker import free_port

            web_port = free_port()
        self.web_port = web_port
        self.args = list(args)
        self.log_path = Path(log_path) if log_path is not None else self.state_dir / "worker.log"
        self.proc: Any = None

    def command(self) -> list[str]:
        import shutil
        import sys

        cmd = [sys.executable, "-m", "stream.cli", "worker", "--bootstrap", self.bootstrap,
               "--topic-prefix", self.topic_prefix, "--state-dir", str(self.state_dir),
               "--web-port", str(self.web_port), *self.args]
        setpriv = shutil.which("setpriv")  # the worker dies with us: no orphan after a killed test run
        return [setpriv, "--pdeathsig", "TERM", *cmd] if setpriv else cmd

    def start(self) -> WorkerProcess:
        import subprocess

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(self.command(), stdout=log_file, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        return self

    def health(self, timeout: float = 2.0) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}/health", timeout=timeout) as resp:
            return json.loads(resp.read())

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the worker answers `/health` with partitions assigned; return that health."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                health = self.health()
                if health.get("assigned"):
                    return health
                last = health
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s ({last!r}):\n{self.log_tail()}")

    def wait_applied(self, n: int, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until `events_applied` reaches `n`; return that health."""
        return self.wait_health(lambda health: health["events_applied"] >= n, timeout,
                                f"events_applied >= {n}")

    def wait_health(self, until: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                    what: str = "the condition") -> dict[str, Any]:
        """Poll `/health` until `until(health)` holds; return that health (TimeoutError, with the
        worker's log, after `timeout` seconds). Counters that follow the applied events (dead letters of
        another partition, validation counts) are waited for so, not read right after `wait_applied`."""
        deadline = time.monotonic() + timeout
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                health = self.health()
                if until(health):
                    return health
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not reached after {timeout}s (events_applied "
                           f"{health.get('events_applied')}):\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: a crash, no checkpoint at exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (final publish + checkpoint); SIGKILL after `timeout`."""
        import subprocess

        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
