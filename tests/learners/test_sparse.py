"""SparseRecommender and its kernels against plain references; bounded state; checkpoints; cold start."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

import numpy as np
import pytest

from learners import kernels
from learners.base import Interactions, ItemMeta
from learners.content_index import ContentNeighbours
from learners.neighbours import NeighbourTable, add_pair
from learners.sparse import SparseRecommender
from learners.synthetic import generate
from learners.tokens import tokens


def test_add_pair_keeps_every_heavy_neighbour_like_space_saving() -> None:
    rng = np.random.default_rng(0)
    table = NeighbourTable(width=8)
    table.resize(1)
    truth: dict[int, float] = {}
    heavy = [3, 5, 7]
    for _ in range(4000):
        b = int(rng.choice(heavy)) if rng.random() < 0.5 else int(rng.integers(10, 400))
        add_pair(table.cols, table.weights, table.errors, 0, b, 1.0)
        truth[b] = truth.get(b, 0.0) + 1.0
    row = table.row(0)
    assert set(heavy) <= set(row)
    for b, lower in row.items():  # weight - error is a lower bound of the true weight
        assert lower <= truth[b] + 1e-6
    est = table.weights[0][np.isin(table.cols[0], heavy)]
    assert (est >= np.array([truth[b] for b in table.cols[0][np.isin(table.cols[0], heavy)]]) - 1e-6).all()


def _reference_cooc(model: SparseRecommender, user: str) -> dict[int, float]:
    """Co-occurrence sums of a user's candidates written plainly from the tables."""
    u = int(model._users.lookup(np.array([user], dtype=object))[0])
    width = model._recent.shape[1]
    length = min(int(model._recent_len[u]), model.context)
    recent = [int(model._recent[u, (model._recent_head[u] - 1 - k) % width]) for k in range(length)]
    weights = [model.decay ** k for k in range(length)]
    total = sum(weights)
    sums: dict[int, float] = {}
    for c, w in zip(recent, weights, strict=True):
        base = w / total / max(model._item_w[c], 1.0) ** model.alpha
        for j, v in model.neighbours.row(c).items():
            sums[j] = sums.get(j, 0.0) + base * v
    return sums


def test_candidate_scores_match_a_plain_reference() -> None:
    stream = generate(n_events=4000, seed=2)
    model = SparseRecommender(content_width=1, top_trending=4, fresh=2)
    model.learn_many(stream.log)
    user = stream.log.user[-1]
    sums = _reference_cooc(model, user)
    probe = Interactions.from_records([{"user_id": user, "item_id": "i00001", "ts": 1e10}])
    cands = model.score_then_learn(probe)
    n = int(cands.n[0])
    got = dict(zip(cands.cols[0, :n].tolist(), cands.scores[0, :n].tolist(), strict=True))
    assert set(sums) <= set(got)  # every neighbour of a recent item is a candidate
    # the highest-scoring co-occurrence neighbour, scored by the blend the model reports
    best = max(sums, key=sums.get)
    assert got[best] >= np.percentile(list(got.values()), 50)


def test_state_is_linear_in_items_and_users() -> None:
    small, large = SparseRecommender(), SparseRecommender()
    rng = np.random.default_rng(0)

    def feed(model: SparseRecommender, n_items: int) -> None:
        records = [{"user_id": f"u{rng.integers(0, n_items)}", "item_id": f"i{rng.integers(0, n_items)}",
                    "ts": float(t)} for t in range(20_000)]
        model.learn_many(Interactions.from_records(records))

    feed(small, 2_000)
    feed(large, 8_000)
    per_item_small = small.state_bytes() / (small.n_items + small.n_users)
    per_item_large = large.state_bytes() / (large.n_items + large.n_users)
    assert per_item_large < 1.6 * per_item_small  # linear, not quadratic, in the catalog


def test_new_ids_beyond_the_bound_evict_in_chunks_and_return_fresh() -> None:
    model = SparseRecommender(max_items=100, evict_chunk=0.1)
    first = Interactions.from_records([{"user_id": "u", "item_id": f"i{i}", "ts": float(i)}
                                       for i in range(100)])
    model.learn_many(first)
    assert model.n_items == 100 and model.evicted_items == 0
    model.learn_many(Interactions.from_records([{"user_id": "v", "item_id": "new", "ts": 200.0}]))
    assert model.evicted_items == 10 and model.n_items == 91
    assert model.item_cols(np.array(["i0"], dtype=object))[0] == -1  # least recently seen went first
    assert model.events_applied == 101  # evicted items' events still count
    # far more new ids in one call than the bound: no error, the newest stay
    model.learn_many(Interactions.from_records([{"user_id": "w", "item_id": f"n{i}", "ts": 300.0 + i}
                                                for i in range(90)]))
    assert model.n_items <= 100


