"""End-to-end benchmark of the live loop: a real broker, one `streamrec worker`, a log produced into Kafka.

(a) throughput: the whole log is in `interactions` before the worker starts; sustained events/s is
    measured from the worker's first applied event to its last (`/health` polled every 20 ms).
(b) latency: the log is produced at a fixed rate (default 2,000 events/s) into a running worker;
    latency = `published_ts - trigger_ts` of every list on `recommendations` (p50/p99), plus where
    the time goes (the worker's `/health` "timings": waiting in Kafka + fetch, apply, send).
(c) flood: the log interleaved with as many malformed payloads (12 kinds); good-event throughput
    relative to (a), and every malformed one must be in the dead-letter topic.

    python -m bench.e2e [--data PATH --format movielens] [--json] [--bootstrap HOST:PORT]
    python -m bench.e2e --data s.csv --format csv --skip 9000000 --init-state STATE \
        --learner learners.sparse:SparseRecommender --json     # a warm million-item worker

Without `--bootstrap` a private broker is started on a free port and stopped at the end. Without
`--data`, ML-100K from ../shared/data when present, else a synthetic log.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import Interactions
from learners.datasets import FORMATS, add_log_arguments, log_options

ML100K = Path(__file__).resolve().parents[1] / "../shared/data/ml-100k/u.data"


def flood_payloads(n: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """`n` malformed `interactions` payloads cycling through 12 kinds, with the reason each must get."""
    rng = np.random.default_rng(seed)
    kinds: list[tuple[str, Any]] = [
        ("not_utf8", lambda i: b'{"user_id": "u\xff' + str(i).encode() + b'", "item_id": "x"}'),
        ("not_json", lambda i: b'{"user_id": "u' + str(i).encode() + b'", "item_id": '),
        ("not_object", lambda i: json.dumps([i, "x"]).encode()),
        ("missing_field", lambda i: json.dumps({"user_id": f"u{i}"}).encode()),
        ("wrong_type", lambda i: json.dumps({"user_id": f"u{i}", "item_id": "x", "value": "high"}).encode()),
        ("wrong_type", lambda i: json.dumps({"user_id": True, "item_id": "x"}).encode()),
        ("non_finite", lambda i: b'{"user_id": "u%d", "item_id": "x", "value": Infinity}' % i),
        ("out_of_range", lambda i: json.dumps({"user_id": f"u{i}", "item_id": "x", "ts": 1e13}).encode()),
        ("oversize", lambda i: json.dumps({"user_id": "u" * 300, "item_id": str(i)}).encode()),
        ("empty_id", lambda i: json.dumps({"user_id": f"u{i}", "item_id": " "}).encode()),
        ("unknown_type", lambda i: json.dumps({"user_id": f"u{i}", "item_id": "x", "type": "zap"}).encode()),
        ("not_json", lambda i: bytes(rng.integers(0, 128, 24, dtype=np.uint8)) + b"\x00"),
    ]
    return [(kinds[i % len(kinds)][1](i), kinds[i % len(kinds)][0]) for i in range(n)]


def interleave(good: list[tuple[bytes, bytes]], bad: list[tuple[bytes, str]], seed: int = 0,
               ) -> list[tuple[bytes, bytes]]:
    """Good (key, value) records in their order with the bad ones at random places (key b"flood")."""
    rng = np.random.default_rng(seed)
    is_bad = np.zeros(len(good) + len(bad), dtype=bool)
    is_bad[rng.choice(len(is_bad), size=len(bad), replace=False)] = True
    good_it, bad_it = iter(good), iter(bad)
    return [(b"flood", next(bad_it)[0]) if flag else next(good_it) for flag in is_bad.tolist()]


def load_log(path: str | None, fmt: str | None, limit: int | None, skip: int = 0,
             options: dict[str, Any] | None = None) -> tuple[Interactions, str]:
    from learners.datasets import read_log

    if path is None and ML100K.exists():
        path, fmt = str(ML100K), "movielens"
    if path is None:
        from learners.synthetic import generate

        log, name = generate(n_events=100_000, seed=0).log, "synthetic-100k"
    else:
        log, name = read_log(path, fmt, **(options or {})), Path(path).name
    log = log[skip:]  # the first `skip` events are in the worker's --init-state
    return (log[:limit] if limit else log), name


def produce(settings: Any, records: list[tuple[bytes, bytes]], rate: float | None = None) -> float:
    from stream.producer import make_producer, send_records

    producer = make_producer(settings)
    try:
        seconds = send_records(producer, settings.topic("interactions"), records, rate=rate)
    finally:
        producer.close()
    return len(records) / seconds


def drain_rate(worker: Any, n: int, timeout: float = 600.0, stall: float = 30.0, base: int = 0
               ) -> dict[str, float]:
    """Poll `/health` until `n` events are applied: rate from the first applied event to the last.
    Gives up when nothing moves for `stall` seconds (e.g. a learner error dead-letters events)."""
    deadline = time.monotonic() + timeout
    first_t = first_n = None
    progress, moved = -1, time.monotonic()
    slow_health = 0
    while time.monotonic() < deadline:
        try:
            health = worker.health()
        except OSError:  # /health did not answer within its timeout (the worker's loop was busy): retry
            slow_health += 1
            continue
        applied, now = health["events_applied"] - base, time.perf_counter()  # base: a restored state's
        if applied + health["dlq_total"] != progress:
            progress, moved = applied + health["dlq_total"], time.monotonic()
        elif time.monotonic() - moved > stall:
            raise RuntimeError(f"worker stalled at {applied} of {n} applied; dead letters {health['dlq']}")
        if first_t is None and applied > 0:
            first_t, first_n = now, applied
        if applied >= n:
            seconds = now - first_t
            return {"events_per_s": (applied - first_n) / seconds if seconds > 0 else float("inf"),
                    "seconds": seconds, "applied": applied, "dlq": health["dlq_total"],
                    "timings": health.get("timings", {}), "slow_health": slow_health,
                    "checkpoint": health.get("checkpoint", {})}
        time.sleep(0.02)
    raise TimeoutError(f"worker applied {worker.health()['events_applied']} of {n} in {timeout}s")


def run_worker(bootstrap: str, prefix: str, state: Path, args: list[str]) -> Any:
    from stream.worker import WorkerProcess

    return WorkerProcess(bootstrap, prefix, state / prefix.strip("."), args=args)


def bench(bootstrap: str, log: Interactions, rate: float, workdir: Path, worker_args: list[str],
          say: Any = print, parts: str = "abc", clean_rate: float | None = None) -> dict[str, Any]:
    from stream.producer import encode_events

    records = encode_events(log)
    run_id = f"e2e{int(time.time())}"
    out: dict[str, Any] = {"events": len(records)}
    if "a" in parts:
        out.update(_throughput(bootstrap, records, run_id, workdir, worker_args, say))
    if "b" in parts:
        out.update(_latency(bootstrap, records, rate, run_id, workdir, worker_args, say))
    if "c" in parts:
        out.update(_flood(bootstrap, records, run_id, workdir, worker_args, say,
                          out.get("events_per_s", clean_rate)))
    return out


def _throughput(bootstrap: str, records: list, run_id: str, workdir: Path, worker_args: list[str],
                say: Any) -> dict[str, Any]:
    from stream.config import Settings

    n, out = len(records), {}
    clean = Settings(bootstrap=bootstrap, topic_prefix=f"{run_id}.clean.")
    out["produce_events_per_s"] = produce(clean, records)
    say(f"(a) produced {n} events at {out['produce_events_per_s']:,.0f}/s; draining...")
    started = time.perf_counter()
    with run_worker(bootstrap, clean.topic_prefix, workdir, worker_args) as worker:
        ready = worker.wait_ready(timeout=300)
        out["ready_s"] = time.perf_counter() - started  # process start, state restored, partitions held
        a = drain_rate(worker, n, base=ready["events_restored"])
    out["events_per_s"] = a["events_per_s"]
    out["clean"] = a
    say(f"(a) {a['events_per_s']:,.0f} events/s through the worker ({a['seconds']:.2f}s); "
        f"timings {a['timings']}")
    return out


def _latency(bootstrap: str, records: list, rate: float, run_id: str, workdir: Path,
             worker_args: list[str], say: Any) -> dict[str, Any]:
    from stream.config import Settings
    from stream.publisher import read_topic

    n, out = len(records), {}
    paced = Settings(bootstrap=bootstrap, topic_prefix=f"{run_id}.paced.")
    paced_records = records[: int(rate * 20)] if n > rate * 20 else records
    with run_worker(bootstrap, paced.topic_prefix, workdir, worker_args) as worker:
        from stream.app import ensure_topics

        ensure_topics(paced)
        ready = worker.wait_ready(timeout=300)
        achieved = produce(paced, paced_records, rate=rate)
        b = drain_rate(worker, len(paced_records), timeout=120, base=ready["events_restored"])
        n_users = len({key for key, _ in paced_records})
        recs = read_topic(bootstrap, paced.topic("recommendations"), timeout=60,
                          until=lambda rs: len({r.key for r in rs}) >= n_users)
    values = [json.loads(r.value) for r in recs]
    lat = np.asarray([(v["published_ts"] - v["trigger_ts"]) * 1e3 for v in values])
    out.update(p50_ms=float(np.percentile(lat, 50)), p99_ms=float(np.percentile(lat, 99)),
               max_ms=float(lat.max()), paced_rate=achieved, lists=len(lat), paced_timings=b["timings"])
    say(f"(b) at {achieved:,.0f} events/s: {len(lat)} lists, latency p50 {out['p50_ms']:.1f} ms, "
        f"p99 {out['p99_ms']:.1f} ms, max {out['max_ms']:.1f} ms; timings {b['timings']}")
    return out


def _flood(bootstrap: str, records: list, run_id: str, workdir: Path, worker_args: list[str],
           say: Any, clean_rate: float | None) -> dict[str, Any]:
    from stream.config import Settings

    n, out = len(records), {}
    flood = Settings(bootstrap=bootstrap, topic_prefix=f"{run_id}.flood.")
    bad = flood_payloads(n)
    produce(flood, interleave(records, bad))
    with run_worker(bootstrap, flood.topic_prefix, workdir, worker_args) as worker:
        ready = worker.wait_ready(timeout=300)
        c = drain_rate(worker, n, base=ready["events_restored"])
        dlq = worker.wait_applied(ready["events_restored"] + n)["dlq_total"]
        deadline = time.monotonic() + 60
        while dlq < len(bad) and time.monotonic() < deadline:
            time.sleep(0.1)
            dlq = worker.health()["dlq_total"]
    ratio = c["events_per_s"] / clean_rate if clean_rate else None
    out.update(flood_events_per_s=c["events_per_s"], flood_ratio=ratio, flood_dead_letters=dlq,
               flood_bad=len(bad), flood_timings=c["timings"])
    say(f"(c) flood: {c['events_per_s']:,.0f} good events/s"
        + (f" = {ratio:.0%} of clean" if ratio else "") + f"; {dlq}/{len(bad)} malformed in the DLQ; "
        f"timings {c['timings']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="log to produce (default: ML-100K if present, else synthetic)")
    parser.add_argument("--format", choices=FORMATS)
    add_log_arguments(parser)
    parser.add_argument("--limit", type=int, help="first N events only (after --skip)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the log's first N events (those a --init-state already holds)")
    parser.add_argument("--init-state", help="start each worker from this saved state (replay --save-state)")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s of the latency run")
    parser.add_argument("--bootstrap", help="use this broker instead of starting a private one")
    parser.add_argument("--learner", default="sparse", help="worker learner (sparse|online|popularity)")
    parser.add_argument("--parts", default="abc", help="which runs: a (throughput), b (latency), c (flood)")
    parser.add_argument("--clean-rate", type=float,
                        help="events/s of (a) when --parts skips it (for c's ratio)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    say = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    log, name = load_log(args.data, args.format, args.limit, args.skip, log_options(args))
    worker_args = ["--learner", args.learner, "--log-level", "warning"]
    if args.init_state:
        worker_args += ["--init-state", args.init_state]
    with tempfile.TemporaryDirectory(prefix="streamrec-e2e-") as tmp:
        workdir = Path(tmp)
        kafka = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            from stream.broker import LocalKafka, free_port

            kafka = LocalKafka(port=free_port(), state_dir=workdir / "broker", heap="512m")
            kafka.up(timeout=120)
            bootstrap = kafka.bootstrap
        try:
            say(f"broker {bootstrap}; log {name}: {len(log)} events; learner {args.learner}")
            out = bench(bootstrap, log, args.rate, workdir, worker_args, say=say, parts=args.parts,
                        clean_rate=args.clean_rate)
        finally:
            if kafka is not None:
                kafka.down()
    out.update(data=name, learner=args.learner, rate=args.rate, skip=args.skip, init_state=args.init_state)
    if args.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
