"""The prequential evaluator against hand-computed ranks, a per-event reference, and causality."""

from __future__ import annotations

import math

import numpy as np
import pytest

from learners.base import Interactions
from learners.evaluate import PrequentialEvaluator, prequential_step
from learners.synthetic import generate


def make_batch(pairs: list[tuple[str, str]], kind: str = "click") -> Interactions:
    return Interactions.from_records(
        [{"user_id": u, "item_id": i, "type": kind, "value": 1.0, "ts": float(t)}
         for t, (u, i) in enumerate(pairs)]
    )


class TableModel:
    """Scores from a fixed (user, item) -> score table; columns in a chosen order; learns nothing."""

    def __init__(self, items: list[str], table: dict[tuple[str, str], float], default: float = 0.0) -> None:
        self.items = np.array(items, dtype=object)
        self.table = table
        self.default = default
        self.col = {x: c for c, x in enumerate(items)}

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        scores = np.array([[self.table.get((u, i), self.default) for i in self.items] for u in batch.user],
                          np.float32).reshape(len(batch), len(self.items))
        return scores, np.arange(len(self.items))

    def item_cols(self, ids: np.ndarray) -> np.ndarray:
        return np.array([self.col.get(x, -1) for x in ids], np.int64)

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        return self.items[np.asarray(cols)]

    def learn_many(self, batch: Interactions) -> None:
        pass