def test_checkpoint_round_trip_gives_the_same_scores() -> None:
    stream = generate(n_events=3000, seed=4)
    model = SparseRecommender()
    model.add_items(sorted(stream.items, key=lambda m: m.ts)[:50])
    model.learn_many(stream.log[:2500])
    copy = SparseRecommender()
    copy.load_state_dict(model.state_dict())
    batch = stream.log[2500:2700]
    a, b = model.score_then_learn(batch), copy.score_then_learn(batch)
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    listed = [r.item_id for r in model.recommend(["u1"], k=5)[0]]
    assert listed == [r.item_id for r in copy.recommend(["u1"], k=5)[0]]
    listed = [r.item_id for r in model.recommend(["never-seen"], k=5)[0]]  # from the first-picks row
    assert listed == [r.item_id for r in copy.recommend(["never-seen"], k=5)[0]]
    assert copy.first_picks.row(0) == model.first_picks.row(0) and copy.first_picks.row(0)


def test_a_state_from_before_the_first_picks_row_loads_with_an_empty_row() -> None:
    """Checkpoints written before the first-picks row: the row starts empty and fills from the next
    users' first events (the rest of the state as saved)."""
    from learners import kernels

    stream = generate(n_events=3000, seed=4)
    model = SparseRecommender()
    model.learn_many(stream.log[:2500])
    state = model.state_dict()
    for key in ("first_picks_cols", "first_picks_weights", "first_picks_errors"):
        state.items.pop(key)
    state.meta.pop("first_tally")
    state.meta["clock"] = state.meta["clock"][: kernels.P_FIRST_W]
    old = SparseRecommender()
    old.load_state_dict(state)
    assert old.first_picks.row(0) == {} and old._params[kernels.P_FIRST_W] == 0
    assert old.item_counts() == model.item_counts()
    old.learn_many(stream.log[2500:])
    new_users = set(stream.log.user[2500:].tolist()) - set(stream.log.user[:2500].tolist())
    assert old._params[kernels.P_FIRST_W] == len(new_users) > 0


def test_state_with_recent_items_as_ids_still_loads() -> None:
    """States written before `recent_cols` held each user's recent items as external ids."""
    stream = generate(n_events=3000, seed=5)
    model = SparseRecommender()
    model.learn_many(stream.log[:2500])
    state = model.state_dict()
    cols = state.users.pop("recent_cols")
    state.users.pop("last_seen")
    padded = np.append(state.items["item_id"], "")
    state.users["recent_items"] = padded[np.where(cols >= 0, cols, len(padded) - 1)]
    old, new = SparseRecommender(), SparseRecommender()
    old.load_state_dict(state)
    new.load_state_dict(model.state_dict())
    batch = stream.log[2500:2700]
    a, b = new.score_then_learn(batch), old.score_then_learn(batch)
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.cols, b.cols)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


def test_announced_item_is_recommended_through_content_before_any_interaction() -> None:
    model = SparseRecommender()
    model.add_items([ItemMeta("jazz1", "Blue jazz night", ("jazz",)),
                     ItemMeta("jazz2", "Cool jazz", ("jazz",)),
                     ItemMeta("metal1", "Metal storm", ("metal",))])
    model.learn_many(Interactions.from_records(
        [{"user_id": f"u{k}", "item_id": "metal1", "ts": float(k)} for k in range(5)]
        + [{"user_id": "fan", "item_id": "jazz1", "ts": 10.0}]))
    listed = {r.item_id: r.source for r in model.recommend(["fan"], k=2)[0]}
    assert listed.get("jazz2") in ("content", "explore")  # never interacted with, yet listed
    assert "jazz1" not in listed  # the user's own recent item


def test_content_neighbours_skip_nothing_small_and_bound_big_tokens() -> None:
    index = ContentNeighbours(width=4, postings=8)
    metas = [ItemMeta(f"i{k}", f"word{k}", ("common",)) for k in range(50)]
    index.add(np.arange(50), metas)
    assert len(index.table.row(49)) == 4  # neighbours through the common tag, bounded
    assert max(n for _, n in index._index.values()) <= 4 * 8


