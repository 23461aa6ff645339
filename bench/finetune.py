"""Throughput of the deep re-ranker's production fine-tuning loop on a synthetic window.

A sample is one event: its taken item (the positive) among `--candidates` first-stage candidates (the
negatives), each described by `--features` features. The window is resident on the device and a round
is exactly what `WindowedFineTuner.run_round` does live: copy, train `--epochs` epochs, validate on
the newest slice. CPU runs use torch on one thread, as the background fine-tuner does.

    python bench/finetune.py --device cpu --json
    python bench/finetune.py --stream-impact ../shared/data/yoochoose-clicks-100k --limit 30000

`--stream-impact LOG` instead replays LOG (test-then-train) through `OnlineRecommender` with the deep
stage fine-tuning in the background (as live) and compares the stream's throughput in micro-batches
that ran while a fine-tune was running against those that did not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time

import numpy as np
import torch

from learners.deep.device import resolve_device
from learners.deep.finetune import WindowedFineTuner, sample_fields
from learners.deep.model import CandidateRanker
from learners.deep.reranker import training_defaults
from learners.deep.window import SlidingWindow


def synthetic_window(
    n_samples: int, n_candidates: int, n_features: int, device: torch.device, seed: int = 0
) -> SlidingWindow:
    """A full window whose label is a noisy function of the features (so training has signal)."""
    rng = np.random.default_rng(seed)
    window = SlidingWindow(n_samples, sample_fields(n_candidates, n_features), device)
    x = rng.normal(size=(n_samples, n_candidates, n_features)).astype(np.float32)
    w = rng.normal(size=n_features).astype(np.float32)
    logits = x @ w + rng.gumbel(size=(n_samples, n_candidates)).astype(np.float32)
    window.append(np.arange(n_samples), np.arange(n_samples, dtype=np.float64),
                  features=x, label=logits.argmax(1), n_valid=np.full(n_samples, n_candidates))
    return window


def measure(args: argparse.Namespace) -> dict[str, object]:
    main_threads = _threads_seen_by_main(args.threads)  # before this thread sets its own
    device = resolve_device(args.device)
    batch_size, epochs = training_defaults(device)  # the production defaults of this device
    args.batch_size, args.epochs = args.batch_size or batch_size, args.epochs or epochs
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    window = synthetic_window(args.window, args.candidates, args.features, device, args.seed)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    tuner = WindowedFineTuner(
        lambda: CandidateRanker(args.features, hidden).to(device), window, every_events=args.interval,
        epochs=args.epochs, batch_size=args.batch_size, background=False, device=device, seed=args.seed,
    )
    # warm-up round (allocator, kernels), then timed rounds fine-tuning the accepted model
    serving, _ = tuner.run_round(None, args.window)
    seconds, train_seconds = [], []
    for r in range(args.rounds):
        start = time.perf_counter()
        model, report = tuner.run_round(serving, args.window + r)
        seconds.append(time.perf_counter() - start)
        assert report is not None and model is not None
        data = window.snapshot()
        n_train = len(data["label"]) - max(1, int(len(data["label"]) * tuner.holdout))
        train = {k: v[:n_train] for k, v in data.items()}
        gen = torch.Generator(device=device)
        gen.manual_seed(r)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        tuner.train_epochs(model, train, gen)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_seconds.append(time.perf_counter() - start)
        serving = model
    n_train = len(window) - max(1, int(len(window) * tuner.holdout))
    samples_per_s = n_train * args.epochs / float(np.median(train_seconds))
    per_round = float(np.median(seconds))
    due_s = args.interval / args.live_rate
    return {
        "samples_per_s": round(samples_per_s, 1),
        "window": args.window,
        "candidates": args.candidates,
        "features": args.features,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "interval_events": args.interval,
        "live_rate": args.live_rate,
        "seconds_per_round": round(per_round, 4),
        "round_due_every_s": due_s,
        "covers_window_before_next": per_round <= due_s,
        "swap_delay_events": math.ceil(per_round * args.live_rate),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "main_thread_threads_after_trainer": main_threads,
    }


def stream_impact(args: argparse.Namespace) -> dict[str, object]:
    """Stream throughput while background fine-tunes run vs. while none does (same replay)."""
    from learners.datasets import read_log
    from learners.deep.reranker import DeepReranker
    from learners.recommender import OnlineRecommender

    if args.main_threads:
        torch.set_num_threads(args.main_threads)
    log = read_log(args.stream_impact)
    if args.limit:
        log = log[: args.limit]
    deep = DeepReranker(every_events=args.interval, background=True, device=args.device, seed=args.seed,
                        epochs=args.epochs, batch_size=args.batch_size)
    model = OnlineRecommender(deep=deep, seed=args.seed)
    busy_t = idle_t = 0.0
    busy_n = idle_n = 0
    for lo in range(0, len(log), args.stream_batch):
        batch = log[lo: lo + args.stream_batch]
        running = deep.tuner is not None and deep.tuner.busy(deep.events)
        start = time.perf_counter()
        model.score_many(batch)
        model.learn_many(batch)
        took = time.perf_counter() - start
        running = running and deep.tuner is not None and deep.tuner.busy(deep.events)
        if lo < args.warmup_events:
            continue
        if running:
            busy_t, busy_n = busy_t + took, busy_n + len(batch)
        else:
            idle_t, idle_n = idle_t + took, idle_n + len(batch)
    deep.close()
    idle_rate = idle_n / idle_t if idle_t else float("nan")
    busy_rate = busy_n / busy_t if busy_t else float("nan")
    return {
        "events_per_s_idle": round(idle_rate, 1),
        "events_per_s_during_finetune": round(busy_rate, 1),
        "throughput_drop": round(1.0 - busy_rate / idle_rate, 4) if idle_t and busy_t else None,
        "events_idle": idle_n,
        "events_during_finetune": busy_n,
        **{k: v for k, v in deep.stats().items() if k != "window"},
        "interval_events": args.interval,
        "torch_threads_main": torch.get_num_threads(),
    }


def _threads_seen_by_main(threads: int) -> int:
    """torch threads the main thread has after a trainer thread set its own (OpenMP: per thread)."""
    worker = threading.Thread(target=torch.set_num_threads, args=(threads,))
    worker.start()
    worker.join()
    return torch.get_num_threads()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:n]")
    # defaults: the production DeepReranker over OnlineRecommender (cooccurrence + mf sources)
    parser.add_argument("--window", type=int, default=15_000, help="samples in the window (events whose "
                        "item was a candidate: about 60%% of a 25,000-event window)")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--features", type=int, default=15, help="9 own + 3 per source, 2 sources")
    parser.add_argument("--hidden", default="32,16")
    parser.add_argument("--epochs", type=int, help="default: the device's production default (CPU 1, CUDA 4)")
    parser.add_argument("--batch-size", type=int,
                        help="default: the device's production default (CPU 1024, CUDA 8192)")
    parser.add_argument("--interval", type=int, default=10_000, help="events between fine-tunes")
    parser.add_argument("--live-rate", type=float, default=5_000.0, help="events per second, live")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--stream-impact", metavar="LOG", help="measure the stream's slowdown during "
                        "background fine-tunes on this log instead")
    parser.add_argument("--limit", type=int, default=30_000, help="events of LOG (--stream-impact)")
    parser.add_argument("--stream-batch", type=int, default=256, help="micro-batch (--stream-impact)")
    parser.add_argument("--main-threads", type=int, default=0, help="torch threads of the stream's "
                        "thread (--stream-impact; 0: torch's default)")
    parser.add_argument("--warmup-events", type=int, default=5_000, help="not timed (--stream-impact)")


def run(args: argparse.Namespace) -> int:
    try:
        result = stream_impact(args) if args.stream_impact else measure(args)
    except ValueError as exc:
        print(f"finetune bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>36}: {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
