"""The worker's own `/dashboard` in headless Chromium while events flow through Kafka into the worker."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from learners.synthetic import generate
from stream.config import Settings
from stream.producer import encode_events, make_producer, send_records
from stream.worker import WorkerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from chromium import check_dashboard, find_chromium  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "out"
RATE = 400.0  # events/s: the stream keeps flowing for the whole check (~25 s of events)


@pytest.mark.browser
@pytest.mark.skipif(find_chromium() is None, reason="no chromium (./run test installs it)")
def test_dashboard_of_the_worker_grows_while_events_flow(kafka_bootstrap: str, topic_prefix: str,
                                                           tmp_path: Path) -> None:
    log = generate(n_events=10_000, seed=11).log
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--batch-timeout", "0.05"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        sending = threading.Thread(
            target=send_records, args=(producer, settings.topic("interactions"), encode_events(log), RATE),
            daemon=True)
        sending.start()
        try:
            report = check_dashboard(f"http://127.0.0.1:{worker.web_port}", OUT / "dashboard-kafka.png",
                                     min_points=3, grow_timeout=60.0)
            applied_while_watched = worker.health()["events_applied"]
            web = f"http://127.0.0.1:{worker.web_port}/recommendations"
            with urllib.request.urlopen(f"{web}/{log.user[0]}?k=5", timeout=10) as r:
                known = json.loads(r.read())
            with urllib.request.urlopen(f"{web}/never-seen-user?k=5", timeout=10) as r:
                stranger = json.loads(r.read())
        finally:
            sending.join(timeout=60)
            producer.close()
    print(f"screenshot: {report['screenshot']}")
    # the plotted series grew while the page was open, and what it shows is real, not placeholders
    after, before = report["after"], report["before"]
    assert after["quality"] > before["quality"] and after["throughput"] > before["throughput"]
    assert not report["exceptions"] and not report["errors"]
    assert 0 < applied_while_watched < len(log)  # the page was checked mid-stream
    hr_shown, auc_shown = float(report["tiles"]["HR@10"]), float(report["tiles"]["AUC"])
    assert 0.0 < hr_shown < 1.0 and 0.5 < auc_shown <= 1.0  # the synthetic stream is learnable
    assert int(report["tiles"]["events applied"].replace(",", "")) > 0
    assert report["pixels"]["auc"] > 50 and report["pixels"]["events_per_s"] > 50
    assert Path(report["screenshot"]).stat().st_size > 10_000
    # the same worker answers over HTTP: a known user, and a stranger with the flagged cold-start list
    assert known["known_user"] is True and known["cold_start"] is False and len(known["items"]) == 5
    assert stranger["known_user"] is False and stranger["cold_start"] is True and stranger["items"]
