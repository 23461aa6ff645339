"""Compile (or load from numba's cache) a learner's kernels before a timed or live loop.

numba compiles each kernel at its first call, or loads it from its cache (tenths of a second per kernel;
seconds when it compiles): a replay would time that, a live worker's first events would wait for it.
`warm_up(make_model)` runs a short synthetic stream through a throwaway twin built like the real learner
(its deep stage too), with its evaluator, then asks it for a list and a drift reaction.

>>> from learners.sparse import SparseRecommender
>>> warm_up(SparseRecommender) >= 0.0
True
"""

from __future__ import annotations

import time
from collections.abc import Callable

from learners.base import Recommender, get_hook, has_hook
from learners.evaluate import add_due_items, evaluator_for, prequential_step


def warm_up(make_model: Callable[[], Recommender], batch_size: int = 200) -> float:
    """Seconds spent running 600 synthetic events (and a catalog) through `make_model()`'s twin."""
    from learners.synthetic import generate

    started = time.perf_counter()
    stream = generate(n_events=600, n_users=30, n_items=60, seed=0)
    items = sorted(stream.items, key=lambda m: m.ts)
    twin = make_model()
    evaluator = evaluator_for(twin)
    next_item = 0
    for lo in range(0, len(stream.log), batch_size):
        batch = stream.log[lo: lo + batch_size]
        next_item = add_due_items(twin, items, float(batch.ts[-1]), next_item)
        prequential_step(twin, evaluator, batch)
    twin.recommend([str(stream.log.user[0])], 5)
    if has_hook(twin, "on_drift"):
        twin.on_drift()
    close = get_hook(twin, "close")
    if close is not None:
        close()
    return time.perf_counter() - started
