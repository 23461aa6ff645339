"""`check_recommender`: does a learner keep the `learners.base.Recommender` contract?

In the spirit of river's `utils.estimator_checks.check_estimator`: a short seeded synthetic stream
(`learners.synthetic`, with its catalog announced as in replay) runs through fresh copies of the learner,
and each check asserts one promise that replay, the evaluator, the worker or the HTTP views rely on. A
broken promise raises AssertionError naming the check (so does an exception the learner raises).

>>> from learners.recommender import OnlineRecommender
>>> check_recommender(OnlineRecommender, checks=["protocol", "recommend", "unknown_user"])
['protocol', 'recommend', 'unknown_user']
>>> class Repeats(OnlineRecommender):  # lists the best item twice
...     def recommend(self, user_ids, k=10):
...         return [recs[:1] + recs[:-1] for recs in super().recommend(user_ids, k)]
>>> check_recommender(Repeats, checks=["recommend"])  # doctest: +ELLIPSIS
Traceback (most recent call last):
AssertionError: check_recommender(Repeats): 'recommend' failed: the list of ... repeats items: ...
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from learners.base import (
    OPTIONAL_HOOKS,
    REQUIRED_METHODS,
    SOURCES,
    Interactions,
    ItemMeta,
    Recommendation,
    State,
    get_hook,
    has_hook,
)
from learners.evaluate import add_due_items
from learners.synthetic import generate

UNKNOWN_USER = "checks:never-seen"
_CANDIDATE_FIELDS = ("n", "cols", "scores", "target_col", "target_score", "background")


class CheckFailed(AssertionError):
    """One check's promise broken (the runner adds the learner's and the check's names)."""


def _require(ok: Any, message: str) -> None:
    if not ok:
        raise CheckFailed(message)


class Probe:
    """A learner under test and the stream it is checked on.

    `fresh()` is a learner that learned nothing; `warm()` a copy of one that learned `log` in batches,
    with the catalog items due announced before each batch (as replay does). `tail` holds the events
    right after `log`, learned by no one: the checks score, learn and swap them.
    """

    def __init__(self, new: Callable[[], Any], k: int = 10, sources: Iterable[str] = (), n_events: int = 2000,
                 n_tail: int = 200, batch_size: int = 200, seed: int = 0) -> None:
        self.new = new
        self.k = k
        self.sources = frozenset(SOURCES) | frozenset(sources)
        self.batch_size = batch_size
        stream = generate(n_events=n_events + n_tail, n_users=120, n_items=300, seed=seed)
        self.log = stream.log[:n_events]
        self.tail = stream.log[n_events:]
        self.catalog = sorted(stream.items, key=lambda m: m.ts)
        self.announced = sum(1 for m in self.catalog if m.ts <= float(self.log.ts[-1]))
        # items every warm learner knows: learned or announced
        announced = {m.item_id for m in self.catalog[: self.announced]}
        self.known_items = sorted(set(self.log.item.tolist()) | announced)
        users = list(dict.fromkeys(reversed(self.log.user.tolist())))
        self.users: list[str] = users[:6]  # the latest users of the log
        self.last_item = {u: str(self.log.item[np.flatnonzero(self.log.user == u)[-1]]) for u in self.users}
        self.next_ts = float(stream.log.ts[-1]) + 1.0
        self._warm: Any = None
        if len(self.probe_batch()) < 20 or len(self.users) < 2:
            raise ValueError(f"n_events={n_events} is too short a stream to check a learner on")

    def fresh(self) -> Any:
        return self.new()

    def learn_log(self, model: Any) -> Any:
        due = 0
        for lo in range(0, len(self.log), self.batch_size):
            batch = self.log[lo: lo + self.batch_size]
            due = add_due_items(model, self.catalog, float(batch.ts[-1]), due)
            model.learn_many(batch)
        return model

    def warm(self) -> Any:
        if self._warm is None:
            self._warm = self.learn_log(self.fresh())
        try:
            return copy.deepcopy(self._warm)
        except Exception:  # noqa: BLE001 - a learner holding threads or processes: learn again
            return self.learn_log(self.fresh())

    def probe_batch(self) -> Interactions:
        """The tail's events whose items the warm learner knows (scoring them adds no columns)."""
        known = set(self.known_items)
        return self.tail[np.fromiter((i in known for i in self.tail.item.tolist()), bool, len(self.tail))]

    def swapped(self, batch: Interactions, start: int) -> Interactions:
        """`batch` with each event from `start` on taking another known item."""
        position = {item: n for n, item in enumerate(self.known_items)}
        item = batch.item.copy()
        for e in range(start, len(batch)):
            item[e] = self.known_items[(position[item[e]] + 1) % len(self.known_items)]
        return Interactions(batch.user, item, batch.value, batch.ts, batch.kind, batch.event_id)

    def event(self, user: str, item: str) -> Interactions:
        self.next_ts += 1.0
        return Interactions.from_records([{"user_id": user, "item_id": item, "ts": self.next_ts}])


