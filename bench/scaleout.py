"""Scale-out benchmark: N workers in one consumer group share item-side state through Kafka (issue 12).

For each log and each N of `--workers`, a fresh topic prefix (so no two runs share a topic or a group)
gets its topics with `--partitions` partitions (default 4, or the largest N), N `streamrec worker`s start,
each with its own state dir and audit log, and once every worker holds interactions partitions and the
group has settled (each of them at least one, together all, none twice), the log is produced paced at
`--rate` events/s in total, keyed by user id (`stream.producer`, as `bench.e2e` does). The run ends when
the workers' `/health` `events_applied` add up to the valid events produced, plus 2 x `--sync-seconds`
for the final sync; then the workers are stopped gracefully (SIGTERM) and their audit logs and the
`recommendations` topic are read.

    python -m bench.scaleout --workers 1,2,4 --json          # both logs, no-sync with 4, the kill run
    python -m bench.scaleout --workers 1,2 --logs ml-100k --sync-only --no-kill --max-events 20000

Logs: `ml-100k` (`<data-dir>/ml-100k/u.data`, movielens) and `yoochoose`
(`<data-dir>/yoochoose-clicks-100k`, the yoochoose folder: train_full then test). A missing one is
replaced by a seeded `learners.synthetic` log of `--max-events` (default 100,000) events, said on
stderr and in the report (`source`, `synthetic`). `--no-sync` (on by default; `--sync-only` leaves it
out) repeats the largest N (or `--no-sync-workers`) with the workers' `--no-sync`; `--kill` (on by
default; `--no-kill` leaves it out) adds a 2-worker run that SIGKILLs worker B at 50% applied, restarts
it on the same state dir once worker A has applied 2,000 events of B's former partitions beyond B's
last reported offsets, and finishes.

Worker command: `streamrec worker --learner sparse --no-deep --sync-seconds S (or --no-sync)
--audit-log STATE/audit.jsonl --partitions P --log-level warning` plus the bootstrap, prefix, state dir
and a free web port (`stream.worker.WorkerProcess`); `--sync-events` keeps the worker's default.

Definitions (per run):

* `events_per_s`: valid events / (the poll that saw the sum of `events_applied` reach them - the
  moment producing began). Paced producing caps it at about `--rate`.
* `cpu_s_per_1000`: user + system CPU seconds of every worker process and its descendants (live ones
  from /proc/PID/stat utime+stime, reaped ones through cutime+cstime), summed over workers, taken just
  before producing begins and again after the final sync wait (start-up and shutdown left out; the
  broker and this process excluded), per 1,000 valid events.
* `hr@10`, `evaluated`: from the audit `events` lines of all workers: hits / evaluated, evaluated =
  events with hit >= 0. An event (partition, offset) learned twice (a crash replays it) counts once,
  the later learning kept (pre-kill lines before post-kill ones). Evaluability follows the global seen
  set: an event whose item its worker had not heard of, seen first on another worker (earlier record
  time), comes back in a `late_evaluated` line and counts as evaluated and missed
  (`detail.audit.late_evaluated`).
* `delta_bytes_per_event`: the sum of the `delta_sent` lines' `bytes` / valid events.
* `sync_lag_p50_s` / `sync_lag_p99_s` ("Kafka record time of an event -> the last other worker applied
  its delta"): a delta is (sender, partition, first); it is done when N - 1 workers other than its
  sender have applied it, at the latest of their `applied_at`. Each event of an `events` line is
  placed in its sender's delta of that partition with first <= offset <= last, and its lag is the
  delta's done time - the event's `record_ts`; p50/p99 over those events (`detail.sync_lag_basis`:
  "events"). Without `events` lines, each done delta counts with its `events` as weight and lag =
  done - `record_ts_min` ("deltas", an upper bound per event). `detail` also gives both bounds from the
  delta lines (`oldest`: vs record_ts_min, `newest`: vs record_ts_max) and how many deltas / events were
  never applied by every other worker (those are left out of the percentiles). Null with 1 worker or
  `--no-sync`.
* `history_repeats`: over every list on `recommendations`, the listed items that were in that user's
  history: items of the user's events in the log with ts <= the list's `event_ts` (`detail` also
  counts ts < event_ts, which leaves out same-second events that may come after the trigger).
* `exactly_once`: the sum of `events_applied` after the final sync == valid events, and, with sync,
  every worker's digest of its integer item counts (the `final` line of its audit log, written at
  shutdown) equal (`detail.counts_digest_equal`, null when absent).

Kill run: B's partitions and offsets come from B's last `/health` before the kill; B's audit log is
copied at the kill (lines written before) and A's is split at its size then. "Before the kill" events
are those lines; "after" events are post-kill lines on B's former partitions at offsets beyond the last
one B learned. `moved_users`: users with events on B's partitions before the kill and after;
`moved_evaluated`: their evaluated events after; `moved_hr_ratio`: HR@10 over each moved user's first 5
evaluated events after the kill / HR@10 of all other users' evaluated post-kill events whose record
time lies in the span of those moved events' record times (offsets are per partition, so "the same
offset span" is taken as the same span of the stream).

Human-readable progress goes to stderr; with `--json` the last line of stdout is the JSON report
`{"logs": {"ml-100k": {"runs": [...], "no_sync_hr@10": {"4": ...}, "kill": {...}}, "yoochoose": ...}}`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import Interactions

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO / "../shared/data"
LOGS: dict[str, tuple[str, str]] = {  # name -> (path under --data-dir, format)
    "ml-100k": ("ml-100k/u.data", "movielens"),
    "yoochoose": ("yoochoose-clicks-100k", "yoochoose"),
}
SYNTHETIC_SEED = {"ml-100k": 0, "yoochoose": 1}
KILL_AT = 0.5  # share of the valid events applied when B is killed
MOVED_EVENTS = 2_000  # events of B's partitions A applies before B comes back
FIRST_EVALUATED = 5  # a moved user's first evaluated events after the kill that count
POLL_S = 0.2  # /health polls cost the workers CPU (~0.02 CPU-s/s each at 20 a second), not the sharing
STALL_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

Say = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Options:
    bootstrap: str
    workdir: Path
    partitions: int
    rate: float
    sync_seconds: float
    learner: str
    ready_timeout: float = 240.0
    say: Say = print


# -- logs -------------------------------------------------------------------------------------------
def load_named_log(name: str, data_dir: Path, max_events: int | None) -> tuple[Interactions, str, bool]:
    """(log, where it came from, synthetic?): the named log under `data_dir`, else a synthetic one."""
    from bench.e2e import load_log

    rel, fmt = LOGS[name]
    path = data_dir / rel
    if path.exists():
        log, _ = load_log(str(path), fmt, max_events)
        return log, f"{path.resolve()} ({fmt})", False
    from learners.synthetic import generate

    n = max_events or 100_000
    log = generate(n_events=n, seed=SYNTHETIC_SEED.get(name, 0)).log
    return log, f"synthetic {n} events (learners.synthetic; {path} missing)", True


def count_valid(records: Sequence[tuple[bytes, bytes]]) -> int:
    """How many of the produced values the worker's validation accepts (`stream.schema`)."""
    from stream.schema import validate_interactions

    return len(validate_interactions([v for _, v in records], fallback_id="x:0:{}".format).batch)


