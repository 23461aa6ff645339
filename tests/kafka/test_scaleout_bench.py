"""bench.scaleout: its audit-log metrics on hand-made lines (no broker), and a small run end to end on the
session's broker (one worker, a short synthetic log)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import scaleout


def _lines(*objs: dict) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def _events(worker: str, partition: int, offsets: list[int], users: list[str], hits: list[int],
            t0: float = 100.0) -> dict:
    return {"kind": "events", "worker": worker, "partition": [partition] * len(offsets), "offset": offsets,
            "user": users, "hit": hits, "record_ts": [t0 + o * 0.1 for o in offsets]}


def test_sync_lag_places_each_event_in_its_delta_and_waits_for_every_other_worker() -> None:
    data = _lines(
        _events("w1", 0, list(range(10)), ["u"] * 10, [1, 0] * 5),
        {"kind": "delta_sent", "worker": "w1", "partition": 0, "first": 0, "last": 4, "events": 5,
         "bytes": 100, "sent_at": 101.0},
        {"kind": "delta_sent", "worker": "w1", "partition": 0, "first": 5, "last": 9, "events": 5,
         "bytes": 60, "sent_at": 102.5},
        {"kind": "delta_applied", "worker": "w2", "from": "w1", "partition": 0, "first": 0, "last": 4,
         "events": 5, "bytes": 100, "record_ts_min": 100.0, "record_ts_max": 100.4, "applied_at": 102.0},
        {"kind": "delta_applied", "worker": "w2", "from": "w1", "partition": 0, "first": 5, "last": 9,
         "events": 5, "bytes": 60, "record_ts_min": 100.5, "record_ts_max": 100.9, "applied_at": 103.0},
    )
    audit = scaleout.parse_audit([(0, data + b'{"kind": "events", "cut sh')])
    assert audit.bad_lines == 1 and audit.kinds["events"] == 1
    lag = scaleout.sync_lag(audit, n_workers=2)
    expected = np.array([102.0 - (100 + o * 0.1) for o in range(5)] + [103.0 - (100 + o * 0.1)
                                                                        for o in range(5, 10)])
    assert lag["detail"]["sync_lag_basis"] == "events"
    assert lag["sync_lag_p50_s"] == pytest.approx(np.percentile(expected, 50))
    assert lag["sync_lag_p99_s"] == pytest.approx(np.percentile(expected, 99))
    assert lag["detail"]["sync_lag_oldest"]["p99_s"] == pytest.approx(2.5)
    assert lag["detail"]["sync_lag_newest"]["p50_s"] == pytest.approx(1.6)
    assert scaleout.delta_bytes(audit) == 160
    assert scaleout.hit_rate(audit.events["hit"]) == (0.5, 10)
    # with a third worker that never applied them, no delta is done: no lag to report
    three = scaleout.sync_lag(audit, n_workers=3)
    assert three["sync_lag_p99_s"] is None and three["detail"]["deltas_not_applied_by_all"] == 2
    assert scaleout.sync_lag(audit, n_workers=1)["sync_lag_p50_s"] is None


def test_kill_metrics_count_moved_users_and_replayed_events_once(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    # before the kill: B learned partition 1 offsets 0..9 (users x, y), A partition 0 (user z)
    a_before = _lines(_events("A", 0, list(range(10)), ["z"] * 10, [1] * 10))
    b_before = _lines(_events("B", 1, list(range(10)), ["x", "y"] * 5, [0] * 10))
    # after: A replays 8..9 from B's checkpoint, then learns 10..21 (x, y and a new user n), z goes on
    a_after = _lines(_events("A", 1, list(range(8, 22)), ["x", "y"] * 5 + ["n"] * 4,
                             [1, 1] * 5 + [0] * 4, t0=100.0),
                     _events("A", 0, list(range(10, 30)), ["z"] * 20, [1, 0] * 10, t0=100.0))
    scaleout.audit_path(a).write_bytes(a_before + a_after)
    scaleout.audit_path(b).write_bytes(b_before)  # B wrote nothing after its restart
    plan = scaleout.KillPlan(100, "t.interactions", restart=lambda: None, states=[a, b], say=print)
    plan.a_size, plan.b_before, plan.b_parts = len(a_before), b_before, [1]
    audit = scaleout.kill_audit(plan, [a, b])
    assert audit is not None
    moved = scaleout.moved_metrics(audit, plan.b_parts)
    assert moved["moved_users"] == 2  # x and y; n is new after the kill
    assert moved["moved_evaluated"] == 8  # offsets 10..17 (B had learned 8 and 9 before the kill)
    assert moved["moved_hr@10"] == 1.0
    # the others over the same record-time span (offsets 10..17): z's 10..17, half of them hits
    assert moved["other_evaluated"] == 8 and moved["other_hr@10"] == 0.5
    assert moved["moved_hr_ratio"] == pytest.approx(2.0)
    # (partition, offset) learned twice counts once in the HR
    keep = scaleout.last_occurrences(audit.events)
    assert len(keep) == 10 + 10 + 12 + 20


def test_history_repeats_reads_the_log_history() -> None:
    from learners.base import Interactions

    log = Interactions.from_records([{"user_id": "u", "item_id": "a", "ts": 1.0},
                                     {"user_id": "u", "item_id": "b", "ts": 3.0},
                                     {"user_id": "v", "item_id": "c", "ts": 2.0}])
    first = scaleout.history_index(log)
    items = [{"item_id": "a"}, {"item_id": "b"}, {"item_id": "c"}]
    lists = [{"user_id": "u", "event_ts": 2.0, "items": items},
             {"user_id": "v", "event_ts": None, "items": [{"item_id": "c"}]}]
    got = scaleout.history_repeats(lists, first)
    assert got["repeats"] == 1 and got["without_event_ts"] == 1 and got["lists"] == 2


def test_a_small_run_end_to_end(kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One worker, 2,000 synthetic events: the harness settles the group, produces, drains and reports
    the audit log's figures."""
    code = scaleout.main(["--workers", "1", "--logs", "ml-100k", "--data-dir", str(tmp_path / "none"),
                          "--max-events", "2000", "--rate", "2000", "--sync-seconds", "0.5", "--sync-only",
                          "--no-kill", "--bootstrap", kafka_bootstrap,
                          "--workdir", str(tmp_path / "work"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    entry = report["logs"]["ml-100k"]
    assert entry["synthetic"] and entry["valid_events"] == 2000
    (run,) = entry["runs"]
    assert run["workers"] == 1 and run["exactly_once"] and run["detail"]["complete"]
    assert run["events_per_s"] > 0 and run["cpu_s_per_1000"] > 0
    assert run["history_repeats"] >= 0 and run["detail"]["lists"]["lists"] > 0
    assert run["sync_lag_p99_s"] is None  # one worker: no sync lag
    assert run["evaluated"] > 0 and 0.0 < run["hr@10"] <= 1.0
    assert run["delta_bytes_per_event"] > 0 and run["detail"]["counts_digest_equal"]
