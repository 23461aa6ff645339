"""Item-side deltas between workers (learners.item_deltas, SparseRecommender's sharing hooks): the
integer counts of every worker equal one model's, each event's item side enters each state once
(across a partition move), and malformed deltas are refused with a reason."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from learners import kernels
from learners.base import Interactions
from learners.candidate_eval import CandidateEvaluator
from learners.item_deltas import SEEN_MAGIC, ItemDelta, seen_from_bytes
from learners.sparse import SparseRecommender
from learners.synthetic import generate

PARTITIONS = 4


def _sourced_log(n_events: int = 12_000, seed: int = 3) -> Interactions:
    log = generate(n_events=n_events, n_users=250, n_items=300, seed=seed).log
    parts = np.array([zlib.crc32(u.encode()) % PARTITIONS for u in log.user], np.int32)
    offsets = np.zeros(len(log), np.int64)
    for p in range(PARTITIONS):
        offsets[parts == p] = np.arange(int((parts == p).sum()))
    return log.with_source(parts, offsets)


def _exchange(models: list[SparseRecommender], wire: list[tuple[int, bytes]] | None = None) -> int:
    """Every model sends its deltas (as bytes) and applies everyone else's; returns how many applied."""
    wire = [(k, d.to_bytes()) for k, m in enumerate(models) for d in m.take_item_deltas()] + (wire or [])
    applied = 0
    for k, m in enumerate(models):
        for sender, raw in wire:
            if sender != k:
                applied += m.apply_item_delta(ItemDelta.from_bytes(raw))
    return applied


def _one_model(log: Interactions) -> SparseRecommender:
    one = SparseRecommender(seed=0)
    for a in range(0, len(log), 500):
        one.learn_many(log[a:a + 500])
    return one


def _one_model_counts(log: Interactions) -> dict[str, int]:
    return _one_model(log).item_counts()


def test_workers_sharing_deltas_hold_one_models_counts() -> None:
    log = _sourced_log()
    models = [SparseRecommender(seed=0) for _ in range(2)]
    for m in models:
        m.record_item_deltas()
    for n, a in enumerate(range(0, len(log), 500)):
        batch = log[a:a + 500]
        for k, m in enumerate(models):
            m.learn_many(batch[batch.partition % 2 == k])
        if n % 3 == 2:
            _exchange(models)
    _exchange(models)
    one = _one_model(log)
    expected = one.item_counts()
    picked = {one.item_ids(np.array([c]))[0]: w for c, w in one.first_picks.row(0).items()}
    assert one._params[kernels.P_FIRST_W] == len(set(log.user.tolist()))  # every user's first event
    for m in models:
        assert m.item_counts() == expected
        assert set(m.item_watermarks) == set(range(PARTITIONS))
        # what users picked first: every worker's row holds every worker's first events, once
        assert {m.item_ids(np.array([c]))[0]: w for c, w in m.first_picks.row(0).items()} == picked
        assert m._params[kernels.P_FIRST_W] == one._params[kernels.P_FIRST_W]
    assert sum(m.events_applied for m in models) == len(log)


def test_a_delta_is_applied_once() -> None:
    log = _sourced_log(3_000)
    sender, receiver = SparseRecommender(seed=0), SparseRecommender(seed=0)
    sender.record_item_deltas()
    sender.learn_many(log)
    deltas = sender.take_item_deltas()
    assert {d.partition for d in deltas} == set(range(PARTITIONS))
    assert all(receiver.apply_item_delta(d) for d in deltas)
    assert not any(receiver.apply_item_delta(d) for d in deltas)  # the second time: already held
    assert not any(sender.apply_item_delta(d) for d in deltas)  # its own: learned there
    assert receiver.item_counts() == sender.item_counts()
    assert receiver.deltas_applied == len(deltas) and receiver.delta_events_applied == len(log)


def test_a_moved_partition_is_relearned_for_its_users_only() -> None:
    """Worker B owns partition 1 and checkpoints midway; it keeps learning and sends its deltas, then
    dies. A takes the partition over from B's checkpoint offset: the events A already holds through
    B's deltas are learned for their users only; every count still equals one model's."""
    log = _sourced_log()
    a, b = SparseRecommender(seed=0), SparseRecommender(seed=0)
    a.record_item_deltas()
    b.record_item_deltas()
    owner = np.where(log.partition == 1, 1, 0)
    half = len(log) // 2
    checkpoint_offset = None
    for start in range(0, half, 500):
        batch, mine = log[start:start + 500], owner[start:start + 500]
        a.learn_many(batch[mine == 0])
        b.learn_many(batch[mine == 1])
        if start == 2_000:
            _exchange([a, b])
            checkpoint_offset = int(b.item_watermarks[1])  # B's checkpoint (offsets committed)
        elif start % 1_500 == 0:
            _exchange([a, b])
    _exchange([a, b])  # B's last deltas reach A, then B dies
    assert checkpoint_offset is not None and a.item_watermarks[1] > checkpoint_offset
    rest = log[half:]
    replayed = log[:half][(log.partition[:half] == 1) & (log.offset[:half] >= checkpoint_offset)]
    events_before = a.events_applied
    a.learn_many(replayed)  # the new owner from the committed offset: user side only
    for start in range(0, len(rest), 500):
        a.learn_many(rest[start:start + 500])
    assert a.item_counts() == _one_model_counts(log)
    assert a.events_applied - events_before == len(replayed) + len(rest)


