"""The deep stage over SparseRecommender's candidate rows (learners.sparse_deep, DeepReranker.rerank_rows)."""

from __future__ import annotations

import numpy as np
import pytest

from learners import kernels
from learners.background import Background
from learners.base import SOURCES, Interactions
from learners.deep import DeepReranker
from learners.deep.features import CandidateFeatures
from learners.sparse import CandidateScores, SparseRecommender
from learners.sparse_deep import lift, prev_in_batch
from learners.synthetic import generate


def _reranker(**kwargs) -> DeepReranker:
    options = {"n_candidates": 20, "every_events": 1500, "window_events": 4000, "background": False,
               "fixed_cost_s": 0.0, "device": "cpu", "exclude_seen": False, **kwargs}
    return DeepReranker(**options)


def _trained(n_events: int = 8000, seed: int = 5) -> tuple[SparseRecommender, Interactions]:
    log = generate(n_events=n_events, n_users=300, n_items=400, seed=seed).log
    model = SparseRecommender(deep=_reranker(), seed=1)
    for lo in range(0, len(log), 256):
        model.score_then_learn(log[lo: lo + 256])
    return model, log


def test_build_rows_describes_candidates_as_build_does_for_the_same_scores() -> None:
    rng = np.random.default_rng(0)
    n, m = 6, 40
    dense, rows = CandidateFeatures(5, exclude_seen=False), CandidateFeatures(5, exclude_seen=False)
    learned = rng.integers(0, m, 200)  # item statistics to describe candidates by
    for feats in (dense, rows):
        feats.learn(np.arange(200) % 3, learned)
    blend = rng.random((n, m)).astype(np.float32)
    sources = {"a": rng.random((n, m)).astype(np.float32), "b": rng.normal(size=(n, m)).astype(np.float32)}
    recent = np.where(rng.random((n, 4)) < 0.5, rng.integers(0, m, (n, 4)), -1)
    recent_ts = rng.random((n, 4))
    ts = np.ones(n) * 5
    a = dense.build(np.zeros(n, np.int64), recent, recent_ts, ts, blend, sources, np.arange(m))
    # the same scores as candidate rows, in a shuffled order per row
    perm = np.argsort(rng.random((n, m)), 1)
    b = rows.build_rows(recent, recent_ts, ts, perm, np.take_along_axis(blend, perm, 1),
                        {k: np.take_along_axis(v, perm, 1) for k, v in sources.items()})
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.take_along_axis(perm, b.slots, 1), a.items)


def test_build_rows_skips_entries_that_are_no_candidate() -> None:
    feats = CandidateFeatures(4, exclude_seen=False)
    blend = np.array([[0.5, -np.inf, 0.9, np.nan], [-np.inf] * 4], np.float32)
    c = feats.build_rows(np.full((2, 1), -1), np.zeros((2, 1)), np.zeros(2), np.array([[3, 4, 5, 6]] * 2),
                         blend, {"s": np.ones((2, 4), np.float32)})
    assert c.n_valid.tolist() == [2, 0]
    assert c.items.tolist() == [[5, 3, -1, -1], [-1, -1, -1, -1]]
    assert c.slots.tolist() == [[2, 0, -1, -1], [-1, -1, -1, -1]]
    assert not c.features[1].any()


