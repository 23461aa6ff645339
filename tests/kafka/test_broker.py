"""The local Apache Kafka broker: start/stop/status, real produce/consume, data kept across restarts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from stream.broker import LocalKafka, create_topics, free_port

Messages = list[tuple[bytes, bytes]]


def produce(bootstrap: str, topic: str, messages: Messages) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=30)
    finally:
        producer.close()


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> Messages:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        group_id=None, consumer_timeout_ms=1000,
    )
    got: Messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                got.extend((m.key, m.value) for m in batch)
    finally:
        consumer.close()
    return got


def kafka_processes_on(state_dir: Path) -> list[int]:
    """Pids of live processes whose command line names this state dir (what `down` must leave: none)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(state_dir) in cmdline and state not in ("Z", "X"):
            pids.append(int(proc.name))
    return pids


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", "kafka", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60,
    )


def test_round_trip_keeps_order_per_partition(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = topic_prefix + "events"
    assert create_topics(kafka_bootstrap, [topic], partitions=3) == [topic]
    sent = [(f"user-{i % 7}".encode(), f"event-{i}".encode()) for i in range(200)]
    produce(kafka_bootstrap, topic, sent)

    got = consume_all(kafka_bootstrap, topic, expected=len(sent))
    assert sorted(got) == sorted(sent)
    for user in {k for k, _ in sent}:  # one key lives in one partition, so its events keep their order
        assert [v for k, v in got if k == user] == [v for k, v in sent if k == user]


def test_create_topics_is_idempotent_and_sets_compaction(kafka_bootstrap: str, topic_prefix: str) -> None:
    plain, compact = topic_prefix + "plain", topic_prefix + "state"
    created = create_topics(kafka_bootstrap, [plain, compact], partitions=2, compacted=[compact])
    assert sorted(created) == sorted([plain, compact])
    assert create_topics(kafka_bootstrap, [plain, compact], partitions=2, compacted=[compact]) == []

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([plain, compact])}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in (plain, compact)], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {plain: 2, compact: 2}
    assert {name: c["cleanup.policy"]["value"] for name, c in configs.items()} == {
        plain: "delete", compact: "compact",
    }
    with pytest.raises(ValueError, match="compacted topics must also be in names"):
        create_topics(kafka_bootstrap, [plain], compacted=["other"])


def test_topics_are_auto_created(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = topic_prefix + "auto"
    produce(kafka_bootstrap, topic, [(b"k", b"v")])
    assert consume_all(kafka_bootstrap, topic, expected=1) == [(b"k", b"v")]


def test_up_is_idempotent_and_status_reports_it(local_kafka: LocalKafka) -> None:
    before = local_kafka.status()
    assert before["running"] and before["pid"] > 0
    assert local_kafka.up(timeout=30) < 10  # already running: only the readiness check
    after = local_kafka.status()
    assert after["pid"] == before["pid"]
    assert kafka_processes_on(local_kafka.state_dir) == [before["pid"]]


def test_stop_start_keeps_data_and_down_leaves_no_process(local_kafka: LocalKafka, topic_prefix: str) -> None:
    bootstrap = local_kafka.bootstrap
    topic = topic_prefix + "durable"
    produce(bootstrap, topic, [(b"before", b"restart")])
    pid = local_kafka.status()["pid"]

    assert local_kafka.down() is True
    assert not Path(f"/proc/{pid}").exists() or kafka_processes_on(local_kafka.state_dir) == []
    assert kafka_processes_on(local_kafka.state_dir) == []
    assert local_kafka.status() == {**local_kafka.status(), "running": False, "pid": None}
    assert local_kafka.is_running() is False
    assert local_kafka.down() is False  # stopping twice is harmless

    local_kafka.up(timeout=120)
    assert local_kafka.status()["pid"] != pid
    assert local_kafka.bootstrap == bootstrap
    produce(bootstrap, topic, [(b"after", b"restart")])
    assert consume_all(bootstrap, topic, expected=2) == [(b"before", b"restart"), (b"after", b"restart")]


def test_crash_keeps_acknowledged_data(local_kafka: LocalKafka, topic_prefix: str) -> None:
    topic = topic_prefix + "crash"
    produce(local_kafka.bootstrap, topic, [(b"acked", b"before-crash")])
    assert local_kafka.kill() is True
    assert kafka_processes_on(local_kafka.state_dir) == []
    local_kafka.up(timeout=120)
    assert consume_all(local_kafka.bootstrap, topic, expected=1) == [(b"acked", b"before-crash")]


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        kafka = LocalKafka(port=free_port(), state_dir=tmp_path / "broker")
        kafka.state_dir.mkdir()
        kafka.pid_file.write_text(f"{stranger.pid}\n")  # a stale pid file naming someone else
        assert kafka.is_running() is False
        assert kafka.down() is False
        assert stranger.poll() is None
        assert not kafka.pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_cli_status_exit_codes(local_kafka: LocalKafka, kafka_state_home: Path) -> None:
    env = {"STREAMREC_HOME": str(kafka_state_home)}
    running = cli("status", "--bootstrap", local_kafka.bootstrap, env=env)
    assert running.returncode == 0, running.stderr
    assert f"running pid {local_kafka.status()['pid']} bootstrap {local_kafka.bootstrap}" in running.stdout

    stopped = cli("status", "--bootstrap", f"127.0.0.1:{free_port()}", env=env)
    assert stopped.returncode == 3
    assert stopped.stdout.startswith("not running")


def test_cli_errors_are_one_clear_sentence(tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    env = {"STREAMREC_HOME": str(tmp_path), "PATH": str(empty_path)}
    port = free_port()

    no_java = cli("up", "--bootstrap", f"127.0.0.1:{port}", env=env)
    assert no_java.returncode == 1
    assert "`java` was not found" in no_java.stderr and "Traceback" not in no_java.stderr

    no_mvn = cli("fetch", env=env)  # empty cache: the jars would have to be fetched
    assert no_mvn.returncode == 1
    assert "`mvn` was not found" in no_mvn.stderr and "Traceback" not in no_mvn.stderr

    bad = cli("status", "--bootstrap", "nonsense")
    assert bad.returncode == 1
    assert "HOST:PORT" in bad.stderr and "Traceback" not in bad.stderr