# ---------------------------------------------------------------------------------------------- helpers
def _differ(a: Sequence[Sequence[Recommendation]], b: Sequence[Sequence[Recommendation]]) -> str | None:
    """Where two results of `recommend` differ (items, sources, scores to 1e-5), or None."""
    if len(a) != len(b):
        return f"{len(a)} lists vs {len(b)}"
    for n, (x, y) in enumerate(zip(a, b, strict=True)):
        if [(r.item_id, r.source) for r in x] != [(r.item_id, r.source) for r in y]:
            return f"list {n}: {[(r.item_id, r.source) for r in x]} vs {[(r.item_id, r.source) for r in y]}"
        if not np.allclose([r.score for r in x], [r.score for r in y], rtol=1e-5, atol=1e-6):
            return f"list {n}: scores {[r.score for r in x]} vs {[r.score for r in y]}"
    return None


def _same_lists(a: Any, b: Any, message: str) -> None:
    where = _differ(a, b)
    _require(where is None, f"{message} ({where})")


def _candidates(cands: Any, n_events: int) -> dict[str, np.ndarray]:
    missing = [f for f in _CANDIDATE_FIELDS if not hasattr(cands, f)]
    _require(not missing, f"score_then_learn must return learners.sparse.CandidateScores-like fields "
                          f"{_CANDIDATE_FIELDS}; missing {missing}")
    out = {f: np.asarray(getattr(cands, f)) for f in _CANDIDATE_FIELDS[:-1]}
    n, cols = out["n"], out["cols"]
    _require(n.shape == (n_events,) and out["target_col"].shape == (n_events,)
             and out["target_score"].shape == (n_events,),
             f"score_then_learn: n, target_col and target_score must have one entry per event ({n_events})")
    _require(cols.ndim == 2 and len(cols) == n_events and out["scores"].shape == cols.shape,
             f"score_then_learn: cols and scores must be (events, M) arrays, got {cols.shape} and "
             f"{out['scores'].shape}")
    _require(((n >= 0) & (n <= cols.shape[1])).all(), "score_then_learn: n must be within 0..M")
    return out


def _rows_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.isclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True).reshape(len(a), -1).all(1)


def _stored(state: State) -> State:
    """`state` as a checkpoint gives it back: str arrays as fixed-width unicode, meta through JSON."""
    def side(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: a.astype(str) if a.dtype == object else a.copy() for key, a in arrays.items()}

    return State(users=side(state.users), items=side(state.items), meta=json.loads(json.dumps(state.meta)))