# -- worker processes -------------------------------------------------------------------------------
def audit_path(state: Path) -> Path:
    return state / "audit.jsonl"


def worker_args(opts: Options, state: Path, sync: bool) -> list[str]:
    """`streamrec worker` flags of one worker (beyond bootstrap, prefix, state dir and web port)."""
    common = ["--no-deep", "--partitions", str(opts.partitions), "--log-level", "warning"]
    sharing = ["--sync-seconds", f"{opts.sync_seconds:g}"] if sync else ["--no-sync"]
    return ["--learner", opts.learner, *common, *sharing, "--audit-log", str(audit_path(state))]


def new_worker(opts: Options, prefix: str, state: Path, sync: bool) -> Any:
    from stream.worker import WorkerProcess

    return WorkerProcess(opts.bootstrap, prefix, state, args=worker_args(opts, state, sync))


def interaction_partitions(health: dict[str, Any] | None, topic: str) -> list[int]:
    """Partitions of `topic` in a `/health` "assigned" list ("topic:partition")."""
    if not health:
        return []
    out = []
    for key in health.get("assigned") or []:
        name, _, part = str(key).rpartition(":")
        if name == topic and part.isdigit():
            out.append(int(part))
    return sorted(out)


def settled(healths: Sequence[dict[str, Any] | None], topic: str, partitions: int) -> bool:
    """Every worker answers; together they hold each partition exactly once, and (N <= partitions)
    each holds at least one."""
    if any(h is None for h in healths):
        return False
    held = [interaction_partitions(h, topic) for h in healths]
    flat = [p for ps in held for p in ps]
    if sorted(flat) != list(range(partitions)):
        return False
    return len(healths) > partitions or all(held)


def poll(workers: Sequence[Any], down: Collection[int] = ()) -> list[dict[str, Any] | None]:
    """Each worker's `/health` (None: not answering yet); a worker that exited unasked is an error."""
    out: list[dict[str, Any] | None] = []
    for i, w in enumerate(workers):
        if i not in down and w.proc is not None and w.proc.poll() is not None:
            raise RuntimeError(f"worker {i} exited with {w.proc.returncode}:\n{w.log_tail()}")
        try:
            out.append(None if i in down else w.health())
        except (OSError, ValueError):
            out.append(None)
    return out


def wait_settled(workers: Sequence[Any], topic: str, partitions: int, timeout: float,
                 steady: float = 1.0) -> list[dict[str, Any] | None]:
    """Wait until `settled` has held for `steady` seconds."""
    deadline = time.monotonic() + timeout
    since = None
    healths: list[dict[str, Any] | None] = []
    while time.monotonic() < deadline:
        healths = poll(workers)
        if settled(healths, topic, partitions):
            since = since or time.monotonic()
            if time.monotonic() - since >= steady:
                return healths
        else:
            since = None
        time.sleep(0.2)
    held = [interaction_partitions(h, topic) for h in healths]
    raise TimeoutError(f"the group did not settle in {timeout:.0f}s: partitions held {held}")


def stop_all(workers: Sequence[Any]) -> None:
    """SIGTERM every worker at once, then wait for each (final publish and checkpoint)."""
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.terminate()
    for w in workers:
        w.stop(timeout=60)


def applied_sum(healths: Sequence[dict[str, Any] | None]) -> int:
    return sum(int(h.get("events_applied", 0)) for h in healths if h)


