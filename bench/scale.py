"""Flat cost in the catalog size: the same events through a small-catalog and a large-catalog model.

One run, one process: a `learners.synthlog` log of `--events` events over `--small-items` items (the
*suffix*) is replayed through a fresh `SparseRecommender` + `CandidateEvaluator` twice, after two
different warm-ups:

* small: a warm-up of one event per item of the small catalog (`i0` .. `i<small-1>`), then the suffix;
* large: a warm-up of one event per item of the large catalog (`i0` .. `i<large-1>`, the small items a
  subset), then the same suffix.

Warm-up events come from their own user population (`w<n>`, `--users` of them, uniformly drawn), in a
random item order, before the suffix's first timestamp, so the suffix users start with no history in
both runs. Only the suffix is timed (`bench.replay.replay`: wall and CPU time); the warm-up is not.
Per model the report gives events/s, the items the model holds when the suffix starts, the model's
candidates per suffix event (`CandidateScores.n`, what each event scores), the items each evaluated
event is ranked against (the evaluator's `n_candidates`: seen items minus the user's history), HR@10,
the co-occurrence row width, and the process's peak RSS after that model's run. The flat-cost criterion
is the ratio `events_per_s_large / events_per_s_small` (target >= 0.7, reported, not asserted). With
`--repeat N` the runs alternate small, large, small, ... and the figures are medians.

By default each model has `SparseRecommender`'s own settings, whose co-occurrence rows narrow as the
catalog grows (a budget of entries over all rows), so the large model scores fewer candidates per
event; `--width N` gives both models rows of exactly N, which isolates the catalog size.

    python -m bench.scale --json                                 # 1M events, 10k vs 1M items
    python -m bench.scale --json --width 32                      # the same rows in both models
    python -m bench.scale --events 200000 --large-items 200000 --repeat 3

Human-readable lines go to stderr; with `--json` the last line of stdout is the JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from typing import Any

import numpy as np

from bench.replay import _finite, replay
from learners.base import EVENT_TYPE_CODE, Interactions
from learners.evaluate import evaluator_for
from learners.sparse import SparseRecommender
from learners.synthlog import T0, generate_log

BATCH_SIZE = 256
TARGET_RATIO = 0.7
SIZES = ("small", "large")


def _ids(prefix: str, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [f"{prefix}{k}" for k in range(n)]
    return out


def _interactions(user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> Interactions:
    n = len(user)
    return Interactions(user=user, item=item, value=np.ones(n, np.float32), ts=np.asarray(ts, np.float64),
                        kind=np.full(n, EVENT_TYPE_CODE["click"], np.uint8))


def build_logs(n_events: int, small_items: int, large_items: int, n_users: int, seed: int = 0
               ) -> tuple[Interactions, dict[str, Interactions]]:
    """(suffix, {"small": warm-up, "large": warm-up}); item ids are shared (`i<n>`), so the small
    catalog is the first `small_items` of the large one."""
    log = generate_log(n_items=small_items, n_users=n_users, n_events=n_events, seed=seed)
    item_names = _ids("i", max(small_items, large_items))
    suffix = _interactions(_ids("u", n_users)[log.user], item_names[log.item], log.ts_ms / 1000.0)
    rng = np.random.default_rng([seed, 11])
    warm_users = _ids("w", n_users)
    warmups = {}
    for size, n_items in (("small", small_items), ("large", large_items)):
        order = rng.permutation(n_items)
        ts = T0 - n_items + np.arange(n_items, dtype=np.float64)  # one a second, before the suffix
        warmups[size] = _interactions(warm_users[rng.integers(n_users, size=n_items)], item_names[order], ts)
    return suffix, warmups


class CandidateCounter:
    """Counts the model's candidates per event (`CandidateScores.n`) on their way into the evaluator,
    by standing in for the evaluator's `observe_candidates`."""

    def __init__(self, evaluator: Any) -> None:
        self.events = 0
        self.candidates = 0
        self._observe = evaluator.observe_candidates
        evaluator.observe_candidates = self

    def __call__(self, batch: Interactions, cands: Any, model: Any, predictions: Any = None) -> Any:
        self.events += len(batch)
        self.candidates += int(cands.n.sum())
        return self._observe(batch, cands, model, predictions=predictions)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(warmup: Interactions, suffix: Interactions, seed: int = 0, width: int | None = None
            ) -> dict[str, Any]:
    """Warm a fresh model and evaluator up on `warmup` (untimed), then replay and time `suffix`.
    `width`: co-occurrence rows of exactly that width (no budget) instead of the model's default."""
    options: dict[str, Any] = {} if width is None else {"width": width, "neighbour_budget": None}
    model = SparseRecommender(seed=seed, **options)
    evaluator = evaluator_for(model, k=10, seed=seed, series_every=max(1, len(suffix) // 400))
    counter = CandidateCounter(evaluator)
    started = time.perf_counter()
    replay(warmup, model, (), BATCH_SIZE, evaluator)
    warmup_s = time.perf_counter() - started
    n_items, items_seen, neighbour_width = model.n_items, evaluator.n_items, model.neighbours.width
    counter.events = counter.candidates = 0
    events_before = evaluator.events
    _, timing = replay(suffix, model, (), BATCH_SIZE, evaluator)
    kept = evaluator.kept()
    in_suffix = kept["position"] >= len(warmup)
    ranked, rank = kept["n_candidates"][in_suffix], kept["rank"][in_suffix]
    out = {
        "events": int(evaluator.events - events_before),
        "evaluated": len(rank),
        "events_per_s": timing["events_per_s"],
        "events_per_cpu_s": timing["events_per_cpu_s"],
        "wall_s": timing["wall_s"],
        "warmup_events": len(warmup),
        "warmup_s": warmup_s,
        "n_items": int(n_items),  # held by the model when the suffix starts
        "evaluator_items": int(items_seen),
        "neighbour_width": int(neighbour_width),  # co-occurrence row width when the suffix starts
        "candidates_per_event": counter.candidates / max(counter.events, 1),
        "ranked_per_event": float(ranked.mean()) if len(ranked) else float("nan"),
        "hr@10": float((rank < 10).mean()) if len(rank) else float("nan"),
        "state_mb": model.state_bytes() / 2**20,
    }
    del model, evaluator, kept
    gc.collect()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def measure(n_events: int, small_items: int, large_items: int, n_users: int, seed: int = 0,
            repeat: int = 1, width: int | None = None) -> dict[str, Any]:
    """Build the logs, run small and large `repeat` times (alternating) and report medians."""
    baseline_mb = peak_rss_mb()  # the imports (learners.sparse pulls in torch via learners.content)
    started = time.perf_counter()
    suffix, warmups = build_logs(n_events, small_items, large_items, n_users, seed)
    print(f"logs built in {time.perf_counter() - started:.1f}s: suffix {len(suffix):,} events over "
          f"{small_items:,} items and {n_users:,} users; warm-ups {small_items:,} / {large_items:,} events",
          file=sys.stderr, flush=True)
    runs: dict[str, list[dict[str, Any]]] = {size: [] for size in SIZES}
    for r in range(repeat):
        for size in SIZES:
            result = run_one(warmups[size], suffix, seed, width)
            runs[size].append(result)
            print(f"[{r + 1}/{repeat}] {size}: {result['n_items']:,} items held, "
                  f"{result['events_per_s']:,.0f} events/s ({result['events_per_cpu_s']:,.0f} per CPU s), "
                  f"{result['candidates_per_event']:.0f} candidates/event (neighbour rows "
                  f"{result['neighbour_width']}), "
                  f"peak RSS {result['peak_rss_mb']:,.0f} MB", file=sys.stderr, flush=True)
    report: dict[str, Any] = {"events": n_events, "small_items": small_items, "large_items": large_items,
                              "users": n_users, "seed": seed, "repeat": repeat, "batch_size": BATCH_SIZE,
                              "width": width,
                              "rss_after_imports_mb": baseline_mb}
    for key in runs["small"][0]:
        for size in SIZES:
            values = [run[key] for run in runs[size]]
            report[f"{key}_{size}"] = statistics.median(values) if repeat > 1 else values[0]
    report["ratio"] = report["events_per_s_large"] / report["events_per_s_small"]
    report["cpu_ratio"] = report["events_per_cpu_s_large"] / report["events_per_cpu_s_small"]
    report["target_ratio"] = TARGET_RATIO
    report["total_s"] = time.perf_counter() - started
    return _finite(report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="suffix events (default 1,000,000)")
    parser.add_argument("--small-items", type=int, default=10_000, help="small catalog (default 10,000)")
    parser.add_argument("--large-items", type=int, default=1_000_000,
                        help="large catalog (default 1,000,000)")
    parser.add_argument("--users", type=int, default=100_000, help="users of the suffix, and of the warm-ups "
                        "(default 100,000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the logs and the models (default 0)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size, alternating; medians")
    parser.add_argument("--width", type=int, help="co-occurrence rows of this width in both models, no "
                        "budget (default: the model's, whose rows narrow as the catalog grows)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (last stdout line)")
    args = parser.parse_args(argv)
    if min(args.events, args.users, args.repeat) < 1 or args.small_items < 16:
        parser.error("--events, --users and --repeat must be positive and --small-items at least 16")
    if args.large_items < args.small_items:
        parser.error("--large-items must be at least --small-items (the small catalog is a subset)")
    if args.width is not None and args.width < 1:
        parser.error("--width must be positive")
    report = measure(args.events, args.small_items, args.large_items, args.users, args.seed, args.repeat,
                     args.width)
    print(f"large / small events/s: {report['ratio']:.3f} (per CPU s {report['cpu_ratio']:.3f}; "
          f"target >= {TARGET_RATIO}); candidates/event {report['candidates_per_event_small']:.0f} / "
          f"{report['candidates_per_event_large']:.0f}; ranked against "
          f"{report['ranked_per_event_small']:,.0f} / {report['ranked_per_event_large']:,.0f} items",
          file=sys.stderr)
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
