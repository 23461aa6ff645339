"""Session signal: item-to-item co-occurrence over each user's recent items.

Every event (u, i) adds a co-occurrence between i and each of u's previous `window` items; the score
of a candidate j for a user is the position-decayed sum over the user's last `context` items c of an
asymmetric cosine  C[c, j] / (n_c ** alpha * n_j ** (1 - alpha)),  divided by the sum of the weights.
Counts live in a dense item x item float32 matrix that grows by doubling (bound the catalog with the
item index capacity of `OnlineRecommender`).

`recent_context` builds, vectorised, each event's context from the users' pre-batch recent items and
their own earlier events inside the same batch (never the event itself or later ones).

>>> import numpy as np
>>> recent = np.array([[7, -1], [-1, -1]])  # user 0 saw item 7 before the batch, user 1 nothing
>>> ctx, users, new_recent = recent_context(np.array([0, 1, 0]), np.array([1, 2, 3]), recent)
>>> ctx.tolist(), users.tolist(), new_recent.tolist()
([[7, -1], [-1, -1], [1, 7]], [0, 1], [[3, 1], [2, -1]])
"""

from __future__ import annotations

import numpy as np
import torch

from learners.base import BatchContext
from learners.ids import grow_rows


def recent_context(
    users: np.ndarray, values: np.ndarray, recent: np.ndarray, width: int | None = None,
    new_rows: bool = True, layout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per event, the user's previous values (most recent first), in-batch events included.

    `recent[u]` holds user code u's values before the batch (most recent first, padded). Returns
    (context[B, width] (default: all of `recent`'s columns), the batch's distinct users, their recent
    rows after the batch — None with `new_rows=False`, e.g. when only scoring). `layout`:
    `group_layout(users)` when the caller has it already."""
    n = len(users)
    full = recent.shape[1]
    width = full if width is None else min(width, full)
    order, starts, position = group_layout(users) if layout is None else layout
    sorted_users = users[order]
    sorted_values = values[order]
    lags = np.arange(1, width + 1)
    # lag l: the user's event l steps back, from this batch while there is one, else from `recent`
    in_batch = position[:, None] >= lags
    from_batch = sorted_values[np.maximum(np.arange(n)[:, None] - lags, 0)] if n else np.zeros((0, width))
    from_recent = recent[sorted_users[:, None], np.maximum(lags - 1 - position[:, None], 0)]
    context = np.empty((n, width), dtype=recent.dtype)
    context[order] = np.where(in_batch, from_batch, from_recent)
    batch_users = sorted_users[starts]
    if not new_rows:
        return context, batch_users, None
    lags = np.arange(1, full + 1)
    sizes = np.diff(np.r_[starts, n])
    ends = starts + sizes
    new_in_batch = sizes[:, None] >= lags
    new_from_batch = sorted_values[np.maximum(ends[:, None] - lags, 0)] if n else np.zeros((0, full))
    new_from_recent = recent[batch_users[:, None], np.maximum(lags - 1 - sizes[:, None], 0)]
    return context, batch_users, np.where(new_in_batch, new_from_batch, new_from_recent).astype(recent.dtype)


def group_layout(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stable order grouping equal codes, group starts in that order, each sorted event's position in
    its group)."""
    n = len(codes)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    first = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]] if n else np.zeros(0, bool)
    starts = np.flatnonzero(first)
    position = np.arange(n) - starts[np.cumsum(first) - 1]
    return order, starts, position


