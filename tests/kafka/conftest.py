"""Fixtures for tests that need a real Apache Kafka broker.

One broker per test session, on a free loopback port, with its state in a temp dir (a user's own
broker and data are never touched); the jars come from the shared cache (`streamrec kafka fetch`).
Set `STREAMREC_TEST_BOOTSTRAP=HOST:PORT` to run against a broker that is already up instead; tests
that stop the broker (`local_kafka`) are then skipped, since they cannot control it.
A missing `java` or `mvn` fails these tests with the reason: they are never skipped silently.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import BrokerError, LocalKafka, free_port, streamrec_home, wait_ready

EXTERNAL = os.environ.get("STREAMREC_TEST_BOOTSTRAP")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is a `kafka` test: `pytest -m "not kafka"` runs the rest."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plays `$STREAMREC_HOME` for the test broker's state: `<this>/broker-<port>/`."""
    return tmp_path_factory.mktemp("streamrec-home")


@pytest.fixture(scope="session")
def _session_kafka(kafka_state_home: Path) -> Iterator[LocalKafka | None]:
    if EXTERNAL:
        try:
            wait_ready(EXTERNAL, timeout=30)
        except BrokerError as exc:
            pytest.fail(f"STREAMREC_TEST_BOOTSTRAP={EXTERNAL}: {exc}", pytrace=False)
        yield None
        return
    port = free_port()
    kafka = LocalKafka(
        port=port, home=streamrec_home(), state_dir=kafka_state_home / f"broker-{port}",
        heap="384m", die_with_parent=True,
    )
    try:
        kafka.up(timeout=120)
    except BrokerError as exc:
        kafka.down()
        pytest.fail(f"the test Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.down()


@pytest.fixture(scope="session")
def kafka_bootstrap(_session_kafka: LocalKafka | None) -> str:
    """`"127.0.0.1:PORT"` of the session's broker."""
    return EXTERNAL if _session_kafka is None else _session_kafka.bootstrap


@pytest.fixture
def local_kafka(_session_kafka: LocalKafka | None) -> Iterator[LocalKafka]:
    """The session's `LocalKafka`, for tests that stop, kill or restart it; it is up again afterwards."""
    if _session_kafka is None:
        pytest.skip("STREAMREC_TEST_BOOTSTRAP names an external broker, which tests cannot stop")
    yield _session_kafka
    if not _session_kafka.is_running():
        _session_kafka.up(timeout=120)


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix no other test uses, e.g. `t-test-round-trip-1a2b3c4d-`: topics never leak between tests."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"t-{name}-{uuid.uuid4().hex[:8]}-"
