"""`OnlineRecommender`: the composite online learner behind replay and the live worker.

Sources, each scoring every (event, item) pair of a micro-batch:

* ``cooccurrence`` (session signal): asymmetric-cosine co-occurrence of candidates with the user's last
  `context` items; pairs up to `window` steps apart are counted, a pair d steps apart weighing
  d ** -pair_power (short sessions and long rating histories both fit);
* ``trending`` / ``popularity`` / ``stage``: decayed, all-time and per-user-stage (log2 bucket of the
  user's earlier events) log counts, user-independent rows folded into one pass;
* ``content``: hashed title/tag tokens of catalog items vs. the user's recent items (scores announced
  items before their first interaction);
* optional: ``mf`` (incremental BPR MF, `blend_mf=True`; always trained for `predict_many`),
  ``transitions`` (directed next-item counts), ``now`` (very short half-life trending), extra sources.

The blend (`learners.blend.Blend`) learns each source's weight online from the stream (the event's
item vs. sampled negatives, with the state before the batch), starting from a prior. `recommend`
reserves `explore_slots` of each list for the best new item (fewer than `explore_below`
interactions), so announced items get exposure; each recommendation names the source contributing
most to its score ("explore" for an exploration slot).

Defaults are shared by all logs (measured with `streamrec replay --no-deep`, batch 256: ML-100K
HR@10 0.2151, YOOCHOOSE-100k HR@10 0.3328).

Extra sources (`sources=[...]`) follow `learners.base.Source`: `name`, `learn(ctx)` (after the blend
update), `score(ctx)` -> (B, ctx.n_items), `score_pairs(ctx, cols)` -> (B, M) at cols[B, M] and
`reset_items(cols)` (item columns recycled). `BatchContext` (learners.base) carries the dense user/item
columns, ts/value/kind, each event's recent items (its own earlier in-batch events included) and user
stage. Columns are those of `item_ids`. Their state is not part of `state_dict` (a restored learner
starts them afresh). A `deep=` object with `rerank(...)`/`learn(...)` (learners.deep.DeepReranker;
`deep=True` builds one) re-ranks the blend's top candidates as a second stage instead; an item it brings
into a list, which the blend alone would not have listed, is named "deep".

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
import torch

from learners.base import RATING, BatchContext, Interactions, ItemMeta, Recommendation, State
from learners.blend import Blend
from learners.content import HashedContent
from learners.cooccurrence import CoOccurrence, group_layout, recent_context
from learners.ids import IdIndex, grow_rows
from learners.mf import MatrixFactorization
from learners.params import fresh
from learners.popularity import DecayedCounts, StagePopularity, stage_of
from learners.stage_state import load_stage, save_stage

_NO_ITEM = -1


def best_columns(row: np.ndarray, mask: np.ndarray, m: int) -> np.ndarray:
    """The first `m` columns of `mask` by descending score, ties by column (a stable sort's order),
    in O(n) with a partial sort instead of sorting the whole row."""
    cols = np.flatnonzero(mask)
    if len(cols) > m > 0:
        values = row[cols]
        threshold = np.partition(values, len(values) - m)[len(values) - m]  # the m-th largest
        above = cols[values > threshold]
        cols = np.sort(np.concatenate([above, cols[values == threshold][: m - len(above)]]))
    return cols[np.argsort(-row[cols], kind="stable")][:m]


class OnlineRecommender:
    """Composite online recommender (see module docstring).

    Parameters
    ----------
    cooccurrence
        The session signal (`learners.cooccurrence.CoOccurrence`); None: `CoOccurrence(window=60,
        context=10, decay=0.8, alpha=0.62, pair_power=0.6)`, its window and context cut to `recent`.
    trending, stages
        Decayed item counts (`learners.popularity.DecayedCounts`; None: a half-life of 1,000 events)
        and per-user-stage popularity (`learners.popularity.StagePopularity`; None: 5,000 events).
    content
        The cold-start signal (`learners.content.HashedContent`; None: 256 dimensions, decay 0.8).
    mf
        Incremental BPR matrix factorisation (`learners.mf.MatrixFactorization`) behind
        `predict_many`; True: 32 factors, step 0.05, seeded with `seed`; None or False: none
        (`predict_many` then predicts the mean rating). It scores lists only with `blend_mf`.
    now, transitions
        Optional sources, off when None: a very short-lived trending count (a `DecayedCounts`, e.g. a
        half-life of 300 events) and directed next-item counts (a `CoOccurrence` with `directed=True`,
        `name="transitions"`).
    recent
        How many recent items per user are kept (the context of co-occurrence and content).
    negatives, hard_negatives
        Negatives sampled per event for MF and the blend; of them, taken from the blend's best-ranked.
    blend_lr
        Step size of the online blend weights.
    explore_slots, explore_below
        Slots of each recommended list kept for items with fewer than `explore_below` interactions.
    content_below, content_weight, content_context
        Content scores only items with fewer than `content_below` interactions (None: every item
        with metadata), starts at blend weight `content_weight` and reads the last `content_context`
        recent items.
    max_users, max_items, user_idle
        Bounds of the id indexes (least recently seen evicted; users idle for `user_idle` events drop).
        The co-occurrence matrix is dense: at most max_items**2 * 4 bytes (8192 items: 256 MiB).
    sources
        Extra sources (see the interface above).
    deep
        True: a `learners.deep.DeepReranker` second stage; or a reranker / source object; None/False: none.

    Signals given here are the model's own from then on (it learns into them); `load_state_dict`
    starts fresh copies of them (`learners.params.fresh`).

    >>> from learners.popularity import DecayedCounts
    >>> model = OnlineRecommender(cooccurrence=CoOccurrence(window=20, context=5, decay=0.8, alpha=0.62),
    ...                           now=DecayedCounts(half_life=300.0), mf=None)
    >>> model.blend.names
    ['cooccurrence', 'trending', 'popularity', 'stage', 'now', 'content']
    """

    def __init__(
        self,
        cooccurrence: CoOccurrence | None = None,
        trending: DecayedCounts | None = None,
        stages: StagePopularity | None = None,
        content: HashedContent | None = None,
        mf: MatrixFactorization | bool | None = True,
        now: DecayedCounts | None = None,
        transitions: CoOccurrence | None = None,
        recent: int = 60,
        negatives: int = 4,
        hard_negatives: int = 0,
        blend_lr: float = 0.005,
        blend_mf: bool = False,
        explore_slots: int = 1,
        explore_below: int = 5,
        content_below: int | None = None,
        content_weight: float = 0.3,
        content_context: int = 10,
        max_users: int = 200_000,
        max_items: int = 8192,
        user_idle: float | None = None,
        sources: Sequence[Any] = (),
        deep: Any = None,
        seed: int = 0,
    ) -> None:
        if cooccurrence is None:
            cooccurrence = CoOccurrence(window=min(60, recent), context=min(10, recent), decay=0.8,
                                        alpha=0.62, pair_power=0.6)
        for signal in (cooccurrence, transitions):
            if signal is not None and max(signal.window, signal.context) > recent:
                raise ValueError(f"{signal.name}: window {signal.window} / context {signal.context} reach "
                                 f"beyond the {recent} recent items kept (raise `recent`)")
        self.cooc = cooccurrence
        self.trans = transitions
        self.trending = trending if trending is not None else DecayedCounts(1000.0, "events")
        self.now = now if now is not None else DecayedCounts(100.0, "events")  # kept (checkpoints), unused
        self.blend_now = now is not None
        self.stages = stages if stages is not None else StagePopularity(half_life=5000.0)
        self.content = content if content is not None else HashedContent(dim=256, decay=0.8)
        self.mf = MatrixFactorization(seed=seed) if mf is True else (mf or None)
        self.all_time = DecayedCounts()
        self.recent = recent
        self.negatives = negatives
        self.hard_negatives = hard_negatives
        self.blend_lr = blend_lr
        self.blend_mf = blend_mf
        self.explore_slots = explore_slots
        self.explore_below = explore_below
        self.content_below = content_below
        self.content_weight = content_weight
        self.content_context = content_context
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
        self._last_ts = np.zeros(0, dtype=np.float64)
        self._latest_ts = 0.0  # the stream's latest event time (max of _last_ts, kept as a scalar)
        self._user_events = np.zeros(0, dtype=np.int64)
        self._item_events = np.zeros(0, dtype=np.int64)
        self._evicted_events = 0  # interactions of items evicted since: still applied, no longer counted
        names = ["cooccurrence", "trending", "popularity", "stage"] + (["now"] if self.blend_now else [])
        names += ["mf"] if self.mf and blend_mf else []
        names += (["transitions"] if self.trans else []) + ["content"] + [s.name for s in self.extra_sources]
        self.blend = Blend(names, lr=blend_lr, init={"cooccurrence": 1.0, "trending": 0.1, "popularity": 0.1,
                                                     "stage": 0.1, "content": content_weight,
                                                     "transitions": 0.2})
        self._rating_sum = 0.0
        self._n_ratings = 0
        self._drift_boost_events = 0
        self._item_table: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lookup_cache: tuple[Any, Any, np.ndarray, np.ndarray] | None = None
        self._top_cache: tuple[Any, np.ndarray] | None = None  # (batch.user, top columns) of score_many
        self._scored: dict[str, Any] | None = None  # what score_many computed, reused by learn_many
        self._seen = np.zeros((0, 0), dtype=np.uint8)  # users x items bitmap of learned interactions
        self._item_index_loads = 0  # loaded states (each brings a new item index)

    # ------------------------------------------------------------------ ids
    @property
    def events_applied(self) -> int:
        """Interactions learned: the per-item interaction counters plus those of evicted items."""
        return int(self._item_events.sum()) + self._evicted_events

    @property
    def n_users(self) -> int:
        """Users with state (live columns of the user index)."""
        return len(self._users)

    def knows_user(self, user_id: str) -> bool:
        """Whether the user has state here (else `recommend` serves the cold-start list)."""
        return user_id in self._users

    @property
    def item_index_version(self) -> tuple[int, int]:
        """Changes whenever an item column changes hands (eviction, a loaded state), so the evaluator
        re-checks its cached item columns only then."""
        return self._item_index_loads, self._items.generation

    @property
    def n_items(self) -> int:
        """Items with state (live columns of the item index)."""
        return len(self._items)

    @property
    def model_version(self) -> int | None:
        """The deep stage's serving model version (grows with each accepted fine-tune); None without a
        deep stage (the worker then counts applied batches)."""
        return None if self.reranker is None else int(self.reranker.model_version)

    def finetune_rounds(self, since: int = 0) -> list[tuple[float, int, int | None]]:
        """(seconds, samples, version or None when rejected) of the deep stage's fine-tune rounds from
        round `since` on, in the order they ended (empty without a deep stage)."""
        tuner = None if self.reranker is None else getattr(self.reranker, "tuner", None)
        rounds = [] if tuner is None else list(tuner.rounds[since:])  # a copy: a round may end meanwhile
        return [(float(r.seconds), int(r.samples), r.version if r.accepted else None) for r in rounds]

    def close(self) -> None:
        """Wait for the deep stage's running background fine-tune (call before exiting)."""
        if self.reranker is not None:
            self.reranker.close()

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self._items.ids(cols)

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        return self._items.cols(np.asarray(item_ids, dtype=object), add=False)

    def _lookup(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """(user cols, item cols) of a batch, -1 where unknown; `score_many` then `learn_many` of the
        same batch (the prequential loop) look the ids up once."""
        cache = self._lookup_cache
        if cache is not None and cache[0] is batch.user and cache[1] is batch.item:
            return cache[2].copy(), cache[3].copy()
        users = self._users.cols(batch.user, add=False)
        items = self._items.cols(batch.item, add=False)
        self._lookup_cache = (batch.user, batch.item, users, items)
        return users.copy(), items.copy()

    def _add_ids(self, index: IdIndex, ids: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if len(cols) and (index.capacity is not None or index.max_idle is not None):
            return index.add(ids, cols)  # adds the unknown ones and refreshes recency for eviction
        missing = cols < 0
        if missing.any():
            cols[missing] = index.cols(ids[missing])
        return cols

    def _sync_items(self) -> None:
        """Grow item arrays to the index and reset recycled columns everywhere."""
        n = self._items.n_cols
        self._item_events = grow_rows(self._item_events, n)
        self.cooc.resize(n)
        if self.trans:
            self.trans.resize(n)
        self.content.resize(n)
        if self.mf:
            self.mf.resize(len(self.mf.user_factors), n)
        if self._item_table is not None and len(self._item_table[0]) != n:
            self._item_table = None
        freed = self._items.pop_freed()
        if len(freed):
            self._item_table = None
            self._evicted_events += int(self._item_events[freed].sum())
            self._item_events[freed] = 0
            self.cooc.reset_items(freed)
            if self.trans:
                self.trans.reset_items(freed)
            self.content.reset_items(freed)
            self.trending.reset(freed)
            self.all_time.reset(freed)
            self.now.reset(freed)
            self.stages.reset(freed)
            if self.mf:
                self.mf.reset_items(freed)
            for source in self.extra_sources:
                source.reset_items(freed)
            if self.reranker is not None:
                self.reranker.reset_items(freed)
            self._recent_items[np.isin(self._recent_items, freed)] = _NO_ITEM
            self._lookup_cache = None

    def _sync_users(self) -> None:
        n = self._users.n_cols
        self._recent_items = grow_rows(self._recent_items, n, fill=_NO_ITEM)
        self._last_ts = grow_rows(self._last_ts, n)
        self._user_events = grow_rows(self._user_events, n)
        if self.mf:
            self.mf.resize(n, self._items.n_cols)
        freed = self._users.pop_freed()
        if len(freed):
            self._recent_items[freed] = _NO_ITEM
            self._last_ts[freed] = 0.0
            self._user_events[freed] = 0
            if self.mf:
                self.mf.reset_users(freed)
            self._lookup_cache = None

    # ------------------------------------------------------------------ batch context
    def _scoring_width(self) -> int:
        """Recent items per event that scoring reads (learning needs all `recent`)."""
        if self.extra_sources:
            return self.recent  # their needs are unknown
        width = max(self.cooc.context, self.content_context, self.trans.context if self.trans else 0)
        return min(width, self.recent)

    def _context(self, batch: Interactions, users: np.ndarray, items: np.ndarray, scoring: bool = False
                 ) -> tuple[BatchContext, np.ndarray, np.ndarray | None]:
        """Each event's recent items (pre-batch history + earlier in-batch events) and stage; users < 0
        are unknown users, told apart by id. `scoring`: only the recent items scoring reads, and no
        post-batch rows (None)."""
        codes = users.copy()
        unknown = codes < 0
        if unknown.any():
            _, inverse = np.unique(batch.user[unknown].astype(str), return_inverse=True)
            codes[unknown] = self._users.n_cols + inverse
        # one stable sort groups the events by user for everything below (distinct users, each
        # event's user number and its position among that user's events of the batch)
        layout = order, starts, position = group_layout(codes)
        distinct = codes[order[starts]]
        local = np.empty(len(codes), dtype=np.int64)
        local[order] = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(codes)]))
        known = distinct < self._users.n_cols
        width = self._scoring_width() if scoring else self.recent
        rows = np.full((len(distinct), width), _NO_ITEM, dtype=np.int64)
        rows[known] = self._recent_items[distinct[known], :width]
        recent, batch_users, new_rows = recent_context(local, items, rows, new_rows=not scoring,
                                                       layout=layout)
        before = np.zeros(len(distinct), dtype=np.int64)
        before[known] = self._user_events[distinct[known]]
        in_batch = np.empty(len(codes), dtype=np.int64)
        in_batch[order] = position
        stage = stage_of(before[local] + in_batch)
        ctx = BatchContext(users=users, items=items, ts=batch.ts, value=batch.value, kind=batch.kind,
                           recent=recent, n_items=self._items.n_cols, stage=stage)
        return ctx, distinct[batch_users], new_rows

    # ------------------------------------------------------------------ scoring
    def _item_features(self) -> tuple[np.ndarray, np.ndarray]:
        """Log counts: (item features[n, 4]: trending, popularity, unused stage slot, now;
        stage table[n_stages, n]), cached until the next learn."""
        if self._item_table is None:
            n = self._items.n_cols
            feats = np.zeros((n, 4), dtype=np.float32)
            feats[:, 0] = np.log1p(self.trending.values(n))
            feats[:, 1] = np.log1p(self.all_time.values(n))
            if self.blend_now:
                feats[:, 3] = np.log1p(self.now.values(n))
            self._item_table = (feats, self.stages.log_table(n))
        return self._item_table

    def _cold_items(self, n: int) -> np.ndarray | None:
        """Columns the content source scores (None: all): items with content and, with
        `content_below`, fewer interactions than that."""
        if not self.content.n_with_meta:
            return np.zeros(0, dtype=np.int64)
        if self.content_below is None:
            return None
        return np.flatnonzero((self._item_events[:n] < self.content_below) & self.content.has_meta(n))

    def _score(self, ctx: BatchContext, keep_sources: bool = False, raw: dict[str, Any] | None = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Blended (B, n) scores, and each source's matrix when `keep_sources` (for the reranker);
        `raw` receives the co-occurrence sums before the candidate norm and the full content matrix."""
        weights = self.blend.effective().astype(np.float32)
        names = self.blend.names
        item_feats, stage_table = self._item_features()
        sums = self.cooc.sums(ctx)  # before the candidate norm: kept for learn_many's pair features
        norm = self.cooc.candidate_norm(ctx.n_items)
        kept: dict[str, np.ndarray] = {}
        if raw is not None:
            raw["sums"] = sums
        if keep_sources:
            kept["cooccurrence"] = sums * norm[None, :]
        scores = sums * (weights[0] * norm)[None, :]  # the blend weight folded into the column scaling
        # user-independent features folded into one row per stage: one pass over the matrix
        item_weights = np.array([weights[1], weights[2], 0.0,
                                 weights[names.index("now")] if "now" in names else 0.0], dtype=np.float32)
        per_stage = weights[3] * stage_table + (item_feats @ item_weights)[None, :]
        stages = np.minimum(ctx.stage, self.stages.n_stages - 1)
        if len(stages) and (stages == stages[0]).all():
            scores += per_stage[stages[0]]  # one stage (common): broadcast, no gathered copy
        else:
            scores += per_stage[stages]
        if self.mf and self.blend_mf:
            w = weights[names.index("mf")]
            mf = self.mf.score(ctx.users, ctx.n_items, scale=float(w))
            scores += mf
            if keep_sources:
                kept["mf"] = mf / w if w else mf
        if self.trans:
            w = weights[names.index("transitions")]
            trans = self.trans.score(ctx)
            if keep_sources:
                kept["transitions"] = trans.copy()
            trans *= w
            scores += trans
        cold = self._cold_items(ctx.n_items)
        if cold is None:
            content = self.content.score(ctx.recent[:, : self.content_context], ctx.n_items)
            if raw is not None:
                raw["content"] = content
            w = float(weights[names.index("content")])
            torch.from_numpy(scores).add_(torch.from_numpy(content), alpha=w)  # one pass, no temporary
        elif len(cold):
            content = self.content.score_cols(ctx.recent[:, : self.content_context], cold)
            scores[:, cold] += weights[names.index("content")] * content
        for source in self.extra_sources:
            matrix = np.asarray(source.score(ctx), dtype=np.float32)
            scores += weights[names.index(source.name)] * matrix
            if keep_sources:
                kept[source.name] = matrix
        return scores, kept

    def _pair_features(self, ctx: BatchContext, cols: np.ndarray, scored: dict[str, Any] | None = None
                       ) -> np.ndarray:
        """(B, M, n_sources) raw source scores at cols[B, M] (what `_score` blends there); with `scored`
        (what score_many kept of this batch) co-occurrence and content are gathered from its matrices
        (columns it did not score, i.e. items new in this batch, read column 0: callers mask them)."""
        names = self.blend.names
        feats = np.zeros((*cols.shape, len(names)), dtype=np.float32)
        if scored is not None:
            inside = np.where(cols < scored["n_items"], cols, 0)
            rows = np.arange(len(cols))[:, None]
            feats[..., 0] = scored["sums"][rows, inside] * self.cooc.candidate_norm(ctx.n_items)[cols]
        else:
            feats[..., 0] = self.cooc.score_pairs(ctx, cols)
        item_feats, stage_table = self._item_features()
        feats[..., 1:3] = item_feats[cols, :2]
        if "now" in names:
            feats[..., names.index("now")] = item_feats[cols, 3]
        feats[..., 3] = stage_table[np.minimum(ctx.stage, self.stages.n_stages - 1)[:, None], cols]
        if self.mf and self.blend_mf:
            feats[..., names.index("mf")] = self.mf.score_pairs(ctx.users, cols)
        if self.trans:
            feats[..., names.index("transitions")] = self.trans.score_pairs(ctx, cols)
        if scored is not None and scored["content"] is not None:
            feats[..., names.index("content")] = scored["content"][rows, inside]
        elif self.content.n_with_meta:
            content = self.content.score_pairs(ctx.recent[:, : self.content_context], cols)
            if self.content_below is not None:
                content *= self._item_events[cols] < self.content_below
            feats[..., names.index("content")] = content
        for source in self.extra_sources:
            feats[..., names.index(source.name)] = source.score_pairs(ctx, cols)
        return feats

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        """Scores over all item columns for each event, from the state before the batch plus the
        user's earlier events of the batch as context (never the event itself or later ones)."""
        users, items = self._lookup(batch)
        ctx, *_ = self._context(batch, users, items, scoring=True)
        raw: dict[str, Any] = {"content": None}
        scores, kept = self._score(ctx, keep_sources=self.reranker is not None, raw=raw)
        self._scored = {"user": batch.user, "n_items": ctx.n_items, **raw}
        cols = np.arange(ctx.n_items)
        if self.hard_negatives and ctx.n_items > 1:
            # the blend's best-ranked items are the hard negatives `learn_many` of this batch trains on
            depth = min(4 * self.hard_negatives, ctx.n_items)
            top = torch.topk(torch.from_numpy(scores), depth, dim=1, sorted=False).indices.numpy()
            self._top_cache = (batch.user, top)
        if self.reranker is not None:
            scores = self.reranker.rerank(batch.user, items, scores, kept, cols, batch.ts)
        return scores, cols

    def predict_many(self, batch: Interactions) -> np.ndarray:
        """Rating predictions for each event's (user, item): the MF rating head, else the mean rating."""
        if not self.mf:
            mean = self._rating_sum / self._n_ratings if self._n_ratings else 0.0
            return np.full(len(batch), mean, dtype=np.float32)
        users, items = self._lookup(batch)
        return self.mf.predict(users, items)

    # ------------------------------------------------------------------ learning
    def _sample_negatives(self, n_events: int, n: int) -> np.ndarray:
        counts = self.all_time.values(self._items.n_cols)
        seen = np.flatnonzero(counts > 0)
        if len(seen) < 2 or n < 1:
            return np.zeros((n_events, 0), dtype=np.int64)
        half = n // 2
        uniform = seen[self._rng.integers(0, len(seen), (n_events, n - half))]
        # popularity-proportional negatives are the hard ones a popularity prior gets wrong
        cdf = np.cumsum(counts[seen])
        popular = seen[np.minimum(np.searchsorted(cdf, self._rng.random((n_events, half)) * cdf[-1],
                                                  side="right"), len(seen) - 1)]
        return np.concatenate([uniform, popular], 1)

    def learn_many(self, batch: Interactions) -> None:
        if not len(batch):
            return
        if not np.isfinite(batch.ts).all() or not np.isfinite(batch.value).all():
            raise ValueError("interactions need finite ts and value")
        users, items = self._lookup(batch)
        self._lookup_cache = None
        users = self._add_ids(self._users, batch.user, users)
        self._sync_users()
        items = self._add_ids(self._items, batch.item, items)
        self._sync_items()
        ctx, batch_users, new_rows = self._context(batch, users, items)
        scored, self._scored = self._scored, None
        if scored is not None and scored["user"] is not batch.user:
            scored = None
        negatives = self._sample_negatives(len(batch), self.negatives)
        if negatives.shape[1]:
            # the blend learns from the pre-batch state, as the events were scored
            blend_negatives = np.concatenate([negatives, self._hard_negatives(batch, ctx, negatives)], 1)
            feats = self._pair_features(ctx, np.concatenate([items[:, None], blend_negatives], 1), scored)
            known = self.all_time.values(ctx.n_items)[items] > 0
            self.blend.learn(feats[known, 0], feats[known, 1:])
            if self.mf:
                ratings = np.where(batch.kind == RATING, batch.value, np.nan).astype(np.float32)
                self.mf.learn(users, items, negatives, ratings)
        rated = batch.kind == RATING
        self._rating_sum += float(batch.value[rated].sum())
        self._n_ratings += int(rated.sum())
        self.cooc.learn(ctx)
        if self.trans:
            self.trans.learn(ctx)
        self.trending.learn(items, batch.ts)
        self.all_time.learn(items, batch.ts)
        self.now.learn(items, batch.ts)
        self.stages.learn(ctx.stage, items)
        for source in self.extra_sources:
            source.learn(ctx)
        if self.reranker is not None:
            self.reranker.learn(batch.user, items, batch.ts)
        if self.hard_negatives:
            self._mark_seen(users, items)
        np.add.at(self._user_events, users, 1)  # O(batch): a bincount would touch every user
        np.add.at(self._item_events, items, 1)
        self._recent_items[batch_users] = new_rows
        self._last_ts[users] = batch.ts
        self._latest_ts = max(self._latest_ts, float(batch.ts.max()))
        self._item_table = None
        if self._drift_boost_events > 0 and self.mf:
            self._drift_boost_events -= len(batch)
            if self._drift_boost_events <= 0:
                self.mf.lr_scale = 1.0

    def _mark_seen(self, users: np.ndarray, items: np.ndarray) -> None:
        need_u, need_i = self._users.n_cols, (self._items.n_cols + 7) // 8
        if self._seen.shape[0] < need_u or self._seen.shape[1] < need_i:
            grown = np.zeros((max(need_u, 2 * self._seen.shape[0]), max(need_i, 2 * self._seen.shape[1])),
                             dtype=np.uint8)
            grown[: self._seen.shape[0], : self._seen.shape[1]] = self._seen
            self._seen = grown
        np.bitwise_or.at(self._seen, (users, items >> 3), (128 >> (items & 7)).astype(np.uint8))

    def _is_seen(self, users: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """users[B] x cols[B, M]: learned interaction before this batch."""
        u = np.broadcast_to(users[:, None], cols.shape)
        inside = (u < self._seen.shape[0]) & ((cols >> 3) < self._seen.shape[1]) & (u >= 0)
        out = np.zeros(cols.shape, dtype=bool)
        out[inside] = (self._seen[u[inside], cols[inside] >> 3] & (128 >> (cols[inside] & 7))) != 0
        return out

    def _hard_negatives(self, batch: Interactions, ctx: BatchContext, fallback: np.ndarray) -> np.ndarray:
        """`hard_negatives` per event from the top of this batch's scores (when `score_many` saw it),
        leaving out the event's item and the user's history; fallback negatives fill the gaps."""
        cache, self._top_cache = self._top_cache, None
        n = self.hard_negatives
        if not n or cache is None or cache[0] is not batch.user:
            return np.zeros((len(batch), 0), dtype=np.int64)
        top = cache[1]
        bad = (top == ctx.items[:, None]) | self._is_seen(ctx.users, top) | (top >= ctx.n_items)
        bad |= (top[:, :, None] == ctx.recent[:, None, :]).any(2)
        # keep the first n good ones per row: sort good columns first, stably
        order = np.argsort(bad, axis=1, kind="stable")[:, :n]
        picked = np.take_along_axis(top, order, 1)
        missing = np.take_along_axis(bad, order, 1)
        return np.where(missing, fallback[:, :n] if fallback.shape[1] >= n else picked, picked)

    def learn_one(self, user_id: str, item_id: str, ts: float, value: float = 1.0,
                  kind: str = "click") -> None:
        self.learn_many(Interactions.from_records(
            [{"user_id": user_id, "item_id": item_id, "ts": ts, "value": value, "type": kind}]))

    def on_drift(self, forget: float = 0.05, keep_recent: int | None = 0, user_forget: float = 0.2,
                 boost: float = 2.0, boost_events: int = 2000) -> None:
        """Adapt after a detected drift (a drop of the hit rate): accumulated co-occurrence and
        popularity counts shrink by `forget`, so the events after the drift outweigh the old ones at
        once (the item-item structure comes back within a few hundred events, while counts shrunk by
        only 0.7 kept steering to the old tastes for thousands); per user, only the newest
        `keep_recent` recent items keep steering the scores (0: none, the right call when the tastes of
        all users moved: the history of a user not seen since then is the old taste) and MF user
        factors shrink by `user_forget`; MF learns `boost` times faster for `boost_events` events.
        The hit-rate detector (`learners.drift`) fires on an interest switch, not on the noise of the
        ML-100K and YOOCHOOSE logs, so their replays do not pay for this forgetting."""
        if keep_recent is not None:
            self._recent_items[:, keep_recent:] = _NO_ITEM
        self.cooc.forget(forget)
        if self.trans:
            self.trans.forget(forget)
        self.all_time.counts *= forget
        self.trending.counts *= forget
        self.now.counts *= forget
        self.stages.counts *= forget
        self._item_table = None
        self._lookup_cache = None
        if self.mf:
            self.mf.user_factors *= user_forget
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
        """Top-k per user with each item's score and the source contributing most to it; the user's
        recent items are left out; `explore_slots` slots go to the best new items ("explore"); with a
        deep stage, items it lists that the blend alone would not have listed are named "deep"."""
        if not len(user_ids) or not len(self._items) or k < 1:
            return [[] for _ in user_ids]
        ids = np.asarray([str(u) for u in user_ids], dtype=object)
        users = self._users.cols(ids, add=False)
        n = self._items.n_cols
        known = users >= 0
        recent = np.full((len(ids), self.recent), _NO_ITEM, dtype=np.int64)
        recent[known] = self._recent_items[users[known]]
        before = np.zeros(len(ids), dtype=np.int64)
        before[known] = self._user_events[users[known]]
        ctx = BatchContext(users=users, items=np.full(len(ids), _NO_ITEM), ts=np.zeros(len(ids)),
                           value=np.ones(len(ids), np.float32), kind=np.zeros(len(ids), np.uint8),
                           recent=recent, n_items=n, stage=stage_of(before))
        blend, kept = self._score(ctx, keep_sources=self.reranker is not None)
        live = self._items.live_mask()
        blend[:, ~live] = -np.inf
        if exclude_recent:
            rows, slots = np.nonzero(recent >= 0)
            blend[rows, recent[rows, slots]] = -np.inf
        plain = None  # the blend's scores when a deep stage re-ranked them
        if self.reranker is not None and n:
            # the deep stage re-orders the blend's top candidates (excluded items stay -inf); "now" is
            # the stream's latest event time, so a user's gap since their last event is as at serving
            now = self._latest_ts
            plain = blend
            blend = self.reranker.rerank(ids, np.full(len(ids), _NO_ITEM), blend, kept, np.arange(n),
                                         np.full(len(ids), now), remember=False)
        new = live & (self._item_events[:n] < self.explore_below)
        picked = [self._top(blend[row], new, k) for row in range(len(ids))]
        by_deep: list[set[int]] = [set() for _ in picked]  # listed only thanks to the deep stage
        if plain is not None and plain is not blend:
            for row, (top, explored) in enumerate(picked):
                blend_alone = set(self._top(plain[row], new, k)[0])
                by_deep[row] = {c for c in top if c not in blend_alone and c not in explored}
        lists = [top for top, _ in picked]
        width = max(len(x) for x in lists)
        if width == 0:
            return [[] for _ in ids]
        picks = np.array([x + [x[0] if x else 0] * (width - len(x)) for x in lists], dtype=np.int64)
        contrib = self._pair_features(ctx, picks) * self.blend.effective().astype(np.float32)
        strongest = contrib.argmax(axis=2).tolist()  # per listed item, the source adding the most
        scores = np.take_along_axis(blend, picks, 1).tolist()
        names = self._items.ids(picks.ravel()).reshape(picks.shape).tolist()
        sources = self.blend.names
        return [[Recommendation(str(item), score, "explore" if col in explored else
                                "deep" if col in deep else sources[source])
                 for item, score, source, col in zip(item_row, score_row, source_row, top, strict=False)]
                for (top, explored), deep, item_row, score_row, source_row in zip(
                    picked, by_deep, names, scores, strongest, strict=True)]

    def _top(self, row: np.ndarray, new: np.ndarray, k: int) -> tuple[list[int], set[int]]:
        """Best k finite columns, the last `explore_slots` of them given to the best new items; and
        the columns there only thanks to an exploration slot."""
        finite = np.isfinite(row)
        slots = min(self.explore_slots, k - 1) if k > 1 else 0
        order = best_columns(row, finite, k + slots)
        top = order[: k - slots].tolist()
        fresh = [c for c in best_columns(row, finite & new, k).tolist() if c not in top][:slots]
        rest = [c for c in order[k - slots: k + slots].tolist() if c not in top and c not in fresh]
        chosen = top + fresh + rest[: k - len(top) - len(fresh)]
        plain = set(order[:k].tolist())
        return chosen, {c for c in chosen if new[c] and c not in plain}

    # ------------------------------------------------------------------ state
    def state_dict(self) -> State:
        """Per-user arrays (aligned with users["user_id"]; item references as external ids, so a
        partition's users can move between workers) and global item arrays (aligned with
        items["item_id"], "" for free columns)."""
        item_ids, item_seen = self._items.state_arrays()
        n = len(item_ids)
        user_cols = self._users.live_cols()
        recent = self._recent_items[user_cols]
        recent_ids = np.full(recent.shape, "", dtype=object)
        recent_ids[recent >= 0] = item_ids[recent[recent >= 0]]
        users: dict[str, np.ndarray] = {
            "user_id": self._users.ids(user_cols).astype(str),
            "recent_items": recent_ids.astype(str),
            "last_ts": self._last_ts[user_cols].copy(),
            "n_events": self._user_events[user_cols].copy(),
        }
        items: dict[str, np.ndarray] = {
            "item_id": item_ids,
            "last_seen": item_seen,
            "n_events": self._item_events[:n].copy(),
            "trending": self.trending.values(n).copy(),
            "now": self.now.values(n).copy(),
            "popularity": self.all_time.values(n).copy(),
            "stage_counts": self.stages.counts[:, :n].copy() if n else np.zeros((self.stages.n_stages, 0)),
            "content": self.content.vectors[:n].copy(),
            **self.cooc.state(n),
            **(self.trans.state(n) if self.trans else {}),
        }
        if self.mf:
            users["mf_factors"] = self.mf.user_factors[user_cols].copy()
            users["mf_bias"] = self.mf.user_bias[user_cols].copy()
            items["mf_factors"] = self.mf.item_factors[:n].copy()
            items["mf_bias"] = self.mf.item_bias[:n].copy()
        meta = {
            "kind": "OnlineRecommender",
            "events_applied": self.events_applied,
            "evicted_events": self._evicted_events,
            "item_clock": self._items.now,
            "trending_clock": {"clock": self.trending.clock, "n_events": self.trending.n_events},
            "now_clock": {"clock": self.now.clock, "n_events": self.now.n_events},
            "popularity_clock": {"clock": self.all_time.clock, "n_events": self.all_time.n_events},
            "blend": self.blend.state(),
            "ratings": {"sum": self._rating_sum, "n": self._n_ratings},
            "mf": {"mean": self.mf.mean, "n_ratings": self.mf.n_ratings} if self.mf else None,
            "params": self._shape_params(),
        }
        if self.reranker is not None:  # the deep stage's serving model and what its features read
            save_stage(self.reranker, items, meta)
        return State(users=users, items=items, meta=meta)

    def _shape_params(self) -> dict[str, int]:
        """What a checkpoint's arrays are shaped by: loading one needs the same."""
        return {"recent": self.recent, "dim": self.mf.dim if self.mf else 0,
                "transitions": self.trans.window if self.trans else 0}

    def load_state_dict(self, state: State) -> None:
        """Replace the model state (item columns keep their positions; users get fresh columns)."""
        if state.meta.get("kind") != "OnlineRecommender":
            raise ValueError(f"not an OnlineRecommender state: {state.meta.get('kind')!r}")
        params = state.meta.get("params", {})
        if {key: params.get(key) for key in ("recent", "dim", "transitions")} != self._shape_params():
            raise ValueError(f"state saved with {params}; this model has {self._shape_params()}")
        items, users = state.items, state.users
        self._items = IdIndex(capacity=self.max_items)
        self._items.load_arrays(items["item_id"], items["last_seen"], now=state.meta.get("item_clock", 0.0))
        self._item_index_loads += 1
        n = self._items.n_cols
        self._item_events = np.asarray(items["n_events"], dtype=np.int64).copy()
        self._evicted_events = int(state.meta.get("evicted_events", 0))
        self.trending = fresh(self.trending)
        self.trending.load(items["trending"], state.meta["trending_clock"])
        self.now = fresh(self.now)
        self.now.load(items["now"], state.meta["now_clock"])
        self.all_time = DecayedCounts()
        self.all_time.load(items["popularity"], state.meta["popularity_clock"])
        self.stages = fresh(self.stages)
        self.stages.counts = np.zeros((self.stages.n_stages, max(n, 16)))
        self.stages.counts[:, :n] = items["stage_counts"]
        self.cooc.load(items)
        if self.trans:
            self.trans.load(items)
        self.content = fresh(self.content)
        self.content.set_vectors(np.asarray(items["content"], dtype=np.float32))
        self.blend.load(state.meta["blend"])
        self._rating_sum = float(state.meta["ratings"]["sum"])
        self._n_ratings = int(state.meta["ratings"]["n"])
        self._users = IdIndex(capacity=self.max_users, max_idle=self.user_idle)
        user_cols = self._users.cols(np.asarray(users["user_id"], dtype=object))
        self._users.pop_freed()
        u = self._users.n_cols
        self._recent_items = np.full((u, self.recent), _NO_ITEM, dtype=np.int64)
        recent_ids = np.asarray(users["recent_items"]).astype(object)
        if recent_ids.size:
            flat = self._items.cols(recent_ids.ravel(), add=False).reshape(recent_ids.shape)
            self._recent_items[user_cols] = np.where(recent_ids == "", _NO_ITEM, flat)
        self._last_ts = np.zeros(u)
        self._last_ts[user_cols] = users["last_ts"]
        self._latest_ts = float(self._last_ts.max(initial=0.0))
        self._user_events = np.zeros(u, dtype=np.int64)
        self._user_events[user_cols] = users["n_events"]
        if self.mf:
            self.mf = fresh(self.mf)
            self.mf.resize(u, n)
            self.mf.user_factors[user_cols] = users["mf_factors"]
            self.mf.user_bias[user_cols] = users["mf_bias"]
            self.mf.item_factors[:n] = items["mf_factors"]
            self.mf.item_bias[:n] = items["mf_bias"]
            self.mf.mean = float(state.meta["mf"]["mean"])
            self.mf.n_ratings = int(state.meta["mf"]["n_ratings"])
        self._item_table = None
        self._lookup_cache = None
        if self.reranker is not None:
            load_stage(self.reranker, items, state.meta)
