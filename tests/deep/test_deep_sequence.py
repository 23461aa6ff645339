"""The sequence encoder learns a sequential pattern through its windowed fine-tune, with a delayed swap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.deep.sequence import GRUEncoder, SequenceSource, next_item_hit_rate

N_ITEMS = 30


def cyclic_stream(n_events: int, n_users: int = 50, length: int = 5, seed: int = 0):
    """Users walk the items in a cycle (next = last + step, step 1 or 2 by user parity): the next item
    depends on the last one AND the user's own stride, which a popularity model cannot tell."""
    rng = np.random.default_rng(seed)
    position = rng.integers(0, N_ITEMS, n_users)
    stride = 1 + np.arange(n_users) % 2
    recent = np.full((n_users, length), -1, dtype=np.int64)
    users = rng.integers(0, n_users, n_events)
    histories, items = np.empty((n_events, length), np.int64), np.empty(n_events, np.int64)
    for e, u in enumerate(users):  # building the test stream event by event is fine: it is tiny
        histories[e] = recent[u]
        items[e] = position[u]
        recent[u] = np.r_[position[u], recent[u, :-1]]
        position[u] = (position[u] + stride[u]) % N_ITEMS
    return histories, items


def feed(source: SequenceSource, histories: np.ndarray, items: np.ndarray, batch: int = 100) -> None:
    for lo in range(0, len(items), batch):
        sl = slice(lo, lo + batch)
        source.learn_histories(histories[sl], items[sl], np.arange(lo, lo + len(items[sl]), dtype=float))


def make_source(**kwargs) -> SequenceSource:
    options = dict(dim=16, length=5, max_items=64, every_events=1000, window_events=3000, epochs=3,
                   batch_size=128, lr=1e-2, fixed_cost_s=0.02, device="cpu", seed=0)
    options.update(kwargs)
    return SequenceSource(**options)


def test_encoder_learns_next_item_of_each_users_stride():
    histories, items = cyclic_stream(6000)
    source = make_source()
    assert not source.score_histories(histories[:5], N_ITEMS).any()  # no encoder yet: zeros
    feed(source, histories[:5000], items[:5000])
    assert source.model_version >= 2
    assert all(r.loss_after < r.loss_before for r in source.tuner.rounds)
    # fresh events it never trained on: the stride needs the sequence, not just the last item
    test_h, test_i = histories[5000:], items[5000:]
    warm = (test_h[:, 1] >= 0)
    scores = source.score_histories(test_h[warm], N_ITEMS)
    top1 = scores.argmax(1)
    assert (top1 == test_i[warm]).mean() > 0.9
    last_plus_one = (test_h[warm, 0] + 1) % N_ITEMS  # what a first-order model would mostly say
    assert (top1 != last_plus_one).sum() > 0.3 * warm.sum()


def test_swap_waits_for_the_round_cost():
    histories, items = cyclic_stream(2000)
    source = make_source(every_events=1000, fixed_cost_s=0.05)  # serves 250 events after the trigger
    feed(source, histories[:1000], items[:1000])
    assert len(source.tuner.rounds) == 1 and source.tuner.rounds[0].serve_from_event == 1250
    assert source.model_version == 0
    feed(source, histories[1000:1200], items[1000:1200])
    assert source.model_version == 0
    feed(source, histories[1200:1300], items[1200:1300])
    assert source.model_version == 1


def test_round_trains_only_on_events_before_its_trigger():
    histories, items = cyclic_stream(1500)
    source = make_source(every_events=1000)
    feed(source, histories, items)
    report = source.tuner.rounds[0]
    assert report.trigger_event == 1000
    assert report.samples == 3 * (1000 - int(1000 * source.holdout))  # 3 epochs of the pre-trigger events


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="output"):
        SequenceSource(output="softmax")
    with pytest.raises(ValueError, match="positive"):
        GRUEncoder(0)
    source = make_source()
    with pytest.raises(ValueError, match="history"):
        source.learn_histories(np.arange(3), np.arange(3), np.zeros(3))


def test_warm_start_fills_untrained_rows_only():
    model = GRUEncoder(8, dim=4, length=3)
    model.trained[:2] = True
    before = model.embedding.weight.detach().clone()
    vectors = np.ones((8, 6), dtype=np.float32)
    vectors[5] = 0.0  # an item the online learner has no vector for keeps its init
    assert model.warm_start(vectors) == 5
    after = model.embedding.weight.detach()
    assert torch.equal(after[:2], before[:2]) and torch.equal(after[5], before[5])
    assert torch.allclose(after[2], after[3]) and not torch.equal(after[2], before[2])
    history, item = torch.zeros((2, 3), dtype=torch.long), torch.zeros(2, dtype=torch.long)
    assert next_item_hit_rate(None, history, item, 8) == 0.0


def replay_cycles(model, n_users: int = 40, n_items: int = 130, steps: int = 100) -> list[str]:
    """Every user steps through a cycle of `n_items` (stride 1 or 2) `steps` times, users interleaved;
    returns each user's next item."""
    from learners.base import Interactions

    rng = np.random.default_rng(1)
    position, stride = rng.integers(0, n_items, n_users), 1 + np.arange(n_users) % 2
    records, t = [], 0
    for _ in range(steps):
        for u in rng.permutation(n_users):
            records.append({"user_id": f"u{u}", "item_id": f"i{position[u]}", "ts": float(t)})
            position[u] = (position[u] + stride[u]) % n_items
            t += 1
    for lo in range(0, len(records), 200):
        batch = Interactions.from_records(records[lo: lo + 200])
        scores, cols = model.score_many(batch)
        assert np.isfinite(scores).all() and scores.shape == (len(batch), len(cols))
        model.learn_many(batch)
    return [f"i{position[u]}" for u in range(n_users)]


def test_encoder_as_a_recommender_source():
    from learners.recommender import OnlineRecommender

    source = make_source(every_events=1000, max_items=256, epochs=6)
    model = OnlineRecommender(sources=[source], seed=0)
    at = model.blend.names.index("seq")
    model.blend.weights[at] = model.blend.prior[at] = 1.0
    expected = replay_cycles(model)
    assert source.model_version >= 1
    lists = model.recommend([f"u{u}" for u in range(len(expected))], k=1)
    assert np.mean([lst[0].item_id == e for lst, e in zip(lists, expected, strict=True)]) > 0.8
    # and the encoder alone, on the recommender's own context of each user, knows it too
    users = model._users.cols(np.asarray([f"u{u}" for u in range(len(expected))], dtype=object), add=False)
    top = source.score_histories(model._recent_items[users], model._items.n_cols).argmax(1)
    assert np.mean(model.item_ids(top) == np.asarray(expected, dtype=object)) > 0.4  # chance: 1/130


def test_history_is_no_answer():
    model = GRUEncoder(10, dim=4, length=3)
    logits = model(torch.tensor([[2, 7, -1], [-1, -1, -1]]), n_cols=8)
    assert torch.isinf(logits[0, [2, 7]]).all() and torch.isfinite(logits[0, [0, 1, 3, 4, 5, 6]]).all()
    assert torch.isfinite(logits[1]).all()
    source = make_source(length=3)
    source.learn_histories(np.array([[2, 7, -1], [2, 7, -1]]), np.array([7, 3]), np.zeros(2))
    assert source.window.snapshot()["item"].tolist() == [3]  # the repeat is no training sample
    kept = make_source(length=3, exclude_history=False)
    kept.learn_histories(np.array([[2, 7, -1], [2, 7, -1]]), np.array([7, 3]), np.zeros(2))
    assert len(kept.window) == 2
