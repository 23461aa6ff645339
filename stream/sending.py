"""Records to one Kafka partition as aiokafka batches, filled to the producer's batch size.

One `send_batch` per full batch instead of one `send` coroutine per record: a flood of dead letters
costs the sender little. Used by the worker's consumer and by the validator process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
