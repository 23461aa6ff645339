"""`SparseRecommender`: candidates, then scores, with state linear in items and users.

Signals (each a bounded structure, see their modules):

* ``cooccurrence``: per item its `width` strongest neighbours (`learners.neighbours`); an event (u, i)
  adds weight 1 / d ** pair_power between i and the user's item d steps back (d <= `window`); a
  candidate j of a user scores the position-decayed (`decay`) sum over the last `context` items c of
  the asymmetric cosine  w(c, j) / (n_c ** alpha * n_j ** (1 - alpha));
* ``trending`` / ``popularity``: log of a forward-decayed count (half-life `trend_half_life` events)
  and of the all-time count; the `top_trending` items form an exactly maintained trending set (forward
  decay keeps the order of untouched items, so only the touched item can enter it);
* ``content``: content neighbours found when items are announced (`learners.content_index`).

Candidates of an event are the neighbours and content neighbours of the user's recent items, the
trending set and the `fresh` most recently first-seen or announced items. A user's first event has no
recent items: its co-occurrence candidates come from the *first-picks* row, a neighbour row of what
users picked first, at a weight the model chooses online (`first_gains`). Candidates get the blend of
all signals (weights learned online, `learners.kernels`); every other item scores the *background*, a
snapshot of the blend's item-only part (trending + popularity) rebuilt every `background_every` events
(`learners.background`), which is exactly the score `recommend` and the evaluator use for it.

Workers of one consumer group share the item side (counts, trending counts, neighbour pairs) through
`learners.item_deltas` (`record_item_deltas` / `take_item_deltas` / `apply_item_delta`, once per event
by per-partition watermarks) and hand users over with `user_states` / `load_user_states`; the trending
half-life and the background's age count every worker's events.

The prequential hook is `score_then_learn(batch)`: for each event, in order, the candidates and the
target's score with the state before the event, then the event is learned (one fused numba pass per
event, `learners.kernels.score_then_learn`).

>>> from learners.base import Interactions
>>> model = SparseRecommender(seed=0)
>>> model.learn_many(Interactions.from_records(
...     [{"user_id": u, "item_id": i, "ts": t} for t, (u, i) in enumerate(
...         [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "z")])]))
>>> [r.item_id for r in model.recommend(["d"], k=2)[0]]  # new user: x most often, then z most lately
['x', 'z']
>>> model.learn_many(Interactions.from_records([{"user_id": "d", "item_id": "x", "ts": 9}]))
>>> model.recommend(["d"], k=1)[0][0].item_id
'y'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from learners import kernels, sparse_deep
from learners.background import Background
from learners.base import RATING, Interactions, ItemMeta, Recommendation, State
from learners.content_index import ContentNeighbours
from learners.ids import IdIndex
from learners.item_deltas import DeltaRecorder, ItemDelta
from learners.neighbours import NeighbourTable
from learners.stage_state import load_stage, save_stage

_MAX_EXPONENT = 200.0  # forward-decay exponent at which the trending counts are rebased


@dataclass(frozen=True)
class CandidateScores:
    """What `score_then_learn` hands the evaluator for a batch: per event its candidates (model
    columns, padded), their scores, the target's column and score, and the background the rest of
    the catalog scores."""

    n: np.ndarray  # (B,) int32: candidates per event
    cols: np.ndarray  # (B, M) int32
    scores: np.ndarray  # (B, M) float32
    target_col: np.ndarray  # (B,) int64
    target_score: np.ndarray  # (B,) float32
    background: Background


_SOURCE_DEEP = kernels.SOURCE_EXPLORE + 1  # `recommend`'s source code of an item the deep stage listed
_HOT_COLUMNS = 8  # stamp, co-occurrence, co-occurrence share, content, cand_norm, log_trend, log_w, cont_fade


def _grow(array: np.ndarray, n: int, fill: Any = 0) -> np.ndarray:
    if len(array) >= n:
        return array
    size = max(n, len(array) + len(array) // 2, 64)
    grown = np.full((size, *array.shape[1:]), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


# the deep stage's settings over sparse candidates: the model leaves each user's items out itself (no
# users x items bitmap); twice the dense learner's candidates and three epochs a round (bench/RESULTS.md)
DEEP_OPTIONS: dict[str, Any] = {"exclude_seen": False, "n_candidates": 100, "epochs": 3}


def _deep_stage(deep: Any, seed: int) -> Any:
    """The re-ranker `deep=` asks for (None: none)."""
    if deep is None or deep is False:
        return None
    if deep is True:
        from learners.deep import build_source

        deep = build_source(seed=seed, **DEEP_OPTIONS)
    if not hasattr(deep, "rerank_rows"):
        raise TypeError(f"deep= needs a re-ranker with rerank_rows (learners.deep.DeepReranker): {deep!r}")
    if getattr(deep, "exclude_seen", False):
        raise ValueError("a deep stage over sparse candidates is built with exclude_seen=False (its users x "
                         "items bitmap is what this model avoids; the model leaves the user's items out)")
    return deep


class SparseRecommender:
    """Candidate-generating online recommender (see the module docstring).

    Parameters
    ----------
    context, decay
        Recent items per user that propose and score candidates, and the weight factor per step back
        (6: with decay 0.8 the items further back add little; 10 scored the same within 0.001 HR@10 on
        ML-100K, YOOCHOOSE and Amazon at ~40% more slots read and ~15% more candidates per event).
    window, pair_power
        How many previous items of the user each event pairs with, and the pair weight 1 / d ** power.
    alpha
        Asymmetric cosine exponent of the context item's count (> 0; the candidate's gets 1 - alpha).
    width, neighbour_budget, content_width
        Co-occurrence neighbours kept per item, at most; co-occurrence entries over all items (rows
        narrow by halves, down to 16, as the catalog grows past budget / width); content neighbours
        kept per item.
    content_fade
        The content feature of an item with w interactions is scaled by w ** -content_fade (0: content
        keeps its weight on popular items too; 1: a cold-start signal only).
    trend_half_life
        Half-life, in events, of the trending count.
    top_trending, fresh
        Size of the trending candidate set and of the fresh-items candidate ring.
    negatives, blend_lr, init
        Online blend: negatives per event, step size, starting weights per feature.
    explore_slots, explore_below
        Slots of each recommended list kept for items with fewer than `explore_below` interactions.
    background_every
        Events between background snapshots (None: 1,024 or an eighth of the catalog, the larger).
    max_items, max_users
        Id bounds; past them the least recently seen ids are evicted in chunks of `evict_chunk` of the
        bound (an evicted id's state is dropped; it starts fresh when it returns).
    error_share
        Share of a neighbour's space-saving error taken off its weight when scoring (1: the lower bound).
    max_history
        Items per user's history that `recommend` leaves out (a set; past it the newest are kept).
    drift_gain
        On a detected drift new events weigh this many times the old ones from then on (old counts are
        not wiped: a false alarm costs little; see `on_drift`).
    deep
        True: a `learners.deep.DeepReranker` second stage re-ranking each event's best candidates
        (`learners.sparse_deep`), or such an object built with ``exclude_seen=False``; None: none.
        Items it brings into a list that the blend alone would not have listed are named "deep".
    first_candidates
        The first-picks row's strongest entries a first event takes as candidates (the row keeps `width`
        entries for its counts).
    first_gains
        Weights of the first-picks row (its co-occurrence part, relative to the blend's) that the model
        chooses among online for users' first events, by which would have listed those events' items
        more often lately; empty: no first-picks row (a first event scores trending and popularity).
    mixes
        Shares of the co-occurrence weight on the asymmetric cosine (the rest on the per-context-item
        share) that the model chooses among online, by which would have listed the event's item more
        often lately (`learners.kernels`: logs differ here, and the pairwise step cannot learn it);
        empty: the split the blend learns.
    """

    _SCALE_EVENTS = 256  # the feature scales' moving average keeps 0.99 of itself over this many events
    _SCALE_WARMUP = 300  # samples averaged plainly before it (the first alone set it once: a fluke of
    # the first events then held for tens of thousands of events)

    def __init__(
        self,
        context: int = 8,
        decay: float = 0.8,
        window: int = 30,
        pair_power: float = 0.6,
        alpha: float = 0.62,
        width: int = 256,
        neighbour_budget: int | None = 1 << 26,
        content_width: int = 32,
        content_fade: float = 0.0,
        trend_half_life: float = 1000.0,
        top_trending: int = 32,
        fresh: int = 16,
        negatives: int = 4,
        blend_lr: float = 0.001,
        init: dict[str, float] | None = None,
        explore_slots: int = 1,
        explore_below: int = 5,
        background_every: int | None = None,
        max_items: int = 2_000_000,
        max_users: int = 4_000_000,
        evict_chunk: float = 0.01,
        drift_gain: float = 3.0,
        error_share: float = 0.5,
        max_history: int = 1000,
        mixes: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
        first_candidates: int = 32,
        first_gains: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
        deep: Any = None,
        seed: int = 0,
    ) -> None:
        self.context = context
        self.decay = decay
        self.window = window
        self.pair_power = pair_power
        self.alpha = alpha
        self.width = width
        self.neighbour_budget = neighbour_budget
        self.content_width = content_width
        self.content_fade = content_fade
        self.trend_half_life = trend_half_life
        self.top_trending = top_trending
        self.fresh = fresh
        self.negatives = negatives
        self.blend_lr = blend_lr
        self.init = dict(init or {"cooccurrence": 0.5, "cooccurrence_share": 0.5, "trending": 0.1,
                                  "popularity": 0.1, "content": 0.05})
        self.explore_slots = explore_slots
        self.explore_below = explore_below
        self.background_every = background_every
        self.max_items = max_items
        self.max_users = max_users
        self.evict_chunk = evict_chunk
        self.drift_gain = drift_gain
        self.error_share = error_share
        self.max_history = max_history
        self.mixes = tuple(float(m) for m in mixes)
        self.first_candidates = first_candidates
        self.first_gains = tuple(float(g) for g in first_gains)
        self.seed = seed
        self.reranker = _deep_stage(deep, seed)
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        if not self.alpha > 0:  # also refuses NaN
            # the share feature recovers each context item's count from its cached count ** -alpha
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not self.content_fade >= 0:
            raise ValueError(f"content_fade must be >= 0, got {self.content_fade}")
        if self.first_candidates < 1:
            raise ValueError(f"first_candidates must be at least 1, got {self.first_candidates}")
        self._users = IdIndex(capacity=self.max_users)
        self._items = IdIndex(capacity=self.max_items)
        self._recent_width = max(self.context, self.window, 1)
        self._recent = np.full((0, self._recent_width), -1, np.int32)
        self._recent_head = np.zeros(0, np.int32)
        self._recent_len = np.zeros(0, np.int32)
        self._user_events = np.zeros(0, np.int64)
        # per-user histories (item columns) in one pool: start, length, room, items ever added
        self._hist = np.zeros((4, 0), np.int64)
        self._hist_pool = np.full(1 << 12, -1, np.int32)
        self._hist_top = np.zeros(1, np.int64)
        self._mark = np.zeros(0, np.int64)  # recommend's per-item marks (kernels.top_k_users)
        self._mark_token = 1
        self._item_w = np.zeros(0, np.float64)
        self._item_events = np.zeros(0, np.int64)
        self._trend = np.zeros(0, np.float64)
        # per-item caches of the counts' transforms (`kernels.refresh_item`)
        self._ctx_norm = np.ones(0, np.float64)
        self._in_top = np.zeros(0, np.bool_)
        self._bind_hot(np.zeros((0, _HOT_COLUMNS)))
        self._seen_list = np.zeros(0, np.int32)
        self.neighbours = NeighbourTable(self.width, budget=self.neighbour_budget)
        self.content = ContentNeighbours(self.content_width)
        self._top = np.full(self.top_trending, -1, np.int32)
        self._fresh = np.full(self.fresh, -1, np.int32)
        self._fresh_state = np.zeros(2, np.int64)
        self._counters = np.zeros(4, np.int64)  # stamp counter, n_seen, event ring head, events
        self._event_ring = np.zeros(4096, np.int32)
        self._decay_pow = self.decay ** np.arange(self._recent_width, dtype=np.float64)
        self._pair_w = 1.0 / np.arange(1, self._recent_width + 1, dtype=np.float64) ** self.pair_power
        self._params = np.zeros(kernels.N_PARAMS)
        self._params[[kernels.P_CONTEXT, kernels.P_WINDOW, kernels.P_ALPHA, kernels.P_BOOST, kernels.P_LR,
                      kernels.P_MOMENTUM, kernels.P_NEGATIVES, kernels.P_HALF_LIFE]] = [
            self.context, self.window, self.alpha, 1.0, self.blend_lr / 256, 0.99 ** (1 / self._SCALE_EVENTS),
            self.negatives, self.trend_half_life]
        self._params[kernels.P_ERR] = self.error_share
        self._params[kernels.P_FADE] = self.content_fade
        self._params[kernels.P_FIRST_K] = self.first_candidates
        self._params[kernels.P_FIRST_CUT] = -1.0  # no cut (lower bounds are >= 0; finite: params go to JSON)
        self._params[kernels.P_SCALE_WARMUP] = self._SCALE_WARMUP
        self._weights = np.array([float(self.init.get(f, 0.0)) for f in kernels.FEATURES])
        self._mixes = np.asarray(self.mixes, np.float64)
        if ((self._mixes < 0) | (self._mixes > 1)).any():
            raise ValueError(f"mixes must lie in [0, 1], got {self.mixes}")
        self._mix_ema = np.zeros(len(self._mixes))
        gains = np.asarray(self.first_gains, np.float64)
        if not (np.isfinite(gains).all() and (gains >= 0).all()):
            raise ValueError(f"first_gains must be finite and >= 0, got {self.first_gains}")
        self._first_tally = np.zeros((2, len(gains)))  # the gains, and each one's moving tally
        self._first_tally[0] = gains
        self._params[kernels.P_FIRST_GAIN] = int(np.abs(gains - 1.0).argmin()) if len(gains) else 0
        self.first_picks = NeighbourTable(self.width)  # one row: what users picked first
        self.first_picks.resize(1)
        self.first_picks.cols, self.first_picks.weights, self.first_picks.errors = (
            a[:1].copy() for a in (self.first_picks.cols, self.first_picks.weights, self.first_picks.errors))
        cooc = self._weights[0] + self._weights[4]
        start = self._weights[0] / cooc if cooc > 0 else 0.5  # the mix nearest the starting weights
        self._params[kernels.P_MIX] = int(np.abs(self._mixes - start).argmin()) if len(self._mixes) else -1
        self._scales = np.ones(kernels.N_FEATURES)
        self._scale_n = np.zeros(kernels.N_FEATURES)  # samples each feature's scale has averaged
        self._rng = np.array([np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(self.seed + 1)], np.uint64)
        self._background = Background.empty()
        self._out_buffers = np.empty((0, 0), np.int32), np.empty((0, 0), np.float32)
        self._feat_buffer = np.empty((0, 0, kernels.N_FEATURES), np.float32)
        self._background_at = -(1 << 62)
        self._background_version = 0
        self._evicted_events = 0
        self.evicted_items = 0
        self.evicted_users = 0
        self._rating_sum = 0.0
        self._n_ratings = 0
        self._item_index_loads = 0
        self.drift_reactions = 0
        self._latest_ts = 0.0  # the stream's latest event time (the deep stage's "now" when serving)
        # item-side state shared between workers (learners.item_deltas): per source partition, the
        # next offset whose item side this state does not hold yet; what to send, when recording
        self._watermarks: dict[int, int] = {}
        self._recorder: DeltaRecorder | None = None
        self._first_seen: list[str] = []  # items whose first event was learned here, not yet announced
        self.deltas_applied = 0
        self._local_clock: float | None = None
        self._local_events = 0
        self.delta_events_applied = 0

    @property
    def events_applied(self) -> int:
        return int(self._counters[3])  # evicted items' events included

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def model_version(self) -> int | None:
        """The deep stage's serving model version; None without a deep stage."""
        return None if self.reranker is None else int(self.reranker.model_version)

    @property
    def item_index_version(self) -> tuple[int, int]:
        return self._item_index_loads, self._items.generation

    @property
    def weights(self) -> dict[str, float]:
        """The blend's effective weight of each feature (applied to raw feature values)."""
        eff = np.empty(kernels.N_FEATURES)
        kernels.effective_weights(self._weights, self._scales, self._mixes, self._params, eff)
        return dict(zip(kernels.FEATURES, eff.tolist(), strict=True))

    def knows_user(self, user_id: str) -> bool:
        return user_id in self._users

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self._items.ids(cols)

    def item_cols(self, item_ids: np.ndarray) -> np.ndarray:
        return self._items.cols(np.asarray(item_ids, dtype=object), add=False)

    def state_bytes(self) -> int:
        """Bytes held by the numeric state (arrays; the id dictionaries come on top)."""
        arrays = [self._recent, self._recent_head, self._recent_len, self._user_events, self._hist,
                  self._hist_pool, self._item_w,
                  self._item_events, self._trend, self._in_top, self._hot,
                  self._seen_list, self._background.values, self._background.sorted_values,
                  self._background.position]
        return (sum(a.nbytes for a in arrays) + self.neighbours.nbytes() + self.content.table.nbytes()
                + self.first_picks.nbytes())

    def close(self) -> None:
        """Wait for the deep stage's running background fine-tune (call before exiting)."""
        if self.reranker is not None:
            self.reranker.close()

    def finetune_rounds(self, since: int = 0) -> list[tuple[float, int, int | None]]:
        """(seconds, samples, version or None when rejected) of the deep stage's fine-tune rounds from
        round `since` on (empty without a deep stage)."""
        tuner = None if self.reranker is None else self.reranker.tuner
        rounds = [] if tuner is None else list(tuner.rounds[since:])
        return [(float(r.seconds), int(r.samples), r.version if r.accepted else None) for r in rounds]

    # ------------------------------------------------------------------ ids
    def _bind_hot(self, hot: np.ndarray) -> None:
        """What a candidate's scoring reads, per item, in one row of `hot` (one cache line instead of one
        per array: at a million items each would be a miss): the stamp (int64 bits), the co-occurrence
        and content sums, and the cached transforms of the counts. The names are views of its columns."""
        self._hot = hot
        self._stamp = hot.view(np.int64)[:, 0]
        self._s_cooc = hot[:, 1:3]
        self._s_cont = hot[:, 3]
        self._cand_norm = hot[:, 4]
        self._log_trend = hot[:, 5]
        self._log_w = hot[:, 6]
        self._cont_fade = hot[:, 7]

    def _ensure_items(self, n: int) -> None:
        self._item_w = _grow(self._item_w, n)
        self._item_events = _grow(self._item_events, n)
        self._trend = _grow(self._trend, n)
        self._ctx_norm = _grow(self._ctx_norm, n, 1.0)
        self._in_top = _grow(self._in_top, n)
        if len(self._hot) < n:
            grown = _grow(self._hot, n)
            grown[len(self._hot):, 4] = 1.0  # cand_norm
            grown[len(self._hot):, 5:7] = -np.inf  # log_trend, log_w
            grown[len(self._hot):, 7] = 1.0  # cont_fade
            self._bind_hot(grown)
        self._seen_list = _grow(self._seen_list, n)
        self.neighbours.resize(n)
        self.content.resize(n)

    def _ensure_users(self, n: int) -> None:
        self._recent = _grow(self._recent, n, -1)
        self._recent_head = _grow(self._recent_head, n)
        self._recent_len = _grow(self._recent_len, n)
        self._user_events = _grow(self._user_events, n)
        if self._hist.shape[1] < n:
            self._hist = _grow(self._hist.T, n).T.copy()

    def _add_ids(self, index: IdIndex, ids: np.ndarray, is_items: bool) -> np.ndarray:
        cols = index.lookup(ids)
        bound = index.capacity
        missing = cols < 0
        if bound is not None and missing.any():
            n_new = len(set(ids[missing].tolist()))
            if len(index) + n_new > bound:  # evict a chunk at once, least recently seen first
                chunk = max(int(bound * self.evict_chunk), len(index) + n_new - bound)
                self._evict(index, chunk, cols[~missing], is_items)
        cols = index.add(ids, cols)
        if is_items:
            self._ensure_items(index.n_cols)
        else:
            self._ensure_users(index.n_cols)
        return cols

    def _evict(self, index: IdIndex, chunk: int, keep: np.ndarray, is_items: bool) -> None:
        saved, index.capacity = index.capacity, max(len(index) - chunk, 0)
        try:
            index._make_room(0, keep)
        finally:
            index.capacity = saved
        freed = index.pop_freed()
        if not len(freed):
            return
        if is_items:
            self._reset_items(freed)
        else:
            self.evicted_users += len(freed)
            self._recent[freed] = -1
            self._recent_head[freed] = 0
            self._recent_len[freed] = 0
            self._user_events[freed] = 0
            self._hist[1:, freed] = 0  # the pool room is left behind (bounded by the live histories)

    def _reset_items(self, freed: np.ndarray) -> None:
        n = self._items.n_cols
        self.evicted_items += len(freed)
        self._evicted_events += int(self._item_events[freed].sum())
        self._item_w[freed] = 0.0
        self._item_events[freed] = 0
        self._trend[freed] = 0.0
        self._ctx_norm[freed] = 1.0
        self._cand_norm[freed] = 1.0
        self._log_trend[freed] = -np.inf
        self._log_w[freed] = -np.inf
        self._cont_fade[freed] = 1.0
        self.neighbours.reset_items(freed, n)
        self.content.reset_items(freed, n)
        self._drop_first_picks(freed)
        if self.reranker is not None:
            self.reranker.reset_items(freed)
        dead = np.zeros(len(self._item_w), np.bool_)
        dead[freed] = True
        if self._recorder is not None:
            self._recorder.drop_cols(dead)
        self._top[(self._top >= 0) & dead[np.maximum(self._top, 0)]] = -1
        self._in_top[freed] = False
        self._fresh[(self._fresh >= 0) & dead[np.maximum(self._fresh, 0)]] = -1
        seen = self._seen_list[: self._counters[1]]
        kept = seen[~dead[seen]]
        self._seen_list[: len(kept)] = kept
        self._counters[1] = len(kept)
        self._recent[(self._recent >= 0) & dead[np.maximum(self._recent, 0)]] = -1
        pool = self._hist_pool[: self._hist_top[0]]
        pool[(pool >= 0) & dead[np.maximum(pool, 0)]] = -1
        ring = self._event_ring
        ring[dead[ring]] = kept[0] if len(kept) else 0
        self._background_at = -(1 << 62)  # columns changed hands: a new snapshot

    def _drop_first_picks(self, freed: np.ndarray) -> None:
        """Freed columns out of the first-picks row (its weight total stays: it counts first events)."""
        self.first_picks.drop_neighbours(freed, 1)
        self._refresh_first_cut()

    def _refresh_first_cut(self) -> None:
        kernels.refresh_first_cut(self.first_picks.cols, self.first_picks.weights, self.first_picks.errors,
                                  self._params)

    # ------------------------------------------------------------------ background
    def _maybe_rebuild_background(self) -> None:
        n = self._items.n_cols
        every = self.background_every or max(1024, n // 8)
        now = self._clock()
        if now - self._background_at < every and len(self._background) == n:
            return
        if now - self._background_at < every and len(self._background) > 0:
            return  # new columns score the default until the next snapshot
        self._rebase()
        trending, popular = self._item_parts(slice(0, n))
        values = trending + popular
        self._background_version += 1
        self._background = Background.build(values.astype(np.float32), self._background_version)
        self._background_at = now

    def _clock(self) -> int:
        """The event clock: item-side events of every worker (local ones and those applied from deltas);
        the background's age counts in it, like the trending half-life."""
        return int(self._params[kernels.P_CLOCK])

    def _item_parts(self, cols: Any) -> tuple[np.ndarray, np.ndarray]:
        """The blend's trending and popularity parts of items (the kernels' `_features`)."""
        eff = self._weights / self._scales
        boost_shift = np.log(self._params[kernels.P_BOOST])
        trend_shift = ((self._params[kernels.P_REF] - self._params[kernels.P_CLOCK]) / self.trend_half_life
                       * np.log(2.0) - boost_shift)
        trending = eff[1] * np.maximum(self._log_trend[cols] + trend_shift, 0.0)
        popular = eff[2] * np.maximum(self._log_w[cols] - boost_shift, 0.0)
        return trending, popular

    def _refresh_items(self) -> None:
        n = self._items.n_cols
        kernels.refresh_items(n, self._item_w, self._trend, self.alpha, self.content_fade, self._ctx_norm,
                              self._cand_norm, self._log_trend, self._log_w, self._cont_fade)

    def background(self) -> Background:
        """The current background snapshot (what every non-candidate item scores)."""
        self._maybe_rebuild_background()
        return self._background

    def _rebase(self) -> None:
        """Keep the forward-decayed counts and the drift boost in float range (rare O(items) passes)."""
        p = self._params
        if (p[kernels.P_CLOCK] - p[kernels.P_REF]) / self.trend_half_life > _MAX_EXPONENT:
            self._trend *= 2.0 ** ((p[kernels.P_REF] - p[kernels.P_CLOCK]) / self.trend_half_life)
            p[kernels.P_REF] = p[kernels.P_CLOCK]
            self._refresh_items()
        if p[kernels.P_BOOST] > 1e6:
            factor = 1.0 / p[kernels.P_BOOST]
            self._item_w *= factor
            self._trend *= factor
            self.neighbours.forget(factor)
            self.first_picks.forget(factor)
            p[kernels.P_FIRST_W] *= factor
            self._refresh_first_cut()
            p[kernels.P_BOOST] = 1.0
            self._refresh_items()

    # ------------------------------------------------------------------ prequential hooks
    def _run(self, batch: Interactions, score: bool) -> CandidateScores | None:
        if not np.isfinite(batch.ts).all() or not np.isfinite(batch.value).all():
            raise ValueError("interactions need finite ts and value")
        users = self._add_ids(self._users, batch.user, is_items=False)
        items = self._add_ids(self._items, batch.item, is_items=True)
        if len(batch):
            self._latest_ts = max(self._latest_ts, float(batch.ts.max()))
        background = self.background()
        n = len(batch)
        width = self._candidate_capacity()
        touched = np.empty(width, np.int32)
        rows = n if score else 0
        out_n = np.zeros(n, np.int32)
        out_cols, out_scores = self._scratch(rows, width)
        out_target = np.zeros(n, np.float32)
        out_in_cand = np.zeros(n, np.bool_)
        flags = np.full(n, score, np.bool_)
        if not score:
            out_cols = np.zeros((n, 0), np.int32)
            out_scores = np.zeros((n, 0), np.float32)
            flags[:] = False
        deep = self.reranker is not None and score
        out_feats = self._feature_scratch(n if deep else 0, width if deep else 0)
        item_side = self._item_side(batch)
        recording = self._recorder is not None and batch.partition is not None
        log_size = n * (self.window + 1) if recording else 0  # pairs, and a first event's first pick
        log_e, log_p = np.empty(log_size, np.int32), np.empty(log_size, np.int32)
        log_k, log_n = np.empty(log_size, np.int32), np.zeros(1, np.int64)
        clock0 = self._params[kernels.P_CLOCK]
        n_seen0 = int(self._counters[1])
        if self._local_clock is not None and n:
            # the blend learns from local events only (its weights stay local): with other workers'
            # events applied from deltas, each local step stands for every worker's events since the
            # last batch (r = 1 alone)
            r = 1.0 + (clock0 - self._local_clock) / max(self._local_events, 1)
            self._params[kernels.P_LR] = self.blend_lr / 256 * r
            self._params[kernels.P_MOMENTUM] = 0.99 ** (r / self._SCALE_EVENTS)
        self._local_events = int(item_side.sum())
        kernels.score_then_learn(
            users, items, flags, self._recent, self._recent_head, self._recent_len, self._user_events,
            self._item_w, self._item_events, self._trend, self._ctx_norm, self._cand_norm, self._log_trend,
            self._log_w, self._cont_fade, self.neighbours.cols, self.neighbours.weights,
            self.neighbours.errors, self.content.table.cols, self.content.table.weights, self._top,
            self._in_top, self._fresh, self._fresh_state, self._seen_list, self._counters, self._event_ring,
            self._decay_pow, self._pair_w, self._params, self._weights, self._scales, self._scale_n,
            self._rng, self._stamp, self._s_cooc, self._s_cont, touched, out_n, out_cols, out_scores,
            out_target, out_in_cand, item_side, log_e, log_p, log_k, log_n, self._mixes, self._mix_ema,
            out_feats, self.first_picks.cols, self.first_picks.weights, self.first_picks.errors,
            self._first_tally)
        self._local_clock = self._params[kernels.P_CLOCK]
        if recording:
            self._record(batch, items, item_side, clock0, log_e[: log_n[0]], log_p[: log_n[0]],
                         log_k[: log_n[0]])
            self._first_seen += self._items.ids(self._seen_list[n_seen0: self._counters[1]]).tolist()
        rated = batch.kind == RATING
        self._rating_sum += float(batch.value[rated].sum())
        self._n_ratings += int(rated.sum())
        result = None
        if score:
            result = self._candidate_scores(out_n, out_cols, out_scores, items, out_target, out_in_cand,
                                            background)
        if deep:  # before the batch joins the histories: each event's own items as before it
            self._rerank(batch, users, items, result, out_feats)
        self._add_history(users, items)
        if self.reranker is not None:
            self.reranker.learn(batch.user, items, batch.ts)
        return result

    @staticmethod
    def _candidate_scores(out_n: np.ndarray, out_cols: np.ndarray, out_scores: np.ndarray, items: np.ndarray,
                          out_target: np.ndarray, out_in_cand: np.ndarray, background: Background
                          ) -> CandidateScores:
        """The kernel's candidate rows as `CandidateScores`; a target that is no candidate scores its
        background value."""
        n = len(out_n)
        # the rows cut to the widest (the capacity is every source full: most of it stays unwritten)
        cols = np.empty((n, int(out_n.max(initial=0))), np.int32)
        scores = np.empty(cols.shape, np.float32)
        kernels.pack_rows(out_n, out_cols, out_scores, cols, scores)
        values = background.values
        outside = ~out_in_cand
        target_cols = items.astype(np.int64)
        in_snapshot = outside & (target_cols < len(values))
        out_target[in_snapshot] = values[target_cols[in_snapshot]]
        out_target[outside & ~in_snapshot] = background.default
        return CandidateScores(out_n, cols, scores, target_cols, out_target, background)

    def _rerank(self, batch: Interactions, users: np.ndarray, items: np.ndarray, result: CandidateScores,
                feats: np.ndarray) -> None:
        """The deep stage over the batch's candidates (`learners.sparse_deep`): the best of each event's
        candidates that are not its user's items (`kernels.deep_candidates`), lifted in the deep order
        when a model serves."""
        n, c = len(users), self.reranker.n_candidates
        cols, slots = np.empty((n, c), np.int64), np.empty((n, c), np.int64)
        blend, raw = np.empty((n, c), np.float32), np.empty((n, c, kernels.N_FEATURES), np.float32)
        mass, top = np.empty((n, kernels.N_FEATURES), np.float32), np.empty(n, np.float32)
        mark, token = self._marks(n)
        kernels.deep_candidates(users, items, sparse_deep.prev_in_batch(users), result.n, result.cols,
                                result.scores, feats, self._hist[0], self._hist[1], self._hist_pool,
                                mark, token, cols, slots, blend, raw, mass, top)
        cands, scores = self.reranker.rerank_rows(
            batch.user, items.astype(np.int64), cols, blend, sparse_deep.feature_sources(raw), batch.ts,
            masses=sparse_deep.feature_sources(mass))
        if scores is not None:  # the stage's positions are into the chosen rows: back to the batch's rows
            chosen = np.where(cands.slots >= 0, np.take_along_axis(slots, np.maximum(cands.slots, 0), 1), -1)
            sparse_deep.lift(result, chosen, scores, top)

    def _marks(self, n: int) -> tuple[np.ndarray, int]:
        """The per-item marks (one int per item column, grown to the columns) and the first of `n`
        fresh tokens: token + r marks row r's items in a kernel."""
        if len(self._mark) < self._items.n_cols:
            self._mark = _grow(self._mark, self._items.n_cols)
        token = self._mark_token
        self._mark_token += n
        return self._mark, token

    def _add_history(self, users: np.ndarray, items: np.ndarray) -> None:
        pos, n = 0, len(users)
        while pos < n:
            pos = kernels.add_history(pos, users, items, self.max_history, self._hist[0], self._hist[1],
                                      self._hist[2], self._hist[3], self._hist_pool, self._hist_top)
            if pos < n:  # the pool is full: double it and go on from that event
                self._hist_pool = _grow(self._hist_pool, 2 * len(self._hist_pool), -1)

    def _load_histories(self, user_cols: np.ndarray, lengths: np.ndarray, cols: np.ndarray,
                        totals: np.ndarray) -> None:
        """Histories of `user_cols` (ragged `cols`), each in room of its own length at the pool's top."""
        top = int(self._hist_top[0])
        need = top + int(lengths.sum())
        if need > len(self._hist_pool):
            self._hist_pool = _grow(self._hist_pool, need, -1)
        self._hist_pool[top:need] = cols
        self._hist[0, user_cols] = top + np.cumsum(lengths) - lengths
        self._hist[1, user_cols] = lengths
        self._hist[2, user_cols] = lengths
        self._hist[3, user_cols] = totals
        self._hist_top[0] = need

    def _scratch(self, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-event candidate rows for the kernel to write, (rows, width), kept between batches."""
        cols, scores = self._out_buffers
        if cols.shape[0] < rows or cols.shape[1] != width:
            cols = np.empty((max(rows, cols.shape[0]), width), np.int32)
            scores = np.empty(cols.shape, np.float32)
            self._out_buffers = cols, scores
        return cols[:rows], scores[:rows]

    def _feature_scratch(self, rows: int, width: int) -> np.ndarray:
        """Per-candidate raw features for the kernel to write (the deep stage's input), kept between
        batches."""
        if rows == 0:
            return np.empty((0, 0, kernels.N_FEATURES), np.float32)
        buf = self._feat_buffer
        if buf.shape[0] < rows or buf.shape[1] != width:
            buf = np.empty((max(rows, buf.shape[0]), width, kernels.N_FEATURES), np.float32)
            self._feat_buffer = buf
        return buf[:rows]

    def _candidate_capacity(self) -> int:
        """The most candidates one event can have (every source full, nothing shared)."""
        context = max(self.context * (self.neighbours.width + self.content_width), self.first_picks.width)
        return context + self.top_trending + self.fresh

    # ------------------------------------------------------------------ shared item side
    def _item_side(self, batch: Interactions) -> np.ndarray:
        """Per event: learn its item side here? Not when a delta already brought it (its offset is
        below its partition's watermark). Moves the watermarks past the batch."""
        n = len(batch)
        if batch.partition is None or batch.offset is None:
            return np.ones(n, np.bool_)
        marks = self._watermarks
        parts = batch.partition.astype(np.int64)
        known = np.array([marks.get(p, 0) for p in range(int(parts.max(initial=-1)) + 1)], np.int64)
        side = batch.offset >= known[parts]
        for p in np.unique(parts).tolist():
            top = int(batch.offset[parts == p].max()) + 1
            if top > marks.get(p, 0):
                marks[p] = top
        return side

    def _record(self, batch: Interactions, items: np.ndarray, item_side: np.ndarray, clock0: float,
                log_e: np.ndarray, log_p: np.ndarray, log_k: np.ndarray) -> None:
        clocks = clock0 + np.cumsum(item_side) - 1.0  # each item-side event's clock
        partition = batch.partition.astype(np.int64)
        self._recorder.add(partition[item_side], batch.offset[item_side], items[item_side],
                           clocks[item_side], partition[log_e], batch.offset[log_e], items[log_e], log_p,
                           self._pair_w[log_k])

    @property
    def item_watermarks(self) -> dict[int, int]:
        """Per source partition, the next offset whose item side this state does not hold."""
        return dict(self._watermarks)

    def record_item_deltas(self, on: bool = True) -> None:
        """Start (or stop) recording the item side learned from sourced events, for `take_item_deltas`."""
        self._recorder = DeltaRecorder() if on else None

    def take_item_deltas(self) -> list[ItemDelta]:
        """The item-side changes learned here since the last call, one delta per source partition."""
        if self._recorder is None:
            return []
        return self._recorder.take(self._items.ids, float(self._params[kernels.P_CLOCK]),
                                   self.trend_half_life)

    def take_first_seen(self) -> list[str]:
        """Items whose first event was learned here since the last call (while recording): the other
        workers hear of them at once, before the delta with their counts."""
        out, self._first_seen = self._first_seen, []
        return out

    def apply_item_delta(self, delta: ItemDelta) -> bool:
        """Apply another worker's delta unless this state already holds its events (its `first` offset
        is below the partition's watermark: it was learned here, or applied before); returns whether
        it was applied."""
        if delta.first < self._watermarks.get(delta.partition, 0):
            return False
        cols = self._add_ids(self._items, np.asarray(delta.item_ids, dtype=object), is_items=True)
        cols = cols.astype(np.int64)
        first_cols = cols[np.asarray(delta.first_pos, np.int64)]
        kernels.apply_item_delta(
            cols, np.asarray(delta.counts, np.int64), np.asarray(delta.trend_sums, np.float64),
            cols[np.asarray(delta.pair_a, np.int64)], cols[np.asarray(delta.pair_b, np.int64)],
            np.asarray(delta.pair_w, np.float64), float(delta.events), self._params, self._item_w,
            self._item_events, self._trend, self._ctx_norm, self._cand_norm, self._log_trend, self._log_w,
            self._cont_fade, self._top, self._in_top, self._fresh, self._fresh_state, self._seen_list,
            self._counters, self._event_ring, self.neighbours.cols, self.neighbours.weights,
            self.neighbours.errors, first_cols, np.asarray(delta.first_w, np.float64), self.first_picks.cols,
            self.first_picks.weights, self.first_picks.errors)
        self._watermarks[delta.partition] = delta.last + 1
        self.deltas_applied += 1
        self.delta_events_applied += delta.events
        return True

    def item_counts(self) -> dict[str, int]:
        """Interactions per known item id (the integer counts every worker of a group agrees on)."""
        cols = self._items.live_cols()
        return dict(zip(self._items.ids(cols).tolist(), self._item_events[cols].tolist(), strict=True))

    def score_then_learn(self, batch: Interactions) -> CandidateScores:
        """Test then train, per event: candidates and scores from the state before each event, then
        the event is learned. The whole catalog's score of event e is `scores[e]` on `cols[e]` and the
        background elsewhere."""
        return self._run(batch, score=True)

    def learn_many(self, batch: Interactions) -> None:
        if len(batch):
            self._run(batch, score=False)

    def learn_one(self, user_id: str, item_id: str, ts: float, value: float = 1.0,
                  kind: str = "click") -> None:
        self.learn_many(Interactions.from_records(
            [{"user_id": user_id, "item_id": item_id, "ts": ts, "value": value, "type": kind}]))

    def predict_many(self, batch: Interactions) -> np.ndarray:
        """Rating predictions: the mean rating so far (this model ranks; it has no rating head)."""
        mean = self._rating_sum / self._n_ratings if self._n_ratings else 0.0
        return np.full(len(batch), mean, dtype=np.float32)

    def on_drift(self, keep_recent: int | None = 0) -> None:
        """Adapt to a detected drift, gradedly: from now on new events weigh `drift_gain` times the old
        ones (in the counts, the trending counts and the neighbour weights), and each user keeps only
        its newest `keep_recent` recent items as context (None: all). The recent items propose the
        candidates, so old tastes stop proposing at once while the learned structure stays in place
        for a false alarm."""
        self._params[kernels.P_BOOST] *= self.drift_gain
        if keep_recent is not None:
            np.minimum(self._recent_len, max(0, int(keep_recent)), out=self._recent_len)
        self.drift_reactions += 1
        self._background_at = -(1 << 62)

    def add_items(self, items: Sequence[ItemMeta]) -> None:
        """Announce catalog items: they get a column, content neighbours and a fresh-candidate slot."""
        if not items:
            return
        ids = np.asarray([m.item_id for m in items], dtype=object)
        cols = self._add_ids(self._items, ids, is_items=True)
        self.content.add(cols, list(items))
        for col in cols[-self.fresh:].tolist():
            if self._item_events[col] == 0:
                self._fresh[self._fresh_state[0] % self.fresh] = col
                self._fresh_state[0] += 1
                self._fresh_state[1] = min(self._fresh_state[1] + 1, self.fresh)

    # ------------------------------------------------------------------ serving
    def recommend(self, user_ids: Sequence[str], k: int = 10, exclude_recent: bool = True
                  ) -> list[list[Recommendation]]:
        """Top-k per user from candidates and the background, the user's history (recent items and up to
        `max_history` others) left out;
        `explore_slots` slots go to the best-scoring new items ("explore"). One kernel pass for all
        users (`kernels.top_k_users`)."""
        if not len(self._items) or k < 1 or not len(user_ids):
            return [[] for _ in user_ids]
        ids = np.asarray([str(x) for x in user_ids], dtype=object)
        users = self._users.lookup(ids)
        if self.reranker is not None and self.reranker.model_version > 0:
            out_n, out_cols, out_scores, out_src = self._deep_lists(ids, users, k, exclude_recent)
        else:
            listed = self._top_k(users, k, exclude_recent, self.explore_slots)
            out_n, out_cols, out_scores, out_src = listed[:4]
        filled = np.arange(k)[None, :] < out_n[:, None]
        cols, src = out_cols[filled], out_src[filled]
        names = self._items.ids(cols).tolist()
        trending, popular = self._item_parts(cols)
        labels = np.asarray([*kernels.FEATURE_SOURCES, "background", "explore", "deep"], dtype=object)[src]
        on_background = src == kernels.SOURCE_BACKGROUND
        labels[on_background] = np.where(trending >= popular, "trending", "popularity")[on_background]
        values = out_scores[filled].tolist()
        flat = [Recommendation(str(name), value, label)
                for name, value, label in zip(names, values, labels.tolist(), strict=True)]
        bounds = np.concatenate([[0], np.cumsum(out_n)]).tolist()
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _top_k(self, users: np.ndarray, k: int, exclude_recent: bool, explore_slots: int, feats: bool = False,
               plain_k: int = 0) -> tuple[np.ndarray, ...]:
        """`kernels.top_k_users` of user columns: (n listed, item columns, scores, source codes, and when
        `feats` the listed items' raw features and each feature's sum over the user's candidates; with
        `plain_k`, then the same four for a list of plain_k with `self.explore_slots` exploration
        slots, from the same pass)."""
        if plain_k > k:
            raise ValueError(f"the plain list ({plain_k}) must not be longer than the list it shares ({k})")
        background = self.background()
        width = self._candidate_capacity()
        mark, token = self._marks(len(users))

        def lists(rows: int, length: int) -> tuple[np.ndarray, ...]:
            return (np.zeros(rows, np.int64), np.zeros((rows, length), np.int64),
                    np.zeros((rows, length), np.float64), np.zeros((rows, length), np.int64))

        out_n, out_cols, out_scores, out_src = lists(len(users), k)
        plain = lists(len(users) if plain_k else 0, plain_k)
        out_feats = np.zeros((len(users) if feats else 0, k, kernels.N_FEATURES), np.float32)
        out_mass = np.zeros((len(users) if feats else 0, kernels.N_FEATURES), np.float32)
        kernels.top_k_users(
            users, k, exclude_recent, explore_slots, self.explore_below, self._items.live_mask(),
            self._item_events, self._user_events, background.order_desc(), background.values, mark, token,
            self._recent, self._recent_head, self._recent_len, self._hist[0], self._hist[1], self._hist_pool,
            self._ctx_norm, self._cand_norm, self._log_trend,
            self._log_w, self._cont_fade, self.neighbours.cols, self.neighbours.weights,
            self.neighbours.errors, self.content.table.cols, self.content.table.weights, self._top,
            self._fresh, self._fresh_state,
            self._decay_pow, self._params, self._weights, self._scales, self._stamp, self._counters,
            self._s_cooc, self._s_cont, np.empty(width, np.int32), out_n, out_cols, out_scores, out_src,
            self._mixes, out_feats, out_mass, plain_k, self.explore_slots, *plain, self.first_picks.cols,
            self.first_picks.weights, self.first_picks.errors, self._first_tally)
        return (out_n, out_cols, out_scores, out_src, out_feats, out_mass, *(plain if plain_k else ()))

    def _deep_lists(self, ids: np.ndarray, users: np.ndarray, k: int, exclude_recent: bool
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Lists in the deep stage's order: it re-ranks each user's best `n_candidates` items (the blend's
        list that long, without exploration); the plain list's exploration picks keep their slots at the
        end. An item the plain list does not hold gets the source code `_SOURCE_DEEP`. Both lists come
        from one kernel pass; the plain list is served while the stage has no model."""
        c = max(self.reranker.n_candidates, k)
        n, cols, scores, _, feats, mass, *plain = self._top_k(users, c, exclude_recent, 0, feats=True,
                                                              plain_k=k)
        plain_n, plain_cols, plain_scores, plain_src = plain
        slot = np.arange(k)[None, :]
        explored = (plain_src == kernels.SOURCE_EXPLORE) & (slot < plain_n[:, None])
        blend = np.where(np.arange(c)[None, :] < n[:, None], scores, -np.inf).astype(np.float32)
        # an exploration pick keeps its slot: it is not re-ranked into the rest
        blend[(cols[:, :, None] == np.where(explored, plain_cols, -2)[:, None, :]).any(2)] = -np.inf
        cands, deep = self.reranker.rerank_rows(
            ids, np.full(len(users), -1, np.int64), cols, blend, sparse_deep.feature_sources(feats),
            np.full(len(users), self._latest_ts), remember=False, masses=sparse_deep.feature_sources(mass))
        if deep is None:
            return plain_n, plain_cols, plain_scores, plain_src
        order, ranked = sparse_deep.deep_order(cands.slots, deep)
        n_explore = explored.sum(1)
        keep = np.minimum((order >= 0).sum(1), k - n_explore)
        top = order[:, :k] if order.shape[1] >= k else np.pad(order, ((0, 0), (0, k - order.shape[1])),
                                                                constant_values=-1)
        picked = np.take_along_axis(cols, np.maximum(top, 0), 1)
        kept = slot < keep[:, None]
        match = (picked[:, :, None] == plain_cols[:, None, :]) & (slot[:, None, :] < plain_n[:, None, None])
        from_plain = np.take_along_axis(plain_src, match.argmax(2), 1)
        out_cols = np.where(kept, picked, 0)
        out_src = np.where(kept & match.any(2), from_plain, _SOURCE_DEEP)
        out_scores = np.zeros((len(users), k))
        out_scores[:, : min(k, ranked.shape[1])] = ranked[:, :k]
        out_scores[~kept] = 0.0
        # the exploration picks (the plain list's last slots) follow the kept part
        j = slot - keep[:, None]
        at = np.clip(plain_n[:, None] - n_explore[:, None] + j, 0, k - 1)
        tail = (j >= 0) & (j < n_explore[:, None])
        out_cols = np.where(tail, np.take_along_axis(plain_cols, at, 1), out_cols)
        out_scores = np.where(tail, np.take_along_axis(plain_scores, at, 1), out_scores)
        out_src = np.where(tail, kernels.SOURCE_EXPLORE, out_src)
        return keep + n_explore, out_cols, out_scores, out_src

    def load_item_state(self, items: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Start from the item side of another worker's state (`state_dict().items` and `.meta`), with no
        users: a worker joining a group warm (`stream.sync` item-state snapshots)."""
        width = self._recent_width
        users = {"user_id": np.zeros(0, dtype=str), "last_seen": np.zeros(0),
                 "recent_cols": np.zeros((0, width), np.int32), "n_events": np.zeros(0, np.int64)}
        self.load_state_dict(State(users=users, items=items, meta=meta))
        self._counters[3] = 0  # events_applied counts this worker's own events

    def _recent_ordered(self, user_cols: np.ndarray) -> np.ndarray:
        """The users' recent items, one row each, most recent first, -1 past their length."""
        width = self._recent_width
        order = (self._recent_head[user_cols, None] - 1 - np.arange(width)[None, :]) % width
        ordered = np.take_along_axis(self._recent[user_cols], order, 1)
        ordered[np.arange(width)[None, :] >= self._recent_len[user_cols, None]] = -1
        return ordered

    def _set_recent(self, user_cols: np.ndarray, ordered: np.ndarray) -> None:
        """Set the users' recent items from `_recent_ordered`-style rows (most recent first, -1 padded):
        the ring holds oldest..newest ending before head."""
        width = self._recent_width
        lengths = (ordered >= 0).sum(1)
        shift = width - lengths
        roll = (np.arange(width)[None, :] + shift[:, None]) % width
        self._recent[user_cols] = np.take_along_axis(ordered[:, ::-1], roll, 1)
        self._recent_head[user_cols] = lengths % width
        self._recent_len[user_cols] = lengths

    # ------------------------------------------------------------------ users that move
    def user_states(self, user_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Each known user's state, JSON-able (the changelog record of a user whose partition may move
        to another worker): recent items (most recent first), history, event count."""
        ids = np.asarray([str(u) for u in user_ids], dtype=object)
        cols = self._users.lookup(ids)
        known = cols >= 0
        ids, cols = ids[known], cols[known]
        recent = self._recent_ordered(cols)
        out = []
        for r, (user, u) in enumerate(zip(ids.tolist(), cols.tolist(), strict=True)):
            start, length = self._hist[0, u], self._hist[1, u]
            hist = self._hist_pool[start:start + length]
            row = recent[r][recent[r] >= 0]
            out.append({"user_id": user, "recent": self._items.ids(row).tolist(),
                        "history": self._items.ids(hist[hist >= 0]).tolist(),
                        "history_total": int(self._hist[3, u]), "n_events": int(self._user_events[u])})
        return out

    def load_user_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Replace the given users' state with `user_states` records (users handed over with their
        partition); items they name that are not known yet get columns."""
        if not states:
            return
        users = self._add_ids(self._users, np.asarray([s["user_id"] for s in states], dtype=object),
                              is_items=False)
        width = self._recent_width
        recent = [list(s["recent"])[:width] for s in states]
        history = [list(s["history"])[: self.max_history] for s in states]
        flat = np.asarray([i for r in recent for i in r] + [i for h in history for i in h], dtype=object)
        cols = self._add_ids(self._items, flat, is_items=True) if len(flat) else np.zeros(0, np.int64)
        n_recent = sum(len(r) for r in recent)
        counts = np.fromiter((len(r) for r in recent), np.int64, len(recent))
        ordered = np.full((len(recent), width), -1, np.int32)  # most recent first, as stored
        ordered[np.repeat(np.arange(len(recent)), counts), np.arange(n_recent) - np.repeat(
            np.cumsum(counts) - counts, counts)] = cols[:n_recent]
        self._set_recent(users, ordered)
        lengths = np.fromiter((len(h) for h in history), np.int64, len(history))
        self._load_histories(users, lengths, cols[n_recent:].astype(np.int32),
                             np.asarray([max(int(s.get("history_total", 0)), len(h))
                                         for s, h in zip(states, history, strict=True)], np.int64))
        self._user_events[users] = [int(s.get("n_events", 0)) for s in states]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> State:
        item_ids, item_seen = self._items.state_arrays()
        n = len(item_ids)
        user_cols = self._users.live_cols()
        ordered = self._recent_ordered(user_cols)
        # recent items as positions in items["item_id"] of this same state (columns keep their
        # positions on load): no string per entry, where a million users hold tens of millions of them
        hist_len = self._hist[1, user_cols]
        hist_cols = self._hist_pool[np.repeat(self._hist[0, user_cols] - np.cumsum(hist_len) + hist_len,
                                              hist_len) + np.arange(int(hist_len.sum()))]
        users = {"user_id": self._users.ids(user_cols).astype(str),
                 "last_seen": self._users.last_seen(user_cols), "recent_cols": ordered.astype(np.int32),
                 "n_events": self._user_events[user_cols].copy(),
                 # ragged: user r's history is history.cols[sum(len[:r]) : sum(len[:r + 1])]
                 "history.len": hist_len.astype(np.int32), "history.cols": hist_cols.astype(np.int32),
                 "history.total": self._hist[3, user_cols].copy()}
        items = {"item_id": item_ids, "last_seen": item_seen, "n_events": self._item_events[:n].copy(),
                 "weight": self._item_w[:n].copy(), "trending": self._trend[:n].copy(),
                 **self.neighbours.state(n, "cooccurrence"), **self.content.table.state(n, "content"),
                 **self.first_picks.state(1, "first_picks"),
                 "top_trending": self._top.copy(), "fresh": self._fresh.copy(),
                 "seen_list": self._seen_list[: self._counters[1]].copy(),
                 "event_ring": self._event_ring.copy(),
                 # the snapshot every non-candidate item scores until the next rebuild: a restored model
                 # serves the same lists as the one saved
                 "background": self._background.values.copy()}
        meta = {"kind": "SparseRecommender",
                "params": {"context": self.context, "window": self.window, "width": self.width,
                           "content_width": self.content_width},
                "clock": self._params.tolist(), "counters": self._counters.tolist(),
                "fresh_state": self._fresh_state.tolist(), "weights": self._weights.tolist(),
                "mix_ema": self._mix_ema.tolist(), "first_tally": self._first_tally.tolist(),
                "scales": self._scales.tolist(), "scale_n": self._scale_n.tolist(),
                "item_clock": self._items.now, "evicted_events": self._evicted_events,
                "background_age": self._clock() - self._background_at,
                "ratings": {"sum": self._rating_sum, "n": self._n_ratings}, "rng": str(int(self._rng[0])),
                "item_watermarks": {str(p): o for p, o in self._watermarks.items()},
                "latest_ts": self._latest_ts}
        if self.reranker is not None:  # the serving model and what its features read
            save_stage(self.reranker, items, meta)
        return State(users=users, items=items, meta=meta)

    def load_state_dict(self, state: State) -> None:
        if state.meta.get("kind") != "SparseRecommender":
            raise ValueError(f"not a SparseRecommender state: {state.meta.get('kind')!r}")
        params = state.meta["params"]
        mine = {"context": self.context, "window": self.window, "width": self.width,
                "content_width": self.content_width}
        if params != mine:
            raise ValueError(f"state saved with {params}; this model has {mine}")
        loads, recording = self._item_index_loads, self._recorder is not None
        self._reset()
        self._item_index_loads = loads + 1
        self.record_item_deltas(recording)
        items, users = state.items, state.users
        self._items.load_arrays(items["item_id"], items["last_seen"], now=state.meta.get("item_clock", 0.0))
        n = self._items.n_cols
        self._ensure_items(n)
        self._item_events[:n] = items["n_events"]
        self._item_w[:n] = items["weight"]
        self._trend[:n] = items["trending"]
        self._refresh_items()
        self.neighbours.load(items, "cooccurrence")
        self.content.table.load(items, "content")
        self._ensure_items(n)
        self._top[:] = items["top_trending"]
        self._in_top[self._top[self._top >= 0]] = True
        self._fresh[:] = items["fresh"]
        seen = np.asarray(items["seen_list"], np.int32)
        self._seen_list[: len(seen)] = seen
        self._event_ring[:] = items["event_ring"]
        clock = state.meta["clock"]  # states before P_SCALE_WARMUP hold one parameter less
        own = self._params.copy()
        self._params[: len(clock)] = clock
        # the blend's step, negatives and error share are this model's settings, not the saved ones
        tuned = [kernels.P_LR, kernels.P_MOMENTUM, kernels.P_NEGATIVES, kernels.P_ERR, kernels.P_SCALE_WARMUP,
                 kernels.P_FADE, kernels.P_FIRST_K]
        self._params[tuned] = own[tuned]
        self._counters[:] = state.meta["counters"]
        self._fresh_state[:] = state.meta["fresh_state"]
        self._weights[:] = state.meta["weights"]
        ema = state.meta.get("mix_ema")  # states before the mixes have none: the starting mix serves
        if ema is not None and len(ema) == len(self._mix_ema):
            self._mix_ema[:] = ema
        else:
            self._params[kernels.P_MIX] = own[kernels.P_MIX]
        if "first_picks_cols" in items:
            self.first_picks.load(items, "first_picks")
        self._refresh_first_cut()
        # states before the first-picks row have none (it fills from the next first events); a state
        # saved with other gains starts this model's tally
        tally = np.asarray(state.meta.get("first_tally", []), np.float64)
        if tally.shape == self._first_tally.shape and (tally[0] == self._first_tally[0]).all():
            self._first_tally[:] = tally
        else:
            self._params[kernels.P_FIRST_GAIN] = own[kernels.P_FIRST_GAIN]
        self._scales[:] = state.meta["scales"]
        if "scale_n" in state.meta:
            self._scale_n[:] = state.meta["scale_n"]
        else:  # states before scale_n: a seen scale is a settled moving average
            self._scale_n[:] = np.where(state.meta["scale_seen"], 1e9, 0.0)
        self._evicted_events = int(state.meta.get("evicted_events", 0))
        self._rating_sum = float(state.meta["ratings"]["sum"])
        self._n_ratings = int(state.meta["ratings"]["n"])
        self._rng[0] = np.uint64(int(state.meta["rng"]))
        self._watermarks = {int(p): int(o) for p, o in state.meta.get("item_watermarks", {}).items()}
        ids = np.asarray(users["user_id"])
        # users are stored compact: they take columns 0..n-1 in one bulk load
        self._users.load_arrays(ids, users.get("last_seen", np.zeros(len(ids))))
        user_cols = np.arange(len(ids))
        self._ensure_users(self._users.n_cols)
        if "recent_cols" in users:
            flat = np.asarray(users["recent_cols"], np.int32)
        else:  # states before recent_cols held external ids
            recent_ids = np.asarray(users["recent_items"]).astype(object)
            flat = self._items.cols(recent_ids.ravel(), add=False).reshape(recent_ids.shape)
            flat[recent_ids == ""] = -1
        if flat.size:
            self._set_recent(user_cols, flat)
        self._user_events[user_cols] = users["n_events"]
        if "history.len" in users:
            self._load_histories(user_cols, np.asarray(users["history.len"], np.int64),
                                 np.asarray(users["history.cols"], np.int32),
                                 np.asarray(users["history.total"], np.int64))
        self._background_at = -(1 << 62)
        if "background" in items and "background_age" in state.meta:
            self._background_version += 1
            self._background = Background.build(np.asarray(items["background"], np.float32),
                                                self._background_version)
            self._background_at = self._clock() - int(state.meta["background_age"])
        self._latest_ts = float(state.meta.get("latest_ts", 0.0))
        if self.reranker is not None:
            load_stage(self.reranker, items, state.meta)
