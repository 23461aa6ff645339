"""Prometheus metrics, the dashboard's time series, and the HTTP endpoints on a real aiohttp server."""

from __future__ import annotations

import asyncio
import json
import math
import re
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from learners.popularity import DecayedPopularity
from learners.synthetic import generate
from stream.http import K_MAX, USER_ID_MAX, BackgroundServer, LiveService, register_routes
from stream.metrics import PUBLISH_LATENCY_BUCKETS, BatchHistogram, SeriesRecorder, StreamMetrics


def samples(metrics: StreamMetrics) -> dict[tuple[str, tuple], float]:
    """Parse the exposition text back: {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(metrics.text().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# -- StreamMetrics ---------------------------------------------------------------------------------
def test_metrics_text_carries_real_values():
    m = StreamMetrics()
    m.observe_batch(n_consumed=120, n_applied=117, seconds=0.004)
    m.observe_batch(n_consumed=80, seconds=0.03)
    m.observe_dlq("bad_json", 2)
    m.observe_dlq("unknown_type")
    m.set_lag({"interactions:0": 12, ("interactions", 1): 0})
    m.set_lag({"interactions:0": 5})
    m.set_quality(auc=0.83, hr_at_10=0.21, ndcg_at_10=0.12)
    m.observe_finetune(seconds=2.0, n_samples=10_000, version=7)
    m.set_sizes(users=600, items=400)
    m.mark_checkpoint(1_700_000_000.0)
    s = samples(m)
    assert s[("streamrec_events_consumed_total", ())] == 200
    assert s[("streamrec_events_applied_total", ())] == 197
    assert s[("streamrec_dlq_events_total", (("reason", "bad_json"),))] == 2
    assert s[("streamrec_dlq_events_total", (("reason", "unknown_type"),))] == 1
    assert s[("streamrec_consumer_lag", (("partition", "0"), ("topic", "interactions")))] == 5
    assert s[("streamrec_consumer_lag", (("partition", "1"), ("topic", "interactions")))] == 0
    assert s[("streamrec_batch_update_seconds_count", ())] == 2
    assert s[("streamrec_batch_update_seconds_sum", ())] == pytest.approx(0.034)
    assert s[("streamrec_batch_update_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("streamrec_rolling_auc", ())] == pytest.approx(0.83)
    assert s[("streamrec_rolling_hr_at_10", ())] == pytest.approx(0.21)
    assert s[("streamrec_rolling_ndcg_at_10", ())] == pytest.approx(0.12)
    assert s[("streamrec_model_version", ())] == 7
    assert s[("streamrec_finetune_samples_per_second", ())] == pytest.approx(5_000)
    assert s[("streamrec_finetune_duration_seconds_count", ())] == 1
    assert s[("streamrec_users_held", ())] == 600 and s[("streamrec_items_held", ())] == 400
    assert s[("streamrec_last_checkpoint_timestamp_seconds", ())] == 1_700_000_000.0
    summary = m.summary()
    assert summary["events_applied"] == 197 and summary["dlq"] == {"bad_json": 2, "unknown_type": 1}
    assert summary["lag_total"] == 5 and summary["model_version"] == 7
    assert summary["quality"] == {"auc": 0.83, "hr_at_10": 0.21, "ndcg_at_10": 0.12}


def test_quality_is_nan_until_measured_and_registries_are_independent():
    a, b = StreamMetrics(), StreamMetrics()
    a.observe_batch(5)
    assert math.isnan(samples(a)[("streamrec_rolling_hr_at_10", ())])
    assert a.summary()["quality"]["hr_at_10"] is None  # JSON-safe
    assert samples(b)[("streamrec_events_consumed_total", ())] == 0
    assert samples(a)[("streamrec_events_consumed_total", ())] == 5


def test_batch_histogram_matches_prometheus_histogram():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(-4, 2, 5_000), PUBLISH_LATENCY_BUCKETS, [0.0, 99.0, np.nan]])
    registry = CollectorRegistry()
    # A small pending buffer exercises every path: buffered, flush-then-buffer, and too big to buffer.
    ours = BatchHistogram("ours_seconds", "vectorised", PUBLISH_LATENCY_BUCKETS, registry, pending=1000)
    reference = Histogram("ref_seconds", "one by one", buckets=PUBLISH_LATENCY_BUCKETS, registry=registry)
    chunks = np.split(values, [3, 700, 1500, 4000])
    assert max(map(len, chunks)) > 1000
    for chunk in chunks:
        ours.observe_many(chunk)
    for v in values[:5]:
        ours.observe(float(v))
        reference.observe(float(v))
    for v in values[np.isfinite(values)]:
        reference.observe(float(v))
    got = {(s.name, tuple(s.labels.items())): s.value
           for fam in text_string_to_metric_families(__import__("prometheus_client").generate_latest(registry)
                                                     .decode()) for s in fam.samples}
    for le in [*map(str, PUBLISH_LATENCY_BUCKETS), "+Inf"]:
        assert got[("ours_seconds_bucket", (("le", le),))] == got[("ref_seconds_bucket", (("le", le),))], le
    assert got[("ours_seconds_count", ())] == got[("ref_seconds_count", ())] == np.isfinite(values).sum() + 5
    assert got[("ours_seconds_sum", ())] == pytest.approx(got[("ref_seconds_sum", ())])
    assert ours.quantile(1.0) == math.inf and ours.quantile(0.01) <= 0.005


# -- SeriesRecorder --------------------------------------------------------------------------------
def test_series_recorder_ring_rate_throttle_and_since():
    rec = SeriesRecorder(capacity=5, min_interval=1.0)
    assert rec.record(events_total=0, auc=0.5, now=100.0)
    assert not rec.record(events_total=50, auc=0.9, now=100.4)  # too soon: skipped
    for i in range(1, 8):
        assert rec.record(events_total=100 * i, auc=0.5 + i / 100, hr_at_10=i / 10, lag=10 - i, now=100.0 + i)
    rec.mark_finetune(seconds=1.5, n_samples=3000, version=2, now=104.5)
    snap = rec.snapshot()
    assert len(rec) == 5 and snap["t"] == [103.0, 104.0, 105.0, 106.0, 107.0]
    assert snap["events_per_s"] == [100.0] * 5  # derived from the cumulative count
    assert snap["lag"] == [7.0, 6.0, 5.0, 4.0, 3.0]
    assert snap["ndcg_at_10"] == [None] * 5  # never given: null, not NaN
    assert snap["finetunes"] == [{"t": 104.5, "seconds": 1.5, "samples": 3000, "version": 2}]
    json.dumps(snap, allow_nan=False)  # strict JSON
    later = rec.snapshot(since=105.0)
    assert later["t"] == [106.0, 107.0] and later["finetunes"] == []
    with pytest.raises(ValueError):
        SeriesRecorder(capacity=1)


def test_series_record_from_metrics():
    metrics, rec = StreamMetrics(), SeriesRecorder(min_interval=1.0)
    metrics.observe_batch(100)
    metrics.set_quality(auc=0.7, hr_at_10=0.2)
    metrics.set_lag({"interactions:0": 30, "interactions:1": 12})
    assert rec.record_from(metrics, now=10.0)
    metrics.observe_batch(50)
    assert not rec.record_from(metrics, now=10.5)  # throttled
    metrics.observe_batch(50)
    assert rec.record_from(metrics, now=12.0)
    snap = rec.snapshot()
    assert snap["t"] == [10.0, 12.0] and snap["events_per_s"] == [None, 50.0]
    assert snap["hr_at_10"] == [0.2, 0.2] and snap["lag"] == [42.0, 42.0]
    assert snap["ndcg_at_10"] == [None, None]


def test_series_first_rate_unknown_and_finetune_ring_bounded():
    rec = SeriesRecorder(capacity=10, min_interval=0.0, finetune_capacity=3)
    rec.record(events_total=10, now=1.0)
    assert rec.snapshot()["events_per_s"] == [None]
    for i in range(5):
        rec.mark_finetune(seconds=i, n_samples=10, now=float(i))
    assert [f["seconds"] for f in rec.snapshot()["finetunes"]] == [2.0, 3.0, 4.0]


# -- HTTP --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    m = DecayedPopularity(half_life=500.0)
    m.learn_many(generate(n_events=3_000, seed=5).log)
    return m


@pytest.fixture
def server(model):
    metrics, recorder = StreamMetrics(), SeriesRecorder(min_interval=0.0)
    metrics.observe_batch(3_000, 2_990, 0.01)
    metrics.observe_dlq("bad_json", 10)
    metrics.set_quality(auc=0.7, hr_at_10=0.15)
    metrics.set_model_version(3)
    for i in range(4):
        recorder.record(events_total=1_000 * i, auc=0.6 + i / 100, hr_at_10=0.1, lag=40 - i, now=1_000.0 + i)
    recorder.mark_finetune(2.5, 4_096, version=3, now=1_002.5)
    service = LiveService(model, metrics, recorder, known_user=lambda u: u.startswith("u"))
    service.note_checkpoint("/state/ckpt-000000000004", {"interactions:0": 2_990, "interactions:1": 5},
                            created=1_234.0)
    with BackgroundServer(service) as srv:
        yield srv


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_metrics_endpoint(server):
    status, headers, body = get(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert re.search(r"^streamrec_events_applied_total 2990\.0$", text, re.M)
    assert 'streamrec_dlq_events_total{reason="bad_json"} 10.0' in text
    assert "streamrec_last_checkpoint_timestamp_seconds 1234.0" in text


def test_health_endpoint(server):
    status, headers, body = get(server.url + "/health")
    health = json.loads(body)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert health["status"] == "ok" and health["events_applied"] == 2_990
    assert health["dlq"] == {"bad_json": 10} and health["model_version"] == 3
    assert health["checkpoint"] == {"path": "/state/ckpt-000000000004", "created": 1234.0,
                                    "offsets": {"interactions:0": 2_990, "interactions:1": 5}}
    assert health["quality"]["ndcg_at_10"] is None  # not measured: null


def test_recommendations_endpoint(server, model):
    status, _, body = get(server.url + "/recommendations/u42?k=5")
    data = json.loads(body)
    assert status == 200 and data["user_id"] == "u42" and data["k"] == 5 and data["model_version"] == 3
    assert data["known_user"] is True and data["cold_start"] is False
    expected = model.recommend(["u42"], 5)[0]
    assert [(i["item_id"], i["source"]) for i in data["items"]] == [(r.item_id, r.source) for r in expected]
    assert [i["rank"] for i in data["items"]] == [1, 2, 3, 4, 5]
    scores = [i["score"] for i in data["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    # Default k, URL-encoded ids, unknown users (cold start list, flagged).
    assert len(json.loads(get(server.url + "/recommendations/u1")[2])["items"]) == 10
    status, _, body = get(server.url + "/recommendations/new%20visitor%E2%9C%93?k=3")
    data = json.loads(body)
    assert status == 200 and data["user_id"] == "new visitor✓" and data["known_user"] is False
    assert data["cold_start"] is True and len(data["items"]) == 3
    assert len(json.loads(get(server.url + f"/recommendations/u?k={K_MAX}")[2])["items"]) <= K_MAX
    assert get(server.url + "/recommendations/" + "u" * USER_ID_MAX)[0] == 200


@pytest.mark.parametrize("query, error", [
    ("k=0", "invalid_k"), (f"k={K_MAX + 1}", "invalid_k"), ("k=-1", "invalid_k"), ("k=abc", "invalid_k"),
    ("k=1.5", "invalid_k"), ("k=99999999999999999999", "invalid_k"),
])
def test_recommendations_bad_k(server, query, error):
    status, headers, body = get(server.url + "/recommendations/u1?" + query)
    data = json.loads(body)
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert data["error"] == error and "1..100" in data["detail"]


@pytest.mark.parametrize("user", ["u" * (USER_ID_MAX + 1), "a%00b", "tab%09id"])
def test_recommendations_bad_user(server, user):
    status, _, body = get(server.url + "/recommendations/" + user)
    assert status == 400 and json.loads(body)["error"] == "invalid_user_id"


def test_series_endpoint(server):
    status, _, body = get(server.url + "/api/series")
    data = json.loads(body)
    assert status == 200
    assert data["t"] == [1000.0, 1001.0, 1002.0, 1003.0]
    assert data["auc"] == pytest.approx([0.6, 0.61, 0.62, 0.63])
    assert data["events_per_s"] == [None, 1000.0, 1000.0, 1000.0]
    assert data["finetunes"] == [{"t": 1002.5, "seconds": 2.5, "samples": 4096, "version": 3}]
    assert data["current"]["events_applied"] == 2_990
    assert json.loads(get(server.url + "/api/series?since=1001.5")[2])["t"] == [1002.0, 1003.0]
    status, _, body = get(server.url + "/api/series?since=yesterday")
    assert status == 400 and json.loads(body)["error"] == "invalid_since"


def test_dashboard_is_served_locally(server):
    status, headers, body = get(server.url + "/dashboard")
    html = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert 'src="/dashboard/dashboard.js"' in html and "http" not in html.replace("http-equiv", "")
    for chart in ("quality", "throughput", "lag", "finetunes"):
        assert f'id="chart-{chart}" data-points="0"' in html
    status, headers, js = get(server.url + "/dashboard/dashboard.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"/api/series" in js
    status, headers, css = get(server.url + "/dashboard/dashboard.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css")
    for asset in (js, css):  # nothing fetched from elsewhere
        assert b"http://" not in asset and b"https://" not in asset and b"@import" not in asset
    assert get(server.url + "/dashboard/../stream/http.py")[0] == 404
    assert get(server.url + "/dashboard/secret.py")[0] == 404


def test_endpoints_are_read_only(server):
    request = urllib.request.Request(server.url + "/health", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 405


def test_failing_service_gives_clean_500():
    class Broken:
        def recommend(self, user_ids, k=10):
            raise RuntimeError("model exploded")

    service = LiveService(Broken(), StreamMetrics(), SeriesRecorder())
    with BackgroundServer(service) as srv:
        status, _, body = get(srv.url + "/recommendations/u1")
    data = json.loads(body)
    assert status == 500 and data["error"] == "internal" and "exploded" not in body.decode()


def test_register_routes_on_a_faust_app(model):
    faust = pytest.importorskip("faust")
    from aiohttp.test_utils import TestClient, TestServer

    app = faust.App("streamrec-http-test", broker="kafka://127.0.0.1:1", store="memory://", web_port=6066)
    metrics = StreamMetrics()
    metrics.observe_batch(42)
    register_routes(app, LiveService(model, metrics, SeriesRecorder()))

    async def exercise() -> tuple[int, dict, int]:
        web_app = await app.web.wsgi()  # the aiohttp Application Faust serves, its own routes applied
        async with TestClient(TestServer(web_app)) as client:
            health = await (await client.get("/health")).json()
            recs = await client.get("/recommendations/u1?k=3")
            bad = await client.get("/recommendations/u1?k=0")
            return health, (await recs.json()), bad.status

    health, recs, bad_status = asyncio.run(exercise())
    assert health["events_applied"] == 42 and len(recs["items"]) == 3 and bad_status == 400


def test_register_routes_refuses_other_targets():
    with pytest.raises(TypeError, match="aiohttp"):
        register_routes(object(), None)  # type: ignore[arg-type]


# -- deploy/: Grafana and Prometheus refer to series that exist ------------------------------------
DEPLOY = __import__("pathlib").Path(__file__).resolve().parents[1] / "deploy"


def exposed_sample_names() -> set[str]:
    m = StreamMetrics()
    m.observe_dlq("x")
    m.set_lag({"t:0": 1})
    families = {f.name for f in text_string_to_metric_families(m.text().decode())}
    return families | {name for (name, _labels) in samples(m)}


def test_grafana_and_alerts_use_existing_metric_names():
    exposed = exposed_sample_names()
    dashboard_text = (DEPLOY / "grafana/dashboards/streamrec.json").read_text()
    dashboard = json.loads(dashboard_text)
    alerts = (DEPLOY / "prometheus/alerts.yml").read_text()
    for source, text in (("dashboard", dashboard_text), ("alerts", alerts)):
        used = set(re.findall(r"\bstreamrec_[a-z0-9_]+", text))
        assert used, source
        assert used <= exposed, (source, sorted(used - exposed))
    # Every panel queries the provisioned datasource, whose uid the provisioning file fixes.
    datasource = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert re.search(r"^\s+uid: prometheus$", datasource, re.M) and "http://prometheus:9090" in datasource
    assert all(p["datasource"]["uid"] == "prometheus" for p in dashboard["panels"])
    provider = (DEPLOY / "grafana/provisioning/dashboards/streamrec.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in provider
    for alert in ("StreamrecConsumerLagGrowing", "StreamrecHitRateFalling", "StreamrecDLQRateHigh"):
        assert f"- alert: {alert}" in alerts


def test_note_checkpoint_accepts_tuple_keys(model):
    metrics = StreamMetrics()
    service = LiveService(model, metrics, SeriesRecorder())
    service.note_checkpoint("/s/ckpt-000000000001", {("interactions", 2): 17}, created=5.0)
    assert service.health()["checkpoint"]["offsets"] == {"interactions:2": 17}
    assert samples(metrics)[("streamrec_last_checkpoint_timestamp_seconds", ())] == 5.0
