"""Workers sharing item-side deltas, simulated in one process: what sharing costs in quality, with no
broker, timing or batching noise (`learners.item_deltas` between N `SparseRecommender`s).

A log's users are spread over `--partitions` partitions by a hash of the user id (as Kafka's key
partitioning does), partition p is owned by worker p mod N; every micro-batch each worker learns its own
partitions' events prequentially (its own `CandidateEvaluator`), and every `--sync-every` events all
workers exchange their deltas (bytes on the wire, decoded again) and mark the items they apply as seen.
HR@10 and `evaluated` are summed over workers; one worker (N = 1) is the reference.

    python -m bench.sync_sim --data ../shared/data/yoochoose-clicks-100k --format yoochoose --workers 1,4
    python -m bench.sync_sim --data ../shared/data/ml-100k/u.data --format movielens --sync-every 0
"""

from __future__ import annotations

import argparse
import json
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import Interactions
from learners.datasets import FORMATS, add_log_arguments, log_options, read_log, sniff_format
from learners.evaluate import evaluator_for, prequential_step
from learners.item_deltas import ItemDelta
from learners.sparse import SparseRecommender


def partition_of(users: np.ndarray, partitions: int) -> np.ndarray:
    return np.fromiter((zlib.crc32(str(u).encode()) % partitions for u in users), np.int32, len(users))


def simulate(log: Interactions, workers: int, partitions: int = 4, batch: int = 500,
             sync_every: int = 2000) -> dict[str, Any]:
    """HR@10, evaluated and delta bytes of `workers` sharing deltas every `sync_every` events (0: never)."""
    parts = partition_of(log.user, partitions)
    offsets = np.zeros(len(log), np.int64)
    for p in range(partitions):
        offsets[parts == p] = np.arange(int((parts == p).sum()))
    sourced = log.with_source(parts, offsets)
    owner = parts % workers
    models = [SparseRecommender(seed=0) for _ in range(workers)]
    evaluators = [evaluator_for(m, k=10) for m in models]
    for m in models:
        m.record_item_deltas()
    sent = since = 0
    started = time.perf_counter()
    for a in range(0, len(log), batch):
        chunk = sourced[a:a + batch]
        for w, (model, evaluator) in enumerate(zip(models, evaluators, strict=True)):
            mine = chunk[owner[a:a + batch] == w]
            if len(mine):
                prequential_step(model, evaluator, mine)
        since += len(chunk)
        if sync_every and (since >= sync_every or a + batch >= len(log)):
            since = 0
            wire = [(w, d.to_bytes()) for w, m in enumerate(models) for d in m.take_item_deltas()]
            sent += sum(len(raw) for _, raw in wire)
            for w, (model, evaluator) in enumerate(zip(models, evaluators, strict=True)):
                for sender, raw in wire:
                    delta = ItemDelta.from_bytes(raw)
                    if sender != w and model.apply_item_delta(delta):
                        ids = np.asarray(delta.item_ids, dtype=object)[np.asarray(delta.counts) > 0]
                        evaluator.mark_seen(model.item_cols(ids), ids, model)
    reports = [e.report() for e in evaluators]
    evaluated = sum(r["evaluated"] for r in reports)
    hits = sum(r["hr@10"] * r["evaluated"] for r in reports if r["evaluated"])
    return {"workers": workers, "sync_every": sync_every, "hr@10": hits / evaluated if evaluated else None,
            "evaluated": evaluated, "delta_bytes_per_event": sent / len(log),
            "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_sim", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="log to replay")
    parser.add_argument("--format", choices=FORMATS)
    add_log_arguments(parser)
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts [1,4]")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="events per micro-batch, all workers [500]")
    parser.add_argument("--sync-every", type=int, default=2000, help="events between exchanges; 0: none")
    args = parser.parse_args(argv)
    log = read_log(args.data, args.format or sniff_format(args.data), **log_options(args))
    runs = [simulate(log, int(n), args.partitions, args.batch, args.sync_every)
            for n in args.workers.split(",")]
    for run in runs:
        print(json.dumps(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