# ---------------------------------------------------------------------------------------------- checks
def check_protocol(p: Probe) -> None:
    """Every required method of `Recommender`; optional hooks of the kind `OPTIONAL_HOOKS` gives."""
    model = p.fresh()
    missing = [name for name in REQUIRED_METHODS if not callable(getattr(model, name, None))]
    if "score_many" in missing and has_hook(model, "score_then_learn"):
        missing.remove("score_many")  # a candidate scorer: replay and the worker use CandidateEvaluator
    _require(not missing, f"missing required method(s) {missing} of learners.base.Recommender")
    for name, hook in OPTIONAL_HOOKS.items():
        if not has_hook(model, name) or name == "reranker":
            continue
        value = get_hook(model, name)
        kind = "a method" if hook.method else "an attribute or property"
        _require(callable(value) == hook.method, f"optional hook {name} must be {kind}: {hook.signature}")


def check_empty(p: Probe) -> None:
    """A learner that learned nothing serves one list per user; empty batches and user lists are fine."""
    model = p.fresh()
    lists = model.recommend(["u-0", "u-1"], p.k)
    _require(isinstance(lists, list) and len(lists) == 2 and all(isinstance(x, list) for x in lists),
             f"before learning anything recommend must still return one (possibly empty) list per user, "
             f"got {lists!r}")
    _require(model.recommend([], p.k) == [], "recommend([]) must return []")
    model.learn_many(p.log[:0])
    warm = p.warm()
    before = warm.recommend(p.users, p.k)
    applied = get_hook(warm, "events_applied")
    warm.learn_many(p.log[:0])
    _same_lists(before, warm.recommend(p.users, p.k), "learning an empty batch changed the lists")
    _require(get_hook(warm, "events_applied") == applied, "learning an empty batch changed events_applied")


def check_scores(p: Probe) -> None:
    """`score_many` / `score_then_learn` return what the evaluators read, in the learner's columns."""
    batch = p.probe_batch()
    model = p.fresh()
    dense, candidates = callable(getattr(model, "score_many", None)), has_hook(model, "score_then_learn")
    _require(dense or candidates, "a learner needs score_many (or score_then_learn) to be evaluated")
    if dense:
        model = p.warm()
        scores, cols = (np.asarray(x) for x in model.score_many(batch))
        _require(cols.ndim == 1 and np.issubdtype(cols.dtype, np.integer),
                 f"score_many's item_cols must be a 1-d integer array, got {cols.dtype} {cols.shape}")
        _require(scores.shape == (len(batch), len(cols)), f"score_many's scores must be (events, columns) = "
                                                          f"{(len(batch), len(cols))}, got {scores.shape}")
        _require(len(np.unique(cols)) == len(cols), "score_many's item_cols repeat a column")
        _require(not np.isnan(scores).any(), "score_many returned NaN scores")
        ids = np.asarray(model.item_ids(cols), dtype=object)
        _require(all(isinstance(i, str) and i for i in ids.tolist()),
                 "item_ids(score_many's item_cols) must be the items' external ids (non-empty str)")
        _require(np.array_equal(np.asarray(model.item_cols(ids)), cols), "item_cols(item_ids(cols)) != cols")
        unscored = set(p.known_items) - set(ids.tolist())
        _require(not unscored, f"score_many must score every known item (the evaluator ranks the event's "
                               f"item among them); no column for {sorted(unscored)[:5]}")
    if candidates:
        model = p.warm()
        out = _candidates(model.score_then_learn(batch), len(batch))
        inside = np.arange(out["cols"].shape[1])[None, :] < out["n"][:, None]
        _require((out["cols"][inside] >= 0).all(), "score_then_learn: candidate columns must be >= 0")
        _require(not np.isnan(out["scores"][inside]).any() and not np.isnan(out["target_score"]).any(),
                 "score_then_learn returned NaN scores")
        _require(np.array_equal(out["target_col"], np.asarray(model.item_cols(batch.item))),
                 "score_then_learn: target_col must be the column of each event's item")


