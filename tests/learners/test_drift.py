"""Drift detection and the adaptation experiment on a synthetic interest switch."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from bench.drift import experiment, parse_seeds, recovery_events
from learners.base import Interactions
from learners.drift import DriftMonitor
from learners.recommender import OnlineRecommender
from learners.synthetic import generate

pytest.importorskip("river")


class ForgettingPopularity:
    """All-time popularity that, told about a drift, keeps only a small share of its counts."""

    def __init__(self) -> None:
        self.col: dict[str, int] = {}
        self.counts = np.zeros(0)
        self.drifts = 0

    def learn_many(self, batch: Interactions) -> None:
        for x in batch.item.tolist():
            self.col.setdefault(x, len(self.col))
        cols = np.array([self.col[x] for x in batch.item.tolist()])
        grown = np.zeros(len(self.col))
        grown[: len(self.counts)] = self.counts
        self.counts = grown + np.bincount(cols, minlength=len(self.col))

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.counts[None, :], len(batch), axis=0), np.arange(len(self.counts))

    def item_cols(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.col.get(x, -1) for x in ids.tolist()], np.int64)

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return np.array(list(self.col), dtype=object)[np.asarray(cols)]

    def add_items(self, items: list) -> None:
        pass

    def on_drift(self) -> None:
        self.drifts += 1
        self.counts *= 0.02


def test_monitor_detects_a_drop_not_a_rise_and_calls_the_hook() -> None:
    rng = np.random.default_rng(3)
    model = ForgettingPopularity()
    monitor = DriftMonitor(cooldown=500)
    monitor.update(rng.random(3000) < 0.05, model)  # warming up: the hit rate rises next
    monitor.update(rng.random(3000) < 0.4, model)
    assert monitor.detections == 0 and model.drifts == 0
    monitor.update(rng.random(2000) < 0.1, model, positions=np.arange(10_000, 12_000))
    assert monitor.detections == 1 and model.drifts == 1
    assert 10_000 <= monitor.positions[0] < 11_000  # found within a thousand events of the drop
    control = DriftMonitor(adapt=False)
    for hits in (rng.random(4000) < 0.4, rng.random(2000) < 0.1):
        control.update(hits, model)
    assert control.detections == 1 and model.drifts == 1  # counted, not adapted


def test_monitor_passes_its_adapt_args_to_the_hook() -> None:
    rng = np.random.default_rng(5)
    seen: list[dict] = []

    class Model:
        def on_drift(self, **kwargs: float) -> None:
            seen.append(kwargs)

    monitor = DriftMonitor(adapt_args={"keep_recent": 0, "forget": 0.1})
    monitor.update(rng.random(4000) < 0.5, Model())
    monitor.update(rng.random(2000) < 0.1, Model())
    assert seen == [{"keep_recent": 0, "forget": 0.1}]


def test_recovery_events_counts_from_the_switch() -> None:
    positions = np.arange(3000)
    hits = np.r_[np.ones(1000), np.zeros(500), np.ones(1500)]
    result = recovery_events(positions, hits, switch_at=1000, window=100, level=0.9)
    assert result["pre_switch_hr@10"] == 1.0
    assert result["events_to_recover"] == 500 + 90 - 1  # 90 hits of the last 100
    assert result["earliest"] == 99  # the first window made only of post-switch events
    never = recovery_events(positions, np.r_[np.ones(1000), np.zeros(2000)], 1000, 100)
    assert never["events_to_recover"] is None


def test_seeds_parse_ranges_and_lists() -> None:
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(argparse.ArgumentTypeError):
        parse_seeds("a-b")


def test_online_recommender_recovers_at_least_twice_as_fast_with_adaptation() -> None:
    """The claim with the real learner and detector: an interest switch of every user at event 8,000;
    the learner with `on_drift` (forgetting, users' old context dropped) is back to 90% of its
    pre-switch HR@10 in at most half the events of the same learner without it, which still learns."""
    stream = generate(n_events=16_000, n_users=400, n_items=200, n_clusters=8, cluster_skew=1.0, seed=1)
    switch = stream.truth["switch_at"]
    result = experiment(lambda: OnlineRecommender(seed=0, mf=None), stream.log, list(stream.items), switch,
                        batch_size=128, window=500, monitor_args={"adapt_args": {"keep_recent": 0}})
    on, off = result["adapt"], result["no_adapt"]
    # same learner until the first detection, which comes soon after the switch in both runs
    assert on["detection_positions"][0] == off["detection_positions"][0]
    assert switch <= on["detection_positions"][0] < switch + 1000
    assert on["events_to_recover"] is not None and off["events_to_recover"] is not None  # both recover
    assert on["events_to_recover"] <= off["events_to_recover"] / 2
    assert result["claim_holds"] and result["ratio"] <= 0.5