# -- CPU from /proc ---------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds: utime + stime + cutime + cstime) of a live process, else None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is stat field 3 (state)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return int(fields[1]), ticks / CLK_TCK


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of the processes `roots` and all their live descendants (reaped ones are in their
    parents' cutime/cstime)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children: dict[int, list[int]] = defaultdict(list)
    for pid, (ppid, _) in stats.items():
        children[ppid].append(pid)
    total, todo, seen = 0.0, [p for p in roots if p in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def workers_cpu(workers: Sequence[Any]) -> float:
    return tree_cpu_seconds([w.proc.pid for w in workers if w.proc is not None])


# -- producing while watching /health ---------------------------------------------------------------
@dataclasses.dataclass
class Drive:
    started: float  # perf_counter when producing began
    done: float | None  # perf_counter of the poll that saw every event applied (None: never)
    produce_rate: float | None
    healths: list[dict[str, Any] | None]
    applied: int


def drive(workers: list[Any], settings: Any, records: Sequence[tuple[bytes, bytes]], rate: float,
          n_valid: int, say: Say, hook: Any = None, timeout: float | None = None) -> Drive:
    """Produce `records` paced at `rate` in a thread while polling the workers, until their
    `events_applied` add up to `n_valid` (and `hook`, called each poll, says it is done), nothing moves
    for `STALL_S` seconds after producing ended, or `timeout` passes."""
    from bench.e2e import produce

    result: dict[str, Any] = {}

    def producing() -> None:
        try:
            result["rate"] = produce(settings, list(records), rate=rate)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            result["error"] = exc

    timeout = timeout if timeout is not None else len(records) / rate + 300.0
    thread = threading.Thread(target=producing, name="producer", daemon=True)
    started = time.perf_counter()
    thread.start()
    done, moved_at, last, said = None, started, -1, started
    healths: list[dict[str, Any] | None] = []
    while True:
        down = getattr(hook, "down", set())
        healths = poll(workers, down)
        now = time.perf_counter()
        applied = applied_sum(healths)
        if hook is not None:
            hook(workers, healths, applied, producing=thread.is_alive())
        if applied != last:
            last, moved_at = applied, now
        if (applied >= n_valid and all(h is not None for h in healths)
                and (hook is None or hook.finished)):
            done = now
            break
        if not thread.is_alive() and now - moved_at > STALL_S:
            say(f"  stalled: {applied} of {n_valid} applied, nothing moved for {STALL_S:.0f}s")
            break
        if now - started > timeout:
            say(f"  timed out after {timeout:.0f}s: {applied} of {n_valid} applied")
            break
        if now - said >= 5.0:
            said = now
            say(f"  {now - started:5.1f}s: {applied:,} of {n_valid:,} applied "
                f"({[None if h is None else h.get('events_applied') for h in healths]})")
        time.sleep(POLL_S)
    thread.join()
    if "error" in result:
        raise result["error"]
    return Drive(started, done, result.get("rate"), healths, applied)


# -- the audit log ----------------------------------------------------------------------------------
@dataclasses.dataclass
class Audit:
    """Parsed audit lines of all workers. `events` holds one array per field, one entry per learned
    event: worker (index into `workers`), partition, offset, user, hit, record_ts, phase (0: before the
    kill, 1: after; always 0 without one)."""

    workers: list[str]
    events: dict[str, np.ndarray]
    sent: list[dict[str, Any]]
    applied: list[dict[str, Any]]
    kinds: Counter
    bad_lines: int
    late_evaluated: int = 0  # events counted evaluated after the fact: ranked last (`late_evaluated`)


def split_lines(data: bytes, size: int) -> tuple[bytes, bytes]:
    """`data` cut after the last whole line within its first `size` bytes.

    >>> split_lines(b'a\\nbb\\ncc', 4)
    (b'a\\n', b'bb\\ncc')
    """
    cut = data.rfind(b"\n", 0, size) + 1
    return data[:cut], data[cut:]


def parse_audit(chunks: Sequence[tuple[int, bytes]]) -> Audit:
    """Audit lines from (phase, bytes) chunks, in order; lines that are not JSON objects with a
    "kind" (e.g. cut short by SIGKILL) are counted in `bad_lines` and skipped."""
    workers: dict[str, int] = {}
    cols: dict[str, list[Any]] = {k: [] for k in ("worker", "partition", "offset", "user", "hit",
                                                 "record_ts", "phase")}
    audit = Audit([], {}, [], [], Counter(), 0)
    late: list[tuple[int, int]] = []  # events ranked last after the fact (`late_evaluated` lines)
    for phase, data in chunks:
        for raw in data.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                kind = line["kind"]
            except (ValueError, TypeError, KeyError):
                audit.bad_lines += 1
                continue
            audit.kinds[kind] += 1
            if kind == "delta_sent":
                audit.sent.append(line)
            elif kind == "delta_applied":
                audit.applied.append(line)
            elif kind == "events" and not _add_events(cols, workers, line, phase):
                audit.bad_lines += 1
            elif kind == "late_evaluated":
                code = workers.setdefault(str(line.get("worker")), len(workers))
                late += [(code, p, o) for p, o in zip(line.get("partition", []), line.get("offset", []),
                                                      strict=False)]
    audit.workers = list(workers)
    audit.events = {
        "worker": np.asarray(cols["worker"], np.int64), "partition": np.asarray(cols["partition"], np.int64),
        "offset": np.asarray(cols["offset"], np.int64), "user": np.asarray(cols["user"], dtype=object),
        "hit": np.asarray(cols["hit"], np.int64),
        "record_ts": np.asarray([np.nan if t is None else t for t in cols["record_ts"]], np.float64),
        "phase": np.asarray(cols["phase"], np.int64)}
    if late:  # the worker's own events it could not rank: evaluated, missed
        ev = audit.events
        keys = (ev["worker"] << 56) + (ev["partition"] << 40) + ev["offset"]
        late_keys = np.asarray([(w << 56) + (p << 40) + o for w, p, o in late], np.int64)
        late_mask = np.isin(keys, late_keys) & (ev["hit"] < 0)
        ev["hit"][late_mask] = 0
        audit.late_evaluated = int(late_mask.sum())
    return audit


def _add_events(cols: dict[str, list[Any]], workers: dict[str, int], line: dict[str, Any],
                phase: int) -> bool:
    try:
        parts, offsets, users, hits = line["partition"], line["offset"], line["user"], line["hit"]
        n = len(offsets)
        stamps = line.get("record_ts") or [None] * n
        if not (len(parts) == len(users) == len(hits) == len(stamps) == n):
            return False
        code = workers.setdefault(str(line.get("worker")), len(workers))
    except (KeyError, TypeError):
        return False
    cols["worker"] += [code] * n
    cols["partition"] += parts
    cols["offset"] += offsets
    cols["user"] += [str(u) for u in users]
    cols["hit"] += hits
    cols["record_ts"] += stamps
    cols["phase"] += [phase] * n
    return True


def read_audits(paths: Sequence[Path | None]) -> Audit | None:
    """Parse every worker's audit file (phase 0); None when no file exists."""
    chunks = [(0, p.read_bytes()) for p in paths if p is not None and p.exists()]
    return parse_audit(chunks) if chunks else None


def last_occurrences(events: dict[str, np.ndarray]) -> np.ndarray:
    """Indices of the events to count: the last occurrence of each (partition, offset), in order.

    >>> ev = {"partition": np.array([0, 0, 1, 0]), "offset": np.array([5, 6, 5, 5])}
    >>> last_occurrences(ev).tolist()
    [1, 2, 3]
    """
    n = len(events["offset"])
    if n == 0:
        return np.zeros(0, np.int64)
    keys = events["partition"] * (1 << 40) + events["offset"]
    _, first_in_reversed = np.unique(keys[::-1], return_index=True)
    return np.sort(n - 1 - first_in_reversed)


def hit_rate(hits: np.ndarray) -> tuple[float | None, int]:
    """(hits / evaluated or None, evaluated), evaluated = entries >= 0.

    >>> hit_rate(np.array([1, 0, -1, 1]))
    (0.6666666666666666, 3)
    """
    evaluated = hits >= 0
    n = int(evaluated.sum())
    return (float((hits[evaluated] == 1).sum()) / n if n else None), n


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    """The smallest value whose cumulative weight reaches `q` of the total (None when empty).

    >>> weighted_quantile(np.array([3.0, 1.0, 2.0]), np.array([1, 1, 8]), 0.5)
    2.0
    >>> weighted_quantile(np.array([3.0, 1.0, 2.0]), np.array([1, 1, 8]), 0.99)
    3.0
    """
    if len(values) == 0 or float(np.sum(weights)) <= 0:
        return None
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(np.asarray(weights, np.float64)[order])
    idx = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(np.asarray(values)[order][min(idx, len(values) - 1)])


def delta_done(audit: Audit, others: int) -> dict[tuple[str, int, int], float | None]:
    """(sender, partition, first) of each sent delta -> when the last of `others` workers other than
    the sender applied it (None: fewer applied it)."""
    appliers: dict[tuple[str, int, int], dict[str, float]] = defaultdict(dict)
    for line in audit.applied:
        try:
            key = (str(line["from"]), int(line["partition"]), int(line["first"]))
            who, at = str(line["worker"]), float(line["applied_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if who != key[0]:
            appliers[key][who] = max(at, appliers[key].get(who, at))
    out: dict[tuple[str, int, int], float | None] = {}
    for line in audit.sent:
        try:
            key = (str(line["worker"]), int(line["partition"]), int(line["first"]))
        except (KeyError, TypeError, ValueError):
            continue
        got = appliers.get(key, {})
        out[key] = max(got.values()) if len(got) >= others else None
    return out


def _delta_bounds(audit: Audit, done: dict[tuple[str, int, int], float | None]) -> dict[str, Any]:
    """Lag of each done delta vs its oldest and its newest event, weighted by its events."""
    first_seen: dict[tuple[str, int, int], dict[str, Any]] = {}
    for line in audit.applied:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            first_seen.setdefault((str(line["from"]), int(line["partition"]), int(line["first"])), line)
    oldest, newest, weights = [], [], []
    for key, at in done.items():
        line = first_seen.get(key)
        if at is None or line is None or line.get("record_ts_min") is None:
            continue
        oldest.append(at - float(line["record_ts_min"]))
        newest.append(at - float(line.get("record_ts_max", line["record_ts_min"])))
        weights.append(max(1, int(line.get("events") or 1)))
    o, w, nw = np.asarray(oldest), np.asarray(weights), np.asarray(newest)
    return {"oldest": _percentiles(o, w), "newest": _percentiles(nw, w), "deltas": len(w)}


def _percentiles(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    return {"p50_s": weighted_quantile(values, weights, 0.5),
            "p99_s": weighted_quantile(values, weights, 0.99)}


def _event_lags(audit: Audit, done: dict[tuple[str, int, int], float | None]) -> tuple[np.ndarray, int]:
    """Per event of the `events` lines: its delta's done time - its record time; and how many events
    fall in no done delta of their sender."""
    spans: dict[tuple[str, int], list[tuple[int, int, float]]] = defaultdict(list)
    last_of = {(str(s.get("worker")), int(s["partition"]), int(s["first"])): int(s["last"])
               for s in audit.sent if "partition" in s and "first" in s and "last" in s}
    for (sender, part, first), at in done.items():
        if at is not None and (sender, part, first) in last_of:
            spans[(sender, part)].append((first, last_of[(sender, part, first)], at))
    ev = audit.events
    keep = last_occurrences(ev)
    lags: list[np.ndarray] = []
    unsynced = 0
    for code, name in enumerate(audit.workers):
        for part in np.unique(ev["partition"][keep]).tolist():
            rows = keep[(ev["worker"][keep] == code) & (ev["partition"][keep] == part)]
            if len(rows) == 0:
                continue
            table = sorted(spans.get((name, part), []))
            firsts = np.asarray([t[0] for t in table], np.int64)
            lasts = np.asarray([t[1] for t in table], np.int64)
            ats = np.asarray([t[2] for t in table], np.float64)
            offs = ev["offset"][rows]
            idx = np.searchsorted(firsts, offs, side="right") - 1
            ok = (idx >= 0) & (lasts[np.maximum(idx, 0)] >= offs) if len(table) else np.zeros(len(rows), bool)
            ok &= ~np.isnan(ev["record_ts"][rows])
            unsynced += int((~ok).sum())
            lags.append(ats[idx[ok]] - ev["record_ts"][rows][ok])
    return (np.concatenate(lags) if lags else np.zeros(0)), unsynced


def sync_lag(audit: Audit | None, n_workers: int) -> dict[str, Any]:
    """`sync_lag_p50_s`, `sync_lag_p99_s` and their detail (see the module docstring)."""
    null = {"sync_lag_p50_s": None, "sync_lag_p99_s": None}
    if audit is None or n_workers < 2 or not audit.sent:
        return {**null, "detail": {"sync_lag_basis": None}}
    done = delta_done(audit, n_workers - 1)
    bounds = _delta_bounds(audit, done)
    detail: dict[str, Any] = {"deltas_sent": len(done),
                              "deltas_not_applied_by_all": sum(at is None for at in done.values()),
                              "sync_lag_oldest": bounds["oldest"], "sync_lag_newest": bounds["newest"]}
    lags, unsynced = _event_lags(audit, done) if len(audit.events["offset"]) else (np.zeros(0), 0)
    if len(lags):
        detail.update(sync_lag_basis="events", events_lagged=len(lags), events_not_synced=unsynced)
        p50, p99 = (float(np.percentile(lags, q)) for q in (50, 99))
    else:
        detail["sync_lag_basis"] = "deltas" if bounds["deltas"] else None
        p50, p99 = bounds["oldest"]["p50_s"], bounds["oldest"]["p99_s"]
    return {"sync_lag_p50_s": p50, "sync_lag_p99_s": p99, "detail": detail}


def delta_bytes(audit: Audit | None, sync: bool = True) -> int | None:
    """Sum of the `delta_sent` bytes; None when the log has no such line though workers synced."""
    if audit is None or not audit.kinds or (sync and not audit.sent):
        return None
    return sum(int(line.get("bytes") or 0) for line in audit.sent)


# -- published lists --------------------------------------------------------------------------------
def history_index(log: Interactions) -> dict[tuple[str, str], float]:
    """(user, item) -> the first time the user took the item in `log`."""
    first: dict[tuple[str, str], float] = {}
    for user, item, ts in zip(log.user.tolist(), log.item.tolist(), log.ts.tolist(), strict=True):
        key = (user, item)
        if key not in first or ts < first[key]:
            first[key] = ts
    return first


def history_repeats(lists: Sequence[dict[str, Any]], first: dict[tuple[str, str], float]) -> dict[str, int]:
    """Listed items already in the user's history: taken at ts <= the list's event_ts (`repeats`), and
    at ts < event_ts (`repeats_before`).

    >>> first = {("u", "a"): 1.0, ("u", "b"): 5.0}
    >>> history_repeats([{"user_id": "u", "event_ts": 5.0, "items": [{"item_id": "a"}, {"item_id": "b"},
    ...                                                               {"item_id": "c"}]}], first)
    {'lists': 1, 'items': 3, 'repeats': 2, 'repeats_before': 1, 'without_event_ts': 0}
    """
    out = {"lists": 0, "items": 0, "repeats": 0, "repeats_before": 0, "without_event_ts": 0}
    for value in lists:
        user, event_ts = str(value.get("user_id")), value.get("event_ts")
        items = value.get("items") or []
        out["lists"] += 1
        out["items"] += len(items)
        if event_ts is None:
            out["without_event_ts"] += 1
            continue
        for entry in items:
            taken = first.get((user, str(entry.get("item_id"))))
            if taken is not None and taken <= event_ts:
                out["repeats"] += 1
                out["repeats_before"] += taken < event_ts
    return out


def read_lists(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every `recommendations` value up to the topic's end (undecodable ones skipped)."""
    from stream.publisher import read_topic

    out = []
    for record in read_topic(bootstrap, topic, timeout=180):
        with contextlib.suppress(ValueError, TypeError):
            value = json.loads(record.value)
            if isinstance(value, dict):
                out.append(value)
    return out


# -- one run ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class LogRun:
    """What every run of one log shares."""

    name: str
    log: Interactions
    records: list[tuple[bytes, bytes]]
    n_valid: int
    first_taken: dict[tuple[str, str], float]
    stamp: str

    @property
    def counts_digest(self) -> str:
        """`stream.sync.counts_digest` of the log's per-item event counts (what one worker holds)."""
        from collections import Counter

        from stream.sync import counts_digest

        return counts_digest(dict(Counter(self.log.item.tolist())))


def prepare(opts: Options, lr: LogRun, label: str) -> tuple[Any, Path]:
    """Settings under a fresh prefix, its topics created, and a work folder for the run."""
    from stream.app import ensure_topics
    from stream.config import Settings

    prefix = f"so{lr.stamp}.{lr.name}.{label}."
    settings = Settings(bootstrap=opts.bootstrap, topic_prefix=prefix, partitions=opts.partitions)
    ensure_topics(settings)
    return settings, opts.workdir / lr.name / label


def final_digests(states: Sequence[Path]) -> list[str | None]:
    """Each worker's digest of its integer item counts, from the `final` line its audit log gets at
    shutdown (the last one: a restarted worker writes one per life)."""
    out: list[str | None] = []
    for state in states:
        digest = None
        path = audit_path(state)
        if path.exists():
            for raw in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if line.get("kind") == "final":
                        digest = line.get("item_counts_digest")
        out.append(digest)
    return out


def exactly_once(healths: Sequence[dict[str, Any] | None], n_valid: int,
                 digests: Sequence[str | None] = (), expected: str | None = None) -> dict[str, Any]:
    """Sum of events_applied == valid events, and every worker's item counts digest equal to
    `expected` (that of one worker learning the whole log: each item's event count)."""
    applied = [None if h is None else h.get("events_applied") for h in healths]
    digests = list(digests) or [None for _ in healths]
    if expected is not None and digests and None not in digests:
        digests.append(expected)
    equal = None if any(d is None for d in digests) else len(set(map(str, digests))) == 1
    ok = None not in applied and sum(applied) == n_valid and equal is not False
    return {"exactly_once": bool(ok), "applied": applied, "counts_digest_equal": equal}


def finish(opts: Options, workers: list[Any], sync: bool) -> list[dict[str, Any] | None]:
    """The final sync wait; the workers' last `/health`."""
    time.sleep(2 * opts.sync_seconds if sync else 1.0)
    return poll(workers)


def run_group(opts: Options, lr: LogRun, n: int, sync: bool = True) -> dict[str, Any]:
    """N workers, the log produced paced, the metrics of the module docstring."""
    label = f"n{n}" + ("" if sync else "-nosync")
    settings, folder = prepare(opts, lr, label)
    topic = settings.topic("interactions")
    states = [folder / f"w{i}" for i in range(n)]
    workers = [new_worker(opts, settings.topic_prefix, s, sync) for s in states]
    say = opts.say
    say(f"[{lr.name} {label}] starting {n} worker(s) on {settings.topic_prefix}*")
    try:
        t = time.perf_counter()
        for w in workers:
            w.start()
        wait_settled(workers, topic, opts.partitions, opts.ready_timeout)
        say(f"[{lr.name} {label}] group settled in {time.perf_counter() - t:.1f}s; producing "
            f"{len(lr.records):,} events at {opts.rate:,.0f}/s")
        cpu0 = workers_cpu(workers)
        d = drive(workers, settings, lr.records, opts.rate, lr.n_valid, say)
        healths = finish(opts, workers, sync)
        cpu = workers_cpu(workers) - cpu0
    finally:
        stop_all(workers)
    audit = read_audits([audit_path(s) for s in states])
    lists = read_lists(opts.bootstrap, settings.topic("recommendations"))
    out = summarize(lr, n, d, healths, audit, lists, sync, final_digests(states) if sync else ())
    out["cpu_s_per_1000"] = cpu / lr.n_valid * 1000 if lr.n_valid else None
    say(f"[{lr.name} {label}] {_brief(out)}")
    return out


def summarize(lr: LogRun, n: int, d: Drive, healths: Sequence[dict[str, Any] | None],
              audit: Audit | None, lists: list[dict[str, Any]], sync: bool,
              digests: Sequence[str | None] = ()) -> dict[str, Any]:
    hr, evaluated = (None, None)
    if audit is not None and len(audit.events["hit"]):
        hr, evaluated = hit_rate(audit.events["hit"][last_occurrences(audit.events)])
    sent = delta_bytes(audit, sync)
    lag = sync_lag(audit, n) if sync else {"sync_lag_p50_s": None, "sync_lag_p99_s": None, "detail": {}}
    repeats = history_repeats(lists, lr.first_taken)
    once = exactly_once(healths, lr.n_valid, digests, lr.counts_digest)
    seconds = None if d.done is None else d.done - d.started
    return {
        "workers": n,
        "events_per_s": lr.n_valid / seconds if seconds else None,
        "cpu_s_per_1000": None,
        "hr@10": hr,
        "evaluated": evaluated,
        "delta_bytes_per_event": sent / lr.n_valid if sent is not None and lr.n_valid else None,
        "sync_lag_p50_s": lag["sync_lag_p50_s"],
        "sync_lag_p99_s": lag["sync_lag_p99_s"],
        "history_repeats": repeats["repeats"],
        "exactly_once": once["exactly_once"],
        "detail": {
            "sync": sync, "complete": d.done is not None, "seconds": seconds, "produce_rate": d.produce_rate,
            "valid_events": lr.n_valid, "applied": once["applied"],
            "counts_digest_equal": once["counts_digest_equal"], "lists": repeats,
            "audit": None if audit is None else {"lines": dict(audit.kinds), "bad_lines": audit.bad_lines,
                                                 "workers": audit.workers,
                                                 "late_evaluated": audit.late_evaluated},
            **lag["detail"],
        },
    }


def _brief(run: dict[str, Any]) -> str:
    def f(v: Any, spec: str = ".3f") -> str:
        return "null" if v is None else format(v, spec)
    return (f"events/s {f(run['events_per_s'], ',.0f')}, CPU s/1000 {f(run.get('cpu_s_per_1000'))}, "
            f"HR@10 {f(run['hr@10'])} over {run['evaluated']}, delta B/event "
            f"{f(run['delta_bytes_per_event'], '.1f')}, sync lag p50/p99 {f(run['sync_lag_p50_s'])}/"
            f"{f(run['sync_lag_p99_s'])} s, history repeats {run['history_repeats']}, "
            f"exactly once {run['exactly_once']}")


# -- the kill run -----------------------------------------------------------------------------------
class KillPlan:
    """Called on every poll of `drive`: kills B (index 1) at `KILL_AT` applied, restarts it on the same
    state dir once A (index 0) has applied `MOVED_EVENTS` events of B's partitions beyond B's last
    reported offsets (or `give_up` seconds after the kill)."""

    def __init__(self, n_valid: int, topic: str, restart: Callable[[], Any], states: Sequence[Path],
                 say: Say, give_up: float = 120.0) -> None:
        self.n_valid, self.topic, self.restart, self.states, self.say = n_valid, topic, restart, states, say
        self.give_up = give_up
        self.stage = "before"
        self.down: set[int] = set()
        self.b_parts: list[int] = []
        self.b_offsets: dict[int, int] = {}
        self.a_size = 0  # A's audit file size at the kill
        self.b_before = b""  # B's audit file at the kill
        self.killed_at = 0.0
        self.restart_reason = ""
        self.moved_by_a = 0

    @property
    def finished(self) -> bool:
        return self.stage == "after"

    def __call__(self, workers: list[Any], healths: list[dict[str, Any] | None], applied: int,
                 producing: bool) -> None:
        if self.stage == "before" and applied >= KILL_AT * self.n_valid and healths[1] is not None:
            self._kill(workers, healths[1], applied)
        elif self.stage == "moving" and healths[0] is not None:
            offsets = healths[0].get("offsets") or {}
            self.moved_by_a = sum(max(0, int(offsets.get(f"{self.topic}:{p}", 0)) - self.b_offsets.get(p, 0))
                                  for p in self.b_parts)
            waited = time.monotonic() - self.killed_at
            if self.moved_by_a >= MOVED_EVENTS or waited > self.give_up:
                self.restart_reason = (f"A applied {self.moved_by_a} events of B's partitions"
                                       + ("" if self.moved_by_a >= MOVED_EVENTS else
                                          f" (fewer than {MOVED_EVENTS}: gave up after {waited:.0f}s)"))
                self.say(f"  restarting B: {self.restart_reason}")
                workers[1] = self.restart()
                workers[1].start()
                self.down.discard(1)
                self.stage = "after"

    def _kill(self, workers: list[Any], b_health: dict[str, Any], applied: int) -> None:
        self.b_parts = interaction_partitions(b_health, self.topic)
        offsets = b_health.get("offsets") or {}
        self.b_offsets = {p: int(offsets.get(f"{self.topic}:{p}", 0)) for p in self.b_parts}
        a_audit = audit_path(self.states[0])
        self.a_size = a_audit.stat().st_size if a_audit.exists() else 0
        workers[1].kill()
        b_audit = audit_path(self.states[1])
        self.b_before = b_audit.read_bytes() if b_audit.exists() else b""
        self.killed_at = time.monotonic()
        self.down.add(1)
        self.stage = "moving"
        self.say(f"  SIGKILL B at {applied:,} applied; B held partitions {self.b_parts} at offsets "
                 f"{self.b_offsets}")


def kill_audit(plan: KillPlan, states: Sequence[Path]) -> Audit | None:
    """The kill run's audit lines, phase 0 before the kill and 1 after (see the module docstring)."""
    a_path, b_path = audit_path(states[0]), audit_path(states[1])
    if not a_path.exists() and not b_path.exists():
        return None
    a_data = a_path.read_bytes() if a_path.exists() else b""
    a_before, a_after = split_lines(a_data, plan.a_size)
    b_data = b_path.read_bytes() if b_path.exists() else b""
    b_before_whole, _ = split_lines(plan.b_before, len(plan.b_before))
    b_after = b_data[len(plan.b_before):] if b_data.startswith(plan.b_before) else b_data
    return parse_audit([(0, a_before), (0, b_before_whole), (1, a_after), (1, b_after)])


def moved_metrics(audit: Audit | None, b_parts: Sequence[int]) -> dict[str, Any]:
    """moved_users, moved_evaluated, moved_hr_ratio (see the module docstring)."""
    null = {"moved_users": None, "moved_evaluated": None, "moved_hr_ratio": None, "moved_hr@10": None,
            "other_hr@10": None, "other_evaluated": None}
    if audit is None or not len(audit.events["offset"]) or not b_parts:
        return null
    raw, parts = audit.events, np.asarray(b_parts, np.int64)
    before = (raw["phase"] == 0) & np.isin(raw["partition"], parts)  # what B learned (A's lines: none)
    learned_by_b = {p: int(raw["offset"][before & (raw["partition"] == p)].max(initial=-1)) for p in b_parts}
    ev = {k: v[last_occurrences(raw)] for k, v in raw.items()}
    beyond = np.asarray([o > learned_by_b.get(p, o) for p, o in
                         zip(ev["partition"].tolist(), ev["offset"].tolist(), strict=True)], bool)
    after = (ev["phase"] == 1) & beyond  # on B's partitions (learned_by_b has no other)
    moved = set(raw["user"][before].tolist()) & set(ev["user"][after].tolist())
    is_moved = np.asarray([u in moved for u in ev["user"].tolist()], bool)
    mine = np.flatnonzero(after & is_moved & (ev["hit"] >= 0))
    if not len(mine):
        return {**null, "moved_users": len(moved), "moved_evaluated": 0}
    mine = mine[np.lexsort((ev["offset"][mine], ev["partition"][mine]))]
    taken: Counter = Counter()
    first5 = []
    for i in mine.tolist():
        user = ev["user"][i]
        if taken[user] < FIRST_EVALUATED:
            taken[user] += 1
            first5.append(i)
    moved_hr, _ = hit_rate(ev["hit"][first5])
    span = ev["record_ts"][first5]
    span = span[~np.isnan(span)]
    other_hr, other_n = None, 0
    if len(span):
        lo, hi = float(span.min()), float(span.max())
        others = (ev["phase"] == 1) & ~is_moved & (ev["record_ts"] >= lo) & (ev["record_ts"] <= hi)
        other_hr, other_n = hit_rate(ev["hit"][others])
    ratio = moved_hr / other_hr if moved_hr is not None and other_hr else None
    return {"moved_users": len(moved), "moved_evaluated": len(mine), "moved_hr_ratio": ratio,
            "moved_hr@10": moved_hr, "other_hr@10": other_hr, "other_evaluated": other_n}


def run_kill(opts: Options, lr: LogRun) -> dict[str, Any]:
    """Two workers; B SIGKILLed at 50% applied and restarted later on its state dir."""
    settings, folder = prepare(opts, lr, "kill")
    topic = settings.topic("interactions")
    states = [folder / "a", folder / "b"]
    workers = [new_worker(opts, settings.topic_prefix, s, True) for s in states]
    say = opts.say
    say(f"[{lr.name} kill] starting 2 workers on {settings.topic_prefix}*")
    plan = KillPlan(lr.n_valid, topic, lambda: new_worker(opts, settings.topic_prefix, states[1], True),
                    states, say)
    try:
        for w in workers:
            w.start()
        wait_settled(workers, topic, opts.partitions, opts.ready_timeout)
        say(f"[{lr.name} kill] group settled; producing {len(lr.records):,} events at {opts.rate:,.0f}/s")
        d = drive(workers, settings, lr.records, opts.rate, lr.n_valid, say, hook=plan)
        healths = finish(opts, workers, True)
    finally:
        stop_all(workers)
    audit = kill_audit(plan, states) if plan.stage != "before" else None
    repeats = history_repeats(read_lists(opts.bootstrap, settings.topic("recommendations")), lr.first_taken)
    once = exactly_once(healths, lr.n_valid, final_digests(states), lr.counts_digest)
    moved = moved_metrics(audit, plan.b_parts)
    out = {"exactly_once": once["exactly_once"], "moved_users": moved["moved_users"],
           "moved_evaluated": moved["moved_evaluated"], "moved_hr_ratio": moved["moved_hr_ratio"],
           "history_repeats": repeats["repeats"],
           "detail": {"complete": d.done is not None, "killed": plan.stage != "before",
                      "b_partitions": plan.b_parts, "b_offsets_at_kill": plan.b_offsets,
                      "restart": plan.restart_reason, "applied": once["applied"],
                      "counts_digest_equal": once["counts_digest_equal"], "valid_events": lr.n_valid,
                      "moved_hr@10": moved["moved_hr@10"], "other_hr@10": moved["other_hr@10"],
                      "other_evaluated": moved["other_evaluated"], "lists": repeats,
                      "enough_moved_evaluated": None if moved["moved_evaluated"] is None
                      else moved["moved_evaluated"] >= 1000}}
    say(f"[{lr.name} kill] exactly once {out['exactly_once']} (applied {once['applied']}), moved users "
        f"{out['moved_users']} with {out['moved_evaluated']} evaluated events, moved HR ratio "
        f"{out['moved_hr_ratio']}, history repeats {out['history_repeats']}")
    return out


# -- per log, and the command -----------------------------------------------------------------------
def bench_log(opts: Options, name: str, data_dir: Path, max_events: int | None, workers: Sequence[int],
              no_sync: Sequence[int], kill: bool, stamp: str) -> dict[str, Any]:
    from stream.producer import encode_events

    log, source, synthetic = load_named_log(name, data_dir, max_events)
    records = encode_events(log)
    lr = LogRun(name, log, records, count_valid(records), history_index(log), stamp)
    opts.say(f"[{name}] {source}: {len(records):,} events, {lr.n_valid:,} valid"
             + (" (SYNTHETIC: the real log is missing)" if synthetic else ""))
    runs = [guarded(opts.say, f"{name} n{n}", failed_run(n), run_group, opts, lr, n) for n in workers]
    one = next((r for r in runs if r["workers"] == 1 and r["evaluated"]), None)
    for r in runs:
        r["detail"]["evaluated_vs_1"] = r["evaluated"] / one["evaluated"] if one and r["evaluated"] else None
    no_sync_runs = [guarded(opts.say, f"{name} n{n} no-sync", failed_run(n), run_group, opts, lr, n, False)
                    for n in no_sync]
    killed = guarded(opts.say, f"{name} kill", {"exactly_once": False, "moved_users": None,
                                                "moved_evaluated": None, "moved_hr_ratio": None,
                                                "history_repeats": None, "detail": {}},
                     run_kill, opts, lr) if kill else None
    return {"source": source, "synthetic": synthetic, "events": len(records), "valid_events": lr.n_valid,
            "runs": runs, "no_sync_hr@10": {str(r["workers"]): r["hr@10"] for r in no_sync_runs},
            "no_sync_runs": no_sync_runs, "kill": killed}


def failed_run(n: int) -> dict[str, Any]:
    keys = ("events_per_s", "cpu_s_per_1000", "hr@10", "evaluated", "delta_bytes_per_event",
            "sync_lag_p50_s", "sync_lag_p99_s", "history_repeats")
    return {"workers": n, **dict.fromkeys(keys), "exactly_once": False, "detail": {}}


def guarded(say: Say, what: str, fallback: dict[str, Any], fn: Callable[..., dict[str, Any]],
            *args: Any) -> dict[str, Any]:
    """`fn(*args)`; a run that fails is reported (null figures, `detail.error`) and the others go on."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        say(f"[{what}] FAILED: {type(exc).__name__}: {exc}")
        fallback["detail"]["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
        return fallback


@contextlib.contextmanager
def broker(bootstrap: str | None, workdir: Path, say: Say) -> Iterator[str]:
    """`bootstrap`, or a private broker on a free port for the duration."""
    if bootstrap is not None:
        yield bootstrap
        return
    from stream.broker import LocalKafka, free_port

    kafka = LocalKafka(port=free_port(), state_dir=workdir / "broker", heap="512m")
    say("starting a private Kafka broker...")
    kafka.up(timeout=120)
    try:
        yield kafka.bootstrap
    finally:
        kafka.down()


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in LOGS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown log(s) {unknown}: choose from {', '.join(LOGS)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=_ints, default=[1, 2, 4], help="worker counts, e.g. 1,2,4")
    p.add_argument("--logs", type=_names, default=list(LOGS), help="ml-100k,yoochoose")
    p.add_argument("--rate", type=float, default=5000.0, help="events/s produced, all partitions together")
    p.add_argument("--sync-seconds", type=float, default=2.0, help="the workers' --sync-seconds")
    p.add_argument("--no-sync", dest="no_sync", action="store_true", default=True,
                   help="also run the largest N (or --no-sync-workers) with the workers' --no-sync (default)")
    p.add_argument("--sync-only", dest="no_sync", action="store_false", help="leave the --no-sync runs out")
    p.add_argument("--no-sync-workers", type=_ints, help="worker counts of the --no-sync runs [largest N]")
    p.add_argument("--kill", dest="kill", action="store_true", default=True,
                   help="add the 2-worker SIGKILL / restart run (default)")
    p.add_argument("--no-kill", dest="kill", action="store_false", help="leave the kill run out")
    p.add_argument("--data-dir", type=Path, default=DATA_DIR,
                   help="folder of ml-100k/ and yoochoose-clicks-100k/ [../shared/data]")
    p.add_argument("--max-events", type=int, help="the first N events of each log (synthetic: its size)")
    p.add_argument("--bootstrap", help="use this broker instead of starting a private one")
    p.add_argument("--partitions", type=int, help="partitions of each run's topics [max(4, largest N)]")
    p.add_argument("--learner", default="sparse", help="the workers' --learner")
    p.add_argument("--workdir", type=Path,
                   help="keep the state dirs and worker logs here (default: a temp dir, removed)")
    p.add_argument("--json", action="store_true", help="print the JSON report as the last line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def say(*a: Any, **k: Any) -> None:
        print(*a, file=sys.stderr, flush=True, **k)

    partitions = args.partitions or max(4, max(args.workers))
    no_sync = (args.no_sync_workers or [max(args.workers)]) if args.no_sync else []
    stamp = f"{int(time.time())}{os.getpid() % 1000:03d}"
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaleout-")))
        bootstrap = stack.enter_context(broker(args.bootstrap, workdir, say))
        opts = Options(bootstrap=bootstrap, workdir=workdir, partitions=partitions, rate=args.rate,
                       sync_seconds=args.sync_seconds, learner=args.learner, say=say)
        say(f"broker {bootstrap}; {partitions} partitions; rate {args.rate:,.0f}/s")
        started = time.perf_counter()
        logs = {name: bench_log(opts, name, args.data_dir, args.max_events, args.workers, no_sync,
                                args.kill, stamp) for name in args.logs}
        say(f"done in {time.perf_counter() - started:.0f}s")
    settings = {"workers": args.workers, "rate": args.rate, "sync_seconds": args.sync_seconds,
                "partitions": partitions, "learner": args.learner}
    for entry in logs.values():
        entry["settings"] = settings
    report = {"logs": logs}
    if args.json:
        from bench.replay import _finite

        print(json.dumps(_finite(report), default=_json_default))
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
