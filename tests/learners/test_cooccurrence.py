import numpy as np

from learners.cooccurrence import BatchContext, CoOccurrence, recent_context


def context(users, items, recent, n_items):
    users, items = np.asarray(users), np.asarray(items)
    ctx, batch_users, new_rows = recent_context(users, items, recent)
    n = len(users)
    return BatchContext(users=users, items=items, ts=np.zeros(n), value=np.ones(n, np.float32),
                        kind=np.zeros(n, np.uint8), recent=ctx,
                        n_items=n_items), batch_users, new_rows


def test_recent_context_uses_earlier_in_batch_events_only():
    recent = np.full((3, 3), -1)
    recent[0] = [5, 4, -1]
    users = np.array([0, 1, 0, 0, 2, 1])
    items = np.array([10, 11, 12, 13, 14, 15])
    ctx, batch_users, new_rows = recent_context(users, items, recent)
    assert ctx.tolist() == [
        [5, 4, -1],  # user 0 before the batch
        [-1, -1, -1],
        [10, 5, 4],  # user 0's own earlier event of the batch comes first
        [12, 10, 5],
        [-1, -1, -1],
        [11, -1, -1],
    ]
    rows = dict(zip(batch_users.tolist(), new_rows.tolist(), strict=True))
    assert rows == {0: [13, 12, 10], 1: [15, 11, -1], 2: [14, -1, -1]}


def test_cooccurring_items_score_higher_and_scores_match_pairs():
    source = CoOccurrence(window=3, context=3, decay=0.9, alpha=0.5)
    recent = np.full((10, 3), -1)
    # users 0..5 all take item 0 then item 1; users 6..9 take item 2 then item 3
    users = np.repeat(np.arange(10), 2)
    items = np.array([0, 1] * 6 + [2, 3] * 4)
    batch, batch_users, new_rows = context(users, items, recent, n_items=4)
    source.learn(batch)
    assert source.counts[0, 1] == source.counts[1, 0] == 6
    assert source.counts[0, 2] == 0
    query, _, _ = context([0], [-1], np.array([[0, -1, -1]]), n_items=4)
    scores = source.score(query)
    assert scores.shape == (1, 4)
    assert scores[0, 1] > scores[0, 3] and scores[0, 1] > scores[0, 2]
    cols = np.array([[1, 2, 3]])
    np.testing.assert_allclose(source.score_pairs(query, cols), scores[:, [1, 2, 3]], rtol=1e-5)


def test_reset_and_forget():
    source = CoOccurrence(window=2, context=2)
    batch, _, _ = context([0, 0, 0], [0, 1, 2], np.full((1, 2), -1), n_items=3)
    source.learn(batch)
    source.forget(0.5)
    assert source.counts[0, 1] == 0.5
    source.reset_items(np.array([1]))
    assert source.counts[1].sum() == 0 and source.counts[:, 1].sum() == 0 and source.item_counts[1] == 0
    assert source.counts[0, 2] == 0.5


def test_grows_with_new_items():
    source = CoOccurrence(window=1, context=1)
    batch, _, _ = context([0, 0], [0, 300], np.full((1, 1), -1), n_items=301)
    source.learn(batch)
    assert source.counts.shape[0] >= 301 and source.counts[300, 0] == 1
