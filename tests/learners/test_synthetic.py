"""The synthetic stream has the structure it promises: clusters, sessions, new items, a switch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from learners.datasets import read_items, read_log
from learners.synthetic import generate, write


def test_seeded_and_time_ordered() -> None:
    a, b = generate(n_events=3000, seed=4), generate(n_events=3000, seed=4)
    c = generate(n_events=3000, seed=5)
    assert a.log.item.tolist() == b.log.item.tolist() and a.truth == b.truth
    assert a.log.item.tolist() != c.log.item.tolist()
    assert bool(np.all(np.diff(a.log.ts) > 0))


def test_users_follow_their_cluster_and_switch_at_the_known_index() -> None:
    stream = generate(n_events=6000, switch_at=0.5, p_explore=0.1, seed=1)
    truth, log = stream.truth, stream.log
    cluster = truth["item_cluster"]
    switch = truth["switch_at"]
    assert switch == 3000
    before = np.mean([cluster[i] == truth["user_cluster_before"][u]
                      for u, i in zip(log.user[:switch], log.item[:switch], strict=True)])
    after = np.mean([cluster[i] == truth["user_cluster_after"][u]
                     for u, i in zip(log.user[switch:], log.item[switch:], strict=True)])
    stale = np.mean([cluster[i] == truth["user_cluster_before"][u]
                     for u, i in zip(log.user[switch:], log.item[switch:], strict=True)])
    assert before > 0.85 and after > 0.85 and stale < 0.2


def test_tags_and_titles_carry_the_cluster_theme() -> None:
    stream = generate(n_events=500, n_items=160, n_clusters=8, seed=2)
    cluster = stream.truth["item_cluster"]
    theme_of = {}
    for meta in stream.items:
        theme_of.setdefault(cluster[meta.item_id], Counter()).update(meta.tags)
    # each cluster's most common tag is its own theme word, shared by all its items
    tops = {c: counts.most_common(1)[0] for c, counts in theme_of.items()}
    assert len({tag for tag, _ in tops.values()}) == 8


def test_new_items_are_announced_before_their_first_interaction() -> None:
    stream = generate(n_events=5000, new_item_fraction=0.3, seed=3)
    released = stream.truth["release_at"]
    assert len(released) == round(0.3 * 400)
    meta_ts = {m.item_id: m.ts for m in stream.items}
    first: dict[str, int] = {}
    for k, item in enumerate(stream.log.item.tolist()):
        first.setdefault(item, k)
    assert all(meta_ts[i] <= stream.log.ts[k] for i, k in first.items())
    assert all(first[i] >= released[i] for i in released if i in first)
    assert sum(i in first for i in released) > 0.8 * len(released)  # fresh items do get traffic
    assert [m.ts for m in stream.items] == sorted(m.ts for m in stream.items)


def test_sessions_follow_the_item_chain() -> None:
    stream = generate(n_events=4000, p_sequential=0.6, concurrent_sessions=1, seed=6)
    pairs = Counter(zip(stream.log.item[:-1].tolist(), stream.log.item[1:].tolist(), strict=True))
    # a chain makes some consecutive pairs far more common than chance (1 / n_items)
    assert pairs.most_common(1)[0][1] > 20


def test_write_jsonl_reads_back(tmp_path: Path) -> None:
    stream = generate(n_events=200, seed=7)
    events, items = write(stream, tmp_path / "out")
    assert read_log(events).item.tolist() == stream.log.item.tolist()
    assert read_items(items) == stream.items


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        generate(n_events=0)
    with pytest.raises(ValueError):
        generate(n_items=5, n_clusters=4)