def check_no_peeking(p: Probe) -> None:
    """An event's scores come from the state before it: changing its item (and later events' items)
    changes no score of it or of earlier events; scoring learns nothing."""
    batch = p.probe_batch()
    j = len(batch) // 2
    other = p.swapped(batch, j)
    rule = ("an event's scores must come from the state before the batch and the user's earlier events, "
            "never its own item or later events")
    model = p.fresh()
    if callable(getattr(model, "score_many", None)):
        a, b = p.warm(), p.warm()
        before = a.recommend(p.users, p.k)
        sa, ca = a.score_many(batch)
        _same_lists(before, a.recommend(p.users, p.k), "score_many changed what recommend serves: scoring "
                                                        "must not learn")
        sb, cb = b.score_many(other)
        _require(np.array_equal(np.asarray(ca), np.asarray(cb)),
                 "score_many's item_cols depend on the events' items")
        changed = np.flatnonzero(~_rows_equal(np.asarray(sa)[: j + 1], np.asarray(sb)[: j + 1]))
        _require(not len(changed), f"score_many: the scores of event {changed[:1].tolist()} changed when the "
                                   f"items of events {j}.. changed: {rule}")
    if has_hook(model, "score_then_learn"):
        a, b = p.warm(), p.warm()
        ca = _candidates(a.score_then_learn(batch), len(batch))
        cb = _candidates(b.score_then_learn(other), len(batch))
        for e in range(j + 1):
            n = int(ca["n"][e])
            same = (n == int(cb["n"][e]) and np.array_equal(ca["cols"][e, :n], cb["cols"][e, :n])
                    and bool(_rows_equal(ca["scores"][e:e + 1, :n], cb["scores"][e:e + 1, :n])[0]))
            if e < j:
                same = same and bool(_rows_equal(ca["target_score"][e:e + 1], cb["target_score"][e:e + 1])[0])
            _require(same, f"score_then_learn: the candidates or scores of event {e} changed when the items "
                           f"of events {j}.. changed: {rule}")


def check_recommend(p: Probe) -> None:
    """k distinct, known items per user, with finite scores and documented sources; serving is read-only."""
    model = p.warm()
    users = [*p.users, UNKNOWN_USER]
    lists = model.recommend(users, p.k)
    _require(isinstance(lists, list) and len(lists) == len(users),
             f"recommend must return one list per user id ({len(users)}), got {type(lists).__name__} of "
             f"{len(lists)}")
    for user, recs in zip(users, lists, strict=True):
        _require(len(recs) == p.k, f"{len(recs)} items for {user!r}, expected k={p.k} (the learner knows "
                                   f"{len(p.known_items)} items)")
        for r in recs:
            _require(isinstance(r, Recommendation),
                     f"list items must be learners.base.Recommendation, got {r!r}")
            _require(isinstance(r.item_id, str) and r.item_id,
                     f"item_id must be a non-empty str, got {r.item_id!r}")
            _require(isinstance(r.score, numbers.Real) and math.isfinite(r.score),
                     f"score must be a finite number (the published JSON has no NaN/inf), got {r.score!r}")
            _require(r.source in p.sources, f"source {r.source!r} of {r.item_id!r} is not a documented "
                                            f"source (learners.base.SOURCES, or one passed as sources=...)")
        ids = [r.item_id for r in recs]
        _require(len(set(ids)) == len(ids), f"the list of {user!r} repeats items: {ids}")
        cols = np.asarray(model.item_cols(np.asarray(ids, dtype=object)))
        _require((cols >= 0).all(), f"recommended items must be known to the learner (item_cols >= 0): {ids}")
    _same_lists(lists, model.recommend(users, p.k), "recommend twice gave different lists: serving must not "
                                                    "change state")
    _require(model.recommend(users[:2], 0) == [[], []], "recommend(users, k=0) must return empty lists")


