"""Validation and dead-lettering of `interactions` records in a child process, beside the learner.

The learner's thread holds the GIL for most of a micro-batch, so every malformed record validated and
dead-lettered in the worker's own interpreter is time taken from good events (a 1:1 flood cut their
throughput to ~0.68 of clean). `ValidatorProcess` runs that per-record Python in a spawned child:
the consumer sends a fetch's records (values, keys, origin, record times), the child validates them
with `stream.schema.validate_interactions`, produces every refused one to `interactions.dlq` (reason
and origin in headers) and waits for the broker's acknowledgement, then answers with the good events
as a columnar `Interactions` batch, their positions and the refusals' positions and reasons. The
consumer sends the next fetch before it learns the current batch, so the child works while the
learner does.

Dead letters are acknowledged before the answer, so a checkpoint taken after the batch is learned
never claims a refused record that is not in the dead-letter topic. The child exits on EOF of its
pipe, on `close`, or within half a second of its parent's death.

>>> # the worker's EventConsumer drives it; see stream/app.py (--inline-validation: no child)
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from typing import Any, NamedTuple

from stream.config import Settings
from stream.deadletter import by_dlq_partition, dead_letter
from stream.schema import DEFAULT_FIELDS, FieldMap, validate_interactions
from stream.sending import BatchSender, new_producer

log = logging.getLogger("streamrec.validator")

class Validated(NamedTuple):
    """The child's answer for one fetch: good events (in the order sent), where they were, and the
    refused records' positions and reasons (already acknowledged in the dead-letter topic)."""

    batch: Any  # learners.base.Interactions
    positions: Any  # np.ndarray of int64
    rejected: list[int]
    reasons: list[str]


class ValidatorProcess:
    """One spawned child that validates `interactions` records and dead-letters the bad ones.
    `submit` queues a request and returns an asyncio future of its `Validated` answer; requests are
    answered in order, several may be in flight. The parent's event loop never blocks on the child:
    requests go out on a sender thread (a large one outgrows the pipe), answers come in through the
    loop's reader callback."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._process: Any = None
        self._conn: Any = None
        self._sender: Any = None
        self._pending: deque[asyncio.Future] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dead: BaseException | None = None  # why the child is gone, once it is

    def start(self) -> ValidatorProcess:
        import multiprocessing as mp
        from concurrent.futures import ThreadPoolExecutor

        ctx = mp.get_context("spawn")  # fork would copy the worker's threads and locks
        parent_end, child_end = ctx.Pipe(duplex=True)
        process = ctx.Process(target=serve, args=(child_end, self.settings, os.getpid()),
                              name="streamrec-validator", daemon=True)
        process.start()
        child_end.close()
        self._process, self._conn = process, parent_end
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validator-send")
        return self

    def submit(self, records: list[Any], record_ts: list[float | None]) -> asyncio.Future:
        """Validate `records` (aiokafka `ConsumerRecord`s or `stream.worker.RawRecord`s, in the order
        they are to be learned) in the child; the future raises `EOFError` when the child is gone."""
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        if self.dead is not None:
            answer.set_exception(EOFError(f"the validator process is gone ({self.dead!r})"))
            return answer
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._readable)
        self._pending.append(answer)
        request = ([r.value for r in records], [r.key for r in records], [r.topic for r in records],
                   [r.partition for r in records], [r.offset for r in records], record_ts)
        sent = loop.run_in_executor(self._sender, self._conn.send, request)
        sent.add_done_callback(lambda f: None if f.cancelled() or f.exception() is None
                               else self._fail(f.exception()))
        return answer

    def _readable(self) -> None:
        try:
            answer = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._fail(exc)
            return
        if self._pending:
            future = self._pending.popleft()
            if not future.done():  # not cancelled (a dropped fetch): its answer is wanted
                future.set_result(Validated(*answer))

    def _fail(self, exc: BaseException) -> None:
        if self.dead is None:
            self.dead = exc
            log.error("the validator process is gone (%r)", exc)
        if self._loop is not None:
            try:
                self._loop.remove_reader(self._conn.fileno())
            except (OSError, ValueError):
                pass
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(EOFError(f"the validator process is gone ({exc!r})"))

    def close(self, timeout: float = 5.0) -> None:
        if self._process is None:
            return
        self.dead = self.dead or EOFError("closed")
        self._fail(self.dead)
        try:
            self._conn.close()  # EOF: the child stops
        except OSError:
            pass
        self._sender.shutdown(wait=False, cancel_futures=True)
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout)
        self._process = None


def serve(conn: Any, settings: Settings, parent: int) -> None:
    """The child: answer validation requests until EOF (see the module docstring)."""
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        asyncio.run(_serve(conn, settings))
    except KeyboardInterrupt:
        pass


async def _serve(conn: Any, settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    producer = new_producer(f"{settings.group_id}-validator", settings.aiokafka_kwargs())
    await _retry(producer.start, "starting the dead-letter producer")
    topic = settings.topic("interactions.dlq")
    fields = settings.field_map()
    try:
        while True:
            request = await _receive(loop, conn)
            if request is None:
                return
            answer = await _answer(producer, topic, request, fields)
            try:
                conn.send(answer)
            except (BrokenPipeError, OSError):
                return
    finally:
        await producer.stop()


async def _answer(producer: Any, topic: str, request: tuple, fields: FieldMap = DEFAULT_FIELDS) -> tuple:
    """Validate one request's records; dead-letter (and wait for the acks of) the refused ones."""
    values, keys, topics, partitions, offsets, record_ts = request

    def fallback_id(i: int) -> str:  # only for events without an event_id
        return f"{topics[i]}:{partitions[i]}:{offsets[i]}"
    vb = validate_interactions(values, record_ts, fallback_id, fields)
    if vb.rejects:
        letters = [dead_letter(_Origin(keys[i], values[i], topics[i], partitions[i], offsets[i]), rej)
                   for i, rej in vb.rejects]
        await _send_letters(producer, topic, letters)
    return vb.batch, vb.positions, [i for i, _ in vb.rejects], [rej.reason for _, rej in vb.rejects]


class _Origin(NamedTuple):  # what `dead_letter` reads of a record
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


async def _receive(loop: asyncio.AbstractEventLoop, conn: Any) -> Any:
    """The next request, or None on EOF; the producer's tasks run while we wait."""
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    try:
        return conn.recv()
    except (EOFError, OSError):
        return None


async def _send_letters(producer: Any, topic: str, letters: list[Any]) -> None:
    """Produce dead letters (the source partition's order carries over) and wait for the acks;
    retries while the broker is away."""
    n = len(await _retry(lambda: producer.partitions_for(topic), "reading the dead-letter topic"))
    sender = BatchSender(producer)
    for partition, records in by_dlq_partition(letters, n).items():
        await sender.send(topic, partition, records)
    await sender.settle()


async def _retry(fn: Any, what: str, every_s: float = 0.5) -> Any:
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - broker away: wait, keep the records
            log.warning("%s failed (%r); retrying", what, exc)
            await asyncio.sleep(every_s)


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    while True:
        time.sleep(every_s)
        if os.getppid() != parent:
            os._exit(0)
