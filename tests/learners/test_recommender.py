import numpy as np
import pytest

from learners.base import Interactions, ItemMeta, Recommender, State
from learners.mf import MatrixFactorization
from learners.recommender import OnlineRecommender


def events(pairs, t0=0.0, kind="click", value=1.0):
    return Interactions.from_records([
        {"user_id": u, "item_id": i, "ts": t0 + n, "type": kind, "value": value}
        for n, (u, i) in enumerate(pairs)
    ])


def two_taste_log(n_users=40, seed=0):
    """Half the users go a -> b -> c, the other half x -> y -> z."""
    rng = np.random.default_rng(seed)
    pairs = []
    for u in rng.permutation(n_users):
        chain = ["a", "b", "c"] if u % 2 == 0 else ["x", "y", "z"]
        pairs += [(f"u{u}", i) for i in chain]
    return events(pairs)


def test_is_a_recommender_and_learns_sessions():
    model = OnlineRecommender(seed=0)
    assert isinstance(model, Recommender)
    model.learn_many(two_taste_log())
    model.learn_many(events([("new", "x")], t0=1000))
    top = model.recommend(["new"], k=2)[0]
    assert {r.item_id for r in top} == {"y", "z"}
    assert all(r.source == "cooccurrence" for r in top)
    assert top[0].score >= top[1].score


def test_new_user_gets_popularity():
    model = OnlineRecommender(seed=0)
    model.learn_many(events([("u1", "hit"), ("u2", "hit"), ("u3", "hit"), ("u1", "rare")]))
    recs = model.recommend(["stranger"], k=1)[0]
    assert recs[0].item_id == "hit" and recs[0].source in {"trending", "popularity", "stage"}


def test_score_many_is_causal_within_a_batch():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    batch = events([("fresh", "x"), ("fresh", "y"), ("other", "a")], t0=2000)
    scores, cols = model.score_many(batch)
    col = dict(zip(model.item_ids(cols).tolist(), range(len(cols)), strict=True))
    # event 0: "fresh" has no context yet, so y (its next item) gets no co-occurrence boost over b
    assert scores[0, col["y"]] == pytest.approx(scores[0, col["b"]], abs=0.5)
    # event 1: "fresh"'s earlier event (x) of the same batch is context: y and z now lead
    assert scores[1, col["y"]] > scores[1, col["b"]] and scores[1, col["z"]] > scores[1, col["c"]]
    # changing later events never changes an earlier event's scores
    altered = events([("fresh", "x"), ("fresh", "b"), ("other", "z")], t0=2000)
    again, _ = model.score_many(altered)
    np.testing.assert_allclose(again[:2], scores[:2], rtol=1e-6)
    # and an event's own item does not matter either
    own = events([("fresh", "c"), ("fresh", "y"), ("other", "a")], t0=2000)
    np.testing.assert_allclose(model.score_many(own)[0][0], scores[0], rtol=1e-6)


def test_scores_use_only_state_before_the_batch():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    batch = events([("u0", "b"), ("u1", "y")], t0=3000)
    before, _ = model.score_many(batch)
    again, _ = model.score_many(batch)
    np.testing.assert_array_equal(before, again)  # scoring changes nothing
    model.learn_many(batch)
    after, _ = model.score_many(batch)
    assert not np.allclose(before, after)


def test_exploration_slot_for_new_items():
    model = OnlineRecommender(seed=0, explore_slots=1, explore_below=3)
    for _ in range(5):
        model.learn_many(two_taste_log())
    model.add_items([ItemMeta("brand-new", "Brand new thing", ("new",))])
    recs = model.recommend(["u0"], k=2)[0]  # x, y, z outscore it: only the slot brings it in
    assert [r.item_id for r in recs][-1] == "brand-new" and recs[-1].source == "explore"
    assert recs[0].item_id in {"x", "y", "z"}
    no_explore = OnlineRecommender(seed=0, explore_slots=0)
    for _ in range(5):
        no_explore.learn_many(two_taste_log())
    no_explore.add_items([ItemMeta("brand-new", "Brand new thing", ("new",))])
    assert "brand-new" not in [r.item_id for r in no_explore.recommend(["u0"], k=2)[0]]
    # once the item has enough interactions it competes on its own score
    model.learn_many(events([(f"v{n}", "brand-new") for n in range(3)], t0=5000))
    assert model._item_events[model.item_cols(np.array(["brand-new"]))[0]] == 3


def test_recent_items_are_not_recommended():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    recs = model.recommend(["u0"], k=10)[0]
    assert not {"a", "b", "c"} & {r.item_id for r in recs}