def test_applied_items_count_as_seen_for_the_evaluator() -> None:
    model, evaluator = SparseRecommender(seed=0), CandidateEvaluator(k=10)
    other = SparseRecommender(seed=0)
    other.record_item_deltas()
    first = Interactions.from_records([{"user_id": "b", "item_id": "x", "ts": 0.0}])
    other.learn_many(first.with_source(np.array([1]), np.array([0])))
    (delta,) = other.take_item_deltas()
    assert model.apply_item_delta(delta)
    evaluator.mark_seen(model.item_cols(np.array(["x"], object)), np.array(["x"], object), model)
    batch = Interactions.from_records([{"user_id": "a", "item_id": "x", "ts": 1.0}])
    evaluator.observe_candidates(batch, model.score_then_learn(batch), model)
    assert evaluator.report()["evaluated"] == 1  # "x" was seen on the other worker


def test_state_keeps_the_watermarks() -> None:
    log = _sourced_log(2_000)
    model = SparseRecommender(seed=0)
    model.learn_many(log)
    restored = SparseRecommender(seed=0)
    restored.load_state_dict(model.state_dict())
    assert restored.item_watermarks == model.item_watermarks
    assert restored.item_watermarks[0] == int((log.partition == 0).sum())


def _corrupt(raw: bytes) -> dict[str, bytes]:
    head_end = 8 + int.from_bytes(raw[4:8], "little")
    return {
        "empty": b"",
        "not a delta": b'{"user_id": "u"}',
        "truncated": raw[:-5],
        "padded": raw + b"\x00",
        "header not json": raw[:8] + b"x" * (head_end - 8) + raw[head_end:],
        "nan weight": raw[:-4] + np.array([np.nan], "<f4").tobytes(),
        "negative weight": raw[:-4] + np.array([-1.0], "<f4").tobytes(),
    }


@pytest.mark.parametrize("kind", list(_corrupt(b"SRD1" + b"\x02\x00\x00\x00{}")))
def test_malformed_deltas_are_refused(kind: str) -> None:
    delta = ItemDelta(partition=0, first=0, last=1, events=2, item_ids=["a", "b"], counts=np.array([1, 1]),
                      trend_sums=np.array([1.0, 1.0]), pair_a=np.array([0]), pair_b=np.array([1]),
                      pair_w=np.array([1.0]))
    raw = delta.to_bytes()
    assert ItemDelta.from_bytes(raw).item_ids == ["a", "b"]
    with pytest.raises(ValueError):
        ItemDelta.from_bytes(_corrupt(raw)[kind])


def test_pairs_out_of_range_and_bad_counts_are_refused() -> None:
    base = dict(partition=0, first=0, last=1, events=2, item_ids=["a", "b"], trend_sums=np.array([1.0, 1.0]),
                pair_a=np.array([0]), pair_w=np.array([1.0]))
    with pytest.raises(ValueError, match="pair"):
        ItemDelta.from_bytes(ItemDelta(counts=np.array([1, 1]), pair_b=np.array([5]), **base).to_bytes())
    with pytest.raises(ValueError, match="counts"):
        ItemDelta.from_bytes(ItemDelta(counts=np.array([1, 3]), pair_b=np.array([1]), **base).to_bytes())
    good = ItemDelta(counts=np.array([1, 1]), pair_b=np.array([1]), first_pos=np.array([1]),
                     first_w=np.array([1.0]), **base)
    back = ItemDelta.from_bytes(good.to_bytes())
    assert back.first_pos.tolist() == [1] and back.first_w.tolist() == [1.0]
    with pytest.raises(ValueError, match="first pick"):
        ItemDelta.from_bytes(ItemDelta(counts=np.array([1, 1]), pair_b=np.array([1]), first_pos=np.array([2]),
                                       first_w=np.array([1.0]), **base).to_bytes())
    with pytest.raises(ValueError, match="negative"):
        ItemDelta.from_bytes(ItemDelta(counts=np.array([1, 1]), pair_b=np.array([1]), first_pos=np.array([0]),
                                       first_w=np.array([-1.0]), **base).to_bytes())


@pytest.mark.parametrize("body", [b'{"ids":["a"],"first_ts":[1.0,2.0]}', b'{"ids":["a"],"first_ts":["x"]}',
                                  b'{"ids":["a"],"first_ts":[NaN]}', b'{"ids":[""]}', b'{"first_ts":[1]}'])
def test_a_seen_notice_with_bad_times_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        seen_from_bytes(SEEN_MAGIC + body)


def test_first_sightings_stay_bounded_and_settle_once() -> None:
    from learners.item_deltas import FirstSightings

    sightings = FirstSightings("w2", capacity=3)
    sightings.add(["a", "b", "c", "d"], [1.0, 2.0, None, 4.0], ["ea", "eb", "ec", "ed"])
    assert len(sightings) == 3  # "c" had no record time: not comparable, not kept
    sightings.add(["e"], [5.0], ["ee"])
    assert len(sightings) == 3  # the oldest ("a") went
    assert sightings.settle(["a", "b", "e"], [0.5, 1.0, 5.0], "w1") == ["eb", "ee"]  # tie: w1 < w2
    assert sightings.settle(["b"], [0.0], "w3") == []  # settled already
