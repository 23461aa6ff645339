import math

import numpy as np

from learners.base import Interactions, ItemMeta, Recommender
from learners.popularity import DecayedCounts, DecayedPopularity, Popularity


def batch(items, users=None, ts=None):
    n = len(items)
    users = users or ["u"] * n
    ts = list(range(n)) if ts is None else ts
    return Interactions.from_records(
        [{"user_id": u, "item_id": i, "ts": t} for u, i, t in zip(users, items, ts, strict=True)]
    )


def test_popularity_ranks_by_count_and_is_a_recommender():
    model = Popularity()
    assert isinstance(model, Recommender)
    model.learn_many(batch(["a", "b", "b", "c", "c", "c"]))
    recs = model.recommend(["u1", "u2"], k=2)
    assert [r.item_id for r in recs[0]] == ["c", "b"] == [r.item_id for r in recs[1]]
    assert recs[0][0].score == 3.0 and recs[0][0].source == "popularity"
    scores, cols = model.score_many(batch(["a", "a"]))
    assert scores.shape == (2, 3)
    by_id = dict(zip(model.item_ids(cols).tolist(), scores[0].tolist(), strict=True))
    assert by_id == {"a": 1.0, "b": 2.0, "c": 3.0}


def test_decayed_popularity_prefers_recent_items():
    model = DecayedPopularity(half_life=2.0, unit="events")
    model.learn_many(batch(["old"] * 6 + ["new"] * 3))
    assert model.recommend(["u"], k=1)[0][0].item_id == "new"
    plain = Popularity()
    plain.learn_many(batch(["old"] * 6 + ["new"] * 3))
    assert plain.recommend(["u"], k=1)[0][0].item_id == "old"


def test_decayed_counts_halve_per_half_life_in_seconds():
    counts = DecayedCounts(half_life=10.0, unit="seconds")
    counts.learn(np.array([0, 1]), np.array([0.0, 10.0]))
    np.testing.assert_allclose(counts.values(2), [0.5, 1.0])
    # a long gap rebases internally without overflow
    counts.learn(np.array([1]), np.array([1e6]))
    assert np.isfinite(counts.values(2)).all() and math.isclose(counts.values(2)[1], 1.0)


def test_added_items_are_known_with_zero_score():
    model = DecayedPopularity()
    model.learn_many(batch(["a"]))
    model.add_items([ItemMeta("fresh", title="Fresh item")])
    assert model.item_cols(np.array(["fresh", "zz"], dtype=object)).tolist() == [1, -1]
    assert [r.item_id for r in model.recommend(["u"], k=5)[0]] == ["a", "fresh"]


def test_state_round_trip():
    model = DecayedPopularity(half_life=3.0)
    model.learn_many(batch(["a", "b", "b", "c"]))
    state = model.state_dict()
    assert state.meta["events_applied"] == 4 and state.items["n_events"].sum() == 4
    clone = DecayedPopularity(half_life=3.0)
    clone.load_state_dict(state)
    assert clone.recommend(["u"], k=3) == model.recommend(["u"], k=3)
    clone.learn_many(batch(["a"], ts=[9]))
    model.learn_many(batch(["a"], ts=[9]))
    assert clone.recommend(["u"], k=3) == model.recommend(["u"], k=3)


def test_capacity_bounds_the_catalog():
    model = Popularity(max_items=2)
    model.learn_many(batch(["a", "a"]))
    model.learn_many(batch(["b"]))
    model.learn_many(batch(["c"]))  # evicts a, the least recently seen
    assert sorted(r.item_id for r in model.recommend(["u"], k=5)[0]) == ["b", "c"]
    assert all(r.score == 1.0 for r in model.recommend(["u"], k=5)[0])


def test_item_index_version_changes_with_evictions_and_ranks_stay_exact():
    from learners.evaluate import PrequentialEvaluator, prequential_step
    from learners.synthetic import generate

    class Unversioned(DecayedPopularity):
        item_index_version = None  # the evaluator re-checks every cached column each batch

    log = generate(n_events=3000, n_users=60, n_items=80, seed=5).log
    ranks, versions = [], set()
    for model_class in (DecayedPopularity, Unversioned):
        model = model_class(half_life=300.0, max_items=40)
        evaluator = PrequentialEvaluator(seed=0)
        for lo in range(0, len(log), 25):
            prequential_step(model, evaluator, log[lo: lo + 25])
            versions.add(model.item_index_version)
        ranks.append(evaluator.ranks())
    assert len(versions) > 10 and len(ranks[0]) > 500 and np.array_equal(ranks[0], ranks[1])
    model = DecayedPopularity()
    model.learn_many(batch(["a", "b"]))
    before = model.item_index_version
    model.learn_many(batch(["c"]))
    assert model.item_index_version == before  # a new item, nothing evicted
    model.load_state_dict(model.state_dict())
    assert model.item_index_version != before