def test_state_dict_round_trip():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    model.learn_many(events([("r1", "a")], kind="rating", value=4.0, t0=100))
    model.add_items([ItemMeta("announced", "Announced item", ("tag",))])
    state = model.state_dict()
    assert isinstance(state, State)
    assert state.meta["events_applied"] == 121 == int(state.items["n_events"].sum())
    assert int(state.users["n_events"].sum()) == 121
    assert all(isinstance(v, np.ndarray) for v in [*state.users.values(), *state.items.values()])
    assert len(state.users["user_id"]) == len(state.users["recent_items"]) == len(state.users["mf_factors"])
    import json

    json.dumps(state.meta)
    clone = OnlineRecommender(seed=0)
    clone.load_state_dict(state)
    batch = events([("u0", "b"), ("u3", "y"), ("nobody", "a")], t0=200)
    s1, c1 = model.score_many(batch)
    s2, c2 = clone.score_many(batch)
    np.testing.assert_array_equal(model.item_ids(c1), clone.item_ids(c2))
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-6)
    assert clone.recommend(["u0", "u1"], k=3) == model.recommend(["u0", "u1"], k=3)
    with pytest.raises(ValueError, match="dim"):
        OnlineRecommender(mf=MatrixFactorization(dim=8)).load_state_dict(state)


def test_signals_come_configured_and_a_loaded_state_restarts_them_fresh():
    from learners.cooccurrence import CoOccurrence
    from learners.popularity import DecayedCounts

    trans = CoOccurrence(window=5, context=5, decay=0.5, alpha=0.62, directed=True, name="transitions")
    now = DecayedCounts(half_life=300.0)
    model = OnlineRecommender(transitions=trans, now=now, mf=None, blend_mf=True, seed=0)
    assert model.trans is trans and model.now is now and model.mf is None
    assert model.blend.names == ["cooccurrence", "trending", "popularity", "stage", "now", "transitions",
                                 "content"]
    model.learn_many(events([("u0", "a"), ("u0", "b"), ("u1", "a"), ("u1", "b"), ("u2", "a")]))
    assert now.n_events == 5  # the model learns into the signal it was given
    same = CoOccurrence(window=5, context=5, decay=0.5, alpha=0.62, directed=True, name="transitions")
    clone = OnlineRecommender(transitions=same, now=DecayedCounts(half_life=300.0), mf=None, seed=0)
    clone.load_state_dict(model.state_dict())
    assert clone.now.half_life == 300.0 and clone.now.n_events == 5
    assert clone.recommend(["u2"], k=2) == model.recommend(["u2"], k=2)
    with pytest.raises(ValueError, match="transitions"):  # the saved state has transition counts
        OnlineRecommender(now=DecayedCounts(half_life=300.0), mf=None).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="recent"):
        OnlineRecommender(cooccurrence=CoOccurrence(window=80, context=10), recent=60)


def test_predict_many_and_ratings():
    model = OnlineRecommender(seed=0)
    pairs = [(f"u{u}", f"i{i}") for u in range(20) for i in range(5)]
    for _ in range(20):
        model.learn_many(events(pairs, kind="rating", value=4.0))
    pred = model.predict_many(events([("u1", "i2"), ("unknown", "i1")], kind="rating"))
    assert pred.shape == (2,) and np.all(np.abs(pred - 4.0) < 0.5)
    no_mf = OnlineRecommender(mf=None)
    no_mf.learn_many(events(pairs, kind="rating", value=3.0))
    assert no_mf.predict_many(events([("u1", "i2")])).tolist() == [3.0]


def test_capacity_recycles_item_columns():
    model = OnlineRecommender(seed=0, max_items=4)
    model.learn_many(events([("u", "a"), ("u", "b"), ("u", "c"), ("u", "d")]))
    model.learn_many(events([("v", "e"), ("v", "f")], t0=10))
    state = model.state_dict()
    live = [x for x in state.items["item_id"].tolist() if x]
    assert len(live) == 4 and {"e", "f"} <= set(live)
    # the evicted items' counts do not leak into the items that reuse their columns
    assert int(state.items["n_events"].sum()) == 4
    recs = model.recommend(["v"], k=4)[0]
    assert {r.item_id for r in recs} <= set(live)
    # ... yet every interaction learned stays counted as applied, also across a checkpoint
    assert model.events_applied == 6
    restored = OnlineRecommender(seed=0, max_items=4)
    restored.load_state_dict(state)
    assert restored.events_applied == 6


