"""`streamrec replay`: offline prequential (test-then-train) replay of a log through the learners.

No broker: the log is read into memory, cut into micro-batches in time order and fed through
`learners.evaluate.prequential_step`, the same call the live worker makes. Without `--data` it replays
the synthetic stream of `learners.synthetic` (the README's demo).

    streamrec replay                                   # synthetic demo
    streamrec replay --data ../shared/data/ml-100k/u.data --report ml.json --plot ml.png
    streamrec replay --data ../shared/data/yoochoose-clicks-100k --format yoochoose
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import Interactions, ItemMeta, Recommender, get_hook, has_hook
from learners.datasets import FORMATS, add_log_arguments, log_options, read_items, read_log, sniff_format
from learners.evaluate import PrequentialEvaluator, add_due_items, evaluator_for, prequential_step

CATALOG_NAMES = ("u.item", "movies.csv", "items.jsonl")
MODELS = ("online", "sparse", "popularity", "trending")
DEFAULT_MODEL = "sparse"
SERIES_POINTS = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="log file or folder (default: a synthetic stream)")
    parser.add_argument("--format", choices=FORMATS, help="log format (default: guessed from the file)")
    add_log_arguments(parser)
    parser.add_argument("--items", type=Path,
                        help="item catalog (u.item, movies.csv or items JSONL; default: one next to the log)")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the rolling metrics here")
    parser.add_argument("--model", type=model_spec, default=DEFAULT_MODEL,
                        help="learner: sparse (SparseRecommender, default: candidates, state linear in "
                             "items and users, a sublinear evaluator), online (OnlineRecommender: dense "
                             "scores of every item, for catalogs up to ~10k items), popularity or trending "
                             "baselines, or module:Class (any importable learner, built without arguments)")
    parser.add_argument("--no-deep", action="store_true", help="disable the deep (PyTorch) source")
    parser.add_argument("--save-state", type=Path, metavar="DIR",
                        help="write the final learner state as a worker checkpoint into DIR")
    parser.add_argument("--batch-size", type=int, default=256, help="events per micro-batch (default 256)")
    parser.add_argument("--limit", type=int, help="replay only the first N events")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic stream and the learners")
    parser.add_argument("--window", type=int, default=2000, help="evaluated events in the rolling metrics")
    parser.add_argument("--no-drift", action="store_true", help="no drift detection / adaptation")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch intra-op threads (default 1: small batched ops get slower with more)")


def deep_source(seed: int = 0, **options: Any) -> Any:
    """The deep (PyTorch) stage for `OnlineRecommender(deep=...)` / `SparseRecommender(deep=...)`, or
    None while `learners.deep` (torch) is not importable."""
    try:
        from learners.deep import build_source
    except ImportError:
        return None
    return build_source(seed=seed, **options)


def model_spec(value: str) -> str:
    if value in MODELS or (":" in value and all(value.partition(":")[::2])):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is none of {', '.join(MODELS)} and not module:Class")


def build_model(args: argparse.Namespace) -> Recommender:
    """The learner a replay runs: `OnlineRecommender` with the deep source unless `--no-deep` (the
    `DecayedPopularity` baseline while the blended recommender is not available)."""
    seed = getattr(args, "seed", 0)
    kind = getattr(args, "model", DEFAULT_MODEL)
    if ":" in kind:
        module, _, name = kind.partition(":")
        return getattr(importlib.import_module(module), name)()
    if kind == "popularity":
        from learners.popularity import Popularity

        return Popularity()
    if kind == "sparse":
        from learners.sparse import DEEP_OPTIONS, SparseRecommender

        no_deep = getattr(args, "no_deep", False)
        return SparseRecommender(deep=None if no_deep else deep_source(seed, **DEEP_OPTIONS), seed=seed)
    try:
        from learners.recommender import OnlineRecommender
    except ImportError:
        kind = "trending"
    if kind == "trending":
        from learners.popularity import DecayedPopularity

        return DecayedPopularity()
    deep = None if getattr(args, "no_deep", False) else deep_source(seed)
    return OnlineRecommender(deep=deep, seed=seed)


def load_stream(args: argparse.Namespace) -> tuple[Interactions, list[ItemMeta], str, dict[str, Any]]:
    """(log, catalog sorted by ts, a short description, extra facts for the report)."""
    if args.data is None:
        from learners.synthetic import generate

        n_events = args.limit or 30_000
        stream = generate(n_events=n_events, seed=args.seed)
        facts = {"switch_at": stream.truth["switch_at"]}
        return stream.log, list(stream.items), "synthetic stream", facts
    fmt = args.format or sniff_format(args.data)
    log = read_log(args.data, fmt, **log_options(args))
    if args.limit:
        log = log[: args.limit]
    items_path = args.items
    if items_path is None:
        folder = args.data if args.data.is_dir() else args.data.parent
        items_path = next((folder / n for n in CATALOG_NAMES if (folder / n).exists()), None)
    items = sorted(read_items(items_path), key=lambda m: m.ts) if items_path is not None else []
    return log, items, f"{args.data} ({fmt})", {"format": fmt, "items_file": str(items_path or "")}


def _drift_monitor(model: Recommender, args: argparse.Namespace) -> Any:
    from learners.drift import monitor_for

    return None if args.no_drift else monitor_for(model)


def replay(
    log: Interactions,
    model: Recommender,
    items: Sequence[ItemMeta] = (),
    batch_size: int = 256,
    evaluator: PrequentialEvaluator | None = None,
    monitor: Any = None,
    progress: bool = False,
) -> tuple[PrequentialEvaluator, dict[str, float]]:
    """Run the prequential loop over `log`; returns the evaluator and wall-clock facts."""
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    evaluator = evaluator or evaluator_for(model)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(log), unit="ev", unit_scale=True, file=sys.stderr, leave=False, mininterval=0.5)
    next_item = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for lo in range(0, len(log), batch_size):
        batch = log[lo: lo + batch_size]
        next_item = add_due_items(model, items, float(batch.ts[-1]), next_item)
        prequential_step(model, evaluator, batch, monitor=monitor)
        if bar is not None:
            bar.update(len(batch))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if bar is not None:
        bar.close()
    # CPU time as well: on a shared, loaded machine wall time mostly measures the neighbours
    return evaluator, {"wall_s": wall, "events_per_s": len(log) / wall if wall > 0 else float("nan"),
                       "cpu_s": cpu, "events_per_cpu_s": len(log) / cpu if cpu > 0 else float("nan")}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a benchmark report as JSON (non-finite numbers as null), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(report), indent=1))


def _thin(series: list[dict[str, float]], points: int = SERIES_POINTS) -> list[dict[str, float]]:
    if len(series) <= points:
        return series
    keep = np.unique(np.linspace(0, len(series) - 1, points).round().astype(int))
    return [series[i] for i in keep]


def build_report(evaluator: PrequentialEvaluator, timing: dict[str, float], model: Recommender,
                 description: str, batch_size: int, facts: dict[str, Any], monitor: Any) -> dict[str, Any]:
    report: dict[str, Any] = {"data": description, "model": type(model).__name__, "batch_size": batch_size}
    report.update(evaluator.report())
    report["events_per_s"] = timing["events_per_s"]
    report["wall_s"] = timing["wall_s"]
    report["cpu_s"] = timing["cpu_s"]
    report["events_per_cpu_s"] = timing["events_per_cpu_s"]
    report["coverage_sample"] = (f"top-{evaluator.k} lists of every {evaluator.coverage_every}th "
                                 "evaluated event")
    report.update(facts)
    if monitor is not None:
        report["drift_detections"] = monitor.detections
        report["drift_positions"] = list(monitor.positions)
    for name in ("n_items", "n_users", "evicted_items", "evicted_users"):
        if has_hook(model, name):
            report[f"model_{name}" if name.startswith("n_") else name] = int(get_hook(model, name))
    if has_hook(model, "state_bytes"):
        report["state_bytes"] = int(model.state_bytes())
    reranker = get_hook(model, "reranker")
    report["deep"] = reranker.stats() if reranker is not None else None  # rounds, rejected, s/round
    report["rolling_window"] = evaluator.window
    report["series"] = _thin(evaluator.series())
    return _finite(report)


def plot(report: dict[str, Any], path: Path) -> None:
    """Rolling HR@K / NDCG@K / MRR (and RMSE) against events replayed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = report["series"]
    x = [p["events"] for p in series]
    has_rmse = any(p.get("rmse") is not None for p in series)
    fig, axes = plt.subplots(2 if has_rmse else 1, 1, figsize=(8, 6 if has_rmse else 4), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    for key, label in (("hit", "HR@10"), ("ndcg", "NDCG@10"), ("rr", "MRR")):
        ax.plot(x, [p.get(key) if p.get(key) is not None else np.nan for p in series], label=label)
    if report.get("switch_at") is not None:
        ax.axvline(report["switch_at"], color="grey", ls="--", lw=1, label="interest switch")
    for n, pos in enumerate(report.get("drift_positions", [])):
        ax.axvline(pos, color="red", ls=":", lw=1, label="drift detected" if n == 0 else None)
    ax.set_ylabel(f"rolling mean (last {report['rolling_window']} evaluated)")
    ax.set_title(f"{report['model']}, prequential replay\n{report['data']}", fontsize=10)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    if has_rmse:
        axes[1, 0].plot(x, [p.get("rmse") if p.get("rmse") is not None else np.nan for p in series],
                        color="tab:purple")
        axes[1, 0].set_ylabel("rolling RMSE")
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("events replayed")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_state(directory: Path, model: Recommender, report: dict[str, Any]) -> Path:
    """Write the learner state in the worker's checkpoint format (`stream.checkpoint`)."""
    from stream.checkpoint import save_checkpoint

    meta = {"source": "replay", "data": report["data"], "events": report["events"], "model": report["model"]}
    return save_checkpoint(directory, model.state_dict(), {"replay:0": int(report["events"])}, meta)


def _summary(report: dict[str, Any], k: int) -> str:
    def fmt(key: str) -> str:
        value = report.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"events {report['events']:,}   evaluated {report['evaluated']:,}   "
        f"{report['events_per_s']:,.0f} events/s   "
        f"(evaluator {report['evaluator_us_per_event']:.1f} us/event)",
        f"HR@{k} {fmt(f'hr@{k}')}   NDCG@{k} {fmt(f'ndcg@{k}')}   MRR {fmt('mrr')}   AUC {fmt('auc')}   "
        f"coverage@{k} {fmt(f'coverage@{k}')}" + (f"   RMSE {fmt('rmse')}" if "rmse" in report else ""),
    ]
    if "drift_detections" in report:
        lines.append(f"drift detections: {report['drift_detections']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    loading = time.perf_counter()
    try:
        log, items, description, facts = load_stream(args)
        facts["load_s"] = time.perf_counter() - loading
    except ValueError as exc:
        print(f"streamrec replay: {exc}", file=sys.stderr)
        return 2
    if not len(log):
        print("streamrec replay: the log is empty", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("streamrec replay: --batch-size must be positive", file=sys.stderr)
        return 2
    model = build_model(args)
    if "torch" in sys.modules:  # a torch learner (the sparse one runs without it: ~0.8 GB less)
        import torch

        # Micro-batch ops are small: torch's thread pool costs more than it gives, and under load its
        # spinning threads made a replay ~10x slower. The worker does the same (`--torch-threads`).
        torch.set_num_threads(max(1, args.torch_threads))
    if has_hook(model, "score_then_learn"):
        from learners.warmup import warm_up

        # numba's kernels compiled (or loaded from its cache) before the timed loop, on a twin of the model
        facts["jit_s"] = warm_up(lambda: build_model(args))
    monitor = _drift_monitor(model, args)
    n_users, n_items = len(np.unique(log.user)), len(np.unique(log.item))
    catalog = f", {len(items):,} catalog entries" if items else ""
    print(f"replaying {description}: {len(log):,} events, {n_users:,} users, {n_items:,} items{catalog}"
          f" -> {type(model).__name__}", file=sys.stderr)
    evaluator = evaluator_for(model, window=args.window, seed=args.seed, series_every=max(1, len(log) // 400))
    evaluator, timing = replay(log, model, items, args.batch_size, evaluator, monitor,
                               progress=not args.quiet)
    report = build_report(evaluator, timing, model, description, args.batch_size, facts, monitor)
    print(_summary(report, evaluator.k))
    if args.report:
        write_report(args.report, report)
        print(f"report: {args.report}")
    if args.plot:
        plot(report, args.plot)
        print(f"plot:   {args.plot}")
    if args.save_state:
        print(f"state:  {save_state(args.save_state, model, report)}")
    if args.data is None and not (args.report or args.plot):
        print("(curves: --plot replay.png, JSON: --report replay.json, a real log: --data PATH)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamrec replay", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
