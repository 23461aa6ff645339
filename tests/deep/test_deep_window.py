import numpy as np
import pytest
import torch

from learners.deep.window import SlidingWindow


def _append(window: SlidingWindow, events: np.ndarray, ts: np.ndarray) -> None:
    window.append(events, ts, x=events.astype(np.float32)[:, None], y=events)


def _window(**kwargs) -> SlidingWindow:
    return SlidingWindow(kwargs.pop("capacity", 100), {"x": ((1,), torch.float32), "y": ((), torch.int64)},
                         **kwargs)


def test_capacity_keeps_the_newest_in_arrival_order():
    window = _window(capacity=5)
    for lo in range(0, 12, 4):
        _append(window, np.arange(lo, lo + 4), np.zeros(4))
    assert len(window) == 5
    snap = window.snapshot()  # the appends wrapped around the ring twice
    assert snap["y"].tolist() == [7, 8, 9, 10, 11] and snap["event"].tolist() == [7, 8, 9, 10, 11]
    assert snap["x"][:, 0].tolist() == [7.0, 8.0, 9.0, 10.0, 11.0]


def test_a_snapshot_into_shared_buffers_equals_a_fresh_one():
    window = _window(capacity=5, span_events=3)
    shared = window.shared_buffers()
    assert all(t.is_shared() and len(t) == 5 for t in shared.values())
    for lo in range(0, 12, 4):
        _append(window, np.arange(lo, lo + 4), np.zeros(4))
        fresh, into = window.snapshot(before_event=lo + 3), window.snapshot(before_event=lo + 3, out=shared)
        assert fresh.keys() == into.keys()
        for name in fresh:
            assert torch.equal(fresh[name], into[name])
        # views of the shared buffers: another process gets a handle, not a copy
        assert into["y"].untyped_storage().data_ptr() == shared["y"].untyped_storage().data_ptr()


def test_span_in_events_and_age_in_seconds_bound_the_snapshot():
    window = _window(span_events=10)
    _append(window, np.arange(0, 30, 3), np.arange(10, dtype=np.float64))
    assert window.snapshot()["y"].tolist() == [18, 21, 24, 27]  # events > 27 - 10
    aged = _window(max_age_s=2.5)
    _append(aged, np.arange(10), np.arange(10, dtype=np.float64))
    assert aged.snapshot()["y"].tolist() == [7, 8, 9]


def test_snapshot_before_an_event_excludes_it_and_is_a_copy():
    window = _window()
    _append(window, np.arange(10), np.zeros(10))
    snap = window.snapshot(before_event=6)
    assert snap["y"].tolist() == list(range(6))
    _append(window, np.arange(10, 20), np.zeros(10))  # the stream goes on while a round trains
    assert snap["y"].tolist() == list(range(6))


def test_bad_fields_are_rejected_with_a_clear_error():
    window = _window()
    with pytest.raises(ValueError, match="needs fields"):
        window.append(np.arange(2), np.zeros(2), x=np.zeros((2, 1), np.float32))
    with pytest.raises(ValueError, match="per-sample shape"):
        window.append(np.arange(2), np.zeros(2), x=np.zeros((2, 3), np.float32), y=np.arange(2))
    with pytest.raises(ValueError, match="capacity"):
        _window(capacity=0)
