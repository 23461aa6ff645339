"""The `k` best columns of each row of a score matrix, without a full-width partial sort per row.

`top_columns` first bounds each row's k-th largest value from below: the columns are dealt into
`chunks` interleaved groups (column j into group j mod chunks), and the k-th largest of the group
maxima is at most the row's k-th largest value (the maxima are k distinct entries). Only the few
entries at or above that bound (about 2-4 k on the recommender's score rows) are gathered and
partially sorted. Rows whose bound admits too many entries (rows of -inf, heavy ties) take the plain
`np.argpartition` path. Ties at the k-th value may pick different columns than `np.argpartition`
would (as any two partial sorts may).

>>> import numpy as np
>>> scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
>>> np.sort(top_columns(scores, 2), axis=1).tolist()
[[1, 3], [0, 1]]
"""

from __future__ import annotations

import numpy as np

SPARE = 4  # gathered entries per row allowed before a row takes the plain partial sort, in units of k


def top_columns(scores: np.ndarray, k: int, chunks: int | None = None) -> np.ndarray:
    """Column indices [n, k] of each row's k largest entries, unordered.

    `scores` is a nan-free float matrix [n, m] (-inf allowed) with k <= m."""
    scores = np.ascontiguousarray(scores)
    n, m = scores.shape
    if not 0 < k <= m:
        raise ValueError(f"k must be in 1..{m}, got {k}")
    chunks = chunks or 4 * k
    width = m // chunks
    if width < 2 or n == 0:
        return _argpartition(scores, k)
    group_max = scores[:, : width * chunks].reshape(n, width, chunks).max(1)  # [n, chunks]
    bound = np.partition(group_max, chunks - k, axis=1)[:, chunks - k]
    flat = np.flatnonzero(scores >= bound[:, None])  # row-major: each row's entries in column order
    rows, cols = np.divmod(flat, m)
    count = np.bincount(rows, minlength=n)
    plain = (count > SPARE * k) | ~np.isfinite(bound)
    if plain.any():
        keep = ~plain[rows]
        flat, rows, cols = flat[keep], rows[keep], cols[keep]
        count[plain] = 0
    starts = np.cumsum(count) - count
    width_kept = max(int(count.max(initial=0)), k)
    values = np.full((n, width_kept), -np.inf, dtype=scores.dtype)
    gathered = np.zeros((n, width_kept), dtype=np.int64)
    at = rows * width_kept + np.arange(len(rows)) - starts[rows]  # flat (row, slot) positions
    values.ravel()[at] = scores.ravel()[flat]
    gathered.ravel()[at] = cols
    best = np.argpartition(values, width_kept - k, axis=1)[:, width_kept - k:]
    out = np.take_along_axis(gathered, best, 1)
    if plain.any():
        out[plain] = _argpartition(scores[plain], k)
    return out


def _argpartition(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]  # ties as the deep stage always broke them
