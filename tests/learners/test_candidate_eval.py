"""The sublinear candidate evaluator against a separately written dense reference on the same model state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learners.base import Interactions, ItemMeta
from learners.candidate_eval import CandidateEvaluator, build_tree
from learners.evaluate import add_due_items, prequential_step
from learners.sparse import SparseRecommender
from learners.synthetic import generate

SHARED_ML = Path(__file__).resolve().parents[3] / "shared/data/ml-100k"


class DenseReference:
    """The protocol written plainly: per event, the whole catalog's scores (background everywhere,
    the candidates' scores on their columns), ranked among the items seen before the event minus the
    user's history (by external id), ties half."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.col: dict[str, int] = {}  # the model column of each seen item when it was seen
        self.history: dict[str, set[str]] = {}

    def ranks(self, batch: Interactions, cands, model: SparseRecommender) -> list[float]:
        bg = cands.background
        # an item the model evicted is forgotten (unseen, out of every history) until it returns
        known = np.array(sorted(self.seen), dtype=object)
        was = np.array([self.col[x] for x in known.tolist()], np.int64)
        gone = set(known[model.item_cols(known) != was].tolist()) if len(known) else set()
        self.seen -= gone
        for history in self.history.values():
            history -= gone
        out = []
        for e in range(len(batch)):
            user, item = batch.user[e], batch.item[e]
            history = self.history.setdefault(user, set())
            if item in self.seen and item not in history:
                others = np.array(sorted(self.seen - history - {item}), dtype=object)
                cols = model.item_cols(others)  # the model state the batch was scored with
                assert (cols >= 0).all()
                width = max(len(bg), int(cols.max(initial=0)) + 1, int(cands.cols.max(initial=0)) + 1)
                full = np.full(width, bg.default, np.float32)
                full[: len(bg)] = bg.values
                full[cands.cols[e, : cands.n[e]]] = cands.scores[e, : cands.n[e]]
                s = full[cols]
                target = cands.target_score[e]
                out.append(float((s > target).sum() + 0.5 * (s == target).sum()))
            history.add(item)
            if item not in self.seen:
                self.seen.add(item)
                self.col[item] = int(cands.target_col[e])
        return out


def _check(log: Interactions, model: SparseRecommender, items=(), batch_size: int = 256,
           drift_at: int | None = None) -> CandidateEvaluator:
    evaluator = CandidateEvaluator(k=10)
    reference = DenseReference()
    next_item = 0
    for lo in range(0, len(log), batch_size):
        batch = log[lo: lo + batch_size]
        next_item = add_due_items(model, list(items), float(batch.ts[-1]), next_item)
        cands = model.score_then_learn(batch)
        result = evaluator.observe_candidates(batch, cands, model)
        expected = reference.ranks(batch, cands, model)
        np.testing.assert_array_equal(result["rank"], np.array(expected))
        if drift_at is not None and lo <= drift_at < lo + batch_size:
            model.on_drift()
    return evaluator


def test_ranks_equal_the_dense_reference_with_catalog_evictions_and_drift() -> None:
    stream = generate(n_events=6000, n_users=300, n_items=400, seed=3)
    # a small item bound evicts items (and their columns are reused); a drift reaction midway
    model = SparseRecommender(max_items=300, max_users=200, background_every=700, seed=1)
    evaluator = _check(stream.log, model, sorted(stream.items, key=lambda m: m.ts), drift_at=3000)
    assert model.evicted_items > 0 and model.evicted_users > 0 and model.drift_reactions == 1
    assert evaluator.evaluated > 1000


def test_ranks_with_the_deep_stage_equal_the_dense_reference() -> None:
    pytest.importorskip("torch")
    from learners.deep import DeepReranker

    stream = generate(n_events=7000, n_users=300, n_items=400, seed=5)
    deep = DeepReranker(n_candidates=20, every_events=1500, window_events=4000, background=False,
                        fixed_cost_s=0.0, device="cpu", exclude_seen=False)
    model = SparseRecommender(deep=deep, seed=1)
    evaluator = _check(stream.log, model, sorted(stream.items, key=lambda m: m.ts), drift_at=3000)
    assert model.model_version >= 2 and evaluator.evaluated > 1000  # the later batches were re-ranked
    model.close()


def test_ranks_equal_the_dense_reference_over_many_distinct_items() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    # mostly new items, some repeats: the background holds thousands of seen items
    items = np.where(rng.random(n) < 0.6, rng.integers(0, 300, n), np.arange(n) + 1000)
    users = rng.integers(0, 500, n)
    log = Interactions.from_records([{"user_id": f"u{u}", "item_id": f"i{i}", "ts": float(t)}
                                     for t, (u, i) in enumerate(zip(users, items, strict=True))])
    # a small neighbour budget: rows narrow (64 -> 32 -> 16) while the catalog grows mid-run
    model = SparseRecommender(background_every=1500, width=64, neighbour_budget=64 * 1000)
    evaluator = _check(log[:8000], model, batch_size=500)
    assert evaluator.n_items > 3000 and model.neighbours.width == 16


@pytest.mark.skipif(not (SHARED_ML / "u.data").exists(), reason="needs ../shared/data/ml-100k")
def test_ranks_equal_the_dense_reference_on_movielens() -> None:
    from learners.datasets import read_items, read_log

    log = read_log(SHARED_ML / "u.data", "movielens")
    items = sorted(read_items(SHARED_ML / "u.item"), key=lambda m: m.ts)
    evaluator = _check(log[:30_000], SparseRecommender(), items)
    assert evaluator.evaluated > 28_000


