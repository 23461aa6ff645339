"""Drift experiment: how fast does the learner recover from an interest switch, adapting or not?

On the synthetic stream (every user's interest moves to another cluster at a known event), the same
learner is replayed twice, still learning throughout: once with `DriftMonitor` calling
`model.on_drift()` on each detected drop of the hit rate, once with detection only (control). The
figure of merit: events after the switch until the rolling HR@10 is back to 90% of its level just
before the switch.

    python -m bench.drift --report drift.json --plot drift.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.replay import build_model, write_report
from learners.base import Interactions, ItemMeta, Recommender
from learners.drift import DriftMonitor
from learners.evaluate import PrequentialEvaluator, add_due_items, prequential_step
from learners.rolling import rolling_mean


def recovery_events(positions: np.ndarray, hits: np.ndarray, switch_at: int, window: int = 1000,
                    level: float = 0.9) -> dict[str, Any]:
    """Pre-switch HR (mean of the last `window` evaluated events before the switch) and the events
    after the switch until the trailing mean over `window` evaluated events, all of them after the
    switch, is back to `level` times it (None if it never is)."""
    positions, hits = np.asarray(positions), np.asarray(hits, np.float64)
    before = hits[positions < switch_at][-window:]
    pre = float(before.mean()) if len(before) else float("nan")
    after_pos, after_hits = positions[positions >= switch_at], hits[positions >= switch_at]
    trailing = rolling_mean(after_hits, window)
    full = np.arange(1, len(after_hits) + 1) >= window  # windows made only of post-switch events
    back = np.flatnonzero(full & (trailing >= level * pre))
    events = int(after_pos[back[0]] - switch_at) if len(back) else None
    low = float(trailing[full].min()) if full.any() else float("nan")
    return {"pre_switch_hr@10": pre, "events_to_recover": events, "lowest_rolling_hr@10": low,
            "target_hr@10": level * pre}


def run_once(make_model: Callable[[], Recommender], log: Interactions, items: list[ItemMeta], adapt: bool,
             batch_size: int, monitor_args: dict[str, Any]) -> tuple[PrequentialEvaluator, DriftMonitor]:
    model = make_model()
    evaluator = PrequentialEvaluator()
    monitor = DriftMonitor(adapt=adapt, **monitor_args)
    next_item = 0
    for lo in range(0, len(log), batch_size):
        batch = log[lo: lo + batch_size]
        next_item = add_due_items(model, items, float(batch.ts[-1]), next_item)
        prequential_step(model, evaluator, batch, monitor=monitor)
    return evaluator, monitor


def experiment(
    make_model: Callable[[], Recommender], log: Interactions, items: list[ItemMeta], switch_at: int,
    batch_size: int = 256, window: int = 1000, monitor_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Adaptation on vs off on one stream; counts and curves for the report."""
    out: dict[str, Any] = {"switch_at": switch_at, "window": window, "batch_size": batch_size}
    for label, adapt in (("adapt", True), ("no_adapt", False)):
        evaluator, monitor = run_once(make_model, log, items, adapt, batch_size, monitor_args or {})
        kept = evaluator.kept()
        hits = (kept["rank"] < evaluator.k).astype(float)
        result = recovery_events(kept["position"], hits, switch_at, window)
        result["detections"] = monitor.detections
        result["detection_positions"] = monitor.positions
        result["hr@10"] = evaluator.report()["hr@10"]
        step = max(1, len(hits) // 400)
        result["_curve"] = (kept["position"][::step].tolist(), rolling_mean(hits, window)[::step].tolist())
        out[label] = result
    on, off = out["adapt"]["events_to_recover"], out["no_adapt"]["events_to_recover"]
    out["ratio"] = (on / off) if on is not None and off else None
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--switch-at", type=float, default=0.5, help="fraction of the stream")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--window", type=int, default=1000, help="evaluated events in the rolling HR@10")
    parser.add_argument("--cluster-skew", type=float, default=1.0,
                        help="users favour low clusters, so the switch also moves global popularity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-deep", action="store_true")
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    from learners.synthetic import generate

    stream = generate(n_events=args.events, switch_at=args.switch_at, cluster_skew=args.cluster_skew,
                      seed=args.seed)
    model = build_model(args)
    if not hasattr(model, "on_drift"):
        print(f"drift: {type(model).__name__} has no on_drift(): both runs are the same learner without "
              "adaptation", file=sys.stderr)
    result = experiment(lambda: build_model(args), stream.log, list(stream.items), stream.truth["switch_at"],
                        args.batch_size, args.window)
    result["model"] = type(model).__name__
    for label in ("adapt", "no_adapt"):
        r = result[label]
        print(f"{label:9s} pre-switch HR@10 {r['pre_switch_hr@10']:.4f}  "
              f"lowest {r['lowest_rolling_hr@10']:.4f}  events to 90%: {r['events_to_recover']}  "
              f"detections: {r['detections']}")
    print(f"ratio adapt/no_adapt: {result['ratio']}  (claim: <= 0.5 -> {result['claim_holds']})")
    if args.report:
        clean = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v)
                 for k, v in result.items()}
        write_report(args.report, clean)
    if args.plot:
        plot(result, args.plot, f"{result['model']} on the synthetic interest switch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
