"""Peers side by side on one log under the same prequential protocol.

Popularity, decayed popularity, item co-occurrence, river's `reco.BiasedMF` and `reco.FunkMF`, and
ours (`OnlineRecommender`), each replayed through `learners.evaluate` (decayed popularity through
`learners.item_rank`: the same ranks without a batch x items score matrix). river has no batch scorer: its
models are ranked with `predict_one` over every seen item on every `--river-every`-th evaluable event
only (the others still train them); the vectorised models are ranked on every evaluable event and are
also reported on river's sample, so the columns compare like with like. Also reports river BiasedMF's
`learn_one`-only throughput beside our end-to-end replay events/s.

    python -m bench.peers --data ../shared/data/ml-100k/u.data --report peers.json --plot peers.png
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.replay import DEFAULT_MODEL, build_model, model_spec, write_report
from learners.base import Interactions, ItemMeta
from learners.datasets import FORMATS, add_log_arguments, log_options, read_log, sniff_format
from learners.evaluate import PrequentialEvaluator, evaluator_for, prequential_step
from learners.ids import IdIndex
from learners.item_rank import DecayedPopularityEvaluator
from learners.rolling import rolling_mean

SHARED_ML = Path(__file__).resolve().parents[1] / "../shared/data/ml-100k/u.data"


class _IndexedPeer:
    """Item columns of a peer, through the project's `IdIndex` (no capacity: columns never move)."""

    def __init__(self) -> None:
        self._index = IdIndex()

    def item_cols(self, ids: np.ndarray) -> np.ndarray:
        return self._index.cols(ids, add=False)

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self._index.ids(cols)

    def add_items(self, items: list[ItemMeta]) -> None:
        pass


class RiverPeer(_IndexedPeer):
    """A river `reco` model behind the parts of the `Recommender` protocol the evaluator needs.

    Scores come from `predict_one` for every item river has learned (no batch scorer exists);
    `score_rows` is only asked for the events that are ranked."""

    name = "river"

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def learn_many(self, batch: Interactions) -> None:
        learn = self.model.learn_one
        rows = zip(batch.user.tolist(), batch.item.tolist(), batch.value.tolist(), strict=True)
        for user, item, value in rows:
            learn(user, item, value)
        self._index.cols(batch.item)

    def score_rows(self, users: list[str]) -> np.ndarray:
        predict = self.model.predict_one
        items = self._index.ids(np.arange(self._index.n_cols)).tolist()
        out = np.empty((len(users), len(items)), np.float32)
        for r, user in enumerate(users):
            out[r] = [predict(user, item) for item in items]
        return np.nan_to_num(out, nan=-np.inf)  # FunkMF can diverge; a NaN never ranks first


class CoOccurrencePeer(_IndexedPeer):
    """Item-to-item co-occurrence over each user's last `recent` items (symmetric counts, each row
    normalised by its total + 1, the most recent context item weighted most: `decay` ** age), plus a
    small share of decayed popularity to break ties: the usual session baseline (the same definition
    as the shared anchor tool's "item co-occurrence + decpop")."""

    name = "cooccurrence"

    def __init__(self, recent: int = 5, decay: float = 0.8, half_life: float = 2000.0,
                 popularity_share: float = 0.05) -> None:
        self.recent, self.decay = recent, decay
        self.half_life, self.popularity_share = half_life, popularity_share
        super().__init__()
        self._counts = np.zeros((0, 0), np.float32)
        self._history: dict[str, list[int]] = {}
        self._pop = np.zeros(0)
        self._last = np.zeros(0)
        self._clock = 0

    def _cols(self, ids: np.ndarray) -> list[int]:
        cols = self._index.cols(ids)
        n = self._index.n_cols
        if n > len(self._counts):
            size = max(n, 2 * len(self._counts), 64)
            grown = np.zeros((size, size), np.float32)
            grown[: len(self._counts), : len(self._counts)] = self._counts
            self._counts = grown
            self._pop, self._last = np.resize(self._pop, size), np.resize(self._last, size)
            self._pop[n:] = self._last[n:] = 0.0
        return cols.tolist()

    def learn_many(self, batch: Interactions) -> None:
        cols = self._cols(batch.item)
        rows, others = [], []
        for user, col in zip(batch.user.tolist(), cols, strict=True):
            past = self._history.setdefault(user, [])
            for j in past[-self.recent:]:
                rows.append(j)
                others.append(col)
            past.append(col)
            self._clock += 1  # decayed popularity on the event clock, as in the anchor
            self._pop[col] = self._pop[col] * 2.0 ** (-(self._clock - self._last[col]) / self.half_life) + 1
            self._last[col] = self._clock
        if rows:
            np.add.at(self._counts, (np.array(rows), np.array(others)), 1.0)
            np.add.at(self._counts, (np.array(others), np.array(rows)), 1.0)

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        n = self._index.n_cols
        batch_cols = self._index.cols(batch.item, add=False).tolist()
        counts = self._counts[:n, :n]
        norm = counts.sum(axis=1) + 1.0
        scores = np.zeros((len(batch), n), np.float64)
        earlier: dict[str, list[int]] = {}  # the batch's own earlier events are context too
        for r, (user, col) in enumerate(zip(batch.user.tolist(), batch_cols, strict=True)):
            context = self._history.get(user, []) + earlier.get(user, [])
            for age, j in enumerate(reversed(context[-self.recent:])):
                if j < n:
                    scores[r] += counts[j] / norm[j] * self.decay ** age
            if col >= 0:
                earlier.setdefault(user, []).append(col)
        pop = self._pop[:n] * 2.0 ** (-(self._clock - self._last[:n]) / self.half_life)
        scores += (self.popularity_share * pop / (pop.max(initial=0.0) + 1e-9))
        return scores, np.arange(n)


