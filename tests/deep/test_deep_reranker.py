"""The deep stage end to end on a synthetic stream: it learns what the blend under-weights."""

import numpy as np
import pytest
import torch

from learners.deep import build_source
from learners.deep.reranker import DeepReranker

N_ITEMS = 120


def _stream(rr: DeepReranker, n_batches: int, seed: int = 0) -> tuple[float, float]:
    """Test-then-train over batches where the source "signal" knows the next item and the blend
    weighs it weakly; returns (HR@10 of the blend, HR@10 after re-ranking) over the last half."""
    rng = np.random.default_rng(seed)
    hits_blend = hits_deep = total = 0
    for b in range(n_batches):
        n = 64
        users = np.array([f"u{u}" for u in rng.integers(0, 5000, n)], dtype=object)
        items = rng.integers(0, N_ITEMS, n)
        signal = rng.normal(size=(n, N_ITEMS)).astype(np.float32)
        signal[np.arange(n), items] += 2.5
        noise = rng.normal(size=(n, N_ITEMS)).astype(np.float32)
        blend = noise + 0.4 * signal
        ts = np.arange(b * n, (b + 1) * n, dtype=np.float64)
        out = rr.rerank(users, items, blend, {"signal": signal, "noise": noise}, np.arange(N_ITEMS), ts)
        rr.learn(users, items, ts)
        if b >= n_batches // 2:
            rows = np.arange(n)
            hits_blend += int(((blend > blend[rows, items][:, None]).sum(1) < 10).sum())
            hits_deep += int(((out > out[rows, items][:, None]).sum(1) < 10).sum())
            total += n
    return hits_blend / total, hits_deep / total


def test_the_reranker_learns_to_beat_the_blend_it_reranks():
    rr = DeepReranker(n_candidates=40, every_events=1000, window_events=4000, background=False,
                      fixed_cost_s=0.05, device="cpu", batch_size=128, lr=0.01, epochs=2)
    blend_hr, deep_hr = _stream(rr, 60)
    assert rr.model_version >= 1 and rr.tuner is not None and rr.tuner.rounds
    assert deep_hr > blend_hr + 0.05, (blend_hr, deep_hr)


def test_serving_waits_for_the_swap_delay():
    rr = DeepReranker(n_candidates=40, every_events=1024, background=False, fixed_cost_s=1.0,
                      live_rate=2000.0, device="cpu", batch_size=128)
    _stream(rr, 16)  # 1024 events: first round at 1024 serves from 1024 + 2000 = 3024
    assert rr.tuner is not None and rr.tuner.rounds[0].serve_from_event == 3024
    assert rr.model_version == 0
    _stream(rr, 32, seed=1)
    assert rr.model_version >= 1


def test_build_source_reads_a_fixed_cost_from_the_environment(monkeypatch):
    monkeypatch.setenv("STREAMREC_DEEP_FIXED_COST_S", "0.5")
    rr = build_source(seed=3, device="cpu")
    assert rr.fixed_cost_s == 0.5 and rr.background is False and rr.seed == 3


def test_the_reranker_plugs_into_the_online_recommender():
    recommender = pytest.importorskip("learners.recommender")
    from learners.base import Interactions

    rr = DeepReranker(every_events=300, background=False, fixed_cost_s=0.0, device="cpu", batch_size=64)
    model = recommender.OnlineRecommender(deep=rr, seed=0)
    rng = np.random.default_rng(0)
    for b in range(12):
        records = [{"user_id": f"u{rng.integers(0, 40)}", "item_id": f"i{rng.integers(0, 60)}",
                    "ts": b * 100 + j} for j in range(100)]
        batch = Interactions.from_records(records)
        scores, cols = model.score_many(batch)
        assert scores.shape == (len(batch), len(cols))
        assert b == 0 or np.isfinite(scores).all(1).any()  # the first batch knows no item yet
        model.learn_many(batch)
    assert rr.events == 1200 and rr.tuner is not None and rr.tuner.rounds


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the CUDA path runs on a GPU")
def test_the_reranker_trains_and_serves_on_cuda():
    rr = DeepReranker(n_candidates=40, every_events=1000, background=False, fixed_cost_s=0.0, device="cuda",
                      batch_size=128, lr=0.01)
    blend_hr, deep_hr = _stream(rr, 40)
    assert rr.window is not None and rr.window.device.type == "cuda"
    assert next(rr.tuner.serving.model.parameters()).is_cuda
    assert deep_hr > blend_hr


def test_a_checkpointed_model_serves_again_after_a_restart():
    rr = DeepReranker(n_candidates=40, every_events=1000, background=False, fixed_cost_s=0.0, device="cpu",
                      batch_size=128)
    _stream(rr, 40)
    state = rr.state_dict()
    assert state["version"] >= 1 and state["weights"]
    fresh = DeepReranker(n_candidates=40, device="cpu")
    fresh.load_state_dict(state)
    assert fresh.model_version == state["version"]
    x = torch.randn(8, 40, rr.features.n_features)
    with torch.inference_mode():
        torch.testing.assert_close(fresh.tuner.serving.model(x), rr.tuner.serving.model(x))


def test_serving_lists_before_the_first_model_keep_the_blend_and_teach_nothing():
    rr = DeepReranker(n_candidates=5, every_events=None, every_seconds=3600.0, background=False, device="cpu")
    users = np.array(["a", "b"], dtype=object)
    blend = np.random.default_rng(0).normal(size=(2, 30)).astype(np.float32)
    out = rr.rerank(users, np.full(2, -1), blend, {"s": blend}, np.arange(30), np.zeros(2), remember=False)
    np.testing.assert_array_equal(out, blend)
    assert out is not blend
    rr.learn(users, np.array([3, 4]), np.zeros(2))  # learned without a scored batch: no samples
    assert rr.window is None or len(rr.window) == 0
    scored = rr.rerank(users, np.array([3, 4]), blend, {"s": blend}, np.arange(30), np.ones(2))
    np.testing.assert_array_equal(scored, blend)  # still no model: the blend's order
    rr.learn(users, np.array([3, 4]), np.ones(2))
    assert rr.window is not None
    rr.close()


def test_training_defaults_follow_the_device_unless_given() -> None:
    import torch

    from learners.deep.reranker import DeepReranker, training_defaults

    assert training_defaults(torch.device("cuda")) == (8192, 4)  # a GPU wants big batches
    users = np.array(["u1", "u2"], dtype=object)
    blend = np.array([[0.3, 0.2, 0.1, 0.0], [0.0, 0.1, 0.2, 0.3]], dtype=np.float32)
    ts = np.array([0.0, 1.0])
    for options, expected in (({}, (1024, 1)), ({"batch_size": 256, "epochs": 2}, (256, 2))):
        rr = DeepReranker(n_candidates=3, every_events=None, every_seconds=3600.0, device="cpu",
                          background=False, **options)
        rr.rerank(users, np.array([1, 2]), blend, {"pop": blend}, np.arange(4), ts)
        rr.learn(users, np.array([1, 2]), ts)
        assert (rr.tuner.batch_size, rr.tuner.epochs) == expected
        rr.close()
