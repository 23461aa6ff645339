"""Drift experiment: how fast does the learner recover from an interest switch, adapting or not?

On the synthetic stream (every user's interest moves to another cluster at a known event), the same
learner is replayed twice, still learning throughout: once with `DriftMonitor` calling
`model.on_drift(keep_recent=0)` on each detected drop of the hit rate (counts forgotten, each user's
old context dropped), once with detection only (control). The figure of merit: events after the
switch until the rolling HR@10 over a trailing window of evaluated events, all of them after the
switch, is back to 90% of its level just before the switch; the claim is that adapting needs at most
half as many. Each window also reports the earliest possible count (where the first window made only
of post-switch events ends: about 1,200 events for the 1,000 window, as only ~80% of the events after
the switch are evaluated), so a ratio near that bound is seen for what it is.

    python -m bench.drift --no-deep --seeds 0-9 --jobs 2 --report drift.json --plot drift.png
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.replay import DEFAULT_MODEL, build_model, model_spec, replay, write_report
from learners.base import Interactions, ItemMeta, Recommender, has_hook
from learners.drift import DriftMonitor
from learners.evaluate import PrequentialEvaluator, evaluator_for
from learners.rolling import rolling_mean


def recovery_events(positions: np.ndarray, hits: np.ndarray, switch_at: int, window: int = 1000,
                    level: float = 0.9) -> dict[str, Any]:
    """Pre-switch HR (mean of the last `window` evaluated events before the switch) and the events
    after the switch until the trailing mean over `window` evaluated events, all of them after the
    switch, is back to `level` times it (None if it never is); `earliest`: the fewest events any
    learner could need (where the first such window ends: the `window`-th evaluated event after the
    switch)."""
    positions, hits = np.asarray(positions), np.asarray(hits, np.float64)
    before = hits[positions < switch_at][-window:]
    pre = float(before.mean()) if len(before) else float("nan")
    after_pos, after_hits = positions[positions >= switch_at], hits[positions >= switch_at]
    trailing = rolling_mean(after_hits, window)
    full = np.arange(1, len(after_hits) + 1) >= window  # windows made only of post-switch events
    back = np.flatnonzero(full & (trailing >= level * pre))
    events = int(after_pos[back[0]] - switch_at) if len(back) else None
    low = float(trailing[full].min()) if full.any() else float("nan")
    earliest = int(after_pos[window - 1] - switch_at) if len(after_pos) >= window else None
    return {"pre_switch_hr@10": pre, "events_to_recover": events, "lowest_rolling_hr@10": low,
            "target_hr@10": level * pre, "earliest": earliest}


def run_once(make_model: Callable[[], Recommender], log: Interactions, items: list[ItemMeta], adapt: bool,
             batch_size: int, monitor_args: dict[str, Any]) -> tuple[PrequentialEvaluator, DriftMonitor]:
    monitor = DriftMonitor(adapt=adapt, **monitor_args)
    model = make_model()
    evaluator, _ = replay(log, model, items, batch_size, evaluator_for(model), monitor)
    return evaluator, monitor


def ratio_of(on: int | None, off: int | None) -> float | None:
    """Events to recover with adaptation over those without (None when either never recovers)."""
    return on / off if on is not None and off else None


def experiment(
    make_model: Callable[[], Recommender], log: Interactions, items: list[ItemMeta], switch_at: int,
    batch_size: int = 256, window: int = 1000, monitor_args: dict[str, Any] | None = None,
    other_windows: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Adaptation on vs off on one stream; counts and curves for the report. The claim is judged with
    `window`; `other_windows` are reported beside it (`by_window`)."""
    out: dict[str, Any] = {"switch_at": switch_at, "window": window, "batch_size": batch_size,
                           "by_window": {}}
    windows = (window, *[w for w in other_windows if w != window])
    for label, adapt in (("adapt", True), ("no_adapt", False)):
        evaluator, monitor = run_once(make_model, log, items, adapt, batch_size, monitor_args or {})
        kept = evaluator.kept()
        hits = (kept["rank"] < evaluator.k).astype(float)
        for w in windows:
            found = recovery_events(kept["position"], hits, switch_at, w)
            entry = out["by_window"].setdefault(w, {"earliest": found["earliest"]})
            entry[label] = found["events_to_recover"]
        result = recovery_events(kept["position"], hits, switch_at, window)
        result["detections"] = monitor.detections
        result["detection_positions"] = monitor.positions
        result["hr@10"] = evaluator.report()["hr@10"]
        step = max(1, len(hits) // 400)
        result["_curve"] = (kept["position"][::step].tolist(), rolling_mean(hits, window)[::step].tolist())
        out[label] = result
    for entry in out["by_window"].values():
        entry["ratio"] = ratio_of(entry["adapt"], entry["no_adapt"])
    on, off = out["adapt"]["events_to_recover"], out["no_adapt"]["events_to_recover"]
    out["ratio"] = ratio_of(on, off)
    out["claim_holds"] = bool(on is not None and (off is None or on <= off / 2))
    return out


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, color in (("adapt", "tab:green"), ("no_adapt", "tab:red")):
        xs, ys = result[label]["_curve"]
        name = "with adaptation (on_drift)" if label == "adapt" else "without adaptation"
        ax.plot(xs, ys, color=color, label=f"{name}: {result[label]['events_to_recover']} events to recover")
        for pos in result[label]["detection_positions"]:
            ax.axvline(pos, color=color, ls=":", lw=1)
    ax.axvline(result["switch_at"], color="grey", ls="--", label="interest switch")
    ax.axhline(result["adapt"]["target_hr@10"], color="grey", lw=0.8, label="90% of pre-switch HR@10")
    ax.set_xlabel("events replayed")
    ax.set_ylabel(f"rolling HR@10 (last {result['window']} evaluated)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_seeds(text: str) -> list[int]:
    """"0-9" or "0,3,7" (or a mix) -> seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise argparse.ArgumentTypeError(f"seeds look like 0-9 or 0,3,7; got {text!r}")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The experiment on the stream (and learner) of one seed."""
    from learners.synthetic import generate

    args = argparse.Namespace(**{**vars(args), "seed": seed})
    stream = generate(n_events=args.events, switch_at=args.switch_at, cluster_skew=args.cluster_skew,
                      seed=seed)
    adapt_args = {"keep_recent": args.keep_recent} if args.keep_recent >= 0 else {}
    if args.forget is not None:
        adapt_args["forget"] = args.forget
    result = experiment(lambda: build_model(args), stream.log, list(stream.items), stream.truth["switch_at"],
                        args.batch_size, args.window, {"adapt_args": adapt_args or None},
                        other_windows=tuple(args.also_window))
    result["seed"] = seed
    result["adapt_args"] = adapt_args
    return result


def _count(n: float | None) -> str:
    return "never" if n is None else f"{int(n):,}"


def _median(values: list[float | None]) -> float | None:
    """Median where a missing value (never recovered, or no ratio) counts as +inf."""
    if not values:
        return None
    middle = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(middle) else middle


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per window: each seed's counts and ratio, and their medians."""
    summary: dict[str, Any] = {}
    for window in results[0]["by_window"]:
        rows = [r["by_window"][window] for r in results]
        ratios = [row["ratio"] for row in rows]
        summary[str(window)] = {
            "median_adapt": _median([row["adapt"] for row in rows]),
            "median_no_adapt": _median([row["no_adapt"] for row in rows]),
            "median_ratio": _median(ratios),
            "seeds_with_ratio_at_most_half": sum(r is not None and r <= 0.5 for r in ratios),
            "seeds": len(rows),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--switch-at", type=float, default=0.5, help="fraction of the stream")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--window", type=int, default=1000,
                        help="evaluated events in the rolling HR@10 the claim is judged with")
    parser.add_argument("--also-window", type=int, nargs="*", default=[500],
                        help="other windows reported beside it (default 500)")
    parser.add_argument("--cluster-skew", type=float, default=1.0,
                        help="users favour low clusters, so the switch also moves global popularity")
    parser.add_argument("--seed", type=int, default=0, help="one seed (stream and learner)")
    parser.add_argument("--seeds", type=parse_seeds, help="several seeds, e.g. 0-9: each seed and the median")
    parser.add_argument("--keep-recent", type=int, default=0,
                        help="on_drift(keep_recent=...): recent items each user keeps (-1: model default)")
    parser.add_argument("--forget", type=float, help="on_drift(forget=...) (default: the model's)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--no-deep", action="store_true")
    parser.add_argument("--model", type=model_spec, default=DEFAULT_MODEL,
                        help="learner, as `streamrec replay --model` (online, sparse, ...)")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path, help="curves of the first seed")
    args = parser.parse_args(argv)
    if args.window < 1 or any(w < 1 for w in args.also_window):
        parser.error("windows must be positive")
    seeds = args.seeds or [args.seed]
    model = build_model(args)
    if not has_hook(model, "on_drift"):
        print(f"drift: {type(model).__name__} has no on_drift(): both runs are the same learner without "
              "adaptation", file=sys.stderr)
    if args.jobs > 1 and len(seeds) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(args.jobs, len(seeds))) as pool:
            results = list(pool.map(one_seed, [args] * len(seeds), seeds))
    else:
        results = [one_seed(args, seed) for seed in seeds]
    windows = list(results[0]["by_window"])
    print(f"{type(model).__name__}, on_drift{tuple(results[0]['adapt_args'].items()) or '()'}; events after "
          "the switch until the rolling HR@10 (trailing window of post-switch evaluated events) is back to "
          "90% of its pre-switch level")
    for r in results:
        a, n = r["adapt"], r["no_adapt"]
        print(f"seed {r['seed']}: pre-switch HR@10 {a['pre_switch_hr@10']:.4f}, detections adapt "
              f"{a['detection_positions']} no_adapt {n['detection_positions']} (switch {r['switch_at']})")
        for w in windows:
            row = r["by_window"][w]
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
            print(f"  window {w:5d}: adapt {_count(row['adapt']):>7s}  "
                  f"no_adapt {_count(row['no_adapt']):>7s}  ratio {ratio:>5s}  "
                  f"(earliest possible {_count(row['earliest'])})")
    summary = summarise(results)
    for w, row in summary.items():
        ratio = "-" if row["median_ratio"] is None else f"{row['median_ratio']:.2f}"
        print(f"window {w}: median adapt {_count(row['median_adapt'])}, "
              f"median no_adapt {_count(row['median_no_adapt'])}, median ratio {ratio}; "
              f"ratio <= 0.5 on {row['seeds_with_ratio_at_most_half']}/{row['seeds']} seeds")
    if args.report:
        clean = [{k: ({kk: vv for kk, vv in v.items() if not str(kk).startswith("_")}
                      if isinstance(v, dict) else v) for k, v in r.items()} for r in results]
        write_report(args.report, {"model": type(model).__name__, "seeds": clean, "summary": summary})
    if args.plot:
        plot(results[0], args.plot, f"{type(model).__name__} on the synthetic interest switch "
                                    f"(seed {results[0]['seed']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
