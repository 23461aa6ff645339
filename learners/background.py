"""The item-only background score: what every item that is not a candidate scores.

A model proposes candidates per event and scores only those; every other item scores its background
value, a snapshot of an item-only score (e.g. the popularity part of the blend) rebuilt every so many
events. The snapshot is kept sorted, so the number of items scoring above a value is a binary search,
and the evaluator ranks an event over the whole catalog without scoring it. Columns added after the
snapshot (and any column past `values`) score `default`.

>>> import numpy as np
>>> bg = Background.build(np.array([0.5, 2.0, 1.0], np.float32), version=1)
>>> bg.sorted_values.tolist(), bg.position.tolist()
([0.5, 1.0, 2.0], [0, 2, 1])
>>> float(bg.value(1)), float(bg.value(7))  # column 7 is past the snapshot: the default
(2.0, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Background:
    values: np.ndarray  # float32 per column [0, n)
    sorted_values: np.ndarray  # float32, ascending
    position: np.ndarray  # int64: index of each column's value in sorted_values (a permutation)
    order: np.ndarray  # int64: the column at each index of sorted_values (position's inverse)
    version: int
    default: float = 0.0

    @classmethod
    def build(cls, values: np.ndarray, version: int, default: float = 0.0) -> Background:
        values = np.ascontiguousarray(values, dtype=np.float32)
        order = np.argsort(values, kind="stable")
        position = np.empty(len(values), dtype=np.int64)
        position[order] = np.arange(len(values))
        return cls(values, values[order], position, order.astype(np.int64), version,
                   float(np.float32(default)))

    @classmethod
    def empty(cls) -> Background:
        return cls.build(np.zeros(0, np.float32), version=0)

    def __len__(self) -> int:
        return len(self.values)

    def value(self, col: int) -> np.float32:
        return self.values[col] if 0 <= col < len(self.values) else np.float32(self.default)

    def order_desc(self) -> np.ndarray:
        """Columns by descending background score (ties: higher column first)."""
        return self.order[::-1]
