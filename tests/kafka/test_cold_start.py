"""An item first announced on `items`, with no interaction yet, reaches users' lists (exploration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from learners.base import Interactions, ItemMeta
from stream.config import Settings
from stream.producer import encode_events, encode_items, make_producer, send_records
from stream.publisher import read_topic
from stream.worker import WorkerProcess

pytestmark = pytest.mark.kafka


def warm_log(start: float, n_users: int = 12, n_items: int = 16, per_user: int = 8) -> Interactions:
    """User u clicks items u..u+per_user-1 (mod n_items) twice: every item gets >= 5 interactions, so
    none is new any more, and every user still has unseen items to be recommended."""
    records = []
    for rnd in range(2):
        for u in range(n_users):
            for j in range(per_user):
                records.append({"user_id": f"u{u}", "item_id": f"old{(u + j) % n_items}", "type": "click",
                                "ts": start + (rnd * n_users + u) * per_user + j})
    return Interactions.from_records(sorted(records, key=lambda r: r["ts"]))


def test_an_announced_item_appears_in_recommendations_before_any_interaction(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    pytest.importorskip("learners.recommender", reason="OnlineRecommender (exploration) not available")
    settings = Settings(bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    warm = warm_log(1000.0)
    later = Interactions.from_records([{"user_id": f"u{u}", "item_id": "old0", "type": "view",
                                        "ts": 5000.0 + u} for u in range(12)])
    announced = ItemMeta("fresh-1", "A brand new thing", ("new", "thing"), ts=4000.0)
    with WorkerProcess(kafka_bootstrap, topic_prefix, tmp_path / "state",
                       args=["--learner", "online", "--k", "5"]) as worker:
        worker.wait_ready()
        producer = make_producer(settings)
        try:
            send_records(producer, settings.topic("interactions"), encode_events(warm))
            worker.wait_applied(len(warm), timeout=60)
            send_records(producer, settings.topic("items"), encode_items([announced]))
            # the next events come after the announcement: the worker applies items first
            send_records(producer, settings.topic("interactions"), encode_events(later))
        finally:
            producer.close()
        worker.wait_applied(len(warm) + len(later), timeout=60)

        def fresh_lists(records: list) -> list[dict]:
            values = [json.loads(r.value) for r in records]
            return [v for v in values if v["event_ts"] >= 5000.0]
        recs = read_topic(kafka_bootstrap, settings.topic("recommendations"), timeout=30,
                          until=lambda rs: len(fresh_lists(rs)) >= 12)
    after = fresh_lists(recs)
    assert len(after) >= 12
    with_fresh = [v for v in after if any(it["item_id"] == "fresh-1" for it in v["items"])]
    assert with_fresh, [v["items"] for v in after[:3]]
    # before the announcement nobody could be recommended it
    before = [json.loads(r.value) for r in recs if json.loads(r.value)["event_ts"] < 4000.0]
    assert before and not any(it["item_id"] == "fresh-1" for v in before for it in v["items"])
