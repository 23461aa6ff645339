"""The `interactions.dlq` record of a refused payload: the raw bytes, with reason and origin in headers.

>>> from stream.schema import Rejection
>>> from stream.worker import RawRecord
>>> record = RawRecord("interactions", 2, 41, None, b"u1", b"[]")
>>> letter = dead_letter(record, Rejection("not_object", "an array"))
>>> letter.value, dict(letter.headers)["reason"], dict(letter.headers)["source.offset"]
(b'[]', b'not_object', b'41')
"""

from __future__ import annotations

from typing import Any, NamedTuple

from stream.schema import Rejection
from stream.sending import FIT_LIMIT, fit


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str = ""
    source_partition: int = 0


def dead_letter(record: Any, rejection: Rejection) -> DeadLetter:
    """The `interactions.dlq` record of a refused payload: raw bytes, reason and origin in headers.

    Cheap on purpose (cached header pairs, no Python-level constructor): a flood of malformed
    records must cost the worker little next to the good events it applies."""
    reason, message = rejection
    topic, partition = record.topic, record.partition
    origin = _ORIGIN_HEADERS.get((topic, partition))
    if origin is None:
        if len(_ORIGIN_HEADERS) > 10_000:
            _ORIGIN_HEADERS.clear()
        origin = _ORIGIN_HEADERS[(topic, partition)] = (
            ("source.topic", topic.encode()), ("source.partition", b"%d" % partition))
    reason_header = _REASON_HEADERS.get(reason)
    if reason_header is None:
        reason_header = _REASON_HEADERS[reason] = ("reason", reason.encode())
    value = record.value
    return _new_tuple(DeadLetter, (record.key, b"" if value is None else value, [
        reason_header, ("message", message.encode("utf-8", "replace")), *origin,
        ("source.offset", b"%d" % record.offset)], reason, partition))


_new_tuple = tuple.__new__  # a NamedTuple from a tuple, without its Python-level __new__
_ORIGIN_HEADERS: dict[tuple[str, int], tuple[tuple[str, bytes], tuple[str, bytes]]] = {}
_REASON_HEADERS: dict[str, tuple[str, bytes]] = {}


def by_dlq_partition(letters: list[DeadLetter], n_partitions: int) -> dict[int, list[tuple]]:
    """Dead letters as (key, value, headers) records per `interactions.dlq` partition: the source
    partition modulo the DLQ's, so a source partition's order carries over; values cut to `fit`."""
    by_partition: dict[int, list[tuple]] = {}
    for key, value, headers, _, source_partition in letters:
        if len(value) > FIT_LIMIT:
            value = fit(value)
        part = by_partition.get(source_partition % n_partitions)
        if part is None:
            part = by_partition[source_partition % n_partitions] = []
        part.append((key, value, headers))
    return by_partition