def _content_reference(metas: list[ItemMeta], width: int, postings: int) -> dict[int, dict[int, float]]:
    """Plain Python content neighbours: per announced item, the cosine of idf-weighted token sets with
    the newest `postings` holders of each token (idf at announcement, from the holders a token keeps:
    past 4 x postings only the newest postings are kept), the best `width` linked both ways where they
    beat a full row's weakest."""
    holders: dict[str, list[int]] = {}
    norms: dict[int, float] = {}
    rows: dict[int, dict[int, float]] = {}

    def insert(a: int, b: int, w: float) -> None:
        row = rows.setdefault(a, {})
        if b in row or len(row) < width:
            row[b] = w
            return
        weakest = min(row, key=lambda c: (row[c], list(row).index(c)))
        if w > row[weakest]:
            del row[weakest]
            row[b] = w

    for a, meta in enumerate(metas):
        toks = list(dict.fromkeys(tokens(meta)))
        idf = {t: math.log1p((len(norms) + 2) / (len(holders.get(t, ())) + 1)) for t in toks}
        norm = math.sqrt(sum(v * v for v in idf.values()))
        sums: dict[int, float] = {}
        for t in toks:
            for o in holders.get(t, [])[-postings:]:
                sums[o] = sums.get(o, 0.0) + idf[t] ** 2
        sims = [(o, s / (norm * norms[o])) for o, s in sums.items()]
        for o, sim in sorted(sims, key=lambda x: -x[1])[:width]:  # stable: ties by first appearance
            insert(a, o, sim)
            insert(o, a, sim)
        norms[a] = norm
        for t in toks:
            holders.setdefault(t, []).append(a)
            if len(holders[t]) > 4 * postings:
                del holders[t][:-postings]
    return rows


@pytest.mark.parametrize("postings", [40, 6])  # 6: the frequent tokens' holders are trimmed often
def test_content_neighbours_match_a_plain_reference(postings: int) -> None:
    rng = np.random.default_rng(3)
    words = [f"w{k}" for k in range(12)]  # few words: many ties and full rows
    metas = [ItemMeta(f"i{k}", " ".join(rng.choice(words, size=int(rng.integers(1, 4)), replace=False)),
                      tuple(rng.choice(["a", "b", "c"], size=int(rng.integers(0, 2)))))
             for k in range(300)]
    index = ContentNeighbours(width=6, postings=postings)
    for lo in range(0, 300, 50):  # announced in a few calls, as a replay does
        index.add(np.arange(lo, lo + 50), metas[lo: lo + 50])
    filed = Counter(t for meta in metas for t in set(tokens(meta)))
    assert (max(filed.values()) > 4 * postings) == (postings == 6)  # trimmed at 6, not at 40
    reference = _content_reference(metas, width=6, postings=postings)
    for a in range(300):
        got = index.table.row(a)
        assert set(got) == set(reference.get(a, {}))
        for b, w in got.items():
            assert w == pytest.approx(reference[a][b], rel=1e-5)


def test_content_neighbours_forget_evicted_items_under_every_token_they_had() -> None:
    index = ContentNeighbours(width=4, postings=8)
    index.add(np.arange(4), [ItemMeta(f"i{k}", "red apple", ("fruit",)) for k in range(4)])
    index.add(np.array([1]), [ItemMeta("i1", "green pear", ())])  # re-announced: new tokens, old filings
    index.reset_items(np.array([1, 2]), 4)
    held = {t: set(buf[:n].tolist()) for t, (buf, n) in index._index.items()}
    assert all(not ({1, 2} & cols) for cols in held.values())
    assert held["red"] == {0, 3} and held["pear"] == set()
    index.add(np.array([4]), [ItemMeta("i4", "red apple green", ("fruit",))])
    assert set(index.table.row(4)) == {0, 3}  # never the freed columns
    with pytest.raises(ValueError, match="postings"):
        ContentNeighbours(postings=0)


