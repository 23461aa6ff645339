"""Item-side state shared by the workers of one group, through Kafka (`learners.item_deltas`).

Each worker sends, every `--sync-seconds`, the item-side deltas of the events it learned to the
`item-deltas` topic, and applies every delta there in topic order. The topic has one partition: one
order of every worker's deltas, which all workers read whole (no group: each reads every delta). The
read position is saved in each checkpoint with the interactions offsets, so a restarted worker applies
exactly the deltas its state misses; a delta of events already in its state (learned here, or applied
before) is skipped by its partition's watermark, which also keeps a worker's own deltas from coming back.
Before a checkpoint the pending deltas are sent and acknowledged, so a checkpoint never holds item-side
learning that the other workers cannot get.

Clocks: the trending half-life and the background's age count events of every worker (the learner's
event clock moves on by each applied delta's events), so all workers decay at the same pace.

Stays local, per worker: the blend's weights (learned from local events, each step scaled to stand for
the whole stream's events since the previous batch), the drift reaction (a worker reacts to its own
hit rate), the users' state (it follows the partition), the deep stage's window and weights.

A malformed record on the topic goes to the dead-letter topic with reason `bad_delta`, and changes
nothing.

A worker joining with no state starts from the newest item-state snapshot (`snapshot_records` /
`assemble_snapshot`: the item side of a checkpoint, in chunks on the compacted `item-state` topic) and
reads item-deltas from the position that snapshot reflects, so it can join after their retention.

Users follow their partition: at each checkpoint a worker writes the state of the users it touched since
the last one (recent items, history, counts; `user_states`) to the compacted `user-state` topic, keyed by
user id, in the partition of their `interactions` partition, each record with the interactions offset it
reflects. A worker assigned a partition that another worker has moved past (the group's committed offset
is beyond its own checkpoint's, or it never held it) loads that partition's users from the changelog
(`read_partition`, the latest record per user) before learning its events, and starts from the
committed offset. A malformed record there is dead-lettered with reason `bad_user_state`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("streamrec.sync")

CATCH_UP_TIMEOUT_S = 60.0


class AuditLog:
    """JSON lines of what a worker learned, sent and applied (`--audit-log`), for benches: kinds
    `events` (per learned batch: partition, offset, user, hit: 1/0, -1 when not evaluated, record_ts),
    `delta_sent`, `delta_applied` and `final` (the worker's integer item counts' digest at shutdown)."""

    def __init__(self, path: str | Path, worker: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        self._file = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, kind: str, **fields: Any) -> None:
        self._file.write(json.dumps({"kind": kind, "worker": self.worker, **fields},
                                    separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def counts_digest(counts: dict[str, int]) -> str:
    """An order-free digest of per-item integer counts: equal digests, equal counts."""
    import hashlib

    h = hashlib.sha256()
    for item in sorted(counts):
        h.update(f"{item}\t{counts[item]}\n".encode())
    return h.hexdigest()[:16]


class DeltaReader:
    """Reads the `item-deltas` topic (its one partition) from a given offset, outside the group."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.topic = settings.topic("item-deltas")
        self.consumer: Any = None
        self.tp: Any = None

    async def start(self, position: int | None) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        s = self.settings
        self.tp = TopicPartition(self.topic, 0)
        self.consumer = AIOKafkaConsumer(
            client_id=f"{s.group_id}-deltas", group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024, **s.aiokafka_kwargs())
        await self.consumer.start()
        self.consumer.assign([self.tp])
        if position is not None:
            self.consumer.seek(self.tp, position)
        else:
            await self.consumer.seek_to_beginning(self.tp)

    async def poll(self, timeout_ms: int = 0) -> list[Any]:
        got = await self.consumer.getmany(self.tp, timeout_ms=timeout_ms, max_records=500)
        return got.get(self.tp, [])

    async def end(self) -> int:
        return (await self.consumer.end_offsets([self.tp]))[self.tp]

    async def catch_up(self, apply: Any, timeout: float = CATCH_UP_TIMEOUT_S) -> int:
        """Read and `apply` (an async callable taking records) every delta up to the topic's end now;
        returns the records read."""
        end = await self.end()
        deadline = time.monotonic() + timeout
        n = 0
        while await self.consumer.position(self.tp) < end:
            if time.monotonic() > deadline:
                log.warning("item deltas: caught up to %d of %d in %.0f s; going on", n, end, timeout)
                break
            records = await self.poll(200)
            if records:
                n += len(records)
                await apply(records)
        return n

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


