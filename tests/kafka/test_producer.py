"""`streamrec produce`: time order, --limit, deterministic event ids, --items, --rate, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from learners.base import ItemMeta
from learners.datasets import write_items_jsonl
from stream.cli import main
from stream.publisher import read_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def movielens_log(tmp_path: Path) -> Path:
    """A small u.data-style log written out of time order (user item rating ts)."""
    lines = [f"{u}\t{i}\t{1 + (u * i) % 5}\t{1000 + (u * 37 + i * 11) % 500}"
             for u in range(1, 13) for i in range(1, 9)]
    path = tmp_path / "u.data"
    path.write_text("\n".join(lines) + "\n")
    return path


def produce(bootstrap: str, prefix: str, *args: str) -> int:
    return main(["produce", "--bootstrap", bootstrap, "--topic-prefix", prefix, "--no-progress", *args])


def events(bootstrap: str, topic: str) -> list[tuple[bytes, dict]]:
    return [(r.key, json.loads(r.value)) for r in read_topic(bootstrap, topic, timeout=20)]


def test_same_log_twice_gives_same_event_ids_in_time_order(
        kafka_bootstrap: str, topic_prefix: str, movielens_log: Path) -> None:
    assert produce(kafka_bootstrap, topic_prefix + "a.", "--data", str(movielens_log),
                   "--format", "movielens") == 0
    assert produce(kafka_bootstrap, topic_prefix + "b.", "--data", str(movielens_log),
                   "--format", "movielens") == 0
    first = events(kafka_bootstrap, topic_prefix + "a.interactions")
    second = events(kafka_bootstrap, topic_prefix + "b.interactions")
    assert len(first) == len(second) == 12 * 8
    ids = [e["event_id"] for _, e in first]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(e["event_id"] for _, e in second)
    for key, event in first:
        assert key == event["user_id"].encode()  # key = user id: a user's events share a partition
        assert event["type"] == "rating" and 1 <= event["value"] <= 5
    by_user: dict[str, list[float]] = {}
    for _, event in first:  # within a partition, and so per user, events arrive in time order
        by_user.setdefault(event["user_id"], []).append(event["ts"])
    assert all(ts == sorted(ts) for ts in by_user.values())


def test_limit_takes_the_first_events_in_time_order(
        kafka_bootstrap: str, topic_prefix: str, movielens_log: Path) -> None:
    assert produce(kafka_bootstrap, topic_prefix, "--data", str(movielens_log), "--limit", "10") == 0
    got = sorted(e["ts"] for _, e in events(kafka_bootstrap, topic_prefix + "interactions"))
    every_ts = sorted(float(line.split("\t")[3]) for line in movielens_log.read_text().splitlines())
    assert got == every_ts[:10]


def test_csv_with_mapped_columns_gets_deterministic_ids(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("timestamp,visitorid,event,itemid,transactionid\n"
                    "1433221999827,257597,addtocart,355908,\n"
                    "1433221332117,257597,view,355908,\n"
                    "1433223236124,287857,transaction,5206,4000\n")
    flags = ("--data", str(path), "--format", "csv", "--columns",
             "user=visitorid,item=itemid,ts=timestamp,type=event", "--ts-unit", "ms",
             "--types", "addtocart=cart,transaction=purchase")
    assert produce(kafka_bootstrap, topic_prefix + "a.", *flags) == 0
    assert produce(kafka_bootstrap, topic_prefix + "b.", *flags, "--limit", "2") == 0
    first = sorted((e for _, e in events(kafka_bootstrap, topic_prefix + "a.interactions")),
                   key=lambda e: e["ts"])
    second = [e for _, e in events(kafka_bootstrap, topic_prefix + "b.interactions")]
    assert [(e["user_id"], e["item_id"], e["type"], e["ts"]) for e in first] == [
        ("257597", "355908", "view", 1433221332.117), ("257597", "355908", "cart", 1433221999.827),
        ("287857", "5206", "purchase", 1433223236.124)]
    ids = [e["event_id"] for e in first]
    assert len(set(ids)) == 3 and ids[0].endswith(":0") and ids[2].endswith(":2")
    assert sorted(e["event_id"] for e in second) == ids[:2]  # same file and options, same ids


def test_items_are_published(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    catalog = [ItemMeta("n1", "New one", ("jazz", "live"), 5.0), ItemMeta("n2", "Other", (), 6.0)]
    write_items_jsonl(tmp_path / "items.jsonl", catalog)
    assert produce(kafka_bootstrap, topic_prefix, "--items", str(tmp_path / "items.jsonl")) == 0
    got = {key: value for key, value in events(kafka_bootstrap, topic_prefix + "items")}
    assert got == {b"n1": {"item_id": "n1", "title": "New one", "tags": ["jazz", "live"], "ts": 5.0},
                   b"n2": {"item_id": "n2", "title": "Other", "tags": [], "ts": 6.0}}


def test_rate_paces_the_stream(kafka_bootstrap: str, topic_prefix: str, movielens_log: Path) -> None:
    start = time.perf_counter()
    assert produce(kafka_bootstrap, topic_prefix, "--data", str(movielens_log), "--rate", "200") == 0
    assert time.perf_counter() - start >= 95 / 200  # 96 events at 200/s cannot finish sooner


def test_bad_input_is_a_clear_error(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert produce(kafka_bootstrap, topic_prefix, "--data", str(tmp_path / "missing.data")) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.data"
    bad.write_text("1\t2\tthree\t4\n")
    assert produce(kafka_bootstrap, topic_prefix, "--data", str(bad), "--format", "movielens") == 2
    assert "bad.data" in capsys.readouterr().err
    assert produce(kafka_bootstrap, topic_prefix, "--data", str(bad), "--rate", "0") == 2
    assert produce(kafka_bootstrap, topic_prefix) == 2
