"""Deep-stage variants on the shared logs, in one command: HR@10 / NDCG@10 and the gain over `--no-deep`.

Each variant replays a log prequentially (`bench.replay.replay`, the same loop as `streamrec replay`)
with its fine-tunes inside the replay: a round triggered at event k trains on events before k and
serves from k + ceil(cost_s x 5000). Variants:

* ``nodeep``: `OnlineRecommender()` (the `--no-deep` baseline);
* ``deep``: the default deep stage (`learners.deep.build_source`, the candidate ranker);
* ``seq-blend``: a GRU sequence encoder (`learners.deep.sequence.SequenceSource`) as an online source;
* ``seq-rank``: the encoder as a source + the candidate ranker (its score is a ranker feature);
* ``seq-recall``: as seq-rank, each source also proposing its own top `--per-source` candidates.

    python -m bench.deep_variants --out bench/out/deep_variants.json
    python -m bench.deep_variants --logs ml --variants nodeep seq-blend --limit 20000

The encoder's round cost is its thread CPU time (`--cost-clock cpu`, default: on this shared machine
wall time mostly measures the neighbours); the ranker's is wall time as in `streamrec replay`.
`--seq-fixed-cost S` charges every encoder round S seconds instead: the cost measured for the same
round on a GPU (an H100 trains d=64, L=20, batch 512 at ~178k samples/s, so 3 epochs of a 50k
window take ~0.8 s), i.e. the replay a GPU-backed worker would see while this CPU does the training:

    python -m bench.deep_variants --variants nodeep deep seq-rank --dim 64 --epochs 3
        --seq-window 50000 --seq-every 5000 --seq-fixed-cost 1.0 --jobs 4   (one line)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.replay import replay, write_report
from learners.base import get_hook
from learners.datasets import read_items, read_log
from learners.evaluate import PrequentialEvaluator

DATA = Path(__file__).resolve().parents[1] / "../shared/data"
LOGS = {
    "ml": (DATA / "ml-100k/u.data", "movielens", DATA / "ml-100k/u.item"),
    "yoochoose": (DATA / "yoochoose-clicks-100k", "yoochoose", None),
}
VARIANTS = ("nodeep", "deep", "seq-blend", "seq-rank", "seq-recall")


def build(variant: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """(recommender, sequence source or None) of a variant."""
    from learners.deep import build_source
    from learners.deep.sequence import SequenceSource
    from learners.recommender import OnlineRecommender

    seq = None
    if variant.startswith("seq"):
        seq = SequenceSource(dim=args.dim, length=args.length, window_events=args.seq_window,
                             every_events=args.seq_every, epochs=args.epochs, batch_size=args.seq_batch,
                             lr=args.lr, output=args.output, cost_clock=args.cost_clock, device=args.device,
                             fixed_cost_s=args.seq_fixed_cost, exclude_history=args.exclude_history,
                             seed=args.seed)
    sources = [seq] if seq is not None else []
    deep = None
    if variant == "deep" or variant in ("seq-rank", "seq-recall"):
        per_source = args.per_source if variant == "seq-recall" else 0
        deep = build_source(seed=args.seed, per_source=per_source, device=args.device)
    model = OnlineRecommender(sources=sources, deep=deep, seed=args.seed)
    if seq is not None:
        # the recommender starts an extra source's blend weight at 0 and its blend learns slowly (lr
        # 0.005): without a prior the encoder would stay out of the blend for the whole log
        at = model.blend.names.index(seq.name)
        model.blend.prior[at] = model.blend.weights[at] = args.blend_init
        if args.warm_start and model.mf is not None:
            seq.item_vectors = lambda: model.mf.item_factors  # the online MF's current item factors
    return model, seq


def run_variant(log_name: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    path, fmt, items_path = LOGS[log_name]
    log = read_log(path, fmt)
    if args.limit:
        log = log[: args.limit]
    items = sorted(read_items(items_path), key=lambda m: m.ts) if items_path and items_path.exists() else []
    model, seq = build(variant, args)
    evaluator = PrequentialEvaluator(seed=args.seed)
    started = time.process_time()
    evaluator, timing = replay(log, model, items, args.batch_size, evaluator)
    model.close()
    report = evaluator.report()
    reranker = get_hook(model, "reranker")
    out = {
        "log": log_name, "variant": variant, "events": len(log),
        "hr@10": report.get("hr@10"), "ndcg@10": report.get("ndcg@10"),
        "cpu_s": time.process_time() - started, "wall_s": timing["wall_s"],
        "ranker": reranker.stats() if reranker is not None else None,
        "seq": seq.stats() if seq is not None else None,
    }
    if reranker is not None and reranker.tuner is not None and reranker.tuner.rounds:
        rounds = reranker.tuner.rounds
        seconds = sum(r.seconds for r in rounds)
        out["ranker"]["samples_per_s"] = sum(r.samples for r in rounds) / seconds if seconds else None
    if seq is not None:
        out["seq"]["blend_weight"] = float(model.blend.weights[model.blend.names.index(seq.name)])
    return out


def _row(r: dict[str, Any], base: float | None) -> str:
    gain = f"{100 * (r['hr@10'] / base - 1):+.1f}%" if base else "   -  "
    parts = [f"{r['log']:<10}{r['variant']:<11} HR@10 {r['hr@10']:.4f} ({gain})  NDCG@10 {r['ndcg@10']:.4f}"]
    for key in ("ranker", "seq"):
        s = r.get(key)
        if s and s.get("rounds"):
            sps = s.get("samples_per_s")
            parts.append(f"{key}: {s['rounds'] - s['rejected']}/{s['rounds']} acc, "
                         f"{s['seconds_per_round']:.2f} s/round, {sps or 0:,.0f} samples/s")
    parts.append(f"cpu {r['cpu_s']:.0f}s")
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deep_variants",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--logs", nargs="+", choices=sorted(LOGS), default=sorted(LOGS))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--limit", type=int, help="replay only the first N events of each log")
    parser.add_argument("--batch-size", type=int, default=256, help="replay micro-batch")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--seq-window", type=int, default=20_000)
    parser.add_argument("--seq-every", type=int, default=5_000)
    parser.add_argument("--seq-batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--output", choices=("z", "logp", "logit", "prob"), default="z")
    parser.add_argument("--blend-init", type=float, default=0.3, help="the encoder's initial blend weight")
    parser.add_argument("--per-source", type=int, default=5)
    parser.add_argument("--keep-history", dest="exclude_history", action="store_false",
                        help="the encoder may predict the user's own recent items (repeats)")
    parser.add_argument("--no-warm-start", dest="warm_start", action="store_false")
    parser.add_argument("--seq-fixed-cost", type=float,
                        help="charge each encoder round this many seconds (e.g. the cost measured on a GPU)")
    parser.add_argument("--cost-clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="replays run in parallel processes")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the replay's setting: the other core serves the stream
    missing = [name for name in args.logs if not LOGS[name][0].exists()]
    if missing:
        print(f"deep_variants: logs not found under {DATA}: {missing}", file=sys.stderr)
        return 2
    runs = [(log_name, variant) for log_name in args.logs for variant in args.variants]
    if args.jobs > 1:  # one process per replay (the GPU machine's cores); rows print when all are done
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=torch.set_num_threads, initargs=(1,)) as pool:
            logs, variants = [r[0] for r in runs], [r[1] for r in runs]
            done = list(pool.map(run_variant, logs, variants, [args] * len(runs)))
    else:
        done = [run_variant(log_name, variant, args) for log_name, variant in runs]
    results: list[dict[str, Any]] = []
    for r in done:
        base = next((x["hr@10"] for x in done if x["log"] == r["log"] and x["variant"] == "nodeep"), None)
        r["gain_vs_nodeep"] = r["hr@10"] / base - 1 if base else None
        results.append(r)
        print(_row(r, base), flush=True)
    if args.out:
        write_report(args.out, {"config": {k: str(v) for k, v in vars(args).items()}, "results": results})
        print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
