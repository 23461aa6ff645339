"""`streamrec synth`: a large seeded synthetic interaction log written as CSV, fully vectorised.

The structure is that of `learners.synthetic.generate` at its defaults, built with numpy array
operations instead of a Python loop per event, so that 10M events over 1M items and 2M users take
seconds: items belong to latent interest clusters with a Zipf popularity inside each cluster and a
per-cluster chain order (a session's "next" item); a quarter of the items are released over time
(between 5% and 95% of the stream), never interacted with before their release and boosted ×4 while
fresh; users prefer one cluster (10% of draws explore another) and, from event `switch_at` × events
on, every user prefers cluster `(c + shift) % clusters` (the drift); sessions (geometric length,
mean 6, users drawn by a log-normal activity) interleave over 16 concurrent slots and follow the chain
half of the time. Event k happens at `1_700_000_000 + k + jitter` seconds (jitter < 0.5 s, sorted), so
the log is time-ordered. Same arguments, same bytes.

The CSV has the header `user_id,item_id,ts,value,type` (`learners.datasets.read_log(path, "csv")`
reads it); ids are `u<n>` and `i<n>`, `ts` is in seconds with millisecond precision. The optional
catalog is `items`-contract JSON lines (`learners.datasets.read_items`), in release order.

>>> import tempfile, pathlib
>>> from learners.datasets import read_items, read_log
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> summary = write_synthetic(folder / "s.csv", n_items=200, n_users=50, n_events=1_000, seed=3,
...                           catalog=folder / "items.jsonl")
>>> summary["rows"], summary["switch_at"]
(1000, 600)
>>> log = read_log(folder / "s.csv")
>>> len(log), bool((log.ts[1:] >= log.ts[:-1]).all()), len(read_items(folder / "items.jsonl"))
(1000, True, 200)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from learners.synthetic import THEMES

T0 = 1_700_000_000  # event k happens at about T0 + k seconds
HEADER = b"user_id,item_id,ts,value,type\n"
_CHUNK = 1 << 20  # rows formatted at a time when writing


class SynthLog(NamedTuple):
    """A generated log as dense codes (event order) plus the item side and the ground truth."""

    user: np.ndarray  # int64 user number of each event (id "u<n>")
    item: np.ndarray  # int64 item number of each event (id "i<n>")
    ts_ms: np.ndarray  # int64 event time, epoch milliseconds, non-decreasing
    release: np.ndarray  # int64 event index from which each item may be interacted with (0: from start)
    cluster: np.ndarray  # int64 cluster of each item
    truth: dict[str, Any]


def _sessions(rng: np.random.Generator, slot: np.ndarray, n_slots: int, mean: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut each slot's events (in time order) into sessions of geometric length.

    Returns (order, session, position): `order` lists event indices slot by slot (so each session's
    events are contiguous and in time order), `session[j]` and `position[j]` are the global session
    number and the 0-based position in it of event `order[j]`.
    """
    order = np.argsort(slot, kind="stable")
    counts = np.bincount(slot, minlength=n_slots)
    session = np.empty(len(slot), np.int64)
    position = np.empty(len(slot), np.int64)
    lo, first_session = 0, 0
    for count in counts.tolist():
        lengths = rng.geometric(1.0 / mean, size=int(count / mean * 1.2) + 16)
        while lengths.sum() < count:
            lengths = np.concatenate([lengths, rng.geometric(1.0 / mean, size=int(count / mean) + 16)])
        ends = np.cumsum(lengths)
        used = int(np.searchsorted(ends, count)) + 1  # sessions that hold at least one event
        rank = np.arange(count)
        sid = np.searchsorted(ends[:used], rank, side="right")
        session[lo:lo + count] = first_session + sid
        position[lo:lo + count] = rank - (ends[sid] - lengths[sid])
        lo += count
        first_session += used
    return order, session, position