def check_excludes_recent(p: Probe) -> None:
    """A user's recent items are left out of their list."""
    model = p.warm()
    user = "checks:probe-user"
    first = model.recommend([user], p.k)[0]
    _require(first, f"no list for the new user {user!r}")
    taken = first[0].item_id
    model.learn_many(p.event(user, taken))
    after = [r.item_id for r in model.recommend([user], p.k)[0]]
    _require(taken not in after, f"{user!r} just took {taken!r}, their top item, and it is still in their "
                                 f"list {after}: recommend must leave out the user's recent items")
    lists = model.recommend(p.users, p.k)
    for user, recs in zip(p.users, lists, strict=True):
        ids = [r.item_id for r in recs]
        _require(p.last_item[user] not in ids, f"{user!r}'s last item {p.last_item[user]!r} is in their list "
                                               f"{ids}: recommend must leave out the user's recent items")


def check_unknown_user(p: Probe) -> None:
    """A user never seen gets a non-empty (cold-start) list, and asking creates no state for them."""
    model = p.warm()
    lists = model.recommend([UNKNOWN_USER], p.k)
    _require(len(lists) == 1 and len(lists[0]) > 0, f"an unknown user must get a non-empty list, got {lists}")
    if has_hook(model, "knows_user"):
        _require(not model.knows_user(UNKNOWN_USER), "knows_user is True for a user never seen (or "
                                                     "recommend created state for them)")
        _require(all(model.knows_user(u) for u in p.users),
                 "knows_user is False for users the learner learned")


def check_cold_start(p: Probe) -> None:
    """`add_items` makes unseen ids known before their first interaction; repeats and [] are fine."""
    model = p.warm()
    metas = [ItemMeta(f"checks:new-{n}", title=m.title, tags=m.tags, ts=p.next_ts)
             for n, m in enumerate(p.catalog[:3])]
    ids = np.asarray([m.item_id for m in metas], dtype=object)
    _require((np.asarray(model.item_cols(ids)) < 0).all(), "item_cols must be -1 for ids never seen")
    model.add_items(metas)
    cols = np.asarray(model.item_cols(ids))
    _require((cols >= 0).all(),
             f"add_items must make announced items known (item_cols >= 0), got {cols.tolist()}")
    model.add_items([])
    model.add_items(metas[:1])
    _require(np.array_equal(np.asarray(model.item_cols(ids)), cols),
             "announcing known items again moved their columns")
    _require(all(len(x) == p.k for x in model.recommend(p.users, p.k)),
             "recommend after add_items: short lists")
    model.learn_many(p.event(p.users[0], metas[0].item_id))
    _require(model.item_cols(ids[:1])[0] >= 0, "an announced item is unknown after its first interaction")
    fresh = p.fresh()
    fresh.add_items(metas)
    _require(len(fresh.recommend(["u-0"], p.k)) == 1, "recommend after add_items on a new learner failed")