def test_deep_candidates_are_the_best_of_each_events_candidates_that_are_not_its_users_items() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items, n, width, c, n_feat = 7, 50, 60, 12, 5, 3
    pool, starts, lengths, history = [], [], [], {}
    for u in range(n_users):
        items = sorted(set(rng.integers(0, n_items, rng.integers(0, 8)).tolist()))
        starts.append(len(pool))
        lengths.append(len(items))
        pool += items + [-1]  # a hole, as an evicted column leaves
        history[u] = set(items)
    users = rng.integers(-1, n_users, n)
    items = rng.integers(0, n_items, n)
    cand_n = rng.integers(0, width + 1, n).astype(np.int32)
    cols = rng.integers(0, n_items, (n, width)).astype(np.int32)
    scores = rng.integers(0, 6, (n, width)).astype(np.float32)  # ties, broken by row position
    scores[rng.random((n, width)) < 0.05] = np.nan
    feats = rng.normal(size=(n, width, n_feat)).astype(np.float32)
    out = [np.empty((n, c), np.int64), np.empty((n, c), np.int64), np.empty((n, c), np.float32),
           np.empty((n, c, n_feat), np.float32), np.empty((n, n_feat), np.float32), np.empty(n, np.float32)]
    kernels.deep_candidates(users, items, prev_in_batch(users), cand_n, cols, scores, feats, np.array(starts),
                            np.array(lengths), np.array(pool, np.int32), np.zeros(n_items, np.int64), 1, *out)
    out_cols, out_slots, out_blend, out_raw, out_mass, out_top = out
    seen = {u: set(h) for u, h in history.items()}
    for e in range(n):
        u = int(users[e])
        mine = seen[u] if u >= 0 else set()
        kept = [m for m in range(cand_n[e]) if int(cols[e, m]) not in mine and np.isfinite(scores[e, m])]
        best = sorted(sorted(kept, key=lambda m: (-scores[e, m], m))[:c])  # the best c, in row order
        pad = c - len(best)
        assert out_slots[e].tolist() == best + [-1] * pad
        assert out_cols[e].tolist() == [int(cols[e, m]) for m in best] + [-1] * pad
        np.testing.assert_array_equal(out_blend[e], [scores[e, m] for m in best] + [-np.inf] * pad)
        np.testing.assert_array_equal(out_raw[e, : len(best)], feats[e, best])
        assert not out_raw[e, len(best):].any()
        np.testing.assert_allclose(out_mass[e], np.maximum(feats[e, kept], 0).sum(0), rtol=1e-5)
        row = scores[e, : cand_n[e]]
        assert out_top[e] == (np.nanmax(row) if np.isfinite(row).any() else -np.inf)
        if u >= 0:
            seen[u].add(int(items[e]))


@pytest.mark.parametrize("shape", ["uniform", "outlier", "equal", "few", "wide", "tiny_range"])
def test_the_bucketed_selection_finds_the_kth_largest_and_leaves_the_values_alone(shape: str) -> None:
    rng = np.random.default_rng(len(shape))
    work, counts = np.empty(1000, np.float32), np.empty(kernels._SELECT_BUCKETS, np.int64)
    for _ in range(50):
        k = int(rng.integers(1, 1000))
        values = {"uniform": rng.random(k), "outlier": np.r_[rng.random(k - 1), 1e30][:k],
                  "equal": np.full(k, 2.5), "few": rng.integers(-2, 3, k),
                  "wide": rng.standard_cauchy(k) * 1e6, "tiny_range": 1.0 + rng.integers(0, 3, k) * 1e-7,
                  }[shape].astype(np.float32)
        before = values.copy()
        t = int(rng.integers(0, k))
        assert kernels._kth_largest_of(values, k, t, work, counts) == np.sort(values)[::-1][t]
        np.testing.assert_array_equal(values, before)


def test_feature_rows_is_the_transpose_into_a_wider_array() -> None:
    src = np.random.default_rng(0).normal(size=(7, 5, 3)).astype(np.float32)
    dst = np.full((5, 4, 7), 9.0, np.float32)
    kernels.feature_rows(src, dst[:, :3])  # the candidate rows past the event's width stay untouched
    np.testing.assert_array_equal(dst[:, :3], src.transpose(1, 2, 0))
    assert (dst[:, 3] == 9.0).all()


