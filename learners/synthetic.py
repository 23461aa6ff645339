"""A seeded synthetic interaction stream with known structure, for demos, tests and drift experiments.

Items belong to latent interest clusters whose titles and tags share a theme vocabulary (so content
features mean something); users prefer one cluster; sessions interleave and follow a per-cluster
item chain (so sequence/co-occurrence signal exists); new items are released over time, announced
with metadata at release (before their first interaction) and enjoy a freshness boost; at a known
event index every user's interest moves to another cluster (drift).

>>> stream = generate(n_events=2_000, seed=1)
>>> len(stream.log), stream.truth["switch_at"]
(2000, 1200)
>>> bool((stream.log.ts[1:] >= stream.log.ts[:-1]).all())
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from learners.base import EVENT_TYPE_CODE, Interactions, ItemMeta

THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("jazz", ("saxophone", "swing", "bebop", "trumpet", "blue", "smoky", "club", "improv")),
    ("space", ("rocket", "orbit", "galaxy", "alien", "nebula", "astronaut", "star", "planet")),
    ("cooking", ("kitchen", "recipe", "spice", "bread", "grill", "chef", "sauce", "pasta")),
    ("football", ("goal", "league", "striker", "stadium", "derby", "keeper", "match", "cup")),
    ("gardening", ("rose", "soil", "seed", "orchard", "compost", "tulip", "hedge", "bloom")),
    ("crime", ("detective", "murder", "alibi", "heist", "clue", "noir", "suspect", "case")),
    ("travel", ("island", "passport", "beach", "train", "mountain", "hostel", "voyage", "map")),
    ("retro", ("arcade", "pixel", "cartridge", "joystick", "console", "synth", "vhs", "neon")),
    ("classical", ("symphony", "violin", "sonata", "opera", "cello", "baroque", "piano", "quartet")),
    ("fitness", ("yoga", "sprint", "muscle", "cardio", "stretch", "marathon", "gym", "protein")),
    ("comics", ("hero", "villain", "panel", "cape", "sidekick", "mask", "saga", "issue")),
    ("wildlife", ("wolf", "safari", "eagle", "reef", "jungle", "tiger", "migration", "nest")),
)


class SyntheticStream(NamedTuple):
    log: Interactions
    items: list[ItemMeta]
    truth: dict[str, Any]


def _theme(c: int) -> tuple[str, tuple[str, ...]]:
    name, words = THEMES[c % len(THEMES)]
    return (name if c < len(THEMES) else f"{name}{c // len(THEMES)}"), words


def _catalog(rng: np.random.Generator, n_items: int, n_clusters: int, release: np.ndarray, t0: float,
             dt: float) -> tuple[list[ItemMeta], np.ndarray]:
    cluster = rng.permutation(np.arange(n_items) % n_clusters)
    metas = []
    for i in range(n_items):
        theme, words = _theme(int(cluster[i]))
        picks = rng.choice(len(words), size=3, replace=False)
        # one tag from a random theme: content is informative, not perfect
        noise = _theme(int(rng.integers(n_clusters)))[1][int(rng.integers(8))]
        tags = (theme, words[picks[0]], words[picks[1]], noise)
        title = f"{words[picks[2]].capitalize()} {words[picks[0]]} #{i}"
        metas.append(ItemMeta(item_id=f"i{i:05d}", title=title, tags=tags, ts=t0 + release[i] * dt))
    return metas, cluster


def generate(
    n_events: int = 30_000,
    n_users: int = 600,
    n_items: int = 400,
    n_clusters: int = 8,
    new_item_fraction: float = 0.25,
    switch_at: float | int = 0.6,
    drift_fraction: float = 1.0,
    session_mean: float = 6.0,
    p_sequential: float = 0.5,
    p_explore: float = 0.1,
    concurrent_sessions: int = 16,
    cluster_skew: float = 0.0,
    seed: int = 0,
) -> SyntheticStream:
    """Generate `n_events` click events (see the module docstring for the structure).

    `switch_at` is an event index, or a fraction of `n_events`; from that event on, a `drift_fraction`
    of users prefer cluster `(c + shift) % n_clusters` instead of `c`. With `cluster_skew` > 0 users
    prefer low-numbered clusters (weight exp(-skew * c)), so the switch also moves global popularity.
    Ground truth in `truth`.
    """
    if n_events < 1 or n_users < 1 or n_clusters < 2 or n_items < 2 * n_clusters:
        raise ValueError("need n_events >= 1, n_users >= 1, n_clusters >= 2 and n_items >= 2 * n_clusters")
    rng = np.random.default_rng(seed)
    switch = int(round(switch_at * n_events)) if isinstance(switch_at, float) else int(switch_at)
    t0, dt = 1_700_000_000.0, 1.0  # event k happens at about t0 + k * dt

    n_new = int(round(new_item_fraction * n_items))
    release = np.zeros(n_items, np.int64)  # event index from which an item may be interacted with
    new_items = rng.choice(n_items, size=n_new, replace=False)
    release[new_items] = np.sort(rng.integers(int(0.05 * n_events), int(0.95 * n_events) + 1, size=n_new))
    items, cluster = _catalog(rng, n_items, n_clusters, release, t0, dt)

    # within a cluster: a fixed popularity (Zipf) and a chain order (the "next" item of a session)
    members = [np.flatnonzero(cluster == c) for c in range(n_clusters)]
    members = [rng.permutation(m) for m in members]
    base_weight = np.zeros(n_items)
    successor = np.zeros(n_items, np.int64)
    for m in members:
        base_weight[m] = 1.0 / (np.arange(len(m)) + 1.0) ** 0.8
        successor[m] = np.roll(m, -1)
    rng.shuffle(base_weight)  # popularity is independent of chain position
    fresh_for = max(1, n_events // 20)

    cluster_p = np.exp(-cluster_skew * np.arange(n_clusters))
    user_cluster = rng.choice(n_clusters, size=n_users, p=cluster_p / cluster_p.sum())
    shift = int(rng.integers(1, n_clusters))
    drifting = rng.random(n_users) < drift_fraction
    after_cluster = np.where(drifting, (user_cluster + shift) % n_clusters, user_cluster)
    activity = rng.lognormal(0.0, 1.0, size=n_users)  # heavy-ish tail, no single user dominates
    activity_cdf = np.cumsum(activity) / activity.sum()

    def cluster_cdf(c: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        m = members[c][release[members[c]] <= k]
        if len(m) == 0:
            m = members[c][:1]
        age = k - release[m]
        w = base_weight[m] * np.where((release[m] > 0) & (age < fresh_for), 4.0, 1.0)
        return m, np.cumsum(w) / w.sum()

    cdf_cache: dict[int, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}
    refresh_every = max(1, n_events // 200)

    def draw(c: int, k: int, u: float) -> int:
        stamp = k // refresh_every
        hit = cdf_cache.get(c)
        if hit is None or hit[0] != stamp:
            hit = (stamp, cluster_cdf(c, k))
            cdf_cache[c] = hit
        m, cdf = hit[1]
        return int(m[min(np.searchsorted(cdf, u), len(m) - 1)])

    users = np.empty(n_events, np.int64)
    picked = np.empty(n_events, np.int64)
    uniforms = rng.random((n_events, 4))
    slots_user = np.searchsorted(activity_cdf, rng.random(concurrent_sessions))
    slots_left = rng.geometric(1.0 / session_mean, size=concurrent_sessions)
    slots_last = np.full(concurrent_sessions, -1)
    slot_pick = rng.integers(concurrent_sessions, size=n_events)
    for k in range(n_events):
        s = slot_pick[k]
        if slots_left[s] <= 0:  # the session ended: a new one starts in this slot
            slots_user[s] = min(np.searchsorted(activity_cdf, rng.random()), n_users - 1)
            slots_left[s] = rng.geometric(1.0 / session_mean)
            slots_last[s] = -1
        u = int(slots_user[s])
        c = int(after_cluster[u] if k >= switch else user_cluster[u])
        r_mode, r_item, r_cluster, _ = uniforms[k]
        last = slots_last[s]
        if last >= 0 and r_mode < p_sequential and release[successor[last]] <= k \
                and cluster[successor[last]] == c:
            i = int(successor[last])
        else:
            if r_mode > 1.0 - p_explore:
                c = int(r_cluster * n_clusters)
            i = draw(c, k, r_item)
        users[k], picked[k] = u, i
        slots_last[s] = i
        slots_left[s] -= 1

    ts = t0 + np.arange(n_events) * dt + np.sort(rng.random(n_events)) * 0.5 * dt
    user_ids = np.array([f"u{u:05d}" for u in range(n_users)], dtype=object)
    item_ids = np.array([m.item_id for m in items], dtype=object)
    eids = np.empty(n_events, dtype=object)
    eids[:] = [f"syn-{seed}-{k}" for k in range(n_events)]
    log = Interactions(
        user=user_ids[users], item=item_ids[picked], value=np.ones(n_events, np.float32), ts=ts,
        kind=np.full(n_events, EVENT_TYPE_CODE["click"], np.uint8), event_id=eids,
    )
    items = sorted(items, key=lambda meta: meta.ts)
    truth = {
        "switch_at": switch,
        "switch_ts": float(ts[min(switch, n_events - 1)]),
        "shift": shift,
        "n_clusters": n_clusters,
        "item_cluster": {str(item_ids[i]): int(cluster[i]) for i in range(n_items)},
        "user_cluster_before": {str(user_ids[u]): int(user_cluster[u]) for u in range(n_users)},
        "user_cluster_after": {str(user_ids[u]): int(after_cluster[u]) for u in range(n_users)},
        "release_at": {str(item_ids[i]): int(release[i]) for i in range(n_items) if release[i] > 0},
        "seed": seed,
    }
    return SyntheticStream(log, items, truth)


def write(stream: SyntheticStream, folder: str | Path) -> tuple[Path, Path]:
    """Write `interactions.jsonl` and `items.jsonl` (the topic contracts) into `folder`."""
    from learners.datasets import write_items_jsonl, write_jsonl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    events, items = folder / "interactions.jsonl", folder / "items.jsonl"
    write_jsonl(events, stream.log)
    write_items_jsonl(items, stream.items)
    return events, items


if __name__ == "__main__":  # python -m learners.synthetic OUT_DIR [N_EVENTS]
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "synthetic"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30_000
    paths = write(generate(n_events=n), out)
    print(*paths)
