import numpy as np

from learners.deep.features import CandidateFeatures
from learners.deep.history import RecentItems


def test_candidates_are_the_blend_top_minus_the_users_own_items():
    feats = CandidateFeatures(n_candidates=3)
    feats.learn(np.array([0, 0]), np.array([4, 5]))  # user 0 took items 4 and 5
    blend = np.tile(np.arange(8, dtype=np.float32), (2, 1))  # item 7 best, then 6, 5, ...
    recent = np.array([[6, -1], [-1, -1]])  # user 0's earlier event in this batch: item 6
    c = feats.build(np.array([0, 1]), recent, np.zeros((2, 2)), np.zeros(2), blend, {"s": blend},
                    np.arange(8))
    assert c.items.tolist() == [[7, 3, 2], [7, 6, 5]]
    assert c.label(np.array([3, 4])).tolist() == [1, -1]


def test_each_source_proposes_its_own_best_items():
    feats = CandidateFeatures(n_candidates=4, per_source=1, exclude_seen=False)
    blend = np.tile(np.arange(10, dtype=np.float32), (1, 1))
    likes_zero = np.zeros((1, 10), np.float32)
    likes_zero[0, 0] = 5.0  # the blend ranks item 0 last; this source is sure of it
    c = feats.build(np.array([0]), np.full((1, 2), -1), np.zeros((1, 2)), np.zeros(1), blend,
                    {"a": likes_zero, "b": blend}, np.arange(10))
    assert set(c.items[0, : c.n_valid[0]].tolist()) == {9, 8, 0}  # item 9 proposed twice counts once
    assert c.items[0, 0] == 9 and c.n_valid[0] == 3


def test_item_statistics_features_follow_the_stream():
    feats = CandidateFeatures(n_candidates=2, exclude_seen=False)
    feats.learn(np.array([0, 1, 2]), np.array([1, 1, 0]))
    blend = np.array([[0.0, 1.0]], np.float32)
    c = feats.build(np.array([3]), np.full((1, 1), -1), np.zeros((1, 1)), np.zeros(1), blend, {"s": blend},
                    np.arange(2))
    count = c.features[0, :, 2]  # log1p(interactions), candidates in blend order: item 1, item 0
    np.testing.assert_allclose(count, np.log1p([2.0, 1.0]), rtol=1e-6)


def test_recent_items_include_earlier_events_of_the_batch_only():
    recent = RecentItems(length=3)
    recent.learn(np.array(["a"], dtype=object), np.array([1]), np.array([0.0]))
    users = np.array(["b", "a", "a", "b"], dtype=object)
    cols, items, ts = recent.context(users, np.array([7, 2, 3, 8]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert items.tolist() == [[-1, -1, -1], [1, -1, -1], [2, 1, -1], [7, -1, -1]]
    assert ts[2, :2].tolist() == [2.0, 0.0] and cols.tolist()[1] >= 0 and cols[0] == -1


def test_recent_items_match_a_plain_per_user_history_over_many_batches():
    rng = np.random.default_rng(1)
    recent = RecentItems(length=4)
    history: dict[str, list[tuple[int, float]]] = {}  # user -> (item, ts), most recent first
    clock = 0.0
    for _ in range(30):
        n = int(rng.integers(1, 40))
        users = np.array([f"u{u}" for u in rng.integers(0, 25, n)], dtype=object)
        items = rng.integers(0, 50, n)
        ts = clock + np.arange(n, dtype=np.float64)
        clock += n
        cols, got, got_ts = recent.context(users, items, ts)
        seen: dict[str, list[tuple[int, float]]] = {u: list(h) for u, h in history.items()}
        for i, (u, item, t) in enumerate(zip(users, items, ts, strict=True)):
            expected = (seen.get(u, []) + [(-1, 0.0)] * 4)[:4]
            assert got[i].tolist() == [x for x, _ in expected]
            assert got_ts[i].tolist() == [x for _, x in expected]
            assert (cols[i] >= 0) == (u in history)
            seen[u] = [(int(item), float(t))] + seen.get(u, [])
        if rng.random() < 0.8:  # sometimes learned without being scored first
            recent.learn(users, items, ts)
        else:
            recent.learn(users.copy(), items, ts)
        history = seen


def test_evicted_users_leave_no_history_behind():
    recent = RecentItems(length=2, max_users=2)
    recent.learn(np.array(["a", "b"], dtype=object), np.array([1, 2]), np.array([0.0, 1.0]))
    users = np.array(["c"], dtype=object)
    recent.context(users, np.array([3]), np.array([2.0]))
    _, freed = recent.learn(users, np.array([3]), np.array([2.0]))  # "c" takes the column of "a"
    assert len(freed) == 1
    cols, items, _ = recent.context(np.array(["a", "c", "b"], dtype=object), np.full(3, -1), np.full(3, 3.0))
    assert cols[0] == -1 and items.tolist() == [[-1, -1], [3, -1], [2, -1]]


def test_non_finite_blend_scores_are_never_candidates():
    feats = CandidateFeatures(n_candidates=3, exclude_seen=False)
    blend = np.tile(np.arange(8, dtype=np.float32), (2, 1))
    blend[0, 7], blend[0, 6], blend[1, 5] = np.nan, np.inf, -np.inf
    c = feats.build(np.array([0, 1]), np.full((2, 1), -1), np.zeros((2, 1)), np.zeros(2), blend,
                    {"s": blend}, np.arange(8))
    assert c.items.tolist() == [[5, 4, 3], [7, 6, 4]]
    assert np.isfinite(c.features).all()


def test_a_shared_source_row_equals_the_same_row_for_every_event():
    rng = np.random.default_rng(2)
    blend = rng.normal(size=(4, 20)).astype(np.float32)
    shared = rng.normal(size=20).astype(np.float32)
    args = (np.arange(4), np.full((4, 2), -1), np.zeros((4, 2)), np.zeros(4), blend)
    one = CandidateFeatures(n_candidates=5, exclude_seen=False).build(*args, {"s": shared}, np.arange(20))
    full = CandidateFeatures(n_candidates=5, exclude_seen=False).build(
        *args, {"s": np.tile(shared, (4, 1))}, np.arange(20))
    np.testing.assert_array_equal(one.items, full.items)
    np.testing.assert_allclose(one.features, full.features, rtol=1e-6)
    assert np.abs(one.features[..., -1]).sum() > 0  # the share feature saw the row's mass
