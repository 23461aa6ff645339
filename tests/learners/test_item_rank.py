"""The sublinear decayed-popularity ranker against dense `DecayedPopularity` + `PrequentialEvaluator`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from learners.base import Interactions
from learners.datasets import read_log
from learners.evaluate import PrequentialEvaluator, prequential_step
from learners.item_rank import DecayedPopularityEvaluator
from learners.popularity import DecayedPopularity
from learners.synthetic import generate

SHARED_ML = Path(__file__).resolve().parents[3] / "shared/data/ml-100k"


def _compare(log: Interactions, half_life: float, batch_size: int = 256, max_changed: int | None = None,
             **kwargs: object) -> DecayedPopularityEvaluator:
    model, dense = DecayedPopularity(half_life=half_life), PrequentialEvaluator(**kwargs)
    fast = DecayedPopularityEvaluator(half_life=half_life, max_changed=max_changed, **kwargs)
    for lo in range(0, len(log), batch_size):
        batch = log[lo: lo + batch_size]
        expected = prequential_step(model, dense, batch)
        got = fast.observe_and_learn(batch)
        for key in ("position", "rank", "n_candidates"):
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{key} of events from {lo}")
    want, have = dense.report(), fast.report()
    assert want["evaluated"] > 0.1 * len(log)
    for key, value in want.items():
        if "us_per_event" not in key:
            assert have[key] == value, key  # the same sums in the same order: equal, not close
    assert fast.series() == dense.series()
    return fast


def test_ranks_and_report_equal_the_dense_evaluator_through_merges_and_rebases() -> None:
    log = generate(n_events=12_000, n_users=400, n_items=2500, seed=7).log
    # a half-life of 4 events rebases every 800 events: counts underflow, float32 scores tie at 0
    fast = _compare(log, half_life=4.0, max_changed=40)
    assert fast.merges >= 20 and fast.rebases >= 10
    # the bench's half-life with the automatic merge bound; coverage from every ranked list
    fast = _compare(log, half_life=2000.0, coverage_every=1, k=5)
    assert fast.merges >= 3 and fast.rebases == 0
    # event-sized batches (scores move between every two events), sampled ranking, plain counts
    _compare(log[:3000], half_life=30.0, batch_size=1, max_changed=8, evaluate_every=3)
    _compare(log, half_life=math.inf, batch_size=1000, max_changed=100)


def test_ranks_equal_the_dense_evaluator_on_movielens() -> None:
    if not (SHARED_ML / "u.data").exists():
        pytest.skip("needs ../shared/data/ml-100k")
    log = read_log(SHARED_ML / "u.data", "movielens")
    fast = _compare(log, half_life=2000.0)
    assert fast.merges >= 3


def test_rejects_what_it_cannot_rank_exactly() -> None:
    with pytest.raises(ValueError, match="half_life"):
        DecayedPopularityEvaluator(half_life=0.0)
    with pytest.raises(ValueError, match="all items"):
        DecayedPopularityEvaluator(n_negatives=50)