def check_state_round_trip(p: Probe) -> None:
    """`state_dict` holds arrays and JSON; loading it into a new learner serves and scores the same."""
    model = p.warm()
    state = model.state_dict()
    _require(isinstance(state, State),
             f"state_dict must return learners.base.State, got {type(state).__name__}")
    for side in ("users", "items"):
        for key, a in getattr(state, side).items():
            _require(isinstance(a, np.ndarray),
                     f"State.{side}[{key!r}] must be a numpy array, got {type(a).__name__}")
            _require(a.dtype != object or all(isinstance(x, str) for x in a.ravel().tolist()),
                     f"State.{side}[{key!r}]: object arrays may hold str only (checkpoints store no pickle)")
    try:
        json.dumps(state.meta, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckFailed(f"State.meta must be JSON (checkpoints write it as JSON): {exc}") from None
    clone = p.fresh()
    version = get_hook(clone, "item_index_version")
    clone.load_state_dict(_stored(state))
    users = [*p.users, UNKNOWN_USER]
    _same_lists(model.recommend(users, p.k), clone.recommend(users, p.k),
                "after load_state_dict(state_dict()) the lists differ")
    if version is not None:
        _require(get_hook(clone, "item_index_version") != version,
                 "load_state_dict must change item_index_version (evaluators cache columns by it)")
    for name in ("events_applied", "n_items", "n_users"):
        _require(get_hook(clone, name) == get_hook(model, name),
                 f"{name} differs after the round trip: {get_hook(model, name)} vs {get_hook(clone, name)}")
    batch = p.probe_batch()
    if callable(getattr(model, "score_many", None)):
        (sa, ca), (sb, cb) = model.score_many(batch), clone.score_many(batch)
        _require(np.array_equal(np.asarray(model.item_ids(ca)), np.asarray(clone.item_ids(cb)))
                 and _rows_equal(np.asarray(sa), np.asarray(sb)).all(),
                 "after load_state_dict(state_dict()) score_many differs")
    if has_hook(model, "score_then_learn"):
        a = _candidates(model.score_then_learn(batch), len(batch))
        b = _candidates(clone.score_then_learn(batch), len(batch))
        _require(_rows_equal(a["target_score"], b["target_score"]).all() and np.array_equal(a["n"], b["n"]),
                 "after load_state_dict(state_dict()) score_then_learn differs")


def check_bad_input(p: Probe) -> None:
    """Non-finite ts or value are refused with ValueError/TypeError before any state changes, or learned
    harmlessly (the worker's schema refuses them before a learner sees them)."""
    base = p.probe_batch()[:20]
    nan_ts, inf_value = base.ts.copy(), base.value.copy()
    nan_ts[3], inf_value[3] = np.nan, np.inf
    bad = {"a NaN ts": Interactions(base.user, base.item, base.value, nan_ts, base.kind),
           "an infinite value": Interactions(base.user, base.item, inf_value, base.ts, base.kind)}
    hooks = ["learn_many"] + (["score_then_learn"] if has_hook(p.fresh(), "score_then_learn") else [])
    for what, batch in bad.items():
        for hook in hooks:
            model = p.warm()
            before = model.recommend(p.users, p.k)
            try:
                getattr(model, hook)(batch)
            except (ValueError, TypeError) as exc:
                _require(str(exc), f"{hook} refused a batch with {what} without a message")
                _same_lists(before, model.recommend(p.users, p.k), f"{hook} refused a batch with {what} but "
                                                                   "changed the state first")
            except Exception as exc:  # noqa: BLE001 - that is the finding
                raise CheckFailed(f"{hook} on a batch with {what} raised {type(exc).__name__}: {exc}; "
                                  "refuse bad input with ValueError or TypeError, before changing any "
                                  "state") from exc
            else:
                lists = model.recommend(p.users, p.k)
                _require(all(math.isfinite(r.score) for recs in lists for r in recs),
                         f"after learning a batch with {what} the scores are not finite")


def check_hooks(p: Probe) -> None:
    """The optional hooks a learner offers behave as `OPTIONAL_HOOKS` says."""
    model = p.warm()
    batch = p.tail
    version = get_hook(model, "item_index_version")
    if version is not None:
        hash(version)
        model.recommend(p.users, p.k)
        _require(get_hook(model, "item_index_version") == version, "recommend changed item_index_version")
    applied = get_hook(model, "events_applied")
    if has_hook(model, "predict_many"):
        predicted = np.asarray(model.predict_many(batch))
        _require(predicted.shape == (len(batch),) and np.isfinite(predicted).all(),
                 f"predict_many must give one finite rating per event, got shape {predicted.shape}")
    model.learn_many(batch)
    if applied is not None:
        _require(model.events_applied == applied + len(batch),
                 f"events_applied must grow by the events learned: {applied} + {len(batch)} -> "
                 f"{model.events_applied}")
    if has_hook(model, "n_items"):
        ids = np.asarray(sorted(set(p.known_items) | set(batch.item.tolist())), dtype=object)
        known = int((np.asarray(model.item_cols(ids)) >= 0).sum())
        _require(model.n_items == known, f"n_items is {model.n_items}, but {known} items are known")
    if has_hook(model, "n_users") and has_hook(model, "knows_user"):
        users = set(p.log.user.tolist()) | set(batch.user.tolist())
        known = sum(bool(model.knows_user(u)) for u in users)
        _require(model.n_users == known, f"n_users is {model.n_users}, but knows_user is True for {known}")
    for name in ("n_users", "n_items", "evicted_items", "evicted_users"):
        value = get_hook(model, name)
        _require(value is None or (isinstance(value, numbers.Integral) and value >= 0),
                 f"{name} must be a count, got {value!r}")
    if has_hook(model, "model_version"):
        _require(model.model_version is None or isinstance(model.model_version, numbers.Integral),
                 f"model_version must be an int or None, got {model.model_version!r}")
    if has_hook(model, "state_bytes"):
        size = model.state_bytes()
        _require(isinstance(size, numbers.Integral) and size > 0,
                 f"state_bytes() must be a positive int, got {size!r}")
    if has_hook(model, "finetune_rounds"):
        rounds = model.finetune_rounds(0)
        _require(isinstance(rounds, list) and all(len(r) == 3 for r in rounds),
                 "finetune_rounds(0) must be a list of (seconds, samples, version or None)")
    reranker = get_hook(model, "reranker")
    _require(reranker is None or callable(getattr(reranker, "stats", None)),
             "reranker must be None or have stats()")
    if has_hook(model, "on_drift"):
        model.on_drift()
        model.learn_many(p.event(p.users[0], p.known_items[0]))
        _require(all(len(x) == p.k for x in model.recommend(p.users, p.k)), "short lists after on_drift()")
    if has_hook(model, "close"):
        model.close()


CHECKS: dict[str, Callable[[Probe], None]] = {
    "protocol": check_protocol,
    "empty": check_empty,
    "scores": check_scores,
    "no_peeking": check_no_peeking,
    "recommend": check_recommend,
    "excludes_recent": check_excludes_recent,
    "unknown_user": check_unknown_user,
    "cold_start": check_cold_start,
    "state_round_trip": check_state_round_trip,
    "bad_input": check_bad_input,
    "hooks": check_hooks,
}
"""Every check, by name, in the order `check_recommender` runs them (each docstring says what it asserts)."""


def _factory(model: Any) -> Callable[[], Any]:
    if isinstance(model, type) or (callable(model) and not hasattr(model, "learn_many")):
        return model
    try:
        pristine = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"cannot copy {type(model).__name__} ({exc}): pass a factory, e.g. a class or a "
                        "lambda building a new learner") from None
    return lambda: copy.deepcopy(pristine)


def check_recommender(model: Any, *, checks: Iterable[str] | None = None, sources: Iterable[str] = (),
                      k: int = 10, n_events: int = 2000, seed: int = 0) -> list[str]:
    """Run `checks` (default: all of `CHECKS`, in order) on a learner; returns the names of those run.

    `model`: a factory (a class, a function) building a new learner, or an untrained learner (copied
    for each check). `sources`: extra `Recommendation.source` names the learner may use besides
    `learners.base.SOURCES` (the names of extra sources plugged into `OnlineRecommender`). The stream
    has `n_events` events of 120 users over 300 items; lists are `k` long. Raises AssertionError naming
    the learner and the first failed check."""
    new = _factory(model)
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; choose from {list(CHECKS)}")
    probe = Probe(new, k=k, sources=sources, n_events=n_events, seed=seed)
    label = getattr(model, "__name__", type(model).__name__)
    for name in names:
        try:
            CHECKS[name](probe)
        except CheckFailed as exc:
            raise AssertionError(f"check_recommender({label}): {name!r} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the learner raised: report it under the check's name
            raise AssertionError(f"check_recommender({label}): {name!r} failed: the learner raised "
                                 f"{type(exc).__name__}: {exc}") from exc
    return names
