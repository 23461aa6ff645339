"""`streamrec synth`: seeded and byte-identical, time-ordered, the structure of `learners.synthetic`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from learners.datasets import read_items, read_log, sniff_format
from learners.synthlog import generate_log, write_synthetic
from stream.cli import main


def synth(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    assert main(["synth", "--out", str(out), *args]) == 0
    return out


def test_same_arguments_same_bytes_another_seed_other_bytes(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--items", "300", "--users", "200", "--events", "5000")
    a = synth(tmp_path, "a.csv", *args, "--seed", "3", "--catalog", str(tmp_path / "a.jsonl"))
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "5,000 events" in summary and "switch at event 3,000" in summary
    b = synth(tmp_path, "b.csv", *args, "--seed", "3", "--catalog", str(tmp_path / "b.jsonl"))
    c = synth(tmp_path, "c.csv", *args, "--seed", "4")
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert a.read_text().splitlines()[0] == "user_id,item_id,ts,value,type"


def test_log_reads_back_time_ordered(tmp_path: Path) -> None:
    path = synth(tmp_path, "s.csv", "--items", "400", "--users", "300", "--events", "20000")
    assert sniff_format(path) == "csv"
    log = read_log(path)
    assert len(log) == 20_000 and log.event_id is None
    assert bool(np.all(np.diff(log.ts) >= 0))
    raw_ts = [float(line.split(",")[2]) for line in path.read_text().splitlines()[1:]]
    assert raw_ts == sorted(raw_ts)  # already in time order in the file
    assert set(log.kind.tolist()) == {1} and set(log.value.tolist()) == {1.0}  # clicks
    assert all(u.startswith("u") for u in set(log.user.tolist()))
    assert len(set(log.item.tolist())) > 300


def test_new_items_appear_over_time_never_before_release(tmp_path: Path) -> None:
    catalog = tmp_path / "items.jsonl"
    path = synth(tmp_path, "s.csv", "--items", "800", "--users", "500", "--events", "40000",
                 "--catalog", str(catalog))
    log, items = read_log(path), read_items(catalog)
    assert len(items) == 800 and {m.item_id for m in items} >= set(log.item.tolist())
    released = {m.item_id: m.ts for m in items}
    assert all(released[i] <= t for i, t in zip(log.item.tolist(), log.ts.tolist(), strict=True))
    stamps = [m.ts for m in items]
    assert stamps == sorted(stamps)  # the catalog is in release order
    start = stamps[0]
    new = [m for m in items if m.ts > start]
    assert len(new) == 200  # a quarter of the items are released over time ...
    first_seen: dict[str, int] = {}
    for k, item in enumerate(log.item.tolist()):
        first_seen.setdefault(item, k)
    late = [first_seen[m.item_id] for m in new if m.item_id in first_seen]
    assert len(late) > 180
    quarters = np.bincount(np.array(late) * 4 // len(log), minlength=4)
    assert (quarters > 20).all()  # ... and first show up throughout the stream
    theme = Counter(tag for m in items for tag in m.tags[:1])
    assert len(theme) == 8 and all(m.title.endswith(f"#{m.item_id[1:]}") for m in items)
    first = json.loads(catalog.read_text().splitlines()[0])
    assert set(first) == {"item_id", "title", "tags", "ts"}


def test_users_follow_their_cluster_then_switch() -> None:
    log = generate_log(n_items=400, n_users=600, n_events=30_000, seed=1)
    switch = log.truth["switch_at"]
    assert switch == 18_000
    item_cluster = log.cluster[log.item]
    before = {}
    for u in np.unique(log.user[:switch]):
        before[u] = np.bincount(item_cluster[:switch][log.user[:switch] == u]).argmax()
    own = np.array([item_cluster[k] == before[log.user[k]] for k in range(switch)])
    stale = np.array([item_cluster[k] == before.get(log.user[k], -1) for k in range(switch, len(log.item))])
    assert own.mean() > 0.85 and stale.mean() < 0.1
    shifted = np.array([item_cluster[k] == (before[log.user[k]] + log.truth["shift"]) % 8
                        for k in range(switch, len(log.item)) if log.user[k] in before])
    assert shifted.mean() > 0.85


def test_sessions_follow_the_item_chain() -> None:
    log = generate_log(n_items=400, n_users=600, n_events=30_000, seed=2)
    last: dict[int, int] = {}
    followers: dict[int, Counter] = {}
    for u, i in zip(log.user.tolist(), log.item.tolist(), strict=True):
        if u in last:
            followers.setdefault(last[u], Counter())[i] += 1
        last[u] = i
    top = sum(c.most_common(1)[0][1] for c in followers.values())
    assert top / sum(c.total() for c in followers.values()) > 0.25  # one item usually comes next


def test_popularity_is_heavy_tailed() -> None:
    log = generate_log(n_items=2000, n_users=1000, n_events=50_000, seed=0)
    counts = np.sort(np.bincount(log.item, minlength=2000))[::-1]
    assert counts[:200].sum() / counts.sum() > 0.25  # the top 10% of items take well over 10%


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--out", str(tmp_path / "x.csv"), "--items", "4"]) == 2
    assert "items >= 2 * clusters" in capsys.readouterr().err
    with pytest.raises(ValueError):
        write_synthetic(tmp_path / "y.csv", n_items=100, n_users=0, n_events=10)