def test_on_drift_shrinks_old_evidence():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    before = model.cooc.counts.sum()
    model.on_drift(forget=0.5, keep_recent=1)
    assert model.cooc.counts.sum() == pytest.approx(0.5 * before)
    assert (model._recent_items[:, 1:] == -1).all()
    assert model.mf.lr_scale > 1


def test_on_drift_forgets_each_users_older_taste_by_default():
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    factors = model.mf.user_factors.copy()
    model.on_drift()  # by default every user's pre-drift context goes: it is the old taste
    assert (model._recent_items == -1).all()
    np.testing.assert_allclose(model.mf.user_factors, 0.2 * factors)
    model = OnlineRecommender(seed=0)
    model.learn_many(two_taste_log())
    model.learn_many(events([("u0", "x"), ("u0", "y")], t0=500))  # u0 switched taste
    model.on_drift(keep_recent=2)
    assert (model._recent_items[:, 2:] == -1).all() and (model._recent_items[:, :2] >= 0).any()
    u0 = model._users.cols(np.array(["u0"], dtype=object), add=False)[0]
    assert model.item_ids(model._recent_items[u0, :2]).tolist() == ["y", "x"]  # its newest taste only
    assert (model._recent_items[u0, 2:] == -1).all()


def test_extra_source_is_blended():
    class Constant:
        name = "const"

        def __init__(self):
            self.learned = 0

        def learn(self, batch):
            self.learned += len(batch.users)

        def score(self, batch):
            out = np.zeros((len(batch.users), batch.n_items), np.float32)
            return out

        def score_pairs(self, batch, cols):
            return np.zeros(cols.shape, np.float32)

        def reset_items(self, cols):
            pass

    source = Constant()
    model = OnlineRecommender(sources=[source], seed=0)
    model.learn_many(two_taste_log())
    assert source.learned == 120 and "const" in model.blend.names
    scores, cols = model.score_many(events([("u0", "a")]))
    assert scores.shape == (1, len(cols))


def test_a_user_who_saw_every_live_item_gets_a_short_or_empty_list():
    model = OnlineRecommender(seed=0)
    model.learn_many(events([("a", "x"), ("a", "y"), ("b", "x")]))
    assert model.recommend(["a"], k=3) == [[]]
    lists = model.recommend(["a", "b", "nobody"], k=3)
    assert lists[0] == []
    assert [r.item_id for r in lists[1]] == ["y"]
    assert {r.item_id for r in lists[2]} == {"x", "y"}
    assert (model.n_users, model.n_items) == (2, 2)


def _deep_model(max_items=64):
    from learners.deep.reranker import DeepReranker

    reranker = DeepReranker(every_events=200, background=False, fixed_cost_s=0.0, device="cpu", batch_size=64)
    return OnlineRecommender(deep=reranker, seed=0, max_items=max_items), reranker


def _random_stream(model, n_batches, n_items=90, seed=0):
    rng = np.random.default_rng(seed)
    for b in range(n_batches):
        batch = Interactions.from_records([
            {"user_id": f"u{rng.integers(0, 40)}", "item_id": f"i{rng.integers(0, n_items)}",
             "ts": b * 100 + j}
            for j in range(100)])
        model.score_many(batch)
        model.learn_many(batch)


def test_the_deep_stage_reranks_served_lists_and_survives_a_checkpoint(tmp_path):
    from learners.deep.reranker import DeepReranker
    from stream.checkpoint import load_latest_checkpoint, save_checkpoint

    model, reranker = _deep_model()
    assert model.model_version == 0 and OnlineRecommender().model_version is None
    freed = []
    reset_items = reranker.reset_items
    reranker.reset_items = lambda cols: (freed.extend(cols.tolist()), reset_items(cols))
    _random_stream(model, 8)
    assert freed  # 90 items through 64 columns: recycled columns reach the deep stage
    assert model.model_version == reranker.model_version >= 1
    users = [f"u{u}" for u in range(40)]
    served = model.recommend(users, k=5)
    deep = model.reranker
    model.reranker = None  # the blend alone, same state
    blend_lists = model.recommend(users, k=5)
    model.reranker = deep
    assert served != blend_lists
    for deep_list, blend_list in zip(served, blend_lists, strict=True):
        assert all(r.source in model.blend.names + ["explore", "deep"] for r in deep_list)
        # "deep": listed only thanks to the deep stage; what the blend lists too keeps its blend source
        blend_items = {r.item_id for r in blend_list}
        assert all((r.source == "deep") == (r.item_id not in blend_items) for r in deep_list
                   if r.source != "explore")
        if deep_list and blend_list:  # deep candidates are lifted above every blend score
            assert deep_list[0].score > blend_list[0].score
    assert any(r.source == "deep" for row in served for r in row)

    save_checkpoint(tmp_path, model.state_dict(), {"interactions:0": 1}, {})
    state, _, _ = load_latest_checkpoint(tmp_path)
    clone = OnlineRecommender(deep=DeepReranker(device="cpu"), seed=0, max_items=64)
    clone.load_state_dict(state)
    assert clone.model_version == model.model_version
    restored = clone.reranker.tuner.serving.model.state_dict()
    for key, weight in reranker.tuner.serving.model.state_dict().items():
        np.testing.assert_array_equal(restored[key].numpy(), weight.numpy())
    # the candidates' features read what the stage saw (its context is in the checkpoint): same lists
    assert _lists(clone.recommend(users, k=5)) == _lists(served)


