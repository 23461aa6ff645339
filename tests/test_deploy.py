"""docker-compose.yml scales the worker (no Docker engine runs here, so the files are checked by parsing)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_worker_service_can_be_scaled() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker  # a fixed name allows one replica only
    for port in worker.get("ports", []):
        host_port, container_port = str(port).split(":")[-2:]  # [ip:]host:container
        assert host_port == "" and container_port == "6066", port  # no fixed host port per replica
    # state: an anonymous volume (one per replica), never a named volume all replicas would share
    assert worker["volumes"] == ["/data"] and worker["environment"]["STREAMREC_STATE_DIR"] == "/data"
    named = set(_compose().get("volumes") or {})
    assert not any(str(v).split(":")[0] in named for v in worker["volumes"])
    # every replica in one consumer group: no per-replica app id or topic prefix
    assert "--app-id" not in worker["command"] and "--topic-prefix" not in worker["command"]


def test_prometheus_discovers_every_worker_replica() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "streamrec")
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A" and sd["port"] == 6066
    mounted = _compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted
