"""Checkpoints: exact round trip, crash safety, no pickle, retention, user-side extraction."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from learners.base import Interactions, State
from learners.popularity import DecayedPopularity
from learners.synthetic import generate
from stream.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
    select_users,
)


def demo_state(seed: int = 0, n_users: int = 5, n_items: int = 7) -> State:
    rng = np.random.default_rng(seed)
    return State(
        users={
            "user_id": np.array([f"u{i}" for i in range(n_users)]),
            "factors": rng.normal(size=(n_users, 4)).astype(np.float32),
            "last_seen": rng.uniform(0, 1e9, n_users),
        },
        items={
            "item_id": np.array([f"item-{i}" for i in range(n_items)]),
            "factors": rng.normal(size=(n_items, 4)).astype(np.float32),
            "count": rng.integers(0, 100, n_items),
        },
        meta={"kind": "Demo", "dim": 4, "nested": {"lr": 0.05}},
    )


def assert_same_state(a: State, b: State) -> None:
    for side in ("users", "items"):
        assert set(getattr(a, side)) == set(getattr(b, side))
        for key, array in getattr(a, side).items():
            loaded = getattr(b, side)[key]
            same_kind = loaded.dtype == np.asarray(array).dtype
            assert same_kind or (loaded.dtype.kind == "U" and np.asarray(array).dtype.kind in "UO"), key
            np.testing.assert_array_equal(loaded, array)
    assert a.meta == b.meta


def test_round_trip_exact(tmp_path):
    state = demo_state()
    offsets = {"interactions:0": 120, "interactions:1": 0, "items:0": 7}
    path = save_checkpoint(tmp_path, state, offsets, {"model_version": 4, "events_applied": 127})
    assert path.parent == tmp_path and path.name.startswith("ckpt-")
    loaded, loaded_offsets, meta = load_latest_checkpoint(tmp_path)
    assert_same_state(state, loaded)
    assert loaded.users["factors"].dtype == np.float32
    assert loaded.items["count"].dtype == state.items["count"].dtype
    assert loaded_offsets == offsets
    assert meta["model_version"] == 4 and meta["events_applied"] == 127
    assert meta["checkpoint"]["path"] == str(path) and meta["checkpoint"]["seq"] == 1
    document = json.loads((path / "meta.json").read_text())
    assert document["manifest"]["users"]["arrays"]["factors"] == {"shape": [5, 4], "dtype": "<f4"}


def test_real_learner_resumes_identically(tmp_path):
    """A learner restored from a checkpoint behaves exactly like the one that kept running."""
    log = generate(n_events=3_000, seed=2).log
    first, rest = log[:2_000], log[2_000:]
    model = DecayedPopularity(half_life=300.0)
    model.learn_many(first)
    save_checkpoint(tmp_path, model.state_dict(), {"interactions:0": 2_000})
    state, offsets, _ = load_latest_checkpoint(tmp_path)
    restored = DecayedPopularity(half_life=300.0)
    restored.load_state_dict(state)
    # Resume from the saved offset: the restored learner consumes exactly the events after it.
    resumed = log[offsets["interactions:0"]:]
    assert len(resumed) == len(rest)
    model.learn_many(rest)
    restored.learn_many(resumed)
    assert model.recommend(["u"], 20) == restored.recommend(["u"], 20)
    probe = Interactions.concat([rest[:50]])
    np.testing.assert_allclose(model.score_many(probe)[0], restored.score_many(probe)[0])


def test_str_arrays_are_stored_with_variable_length_and_other_objects_refused(tmp_path):
    ids = np.array(["a", "bb", "ccc", "é" * 3, "x" * 5000] + [f"u{n}" for n in range(2000)], dtype=object)
    recent = np.array([["a", ""], ["bb", "ccc"]], dtype=object)
    path = save_checkpoint(tmp_path, State(users={"user_id": ids, "recent": recent}), {})
    # one long id costs itself only: fixed-width unicode would take 2,005 x 5,000 x 4 bytes
    assert (path / "users.npz").stat().st_size < 40_000
    state, _, _ = load_checkpoint(path)
    assert state.users["user_id"].tolist() == ids.tolist()
    assert state.users["recent"].shape == (2, 2) and state.users["recent"].tolist() == recent.tolist()
    with pytest.raises(CheckpointError, match="no pickle"):
        save_checkpoint(tmp_path, State(items={"x": np.array([{"a": 1}, 2], dtype=object)}), {})
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(tmp_path, State(meta={"f": object()}), {})
    with pytest.raises(CheckpointError, match="topic:partition"):
        save_checkpoint(tmp_path, State(), {"interactions": 3})
    with pytest.raises(CheckpointError, match="non-negative"):
        save_checkpoint(tmp_path, State(), {"interactions:0": -1})
    assert len(list_checkpoints(tmp_path)) == 1  # refused saves left nothing behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path):
    good = save_checkpoint(tmp_path, demo_state(1), {"interactions:0": 10})
    # A writer that died after writing part of its temp dir (no meta.json, truncated npz).
    crashed = tmp_path / ".tmp-000000000002-dead"
    crashed.mkdir()
    (crashed / "users.npz").write_bytes((good / "users.npz").read_bytes()[:100])
    loaded = load_latest_checkpoint(tmp_path)
    assert loaded is not None and loaded[1] == {"interactions:0": 10}
    assert list_checkpoints(tmp_path) == [good]
    # The next successful save cleans the debris and numbers itself after the good one.
    nxt = save_checkpoint(tmp_path, demo_state(2), {"interactions:0": 20})
    assert not crashed.exists() and nxt.name.endswith("2")
    assert load_latest_checkpoint(tmp_path)[1] == {"interactions:0": 20}


def test_torn_or_tampered_newest_checkpoint_falls_back(tmp_path):
    save_checkpoint(tmp_path, demo_state(1), {"interactions:0": 10})
    newest = save_checkpoint(tmp_path, demo_state(2), {"interactions:0": 20})
    data = bytearray((newest / "items.npz").read_bytes())
    data[-60] ^= 0xFF  # flip a byte: same size, wrong checksum
    (newest / "items.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(newest)
    assert load_latest_checkpoint(tmp_path)[1] == {"interactions:0": 10}
    (newest / "meta.json").unlink()  # a directory renamed in by hand, without metadata
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(newest)
    assert load_latest_checkpoint(tmp_path)[1] == {"interactions:0": 10}


def _crafted_object_npz(payload: object) -> bytes:
    """An .npz whose member is a pickled object array, as an attacker would write it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf, zf.open("factors.npy", "w") as member:
        np.lib.format.write_array(member, np.array([payload, 1], dtype=object), allow_pickle=True)
    return buffer.getvalue()


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_crafted_object_array_is_refused_without_running_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = save_checkpoint(tmp_path / "state", demo_state(1), {"interactions:0": 10})
    evil = save_checkpoint(tmp_path / "state", demo_state(2), {"interactions:0": 99})
    blob = _crafted_object_npz(_Boom())
    (evil / "users.npz").write_bytes(blob)
    # Even with the manifest rewritten to match the file, loading must refuse it.
    document = json.loads((evil / "meta.json").read_text())
    import hashlib
    document["manifest"]["users"].update(bytes=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
                                         arrays={"factors": {"shape": [2], "dtype": "|O"}})
    (evil / "meta.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(evil)
    state, offsets, _ = load_latest_checkpoint(tmp_path / "state")
    assert offsets == {"interactions:0": 10} and older.exists()
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_retention_keeps_newest(tmp_path):
    paths = [save_checkpoint(tmp_path, demo_state(i), {"interactions:0": i}, keep=2) for i in range(5)]
    assert list_checkpoints(tmp_path) == [paths[4], paths[3]]
    assert not paths[0].exists()
    assert load_latest_checkpoint(tmp_path)[1] == {"interactions:0": 4}
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, demo_state(), {}, keep=0)


def test_empty_or_missing_dir_has_no_checkpoint(tmp_path):
    assert load_latest_checkpoint(tmp_path / "nope") is None
    assert load_latest_checkpoint(tmp_path) is None
    (tmp_path / "ckpt-000000000001").mkdir()  # empty: incomplete
    assert load_latest_checkpoint(tmp_path) is None


def test_a_version_1_checkpoint_with_fixed_width_ids_still_loads(tmp_path):
    """Format 1 stored ids as fixed-width unicode: such a checkpoint is read (not skipped)."""
    import hashlib
    import zipfile

    path = tmp_path / "ckpt-000000000001"
    path.mkdir()
    manifest = {}
    for side, arrays in (("users", {"user_id": np.array(["u1", "u22"])}), ("items", {"w": np.arange(3.0)})):
        with zipfile.ZipFile(path / f"{side}.npz", "w") as zf:
            for key, array in arrays.items():
                with zf.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, array)
        data = (path / f"{side}.npz").read_bytes()
        described = {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}
        manifest[side] = {"file": f"{side}.npz", "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest(), "arrays": described}
    document = {"format": "streamrec-checkpoint", "format_version": 1, "seq": 1, "created": 0.0,
                "offsets": {"interactions:0": 7}, "meta": {}, "state_meta": {"kind": "Demo"},
                "manifest": manifest}
    (path / "meta.json").write_text(json.dumps(document))
    state, offsets, meta = load_latest_checkpoint(tmp_path)
    assert state.users["user_id"].tolist() == ["u1", "u22"] and offsets == {"interactions:0": 7}
    assert meta["checkpoint"]["format_version"] == 1


def test_other_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path, demo_state(), {})
    document = json.loads((path / "meta.json").read_text())
    document["format_version"] = 999
    (path / "meta.json").write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="format version"):  # refused, not skipped for an older one
        load_latest_checkpoint(tmp_path)


def test_select_users_cuts_a_partitions_rows(tmp_path):
    state = demo_state(n_users=6)
    part = select_users(state, ["u4", "u1", "unknown"])
    assert part.users["user_id"].tolist() == ["u1", "u4"]
    np.testing.assert_array_equal(part.users["factors"], state.users["factors"][[1, 4]])
    assert part.items is state.items and part.meta == state.meta
    # The slice is itself a checkpointable state.
    path = save_checkpoint(tmp_path, part, {"interactions:3": 55})
    assert load_checkpoint(path)[0].users["user_id"].tolist() == ["u1", "u4"]
    misaligned = State(users={"user_id": np.array(["a", "b"]), "indptr": np.array([0, 1, 3])})
    with pytest.raises(ValueError, match="one per user"):
        select_users(misaligned, ["a"])
    with pytest.raises(KeyError):
        select_users(State(users={"x": np.zeros(2)}), ["a"])


def test_large_state_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    state = State(users={"user_id": np.array([f"user-{i}" for i in range(50_000)]),
                         "emb": rng.normal(size=(50_000, 32)).astype(np.float32)},
                  items={"emb": rng.normal(size=(10_000, 32)).astype(np.float32)})
    path = save_checkpoint(tmp_path, state, {"interactions:0": 1})
    loaded, _, _ = load_checkpoint(path)
    np.testing.assert_array_equal(loaded.users["emb"], state.users["emb"])
    shutil.rmtree(path)
