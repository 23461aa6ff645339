"""Item-state snapshots (stream.sync): a checkpoint's item side in chunks and back, the newest complete
snapshot chosen, a half-written one passed over."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from learners.sparse import SparseRecommender
from learners.synthetic import generate
from stream import sync
from stream.checkpoint import load_items, save_checkpoint


class Record(NamedTuple):
    key: bytes
    value: bytes


def _checkpoint(tmp_path: Path, name: str, n_events: int) -> tuple[Path, SparseRecommender]:
    model = SparseRecommender(seed=0)
    model.learn_many(generate(n_events=n_events, n_users=50, n_items=200, seed=1).log)
    return save_checkpoint(tmp_path / name, model.state_dict(), {"d:0": 7}, {}), model


def test_a_snapshot_goes_through_chunks_and_loads_as_the_item_side(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sync, "CHUNK_BYTES", 4096)  # several chunks per file
    path, model = _checkpoint(tmp_path, "a", 3000)
    records = [Record(k, v) for k, v in sync.snapshot_records(path, "w1", 5, position=42)]
    assert len(records) > 2
    position, head = sync.assemble_snapshot(records, tmp_path / "in")
    assert position == 42 and head["id"] == 5
    items, meta, _ = load_items(tmp_path / "in")
    joiner = SparseRecommender(seed=0)
    joiner.load_item_state(items, meta)
    assert joiner.item_counts() == model.item_counts()
    assert joiner.n_users == 0 and joiner.events_applied == 0


def test_the_newest_complete_snapshot_wins_and_a_torn_one_is_passed_over(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sync, "CHUNK_BYTES", 4096)
    old, _ = _checkpoint(tmp_path, "old", 1000)
    new, _ = _checkpoint(tmp_path, "new", 2000)
    first = [Record(k, v) for k, v in sync.snapshot_records(old, "w1", 1, position=10)]
    second = [Record(k, v) for k, v in sync.snapshot_records(new, "w1", 2, position=20)]
    assert sync.assemble_snapshot(first + second, tmp_path / "a")[0] == 20
    # the writer died midway through the second: its last chunk never came; the first is still whole
    assert sync.assemble_snapshot(first + second[:-1], tmp_path / "b")[0] == 10
    garbage = [Record(b"x", b"not a chunk"), Record(b"y", b'{"worker": 1}\nzz')]
    assert sync.assemble_snapshot(garbage, tmp_path / "c") is None