async def read_partition(settings: Any, topic: str, partition: int,
                         timeout: float = CATCH_UP_TIMEOUT_S) -> list[Any]:
    """Every record of one partition now, from its start to its end offset (a compacted changelog:
    the latest record of each key is the one that counts)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(client_id=f"{settings.group_id}-restore", group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                **settings.aiokafka_kwargs())
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while await consumer.position(tp) < end and time.monotonic() < deadline:
            got = await consumer.getmany(tp, timeout_ms=200, max_records=5000)
            records += got.get(tp, [])
        return records
    finally:
        await consumer.stop()


SNAPSHOT_FILES = ("items.npz", "meta.json")
CHUNK_BYTES = 900 * 1024  # under the broker's 1 MB message limit with the key and header


def snapshot_records(checkpoint: str | Path, worker: str, snapshot_id: int, position: int
                     ) -> list[tuple[bytes, bytes]]:
    """The item side of a checkpoint directory as `item-state` (key, value) records: its `items.npz` and
    `meta.json` in chunks, each a JSON header line (worker, snapshot id, file, chunk, chunks, the
    `item-deltas` position the state reflects) and the bytes. Keys alternate between two slots by
    snapshot id, so compaction keeps the previous complete snapshot while the next is being written."""
    out = []
    for name in SNAPSHOT_FILES:
        data = (Path(checkpoint) / name).read_bytes()
        chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            head = {"worker": worker, "id": snapshot_id, "file": name, "chunk": i, "chunks": len(chunks),
                    "position": position, "created": time.time()}
            key = f"{worker}:{snapshot_id % 2}:{name}:{i}".encode()
            out.append((key, json.dumps(head, separators=(",", ":")).encode() + b"\n" + chunk))
    return out


def assemble_snapshot(records: list[Any], folder: str | Path) -> tuple[int, dict[str, Any]] | None:
    """Write the newest complete snapshot among `item-state` records into `folder` (its files); returns
    (its `item-deltas` position, its header) or None when there is none. Records that do not parse are
    skipped (a writer that died midway leaves an incomplete snapshot: the other slot's is used)."""
    latest: dict[bytes, Any] = {}
    for r in records:
        latest[r.key] = r
    parts: dict[tuple[str, int], dict[tuple[str, int], tuple[dict, bytes]]] = {}
    for r in latest.values():
        if r.value is None or b"\n" not in r.value:
            continue
        line, payload = r.value.split(b"\n", 1)
        try:
            head = json.loads(line)
            key = (str(head["worker"]), int(head["id"]))
            parts.setdefault(key, {})[(str(head["file"]), int(head["chunk"]))] = (head, payload)
        except (ValueError, KeyError, TypeError):
            continue
    complete = []
    for key, chunks in parts.items():
        if all(_whole(chunks, name) for name in SNAPSHOT_FILES):
            complete.append((max(h["created"] for h, _ in chunks.values()), key))
    if not complete:
        return None
    _, key = max(complete)
    chunks = parts[key]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    head = None
    for name in SNAPSHOT_FILES:
        n = next(h["chunks"] for (f, _), (h, _) in chunks.items() if f == name)
        (folder / name).write_bytes(b"".join(chunks[(name, i)][1] for i in range(n)))
        head = chunks[(name, 0)][0]
    return int(head["position"]), head


def _whole(chunks: dict[tuple[str, int], tuple[dict, bytes]], name: str) -> bool:
    """Every chunk of file `name` is there, all agreeing on how many there are."""
    sizes = {h["chunks"] for (f, _), (h, _) in chunks.items() if f == name}
    return len(sizes) == 1 and all((name, i) in chunks for i in range(next(iter(sizes))))