def test_lift_puts_the_reranked_candidates_above_every_other_score_in_deep_order() -> None:
    bg = Background.build(np.array([0.1, 3.0, 0.2, 0.0, 0.4], np.float32), version=1)
    cols = np.array([[0, 2, 4, -1], [1, 3, -1, -1]], np.int32)
    scores = np.array([[0.5, 0.9, 0.7, 0.0], [2.0, 1.0, 0.0, 0.0]], np.float32)
    result = CandidateScores(np.array([3, 2], np.int32), cols, scores, np.array([4, 1]),
                             np.array([0.7, 2.0], np.float32), bg)
    slots = np.array([[2, 0], [1, -1]])
    deep = np.array([[0.1, 0.3], [5.0, 0.0]], np.float32)
    lift(result, slots, deep, np.array([0.9, 2.0], np.float32))  # each event's highest candidate score
    assert result.scores[0, 0] > result.scores[0, 2] > 3.0  # above the background's best (3.0)
    assert result.scores[0, 1] == np.float32(0.9)  # not re-ranked: as it was
    assert result.scores[1, 1] > 3.0 and result.scores[1, 0] == np.float32(2.0)
    assert result.target_score[0] == result.scores[0, 2]  # the target (column 4) was lifted
    assert result.target_score[1] == np.float32(2.0)  # column 1 was not


def test_the_deep_stage_fine_tunes_on_the_scored_candidates() -> None:
    model, _ = _trained()
    assert model.model_version >= 2  # accepted rounds now serve
    rounds = model.finetune_rounds()
    assert len(rounds) >= 4 and all(samples > 100 for _, samples, _ in rounds)
    model.close()


def test_sparse_recommender_refuses_a_reranker_with_a_users_by_items_bitmap() -> None:
    with pytest.raises(ValueError, match="exclude_seen=False"):
        SparseRecommender(deep=DeepReranker(device="cpu"))
    with pytest.raises(TypeError, match="rerank_rows"):
        SparseRecommender(deep=object())


def test_recommend_with_the_deep_stage_leaves_out_history_and_names_its_picks() -> None:
    model, log = _trained()
    users = sorted(set(log.user.tolist()))[:150]
    lists = model.recommend(users, k=10)
    history: dict[str, set[str]] = {}
    for u, i in zip(log.user.tolist(), log.item.tolist(), strict=True):
        history.setdefault(u, set()).add(i)
    sources = [r.source for recs in lists for r in recs]
    assert set(sources) <= set(SOURCES)
    assert "deep" in sources  # the deep stage brought in items the blend alone would not list
    for u, recs in zip(users, lists, strict=True):
        ids = [r.item_id for r in recs]
        assert len(ids) == 10 and len(set(ids)) == 10
        assert not set(ids) & history[u]
        explored = [p for p, r in enumerate(recs) if r.source == "explore"]
        assert explored == list(range(10 - len(explored), 10))  # exploration keeps the last slots
    plain = SparseRecommender(seed=1)
    plain.load_state_dict(model.state_dict())
    assert [[r.item_id for r in x] for x in plain.recommend(users, k=10)] != [[r.item_id for r in x]
                                                                             for x in lists]
    model.close()


def test_a_saved_state_serves_the_same_deep_lists() -> None:
    model, log = _trained(6000, seed=2)
    users = sorted(set(log.user.tolist()))[:40]
    restored = SparseRecommender(deep=_reranker(), seed=1)
    restored.load_state_dict(model.state_dict())
    assert restored.model_version == model.model_version >= 1
    assert restored.recommend(users, k=10) == model.recommend(users, k=10)
    model.close()
    restored.close()


def test_warm_up_loads_the_deep_stages_kernels_before_any_real_event() -> None:
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = textwrap.dedent("""
        from learners import kernels
        from learners.sparse import SparseRecommender
        from learners.warmup import warm_up
        names = ("score_then_learn", "deep_candidates", "feature_rows", "top_k_users")
        before = [len(getattr(kernels, n).signatures) for n in names]
        warm_up(lambda: SparseRecommender(deep=True))
        print(before, [len(getattr(kernels, n).signatures) for n in names])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().split("] [")
    assert before == "[0, 0, 0, 0" and all(int(x) > 0 for x in after.rstrip("]").split(","))
