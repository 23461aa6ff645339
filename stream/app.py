"""The Faust app of the live loop: topics, their creation, and the service that consumes them.

Faust runs the worker (lifecycle, signals, logging, the web server with `/metrics`, `/health`, ...).
Events are consumed by `EventConsumer`, a `mode.Service` started with the Faust worker, which reads
whole micro-batches with aiokafka's `getmany` instead of Faust's per-event agent streams: on the 2-core
development box a `stream.take_events` agent delivered ~1,500 events/s, a bare `getmany` loop ~400,000/s
(the worker as a whole: bench/e2e.py). It also owns
the offsets: they are saved with the learner state in each checkpoint, committed to Kafka only after
that checkpoint is on disk, and on assignment the consumer seeks to the checkpoint's offsets, so state
and offsets never disagree.

Topics carry raw bytes: `stream.schema` decodes and validates, so a malformed payload becomes a dead
letter instead of killing the consumer. `recommendations` is log-compacted, keyed by user id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.partitioner import DefaultPartitioner
from mode import Service

from stream.config import TOPICS, Settings
from stream.deadletter import by_dlq_partition
from stream.sending import BatchSender, new_producer

log = logging.getLogger("streamrec.app")

AHEAD_FETCHES = 4  # fetches validating in the child while the learner works (bounds the memory held)
# Share of refused records (moving average over fetches) above which fetches are validated in the
# child, and below which they are validated in place again: in place is cheaper while records are good
# (no copies between processes, one less process on the cores), the child while many are bad.
OFFLOAD_ABOVE, INLINE_BELOW = 0.05, 0.01
BAD_SHARE_WEIGHT = 0.5  # weight of the newest fetch in that moving average
STOP_GRACE_S = 10.0  # how long a stopping worker keeps trying to deliver before it gives up
# a rebalance callback that has waited this long for the batch in flight logs every task's and thread's
# stack (and goes on waiting): a worker that never lets its partitions go shows where it is stuck
REBALANCE_WAIT_WARN_S = 15.0
_partitioner = DefaultPartitioner()


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Kafka configs of the topics the worker creates: the latest list per user is all a reader of
    `recommendations` needs (compacted); retentions from the settings."""
    configs: dict[str, dict[str, str]] = {
        "recommendations": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                            "segment.ms": "600000"},
        "interactions.dlq": {"retention.ms": str(settings.dlq_retention_ms)},
        "item-deltas": {"retention.ms": str(settings.deltas_retention_ms)},
        # the latest state of each user, co-partitioned with interactions (stream.sync)
        "user-state": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                       "segment.ms": "600000"},
        # the latest item-side snapshots, for workers that join after item-deltas' retention (stream.sync)
        "item-state": {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1",
                       "segment.ms": "600000"},
    }
    if settings.retention_ms > 0:
        configs["interactions"] = {"retention.ms": str(settings.retention_ms)}
    return configs


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the topics (`TOPICS`) under `settings.topic_prefix` unless they exist; returns those created.

    Retries until the broker answers or `timeout` seconds pass (the broker may still be starting)."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(client_id="streamrec-admin", request_timeout_ms=10_000,
                                     **settings.kafka_python_kwargs())
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"Kafka broker at {settings.bootstrap} unreachable: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        configs = topic_configs(settings)
        wanted = {
            # item-deltas, item-state: one partition, one order of every worker's records (stream.sync)
            settings.topic(name): {"num_partitions": 1 if name in ("item-deltas", "item-state")
                                   else settings.partitions,
                                   "replication_factor": settings.replication_factor,
                                   "configs": configs.get(name, {})}
            for name in TOPICS if settings.topic(name) not in existing
        }
        if wanted:
            try:
                admin.create_topics(wanted, timeout_ms=15_000, wait_for_metadata=True)
            except TopicAlreadyExistsError:  # another worker or producer raced us: fine
                pass
        return sorted(wanted)
    finally:
        admin.close()