def test_hand_computed_ranks_ties_history_and_same_batch() -> None:
    # stream: a:x, b:y, c:z, then a:y, a:x (repeat), b:w (unseen), b:z, a:z
    pairs = [("a", "x"), ("b", "y"), ("c", "z"), ("a", "y"), ("a", "x"), ("b", "w"), ("b", "z"), ("a", "z")]
    table = {("a", "x"): 5, ("a", "y"): 3, ("a", "z"): 3, ("a", "w"): 9,
             ("b", "x"): 1, ("b", "y"): 9, ("b", "z"): 1, ("b", "w"): 7}
    model = TableModel(["x", "y", "z", "w"], table)
    ev = PrequentialEvaluator(k=1, coverage_every=1)
    batch = make_batch(pairs)
    prequential_step(model, ev, batch)  # one batch: every in-batch rule must hold per event
    kept = ev.kept()
    # evaluable: 3 (a:y; x,y,z seen; a's history {x}), 6 (b:z; b's history {y, w}), 7 (a:z; a has {x, y})
    assert kept["position"].tolist() == [3, 6, 7]
    # event 3: candidates {y: 3, z: 3}: none higher, one tie -> 0.5
    # event 6: candidates seen before = {x, y, z, w} minus {y, w} = {x: 1, z: 1}: one tie -> 0.5
    # event 7: candidates {z: 3, w: 9}: w higher -> 1
    assert kept["rank"].tolist() == [0.5, 0.5, 1.0]
    assert kept["n_candidates"].tolist() == [2, 2, 2]
    report = ev.report()
    assert report["hr@1"] == pytest.approx(2 / 3)
    assert report["ndcg@1"] == pytest.approx((2 / math.log2(2.5)) / 3)
    assert report["mrr"] == pytest.approx((1 / 1.5 + 1 / 1.5 + 1 / 2) / 3)
    assert report["auc"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert report["evaluated"] == 3 and report["events"] == 8 and report["items_seen"] == 4


def test_batching_does_not_change_ranks_of_a_fixed_scorer() -> None:
    stream = generate(n_events=600, n_users=30, n_items=40, n_clusters=4, seed=3)
    rng = np.random.default_rng(0)
    items = sorted(set(stream.log.item.tolist()))
    users = sorted(set(stream.log.user.tolist()))
    table = {(u, i): float(rng.integers(0, 4)) for u in users for i in items}  # many ties
    ranks = []
    for batch_size in (1, 7, 64, 600):
        model, ev = TableModel(items, table), PrequentialEvaluator(k=5)
        for lo in range(0, len(stream.log), batch_size):
            prequential_step(model, ev, stream.log[lo: lo + batch_size])
        ranks.append(ev.kept())
    for other in ranks[1:]:
        np.testing.assert_array_equal(other["position"], ranks[0]["position"])
        np.testing.assert_array_equal(other["rank"], ranks[0]["rank"])


def reference_ranks(log: Interactions, score_of) -> tuple[list[int], list[float]]:
    """The protocol written per event, the obvious slow way."""
    seen: list[str] = []
    history: dict[str, set[str]] = {}
    positions, ranks = [], []
    for k, (u, i) in enumerate(zip(log.user.tolist(), log.item.tolist(), strict=True)):
        h = history.setdefault(u, set())
        if i in seen and i not in h:
            cands = [j for j in seen if j not in h]
            s = {j: score_of(k, u, j) for j in cands}
            higher = sum(s[j] > s[i] for j in cands)
            ties = sum(s[j] == s[i] for j in cands) - 1
            positions.append(k)
            ranks.append(higher + 0.5 * ties)
        if i not in seen:
            seen.append(i)
        h.add(i)
    return positions, ranks


class ShuffledModel(TableModel):
    """Columns in a permuted order, some items unknown to the model (rank as -inf), extra catalog items."""

    def __init__(self, items: list[str], table: dict[tuple[str, str], float], drop: set[str]) -> None:
        rng = np.random.default_rng(1)
        known = [x for x in items if x not in drop] + ["catalog-only-1", "catalog-only-2"]
        super().__init__(list(rng.permutation(known)), table, default=2.0)
        self.order = rng.permutation(len(self.items))

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        scores, cols = super().score_many(batch)
        return scores[:, self.order], cols[self.order]


@pytest.mark.parametrize(("batch_size", "max_cells"), [(1, 1 << 18), (5, 1 << 18), (50, 1), (1000, 1 << 18),
                                                     (1000, 1)])
def test_matches_the_per_event_reference_with_permuted_and_missing_columns(
    batch_size: int, max_cells: int
) -> None:
    stream = generate(n_events=800, n_users=40, n_items=48, n_clusters=4, seed=5)
    log = stream.log
    rng = np.random.default_rng(2)
    items = sorted(set(log.item.tolist()))
    table = {(u, i): float(rng.integers(0, 5)) for u in set(log.user.tolist()) for i in items}
    drop = set(items[:4])
    model = ShuffledModel(items, table, drop)
    ev = PrequentialEvaluator(k=10, max_cells=max_cells)  # max_cells=1: chunks of 16 rows
    for lo in range(0, len(log), batch_size):
        prequential_step(model, ev, log[lo: lo + batch_size])

    def score_of(k: int, u: str, j: str) -> float:
        return -math.inf if j in drop else table[(u, j)]

    positions, ranks = reference_ranks(log, score_of)
    kept = ev.kept()
    assert kept["position"].tolist() == positions
    np.testing.assert_allclose(kept["rank"], ranks)
    hits = np.array(ranks) < 10
    assert ev.report()["hr@10"] == pytest.approx(hits.mean())


def test_matches_the_reference_when_columns_are_the_models_catalog() -> None:
    stream = generate(n_events=700, n_users=30, n_items=40, n_clusters=4, seed=8)
    log = stream.log
    rng = np.random.default_rng(4)
    catalog = [m.item_id for m in stream.items] + ["never-clicked"]
    table = {(u, i): float(rng.integers(0, 3)) for u in set(log.user.tolist()) for i in catalog}
    model = TableModel(catalog, table)  # knows the whole catalog from the start: slots follow its columns
    ev = PrequentialEvaluator(max_cells=1)
    for lo in range(0, len(log), 37):
        prequential_step(model, ev, log[lo: lo + 37])
    positions, ranks = reference_ranks(log, lambda k, u, j: table[(u, j)])
    assert ev.kept()["position"].tolist() == positions
    np.testing.assert_allclose(ev.kept()["rank"], ranks)


class CountingPopularity:
    """Plain popularity written here, so the causality test does not depend on the model modules."""

    def __init__(self) -> None:
        self.col: dict[str, int] = {}
        self.counts = np.zeros(0)

    def _cols(self, ids: np.ndarray, add: bool) -> np.ndarray:
        if add:
            for x in ids.tolist():
                self.col.setdefault(x, len(self.col))
        return np.array([self.col.get(x, -1) for x in ids.tolist()], np.int64)

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        return np.repeat(self.counts[None, :], len(batch), axis=0), np.arange(len(self.counts))

    def learn_many(self, batch: Interactions) -> None:
        cols = self._cols(batch.item, add=True)
        self.counts = np.bincount(cols, minlength=len(self.col)).astype(float) + np.pad(
            self.counts, (0, len(self.col) - len(self.counts)))

    def item_cols(self, ids: np.ndarray) -> np.ndarray:
        return self._cols(ids, add=False)

    def item_ids(self, cols: np.ndarray) -> np.ndarray:
        names = np.array(list(self.col), dtype=object)
        return names[np.asarray(cols)]


def _model_under_test():
    try:
        from learners.popularity import DecayedPopularity
    except ImportError:
        return CountingPopularity()
    return DecayedPopularity(half_life=300.0)


def _online_recommender():
    recommender = pytest.importorskip("learners.recommender")
    return recommender.OnlineRecommender(seed=0)


@pytest.mark.parametrize("make_model", [CountingPopularity, _model_under_test, _online_recommender])
def test_changing_later_events_leaves_earlier_ranks_unchanged(make_model) -> None:
    log = generate(n_events=1500, n_users=60, n_items=80, seed=11).log
    cut, batch_size = 930, 64  # the cut falls in the middle of a batch on purpose
    other = generate(n_events=1500, n_users=60, n_items=80, seed=12).log
    changed = Interactions.concat([log[:cut], other[cut:]])
    runs = []
    for stream in (log, changed):
        model, ev = make_model(), PrequentialEvaluator()
        for lo in range(0, len(stream), batch_size):
            prequential_step(model, ev, stream[lo: lo + batch_size])
        runs.append(ev.kept())
    # within the cut's batch too: an event's score may use earlier in-batch events, never later ones
    before = [run["position"] < cut for run in runs]
    np.testing.assert_array_equal(runs[0]["position"][before[0]], runs[1]["position"][before[1]])
    np.testing.assert_array_equal(runs[0]["rank"][before[0]], runs[1]["rank"][before[1]])
    after = [run["position"] >= cut for run in runs]
    assert not np.array_equal(runs[0]["rank"][after[0]], runs[1]["rank"][after[1]])  # the test can fail


def test_evaluability_and_errors() -> None:
    ev = PrequentialEvaluator()
    batch = make_batch([("a", "x"), ("a", "x"), ("b", "x")])
    assert ev.evaluable(batch).tolist() == [False, False, True]
    with pytest.raises(ValueError, match="scores"):
        ev.observe(batch)
    with pytest.raises(ValueError, match="shape"):
        ev.observe(batch, np.zeros((2, 1)), np.array([0]), item_ids=np.array(["x"], dtype=object))
    with pytest.raises(ValueError):
        PrequentialEvaluator(k=0)


def test_rating_rmse_and_sampled_auc() -> None:
    class Rated(TableModel):
        def predict_many(self, batch: Interactions) -> np.ndarray:
            return np.full(len(batch), 3.0)

    batch = Interactions.from_records([{"user_id": u, "item_id": i, "type": "rating", "value": v, "ts": 0.0}
                                       for u, i, v in [("a", "x", 5.0), ("b", "y", 1.0), ("b", "x", 4.0)]])
    model = Rated(["x", "y"], {("b", "x"): 1.0})
    ev = PrequentialEvaluator(n_negatives=20)
    prequential_step(model, ev, batch)
    report = ev.report()
    assert report["rmse"] == pytest.approx(math.sqrt((4 + 4 + 1) / 3))
    assert report["evaluated"] == 1 and math.isnan(report["auc"])  # b's only other item is history


def test_evaluate_every_ranks_a_fixed_subsample_of_the_evaluable_events() -> None:
    log = generate(n_events=900, n_users=30, n_items=40, n_clusters=4, seed=13).log
    items = sorted(set(log.item.tolist()))
    rng = np.random.default_rng(5)
    table = {(u, i): float(rng.random()) for u in set(log.user.tolist()) for i in items}
    runs = []
    for every in (1, 3):
        model, ev = TableModel(items, table), PrequentialEvaluator(evaluate_every=every)
        for lo in range(0, len(log), 50):
            prequential_step(model, ev, log[lo: lo + 50])
        runs.append(ev)
    full, sampled = runs[0].kept(), runs[1].kept()
    np.testing.assert_array_equal(sampled["position"], full["position"][::3])
    np.testing.assert_array_equal(sampled["rank"], full["rank"][::3])
    assert runs[1].evaluable_seen == runs[0].evaluated


def test_popularity_at_batch_size_one_matches_the_per_event_protocol() -> None:
    """The anchor's setting (learn after every event) with the project's Popularity learner."""
    popularity = pytest.importorskip("learners.popularity")
    log = generate(n_events=1500, n_users=50, n_items=60, seed=17).log
    counts: dict[str, int] = {}
    scores_by_event: list[dict[str, int]] = []
    for item in log.item.tolist():
        scores_by_event.append(dict(counts))
        counts[item] = counts.get(item, 0) + 1
    positions, ranks = reference_ranks(log, lambda k, u, j: scores_by_event[k].get(j, 0))
    model, ev = popularity.Popularity(), PrequentialEvaluator()
    for lo in range(len(log)):
        prequential_step(model, ev, log[lo: lo + 1])
    assert ev.kept()["position"].tolist() == positions
    np.testing.assert_allclose(ev.kept()["rank"], ranks)


class ReshufflingModel(TableModel):
    """Every `period` batches it renumbers its columns and forgets a few items, as a model reusing
    columns after expiry would: the evaluator must follow the mapping."""

    period = 1

    def __init__(self, items: list[str], table: dict[tuple[str, str], float]) -> None:
        super().__init__(items, table)
        self.all_items = list(items)
        self.calls = 0

    def dropped(self, call: int) -> set[str]:
        epoch = call // self.period
        return set(self.all_items[epoch % 7:: 9])

    def score_many(self, batch: Interactions) -> tuple[np.ndarray, np.ndarray]:
        epoch = self.calls // self.period
        rng = np.random.default_rng(epoch)
        known = [x for x in self.all_items if x not in self.dropped(self.calls)]
        self.items = np.array(list(rng.permutation(known)), dtype=object)
        self.col = {x: c for c, x in enumerate(self.items)}
        self.calls += 1
        return super().score_many(batch)


class VersionedReshufflingModel(ReshufflingModel):
    """Renumbers every third batch and says so, so the evaluator may skip its check in between."""

    period = 3

    def dropped(self, call: int) -> set[str]:
        return set()  # only renumbering: the evaluator's check is skipped between versions

    @property
    def item_index_version(self) -> int:
        return (self.calls - 1) // self.period


@pytest.mark.parametrize("model_class", [ReshufflingModel, VersionedReshufflingModel])
def test_follows_column_reuse_between_batches(model_class: type) -> None:
    log = generate(n_events=800, n_users=30, n_items=45, n_clusters=3, seed=19).log
    items = sorted(set(log.item.tolist()))
    rng = np.random.default_rng(6)
    table = {(u, i): float(rng.integers(0, 4)) for u in set(log.user.tolist()) for i in items}
    model, ev = model_class(items, table), PrequentialEvaluator()
    batch_size, batch_of_call = 40, {}
    for lo in range(0, len(log), batch_size):
        batch = log[lo: lo + batch_size]
        if ev.evaluable(batch).any():
            batch_of_call[lo // batch_size] = model.calls  # the model is asked once per scored batch
        prequential_step(model, ev, batch)

    def score_of(k: int, u: str, j: str) -> float:
        return -math.inf if j in model.dropped(batch_of_call[k // batch_size]) else table[(u, j)]

    positions, ranks = reference_ranks(log, score_of)
    assert ev.kept()["position"].tolist() == positions
    np.testing.assert_allclose(ev.kept()["rank"], ranks)


def test_max_users_bounds_the_history_and_forgets_the_least_recent() -> None:
    ev = PrequentialEvaluator(max_users=2)
    model = TableModel(["x", "y"], {})
    for pairs in ([("a", "x"), ("b", "y")], [("c", "x")], [("b", "x")], [("a", "x")]):
        prequential_step(model, ev, make_batch(pairs))
    assert ev.n_users == 2
    # "a" was forgotten when "c" came (a and b tie on recency: the first goes), so a's repeat of x at
    # position 4 is evaluable again; then "c" (least recent) made room for "a"
    assert ev.kept()["position"].tolist() == [2, 3, 4]
    # c is new again (its x counts), b still remembers y (a repeat is not evaluable)
    assert ev.evaluable(make_batch([("c", "x"), ("b", "y")])).tolist() == [True, False]