class _Sampler:
    """Draws items of a cluster at event index k with weight base × (4 if fresh else 1), among items
    released by k, exactly and vectorised: per cluster, the items released from the start, then the
    new items in release order, laid out in one cumulative-weight array."""

    def __init__(self, cluster: np.ndarray, release: np.ndarray, weight: np.ndarray, n_clusters: int,
                 fresh_for: int, first_member: np.ndarray) -> None:
        is_new = release > 0
        layout = np.lexsort((np.arange(len(cluster)), release, is_new, cluster))
        self.items = layout
        self.cum = np.concatenate([[0.0], np.cumsum(weight[layout])])
        self.fresh_for = fresh_for
        self.first_member = first_member
        sizes = np.bincount(cluster, minlength=n_clusters)
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # first slot of each cluster
        n_static = np.bincount(cluster[~is_new], minlength=n_clusters)
        self.new_start = self.start + n_static
        # (cluster, release) of the layout, sorted: released-by-k bounds are one searchsorted
        self.span = int(release.max()) + 2
        self.key = cluster[layout] * self.span + release[layout]

    def draw(self, c: np.ndarray, k: np.ndarray, u: np.ndarray) -> np.ndarray:
        span = self.span
        k_cap = np.minimum(k, span - 1)
        # b: end of the released prefix of c's new items; a: start of its fresh window (age < fresh_for)
        b = np.searchsorted(self.key, c * span + k_cap, side="right")
        b = np.maximum(b, self.new_start[c])
        oldest_fresh = np.clip(k - self.fresh_for, -1, span - 1)
        a = np.searchsorted(self.key, c * span + oldest_fresh, side="right")
        a = np.clip(a, self.new_start[c], b)
        cum, s = self.cum, self.start[c]
        plain = cum[b] - cum[s]
        total = plain + 3.0 * (cum[b] - cum[a])
        x = u * total
        in_plain = x < plain
        target = np.where(in_plain, cum[s] + x, cum[a] + (x - plain) / 3.0)
        pos = np.searchsorted(cum, target, side="right") - 1
        pos = np.clip(pos, np.where(in_plain, s, a), np.maximum(b - 1, s))
        out = self.items[pos]
        return np.where(total > 0, out, self.first_member[c])