def make_app(settings: Settings, **options: Any) -> Any:
    """A `faust.App` for `settings`: web server and lifecycle; Faust's own consumer stays off (see
    the module docstring), `EventConsumer` does the consuming."""
    import faust
    from faust.app.base import BootStrategy

    data_dir = settings.state_path / "faust"
    data_dir.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = dict(
        broker=[f"kafka://{hp}" for hp in settings.bootstrap.split(",")],
        store="memory://",
        datadir=str(data_dir),
        autodiscover=False,
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_disable_leader=True,
    )
    credentials = settings.faust_credentials()
    if credentials is not None:
        conf["broker_credentials"] = credentials
    conf.update(options)
    app = faust.App(settings.group_id, **conf)
    app.boot_strategy = BootStrategy(app, enable_kafka=False, enable_web=True)
    return app


def instance_id(settings: Settings) -> str:
    """Static group membership id: one per host and state dir (a state dir has one writer), so a
    restarted worker takes its partitions back at once instead of waiting out the session timeout."""
    path = str(Path(settings.state_dir).resolve())
    return f"{settings.group_id}-{socket.gethostname()}-{hashlib.sha1(path.encode()).hexdigest()[:10]}"


class EventConsumer(Service):
    """Consumes `items` and `interactions` in micro-batches and hands them to a `LiveLoop`-like
    `live` object (see `stream.worker`), sending what it returns; checkpoints state with offsets.

    With `validate_in_child`, a `stream.validator.ValidatorProcess` validates the interactions and
    dead-letters the refused ones beside the learner, one fetch ahead of it.

    `live` provides: `stage(item_records, interaction_records) -> good events pending`,
    `merged(records, started)` and `stage_validated(items, records, record_ts, validated)` (the same
    with validation done elsewhere), `unstage(partitions)`, `flush() ->
    (dead letters, recommendation records)`, `due_records()`, `final_records()`, `offsets` (dict
    (topic, partition) -> next offset), `checkpoint() -> path | None`, `records_since_checkpoint`,
    `executor` (the one thread that runs every learner call), `assignment`, `timing_sums`.
    """

    def __init__(self, settings: Settings, live: Any, on_lag: Callable[[dict], None] | None = None,
                 validate_in_child: bool = True, **kwargs: Any) -> None:
        self.settings = settings
        self.live = live
        self.on_lag = on_lag
        self.consumer: Any = None
        self.producer: Any = None
        self._last_checkpoint = time.monotonic()
        self._writing: asyncio.Future | None = None  # the checkpoint write in progress, off the loop
        self._batch_lock = asyncio.Lock()
        self.sender: BatchSender | None = None  # the producer's batches in flight, resent until acknowledged
        self._key_partition: dict[bytes, int] = {}
        self._give_up_at = float("inf")  # when stopping: stop retrying sends after this (monotonic)
        self._undelivered = False  # some applied batch's records were never sent: never checkpoint again
        # stream.validator.ValidatorProcess: validation and dead letters off the learner's interpreter
        self.validator: Any = None
        self.validate_in_child = validate_in_child
        self._ahead: deque[Fetched] = deque()  # the next fetches, validating while the learner works
        self.generation = 0  # bumped on each revocation: fetches made before it are not staged
        self.bad_share = 0.0  # moving average of the refused share of recent fetches
        self.offloading = False  # fetches go to the validator process (see OFFLOAD_ABOVE)
        self.deltas: Any = None  # stream.sync.DeltaReader when this worker shares item-side state
        self._last_sync = time.monotonic()
        self._last_snapshot = time.monotonic()  # the first one `snapshot_seconds` after the start
        self._snapshot_id = int(time.time())  # ids grow across restarts: the newest complete one wins
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        conn = s.aiokafka_kwargs()
        self.producer = new_producer(f"{s.group_id}-producer", conn)
        self.sender = BatchSender(self.producer, on_failure=self._maybe_give_up)
        self.consumer = AIOKafkaConsumer(
            client_id=f"{s.group_id}-consumer", group_id=s.group_id, group_instance_id=instance_id(s),
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=s.batch_size,
            fetch_max_wait_ms=max(1, int(s.batch_timeout * 1000)), session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000, max_poll_interval_ms=300_000, **conn,
        )
        self.consumer.subscribe([s.topic("items"), s.topic("interactions")], listener=_Rebalance(self))
        await self.producer.start()
        if self.live.deltas_topic is not None:
            from stream.sync import DeltaReader

            if self.live.restored_from is None:  # no state of our own: the group's, when it has one
                await self._load_snapshot()
            self.deltas = DeltaReader(s)
            await self.deltas.start(self.live.offsets.get((self.deltas.topic, 0)))
            applied = await self.deltas.catch_up(self._apply_deltas)
            log.info("item deltas: caught up (%d records)", applied)
        await self.consumer.start()
        if self.validate_in_child:
            from stream.validator import ValidatorProcess

            try:
                self.validator = ValidatorProcess(s).start()
            except Exception:  # noqa: BLE001 - validating in the worker still works
                log.exception("validator process did not start: validating in the worker")

    async def on_stop(self) -> None:
        self._give_up_at = time.monotonic() + STOP_GRACE_S
        async with self._batch_lock:  # let the batch in flight finish, then save where we are
            if self.consumer is not None:
                try:
                    await self._publish(*await self._in_learner(self.live.final_records))
                    if self.live.records_since_checkpoint:
                        await self.checkpoint()
                    else:
                        await self.sender.settle()
                        await self.settle_checkpoint()
                except Undelivered as exc:
                    log.warning("%s: no final checkpoint; a restart replays from the previous one", exc)
                except Exception:  # noqa: BLE001 - still stop the clients
                    log.exception("final checkpoint failed")
                await self.consumer.stop()
            if self.deltas is not None:
                await self.deltas.stop()
            if self.producer is not None:
                await self.producer.stop()
            self._close_validator(stopping=True)

    @contextlib.asynccontextmanager
    async def rebalance_lock(self, what: str) -> AsyncIterator[None]:
        """The batch lock, for a rebalance step; past REBALANCE_WAIT_WARN_S it logs where every task and
        thread is, then goes on waiting."""
        try:
            await asyncio.wait_for(self._batch_lock.acquire(), REBALANCE_WAIT_WARN_S)
        except TimeoutError:
            from stream.stacks import task_stacks

            log.warning("%s has waited %.0f s for the batch in flight; stacks:\n%s", what,
                        REBALANCE_WAIT_WARN_S, task_stacks())
            await self._batch_lock.acquire()
        try:
            yield
        finally:
            self._batch_lock.release()

    async def _in_learner(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.live.executor, fn, *args)

    @Service.task
    async def _consume(self) -> None:
        s = self.settings
        timeout_ms = max(1, int(s.batch_timeout * 1000))
        while not self.should_stop:
            try:
                fetched = await self._next_fetched(timeout_ms)
            except Exception as exc:  # noqa: BLE001 - broker trouble: aiokafka reconnects, we retry
                log.warning("fetch failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            try:
                async with self._batch_lock:
                    if self.should_stop:
                        break
                    await self._process(fetched)
                if self.on_lag is not None and fetched is not None:
                    self.on_lag(self.lag())
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the worker outlives any single batch
                log.exception("processing a batch failed; going on")
                await asyncio.sleep(0.1)

    async def _next_fetched(self, timeout_ms: int) -> Fetched | None:
        """The fetch already validating ahead, else a new one (None: nothing came)."""
        if self._ahead:
            return self._ahead.popleft()
        t0 = time.perf_counter()
        got = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.settings.batch_size)
        if not got:
            return None
        fetched = self._prepare(got)
        self.live.timing_sums["fetch_s"] += time.perf_counter() - t0
        return fetched

    def _prepare(self, got: dict) -> Fetched:
        """Split a fetch into items and interactions; with a validator process, the interactions
        (merged by record time) start validating there at once."""
        topic_items = self.settings.topic("items")
        items, interactions = [], []
        for tp, records in got.items():
            (items if tp.topic == topic_items else interactions).extend(records)
        if interactions and self.validator is not None and self.offloading:
            records, record_ts = self.live.merged(interactions, time.time())
            return Fetched(items, records, record_ts, self.validator.submit(records, record_ts),
                           self.generation)
        return Fetched(items, interactions, None, None, self.generation)

    async def _fetch_ahead(self) -> None:
        """Start validating the next fetches (those already waiting, up to `AHEAD_FETCHES`) while the
        learner works on this one."""
        while (self.validator is not None and self.offloading and len(self._ahead) < AHEAD_FETCHES
               and not self.should_stop):
            t0 = time.perf_counter()
            try:
                got = await self.consumer.getmany(timeout_ms=0, max_records=self.settings.batch_size)
            except Exception as exc:  # noqa: BLE001 - the next regular fetch retries
                log.debug("fetch ahead failed (%s)", exc)
                return
            if not got:
                return
            self._ahead.append(self._prepare(got))
            self.live.timing_sums["fetch_s"] += time.perf_counter() - t0

    def drop_ahead(self) -> None:
        """Forget the fetches validating ahead (partitions revoked, or stopping): never staged, their
        offsets are not in any checkpoint, so they are fetched again (their dead letters may then go
        out twice: the dead-letter topic is at-least-once)."""
        for fetched in self._ahead:
            if fetched.validating is not None:
                fetched.validating.cancel()
        self._ahead.clear()

    async def _stage(self, fetched: Fetched) -> int:
        """Stage a fetch in the learner's stage; returns the good interactions pending."""
        live = self.live
        if fetched.generation != self.generation:  # fetched before a revocation: fetched again later
            if fetched.validating is not None:
                fetched.validating.cancel()
            return await self._in_learner(live.stage, [], [])
        seen, refused = live.validation["in_place"] + live.validation["in_child"], live.validation["refused"]
        if fetched.validating is None:
            good = await self._in_learner(live.stage, fetched.items, fetched.interactions)
        else:
            t0 = time.perf_counter()
            try:
                validated = await fetched.validating
            except EOFError as exc:  # its dead letters of this fetch may be out already: at-least-once
                log.error("%s: validating in the worker from now on", exc)
                self._close_validator()
                good = await self._in_learner(live.stage, fetched.items, fetched.interactions)
            else:
                live.timing_sums["child_wait_s"] += time.perf_counter() - t0
                good = await self._in_learner(live.stage_validated, fetched.items, fetched.interactions,
                                              fetched.record_ts, validated)
        n = live.validation["in_place"] + live.validation["in_child"] - seen
        if n and self.validator is not None:
            share = (live.validation["refused"] - refused) / n
            self.bad_share += BAD_SHARE_WEIGHT * (share - self.bad_share)
            if self.offloading != (self.bad_share > (INLINE_BELOW if self.offloading else OFFLOAD_ABOVE)):
                self.offloading = not self.offloading
                log.info("refused share %.3f: validating %s", self.bad_share,
                         "in the validator process" if self.offloading else "in place")
        await self._fetch_ahead()
        return good

    def _close_validator(self, stopping: bool = False) -> None:
        """Stop the validator process; the fetches validating ahead are validated here instead (or,
        when `stopping`, dropped)."""
        validator, self.validator = self.validator, None
        if stopping:
            self.drop_ahead()
        else:
            for i, fetched in enumerate(self._ahead):
                if fetched.validating is not None:
                    fetched.validating.cancel()
                    self._ahead[i] = fetched._replace(validating=None)
        if validator is not None:
            validator.close()

    async def _load_snapshot(self) -> None:
        """Start from the newest complete item-state snapshot (the item side of a worker's checkpoint)
        and read item-deltas from the position it reflects, instead of from the topic's start."""
        from stream.sync import assemble_snapshot, read_partition

        started = time.perf_counter()
        try:
            records = await read_partition(self.settings, self.settings.topic("item-state"), 0)
            folder = self.settings.state_path / "snapshot-in"
            found = assemble_snapshot(records, folder)
            if found is None:
                return
            position, head = found
            await self._in_learner(self.live.load_item_snapshot, folder, position)
        except Exception:  # noqa: BLE001 - the deltas from the topic's start still make the state
            log.exception("loading the item-state snapshot failed; catching up on every delta instead")
            return
        self.live.sync["snapshot_loaded"] = {"from": head["worker"], "id": head["id"], "position": position,
                                             "seconds": time.perf_counter() - started}
        log.info("item-state snapshot %s loaded (item-deltas from %d)", head["id"], position)

    async def _maybe_snapshot(self, path: Any, offsets: dict[str, int]) -> None:
        """After a checkpoint: its item side to item-state, at most every `snapshot_seconds`."""
        from stream.sync import snapshot_records

        s = self.settings
        if (self.live.deltas_topic is None or s.snapshot_seconds <= 0
                or time.monotonic() - self._last_snapshot < s.snapshot_seconds):
            return
        self._last_snapshot = time.monotonic()
        position = offsets.get(f"{self.live.deltas_topic}:0", 0)
        self._snapshot_id += 1
        try:
            records = await asyncio.get_running_loop().run_in_executor(
                None, snapshot_records, path, self.live.worker_id, self._snapshot_id, position)
            futures = [await self.producer.send(s.topic("item-state"), value, key=key, partition=0)
                       for key, value in records]
            await asyncio.gather(*futures)
            self.live.sync["snapshots_sent"] = self.live.sync.get("snapshots_sent", 0) + 1
        except Exception as exc:  # noqa: BLE001 - the next checkpoint tries again
            log.warning("item-state snapshot failed (%s)", exc)

    async def _apply_deltas(self, records: list[Any]) -> None:
        letters = await self._in_learner(self.live.apply_deltas, records)
        if letters:
            await self._publish(letters, [])

    async def _sync_in(self) -> None:
        """Apply the other workers' deltas that have arrived (no wait)."""
        if self.deltas is None:
            return
        try:
            records = await self.deltas.poll(0)
        except Exception as exc:  # noqa: BLE001 - broker trouble: the next batch tries again
            log.warning("reading item deltas failed (%s)", exc)
            return
        if records:
            await self._apply_deltas(records)

    async def send_seen(self) -> None:
        """Tell the other workers at once of the items first seen here in this batch (keyed by this
        worker, which skips its own notices)."""
        if self.live.deltas_topic is None or not self.live.has_seen_notice:
            return
        notice = await self._in_learner(self.live.take_seen_notice)
        if notice is not None:
            await self.sender.send(self.live.deltas_topic, 0, [(self.live.worker_id.encode(), notice, None)])

    async def sync_out(self, force: bool = False) -> None:
        """Send the item-side deltas learned since the last sync, when `sync_seconds` have passed or
        `sync_events` events were learned (or `force`: before a checkpoint, so a checkpoint never holds
        learning the others cannot get)."""
        if self.live.deltas_topic is None:
            return
        if (not force and time.monotonic() - self._last_sync < self.settings.sync_seconds
                and self.live.events_since_deltas < self.settings.sync_events):
            return
        self._last_sync = time.monotonic()
        records = await self._in_learner(self.live.take_deltas)
        if records:
            await self.sender.send(self.live.deltas_topic, 0, [(k, v, None) for k, v in records])

    async def flush_users(self) -> None:
        """The users touched since the last checkpoint to the user-state changelog, in their partition."""
        if self.live.user_topic is None:
            return
        records = await self._in_learner(self.live.user_records)
        by_partition: dict[int, list] = {}
        for partition, key, value in records:
            by_partition.setdefault(partition, []).append((key, value, None))
        for partition, chunk in by_partition.items():
            await self.sender.send(self.live.user_topic, partition, chunk)

    async def take_over(self, tp: Any) -> None:
        """An interactions partition just assigned: when another worker moved it past this worker's own
        checkpoint (or this worker never held it), load its users from the changelog and start from the
        group's committed offset; else go on from the checkpoint's."""
        from stream.sync import read_partition

        live = self.live
        key = (tp.topic, tp.partition)
        own = live.offsets.get(key)
        committed = await self.consumer.committed(tp)
        if committed is not None and (own is None or committed > own):
            if live.user_topic is not None:
                started = time.perf_counter()
                records = await read_partition(self.settings, live.user_topic, tp.partition)
                live.restore_s += time.perf_counter() - started  # restore_users adds the loading
                letters = await self._in_learner(live.restore_users, records)
                if letters:
                    await self._publish(letters, [])
                log.info("took over %s:%d at %d: %d user records", tp.topic, tp.partition, committed,
                         len(records))
            live.offsets[key] = committed
            self.consumer.seek(tp, committed)
        elif own is not None:
            self.consumer.seek(tp, own)

    async def _process(self, fetched: Fetched | None) -> None:
        s = self.settings
        t0 = time.perf_counter()
        n_items = n_interactions = 0
        await self._sync_in()
        if fetched is not None:
            good = await self._stage(fetched)
            n_items, n_interactions = len(fetched.items), len(fetched.interactions)
            # Many bad records in this fetch: top the batch up with what is already fetched, so the
            # learner gets a full batch of good events (its per-batch cost is mostly fixed).
            while good < s.batch_size and n_interactions < 4 * s.batch_size and not self.should_stop:
                more = await self._next_fetched(0)
                if more is None:
                    break
                n_items, n_interactions = n_items + len(more.items), n_interactions + len(more.interactions)
                good = await self._stage(more)
            await self.send_seen()  # items new here, before learning them: the others wait for it
            letters, recs = await self._in_learner(self.live.flush)  # the next fetch validates meanwhile
        elif self.live.has_pending_lists:  # nothing fetched: only debounced lists may be due
            letters, recs = [], await self._in_learner(self.live.due_records)
        else:
            letters, recs = [], []
        t1 = time.perf_counter()
        await self.send_seen()  # first: the other workers' evaluators wait for it, the lists' users do not
        await self._publish(letters, recs)
        await self.sync_out()
        self.live.timing_sums["send_s"] += time.perf_counter() - t1
        if fetched is not None:
            log.debug("batch: %d items, %d interactions -> %d dead letters, %d lists; apply %.1f ms, "
                      "send %.1f ms", n_items, n_interactions, len(letters), len(recs),
                      1e3 * (t1 - t0), 1e3 * (time.perf_counter() - t1))
        since = self.live.records_since_checkpoint
        if since and (since >= s.checkpoint_events
                      or time.monotonic() - self._last_checkpoint >= s.checkpoint_seconds):
            await self.checkpoint(wait=False)  # the write goes on while the next batches are consumed

    async def _publish(self, letters: list, recs: list[tuple[bytes, bytes]]) -> None:
        """Send dead letters and lists in per-partition batches (no per-record coroutine: a flood of
        bad records must not slow the good ones down). The previous batch's sends are confirmed (and
        failures resent) first: delivery is at-least-once, a user's lists stay in order, and waiting
        for acks overlaps with the next batch's work."""
        await self.sender.settle()
        if letters:
            topic = self.settings.topic("interactions.dlq")
            n = len(await self.producer.partitions_for(topic))
            by_partition = by_dlq_partition(letters, n)
            for partition, records in by_partition.items():
                await self.sender.send(topic, partition, records)
        if recs:
            topic = self.settings.topic("recommendations")
            parts = sorted(await self.producer.partitions_for(topic))
            by_partition = {}
            for key, value in recs:  # Kafka's murmur2 key partitioning: compaction needs one home per user
                partition = self._key_partition.get(key)
                if partition is None:
                    if len(self._key_partition) > 1_000_000:
                        self._key_partition.clear()
                    partition = self._key_partition[key] = _partitioner(key, parts, parts)
                by_partition.setdefault(partition, []).append((key, value, None))
            for partition, records in by_partition.items():
                await self.sender.send(topic, partition, records)

    def _maybe_give_up(self, exc: BaseException) -> None:
        if self.should_stop and time.monotonic() > self._give_up_at:
            self._undelivered = True
            raise Undelivered(f"records still undelivered after {STOP_GRACE_S:.0f}s of stopping ({exc!r})")

    async def checkpoint(self, wait: bool = True) -> bool:
        """Save state + offsets once every record they reflect is delivered, then commit them.

        The learner pauses only for the fork or the state copy; the write runs off the event loop.
        With `wait=False` the loop goes on consuming meanwhile (one write at a time: a checkpoint
        due while one is written waits for a later batch; returns False then)."""
        if self._writing is not None and not self._writing.done():
            if not wait:
                return False
            await self._writing
        await self.sync_out(force=True)  # the item side of the saved events goes to the others first
        await self.flush_users()  # and the state of the users they touched, for a partition's next owner
        await self.sender.settle()  # lists, dead letters and deltas of the saved events are out first
        if self._undelivered:
            raise Undelivered("records of applied events were dropped")
        snapshot = await self._in_learner(self.live.snapshot)
        self._last_checkpoint = time.monotonic()
        self._writing = asyncio.ensure_future(self._write_checkpoint(snapshot))
        if wait:
            await self._writing
        return True

    async def settle_checkpoint(self) -> None:
        """Wait for the checkpoint write in progress, and its offset commit (before partitions leave)."""
        if self._writing is not None:
            await self._writing

    async def _write_checkpoint(self, snapshot: Any) -> None:
        from aiokafka import TopicPartition

        try:
            path = await asyncio.get_running_loop().run_in_executor(None, self.live.write_snapshot, snapshot)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk: the previous checkpoint stands
            # a restart replays from the previous checkpoint: keep learning, try again later
            self.live.last_checkpoint["error"] = f"{type(exc).__name__}: {exc}"
            log.error("checkpoint failed; the previous one stands: %s", exc)
            return
        if path is None:
            return
        mine = self.consumer.assignment()
        saved = {TopicPartition(key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1])): o
                 for key, o in snapshot[1].items()}  # the offsets this checkpoint holds, not later ones
        offsets = {tp: o for tp, o in saved.items() if tp in mine}
        if offsets:
            try:  # for lag monitoring only: restarts seek to the checkpoint's offsets
                await self.consumer.commit(offsets)
            except Exception as exc:  # noqa: BLE001 - e.g. a rebalance in progress
                log.warning("offset commit failed (%s); the checkpoint has them", exc)
        await self._maybe_snapshot(path, snapshot[1])

    def lag(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                key = (tp.topic, tp.partition)
                out[key] = max(0, high - self.live.offsets.get(key, 0))
        return out


class Fetched(NamedTuple):
    """One fetch: `items` and `interactions` records; with a validator process, the interactions
    merged by record time, their record times, and the child's validation (a future) of them."""

    items: list[Any]
    interactions: list[Any]
    record_ts: list[float | None] | None
    validating: asyncio.Future | None
    generation: int = 0  # `EventConsumer.generation` when fetched


class Undelivered(RuntimeError):  # noqa: N818 - reads as a state: "records undelivered"
    """Sends kept failing while stopping: the state must not be checkpointed past them."""


class _Rebalance(ConsumerRebalanceListener):
    """Checkpoint before partitions leave; seek to the checkpoint's offsets when they arrive."""

    def __init__(self, owner: EventConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # aiokafka calls this from its coordination task, beside the consuming one: the batch in
        # progress ends first (learned, its lists sent), so the checkpoint below covers it
        owner = self.owner
        leaving = {(tp.topic, tp.partition) for tp in revoked}
        gone = {f"{topic}:{partition}" for topic, partition in leaving}
        owner.live.assignment = [name for name in owner.live.assignment if name not in gone]
        async with owner.rebalance_lock("revocation"):
            owner.drop_ahead()
            if not revoked:
                return
            owner.generation += 1  # a fetch taken before this and not yet staged is dropped
            # staged, not learned (a batch that failed midway): the next owner applies them
            dropped = await owner._in_learner(owner.live.unstage, leaving)
            if dropped:
                log.info("revoked: %d staged events left to the partitions' next owner", dropped)
            try:
                if owner.live.records_since_checkpoint:
                    await owner._publish(*await owner._in_learner(owner.live.final_records))
                    await owner.checkpoint()
                else:  # a periodic write may still be on its way: on disk before the partitions leave
                    await owner.settle_checkpoint()
            except Exception:  # noqa: BLE001 - the next owner replays from the previous checkpoint
                log.exception("checkpoint on revocation failed")

    async def on_partitions_assigned(self, assigned: Any) -> None:
        owner = self.owner
        live = owner.live
        if owner.deltas is not None:
            # the previous owners sent their deltas before letting go (checkpoint on revocation): apply
            # them first, so the events they learned are re-learned here for their users only
            async with owner.rebalance_lock("catching up on item deltas"):
                started = time.monotonic()
                try:
                    n = await owner.deltas.catch_up(owner._apply_deltas)
                    log.info("caught up on %d item delta records in %.1f s", n, time.monotonic() - started)
                except Exception:  # noqa: BLE001 - the deltas still come, later, through the batches
                    log.exception("catching up on item deltas failed")
        interactions = self.owner.settings.topic("interactions")
        async with owner.rebalance_lock("assignment"):
            for tp in assigned:
                if tp.topic == interactions:
                    try:
                        await owner.take_over(tp)
                        continue
                    except Exception:  # noqa: BLE001 - go on from this worker's own offsets
                        log.exception("taking over %s:%d failed", tp.topic, tp.partition)
                saved = live.offsets.get((tp.topic, tp.partition))
                if saved is not None:
                    owner.consumer.seek(tp, saved)
        # `/health` shows the partitions once they are taken over (their users restored): "ready" means
        # that (`WorkerProcess.wait_ready`, the benches' `ready_s`)
        live.assignment = sorted(f"{tp.topic}:{tp.partition}" for tp in owner.consumer.assignment())
        log.info("assigned %s", ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)))
