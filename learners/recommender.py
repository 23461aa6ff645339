"""`OnlineRecommender`: the composite online learner behind replay and the live worker.

Sources, each scoring every (event, item) pair of a micro-batch:

* ``cooccurrence`` (session signal): asymmetric-cosine co-occurrence with the user's recent items;
* ``mf``: incremental BPR matrix factorisation (long-term taste; rating head for `predict_many`);
* ``content``: hashed title/tag tokens of announced items vs. the user's recent items (cold start);
* ``popularity``: trending (decayed) and all-time log counts, the same for every user;
* any extra source (``sources=[...]``, e.g. helper D's deep model).

The blend (`learners.blend.Blend`) learns each source's weight online from the stream (the event's
item vs. sampled negatives, with the state before the batch). `recommend` reserves `explore_slots` of
each list for the best new item (fewer than `explore_below` interactions), so announced items get
exposure; each recommendation names the source contributing most to its score.

Extra-source interface (duck-typed)::

    class MySource:
        name: str
        def learn(self, batch: BatchContext) -> None: ...                # after the blend update
        def score(self, batch: BatchContext) -> np.ndarray: ...          # (B, batch.n_items)
        def score_pairs(self, batch: BatchContext, cols) -> np.ndarray:  # (B, M) at cols[B, M]
        def reset_items(self, cols: np.ndarray) -> None: ...             # item columns recycled

`BatchContext` (learners.cooccurrence) carries the dense user/item columns, ts/value/kind and each
event's recent items (its own earlier in-batch events included). Columns are those of `item_ids`.

>>> from learners.base import Interactions
>>> model = OnlineRecommender(seed=0)
>>> model.learn_many(Interactions.from_records(
...     [{"user_id": u, "item_id": i, "ts": t} for t, (u, i) in enumerate(
...         [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "z")])]))
>>> [r.item_id for r in model.recommend(["d"], k=2)[0]]  # new user: popularity
['x', 'y']
>>> model.learn_many(Interactions.from_records([{"user_id": "d", "item_id": "x", "ts": 9}]))
>>> model.recommend(["d"], k=1)[0][0].item_id
'y'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from learners.base import RATING, Interactions, ItemMeta, Recommendation, State
from learners.blend import Blend
from learners.content import HashedContent
from learners.cooccurrence import BatchContext, CoOccurrence, recent_context
from learners.ids import IdIndex, grow_rows
from learners.mf import MatrixFactorization
from learners.popularity import DecayedCounts

_NO_ITEM = -1


class OnlineRecommender:
    """Composite online recommender (see module docstring).

    Parameters
    ----------
    recent
        How many recent items per user are kept (context of co-occurrence and content).
    window, context, decay, alpha
        Co-occurrence hyper-parameters (`learners.cooccurrence.CoOccurrence`).
    dim
        MF factors (0: no MF source).
    trend_half_life
        Half-life, in events, of the trending popularity feature.
    negatives
        Negatives sampled per event for MF and the blend.
    explore_slots, explore_below
        Slots of each recommended list kept for items with fewer than `explore_below` interactions.
    max_users, max_items, user_idle
        Bounds of the id indexes (least recently seen evicted; users idle for `user_idle` events drop).
    sources
        Extra sources (see the interface above); `deep` is a shortcut for one.
    """

    def __init__(
        self,
        recent: int = 10,
        window: int = 10,
        context: int = 10,
        decay: float = 0.9,
        alpha: float = 0.7,
        dim: int = 32,
        mf_lr: float = 0.05,
        trend_half_life: float = 1000.0,
        negatives: int = 8,
        blend_lr: float = 0.02,
        explore_slots: int = 1,
        explore_below: int = 5,
        max_users: int = 1_000_000,
        max_items: int = 20_000,
        user_idle: float | None = None,
        sources: Sequence[Any] = (),
        deep: Any = None,
        seed: int = 0,
    ) -> None:
        self.recent = recent
        self.window = window
        self.context = context
        self.decay = decay
        self.alpha = alpha
        self.dim = dim
        self.mf_lr = mf_lr
        self.trend_half_life = trend_half_life
        self.negatives = negatives
        self.blend_lr = blend_lr
        self.explore_slots = explore_slots
        self.explore_below = explore_below
        self.max_users = max_users
        self.max_items = max_items
        self.user_idle = user_idle
        self.seed = seed
        self.extra_sources = list(sources)
        self.reranker = None
        if deep is True:
            from learners.deep.reranker import DeepReranker

            deep = DeepReranker()
        if deep is not None and deep is not False:
            if hasattr(deep, "rerank"):
                self.reranker = deep  # a second stage over the blend (learners.deep.DeepReranker)
            else:
                self.extra_sources.append(deep)
        self._rng = np.random.default_rng(seed)
        self._users = IdIndex(capacity=max_users, max_idle=user_idle)
        self._items = IdIndex(capacity=max_items)
        self._recent_items = np.full((0, recent), _NO_ITEM, dtype=np.int64)
        self._recent_ts = np.zeros((0, recent), dtype=np.float64)
        self._user_events = np.zeros(0, dtype=np.int64)
        self._item_events = np.zeros(0, dtype=np.int64)
        self.cooc = CoOccurrence(window=min(window, recent), context=min(context, recent), decay=decay,
                                 alpha=alpha)
        self.mf = MatrixFactorization(dim=dim, lr=mf_lr, seed=seed) if dim else None
        self.content = HashedContent(decay=decay)
        self.trending = DecayedCounts(trend_half_life, "events")
        self.all_time = DecayedCounts()
        names = ["cooccurrence", "trending", "popularity"]
        names += (["mf"] if self.mf else []) + ["content"] + [s.name for s in self.extra_sources]
        self.blend = Blend(names, lr=blend_lr, init={"cooccurrence": 1.0, "trending": 0.1, "popularity": 0.1})
        self._drift_boost_events = 0

    # ------------------------------------------------------------------ ids
    @property
    def events_applied(self) -> int:
        return int(self._item_events.sum())

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self._items.ids(cols)

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        return self._items.cols(np.asarray(item_ids, dtype=object), add=False)

    def _sync_items(self) -> None:
        """Grow item arrays to the index and reset recycled columns everywhere."""
        n = self._items.n_cols
        self._item_events = grow_rows(self._item_events, n)
        self.cooc.resize(n)
        self.content.resize(n)
        if self.mf:
            self.mf.resize(len(self.mf.user_factors), n)
        freed = self._items.pop_freed()
        if len(freed):
            self._item_events[freed] = 0
            self.cooc.reset_items(freed)
            self.content.reset_items(freed)
            self.trending.reset(freed)
            self.all_time.reset(freed)
            if self.mf:
                self.mf.reset_items(freed)
            for source in self.extra_sources:
                source.reset_items(freed)
            stale = np.isin(self._recent_items, freed)
            self._recent_items[stale] = _NO_ITEM

    def _sync_users(self) -> None:
        n = self._users.n_cols
        self._recent_items = grow_rows(self._recent_items, n, fill=_NO_ITEM)
        self._recent_ts = grow_rows(self._recent_ts, n)
        self._user_events = grow_rows(self._user_events, n)
        if self.mf:
            self.mf.resize(n, self._items.n_cols)
        freed = self._users.pop_freed()
        if len(freed):
            self._recent_items[freed] = _NO_ITEM
            self._recent_ts[freed] = 0.0
            self._user_events[freed] = 0
            if self.mf:
                self.mf.reset_users(freed)

    # ------------------------------------------------------------------ batch context
    def _context(self, batch: Interactions, users: np.ndarray, items: np.ndarray
                 ) -> tuple[BatchContext, np.ndarray, np.ndarray, np.ndarray]:
        """Each event's recent items (pre-batch history + earlier in-batch events); users < 0 are
        unknown users, grouped by id."""
        codes = users.copy()
        unknown = codes < 0
        if unknown.any():
            _, inverse = np.unique(batch.user[unknown].astype(str), return_inverse=True)
            codes[unknown] = self._users.n_cols + inverse
        distinct, local = np.unique(codes, return_inverse=True)
        known = distinct < self._users.n_cols
        rows = np.full((len(distinct), self.recent), _NO_ITEM, dtype=np.int64)
        rows_ts = np.zeros((len(distinct), self.recent))
        rows[known] = self._recent_items[distinct[known]]
        rows_ts[known] = self._recent_ts[distinct[known]]
        recent, batch_users, new_rows = recent_context(local, items, rows)
        recent_ts, _, new_ts = recent_context(local, batch.ts, rows_ts)
        ctx = BatchContext(users=users, items=items, ts=batch.ts, value=batch.value, kind=batch.kind,
                           recent=recent, recent_ts=recent_ts, n_items=self._items.n_cols)
        return ctx, distinct[batch_users], new_rows, new_ts

    # ------------------------------------------------------------------ scoring
    def _item_features(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        trending = np.log1p(self.trending.values(n)).astype(np.float32)
        popular = np.log1p(self.all_time.values(n)).astype(np.float32)
        return trending, popular

    def _source_matrices(self, ctx: BatchContext) -> list[tuple[int, np.ndarray]]:
        """(blend index, (B, n) matrix) of the user-dependent sources."""
        out: list[tuple[int, np.ndarray]] = [(0, self.cooc.score(ctx))]
        names = self.blend.names
        if self.mf:
            out.append((names.index("mf"), self.mf.score(ctx.users, ctx.n_items)))
        if self.content.n_with_meta:
            out.append((names.index("content"), self.content.score(ctx.recent, ctx.n_items)))
        for source in self.extra_sources:
            out.append((names.index(source.name), np.asarray(source.score(ctx), dtype=np.float32)))
        return out

    def _score(self, ctx: BatchContext) -> np.ndarray:
        weights = self.blend.effective().astype(np.float32)
        trending, popular = self._item_features(ctx.n_items)
        scores = None
        for index, matrix in self._source_matrices(ctx):
            if scores is None:
                scores = matrix
                scores *= weights[index]
            else:
                scores += weights[index] * matrix
        scores += weights[1] * trending + weights[2] * popular
        return scores

    def _pair_features(self, ctx: BatchContext, cols: np.ndarray) -> np.ndarray:
        """(B, M, n_sources) raw source scores at cols[B, M]."""
        names = self.blend.names
        feats = np.zeros((*cols.shape, len(names)), dtype=np.float32)
        feats[..., 0] = self.cooc.score_pairs(ctx, cols)
        trending, popular = self._item_features(ctx.n_items)
        feats[..., 1] = trending[cols]
        feats[..., 2] = popular[cols]
        if self.mf:
            feats[..., names.index("mf")] = self.mf.score_pairs(ctx.users, cols)
        if self.content.n_with_meta:
            feats[..., names.index("content")] = self.content.score_pairs(ctx.recent, cols)
        for source in self.extra_sources:
            feats[..., names.index(source.name)] = source.score_pairs(ctx, cols)
        return feats

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Scores over all item columns for each event, from the state before the batch plus the
        user's earlier events of the batch as context (never the event itself or later ones)."""
        users = self._users.cols(batch.user, add=False)
        items = self._items.cols(batch.item, add=False)
        ctx, *_ = self._context(batch, users, items)
        return self._score(ctx), np.arange(ctx.n_items)

    def predict_many(self, batch: Interactions) -> np.ndarray:
        """Rating predictions (the MF rating head) for each event's (user, item)."""
        if not self.mf:
            raise ValueError("predict_many needs the MF source (dim > 0)")
        users = self._users.cols(batch.user, add=False)
        items = self._items.cols(batch.item, add=False)
        return self.mf.predict(users, items)

    # ------------------------------------------------------------------ learning
    def _sample_negatives(self, n_events: int, n: int) -> np.ndarray:
        counts = self.all_time.values(self._items.n_cols)
        seen = np.flatnonzero(counts > 0)
        if len(seen) < 2:
            return np.zeros((n_events, 0), dtype=np.int64)
        half = n // 2
        uniform = seen[self._rng.integers(0, len(seen), (n_events, n - half))]
        # popularity-proportional negatives are the hard ones a popularity prior gets wrong
        cdf = np.cumsum(counts[seen])
        popular = seen[np.searchsorted(cdf, self._rng.random((n_events, half)) * cdf[-1], side="right")]
        return np.concatenate([uniform, popular], 1)

    def learn_many(self, batch: Interactions) -> None:
        if not len(batch):
            return
        if not np.isfinite(batch.ts).all() or not np.isfinite(batch.value).all():
            raise ValueError("interactions need finite ts and value")
        users = self._users.cols(batch.user)
        self._sync_users()
        items = self._items.cols(batch.item)
        self._sync_items()
        ctx, batch_users, new_rows, new_ts = self._context(batch, users, items)
        negatives = self._sample_negatives(len(batch), self.negatives)
        if negatives.shape[1]:
            # the blend learns from the pre-batch state, as the events would have been scored
            feats = self._pair_features(ctx, np.concatenate([items[:, None], negatives], 1))
            known = self.all_time.values(ctx.n_items)[items] > 0
            self.blend.learn(feats[known, 0], feats[known, 1:])
            if self.mf:
                ratings = np.where(batch.kind == RATING, batch.value, np.nan).astype(np.float32)
                self.mf.learn(users, items, negatives, ratings)
        self.cooc.learn(ctx)
        self.trending.learn(items, batch.ts)
        self.all_time.learn(items, batch.ts)
        for source in self.extra_sources:
            source.learn(ctx)
        np.add.at(self._user_events, users, 1)
        np.add.at(self._item_events, items, 1)
        self._recent_items[batch_users] = new_rows
        self._recent_ts[batch_users] = new_ts
        if self._drift_boost_events > 0 and self.mf:
            self._drift_boost_events -= len(batch)
            if self._drift_boost_events <= 0:
                self.mf.lr_scale = 1.0

    def learn_one(self, user_id: str, item_id: str, ts: float, value: float = 1.0, kind: str = "click") -> None:
        self.learn_many(Interactions.from_records(
            [{"user_id": user_id, "item_id": item_id, "ts": ts, "value": value, "type": kind}]))

    def on_drift(self, forget: float = 0.3, boost: float = 3.0, boost_events: int = 5000) -> None:
        """Adapt after a detected drift: shrink the accumulated counts (old co-occurrences and
        popularity weigh less than new ones) and raise the MF step size for a while."""
        self.cooc.forget(forget)
        self.all_time.counts *= forget
        self.trending.counts *= forget
        if self.mf:
            self.mf.lr_scale = boost
            self._drift_boost_events = boost_events

    # ------------------------------------------------------------------ serving
    def add_items(self, items: Sequence[ItemMeta]) -> None:
        """Announce catalog items: known at once, ranked by content similarity before any interaction
        and given exploration slots until they have `explore_below` interactions."""
        if not items:
            return
        cols = self._items.cols(np.asarray([m.item_id for m in items], dtype=object))
        self._sync_items()
        self.content.set_items(cols, list(items))

    def recommend(self, user_ids: Sequence[str], k: int = 10, exclude_recent: bool = True
                  ) -> list[list[Recommendation]]:
        """Top-k per user with each item's score and the source that contributed most; the user's
        recent items are left out; `explore_slots` slots go to the best new items."""
        if not len(user_ids) or self._items.n_cols == 0:
            return [[] for _ in user_ids]
        ids = np.asarray([str(u) for u in user_ids], dtype=object)
        users = self._users.cols(ids, add=False)
        n = self._items.n_cols
        recent = np.full((len(ids), self.recent), _NO_ITEM, dtype=np.int64)
        recent_ts = np.zeros((len(ids), self.recent))
        recent[users >= 0] = self._recent_items[users[users >= 0]]
        recent_ts[users >= 0] = self._recent_ts[users[users >= 0]]
        ctx = BatchContext(users=users, items=np.full(len(ids), _NO_ITEM), ts=np.zeros(len(ids)),
                           value=np.ones(len(ids), np.float32), kind=np.zeros(len(ids), np.uint8),
                           recent=recent, recent_ts=recent_ts, n_items=n)
        scores = self._score(ctx).astype(np.float64)
        scores[:, ~self._items.live_mask()] = -np.inf
        if exclude_recent:
            rows, cols = np.nonzero(recent >= 0)
            scores[rows, recent[rows, cols]] = -np.inf
        new = self._items.live_mask() & (self._item_events[:n] < self.explore_below)
        lists = []
        for row in range(len(ids)):
            lists.append(self._top(scores[row], new, k))
        picks = np.array([[c for c in cols] + [cols[0]] * (k - len(cols)) for cols in lists]) if lists else None
        if picks is None or not picks.size:
            return [[] for _ in ids]
        feats = self._pair_features(ctx, picks) * self.blend.effective()[None, None, :].astype(np.float32)
        out = []
        for row, cols in enumerate(lists):
            recs = []
            for j, col in enumerate(cols):
                source = self.blend.names[int(np.argmax(feats[row, j]))]
                if new[col] and col not in self._top(scores[row], np.zeros_like(new), k):
                    source = "explore"
                recs.append(Recommendation(str(self._items.ids(np.array([col]))[0]), float(scores[row, col]),
                                           source))
            out.append(recs)
        return out

    def _top(self, row: np.ndarray, new: np.ndarray, k: int) -> list[int]:
        finite = np.isfinite(row)
        order = np.flatnonzero(finite)
        order = order[np.argsort(-row[order], kind="stable")]
        top = order[:k].tolist()
        slots = min(self.explore_slots, k - 1) if k > 1 else 0
        if slots > 0:
            fresh = [c for c in order.tolist() if new[c] and c not in top[: k - slots]][:slots]
            if fresh and not all(c in top for c in fresh):
                kept = [c for c in top if c not in fresh][: k - len(fresh)]
                top = kept + fresh
        return top

    # ------------------------------------------------------------------ state
    def state_dict(self) -> State:
        item_ids, item_seen = self._items.state_arrays()
        n = len(item_ids)
        user_cols = self._users.live_cols()
        user_ids = self._users.ids(user_cols).astype(str)
        recent = self._recent_items[user_cols]
        recent_ids = np.where(recent >= 0, item_ids[np.maximum(recent, 0)] if n else "", "").astype(str)
        users: dict[str, np.ndarray] = {
            "user_id": user_ids,
            "recent_items": recent_ids,
            "recent_ts": self._recent_ts[user_cols].copy(),
            "n_events": self._user_events[user_cols].copy(),
        }
        items: dict[str, np.ndarray] = {
            "item_id": item_ids,
            "last_seen": item_seen,
            "n_events": self._item_events[:n].copy(),
            "trending": self.trending.values(n).copy(),
            "popularity": self.all_time.values(n).copy(),
            "content": self.content.vectors[:n].copy(),
            **self.cooc.state(n),
        }
        if self.mf:
            users["mf_factors"] = self.mf.user_factors[user_cols].copy()
            users["mf_bias"] = self.mf.user_bias[user_cols].copy()
            items["mf_factors"] = self.mf.item_factors[:n].copy()
            items["mf_bias"] = self.mf.item_bias[:n].copy()
        meta = {
            "kind": "OnlineRecommender",
            "events_applied": self.events_applied,
            "item_clock": self._items.now,
            "trending_clock": {"clock": self.trending.clock, "n_events": self.trending.n_events},
            "popularity_clock": {"clock": self.all_time.clock, "n_events": self.all_time.n_events},
            "blend": self.blend.state(),
            "mf": {"mean": self.mf.mean, "n_ratings": self.mf.n_ratings} if self.mf else None,
            "params": {"recent": self.recent, "dim": self.dim},
        }
        return State(users=users, items=items, meta=meta)

    def load_state_dict(self, state: State) -> None:
        """Replace the model state (item columns keep their positions; users get fresh columns)."""
        if state.meta.get("kind") != "OnlineRecommender":
            raise ValueError(f"not an OnlineRecommender state: {state.meta.get('kind')!r}")
        params = state.meta.get("params", {})
        if params.get("recent") != self.recent or params.get("dim") != self.dim:
            raise ValueError(f"state was saved with {params}, this model has recent={self.recent} dim={self.dim}")
        items, users = state.items, state.users
        self._items = IdIndex(capacity=self.max_items)
        self._items.load_arrays(items["item_id"], items["last_seen"], now=state.meta.get("item_clock", 0.0))
        n = self._items.n_cols
        self._item_events = np.asarray(items["n_events"], dtype=np.int64).copy()
        self.trending = DecayedCounts(self.trend_half_life, "events")
        self.trending.load(items["trending"], state.meta["trending_clock"])
        self.all_time = DecayedCounts()
        self.all_time.load(items["popularity"], state.meta["popularity_clock"])
        self.cooc.load(items)
        self.content = HashedContent(decay=self.decay)
        self.content.resize(n)
        self.content.vectors[:n] = items["content"]
        self.content.n_with_meta = int((np.abs(items["content"]).sum(1) > 0).sum()) if n else 0
        self.blend.load(state.meta["blend"])
        self._users = IdIndex(capacity=self.max_users, max_idle=self.user_idle)
        user_cols = self._users.cols(np.asarray(users["user_id"], dtype=object))
        self._users.pop_freed()
        u = self._users.n_cols
        self._recent_items = np.full((u, self.recent), _NO_ITEM, dtype=np.int64)
        recent_ids = np.asarray(users["recent_items"]).astype(object)
        if recent_ids.size:
            flat = self._items.cols(recent_ids.ravel(), add=False).reshape(recent_ids.shape)
            self._recent_items[user_cols] = np.where(recent_ids == "", _NO_ITEM, flat)
        self._recent_ts = np.zeros((u, self.recent))
        self._recent_ts[user_cols] = users["recent_ts"]
        self._user_events = np.zeros(u, dtype=np.int64)
        self._user_events[user_cols] = users["n_events"]
        if self.mf:
            self.mf = MatrixFactorization(dim=self.dim, lr=self.mf_lr, seed=self.seed)
            self.mf.resize(u, n)
            self.mf.user_factors[user_cols] = users["mf_factors"]
            self.mf.user_bias[user_cols] = users["mf_bias"]
            self.mf.item_factors[:n] = items["mf_factors"]
            self.mf.item_bias[:n] = items["mf_bias"]
            self.mf.mean = float(state.meta["mf"]["mean"])
            self.mf.n_ratings = int(state.meta["mf"]["n_ratings"])
