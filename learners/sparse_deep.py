"""The deep stage over `SparseRecommender`'s candidates: what turns its rows into the re-ranker's input
and the re-ranker's order back into scores the evaluator and `recommend` use.

The sparse model scores candidates only, so the deep stage (`learners.deep.DeepReranker.rerank_rows`)
re-ranks each event's best `n_candidates` candidates, leaving the user's own items out, and its order is
written back as scores above every other score the event can give (its other candidates and the
whole background): `lift`. The evaluator then ranks the event exactly as before, over the whole
catalog. The sources the deep stage describes candidates by are the blend's raw features
(`learners.kernels.FEATURES`), as the kernel computed them for the event.

>>> import numpy as np
>>> prev_in_batch(np.array([3, 5, 3, 3, 5]))  # each event's previous event of the same user
array([-1, -1,  0,  2,  1])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from learners import kernels

if TYPE_CHECKING:
    from learners.sparse import CandidateScores


def prev_in_batch(users: np.ndarray) -> np.ndarray:
    """Per event, the batch position of the same user's previous event (-1: none; users < 0 never
    match: unknown users)."""
    users = np.asarray(users, np.int64)
    order = np.argsort(users, kind="stable")
    ordered = users[order]
    same = (ordered[1:] == ordered[:-1]) & (ordered[1:] >= 0)
    prev = np.full(len(users), -1, np.int64)
    prev[order[1:][same]] = order[:-1][same]
    return prev


def feature_sources(feats: np.ndarray) -> dict[str, np.ndarray]:
    """The kernel's raw features [n, M, F] as the deep stage's named sources [n, M] each (or its
    per-event sums [n, F] as [n, 1] each)."""
    if feats.ndim == 2:
        return {name: feats[:, f: f + 1] for f, name in enumerate(kernels.FEATURES)}
    return {name: feats[:, :, f] for f, name in enumerate(kernels.FEATURES)}


def lift(result: CandidateScores, slots: np.ndarray, deep: np.ndarray, top: np.ndarray) -> None:
    """Give the re-ranked candidates (row positions `slots` [n, C], -1 padding) scores in the deep order
    (`deep` [n, C]) above every other score of their event: its other candidates' (`top`: each event's
    highest, `kernels.deep_candidates`) and the background's. In place: `result.scores` and, where the
    target is one of them, `result.target_score`."""
    valid = slots >= 0
    if not valid.any():
        return
    bg = result.background
    bg_top = max(bg.default, float(bg.sorted_values[-1])) if len(bg.sorted_values) else bg.default
    floor = np.maximum(top, bg_top)
    low = np.where(valid, deep, np.inf).min(1)
    lifted = (floor[:, None] + 1.0 + (deep - low[:, None])).astype(np.float32)
    rows, k = np.nonzero(valid)
    slot = slots[rows, k]
    result.scores[rows, slot] = lifted[rows, k]
    hit = result.cols[rows, slot] == result.target_col[rows]
    result.target_score[rows[hit]] = lifted[rows[hit], k[hit]]


def deep_order(slots: np.ndarray, deep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions [n, C] of the re-ranked candidates, best deep score first (-1 padding last), and
    their deep scores in that order."""
    key = np.where(slots >= 0, deep, -np.inf)
    order = np.argsort(-key, axis=1, kind="stable")
    return np.take_along_axis(slots, order, 1), np.take_along_axis(deep, order, 1)
