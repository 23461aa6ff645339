"""A background thread that feeds the live service like the worker does, without Kafka.

It replays a seeded synthetic log in micro-batches through a real learner and the project's
prequential evaluator (`learners.evaluate.prequential_step`: score, evaluate, then learn), and
reports to `StreamMetrics` and `SeriesRecorder` once per micro-batch as the worker does. Every
`refit_every` batches it refits a fresh popularity model on the recent window (a real, timed
"fine-tune" whose moment goes to the dashboard). Lag is the part of the log not consumed yet.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from learners.evaluate import PrequentialEvaluator, prequential_step
from learners.popularity import DecayedPopularity, Popularity
from learners.synthetic import generate
from stream.metrics import SeriesRecorder, StreamMetrics


class LiveFeed(threading.Thread):
    def __init__(self, metrics: StreamMetrics, recorder: SeriesRecorder, n_events: int = 60_000,
                 batch_size: int = 100, events_per_s: float = 2_000.0, refit_every: int = 25,
                 window: int = 2_000, seed: int = 3) -> None:
        super().__init__(name="live-feed", daemon=True)
        self.metrics = metrics
        self.recorder = recorder
        self.log = generate(n_events=n_events, seed=seed).log
        self.batch_size = batch_size
        self.events_per_s = events_per_s
        self.refit_every = refit_every
        self.window = window
        self.model = DecayedPopularity(half_life=500.0)
        self.evaluator = PrequentialEvaluator(k=10, window=window, keep_events=False)
        self.version = 0
        self.position = 0
        self.users: set[str] = set()
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        started = time.monotonic()
        n_batches = 0
        while not self.stop_event.is_set() and self.position < len(self.log):
            arrived = time.time()
            batch = self.log[self.position: self.position + self.batch_size]
            t0 = time.perf_counter()
            prequential_step(self.model, self.evaluator, batch)
            seconds = time.perf_counter() - t0
            self.position += len(batch)
            n_batches += 1
            self.users.update(batch.user.tolist())
            _, item_cols = self.model.score_many(batch[:0])
            m = self.metrics
            m.observe_batch(len(batch), len(batch), seconds)
            m.observe_publish_latency(np.full(len(batch), time.time() - arrived))
            m.set_quality_from(self.evaluator.rolling())
            m.set_sizes(users=len(self.users), items=len(item_cols))
            m.set_lag({"interactions:0": len(self.log) - self.position})
            if n_batches % self.refit_every == 0:
                self._refit()
            self.recorder.record_from(m)
            # Pace the replay like a live stream.
            ahead = self.position / self.events_per_s - (time.monotonic() - started)
            if ahead > 0:
                self.stop_event.wait(ahead)

    def _refit(self) -> None:
        t0 = time.perf_counter()
        recent = self.log[max(0, self.position - self.window): self.position]
        fresh = Popularity()
        fresh.learn_many(recent)
        seconds = time.perf_counter() - t0
        self.version += 1
        self.metrics.observe_finetune(seconds, len(recent), version=self.version)
        self.recorder.mark_finetune(seconds, len(recent), version=self.version)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