class CoOccurrence:
    """Item-to-item co-occurrence source (see module docstring).

    Parameters
    ----------
    window
        How many previous items of the user each new item co-occurs with when learning.
    context
        How many of the user's recent items score candidates.
    decay
        Weight factor per step back in the context (most recent item: 1).
    alpha
        Exponent of the context item's count in the asymmetric cosine (0.5: plain cosine).
    name
        Its `Source` name (the blend's and `Recommendation.source`'s).

    A `learners.base.Source`: `OnlineRecommender` builds its own ("cooccurrence", "transitions"), and one
    with other settings joins its blend under another name:

    >>> from learners.base import Interactions, Source
    >>> from learners.recommender import OnlineRecommender
    >>> nearby = CoOccurrence(window=2, context=2, name="nearby")
    >>> isinstance(nearby, Source)
    True
    >>> model = OnlineRecommender(sources=[nearby], seed=0)
    >>> model.learn_many(Interactions.from_records(
    ...     [{"user_id": "u", "item_id": i, "ts": t} for t, i in enumerate("abcab")]))
    >>> "nearby" in model.blend.names, nearby.item_counts[:3].tolist()  # a, b, c: learned 2, 2, 1 times
    (True, [2.0, 2.0, 1.0])
    """

    def __init__(self, window: int = 10, context: int = 10, decay: float = 0.9, alpha: float = 0.7,
                 directed: bool = False, pair_decay: float = 1.0, pair_power: float = 0.0,
                 name: str = "cooccurrence") -> None:
        self.name = name
        self.pair_decay = pair_decay
        self.pair_power = pair_power
        self.directed = directed
        self.window = window
        self.context = context
        self.decay = decay
        self.alpha = alpha
        self.counts = np.zeros((16, 16), dtype=np.float32)
        self.item_counts = np.zeros(16, dtype=np.float32)

    def resize(self, n_items: int) -> None:
        if n_items > len(self.counts):
            # Grow by a quarter, not double: scoring reads whole rows, so spare columns cost time.
            size = max(n_items, len(self.counts) + len(self.counts) // 4 + 64)
            grown = np.zeros((size, size), dtype=np.float32)
            grown[: len(self.counts), : len(self.counts)] = self.counts
            self.counts = grown
            self.item_counts = grow_rows(self.item_counts, size)

    def reset_items(self, cols: np.ndarray) -> None:
        self.counts[cols, :] = 0.0
        self.counts[:, cols] = 0.0
        self.item_counts[cols] = 0.0

    def forget(self, factor: float) -> None:
        self.counts *= factor
        self.item_counts *= factor

    def learn(self, batch: BatchContext) -> None:
        self.resize(batch.n_items)
        previous = batch.recent[:, : self.window]
        rows = np.repeat(batch.items, previous.shape[1])
        cols = previous.ravel()
        keep = (cols >= 0) & (rows >= 0) & (rows != cols)
        if self.directed:  # earlier item -> later item only, closer steps weigh more
            weight = np.tile(self.decay ** np.arange(previous.shape[1], dtype=np.float32), len(batch.items))
            pairs, other, weight = cols[keep], rows[keep], weight[keep]
        else:  # symmetric; a pair d steps apart counts pair_decay ** (d - 1) / d ** pair_power
            steps = np.arange(previous.shape[1], dtype=np.float32)
            weight = np.tile(self.pair_decay**steps / (steps + 1) ** self.pair_power, len(batch.items))[keep]
            pairs = np.concatenate([rows[keep], cols[keep]])
            other = np.concatenate([cols[keep], rows[keep]])
            weight = np.concatenate([weight, weight])
        # scatter-add on the flat view: numpy's 1-d add.at is ~4x faster than torch's 2-d index_put_
        np.add.at(self.counts.reshape(-1), pairs * len(self.counts) + other, weight)
        np.add.at(self.item_counts, batch.items[batch.items >= 0], 1.0)

    def _context_weights(self, recent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ctx = recent[:, : self.context]
        valid = ctx >= 0
        steps = self.decay ** np.arange(ctx.shape[1], dtype=np.float32)
        norm = np.maximum(steps[None, :] * valid, 0).sum(1, keepdims=True)
        n_ctx = np.maximum(self.item_counts[np.maximum(ctx, 0)], 1.0)
        weights = np.where(valid, steps[None, :] / n_ctx**self.alpha, 0.0) / np.maximum(norm, 1e-12)
        return np.maximum(ctx, 0), weights.astype(np.float32)

    def candidate_norm(self, n_items: int) -> np.ndarray:
        """(n_items,) the candidate side of the asymmetric cosine: `score` = `sums` * this row."""
        return (1.0 / np.maximum(self.item_counts[:n_items], 1.0) ** (1.0 - self.alpha)).astype(np.float32)

    def sums(self, batch: BatchContext) -> np.ndarray:
        """(B, n_items) context-weighted sums of count rows, before the candidate norm."""
        self.resize(batch.n_items)
        ctx, weights = self._context_weights(batch.recent)
        return torch.nn.functional.embedding_bag(
            torch.from_numpy(ctx), torch.from_numpy(self.counts),
            per_sample_weights=torch.from_numpy(weights), mode="sum",
        ).numpy()[:, : batch.n_items]

    def score(self, batch: BatchContext, scale: float = 1.0) -> np.ndarray:
        """(B, n_items) similarity of every item to each event's recent items, times `scale`."""
        summed = self.sums(batch)
        summed *= scale * self.candidate_norm(batch.n_items)[None, :]
        return summed

    def score_pairs(self, batch: BatchContext, cols: np.ndarray) -> np.ndarray:
        """Scores of given candidates `cols[B, M]` (what `score` gives at those columns)."""
        self.resize(batch.n_items)
        ctx, weights = self._context_weights(batch.recent)
        gathered = self.counts[ctx[:, :, None], cols[:, None, :]]  # (B, L, M)
        summed = np.einsum("bl,blm->bm", weights, gathered)
        return summed * self.candidate_norm(batch.n_items)[cols]

    def state(self, n_items: int) -> dict[str, np.ndarray]:
        return {f"{self.name}_counts": self.counts[:n_items, :n_items].copy(),
                f"{self.name}_n": self.item_counts[:n_items].copy()}

    def load(self, items: dict[str, np.ndarray]) -> None:
        n = len(items[f"{self.name}_n"])
        self.counts = np.zeros((max(n, 16), max(n, 16)), dtype=np.float32)
        self.counts[:n, :n] = items[f"{self.name}_counts"]
        self.item_counts = np.zeros(max(n, 16), dtype=np.float32)
        self.item_counts[:n] = items[f"{self.name}_n"]
