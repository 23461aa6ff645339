"""The deep stage of the recommender: re-rank the online blend's top candidates with a fine-tuned MLP.

`DeepReranker` is the second stage after `OnlineRecommender`'s linear blend. For a scored micro-batch
it takes the blend and every source's scores, keeps each event's top `n_candidates` of the blend the
user has not interacted with, describes them (`CandidateFeatures`) and re-scores them with the serving
`CandidateRanker`; candidates then rank above the other items in the ranker's order, the rest keep
the blend's order. Before the first accepted fine-tune (model version 0) it keeps the blend's order.
When the same batch is learned, each event whose item was a candidate becomes a training sample in
the sliding window (its features as they were when it was scored), and the `WindowedFineTuner`
retrains every `every_events` events: in the background live (a child process on CPU, a thread on
CUDA), synchronously with a delayed swap in replay (`background=False`).

The recommender's side (`OnlineRecommender(deep=...)` calls it so)::

    scores = reranker.rerank(user_ids, item_cols, blend, sources, cols, ts)  # in score_many
    reranker.learn(user_ids, item_cols, ts)                                  # in learn_many
    reranker.reset_items(cols)                                               # recycled item columns

`sources` maps each source name to its (B, m) scores or an (m,) row shared by all events.

>>> import numpy as np
>>> rr = DeepReranker(n_candidates=3, every_events=None, every_seconds=3600.0, device="cpu")
>>> users = np.array(["u1", "u2"], dtype=object)
>>> blend = np.array([[0.3, 0.2, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3]], dtype=np.float32)
>>> ts = np.array([0.0, 1.0])
>>> out = rr.rerank(users, np.array([1, 2]), blend, {"pop": blend}, np.arange(4), ts)
>>> out.argsort(1)[:, ::-1].tolist()  # no model yet: the blend's order
[[0, 1, 2, 3], [3, 2, 1, 0]]
>>> rr.learn(users, np.array([1, 2]), ts)
>>> len(rr.window)  # both taken items were candidates: two training samples
2
>>> rr.close()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from learners.deep.device import resolve_device
from learners.deep.features import OWN_FEATURES, CandidateFeatures, Candidates
from learners.deep.finetune import WindowedFineTuner, sample_fields
from learners.deep.history import RecentItems
from learners.deep.model import CandidateRanker
from learners.deep.window import SlidingWindow


def training_defaults(device: torch.device) -> tuple[int, int]:
    """(batch size, epochs) of a fine-tune round on `device` when not given: 1,024 x 1 epoch on CPU;
    8,192 x 4 epochs on CUDA, where small batches leave the GPU idle (H200: 486k samples/s at 1,024,
    3.2M at 8,192) and the extra epochs keep the number of steps (same replay HR@10 on both logs)."""
    return (8192, 4) if torch.device(device).type == "cuda" else (1024, 1)


class DeepReranker:
    """Two-stage re-ranking of the online blend's top candidates, fine-tuned on a sliding window.

    Parameters
    ----------
    n_candidates, per_source
        Candidates re-ranked per event, of which each source proposes its own top `per_source`.
    hidden
        The ranker MLP's hidden widths.
    recent, max_users
        Recent items kept per user (context features, embeddings), and the user index capacity.
    item_dim
        With > 0, learned item embeddings (`max_items` rows, warm-startable) join the features.
    window_events, window_seconds
        Sliding window span in stream events and/or seconds of event time.
    every_events, every_seconds
        Fine-tune cadence.
    epochs, batch_size, lr
        Each round's training (Adam); None: `training_defaults` of the device.
    background
        True (live): fine-tune in the background, swap when done: in a child process on CPU (off the
        stream's GIL), in a thread on CUDA; "process" or "thread" choose. False (replay): fine-tune
        synchronously at the trigger and serve the result from ``trigger + ceil(cost_s * live_rate)``
        events on.
    live_rate, fixed_cost_s
        Events per second the live stream runs at, and an optional fixed round cost (deterministic
        replays) instead of the measured one.
    device
        "auto" (CUDA when present), "cpu" or "cuda[:n]".
    exclude_seen
        Keep a users x items bitmap of every user's items to leave out of the candidates (`rerank`
        over dense score matrices). False for `rerank_rows`: the model leaves the user's items out of
        its rows itself, and nothing grows with users x items.
    """

    name = "deep"

    def __init__(
        self,
        n_candidates: int = 50,
        per_source: int = 0,
        hidden: Sequence[int] = (32, 16),
        item_dim: int = 0,
        max_items: int = 1 << 16,
        recent: int = 10,
        max_users: int | None = 1_000_000,
        window_events: int = 25_000,
        window_seconds: float | None = None,
        every_events: int | None = 10_000,
        every_seconds: float | None = None,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float = 1e-2,
        background: bool | str = True,
        live_rate: float = 5_000.0,
        fixed_cost_s: float | None = None,
        threads: int = 1,
        device: str | torch.device | None = "auto",
        seed: int = 0,
        exclude_seen: bool = True,
    ) -> None:
        self.n_candidates = n_candidates
        self.per_source = per_source
        self.hidden = tuple(hidden)
        self.item_dim = item_dim
        self.max_items = max_items
        self.window_events = window_events
        self.window_seconds = window_seconds
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.background = background
        self.live_rate = live_rate
        self.fixed_cost_s = fixed_cost_s
        self.threads = threads
        self.device = resolve_device(device)
        self.seed = seed
        self.exclude_seen = exclude_seen
        self.features = CandidateFeatures(n_candidates, exclude_seen=exclude_seen, per_source=per_source)
        self.recent = RecentItems(recent, max_users)
        self.window: SlidingWindow | None = None
        self.tuner: WindowedFineTuner | None = None
        self._scored: tuple[np.ndarray, Candidates] | None = None  # the last batch scored
        self.events = 0
        self.item_vectors: torch.Tensor | None = None  # warm start for item embeddings, by column

    # ----------------------------------------------------------------------------- set-up
    def _build_model(self) -> CandidateRanker:
        model = CandidateRanker(self.features.n_features, self.hidden, self.max_items, self.item_dim,
                                prior_feature=OWN_FEATURES.index("blend_z"))
        return model.to(self.device)

    def _warm_start(self, model: CandidateRanker) -> None:
        if self.item_vectors is not None:
            model.load_item_vectors(self.item_vectors)

    def _ensure_tuner(self, history: int = 0) -> WindowedFineTuner:
        if self.tuner is None:
            torch.manual_seed(self.seed)
            history = history if self.item_dim else 0
            fields = sample_fields(self.n_candidates, self.features.n_features, history)
            self.window = SlidingWindow(
                self.window_events, fields, self.device, span_events=self.window_events,
                max_age_s=self.window_seconds,
            )
            batch_size, epochs = training_defaults(self.device)
            self.tuner = WindowedFineTuner(
                self._build_model, self.window, every_events=self.every_events,
                every_seconds=self.every_seconds, epochs=self.epochs or epochs,
                batch_size=self.batch_size or batch_size,
                lr=self.lr, background=self.background, live_rate=self.live_rate,
                fixed_cost_s=self.fixed_cost_s, threads=self.threads, device=self.device, seed=self.seed,
            )
            self.tuner.prepare = self._warm_start
        return self.tuner

    @property
    def model_version(self) -> int:
        return 0 if self.tuner is None else self.tuner.serving.version

    # ----------------------------------------------------------------------------- serving
    def rerank(
        self,
        users: np.ndarray,
        batch_items: np.ndarray,
        blend: np.ndarray,
        sources: Mapping[str, np.ndarray],
        item_cols: np.ndarray,
        ts: np.ndarray,
        remember: bool = True,
    ) -> np.ndarray:
        """Final scores (B, m): the blend's top candidates in the deep order above the other items.

        With `remember` (scoring a batch that `learn` gets next) the candidates are kept as that
        batch's training samples; serving top-K lists passes False.

        `users` are the events' external user ids, `batch_items` their item columns (-1 unknown; only
        the context of the same user's later events), `blend` and `sources[name]` (B, m) score rows
        (or (m,) rows shared by all events) whose column j is item column `item_cols[j]`."""
        tuner = self.tuner
        if not remember and (tuner is None or tuner.serving.model is None):
            return np.array(blend, dtype=np.float32, copy=True)  # nothing to re-rank, nothing to learn
        user_cols, recent, recent_ts = self.recent.context(users, batch_items, ts)
        cands = self.features.build(user_cols, recent, recent_ts, ts, blend, sources, item_cols)
        if remember:
            self._scored = (ts, cands)
        tuner = self._ensure_tuner(cands.history.shape[1])
        served = tuner.serving  # one read: this batch sees one model
        out = np.array(blend, dtype=np.float32, copy=True)
        if served.model is None or len(blend) == 0:
            return out
        deep = self._score(served.model, cands)
        return _place_on_top(out, blend, cands, deep, np.asarray(item_cols))

    def rerank_rows(
        self,
        users: np.ndarray,
        batch_items: np.ndarray,
        cand_items: np.ndarray,
        blend: np.ndarray,
        sources: Mapping[str, np.ndarray],
        ts: np.ndarray,
        remember: bool = True,
        masses: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[Candidates | None, np.ndarray | None]:
        """The deep stage over per-event candidate rows (a model that scores candidates only): the
        rows' best `n_candidates` (`CandidateFeatures.build_rows`; `blend` -inf where an entry is no
        candidate) and their deep scores [n, C], or None while no model serves (keep the blend's
        order). The caller places the candidates, in deep order, above every other item. `masses`: see
        `CandidateFeatures.build_rows`.

        >>> rr = DeepReranker(n_candidates=2, every_events=100, device="cpu", exclude_seen=False)
        >>> users = np.array(["u1"], dtype=object)
        >>> blend = np.array([[0.3, -np.inf, 0.5]], dtype=np.float32)
        >>> cands, deep = rr.rerank_rows(users, np.array([4]), np.array([[4, 5, 6]]), blend,
        ...                              {"pop": blend}, np.array([0.0]))
        >>> cands.items.tolist(), deep is None  # no fine-tuned model yet
        ([[6, 4]], True)
        >>> rr.learn(users, np.array([4]), np.array([0.0]))
        >>> len(rr.window)  # item 4 was a candidate: one training sample
        1
        >>> rr.close()
        """
        if not remember and (self.tuner is None or self.tuner.serving.model is None):
            return None, None
        _, recent, recent_ts = self.recent.context(users, batch_items, ts)
        cands = self.features.build_rows(recent, recent_ts, ts, cand_items, blend, sources, masses)
        if remember:
            self._scored = (ts, cands)
        served = self._ensure_tuner(cands.history.shape[1]).serving  # one read: one model per batch
        if served.model is None or len(cands.items) == 0:
            return cands, None
        return cands, self._score(served.model, cands)

    @torch.no_grad()
    def _score(self, model: CandidateRanker, cands: Candidates) -> np.ndarray:
        x = torch.from_numpy(cands.features).to(self.device)
        extra: dict[str, Any] = {}
        if model.item_embedding is not None:
            extra = {"candidates": torch.from_numpy(cands.items).to(self.device),
                     "history": torch.from_numpy(cands.history).to(self.device)}
        with torch.inference_mode():
            return model(x, **extra).float().cpu().numpy()

    # ----------------------------------------------------------------------------- learning
    def learn(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray) -> None:
        """Learn a batch (item columns) after `rerank` scored it: window samples, statistics, and the
        fine-tune schedule."""
        items = np.asarray(items, dtype=np.int64)
        n = len(items)
        tuner = self.tuner  # None until the first scored batch told the feature width
        scored, self._scored = self._scored, None
        if tuner is not None and scored is not None and _same(scored[0], ts):
            cands = scored[1]
            label = cands.label(items)
            keep = label >= 0
            if keep.any():
                arrays: dict[str, np.ndarray] = {
                    "features": cands.features[keep], "label": label[keep], "n_valid": cands.n_valid[keep]
                }
                if self.item_dim:
                    arrays["candidates"] = cands.items[keep]
                    arrays["history"] = cands.history[keep]
                assert self.window is not None
                self.window.append(self.events + np.flatnonzero(keep), np.asarray(ts)[keep], **arrays)
        user_cols, freed = self.recent.learn(users, items, ts)
        self.features.reset_users(freed)
        self.features.learn(user_cols, items)
        self.events += n
        if tuner is not None:
            tuner.tick(self.events)

    def reset_items(self, cols: np.ndarray) -> None:
        self.features.reset_items(cols)

    def state_dict(self) -> dict[str, Any]:
        """The serving model (weights as numpy arrays, config, version): a worker checkpoint restores
        it with `load_state_dict`; the window and statistics refill from the stream."""
        served = self.tuner.serving if self.tuner is not None else None
        if served is None or served.model is None:
            return {"version": 0 if served is None else served.version, "config": None, "weights": {}}
        weights = {k: v.detach().cpu().numpy() for k, v in served.model.state_dict().items()}
        return {"version": served.version, "config": served.model.config(),
                "source_names": list(self.features.source_names or ()), "weights": weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Serve a saved model (from `state_dict`) until the next accepted fine-tune."""
        if not state.get("weights"):
            return
        config = dict(state["config"])
        model = CandidateRanker(config.pop("n_features"), **config).to(self.device)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in state["weights"].items()})
        model.eval()
        self.features.source_names = tuple(state["source_names"])
        tuner = self._ensure_tuner()
        tuner.restore(model, int(state["version"]))

    def context_state(self) -> dict[str, np.ndarray]:
        """What the candidates' features are computed from, as arrays: per-item statistics
        ("features.*", by item column) and each user's recent items ("recent.*"). A checkpoint keeps
        them so a restored stage describes candidates as the saved one did."""
        return {**{f"features.{k}": v for k, v in self.features.state_arrays().items()},
                **{f"recent.{k}": v for k, v in self.recent.state_arrays().items()}}

    def load_context_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore `context_state` (item columns as they were saved)."""
        parts: dict[str, dict[str, np.ndarray]] = {"features": {}, "recent": {}}
        for key, value in arrays.items():
            part, _, name = key.partition(".")
            parts[part][name] = value
        self.features.load_state_arrays(parts["features"])
        self.recent.load_state_arrays(parts["recent"])

    def close(self) -> None:
        """Wait for a running background fine-tune, then stop the fine-tune process (if any)."""
        if self.tuner is not None:
            self.tuner.close()

    def stats(self) -> dict[str, Any]:
        t = self.tuner
        rounds = [] if t is None else t.rounds
        return {
            "model_version": self.model_version,
            "rounds": len(rounds),
            "rejected": 0 if t is None else t.rejected,
            "skipped_busy": 0 if t is None else t.skipped_busy,
            "window": 0 if self.window is None else len(self.window),
            "seconds_per_round": float(np.mean([r.seconds for r in rounds])) if rounds else None,
            "device": str(self.device),
        }


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or len(a) == len(b) and bool(np.all(a == b))


def _place_on_top(
    out: np.ndarray, blend: np.ndarray, cands: Candidates, deep: np.ndarray, item_cols: np.ndarray
) -> np.ndarray:
    """Write deep scores over the candidates' columns so they rank above every other item."""
    n, c = cands.items.shape
    valid = np.arange(c)[None, :] < cands.n_valid[:, None]
    floor = blend.max(1) if blend.size else np.zeros(n, dtype=np.float32)
    odd = ~np.isfinite(floor)  # nan, +inf or all -inf rows: the largest finite score, else 0
    if odd.any():
        rows = np.where(np.isfinite(blend[odd]), blend[odd], -np.inf).max(1)
        floor[odd] = np.where(np.isfinite(rows), rows, 0.0)
    low = np.where(valid, deep, np.inf).min(1)
    lifted = floor[:, None] + 1.0 + (deep - low[:, None])
    # candidates are item columns: find their score columns (item_cols need not be the identity)
    lookup = np.full(int(max(item_cols.max(initial=0), cands.items.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[item_cols] = np.arange(len(item_cols))
    rows, slots = np.nonzero(valid)
    out[rows, lookup[cands.items[rows, slots]]] = lifted[rows, slots]
    return out
