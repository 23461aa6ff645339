"""Concept-drift detection on the prequential hit stream, with an adaptation hook on the model.

`DriftMonitor` feeds river's `drift.ADWIN` with the mean hit rate of every `chunk` evaluated events
(one ADWIN update per chunk instead of per event: ADWIN's update costs about 2 µs in Python; chunks
of 4 still find a drop of the hit rate within a few hundred events, while chunks of 32 blunt ADWIN's
bound so much that it can miss a 0.5 -> 0.3 drop altogether). When
ADWIN detects a change and the recent hit rate is *lower* than before, it calls `model.on_drift()`
(the learner forgets faster / boosts its learning rate / resets windows) and counts a detection; a
rise (the model warming up) is not a drift to adapt to. river is imported lazily, so `learners`
stays importable without it.

Why the 0/1 hits and not a lower-variance signal: replayed offline on the no-adaptation runs, ADWIN on
chunks of 4 hits (delta 2e-4) finds the synthetic interest switch on each of seeds 0-9 within 86-280
events (median 172) and stays silent on ML-100K and YOOCHOOSE-100k. Reciprocal rank, rank percentile
and -log(1 + rank) were tried at deltas 2e-3..2e-8 and chunks 1..16: each is either slower on the switch
or fires on ML-100K, whose hit rate really does move (bursts of active users); so do hits at chunks of
1, 2 or 8 (ADWIN's bound on chunk means is not monotonic in the chunk).

>>> import numpy as np
>>> monitor = DriftMonitor(chunk=20)
>>> rng = np.random.default_rng(0)
>>> for _ in range(50):
...     _ = monitor.update(rng.random(100) < 0.4)
>>> monitor.detections
0
>>> for _ in range(20):
...     _ = monitor.update(rng.random(100) < 0.05)
>>> monitor.detections >= 1
True
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from learners.base import has_hook

log = logging.getLogger(__name__)


class DriftMonitor:
    """Counts drops of the hit rate found by ADWIN and tells the model about each.

    Parameters
    ----------
    delta
        ADWIN's confidence (smaller: fewer false alarms, slower detection). 2e-4 rather than river's
        2e-3: on ml-100k, whose hit rate swings with bursts of active users, 2e-3 fires 5 times and
        adapting to those swings costs HR; 2e-4 fires twice and still finds the synthetic interest
        switch about 250 events after it happens.
    chunk
        Evaluated events averaged into one ADWIN observation.
    cooldown
        Evaluated events after a detection during which no further one is raised (the model is
        re-adapting; its hit rate is expected to move).
    adapt
        Call `model.on_drift(**adapt_args)` on a detection (False: only count, e.g. a control run).
    adapt_args
        Keyword arguments of the model's `on_drift` (None: its defaults), e.g. ``{"keep_recent": 0}``
        for `OnlineRecommender` when the tastes of all users move at once.
    """

    def __init__(
        self, delta: float = 0.0002, chunk: int = 4, cooldown: int = 2000, adapt: bool = True,
        adapt_args: dict[str, Any] | None = None,
    ) -> None:
        if not 0 < delta < 1 or chunk < 1 or cooldown < 0:
            raise ValueError("need 0 < delta < 1, chunk >= 1 and cooldown >= 0")
        self.delta = delta
        self.chunk = chunk
        self.cooldown = cooldown
        self.adapt = adapt
        self.adapt_args = adapt_args
        self.detections = 0
        self.positions: list[int] = []  # stream positions of the detections
        self._adwin: Any = None
        self._carry = np.empty(0)
        self._seen = 0  # evaluated events so far
        self._quiet_until = 0

    def ready(self) -> DriftMonitor:
        """Build the detector now (importing river takes ~1 s: do it before a timed or live loop, and
        see a missing river at start rather than mid-stream); returns self."""
        self._detector()
        return self

    def _detector(self) -> Any:
        if self._adwin is None:
            from river import drift

            self._adwin = drift.ADWIN(delta=self.delta, clock=1, grace_period=5, min_window_length=3)
        return self._adwin

    def update(self, hits: np.ndarray, model: Any = None, positions: np.ndarray | None = None) -> bool:
        """Feed the hits (0/1) of a batch's evaluated events; True when a drop was detected."""
        carried = len(self._carry)
        values = np.concatenate([self._carry, np.asarray(hits, np.float64)])
        n_full = len(values) // self.chunk
        self._carry = values[n_full * self.chunk:]
        detector = self._detector()
        detected = False
        means = values[: n_full * self.chunk].reshape(n_full, self.chunk).mean(axis=1)
        for j, mean in enumerate(means.tolist()):
            before = detector.estimation
            detector.update(mean)
            end = (j + 1) * self.chunk - carried  # events of this batch up to the chunk's end
            evaluated = self._seen + end
            if detector.drift_detected and detector.estimation < before and evaluated >= self._quiet_until:
                detected = True
                self.detections += 1
                self._quiet_until = evaluated + self.cooldown
                if positions is not None and len(positions):
                    self.positions.append(int(positions[min(max(end - 1, 0), len(positions) - 1)]))
                else:
                    self.positions.append(evaluated)
                if self.adapt and model is not None and has_hook(model, "on_drift"):
                    model.on_drift(**(self.adapt_args or {}))
        self._seen += len(hits)
        return detected


def monitor_for(model: Any) -> DriftMonitor | None:
    """A ready `DriftMonitor` (river imported now, outside any timed or live loop) for a model that can
    adapt (`on_drift`); None for one that cannot, or when river is missing (with a warning)."""
    if not has_hook(model, "on_drift"):
        return None
    try:
        return DriftMonitor().ready()
    except ImportError as exc:
        log.warning("drift detection unavailable (%s): the learner will not adapt to drift", exc)
        return None
