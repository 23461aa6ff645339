"""Where a replay's time goes, and the floor of the array primitives the learner needs per event.

Two measurements in one run, on the same log and model:

1. **Phases of a real replay** (`bench.replay.replay`, `--no-deep` defaults): `perf_counter` around the
   model's, the evaluator's and the drift monitor's steps, in microseconds per event. Nested phases
   (e.g. the co-occurrence row sums inside scoring) are listed under their parent.
2. **Primitive floor**: the bare numpy/torch calls the same math cannot do without, timed on one
   micro-batch at the log's final catalog size with the trained model's own matrices, and no
   bookkeeping at all: the 10-row sums (co-occurrence counts; content similarity when the log has a
   catalog), the three passes that blend them with the popularity row, the rank count (two
   comparisons, the candidate mask, a reduce), the co-occurrence learning scatter-add and the BPR
   step. Their sum is what an event costs before any id lookup, history, context, blend or popularity
   update, evaluator metric, or Python call overhead. It is measured hot, one call after another; in
   the replay the same calls share the caches with everything else and cost more (compare the nested
   phases).

    python -m bench.time_profile --data ../shared/data/ml-100k/u.data --report profile.json
    python -m bench.time_profile                       # the synthetic stream
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.replay import load_stream, replay, write_report
from learners.evaluate import PrequentialEvaluator

# (object attribute path, method, label, label(s) of the phase(s) it runs inside)
PHASES = (
    ("evaluator", "evaluable", "evaluator: plan (evaluable events)", None),
    ("model", "score_many", "model: score every item", None),
    ("model", "_context", "recent-item context (scoring and learning)",
     ("model: score every item", "model: learn")),
    ("model.cooc", "sums", "co-occurrence 10-row sums", "model: score every item"),
    ("model.content", "score", "content 10-row sums", "model: score every item"),
    ("evaluator", "observe", "evaluator: rank, metrics, histories", None),
    ("evaluator", "_rank", "rank counts (+ coverage sample)", "evaluator: rank, metrics, histories"),
    ("model", "predict_many", "model: rating predictions (RMSE)", None),
    ("monitor", "update", "drift monitor", None),
    ("model", "learn_many", "model: learn", None),
    ("model.cooc", "learn", "co-occurrence pairs", "model: learn"),
    ("model.mf", "learn", "BPR MF + rating head", "model: learn"),
    ("model.blend", "learn", "blend weights", "model: learn"),
    ("model", "_pair_features", "blend pair features", "model: learn"),
)


def _resolve(roots: dict[str, Any], path: str) -> Any:
    head, *rest = path.split(".")
    obj = roots[head]
    for name in rest:
        obj = getattr(obj, name)
    return obj


def _timed(method: Callable[..., Any], label: str, spent: collections.Counter) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started

    return wrapper


def profile_replay(log: Any, items: list, batch_size: int, seed: int) -> tuple[dict[str, float], Any, float]:
    """(µs per event of each phase, the trained model, whole-replay events/s)."""
    from learners.drift import monitor_for
    from learners.recommender import OnlineRecommender

    model = OnlineRecommender(seed=seed)
    evaluator = PrequentialEvaluator(seed=seed, series_every=max(1, len(log) // 400))
    monitor = monitor_for(model)
    spent: collections.Counter = collections.Counter()
    roots = {"model": model, "evaluator": evaluator, "monitor": monitor}
    for path, name, label, _ in PHASES:
        owner = _resolve(roots, path)
        setattr(owner, name, _timed(getattr(owner, name), label, spent))  # instance attribute only
    _, timing = replay(log, model, items, batch_size, evaluator, monitor)
    per_event = {label: spent[label] / len(log) * 1e6 for _, _, label, _ in PHASES}
    per_event["whole replay"] = timing["wall_s"] / len(log) * 1e6
    per_event["hr@10"] = evaluator.report()["hr@10"]
    return per_event, model, timing["events_per_s"]


def _best_us(call: Callable[[], Any], events: int, repeats: int = 30) -> float:
    """Best of `repeats` timings of `call`, in µs per event (the least disturbed by neighbours)."""
    call()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best / events * 1e6


def primitive_floor(model: Any, batch_size: int, seed: int) -> dict[str, float]:
    """µs per event of the bare calls one micro-batch needs (see the module docstring)."""
    import torch

    rng = np.random.default_rng(seed)
    n = model.n_items
    b, context, window, negatives = batch_size, model.cooc.context, model.cooc.window, model.negatives
    counts = torch.from_numpy(model.cooc.counts)

    rows = torch.from_numpy(rng.integers(0, n, (b, context)))
    weights = torch.from_numpy(rng.random((b, context), dtype=np.float32))
    column_scale = rng.random(n, dtype=np.float32)
    stage_rows = rng.random((12, n), dtype=np.float32)
    stage = rng.integers(0, 12, b)
    scores = rng.random((b, n), dtype=np.float32)
    content = rng.random((b, n), dtype=np.float32)
    target = scores[np.arange(b), rng.integers(0, n, b)][:, None]
    packed = np.packbits(rng.random((b, n)) < 0.9, axis=1)

    def row_sums(matrix: torch.Tensor) -> Callable[[], Any]:
        return lambda: torch.nn.functional.embedding_bag(rows, matrix, per_sample_weights=weights, mode="sum")

    def blend() -> None:
        out = scores * column_scale[None, :]
        out += stage_rows[stage]
        out += 0.3 * content

    def rank() -> None:
        cand = np.unpackbits(packed, axis=1, count=n).view(bool)
        both = np.greater(scores, target).view(np.uint8)
        both += np.greater_equal(scores, target).view(np.uint8)
        both *= cand.view(np.uint8)
        np.add.reduce(both, axis=1, dtype=np.int32)

    flat = np.zeros(len(model.cooc.counts) ** 2, dtype=np.float32)
    pair_index = rng.integers(0, len(flat), 2 * b * window)
    pair_weight = rng.random(len(pair_index), dtype=np.float32)

    def cooc_learn() -> None:
        np.add.at(flat, pair_index, pair_weight)

    mf = model.mf
    users = rng.integers(0, len(mf.user_factors), b)
    item_cols = rng.integers(0, n, b)
    negative_cols = rng.integers(0, n, (b, negatives))

    def bpr() -> None:
        mf.learn(users, item_cols, negative_cols)

    floor = {"co-occurrence 10-row sums (embedding_bag)": _best_us(row_sums(counts), b)}
    if model.content.n_with_meta:  # the content source scores only when the log has a catalog
        floor["content 10-row sums (embedding_bag)"] = _best_us(
            row_sums(torch.from_numpy(model.content.similarity(n))), b)
    floor.update({
        "blend: 3 passes over the B x n scores": _best_us(blend, b),
        "rank: candidate mask, 2 compares, reduce": _best_us(rank, b),
        f"co-occurrence learning: {2 * window} pair adds per event": _best_us(cooc_learn, b),
        f"BPR step, {negatives} negatives, d={mf.dim} (MatrixFactorization.learn)": _best_us(bpr, b),
    })
    floor["sum (floor per event)"] = sum(floor.values())
    return floor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.time_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="log file or folder (default: the synthetic stream)")
    parser.add_argument("--format", help="log format (default: guessed)")
    parser.add_argument("--items", type=Path, help="item catalog (default: one next to the log)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # as `streamrec replay` runs
    log, items, description, _ = load_stream(args)
    phases, model, events_per_s = profile_replay(log, items, args.batch_size, args.seed)
    floor = primitive_floor(model, args.batch_size, args.seed)
    print(f"{description}: {len(log):,} events, {model.n_items:,} items, batch {args.batch_size}")
    print(f"replay with timers: {events_per_s:,.0f} events/s, HR@10 {phases['hr@10']:.4f}\n")
    print(f"{'phase':58s} µs/event")
    parents = {label: parent for _, _, label, parent in PHASES}
    for _, _, label, parent in PHASES:
        print(f"{'   ' if parent else ''}{label:{55 if parent else 58}s} {phases[label]:7.2f}")
    top = sum(phases[label] for _, _, label, parent in PHASES if parent is None)
    print(f"{'rest (replay loop, catalog, batch slicing)':58s} {phases['whole replay'] - top:7.2f}")
    print(f"{'whole replay':58s} {phases['whole replay']:7.2f}\n")
    print(f"{'primitive floor (bare calls, one batch, best of 30)':58s} µs/event")
    for label, value in floor.items():
        print(f"{label:58s} {value:7.2f}")
    ratio = floor["sum (floor per event)"] / 10.0
    print(f"\nbudget at 100,000 events/s: 10.00 µs/event; floor / budget = {ratio:.2f}")
    if args.report:
        write_report(args.report, {"data": description, "events": len(log), "items": model.n_items,
                                   "batch_size": args.batch_size, "events_per_s": events_per_s,
                                   "phases_us_per_event": phases, "phase_parents": parents,
                                   "floor_us_per_event": floor})
        print(f"report: {args.report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
