"""`learners.checks.check_recommender` on the real learners, on deliberately broken ones, and the README's
"Write your own learner" section run as written."""

import re
from pathlib import Path

import numpy as np
import pytest

from learners.base import OPTIONAL_HOOKS, REQUIRED_METHODS, SOURCES, Recommendation, Recommender
from learners.checks import CHECKS, check_recommender
from learners.popularity import DecayedPopularity, Popularity, PopularitySource
from learners.recommender import OnlineRecommender
from learners.sparse import SparseRecommender

README = Path(__file__).resolve().parents[2] / "README.md"


def _but(failing: dict[str, str]) -> list:
    """Every check, those in `failing` marked as known failures (strict: a fix makes them pass loudly)."""
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                       reason=failing[name]))
            if name in failing else name for name in CHECKS]


def test_online_recommender_keeps_the_contract():
    assert check_recommender(OnlineRecommender) == list(CHECKS)


EXTRA_SOURCE_FAILS = {"state_round_trip": "extra sources' state is not in OnlineRecommender.state_dict()"}


@pytest.mark.parametrize("name", _but(EXTRA_SOURCE_FAILS))
def test_online_recommender_with_extra_sources(name):
    from learners.cooccurrence import CoOccurrence

    def build():
        return OnlineRecommender(sources=[PopularitySource("hourly", half_life=3600.0),
                                          CoOccurrence(window=2, context=2, name="nearby")])

    check_recommender(build, sources=["hourly", "nearby"], checks=[name])


@pytest.mark.parametrize("name", CHECKS)
def test_sparse_recommender(name):
    check_recommender(SparseRecommender, checks=[name])


@pytest.mark.parametrize("name", CHECKS)
def test_sparse_recommender_with_its_deep_stage(name):
    pytest.importorskip("torch")
    from learners.deep import DeepReranker

    def build():  # rounds every 500 events, served at once: the later lists are the deep stage's
        return SparseRecommender(deep=DeepReranker(n_candidates=20, every_events=500, background=False,
                                                   fixed_cost_s=0.0, device="cpu", exclude_seen=False))

    check_recommender(build, checks=[name])


POPULARITY_FAILS = {"excludes_recent": "the popularity baselines keep no per-user state"}


@pytest.mark.parametrize("learner", [DecayedPopularity, Popularity])
@pytest.mark.parametrize("name", _but(POPULARITY_FAILS))
def test_popularity_baselines(learner, name):
    check_recommender(learner, checks=[name])


def test_an_untrained_instance_is_copied_for_each_check():
    model = DecayedPopularity(half_life=500.0)
    check_recommender(model, checks=["scores", "state_round_trip"])
    assert model.events_applied == 0


def test_unknown_check_names_are_refused():
    with pytest.raises(ValueError, match="unknown checks"):
        check_recommender(DecayedPopularity, checks=["recommends"])


# ------------------------------------------------------------------------------- broken learners
class Repeats(DecayedPopularity):
    def recommend(self, user_ids, k=10):
        return [recs[:1] + recs[:-1] for recs in super().recommend(user_ids, k)]


class PeeksAtTheItem(DecayedPopularity):
    def score_many(self, batch):
        scores, cols = super().score_many(batch)
        own = np.asarray(self.item_cols(batch.item))
        rows = np.flatnonzero(own >= 0)
        position = {c: j for j, c in enumerate(cols.tolist())}
        scores[rows, [position[c] for c in own[rows].tolist()]] += 100.0  # the answer, leaked
        return scores, cols


class LearnsWhenScoring(DecayedPopularity):
    def score_many(self, batch):
        self.learn_many(batch)
        return super().score_many(batch)


class UndocumentedSource(DecayedPopularity):
    def recommend(self, user_ids, k=10):
        return [[Recommendation(r.item_id, r.score, "magic") for r in recs]
                for recs in super().recommend(user_ids, k)]


class KeepsRecentItems(OnlineRecommender):
    def recommend(self, user_ids, k=10):
        return super().recommend(user_ids, k, exclude_recent=False)


class ForgetsOnLoad(DecayedPopularity):
    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._counts.counts[:] = 0.0


class NoColdStart(DecayedPopularity):
    def add_items(self, items):
        pass


class CrashesOnNaN(DecayedPopularity):
    def learn_many(self, batch):
        if not np.isfinite(batch.ts).all():
            raise IndexError("index 7 is out of bounds")
        super().learn_many(batch)


class CountsWrong(DecayedPopularity):
    @property
    def events_applied(self):
        return 2 * self._counts.n_events


class NoAddItems(DecayedPopularity):
    add_items = None


class EmptyBatchFails(DecayedPopularity):
    def learn_many(self, batch):
        if not len(batch):
            raise ValueError("empty batch")
        super().learn_many(batch)


@pytest.mark.parametrize("broken, check, says", [
    (Repeats, "recommend", "repeats items"),
    (PeeksAtTheItem, "no_peeking", "never its own item"),
    (LearnsWhenScoring, "no_peeking", "scoring must not learn"),
    (UndocumentedSource, "recommend", "'magic'"),
    (KeepsRecentItems, "excludes_recent", "leave out the user's recent items"),
    (ForgetsOnLoad, "state_round_trip", "lists differ"),
    (NoColdStart, "cold_start", "add_items must make announced items known"),
    (CrashesOnNaN, "bad_input", "raised IndexError"),
    (CountsWrong, "hooks", "events_applied must grow"),
    (NoAddItems, "protocol", "['add_items']"),
    (EmptyBatchFails, "empty", "ValueError: empty batch"),
])
def test_broken_learners_are_caught_by_the_check_they_break(broken, check, says):
    with pytest.raises(AssertionError) as caught:
        check_recommender(broken, checks=[check])
    message = str(caught.value)
    assert message.startswith(f"check_recommender({broken.__name__}): {check!r} failed: ")
    assert says in message


# ------------------------------------------------------------------------------- the contract's lists
def test_the_protocol_names_every_hook():
    members = {name for name in vars(Recommender) if not name.startswith("_")}
    assert members == set(REQUIRED_METHODS)
    doc = " ".join(Recommender.__doc__.split())
    assert all(name in doc for name in OPTIONAL_HOOKS)


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else len(text)]


def test_the_readme_documents_every_hook_and_source():
    section = _section("Write your own learner")
    missing = [name for name in (*REQUIRED_METHODS, *OPTIONAL_HOOKS) if not re.search(rf"`{name}\b", section)]
    assert not missing
    rows = re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", section, flags=re.M)
    assert dict(rows) == SOURCES


def test_the_readme_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", _section("Write your own learner"), flags=re.S)
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "readme_example"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert isinstance(namespace["RecentlyPopular"](), Recommender)
    assert "HR@10" in capsys.readouterr().out