def _lists(rows):
    return [[(r.item_id, r.source, round(float(r.score), 4)) for r in row] for row in rows]


def test_best_columns_matches_a_stable_full_sort_with_ties_and_masks():
    from learners.recommender import best_columns

    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        row = rng.integers(0, 5, n).astype(np.float32)  # many ties
        row[rng.random(n) < 0.2] = -np.inf
        mask = np.isfinite(row) & (rng.random(n) < 0.8)
        m = int(rng.integers(1, 12))
        cols = np.flatnonzero(mask)
        reference = cols[np.argsort(-row[cols], kind="stable")][:m]
        assert best_columns(row, mask, m).tolist() == reference.tolist()


class _Unversioned(OnlineRecommender):
    """The same learner without `item_index_version`: the evaluator re-checks every column each batch."""

    item_index_version = None


def test_item_index_version_lets_the_evaluator_skip_checks_without_changing_ranks() -> None:
    from learners.evaluate import PrequentialEvaluator, prequential_step
    from learners.synthetic import generate

    log = generate(n_events=3000, n_users=60, n_items=80, seed=5).log
    ranks, versions = [], set()
    for model in (OnlineRecommender(seed=0, max_items=40), _Unversioned(seed=0, max_items=40)):
        evaluator = PrequentialEvaluator(seed=0)
        for lo in range(0, len(log), 25):
            prequential_step(model, evaluator, log[lo: lo + 25])
            versions.add(model.item_index_version)
        ranks.append(evaluator.ranks())
    assert len(versions) > 10  # evictions moved columns between owners many times
    assert len(ranks[0]) > 500 and np.array_equal(ranks[0], ranks[1])
    state = OnlineRecommender(seed=0)
    state.learn_many(log[:500])
    before = state.item_index_version
    state.learn_many(log[500:1000])  # new items, no eviction: no column changed hands
    assert state.item_index_version == before
    state.load_state_dict(state.state_dict())
    assert state.item_index_version != before  # a loaded state brings a new index


def test_evaluator_follows_columns_the_catalog_took_over() -> None:
    """Announced items evict idle ones and take their columns, with no new interaction to make the
    evaluator look again: only the changed `item_index_version` tells it to re-check its cache."""
    from learners.evaluate import PrequentialEvaluator, prequential_step

    rng = np.random.default_rng(0)

    def events(items: list[str], t0: int) -> Interactions:
        return Interactions.from_records([{"user_id": f"u{rng.integers(30)}", "item_id": item,
                                           "ts": float(t0 + k)} for k, item in enumerate(items)])

    idle, busy = [f"i{k}" for k in range(10)], [f"i{k}" for k in range(10, 40)]
    model, evaluator = OnlineRecommender(seed=0, max_items=40), PrequentialEvaluator(seed=0)
    stream = events(idle + busy + [busy[k] for k in rng.integers(0, 30, 400)], 0)
    for lo in range(0, len(stream), 20):
        prequential_step(model, evaluator, stream[lo: lo + 20])
    model.add_items([ItemMeta(f"x{k}", f"new title {k}") for k in range(10)])  # the idle items' columns
    assert (model.item_cols(np.array(idle, dtype=object)) < 0).all()
    prequential_step(model, evaluator, events([busy[k] for k in rng.integers(0, 30, 20)], 1000))
    slots = np.flatnonzero(evaluator._holds[: evaluator._n_slots])
    held = evaluator._slot_item[slots]
    assert set(idle) <= set(held.tolist())
    # every item the evaluator ranks maps to the column holding it now, or to none (-1: forgotten)
    assert np.array_equal(evaluator._model_col[slots], model.item_cols(held))
