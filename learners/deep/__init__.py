"""Deep (PyTorch) second stage of the recommender: a candidate re-ranker fine-tuned on a sliding
window of the stream, in the background live, with a cost-delayed swap in replay.

Imports need only numpy and torch (the GPU machine has nothing else).
"""

from __future__ import annotations

import os
from typing import Any

from learners.deep.reranker import DeepReranker

FIXED_COST_ENV = "STREAMREC_DEEP_FIXED_COST_S"


def build_source(seed: int = 0, background: bool = False, **options: Any) -> DeepReranker:
    """The deep stage for `OnlineRecommender(deep=...)`.

    Replay (default, `background=False`): each fine-tune runs synchronously on the events before its
    trigger and serves only after the events its measured cost stands for at the live rate; set
    ``STREAMREC_DEEP_FIXED_COST_S`` (seconds) for a fixed cost and a bit-for-bit reproducible replay.
    The live worker passes `background=True`."""
    if "fixed_cost_s" not in options and os.environ.get(FIXED_COST_ENV):
        options["fixed_cost_s"] = float(os.environ[FIXED_COST_ENV])
    return DeepReranker(seed=seed, background=background, **options)


__all__ = ["DeepReranker", "build_source"]