def river_step(peer: RiverPeer, evaluator: PrequentialEvaluator, batch: Interactions) -> None:
    """`prequential_step` for a peer without a batch scorer: score only the ranked events."""
    ranked = np.flatnonzero(evaluator.evaluable(batch))
    scores = cols = None
    if len(ranked):
        n_items = peer._index.n_cols
        scores = np.zeros((len(batch), n_items), np.float32)
        scores[ranked] = peer.score_rows(batch.user[ranked].tolist())
        cols = np.arange(n_items)
    evaluator.observe(batch, scores, cols, peer)
    peer.learn_many(batch)


def river_models(seed: int) -> dict[str, Callable[[], Any]]:
    from river import optim, reco

    def biased() -> Any:
        return reco.BiasedMF(n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                             latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
                             l2_latent=0.001)

    def funk() -> Any:
        return reco.FunkMF(n_factors=10, optimizer=optim.SGD(0.05), l2=0.001,
                           initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed))

    return {"river BiasedMF": biased, "river FunkMF": funk}


def vectorised_models(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    from learners.popularity import Popularity

    models: dict[str, Callable[[], Any]] = {
        "popularity": Popularity,
        # ranked by its exact sublinear evaluator (the dense one needs a batch x items score matrix)
        "decayed popularity (half-life 2000 events)": lambda: DecayedPopularityEvaluator(half_life=2000.0),
    }
    models["item co-occurrence (+ decayed popularity)"] = CoOccurrencePeer
    models[f"ours ({type(build_model(args)).__name__})"] = lambda: build_model(args)
    return {name: make for name, make in models.items() if _wanted(name, args)}


# --models keys: a short name per peer (the table keeps the long ones)
MODEL_KEYS = {"popularity": "popularity", "decayed popularity": "decayed-popularity",
              "item co-occurrence": "cooccurrence", "ours": "ours", "river BiasedMF": "river-biasedmf",
              "river FunkMF": "river-funkmf"}


def _wanted(name: str, args: argparse.Namespace) -> bool:
    chosen = getattr(args, "models", None)
    if not chosen:
        return True
    key = next(k for prefix, k in MODEL_KEYS.items() if name.startswith(prefix))
    return key in chosen


def _models_arg(value: str) -> set[str]:
    chosen = {v.strip() for v in value.split(",") if v.strip()}
    unknown = chosen - set(MODEL_KEYS.values())
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown model(s) {sorted(unknown)}; choose from "
                                         f"{', '.join(MODEL_KEYS.values())}")
    return chosen


