import numpy as np
import pytest

from learners.deep.select import top_columns


def _as_sets(cols: np.ndarray) -> list[set[int]]:
    return [set(row.tolist()) for row in cols]


def test_top_columns_are_each_rows_k_largest():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 3000)).astype(np.float32) ** 3  # skewed, distinct values
    scores[5, :] = -np.inf
    scores[5, [7, 9, 11]] = [1.0, 2.0, 3.0]  # a row of mostly -inf: the plain path
    scores[6, rng.random(3000) < 0.9] = -np.inf  # a user who saw most items
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :50]
    got = top_columns(scores, 50)
    assert got.shape == (64, 50)
    for row in range(64):
        if row == 5:  # 3 finite entries then ties at -inf: the 3 must be there
            assert {7, 9, 11} <= set(got[row].tolist()) and len(set(got[row].tolist())) == 50
        else:
            assert set(got[row].tolist()) == set(expected[row].tolist())


def test_ties_and_narrow_matrices():
    flat = np.zeros((3, 500), dtype=np.float32)
    flat[:, 10] = 1.0
    got = top_columns(flat, 5)  # heavy ties at 0: any 4 zeros besides the one best column
    assert all(10 in row and len(row) == 5 for row in _as_sets(got))
    narrow = np.array([[3.0, 1.0, 2.0]], dtype=np.float32)
    assert _as_sets(top_columns(narrow, 2)) == [{0, 2}]
    with pytest.raises(ValueError, match="k must be"):
        top_columns(narrow, 4)