def test_drift_reaction_is_graded_and_keeps_structure() -> None:
    stream = generate(n_events=3000, seed=5)
    model = SparseRecommender()
    model.learn_many(stream.log)
    before = model.neighbours.weights.copy()
    kept = SparseRecommender()
    kept.load_state_dict(model.state_dict())
    kept.on_drift(keep_recent=None)
    model.on_drift()  # default: each user's context dropped
    np.testing.assert_array_equal(before, model.neighbours.weights)  # nothing wiped
    assert model._recent_len.max() == 0 and kept._recent_len.max() > 0
    # the old tastes propose no more candidates (the trending and fresh items still do)
    last = stream.log[-1:]
    assert 0 < model.score_then_learn(last).n[0] < kept.score_then_learn(last).n[0]
    model.learn_many(stream.log[:10])
    assert model.drift_reactions == 1 and model._recent_len.max() > 0


def test_narrowing_rows_keeps_each_buckets_strongest_neighbours() -> None:
    from learners.neighbours import bucket_of

    table = NeighbourTable(width=64, budget=64 * 100)
    table.resize(100)
    rng = np.random.default_rng(1)
    for b in rng.permutation(np.arange(10, 400))[:300].tolist():
        add_pair(table.cols, table.weights, table.errors, 0, b, float(rng.integers(1, 1000)))
    live = table.cols[0] >= 0
    weight = dict(zip(table.cols[0][live].tolist(), table.weights[0][live].tolist(), strict=True))
    lower = table.row(0)
    table.resize(150)  # 150 rows x 64 > budget: rows halve to 32
    assert table.width == 32 and table.cols.shape[1] == 32
    kept = table.row(0)
    assert len(kept) == 32 and all(lower[b] == w for b, w in kept.items())  # weights and errors move along
    for start in range(0, 32, 16):
        inside = [b for b in weight if bucket_of(b, 32)[0] == start]
        held = [weight[b] for b in inside if b in kept]
        dropped = [weight[b] for b in inside if b not in kept]
        assert len(held) == min(16, len(inside))
        assert not dropped or min(held) >= max(dropped)  # each bucket keeps its strongest


def _score_user(model: SparseRecommender, u: int, touched: np.ndarray, cols: np.ndarray,
                scores: np.ndarray, parts: np.ndarray) -> int:
    """One user's candidates, their blend and each feature's weighted part, one candidate at a time."""
    from learners import kernels

    params = model._params
    boost_shift = np.log(params[kernels.P_BOOST])
    clock_gap = params[kernels.P_REF] - params[kernels.P_CLOCK]
    trend_shift = clock_gap / params[kernels.P_HALF_LIFE] * np.log(2.0) - boost_shift
    model._counters[0] += 1
    cur = model._counters[0]
    first = bool(model.first_gains) and (u < 0 or model._user_events[u] == 0)
    n = kernels.gather_candidates(
        u, model._recent, model._recent_head, model._recent_len, model._ctx_norm, model.neighbours.cols,
        model.neighbours.weights, model.neighbours.errors, model.content.table.cols,
        model.content.table.weights, model._top, model._fresh, model._fresh_state[1], model._decay_pow,
        int(params[kernels.P_CONTEXT]), params[kernels.P_ALPHA], model._stamp, cur, model._s_cooc,
        model._s_cont, touched, params[kernels.P_ERR], first, model.first_picks.cols,
        model.first_picks.weights, model.first_picks.errors, params[kernels.P_FIRST_W],
        params[kernels.P_FIRST_CUT])
    feats = np.empty(kernels.N_FEATURES)
    eff = np.array([model.weights[f] for f in kernels.FEATURES])  # the serving co-occurrence mix's
    if first:  # a user with no events yet: the first-picks row at the serving gain
        gain = model.first_gains[int(params[kernels.P_FIRST_GAIN])]
        eff[[0, 4]] *= gain
    for m in range(n):
        j = touched[m]
        kernels._features(j, model._s_cooc, model._s_cont, model._stamp, cur, model._cand_norm,
                          model._log_trend, model._log_w, model._cont_fade, trend_shift, boost_shift, feats)
        value = 0.0
        for f in range(kernels.N_FEATURES):
            parts[m, f] = eff[f] * feats[f]
            value += parts[m, f]
        cols[m], scores[m] = j, value
    return n


