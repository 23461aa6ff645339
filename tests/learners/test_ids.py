import numpy as np
import pytest

from learners.ids import IdIndex, grow_rows


def ids(*xs):
    return np.asarray(xs, dtype=object)


def test_new_ids_get_dense_columns_and_round_trip():
    index = IdIndex()
    cols = index.cols(ids("x", "y", "x", "z"))
    assert cols.tolist() == [0, 1, 0, 2]
    assert index.ids(cols).tolist() == ["x", "y", "x", "z"]
    assert index.cols(ids("z", "nope"), add=False).tolist() == [2, -1]
    assert len(index) == 3 and "nope" not in index


def test_arrays_grow_past_initial_size():
    index = IdIndex()
    many = ids(*[f"id{n}" for n in range(5000)])
    cols = index.cols(many)
    assert cols.tolist() == list(range(5000))
    assert index.ids(cols[-3:]).tolist() == ["id4997", "id4998", "id4999"]


def test_capacity_evicts_least_recently_seen_and_reuses_columns():
    index = IdIndex(capacity=3)
    index.cols(ids("a", "b", "c"))
    index.cols(ids("a"))  # b is now the least recently seen
    generation = index.generation
    col_d = index.cols(ids("d"))[0]
    assert "b" not in index and {"a", "c", "d"} == {str(x) for x in index.ids(index.live_cols())}
    assert col_d == 1  # b's column is reused
    assert index.generation == generation + 1
    assert index.pop_freed().tolist() == [1]
    assert index.pop_freed().tolist() == []
    assert len(index) == 3 and index.n_cols == 3


def test_capacity_never_evicts_ids_of_the_same_call():
    index = IdIndex(capacity=2)
    index.cols(ids("a", "b"))
    index.cols(ids("b", "c"))
    assert {"b", "c"} == {str(x) for x in index.ids(index.live_cols())}
    with pytest.raises(ValueError, match="exceed the capacity"):
        index.cols(ids("p", "q", "r"))


def test_idle_ids_expire_by_event_count():
    index = IdIndex(max_idle=10, expire_every=1)
    index.cols(ids("old"))
    for n in range(20):
        index.cols(ids(f"new{n % 3}"))
    assert "old" not in index and "new0" in index
    assert 0 in index.pop_freed().tolist()


def test_idle_ids_expire_by_time():
    index = IdIndex(max_idle=100.0, clock="time")
    index.cols(ids("a"), now=0.0)
    index.cols(ids("b"), now=50.0)
    assert index.expire(now=120.0).tolist() == [0]
    assert "a" not in index and "b" in index
    with pytest.raises(ValueError, match="needs `now`"):
        index.cols(ids("c"))


def test_state_round_trip_keeps_columns():
    index = IdIndex(capacity=2)
    index.cols(ids("a", "b"))
    index.cols(ids("c"))  # evicts a, c takes column 0
    saved_ids, saved_seen = index.state_arrays()
    other = IdIndex(capacity=2)
    other.load_arrays(saved_ids, saved_seen)
    assert other.cols(ids("c", "b"), add=False).tolist() == index.cols(ids("c", "b"), add=False).tolist()


def test_bad_ids_are_rejected():
    with pytest.raises(ValueError):
        IdIndex().cols(ids(""))
    with pytest.raises(IndexError):
        IdIndex().ids(np.array([3]))


def test_grow_rows_doubles():
    a = np.arange(20).reshape(10, 2)
    b = grow_rows(a, 11)
    assert b.shape == (20, 2) and (b[:10] == a).all() and (b[10:] == 0).all()
