"""Drift detection and the adaptation experiment on a synthetic interest switch."""

from __future__ import annotations

import numpy as np
import pytest

from bench.drift import experiment, recovery_events
from learners.base import Interactions
from learners.drift import DriftMonitor
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


def switch_stream():
    return generate(n_events=16_000, n_users=400, n_items=120, n_clusters=4, cluster_skew=1.5, switch_at=0.5,
                    p_explore=0.05, seed=21)


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


def test_recovery_events_counts_from_the_switch() -> None:
    positions = np.arange(3000)
    hits = np.r_[np.ones(1000), np.zeros(500), np.ones(1500)]
    result = recovery_events(positions, hits, switch_at=1000, window=100, level=0.9)
    assert result["pre_switch_hr@10"] == 1.0
    assert result["events_to_recover"] == 500 + 90 - 1  # 90 hits of the last 100
    never = recovery_events(positions, np.r_[np.ones(1000), np.zeros(2000)], 1000, 100)
    assert never["events_to_recover"] is None


def test_adaptation_recovers_at_least_twice_as_fast() -> None:
    stream = switch_stream()
    result = experiment(ForgettingPopularity, stream.log, list(stream.items), stream.truth["switch_at"],
                        batch_size=128, window=300, monitor_args={"chunk": 16})
    on, off = result["adapt"], result["no_adapt"]
    assert on["detections"] >= 1 and off["detections"] >= 1
    assert on["events_to_recover"] is not None
    assert off["events_to_recover"] is None or on["events_to_recover"] <= off["events_to_recover"] / 2
    assert result["claim_holds"]