def _metrics(evaluator: PrequentialEvaluator, sample_every: int) -> dict[str, Any]:
    report = evaluator.report()
    kept = evaluator.kept()
    out = {key: report[key] for key in ("evaluated", "hr@10", "ndcg@10", "mrr", "auc", "coverage@10")}
    ranks = kept["rank"]
    if evaluator.evaluate_every == 1 and len(ranks):  # the same events river is ranked on
        sample = ranks[::sample_every]
        out["hr@10 (river sample)"] = float(np.mean(sample < 10))
        out["ndcg@10 (river sample)"] = float(np.mean((sample < 10) / np.log2(sample + 2)))
    else:
        out["hr@10 (river sample)"] = out["hr@10"]
        out["ndcg@10 (river sample)"] = out["ndcg@10"]
    window = max(200, len(ranks) // 50)
    hits = (ranks < 10).astype(float)
    out["_curve"] = (kept["position"].tolist()[::max(1, len(ranks) // 300)],
                     rolling_mean(hits, window)[:: max(1, len(ranks) // 300)].tolist())
    return out


def learn_only_throughput(log: Interactions, make: Callable[[], Any], limit: int) -> float:
    model = make()
    part = log[:limit]
    started = time.perf_counter()
    for user, item, value in zip(part.user.tolist(), part.item.tolist(), part.value.tolist(), strict=True):
        model.learn_one(user, item, value)
    return len(part) / (time.perf_counter() - started)


def run_peers(log: Interactions, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, make in vectorised_models(args).items():
        model = make()
        if isinstance(model, DecayedPopularityEvaluator):  # model and evaluator in one
            evaluator, step = model, model.observe_and_learn
        else:
            evaluator = evaluator_for(model)  # a candidate scorer is ranked by the sublinear evaluator
            step = partial(prequential_step, model, evaluator)
        started = time.perf_counter()
        for lo in range(0, len(log), args.batch_size):
            step(log[lo: lo + args.batch_size])
        wall = time.perf_counter() - started
        results[name] = {**_metrics(evaluator, args.river_every), "events_per_s": len(log) / wall,
                         "ranked": "every evaluable event"}
        print(f"  {name}: HR@10 {results[name]['hr@10']:.4f}  ({len(log) / wall:,.0f} events/s)",
              file=sys.stderr)
    if not args.no_river:
        for name, make in river_models(args.seed).items():
            if not _wanted(name, args):
                continue
            # coverage from every ranked list: river has few of them
            peer = RiverPeer(make())
            evaluator = PrequentialEvaluator(evaluate_every=args.river_every, coverage_every=1)
            started = time.perf_counter()
            for lo in range(0, len(log), args.batch_size):
                river_step(peer, evaluator, log[lo: lo + args.batch_size])
            wall = time.perf_counter() - started
            results[name] = {**_metrics(evaluator, args.river_every), "events_per_s": len(log) / wall,
                             "ranked": f"every {args.river_every}th evaluable event (predict_one)"}
            print(f"  {name}: HR@10 {results[name]['hr@10']:.4f} on its sample", file=sys.stderr)
    return results


def markdown_table(results: dict[str, Any], river_every: int) -> str:
    head = ("| model | HR@10 | NDCG@10 | MRR | AUC | coverage@10 | HR@10 on river's sample | ranked events "
            "| replay events/s |")
    lines = [head, "|" + "---|" * 9]
    def f(r: dict[str, Any], key: str) -> str:
        value = r.get(key)
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"

    for name, r in results.items():
        keys = ("hr@10", "ndcg@10", "mrr", "auc", "coverage@10", "hr@10 (river sample)")
        cells = [f(r, key) for key in keys] + [f"{r['evaluated']:,}", f"{r['events_per_s']:,.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append(f"\nriver models are ranked with `predict_one` over all seen items on every {river_every}th "
                 "evaluable event only (river has no batch scorer); the other models on every evaluable "
                 "event.")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, curves) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = list(results)
    hr = [results[n]["hr@10 (river sample)"] for n in names]
    ndcg = [results[n]["ndcg@10 (river sample)"] for n in names]
    x = np.arange(len(names))
    bars.bar(x - 0.2, hr, 0.4, label="HR@10")
    bars.bar(x + 0.2, ndcg, 0.4, label="NDCG@10")
    bars.set_xticks(x, [n.replace(" (", "\n(") for n in names], fontsize=7, rotation=20)
    bars.set_title("on river's sample of evaluable events")
    bars.legend()
    for name in names:
        xs, ys = results[name]["_curve"]
        curves.plot(xs, ys, label=name, lw=1)
    curves.set_xlabel("events replayed")
    curves.set_ylabel("rolling HR@10")
    curves.legend(fontsize=7)
    curves.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="log (default: ml-100k next to the repo, else synthetic)")
    parser.add_argument("--format", choices=FORMATS)
    add_log_arguments(parser)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--river-every", type=int, default=50,
                        help="rank river's models on every N-th evaluable event (predict_one is slow)")
    parser.add_argument("--no-river", action="store_true")
    parser.add_argument("--models", type=_models_arg,
                        help=f"comma-separated subset of {', '.join(MODEL_KEYS.values())} (default: all)")
    parser.add_argument("--model", type=model_spec, default=DEFAULT_MODEL,
                        help="the learner behind 'ours' (as `streamrec replay --model`: online, sparse, ...)")
    parser.add_argument("--no-deep", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    data = args.data or (SHARED_ML if SHARED_ML.exists() else None)
    if data is None:
        from learners.synthetic import generate

        log, title = generate(n_events=args.limit or 30_000, seed=args.seed).log, "synthetic stream"
    else:
        try:
            log = read_log(data, args.format or sniff_format(data), **log_options(args))
        except ValueError as exc:
            print(f"peers: {exc}", file=sys.stderr)
            return 2
        title = f"{Path(data).resolve().parent.name}/{Path(data).name}"
    if args.limit:
        log = log[: args.limit]
    print(f"peers on {title}: {len(log):,} events", file=sys.stderr)
    results = run_peers(log, args)
    learn_only = {}
    if not args.no_river and _wanted("river BiasedMF", args):
        learn_only["river BiasedMF learn_one events/s"] = learn_only_throughput(
            log, river_models(args.seed)["river BiasedMF"], min(len(log), 50_000))
    ours = next((r["events_per_s"] for n, r in results.items() if n.startswith("ours")), float("nan"))
    learn_only["ours replay events/s (score + evaluate + learn)"] = ours
    table = markdown_table(results, args.river_every)
    print(table)
    for key, value in learn_only.items():
        print(f"- {key}: {value:,.0f}")
    if args.report:
        models = {n: {k: v for k, v in r.items() if not k.startswith("_")} for n, r in results.items()}
        report = {"data": title, "events": len(log), "batch_size": args.batch_size,
                  "river_every": args.river_every, "models": models, "throughput": learn_only,
                  "markdown": table}
        write_report(args.report, report)
    if args.plot:
        plot(results, args.plot, f"peers on {title} (prequential, same protocol)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