def test_prequential_step_uses_the_candidate_path_and_counts_like_the_dense_evaluator() -> None:
    stream = generate(n_events=3000, seed=0)
    model, evaluator = SparseRecommender(), CandidateEvaluator()
    for lo in range(0, 3000, 256):
        prequential_step(model, evaluator, stream.log[lo: lo + 256])
    from learners.evaluate import PrequentialEvaluator
    from learners.popularity import Popularity

    dense = PrequentialEvaluator()
    popularity = Popularity()
    for lo in range(0, 3000, 256):
        prequential_step(popularity, dense, stream.log[lo: lo + 256])
    assert evaluator.evaluated == dense.evaluated  # the same evaluable events
    assert evaluator.n_items == dense.n_items
    assert model.events_applied == 3000


def test_fenwick_tree_counts_seen_columns_by_position() -> None:
    seen = np.array([True, False, True, True])
    order = np.array([2, 0, 3, 1])  # columns by ascending background
    tree = build_tree(seen, order)
    prefix = [sum(tree[j] for j in _ranges(i)) for i in range(5)]
    assert prefix == [0, 1, 2, 3, 3]


def _ranges(i: int) -> list[int]:
    out = []
    while i > 0:
        out.append(i)
        i -= i & -i
    return out


class VectorisedReference:
    """`DenseReference` in numpy, for hundreds of thousands of items: seen items are positions in an
    append-only table of external ids (an evicted id's position dies; a returning id gets a new one)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.alive = np.zeros(0, bool)
        self.was = np.zeros(0, np.int64)
        self.history: dict[str, list[int]] = {}

    def ranks(self, batch: Interactions, cands, model: SparseRecommender, check: bool) -> list[float]:
        bg = cands.background
        cols_now = model.item_cols(np.array(self.ids, dtype=object)) if self.ids else np.zeros(0, np.int64)
        gone = self.alive & (cols_now != self.was)
        self.alive &= ~gone
        for item in np.array(self.ids, dtype=object)[gone].tolist():
            del self.pos[item]
        out = []
        for e in range(len(batch)):
            user, item = batch.user[e], batch.item[e]
            history = self.history.setdefault(user, [])
            p = self.pos.get(item)
            mine = np.array([h for h in history if self.alive[h]], np.int64)
            if check and p is not None and p not in set(mine.tolist()):
                mask = self.alive.copy()
                mask[mine] = False
                mask[p] = False
                cols = cols_now[mask]
                width = max(len(bg), int(cols.max(initial=0)) + 1, int(cands.cols.max(initial=0)) + 1)
                full = np.full(width, bg.default, np.float32)
                full[: len(bg)] = bg.values
                full[cands.cols[e, : cands.n[e]]] = cands.scores[e, : cands.n[e]]
                s, target = full[cols], cands.target_score[e]
                out.append(float((s > target).sum() + 0.5 * (s == target).sum()))
            if p is None:
                p = len(self.ids)
                self.ids.append(item)
                self.pos[item] = p
                self.alive = np.append(self.alive, True)
                self.was = np.append(self.was, int(cands.target_col[e]))
                cols_now = np.append(cols_now, int(cands.target_col[e]))
            history.append(p)
        return out


def test_ranks_equal_a_vectorised_reference_after_200k_distinct_items() -> None:
    """The issue's scale: 20,000 events ranked after 200,000 distinct items were seen, with a catalog,
    evictions (the item bound is passed during the check) and one drift reaction."""
    rng = np.random.default_rng(7)
    warm, checked, n_users = 200_000, 20_000, 3_000
    items = np.concatenate([rng.permutation(warm),
                            np.where(rng.random(checked) < 0.5, rng.zipf(1.3, checked) % warm,
                                     np.where(rng.random(checked) < 0.9, rng.integers(0, warm, checked),
                                              warm + np.arange(checked)))])
    users = rng.integers(0, n_users, warm + checked)
    n = warm + checked
    log = Interactions(np.array([f"u{u}" for u in users], dtype=object),
                       np.array([f"i{i}" for i in items], dtype=object), np.ones(n, np.float32),
                       np.arange(n, dtype=np.float64), np.zeros(n, np.uint8))
    model = SparseRecommender(max_items=warm + 500, evict_chunk=0.01, seed=3)
    model.add_items([ItemMeta(f"i{i}", title=f"title {i % 97} genre{i % 13}") for i in range(0, warm, 50)])
    evaluator, reference = CandidateEvaluator(k=10), VectorisedReference()
    compared = 0
    for lo in range(0, len(log), 1000):
        batch = log[lo: lo + 1000]
        cands = model.score_then_learn(batch)
        result = evaluator.observe_candidates(batch, cands, model)
        expected = reference.ranks(batch, cands, model, check=lo >= warm)
        if lo >= warm:
            np.testing.assert_array_equal(result["rank"], np.array(expected))
            compared += len(expected)
        if lo == warm + checked // 2:
            model.on_drift()
    # 200,000 distinct items seen before the first checked event; about 2,000 evicted during the check
    assert len(set(reference.ids)) > warm and evaluator.n_items > 0.98 * warm and compared > 10_000
    assert model.evicted_items > 0 and model.drift_reactions == 1