def _recommend_one_by_one(model: SparseRecommender, user_ids: list[str], k: int, exclude_recent: bool
                          ) -> list[list[tuple[str, float, str]]]:
    """The per-user form `recommend` had before its batched kernel, as a reference."""
    from learners import kernels

    background = model.background()
    order = background.order_desc()
    n_cols = model._items.n_cols
    live = model._items.live_mask()
    width = model._candidate_capacity()
    touched, cols = np.empty(width, np.int32), np.empty(width, np.int32)
    scores, parts = np.empty(width, np.float32), np.empty((width, kernels.N_FEATURES))
    out = []
    for user_id in user_ids:
        u = model._users.lookup(np.asarray([user_id], dtype=object))[0]
        n = _score_user(model, int(u), touched, cols, scores, parts)
        banned = set()
        if exclude_recent and u >= 0:  # the recent items and the rest of the history
            banned = set(model._recent[u][model._recent[u] >= 0].tolist())
            start, length = model._hist[0, u], model._hist[1, u]
            banned |= set(model._hist_pool[start:start + length].tolist()) - {-1}
        c, s, p = cols[:n].copy(), scores[:n].copy(), parts[:n].copy()
        ok = live[c] & np.isin(c, list(banned), invert=True) if banned else live[c]
        c, s, p = c[ok], s[ok], p[ok]
        by_score = np.argsort(-s, kind="stable")
        chosen = [(int(c[m]), float(s[m]), kernels.FEATURE_SOURCES[int(np.argmax(p[m]))])
                  for m in by_score[:k].tolist()]
        taken = banned | set(c.tolist())
        bg_best = [col for col in order.tolist() if col < n_cols and live[col] and col not in taken][:k]
        merged = sorted(chosen + [(col, float(background.values[col]), "background") for col in bg_best],
                        key=lambda x: -x[1])[:k]
        slots = min(model.explore_slots, k - 1) if k > 1 else 0
        if slots:
            listed = {col for col, _, _ in merged}
            new = [(int(c[m]), float(s[m])) for m in by_score.tolist()
                   if model._item_events[c[m]] < model.explore_below and int(c[m]) not in listed][:slots]
            if new:
                merged = merged[: k - len(new)] + [(col, v, "explore") for col, v in new]
        rows = []
        for col, value, source in merged:
            if source == "background":
                trending, popular = model._item_parts(np.array([col]))
                source = "trending" if trending[0] >= popular[0] else "popularity"
            rows.append((str(model._items.ids(np.array([col]))[0]), value, source))
        out.append(rows)
    return out


def test_batched_recommend_matches_one_user_at_a_time() -> None:
    stream = generate(n_events=6000, seed=7)
    model = SparseRecommender(max_items=300, explore_slots=2)  # evictions leave dead columns
    model.add_items(sorted(stream.items, key=lambda m: m.ts)[:40])
    for start in range(0, 5000, 250):
        model.learn_many(stream.log[start:start + 250])
    assert model.evicted_items > 0
    # dead columns whose rows still hold neighbours and a high background: lists must skip them
    popular = stream.log.item[4000:5000]
    model._items.remove(sorted(set(popular.tolist()), key=popular.tolist().count)[-5:])
    users = sorted(set(stream.log.user[4000:5000].tolist()))[:60] + ["never-seen"]
    for k, exclude in [(10, True), (3, True), (1, True), (10, False), (50, True)]:
        batched = model.recommend(users, k=k, exclude_recent=exclude)
        got = [[(r.item_id, r.score, r.source) for r in row] for row in batched]
        assert got == _recommend_one_by_one(model, users, k, exclude), (k, exclude)
    sources = {r.source for row in model.recommend(users, k=10) for r in row}
    assert {"cooccurrence", "explore"} <= sources and sources & {"trending", "popularity"}


def test_alpha_must_be_positive() -> None:
    import pytest

    for alpha in (0.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match="alpha must be positive"):
            SparseRecommender(alpha=alpha)
    SparseRecommender(alpha=1.0)


def test_lists_leave_out_the_users_whole_history() -> None:
    """Not only the recent items: nothing a user ever had is listed again (up to `max_history` items,
    then the newest), also after a checkpoint round trip."""
    log = generate(n_events=6000, n_users=40, n_items=300, seed=2).log
    model = SparseRecommender(seed=0)
    for a in range(0, len(log), 256):
        model.learn_many(log[a:a + 256])
    users = sorted(set(log.user.tolist()))
    assert max(len(set(log.item[log.user == u].tolist())) for u in users) > model._recent_width
    restored = SparseRecommender(seed=0)
    restored.load_state_dict(model.state_dict())
    for m in (model, restored):
        for user, recs in zip(users, m.recommend(users, k=20), strict=True):
            assert len(recs) == 20
            assert not {r.item_id for r in recs} & set(log.item[log.user == user].tolist())
    small = SparseRecommender(seed=0, max_history=10)
    small.learn_many(log)
    assert int(small._hist[1].max()) == 10  # bounded: the newest 10 beyond the recent items


