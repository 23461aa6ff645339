"""Records to Kafka partitions as aiokafka batches, filled to the producer's batch size, sent until
acknowledged.

One `send_batch` per full batch instead of one `send` coroutine per record: a flood of dead letters
costs the sender little. Used by the worker's consumer and by the validator process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("streamrec.sending")

MAX_BATCH_BYTES = 1024 * 1024  # the broker's default message.max.bytes
FIT_LIMIT = MAX_BATCH_BYTES - 16 * 1024

Record = tuple[bytes | None, bytes, Any]  # (key, value, headers or None)


def record_batches(producer: Any, topic: str, records: list[Record]) -> Iterator[tuple[Any, list[Record]]]:
    """(batch builder, the records in it) for `records`, in order; a record too big for an empty
    batch is logged and dropped (the producer's max_batch_size is the broker's message limit)."""
    batch = producer.create_batch()
    chunk: list[Record] = []
    for record in records:
        key, value, headers = record
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
            if chunk:  # batch full: ship it, start another
                yield batch, chunk
                batch, chunk = producer.create_batch(), []
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                log.error("a %d-byte record cannot be sent to %s: dropped", len(value), topic)
                continue
        chunk.append(record)
    if chunk:
        yield batch, chunk


def rebuild(producer: Any, chunk: list[Record]) -> Any:
    """A fresh batch builder holding `chunk` again (a submitted-and-failed builder is closed)."""
    batch = producer.create_batch()
    for key, value, headers in chunk:
        batch.append(key=key, value=value, timestamp=None, headers=headers or [])
    return batch


def fit(value: bytes) -> bytes:
    """A dead letter's raw value, cut so that it fits a batch with its headers (only a payload near the
    broker's own size limit is ever cut)."""
    return value if len(value) <= FIT_LIMIT else value[:FIT_LIMIT]


def new_producer(client_id: str, connection: dict[str, Any]) -> Any:
    """The aiokafka producer both senders use: acks from the leader, batches up to the broker's
    message limit, requests bounded by a 10 s timeout (`connection`: `Settings.aiokafka_kwargs()`)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(client_id=client_id, acks=1, linger_ms=5, max_batch_size=MAX_BATCH_BYTES,
                            max_request_size=MAX_BATCH_BYTES, request_timeout_ms=10_000, **connection)


class BatchSender:
    """Sends records to partitions in batches and keeps each batch's future; `settle` waits for all of
    them and resends the failed ones until they are acknowledged. While the broker is away a send is
    retried every half second; `on_failure(exc)` is told each failure first and may raise to give up."""

    def __init__(self, producer: Any, on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.producer = producer
        self.on_failure = on_failure
        self.inflight: list[tuple[str, int, list[Record], Any]] = []  # (topic, partition, records, future)

    async def send(self, topic: str, partition: int, records: list[Record]) -> None:
        """Queue `records` (key, value, headers) for one partition."""
        for batch, chunk in record_batches(self.producer, topic, records):
            await self._submit(topic, partition, batch, chunk)

    async def _submit(self, topic: str, partition: int, batch: Any, chunk: list[Record]) -> None:
        while True:
            try:  # bounded by the producer's request_timeout_ms when the broker is away
                future = await self.producer.send_batch(batch, topic, partition=partition)
                self.inflight.append((topic, partition, chunk, future))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. broker away: wait, keep the records
                if self.on_failure is not None:
                    self.on_failure(exc)
                log.warning("send to %s:%d failed (%r); retrying", topic, partition, exc)
                await asyncio.sleep(0.5)
                batch = rebuild(self.producer, chunk)

    async def settle(self) -> None:
        """Wait for every in-flight batch; resend the failed ones until they are acknowledged."""
        while self.inflight:
            pending, self.inflight = self.inflight, []
            results = await asyncio.gather(*(f for *_, f in pending), return_exceptions=True)
            failed = [p for p, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
            if failed:
                error = next(r for r in results if isinstance(r, BaseException))
                if self.on_failure is not None:
                    self.on_failure(error)
                log.warning("%d batches failed (%r); resending", len(failed), error)
                await asyncio.sleep(0.5)
                for topic, partition, chunk, _ in failed:
                    await self.send(topic, partition, chunk)