def generate_log(
    n_items: int, n_users: int, n_events: int, seed: int = 0, n_clusters: int = 8,
    new_item_fraction: float = 0.25, switch_at: float | int = 0.6, drift_fraction: float = 1.0,
    session_mean: float = 6.0, p_sequential: float = 0.5, p_explore: float = 0.1,
    concurrent_sessions: int = 16, cluster_skew: float = 0.0,
) -> SynthLog:
    """Generate the events as dense codes; the parameters mean what they mean in `learners.synthetic`.

    >>> log = generate_log(n_items=100, n_users=20, n_events=500, seed=1)
    >>> len(log.item), log.truth["switch_at"], bool((log.ts_ms[1:] >= log.ts_ms[:-1]).all())
    (500, 300, True)
    """
    if n_events < 1 or n_users < 1 or n_clusters < 2 or n_items < 2 * n_clusters:
        raise ValueError("need events >= 1, users >= 1, clusters >= 2 and items >= 2 * clusters")
    rng = np.random.default_rng(seed)
    switch = int(round(switch_at * n_events)) if isinstance(switch_at, float) else int(switch_at)

    n_new = int(round(new_item_fraction * n_items))
    release = np.zeros(n_items, np.int64)
    new_items = rng.choice(n_items, size=n_new, replace=False)
    release[new_items] = np.sort(rng.integers(int(0.05 * n_events), int(0.95 * n_events) + 1, size=n_new))
    cluster = rng.permutation(np.arange(n_items) % n_clusters)

    # chain: each cluster's members in a random order; an item's successor is the next one (cyclic)
    perm = rng.permutation(n_items)
    chain = perm[np.argsort(cluster[perm], kind="stable")]
    sizes = np.bincount(cluster, minlength=n_clusters)
    offset = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    chain_pos = np.empty(n_items, np.int64)
    chain_pos[chain] = np.arange(n_items) - offset[cluster[chain]]
    weight = 1.0 / (chain_pos + 1.0) ** 0.8  # Zipf within a cluster ...
    rng.shuffle(weight)  # ... independent of chain position
    fresh_for = max(1, n_events // 20)
    sampler = _Sampler(cluster, release, weight, n_clusters, fresh_for, chain[offset])

    cluster_p = np.exp(-cluster_skew * np.arange(n_clusters))
    user_cluster = rng.choice(n_clusters, size=n_users, p=cluster_p / cluster_p.sum())
    shift = int(rng.integers(1, n_clusters))
    drifting = rng.random(n_users) < drift_fraction
    after_cluster = np.where(drifting, (user_cluster + shift) % n_clusters, user_cluster)
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    activity_cdf = np.cumsum(activity) / activity.sum()

    # sessions, in session order (each session's events contiguous and in time order)
    slot = rng.integers(concurrent_sessions, size=n_events)
    k, session, position = _sessions(rng, slot, concurrent_sessions, session_mean)
    del slot
    n_sessions = int(session[-1]) + 1 if n_events else 0
    session_user = np.minimum(np.searchsorted(activity_cdf, rng.random(n_sessions)), n_users - 1)
    user = session_user[session]
    del session, session_user
    current = np.where(k >= switch, after_cluster[user], user_cluster[user])
    r_mode, r_item, r_cluster = rng.random(n_events), rng.random(n_events), rng.random(n_events)
    explore = r_mode > 1.0 - p_explore
    draw_cluster = np.where(explore, np.minimum((r_cluster * n_clusters).astype(np.int64), n_clusters - 1),
                            current)
    del r_cluster, explore
    drawn = sampler.draw(draw_cluster, k, r_item)
    del draw_cluster, r_item

    # A step follows the chain (item = successor of the previous one) when r_mode < p_sequential, the
    # successor is released and it lies in the user's current cluster; otherwise it draws. A run of
    # chain steps from a draw at j0 is chain[cluster start + (pos(drawn[j0]) + j - j0) % size]. Steps
    # that fail become draws; the first failure of each run is fixed per round, then its run re-checked.
    restart = (position == 0) | (r_mode >= p_sequential)
    del position, r_mode
    idx = np.arange(n_events)
    check = np.flatnonzero(~restart)
    item = drawn.copy()
    while len(check):
        run_start = np.maximum.accumulate(np.where(restart, idx, 0))
        start = run_start[check]
        first = drawn[start]
        c_run = cluster[first]
        candidate = chain[offset[c_run] + (chain_pos[first] + (check - start)) % sizes[c_run]]
        fail = (release[candidate] > k[check]) | (c_run != current[check])
        item[check] = candidate
        failed = check[fail]
        if not len(failed):
            break
        fs = run_start[failed]
        first_fail = failed[np.concatenate([[True], fs[1:] != fs[:-1]])]
        restart[first_fail] = True
        item[first_fail] = drawn[first_fail]
        # re-check the steps after each new draw, up to the next draw
        run_start = np.maximum.accumulate(np.where(restart, idx, 0))
        fresh = np.zeros(n_events, bool)
        fresh[first_fail] = True
        later = check[check > first_fail.min()]
        check = later[fresh[run_start[later]] & ~restart[later]]

    ev_user = np.empty(n_events, np.int64)
    ev_item = np.empty(n_events, np.int64)
    ev_user[k] = user
    ev_item[k] = item
    jitter = np.sort(rng.random(n_events)) * 0.5
    ts_ms = T0 * 1000 + np.arange(n_events, dtype=np.int64) * 1000 + np.rint(jitter * 1000).astype(np.int64)
    truth = {
        "switch_at": switch,
        "switch_ts": float(ts_ms[min(switch, n_events - 1)]) / 1000.0,
        "shift": shift,
        "n_clusters": n_clusters,
        "new_items": n_new,
        "seed": seed,
    }
    return SynthLog(ev_user, ev_item, ts_ms, release, cluster, truth)


def _pa_ids(prefix: str, numbers: np.ndarray) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def _ts_strings(ts_ms: np.ndarray) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    seconds = pc.cast(pa.array(ts_ms // 1000), pa.string())
    millis = pc.utf8_lpad(pc.cast(pa.array(ts_ms % 1000), pa.string()), 3, "0")
    return pc.binary_join_element_wise(seconds, millis, ".")


def _write_lines(fh: Any, lines: Any) -> None:
    """Write a pyarrow string array with no nulls: its data buffer is the lines back to back."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    data = lines.buffers()[2]
    fh.write(memoryview(data)[offsets[0]:offsets[-1]])


def write_log_csv(path: str | Path, log: SynthLog) -> int:
    """Write the events as CSV (`user_id,item_id,ts,value,type`); returns the bytes written."""
    import pyarrow.compute as pc

    n_users = int(log.user.max()) + 1 if len(log.user) else 0
    n_items = len(log.release)
    users = _pa_ids("u", np.arange(n_users))
    items = _pa_ids("i", np.arange(n_items))
    with open(path, "wb") as fh:
        fh.write(HEADER)
        for lo in range(0, len(log.user), _CHUNK):
            hi = min(lo + _CHUNK, len(log.user))
            lines = pc.binary_join_element_wise(
                users.take(log.user[lo:hi]), items.take(log.item[lo:hi]), _ts_strings(log.ts_ms[lo:hi]),
                "1", "click\n", ",")
            _write_lines(fh, lines)
        return fh.tell()


def _theme_names(n_clusters: int) -> list[str]:
    names = [name for name, _ in THEMES]
    return [names[c % len(names)] + (str(c // len(names)) if c >= len(names) else "")
            for c in range(n_clusters)]


def write_catalog_jsonl(path: str | Path, log: SynthLog, seed: int = 0) -> int:
    """Write the items as `items`-contract JSON lines in release order (title and tags carry the cluster's
    theme words, one tag from a random theme); returns the bytes written."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng([seed, 1])
    n, n_clusters = len(log.cluster), int(log.truth["n_clusters"])
    theme = log.cluster % len(THEMES)
    picks = np.argsort(rng.random((n, 8)), axis=1)[:, :3]  # three distinct words of the theme
    words = pa.array([w for _, ws in THEMES for w in ws])
    capital = pa.array([w.capitalize() for _, ws in THEMES for w in ws])
    word_ix = theme[:, None] * 8 + picks
    noise_ix = (rng.integers(n_clusters, size=n) % len(THEMES)) * 8 + rng.integers(8, size=n)
    names = pa.array(_theme_names(n_clusters))
    release_order = np.argsort(log.release, kind="stable")  # ties in id order
    with open(path, "wb") as fh:
        for lo in range(0, n, _CHUNK):
            order = release_order[lo:lo + _CHUNK]
            numbers = pc.cast(pa.array(order), pa.string())
            ts = pc.cast(pa.array(T0 + log.release[order]), pa.string())
            w0, w1 = (words.take(word_ix[order, j]) for j in range(2))
            parts = [
                '{"item_id":"i', numbers, '","title":"', capital.take(word_ix[order, 2]), " ", w0, " #",
                numbers, '","tags":["', names.take(log.cluster[order]), '","', w0, '","', w1, '","',
                words.take(noise_ix[order]), '"],"ts":', ts, "}\n",
            ]
            _write_lines(fh, pc.binary_join_element_wise(*parts, ""))
        return fh.tell()


def write_synthetic(
    out: str | Path, n_items: int, n_users: int, n_events: int, seed: int = 0,
    catalog: str | Path | None = None, **options: Any,
) -> dict[str, Any]:
    """Generate a log (`generate_log`) and write it as CSV to `out` (and the catalog as JSONL to
    `catalog`); returns a summary: rows, bytes, seconds and the ground truth."""
    start = time.perf_counter()
    log = generate_log(n_items=n_items, n_users=n_users, n_events=n_events, seed=seed, **options)
    size = write_log_csv(out, log)
    catalog_bytes = write_catalog_jsonl(catalog, log, seed) if catalog is not None else 0
    return {"rows": len(log.user), "bytes": size, "catalog_bytes": catalog_bytes,
            "seconds": time.perf_counter() - start, **log.truth}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--items", type=int, default=1_000, help="catalog size (default 1000)")
    parser.add_argument("--users", type=int, default=10_000, help="user population (default 10000)")
    parser.add_argument("--events", type=int, default=100_000, help="events to write (default 100000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--clusters", type=int, default=8, help="interest clusters (default 8)")
    parser.add_argument("--out", required=True, help="CSV file to write (user_id,item_id,ts,value,type)")
    parser.add_argument("--catalog", help="also write the items as JSONL (read_items / --items)")


def run(args: argparse.Namespace) -> int:
    try:
        summary = write_synthetic(args.out, n_items=args.items, n_users=args.users, n_events=args.events,
                                  seed=args.seed, catalog=args.catalog, n_clusters=args.clusters)
    except (ValueError, OSError) as exc:
        print(f"streamrec synth: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary['rows']:,} events ({summary['bytes'] / 1e6:,.1f} MB) to {args.out}"
          + (f" and {args.items:,} items to {args.catalog}" if args.catalog else "")
          + f" in {summary['seconds']:.1f}s; interest switch at event {summary['switch_at']:,}"
          f" (ts {summary['switch_ts']:.3f})", flush=True)
    return 0
