"""The live dashboard in a real headless Chromium, against the real HTTP endpoints fed by a learner
that replays a synthetic stream prequentially while the test runs."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import pytest
from chromium import check_dashboard, find_chromium
from live_feed import LiveFeed

from learners.popularity import DecayedPopularity
from stream.http import BackgroundServer, LiveService
from stream.metrics import SeriesRecorder, StreamMetrics

pytestmark = pytest.mark.browser

OUT = Path(__file__).resolve().parents[2] / "out"


@pytest.fixture
def live_server():
    metrics = StreamMetrics()
    recorder = SeriesRecorder(min_interval=0.25)
    feed = LiveFeed(metrics, recorder, events_per_s=2_000.0)
    service = LiveService(feed.model, metrics, recorder)
    feed.start()
    with BackgroundServer(service) as server:
        yield server, feed
    feed.stop()
    assert feed.error is None, feed.error


@pytest.mark.skipif(find_chromium() is None,
                    reason="no chromium binary (./run test installs Debian's chromium)")
def test_dashboard_plots_growing_live_series(live_server):
    server, feed = live_server
    png = OUT / "dashboard.png"
    report = check_dashboard(server.url, png, min_points=3, grow_timeout=30, finetunes=True)
    print(f"\ndashboard screenshot: {report['screenshot']}")

    before, after = report["before"], report["after"]
    for chart in ("quality", "throughput", "lag"):
        assert after[chart] > before[chart] >= 3, (chart, before, after)
    assert after["finetunes"] >= 1
    # The data attributes a test (or a human) can read agree with the JS global.
    assert report["data_points"]["chart-quality"] >= after["quality"]
    # Lines were really drawn in each series' colour.
    for name, pixels in report["pixels"].items():
        assert pixels > 50, (name, report["pixels"])
    assert report["exceptions"] == [] and report["errors"] == 0, report
    assert report["status"].startswith("live")

    # The numbers shown are the service's real, current values (the feed keeps moving: compare loosely).
    series = json.loads(urllib.request.urlopen(server.url + "/api/series", timeout=5).read())
    hr_shown = float(report["tiles"]["HR@10"])
    auc_shown = float(report["tiles"]["AUC"])
    assert 0.0 < hr_shown < 1.0 and 0.5 < auc_shown < 1.0
    recent_hr = [v for v in series["hr_at_10"][-40:] if v is not None]
    assert min(recent_hr) - 0.05 <= hr_shown <= max(recent_hr) + 0.05
    assert int(report["tiles"]["events applied"].replace(",", "")) > 0
    assert int(report["tiles"]["model version"]) >= 1
    rates = [v for v in series["events_per_s"] if v is not None and math.isfinite(v)]
    assert rates and 200 < sorted(rates)[len(rates) // 2] < 20_000  # paced at ~2000/s
    assert png.stat().st_size > 10_000


def test_learner_behind_the_dashboard_is_real():
    """The feed's numbers come from a learner: popularity beats chance on the synthetic stream."""
    metrics, recorder = StreamMetrics(), SeriesRecorder(min_interval=0.0)
    feed = LiveFeed(metrics, recorder, n_events=4_000, events_per_s=1e9, refit_every=10)
    feed.run()  # synchronously
    assert feed.error is None and feed.position == 4_000
    summary = metrics.summary()
    assert summary["events_applied"] == 4_000 and summary["lag_total"] == 0
    assert summary["quality"]["auc"] > 0.55  # chance is 0.5
    assert summary["model_version"] == 4
    assert isinstance(feed.model, DecayedPopularity)
    assert len(recorder.snapshot()["finetunes"]) == 4
