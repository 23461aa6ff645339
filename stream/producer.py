"""`streamrec produce`: push an interaction log into the `interactions` topic in time order.

The log is read with `learners.datasets.read_log` (MovieLens, YOOCHOOSE, JSONL, CSV, Parquet;
`--columns`, `--ts-unit` and `--types` for the last two), stable-sorted by event time, cut to the
first `--limit` events, and sent as contract JSON (key = user id), as fast as possible or at `--rate`
events/s, encoded chunk by chunk. Event ids are deterministic, so producing the same log twice yields
the same ids: the reader's own (a hash of the line, or the JSONL `event_id`) or, for CSV and Parquet
logs, `<digest>:<n>` with `digest` a hash of the file and the reading options
(`learners.csvlog.log_digest`) and `n` the event's position in time order. `--items PATH` first
publishes a catalog (u.item, movies.csv, JSONL) to `items`.

>>> from learners.base import Interactions
>>> log = Interactions.from_records([{"event_id": "e1", "user_id": "u", "item_id": "i", "type": "rating",
...                                   "value": 4.0, "ts": 9.0}])
>>> encode_events(log)
[(b'u', b'{"event_id":"e1","user_id":"u","item_id":"i","type":"rating","value":4.0,"ts":9.0}')]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from learners.base import EVENT_TYPES, Interactions, ItemMeta
from learners.datasets import FORMATS, add_log_arguments
from stream.config import Settings, add_connection_arguments

_PRODUCER_TUNING: dict[str, Any] = {
    # idempotent (acks=all, the client default): retries neither duplicate nor reorder a user's events
    "enable_idempotence": True,
    "linger_ms": 20,  # fill big batches: throughput over a few ms of latency
    "batch_size": 512 * 1024,
}


def json_dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode_events(log: Interactions) -> list[tuple[bytes, bytes]]:
    """(key, value) of each event: the user id and the `interactions` contract JSON."""
    import json

    enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    ids = log.event_id
    out = []
    for n, (user, item, kind, value, ts) in enumerate(zip(
            log.user.tolist(), log.item.tolist(), log.kind.tolist(), log.value.tolist(), log.ts.tolist(),
            strict=True)):
        event = {"event_id": None if ids is None else ids[n], "user_id": user, "item_id": item,
                 "type": EVENT_TYPES[kind], "value": value, "ts": ts}
        if event["event_id"] is None:
            del event["event_id"]
        out.append((user.encode("utf-8"), enc(event).encode("utf-8")))
    return out


def encode_items(items: Sequence[ItemMeta]) -> list[tuple[bytes, bytes]]:
    """(key, value) of each catalog entry for the `items` topic."""
    return [(m.item_id.encode("utf-8"),
             json_dumps({"item_id": m.item_id, "title": m.title, "tags": list(m.tags), "ts": m.ts}).encode())
            for m in items]


def make_producer(settings: Settings, **overrides: Any) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(client_id="streamrec-producer", **{**_PRODUCER_TUNING, **overrides},
                         **settings.kafka_python_kwargs())


def with_event_ids(log: Interactions, prefix: str, first: int = 0) -> Interactions:
    """`log` with event ids `<prefix>:<n>` (n counting from `first`) where it has none.

    >>> log = Interactions.from_records([{"user_id": "u", "item_id": "i", "ts": 1.0}])
    >>> with_event_ids(log, "ab12", first=7).event_id.tolist()
    ['ab12:7']
    """
    if log.event_id is not None:
        return log
    ids = np.empty(len(log), dtype=object)
    ids[:] = [f"{prefix}:{n}" for n in range(first, first + len(log))]
    return dataclasses.replace(log, event_id=ids)


def _send_paced(
    producer: Any, topic: str, chunks: Iterable[Sequence[tuple[bytes, bytes]]], rate: float | None,
    progress: Callable[[int], Any] | None, step: int,
) -> float:
    start = time.perf_counter()
    send = producer.send
    sent = 0
    for records in chunks:
        for lo in range(0, len(records), step):
            if rate:
                delay = start + sent / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            part = records[lo:lo + step]
            for key, value in part:
                send(topic, value=value, key=key)
            sent += len(part)
            if progress is not None:
                progress(len(part))
    producer.flush()
    return time.perf_counter() - start


def _pace_step(rate: float | None, chunk: int) -> int:
    return chunk if rate is None else max(1, min(chunk, int(rate // 100) or 1))  # pace in ~10 ms slices


def send_records(
    producer: Any, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float | None = None,
    progress: Callable[[int], Any] | None = None, chunk: int = 1000,
) -> float:
    """Send (key, value) records in order, paced to `rate` per second when given; returns seconds taken
    (until every record is acknowledged)."""
    return _send_paced(producer, topic, [records], rate, progress, _pace_step(rate, chunk))


def send_log(
    producer: Any, topic: str, log: Interactions, rate: float | None = None,
    progress: Callable[[int], Any] | None = None, id_prefix: str | None = None, chunk: int = 10_000,
) -> float:
    """Encode (`encode_events`) and send a log's events in order, `chunk` at a time, so a 10M-event log
    is never encoded whole; events without ids get `<id_prefix>:<position>` when `id_prefix` is given.
    Paced like `send_records`; returns seconds taken."""
    def chunks() -> Iterator[list[tuple[bytes, bytes]]]:
        for lo in range(0, len(log), chunk):
            batch = log[lo:lo + chunk]
            yield encode_events(batch if id_prefix is None else with_event_ids(batch, id_prefix, lo))

    return _send_paced(producer, topic, chunks(), rate, progress, _pace_step(rate, 1000))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="interaction log: file or folder (" + "|".join(FORMATS) + ")")
    parser.add_argument("--format", choices=FORMATS, help="log format (guessed from the file when omitted)")
    add_log_arguments(parser)
    parser.add_argument("--items",
                        help="item catalog to publish on `items` first (u.item, movies.csv, JSONL)")
    parser.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    parser.add_argument("--limit", type=int, help="only the first N events in time order")
    parser.add_argument("--topic", help="target topic (default: <prefix>interactions)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from learners.datasets import log_digest, log_options, read_items, read_log
    from stream.app import ensure_topics

    if not args.data and not args.items:
        print("streamrec produce: give --data PATH and/or --items PATH", file=sys.stderr)
        return 2
    if args.rate is not None and not args.rate > 0:
        print("streamrec produce: --rate must be positive", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit < 0:
        print("streamrec produce: --limit must be >= 0", file=sys.stderr)
        return 2
    settings = Settings.from_args(args)
    try:
        options = log_options(args)
        log = read_log(args.data, args.format, **options) if args.data else None
        id_prefix = log_digest(args.data, **options) if log is not None and log.event_id is None else None
        items = read_items(args.items) if args.items else []
    except (ValueError, OSError) as exc:
        print(f"streamrec produce: {exc}", file=sys.stderr)
        return 2
    try:
        ensure_topics(settings, timeout=15.0)
    except ConnectionError as exc:
        print(f"streamrec produce: {exc}", file=sys.stderr)
        return 2
    producer = make_producer(settings)
    try:
        if items:
            topic = settings.topic("items")
            seconds = send_records(producer, topic, encode_items(items))
            print(f"published {len(items)} items to {topic} in {seconds:.2f}s", flush=True)
        if log is not None:
            if args.limit is not None:
                log = log[: args.limit]
            topic = args.topic or settings.topic("interactions")
            with tqdm(total=len(log), unit="ev", disable=args.no_progress, file=sys.stderr,
                      desc=f"-> {topic}") as bar:
                seconds = send_log(producer, topic, log, rate=args.rate, progress=bar.update,
                                   id_prefix=id_prefix)
            rate = len(log) / seconds if seconds > 0 else float("inf")
            print(f"produced {len(log)} events to {topic} in {seconds:.2f}s: {rate:,.0f} events/s",
                  flush=True)
    finally:
        producer.close()
    return 0
