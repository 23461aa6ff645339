"""`streamrec produce`: push an interaction log into the `interactions` topic in time order.

The log is read with `learners.datasets.read_log` (MovieLens, YOOCHOOSE, JSONL), stable-sorted by
event time, cut to the first `--limit` events, and sent as contract JSON (key = user id), as fast as
possible or at `--rate` events/s. Event ids are deterministic, so producing the same log twice
yields the same ids. `--items PATH` first publishes a catalog (u.item, movies.csv, JSONL) to `items`.

>>> from learners.base import Interactions
>>> log = Interactions.from_records([{"event_id": "e1", "user_id": "u", "item_id": "i", "type": "rating",
...                                   "value": 4.0, "ts": 9.0}])
>>> encode_events(log)
[(b'u', b'{"event_id":"e1","user_id":"u","item_id":"i","type":"rating","value":4.0,"ts":9.0}')]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from learners.base import EVENT_TYPES, Interactions, ItemMeta
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


def send_records(
    producer: Any, topic: str, records: Sequence[tuple[bytes, bytes]], rate: float | None = None,
    progress: Callable[[int], Any] | None = None, chunk: int = 1000,
) -> float:
    """Send (key, value) records in order, paced to `rate` per second when given; returns seconds taken
    (until every record is acknowledged)."""
    start = time.perf_counter()
    send = producer.send
    n = len(records)
    step = chunk if rate is None else max(1, min(chunk, int(rate // 100) or 1))  # pace in ~10 ms slices
    for lo in range(0, n, step):
        if rate:
            delay = start + lo / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        for key, value in records[lo:lo + step]:
            send(topic, value=value, key=key)
        if progress is not None:
            progress(min(step, n - lo))
    producer.flush()
    return time.perf_counter() - start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="interaction log: file or folder (movielens|yoochoose|jsonl)")
    parser.add_argument("--format", choices=["movielens", "yoochoose", "jsonl"],
                        help="log format (guessed from the file when omitted)")
    parser.add_argument("--items",
                        help="item catalog to publish on `items` first (u.item, movies.csv, JSONL)")
    parser.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    parser.add_argument("--limit", type=int, help="only the first N events in time order")
    parser.add_argument("--topic", help="target topic (default: <prefix>interactions)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_connection_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from learners.datasets import read_items, read_log
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
        log = read_log(args.data, args.format) if args.data else None
        items = read_items(args.items) if args.items else []
    except ValueError as exc:
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
            records = encode_events(log)
            topic = args.topic or settings.topic("interactions")
            with tqdm(total=len(records), unit="ev", disable=args.no_progress, file=sys.stderr,
                      desc=f"-> {topic}") as bar:
                seconds = send_records(producer, topic, records, rate=args.rate, progress=bar.update)
            rate = len(records) / seconds if seconds > 0 else float("inf")
            print(f"produced {len(records)} events to {topic} in {seconds:.2f}s: {rate:,.0f} events/s",
                  flush=True)
    finally:
        producer.close()
    return 0
