"""Live-service metrics: Prometheus series plus a bounded in-memory time series for the dashboard.

`StreamMetrics` owns a dedicated `CollectorRegistry` (several can live in one process, e.g. in tests)
and is fed once per micro-batch: every update is O(1) Python work or one vectorised numpy call,
never a loop over events. `SeriesRecorder` keeps the last `capacity` samples of rolling quality,
throughput and lag in numpy ring buffers for `GET /api/series`.

>>> import numpy as np
>>> m = StreamMetrics()
>>> m.observe_batch(n_consumed=3, n_applied=2, seconds=0.004)
>>> m.observe_dlq("bad_json")
>>> m.observe_publish_latency(np.array([0.002, 0.030, 0.7]))
>>> m.set_quality(auc=0.81, hr_at_10=0.2, ndcg_at_10=0.11)
>>> b"streamrec_events_applied_total 2.0" in m.text()
True
>>> m.summary()["dlq"]
{'bad_json': 1}
>>> rec = SeriesRecorder(capacity=4, min_interval=0.0)
>>> for t in range(6):
...     _ = rec.record(now=float(t), events_total=10 * t, auc=0.5 + t / 100)
>>> s = rec.snapshot()
>>> s["t"], s["events_per_s"]
([2.0, 3.0, 4.0, 5.0], [10.0, 10.0, 10.0, 10.0])
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["METRICS_CONTENT_TYPE", "BatchHistogram", "SeriesRecorder", "StreamMetrics"]

# The classic text format that generate_latest writes, understood by Prometheus 2.x and 3.x.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Event -> published recommendation: a healthy worker answers in ms, a backlog takes seconds.
PUBLISH_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
BATCH_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)
FINETUNE_BUCKETS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class BatchHistogram:
    """A Prometheus histogram fed whole numpy arrays of observations, binned lazily.

    `prometheus_client.Histogram.observe` takes one value per call (a Python loop per event, ~3 µs
    each); here `observe_many` only copies a batch into a pending buffer (~1 µs) and the binning
    (`searchsorted` + `bincount` over everything pending) runs at scrape time or when the buffer is
    full, so its cost is amortised over thousands of values. Exposes the standard
    `_bucket`/`_sum`/`_count` series through prometheus-client's custom-collector API.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = None, pending: int = 1 << 16) -> None:
        bounds = np.asarray(sorted(float(b) for b in buckets if not math.isinf(b)), dtype=np.float64)
        if not len(bounds):
            raise ValueError("a histogram needs at least one finite bucket bound")
        self.name = name
        self.documentation = documentation
        self.bounds = bounds
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)  # last slot: above every bound (+Inf)
        self._sum = 0.0
        self._pending = np.empty(pending, dtype=np.float64)
        self._n_pending = 0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray | Sequence[float]) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        n = len(values)
        with self._lock:
            if self._n_pending + n > len(self._pending):
                self._flush()
                if n > len(self._pending):
                    self._bin(values)
                    return
            self._pending[self._n_pending: self._n_pending + n] = values
            self._n_pending += n

    def observe(self, value: float) -> None:
        with self._lock:
            if self._n_pending == len(self._pending):
                self._flush()
            self._pending[self._n_pending] = value
            self._n_pending += 1

    def _flush(self) -> None:  # caller holds the lock
        if self._n_pending:
            self._bin(self._pending[: self._n_pending])
            self._n_pending = 0

    def _bin(self, values: np.ndarray) -> None:
        total = float(values.sum())
        if not math.isfinite(total):  # rare: drop NaN/inf observations rather than poison _sum
            values = values[np.isfinite(values)]
            total = float(values.sum())
        # Prometheus buckets are "le": index of the first bound >= value.
        self._counts += np.bincount(np.searchsorted(self.bounds, values, side="left"),
                                    minlength=len(self._counts))
        self._sum += total

    def snapshot(self) -> tuple[np.ndarray, float]:
        """(per-bucket counts, the last one above every bound; sum of observations)."""
        with self._lock:
            self._flush()
            return self._counts.copy(), self._sum

    @property
    def count(self) -> int:
        return int(self.snapshot()[0].sum())

    def quantile(self, q: float) -> float:
        """Upper bucket bound below which a fraction `q` of observations fall (nan when empty)."""
        cum = np.cumsum(self.snapshot()[0])
        if not cum[-1]:
            return math.nan
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        return float(self.bounds[i]) if i < len(self.bounds) else math.inf

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterable[HistogramMetricFamily]:
        counts, total = self.snapshot()
        cum = np.cumsum(counts)
        buckets = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        buckets.append(("+Inf", float(cum[-1])))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class StreamMetrics:
    """All Prometheus series of one worker, on its own registry.

    Updates are plain attribute arithmetic (sub-µs) and the series are built from them when
    Prometheus scrapes (a custom collector): prometheus-client's own `Counter.inc` costs ~1 µs and
    `Gauge.labels(...).set` ~8 µs per call, which would cost tens of µs per micro-batch. One writer
    (the worker) is assumed; scrapes may run on another thread.

    Metric names (prefix `namespace`, default `streamrec`):
    `events_consumed_total`, `events_applied_total`, `dlq_events_total{reason}`,
    `consumer_lag{topic,partition}`, `batch_update_seconds` (histogram),
    `event_to_recommendation_seconds` (histogram), `rolling_auc`, `rolling_hr_at_10`,
    `rolling_ndcg_at_10`, `model_version`, `finetune_duration_seconds` (histogram),
    `finetune_samples_per_second`, `drift_detections_total`, `users_held`, `items_held`,
    `recommendations_published_total`, `last_checkpoint_timestamp_seconds`, `uptime_seconds`.
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "streamrec") -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.namespace = namespace
        self.started = time.time()
        self.batch_update = BatchHistogram(f"{namespace}_batch_update_seconds",
                                           "Wall time to apply one micro-batch", BATCH_LATENCY_BUCKETS)
        self.publish_latency = BatchHistogram(
            f"{namespace}_event_to_recommendation_seconds",
            "From an event's arrival to the publication of its user's fresh top-K", PUBLISH_LATENCY_BUCKETS)
        self.finetune_duration = BatchHistogram(f"{namespace}_finetune_duration_seconds",
                                                "Wall time of one fine-tune", FINETUNE_BUCKETS)
        self._consumed = 0
        self._applied = 0
        self._published = 0
        self._dlq: dict[str, int] = {}
        self._lag: dict[tuple[str, str], int] = {}
        self._lag_keys: dict[tuple[str, int] | str, tuple[str, str]] = {}
        self._quality = {"auc": math.nan, "hr_at_10": math.nan, "ndcg_at_10": math.nan}
        self._version = 0
        self._users = 0
        self._items = 0
        self._finetune_rate = math.nan
        self._drift = 0
        self._last_checkpoint = 0.0
        self.registry.register(_StreamCollector(self))

    # -- feeding, once per micro-batch -------------------------------------------------------------
    def observe_batch(self, n_consumed: int, n_applied: int | None = None,
                      seconds: float | None = None) -> None:
        """One micro-batch: `n_consumed` read, `n_applied` learned from, `seconds` spent applying it."""
        self._consumed += n_consumed
        self._applied += n_consumed if n_applied is None else n_applied
        if seconds is not None:
            self.batch_update.observe(seconds)

    def set_drift_detections(self, n: int) -> None:
        """Drops of the live hit rate detected so far (each made the learner adapt)."""
        self._drift = int(n)

    def observe_dlq(self, reason: str, n: int = 1) -> None:
        self._dlq[reason] = self._dlq.get(reason, 0) + n

    def set_lag(self, lag: Mapping[tuple[str, int] | str, int]) -> None:
        """Lag per partition, keyed by (topic, partition) or "topic:partition"."""
        parsed = self._lag_keys
        for key, value in lag.items():
            label = parsed.get(key)
            if label is None:  # parse each key once
                topic, partition = key if isinstance(key, tuple) else str(key).rsplit(":", 1)
                label = parsed[key] = (str(topic), str(partition))
            self._lag[label] = value

    def observe_publish_latency(self, seconds: np.ndarray | Sequence[float],
                                n_published: int | None = None) -> None:
        """Event -> published top-K latencies of one batch (vectorised), and the lists published."""
        seconds = np.asarray(seconds, dtype=np.float64)
        self.publish_latency.observe_many(seconds)
        self._published += len(seconds) if n_published is None else n_published

    def set_quality(self, auc: float | None = None, hr_at_10: float | None = None,
                    ndcg_at_10: float | None = None) -> None:
        """Rolling metrics of the live prequential evaluator (None leaves a value unchanged)."""
        q = self._quality
        if auc is not None:
            q["auc"] = float(auc)
        if hr_at_10 is not None:
            q["hr_at_10"] = float(hr_at_10)
        if ndcg_at_10 is not None:
            q["ndcg_at_10"] = float(ndcg_at_10)

    def set_quality_from(self, rolling: Mapping[str, float]) -> None:
        """From `learners.evaluate.PrequentialEvaluator.rolling()` (keys "auc", "hr@10", "ndcg@10")."""
        self.set_quality(rolling.get("auc"), rolling.get("hr@10"), rolling.get("ndcg@10"))

    def set_model_version(self, version: int) -> None:
        self._version = int(version)

    def observe_finetune(self, seconds: float, n_samples: int, version: int | None = None) -> None:
        self.finetune_duration.observe(seconds)
        self._finetune_rate = n_samples / seconds if seconds > 0 else math.nan
        if version is not None:
            self._version = int(version)

    def set_sizes(self, users: int, items: int) -> None:
        self._users, self._items = int(users), int(items)

    def mark_checkpoint(self, when: float | None = None) -> None:
        self._last_checkpoint = time.time() if when is None else float(when)

    # -- reading ------------------------------------------------------------------------------------
    @property
    def events_applied_total(self) -> int:
        return self._applied

    @property
    def events_consumed_total(self) -> int:
        return self._consumed

    @property
    def current_model_version(self) -> int:
        return self._version

    @property
    def lag_total(self) -> int:
        return sum(list(self._lag.values()))  # list(): atomic copy if a scrape thread reads

    def summary(self) -> dict[str, Any]:
        """JSON-able current values, for `/health` and the dashboard header."""
        return {
            "events_consumed": self._consumed,
            "events_applied": self._applied,
            "recommendations_published": self._published,
            "dlq": dict(self._dlq),
            "dlq_total": sum(self._dlq.values()),
            "lag": {f"{t}:{p}": v for (t, p), v in list(self._lag.items())},
            "lag_total": self.lag_total,
            "model_version": self._version,
            "users_held": self._users,
            "items_held": self._items,
            "drift_detections": self._drift,
            "quality": {k: _json_float(v) for k, v in self._quality.items()},
        }

    def text(self) -> bytes:
        """The registry in the Prometheus text exposition format (content type `METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _StreamCollector:
    """Builds `StreamMetrics`' series from its plain values when the registry is collected."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.m = metrics

    def describe(self) -> list[Any]:
        return list(self._families(describe=True))

    def collect(self) -> Iterable[Any]:
        return self._families(describe=False)

    def _families(self, describe: bool) -> Iterable[Any]:
        m, ns = self.m, self.m.namespace

        def counter(name: str, doc: str, value: float | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(f"{ns}_{name}", doc, value=None if describe else value)

        def gauge(name: str, doc: str, value: float | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{ns}_{name}", doc, value=None if describe else value)

        yield counter("events_consumed", "Events read from the interactions topic", m._consumed)
        yield counter("events_applied", "Valid events applied to the learner state", m._applied)
        yield counter("recommendations_published", "Top-K lists published", m._published)
        yield counter("drift_detections", "Drops of the rolling hit rate detected (the learner adapted)",
                      m._drift)
        dlq = CounterMetricFamily(f"{ns}_dlq_events", "Events sent to the dead-letter topic, by reason",
                                  labels=["reason"])
        lag = GaugeMetricFamily(f"{ns}_consumer_lag", "Messages behind the partition's high watermark",
                                labels=["topic", "partition"])
        if not describe:
            for reason, n in list(m._dlq.items()):
                dlq.add_metric([reason], n)
            for (topic, partition), n in list(m._lag.items()):
                lag.add_metric([topic, partition], n)
        yield dlq
        yield lag
        q = m._quality
        window = "over the live prequential evaluator's window"
        yield gauge("rolling_auc", f"AUC {window}", q["auc"])
        yield gauge("rolling_hr_at_10", f"Hit rate @10 {window}", q["hr_at_10"])
        yield gauge("rolling_ndcg_at_10", f"NDCG@10 {window}", q["ndcg_at_10"])
        yield gauge("model_version", "Version of the model serving recommendations", m._version)
        yield gauge("finetune_samples_per_second", "Training throughput of the last fine-tune",
                    m._finetune_rate)
        yield gauge("users_held", "Users with state in this worker", m._users)
        yield gauge("items_held", "Items with state in this worker", m._items)
        yield gauge("last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint (0: none yet)",
                    m._last_checkpoint)
        yield gauge("uptime_seconds", "Seconds since the metrics were created", time.time() - m.started)
        for histogram in (m.batch_update, m.publish_latency, m.finetune_duration):
            yield from (histogram.describe() if describe else histogram.collect())


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


_FIELDS = ("t", "auc", "hr_at_10", "ndcg_at_10", "events_per_s", "lag")


class SeriesRecorder:
    """Bounded time series of the live service for the dashboard (numpy ring buffers).

    Call `record` once per micro-batch; it keeps at most one sample per `min_interval` seconds and
    derives events/s from the cumulative `events_total`, so skipped calls lose nothing. Fine-tune
    moments go to their own ring with `mark_finetune`. Thread-safe: the web view may read from
    another thread than the worker writes from.
    """

    def __init__(self, capacity: int = 3600, min_interval: float = 1.0, finetune_capacity: int = 512) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.capacity = int(capacity)
        self.min_interval = float(min_interval)
        self.finetune_capacity = int(finetune_capacity)
        self._data = np.full((len(_FIELDS), self.capacity), np.nan)
        self._n = 0  # samples ever recorded
        self._last_t = -math.inf
        self._last_events: float | None = None
        self._ft = np.full((4, self.finetune_capacity), np.nan)  # t, seconds, samples, version
        self._n_ft = 0
        self._lock = threading.Lock()

    def record(self, events_total: float, auc: float | None = None, hr_at_10: float | None = None,
               ndcg_at_10: float | None = None, lag: float | None = None, now: float | None = None) -> bool:
        """Add a sample unless the previous one is younger than `min_interval`; True when added."""
        now = time.time() if now is None else float(now)
        if now - self._last_t < self.min_interval:
            return False
        with self._lock:
            if self._last_events is None or now <= self._last_t:
                rate = math.nan
            else:
                rate = (events_total - self._last_events) / (now - self._last_t)
            i = self._n % self.capacity
            self._data[:, i] = (now, _nan(auc), _nan(hr_at_10), _nan(ndcg_at_10), rate, _nan(lag))
            self._n += 1
            self._last_t = now
            self._last_events = float(events_total)
        return True

    def record_from(self, metrics: StreamMetrics, now: float | None = None) -> bool:
        """`record` with the current values of `metrics` (what the worker calls once per micro-batch)."""
        if (time.time() if now is None else now) - self._last_t < self.min_interval:
            return False  # cheap early exit before reading anything
        q = metrics._quality
        return self.record(metrics._applied, q["auc"], q["hr_at_10"], q["ndcg_at_10"], metrics.lag_total, now)

    def mark_finetune(self, seconds: float, n_samples: int, version: int | None = None,
                      now: float | None = None) -> None:
        now = time.time() if now is None else float(now)
        with self._lock:
            self._ft[:, self._n_ft % self.finetune_capacity] = (now, seconds, n_samples, _nan(version))
            self._n_ft += 1

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """The series in time order as JSON-able lists (NaN -> None), optionally only after `since`."""
        with self._lock:
            data = _ordered(self._data, self._n, self.capacity)
            ft = _ordered(self._ft, self._n_ft, self.finetune_capacity)
        if since is not None:
            data = data[:, data[0] > since]
            ft = ft[:, ft[0] > since]
        out: dict[str, Any] = {name: _json_list(row) for name, row in zip(_FIELDS, data, strict=True)}
        out["finetunes"] = [
            {"t": t, "seconds": s, "samples": int(n), "version": None if math.isnan(v) else int(v)}
            for t, s, n, v in ft.T.tolist()
        ]
        out["now"] = time.time()
        out["capacity"] = self.capacity
        return out


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _ordered(ring: np.ndarray, n: int, capacity: int) -> np.ndarray:
    if n <= capacity:
        return ring[:, :n].copy()
    start = n % capacity
    return np.concatenate([ring[:, start:], ring[:, :start]], axis=1)


def _json_list(row: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in row.tolist()]  # v != v: NaN