def test_a_loaded_state_keeps_this_models_blend_step() -> None:
    log = generate(n_events=2_000, seed=2).log
    saved = SparseRecommender(blend_lr=0.05, seed=0)
    saved.learn_many(log)
    frozen = SparseRecommender(blend_lr=0.0, seed=0)
    frozen.load_state_dict(saved.state_dict())
    before = frozen._weights.copy()  # the raw weights (the effective ones also move with the scales)
    frozen.learn_many(log[:500])
    assert (frozen._weights == before).all()  # a step of 0: the saved 0.05 did not come back with the state


def _listed_in_top(model: SparseRecommender, log: Interactions) -> Iterator[tuple[int, bool, bool, float]]:
    """Per event of `log`, scored by the model in batches of 500: (position, the user's first event?,
    the item among its candidates?, 1.0 if fewer than MIX_K candidates score above it, else 0.0)."""
    users = set()
    for start in range(0, len(log), 500):
        c = model.score_then_learn(log[start:start + 500])
        for e in range(len(c.n)):
            user = log.user[start + e]
            first, _ = user not in users, users.add(user)
            cols, scores = c.cols[e, : c.n[e]], c.scores[e, : c.n[e]]
            yield (start + e, first, bool(c.target_col[e] in cols),
                   float((scores > c.target_score[e]).sum() < kernels.MIX_K))


def test_the_cooccurrence_mix_tally_follows_the_listed_rank() -> None:
    """Each mix's tally is a moving average of whether the event's item ranks in the top 10 of its
    candidates under that mix: with one mix (it serves), recomputed from the scores the model hands out."""
    model = SparseRecommender(mixes=(0.3,), seed=0)
    ema, tallied = 0.0, 0
    for position, first, in_cand, hit in _listed_in_top(model, generate(n_events=6_000, seed=5).log):
        # a first event tallies the first-picks gains instead
        if in_cand and position % kernels.MIX_EVERY == 0 and not first:
            ema += (hit - ema) * kernels.MIX_EVERY / kernels.MIX_EVENTS
            tallied += 1
    assert tallied > 700
    assert abs(model._mix_ema[0] - ema) < 2e-3


def test_the_first_picks_tally_follows_the_listed_rank_of_first_events() -> None:
    """The first-picks gain's tally is a moving average over users' first events of whether the item
    ranks in the top 10 of its candidates (one gain: it serves), recomputed from the scores handed out."""
    model = SparseRecommender(first_gains=(1.5,), seed=0)
    ema, tallied = 0.0, 0
    for _, first, in_cand, hit in _listed_in_top(model, generate(n_events=6_000, seed=5).log):
        if first and in_cand:
            ema += (hit - ema) * kernels.FIRST_RATE
            tallied += 1
    assert tallied > 100
    assert abs(model._first_tally[1, 0] - ema) < 1e-9


def test_a_first_event_takes_the_first_picks_rows_strongest_entries() -> None:
    """The cut is the first_candidates-th largest weight lower bound of the row, kept up to date as the
    row learns, and a first event gathers exactly the row's entries at or above it."""
    from learners import kernels

    log = generate(n_events=4000, seed=11).log
    model = SparseRecommender(first_candidates=5, seed=0)
    model.learn_many(log)
    row = model.first_picks
    live = row.cols[0] >= 0
    lower = (row.weights[0] - model.error_share * row.errors[0])[live]
    assert live.sum() > 5
    cut = np.sort(lower)[-5]
    assert model._params[kernels.P_FIRST_CUT] == cut
    params = model._params
    touched = np.empty(model._candidate_capacity(), np.int32)
    model._counters[0] += 1
    n = kernels.gather_candidates(
        -1, model._recent, model._recent_head, model._recent_len, model._ctx_norm,
        model.neighbours.cols, model.neighbours.weights, model.neighbours.errors,
        model.content.table.cols, model.content.table.weights, np.full(0, -1, np.int32),
        model._fresh, 0, model._decay_pow, int(params[kernels.P_CONTEXT]), params[kernels.P_ALPHA],
        model._stamp, model._counters[0], model._s_cooc, model._s_cont, touched,
        params[kernels.P_ERR], True, row.cols, row.weights, row.errors,
        params[kernels.P_FIRST_W], params[kernels.P_FIRST_CUT])
    assert set(touched[:n].tolist()) == set(row.cols[0][live][lower >= cut].tolist())
    assert 5 <= n < live.sum()


