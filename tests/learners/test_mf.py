import numpy as np

from learners.mf import MatrixFactorization


def test_bpr_learns_user_preferences():
    rng = np.random.default_rng(0)
    mf = MatrixFactorization(dim=8, lr=0.1, seed=1)
    mf.resize(n_users=20, n_items=10)
    # even users like items 0-4, odd users items 5-9
    for _ in range(300):
        users = rng.integers(0, 20, 64)
        items = np.where(users % 2 == 0, rng.integers(0, 5, 64), rng.integers(5, 10, 64))
        even = (users % 2 == 0)[:, None]
        negatives = np.where(even, rng.integers(5, 10, (64, 2)), rng.integers(0, 5, (64, 2)))
        mf.learn(users, items, negatives)
    scores = mf.score(np.array([0, 1]), n_items=10)
    assert scores[0, :5].mean() > scores[0, 5:].mean()
    assert scores[1, 5:].mean() > scores[1, :5].mean()
    pairs = mf.score_pairs(np.array([0]), np.array([[3, 7]]))
    np.testing.assert_allclose(pairs, scores[:1, [3, 7]], rtol=1e-5)


def test_squared_loss_learns_ratings():
    rng = np.random.default_rng(0)
    mf = MatrixFactorization(dim=4, rating_lr=0.05, seed=0)
    mf.resize(n_users=10, n_items=6)
    truth = np.where(np.arange(6) < 3, 4.5, 1.5)  # items 0-2 are liked by everyone
    for _ in range(400):
        users = rng.integers(0, 10, 32)
        items = rng.integers(0, 6, 32)
        mf.learn(users, items, rng.integers(0, 6, (32, 1)), ratings=truth[items].astype(np.float32))
    pred = mf.predict(np.zeros(6, np.int64), np.arange(6))
    assert np.abs(pred - truth).mean() < 0.5
    # implicit events (NaN ratings) leave the rating head alone
    n = mf.n_ratings
    mf.learn(np.array([0]), np.array([0]), np.array([[1]]), ratings=np.array([np.nan], np.float32))
    assert mf.n_ratings == n


def test_unknown_users_and_items_fall_back():
    mf = MatrixFactorization(dim=4)
    assert mf.score(np.array([-1, 3]), n_items=2).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert mf.predict(np.array([-1]), np.array([-1])).tolist() == [0.0]


def test_reset_reinitialises_rows():
    mf = MatrixFactorization(dim=4, seed=0)
    mf.resize(2, 2)
    mf.user_bias[1] = 3.0
    mf.reset_users(np.array([1]))
    assert mf.user_bias[1] == 0.0 and np.abs(mf.user_factors[1]).sum() > 0
