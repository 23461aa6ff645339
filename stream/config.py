"""Settings of the live loop: command-line flags first, then `STREAMREC_*` environment variables,
then defaults.

>>> s = Settings.from_env({"STREAMREC_TOPIC_PREFIX": "t1.", "STREAMREC_K": "5"})
>>> s.topic("interactions"), s.k, s.bootstrap
('t1.interactions', 5, '127.0.0.1:9092')
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

TOPICS = ("interactions", "items", "recommendations", "interactions.dlq", "item-deltas", "user-state",
          "item-state")


@dataclass(frozen=True)
class Settings:
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    partitions: int = 4
    app_id: str = "streamrec"
    k: int = 10
    batch_size: int = 2000
    batch_timeout: float = 0.05  # seconds a micro-batch waits to fill up
    debounce: float = 0.0  # extra seconds a user's list waits for more events before publishing
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    interactions_topic: str = ""  # read this existing topic instead of <prefix>interactions
    columns: str = ""  # the interactions' JSON field names, as replay's --columns
    ts_unit: str = "s"
    types: str = ""  # raw type values mapped to ours, as replay's --types
    replication_factor: int = 1  # of the topics the worker creates
    retention_ms: int = 0  # of a created interactions topic (0: the broker's default)
    dlq_retention_ms: int = 7 * 24 * 3600 * 1000
    state_dir: str = "streamrec-state"
    init_state: str = ""
    checkpoint_events: int = 50_000  # checkpoint after this many applied events...
    checkpoint_seconds: float = 30.0  # ...or this many seconds, whichever comes first
    checkpoint_mode: str = "auto"  # fork (a child writes; stream.forked) | copy | auto: fork where safe
    sync_seconds: float = 2.0  # item-side deltas to the group every this many seconds (0: no sharing)
    sync_events: int = 500  # ...or as soon as this many events were learned since the last ones
    snapshot_seconds: float = 600.0  # item-side state to the item-state topic, after a checkpoint (0: never)
    deltas_retention_ms: int = 24 * 3600 * 1000  # of the item-deltas topic
    audit_log: str = ""  # JSON lines of what the worker learned, sent and applied (benches)
    learner: str = "sparse"  # sparse | online | popularity | module:Class
    torch_threads: int = 1  # intra-op threads: more only fight the event loop and each other on small CPUs
    log_level: str = "warning"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = ""  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""

    def topic(self, name: str) -> str:
        """Full topic name of one of `TOPICS` under the prefix (`interactions_topic` when set)."""
        if name == "interactions" and self.interactions_topic:
            return self.interactions_topic
        return f"{self.topic_prefix}{name}"

    def field_map(self) -> Any:
        """The interactions' field names (`stream.schema.FieldMap`); SystemExit with the reason when
        `columns`, `ts_unit` or `types` do not parse."""
        from stream.schema import FieldMap

        try:
            return FieldMap.from_options(self.columns, self.ts_unit, self.types)
        except ValueError as exc:
            raise SystemExit(f"streamrec: {exc}") from None

    @property
    def group_id(self) -> str:
        return f"{self.topic_prefix}{self.app_id}"

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by `STREAMREC_<FIELD>` variables, overridden by non-None `overrides`."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"STREAMREC_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _coerce(f.name, type(f.default), raw)
            if overrides.get(f.name) is not None:
                values[f.name] = overrides[f.name]
        return cls(**values)

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
        return cls.from_env(env, **{f.name: getattr(args, f.name, None) for f in fields(cls)})

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """Connection settings for kafka-python clients (producer, consumer, admin)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap.split(",")}
        if self.security_protocol != "PLAINTEXT":
            kw["security_protocol"] = self.security_protocol
        if self.sasl_mechanism:
            kw.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password)
        if self.ssl_cafile:
            kw["ssl_cafile"] = self.ssl_cafile
        return kw

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Connection settings for aiokafka clients (the worker's consumer)."""
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.security_protocol != "PLAINTEXT":
            import ssl

            kw["security_protocol"] = self.security_protocol
            if "SSL" in self.security_protocol:
                kw["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile or None)
        if self.sasl_mechanism or "SASL" in self.security_protocol:
            kw.update(sasl_mechanism=self.sasl_mechanism or "PLAIN", sasl_plain_username=self.sasl_username,
                      sasl_plain_password=self.sasl_password)
        return kw

    def faust_credentials(self) -> Any:
        """`broker_credentials` for faust.App, or None for PLAINTEXT."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import ssl

        import faust

        ctx = None
        if "SSL" in self.security_protocol:
            ctx = ssl.create_default_context(cafile=self.ssl_cafile or None)
        if "SASL" in self.security_protocol:
            mechanism = self.sasl_mechanism or "PLAIN"
            return faust.SASLCredentials(username=self.sasl_username, password=self.sasl_password,
                                         ssl_context=ctx, mechanism=mechanism)
        return faust.SSLCredentials(ctx)


def _coerce(name: str, kind: type, raw: str) -> Any:
    try:
        return kind(raw)
    except ValueError:
        raise SystemExit(f"STREAMREC_{name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that talks to the broker."""
    g = parser.add_argument_group("Kafka connection (flags override STREAMREC_* environment variables)")
    g.add_argument("--bootstrap",
                   help="bootstrap servers host:port[,...] [STREAMREC_BOOTSTRAP, 127.0.0.1:9092]")
    g.add_argument("--topic-prefix", help="prefix of every topic name [STREAMREC_TOPIC_PREFIX, '']")
    g.add_argument("--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
                   help="[STREAMREC_SECURITY_PROTOCOL, PLAINTEXT]")
    g.add_argument("--sasl-mechanism",
                   help="PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 [STREAMREC_SASL_MECHANISM]")
    g.add_argument("--sasl-username", help="[STREAMREC_SASL_USERNAME]")
    g.add_argument("--sasl-password", help="prefer the environment variable [STREAMREC_SASL_PASSWORD]")
    g.add_argument("--ssl-cafile", help="CA bundle for SSL [STREAMREC_SSL_CAFILE]")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `streamrec worker`."""
    add_connection_arguments(parser)
    g = parser.add_argument_group("worker (flags override STREAMREC_* environment variables)")
    g.add_argument("--k", type=int, help="recommendations per user [STREAMREC_K, 10]")
    g.add_argument("--batch-size", type=int, help="max events per micro-batch [STREAMREC_BATCH_SIZE, 2000]")
    g.add_argument("--batch-timeout", type=float,
                   help="seconds a micro-batch waits to fill [STREAMREC_BATCH_TIMEOUT, 0.05]")
    g.add_argument("--debounce", type=float,
                   help="extra seconds to coalesce a user's events before publishing [STREAMREC_DEBOUNCE, 0]")
    g.add_argument("--partitions", type=int,
                   help="partitions of topics created at start [STREAMREC_PARTITIONS, 4]")
    g.add_argument("--app-id",
                   help="Faust app id; consumer group = prefix + app id [STREAMREC_APP_ID, streamrec]")
    g.add_argument("--learner",
                   help="sparse | online | popularity | module:Class [STREAMREC_LEARNER, sparse]")
    g.add_argument("--torch-threads", type=int, help="torch intra-op threads [STREAMREC_TORCH_THREADS, 1]")
    g.add_argument("--web-host",
                   help="bind address of /metrics, /health, ... [STREAMREC_WEB_HOST, 127.0.0.1]")
    g.add_argument("--web-port", type=int, help="[STREAMREC_WEB_PORT, 6066]")
    g.add_argument("--state-dir", help="checkpoints and Faust data [STREAMREC_STATE_DIR, ./streamrec-state]")
    g.add_argument("--init-state",
                   help="start warm from a replay's --save-state directory [STREAMREC_INIT_STATE]")
    g.add_argument("--checkpoint-events", type=int,
                   help="checkpoint every N applied events [STREAMREC_CHECKPOINT_EVENTS, 50000]")
    g.add_argument("--checkpoint-seconds", type=float,
                   help="...or every T seconds [STREAMREC_CHECKPOINT_SECONDS, 30]")
    g.add_argument("--checkpoint-mode", choices=["auto", "fork", "copy"],
                   help="fork: a forked child writes the state while the learner goes on (POSIX, CUDA "
                        "not initialised); copy: the learner copies it first; auto: fork where safe "
                        "[STREAMREC_CHECKPOINT_MODE, auto]")
    g.add_argument("--sync-seconds", type=float,
                   help="share item-side state with the other workers of the group (deltas on the "
                        "item-deltas topic) every S seconds; 0: no sharing [STREAMREC_SYNC_SECONDS, 2]")
    g.add_argument("--sync-events", type=int,
                   help="...or as soon as N events were learned since the last deltas (quality depends on "
                        "how many events the others miss) [STREAMREC_SYNC_EVENTS, 500]")
    g.add_argument("--snapshot-seconds", type=float,
                   help="write the item side of a checkpoint to the item-state topic at most every S "
                        "seconds, for workers that join later; 0: never [STREAMREC_SNAPSHOT_SECONDS, 600]")
    g.add_argument("--audit-log", metavar="PATH",
                   help="append JSON lines of learned events (hits), deltas sent and applied "
                        "[STREAMREC_AUDIT_LOG]")
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="[STREAMREC_LOG_LEVEL, warning]")
    t = parser.add_argument_group("topics: an existing interactions topic, and those the worker creates")
    t.add_argument("--interactions-topic",
                   help="read this topic instead of <prefix>interactions [STREAMREC_INTERACTIONS_TOPIC]")
    t.add_argument("--columns", metavar="ROLE=FIELD,...",
                   help="the interactions' JSON field names, as replay's --columns, e.g. user=visitorid,"
                        "item=itemid,ts=timestamp,type=event [STREAMREC_COLUMNS]")
    t.add_argument("--ts-unit", choices=["s", "ms"], help="unit of their ts field [STREAMREC_TS_UNIT, s]")
    t.add_argument("--types", metavar="RAW=TYPE,...",
                   help="map raw type values to view|click|cart|purchase|rating, e.g. "
                        "addtocart=cart,transaction=purchase [STREAMREC_TYPES]")
    t.add_argument("--replication-factor", type=int,
                   help="of the topics created at start [STREAMREC_REPLICATION_FACTOR, 1]")
    t.add_argument("--retention-ms", type=int,
                   help="retention of a created interactions topic, 0: the broker's default "
                        "[STREAMREC_RETENTION_MS, 0]")
    t.add_argument("--deltas-retention-ms", type=int,
                   help="retention of the item-deltas topic [STREAMREC_DELTAS_RETENTION_MS, 86400000]")
    t.add_argument("--dlq-retention-ms", type=int,
                   help="retention of the dead-letter topic [STREAMREC_DLQ_RETENTION_MS, 604800000]")