def test_first_events_score_the_first_picks_row_at_the_serving_gain() -> None:
    """A user's first event gets the items users picked first as candidates, scored by the blend with
    the co-occurrence part times the serving gain; gain 0 leaves the item-only score; no gains, no row."""
    from learners.base import Interactions

    def first_events(**kwargs):
        model = SparseRecommender(seed=0, **kwargs)
        # five users start with "a" (then "b"), one with "c"; "z" is popular later
        rows = [(f"u{n}", i) for n in range(5) for i in ("a", "b")] + [("v", "c")]
        rows += [(f"w{n}", "z") for n in range(3) for _ in range(4)]
        model.learn_many(Interactions.from_records(
            [{"user_id": u, "item_id": i, "ts": t} for t, (u, i) in enumerate(rows)]))
        return model, model.recommend(["new"], k=3)[0]

    model, listed = first_events(first_gains=(1.0,))
    assert model.first_picks.row(0).keys() == set(model._items.lookup(np.array(["a", "c", "z"], object)))
    assert listed[0].item_id == "a" and listed[0].source == "cooccurrence"
    _, listed = first_events(first_gains=())
    assert listed[0].item_id == "z"  # no row: the most popular item
    model, listed = first_events(first_gains=(0.0,))
    assert listed[0].item_id == "z" and listed[0].source != "cooccurrence"


def test_the_serving_mix_leads_the_tally_and_splits_the_cooccurrence_weight() -> None:
    import pytest

    from learners import kernels

    log = generate(n_events=6_000, seed=5).log
    model = SparseRecommender(seed=0)
    model.learn_many(log)
    serving = int(model._params[kernels.P_MIX])
    assert model._mix_ema[serving] >= model._mix_ema.max() - kernels.MIX_MARGIN
    w = model.weights
    total = model._weights[0] + model._weights[4]
    assert w["cooccurrence"] * model._scales[0] == pytest.approx(model.mixes[serving] * total)
    assert w["cooccurrence_share"] * model._scales[4] == pytest.approx((1 - model.mixes[serving]) * total)
    learned = SparseRecommender(mixes=(), seed=0)  # no mixes: the split the blend learns
    learned.learn_many(log)
    assert list(learned.weights.values()) == pytest.approx((learned._weights / learned._scales).tolist())
    restored = SparseRecommender(seed=0)
    restored.load_state_dict(model.state_dict())
    assert restored.weights == w and (restored._mix_ema == model._mix_ema).all()
    with pytest.raises(ValueError, match="mixes"):
        SparseRecommender(mixes=(0.5, 1.5))


@pytest.mark.parametrize(("explore_slots", "explore_below"), [(2, 3), (5, 60)])  # 60: most items "new"
def test_one_list_pass_gives_the_plain_list_beside_the_deep_stages_candidates(explore_slots: int,
                                                                              explore_below: int) -> None:
    # the deep stage's lists take their plain list (k, exploration) from the pass that finds its 100
    # candidates; it must be the list a plain pass gives
    stream = generate(n_events=4000, n_users=60, n_items=300, seed=7)
    model = SparseRecommender(explore_slots=explore_slots, explore_below=explore_below, max_items=250,
                              seed=0)  # evicts too
    for lo in range(0, len(stream.log), 256):
        model.learn_many(stream.log[lo: lo + 256])
    assert model.evicted_items > 0
    users = model._users.lookup(np.asarray([*stream.log.user[-40:].tolist(), "nobody"], dtype=object))
    for k in (1, 3, 10):
        for exclude in (True, False):
            alone = model._top_k(users, k, exclude, model.explore_slots)[:4]
            merged = model._top_k(users, 100, exclude, 0, feats=True, plain_k=k)[6:]
            for a, b in zip(alone, merged, strict=True):
                np.testing.assert_array_equal(a, b)
            assert (alone[3] == kernels.SOURCE_EXPLORE).any() or k == 1
