"""A sliding window of the newest training samples, resident on the training device.

The stream appends one micro-batch at a time (one host->device copy per batch, never per training
step); the fine-tuner takes a `snapshot`: the samples of the last `span_events` events and, with
`max_age_s`, of the last `max_age_s` seconds of event time, in arrival order, as tensors it may keep
while the stream goes on appending.

>>> import numpy as np, torch
>>> window = SlidingWindow(4, {"x": ((2,), torch.float32), "y": ((), torch.int64)})
>>> for start in (0, 3):
...     n = 3
...     window.append(np.arange(start, start + n), np.full(n, float(start)),
...                   x=np.ones((n, 2), np.float32), y=np.arange(start, start + n))
>>> window.snapshot()["y"].tolist()  # capacity 4: the oldest two fell out
[2, 3, 4, 5]
>>> window.snapshot(before_event=5)["y"].tolist()
[2, 3, 4]
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import torch

FieldSpec = Mapping[str, tuple[tuple[int, ...], torch.dtype]]


class SlidingWindow:
    """Ring buffer of samples on `device`, bounded in samples, in events and in seconds.

    Parameters
    ----------
    capacity
        Most samples kept (the ring's size).
    fields
        name -> (per-sample shape, dtype) of each stored tensor.
    span_events
        Only samples of the last `span_events` stream events are handed out (None: no bound).
    max_age_s
        Only samples at most this many seconds of event time older than the newest (None: no bound).
    """

    def __init__(
        self,
        capacity: int,
        fields: FieldSpec,
        device: torch.device | str = "cpu",
        span_events: int | None = None,
        max_age_s: float | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.fields = dict(fields)
        self.device = torch.device(device)
        self.span_events = span_events
        self.max_age_s = max_age_s
        self._data = {
            name: torch.zeros((capacity, *shape), dtype=dtype, device=self.device)
            for name, (shape, dtype) in self.fields.items()
        }
        self._event = torch.full((capacity,), -1, dtype=torch.int64, device=self.device)
        self._ts = torch.zeros(capacity, dtype=torch.float64, device=self.device)
        self._next = 0  # ring position of the next write
        self._size = 0
        self._newest_event = -1
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._size

    @property
    def newest_event(self) -> int:
        return self._newest_event

    def append(self, event_index: np.ndarray, ts: np.ndarray, **arrays: np.ndarray) -> None:
        """Add samples (one row per sample) with their stream event index and event time."""
        n = len(event_index)
        if set(arrays) != set(self.fields):
            raise ValueError(f"window needs fields {sorted(self.fields)}, got {sorted(arrays)}")
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            event_index, ts = event_index[-self.capacity :], ts[-self.capacity :]
            arrays = {k: v[-self.capacity :] for k, v in arrays.items()}
            n = self.capacity
        # the ring slots are at most two contiguous runs: slice copies, no scattered index_put
        head = min(n, self.capacity - self._next)
        runs = [(slice(self._next, self._next + head), slice(0, head))]
        if head < n:
            runs.append((slice(0, n - head), slice(head, n)))
        staged = {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}
        for name, tensor in staged.items():
            shape, dtype = self.fields[name]
            if tuple(tensor.shape[1:]) != tuple(shape):
                got = tuple(tensor.shape[1:])
                raise ValueError(f"field {name!r} needs per-sample shape {shape}, got {got}")
        with self._lock:
            staged["_event"] = torch.as_tensor(np.asarray(event_index, np.int64))
            staged["_ts"] = torch.as_tensor(np.asarray(ts, np.float64))
            targets = {**self._data, "_event": self._event, "_ts": self._ts}
            for name, tensor in staged.items():
                for ring, rows in runs:
                    targets[name][ring].copy_(tensor[rows], non_blocking=True)
            self._next = int((self._next + n) % self.capacity)
            self._size = min(self.capacity, self._size + n)
            self._newest_event = max(self._newest_event, int(np.max(event_index)))

    def shared_buffers(self) -> dict[str, torch.Tensor]:
        """One capacity-sized tensor per field in shared memory (CPU), for `snapshot(out=...)`: a
        snapshot gathered into them goes to another process as a handle, not a copy."""
        return {name: torch.empty_like(tensor, device="cpu").share_memory_()
                for name, tensor in self._data.items()}

    def snapshot(self, before_event: int | None = None, out: Mapping[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
        """Copies of the windowed samples in arrival order (plus "event" and "ts"), only those of
        events before `before_event` when given. With `out` (`shared_buffers()`), the fields are
        gathered into its tensors and returned as views of them (valid until the next such snapshot);
        fresh tensors cost a page fault per 4 KiB, ten times the gather at a 200 MB window."""
        with self._lock:
            order = (self._next - self._size + torch.arange(self._size, device=self.device)) % self.capacity
            event = self._event[order]
            ts = self._ts[order]
            keep = torch.ones_like(event, dtype=torch.bool)
            newest = self._newest_event if before_event is None else before_event - 1
            if before_event is not None:
                keep &= event < before_event
            if self.span_events is not None:
                keep &= event > newest - self.span_events
            if self.max_age_s is not None and len(ts):
                newest_ts = ts[keep].max() if bool(keep.any()) else ts.max()
                keep &= ts >= newest_ts - self.max_age_s
            rows = order[keep]
            if out is None:
                taken = {name: tensor[rows] for name, tensor in self._data.items()}
            else:
                taken = {name: torch.index_select(tensor, 0, rows, out=out[name][: len(rows)])
                         for name, tensor in self._data.items()}
            taken["event"] = event[keep]
            taken["ts"] = ts[keep]
        return taken
