"""A real, single-node Apache Kafka broker (KRaft mode) on loopback, for tests, the demo and benches.

The jars come from Maven Central once (`fetch`, using `stream/kafka/pom.xml`) and are cached in
`${STREAMREC_HOME:-~/.cache/streamrec}/kafka-<version>/libs`; each broker keeps its config, data, logs
and pid file in `<home>/broker-<port>/`. Needs `java` (17+) and, for the first fetch, `mvn`.

>>> parse_bootstrap("127.0.0.1:19092")
('127.0.0.1', 19092)
>>> kafka = LocalKafka(port=19092)                     # doctest: +SKIP
>>> seconds = kafka.up()                               # doctest: +SKIP
>>> create_topics(kafka.bootstrap, ["interactions"])   # doctest: +SKIP
>>> kafka.status()["running"]                          # doctest: +SKIP
True
>>> kafka.down()                                       # doctest: +SKIP

Command line: `streamrec kafka fetch|up|down|restart|status [--bootstrap HOST:PORT] [--partitions N]`.
`status` exits 0 when the broker runs and 3 when it does not (the LSB convention for `status`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
NOT_RUNNING_EXIT = 3  # `streamrec kafka status` when no broker runs, as LSB init scripts do
JAVA_HINT = "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
MVN_HINT = "install Maven (e.g. `apt-get install maven`) to fetch the Kafka jars once"


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started or stopped; the message says why and what to do."""


def streamrec_home() -> Path:
    """Root of streamrec's caches: `$STREAMREC_HOME`, else `~/.cache/streamrec`."""
    return Path(os.environ.get("STREAMREC_HOME") or Path.home() / ".cache" / "streamrec").expanduser()


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version the pom pins (its `kafka.version` property): the pom is the one source of truth."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise BrokerError(f"{pom} has no <kafka.version> property")
    return node.text.strip()


def parse_bootstrap(bootstrap: str) -> tuple[str, int]:
    """`"127.0.0.1:9092"` -> `("127.0.0.1", 9092)`, with a clear error for anything else."""
    host, sep, port = bootstrap.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerError(f"bootstrap must look like HOST:PORT (e.g. {DEFAULT_BOOTSTRAP}), got {bootstrap!r}")
    return host, int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"`{name}` was not found on PATH; {why}.")
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise fetch/up/down between processes (two test sessions, a CLI and a fixture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def wait_ready(bootstrap: str, timeout: float = 60.0, alive: Any = None) -> float:
    """Block until a kafka-python admin client gets an answer to `list_topics` from `bootstrap`.

    `alive` is an optional callable; when it returns False the wait stops early (the broker died).
    Returns the seconds waited.
    """
    from kafka.admin import KafkaAdminClient

    host, port = parse_bootstrap(bootstrap)
    start = time.monotonic()
    deadline = start + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError(f"the broker at {bootstrap} exited while starting")
        if port_open(host, port):
            left_ms = int(max(1.0, min(10.0, deadline - time.monotonic())) * 1000)
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=bootstrap, client_id="streamrec-ready",
                    bootstrap_timeout_ms=left_ms, request_timeout_ms=left_ms,
                )
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return time.monotonic() - start
            except Exception as exc:  # not answering yet: any client error means "try again"
                last_error = exc
        time.sleep(0.1)
    why = last_error or "port closed"
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s ({why})")


def create_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int = 1,
    compacted: Iterable[str] = (),
    timeout: float = 30.0,
) -> list[str]:
    """Create `names` (replication factor 1) unless they exist, and wait until each has a leader.

    Topics named in `compacted` get `cleanup.policy=compact` (state changelogs, latest-per-key
    recommendation topics). Returns the topics this call created.
    """
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError, for_code

    names = list(dict.fromkeys(names))
    compact = set(compacted)
    if unknown := compact - set(names):
        raise ValueError(f"compacted topics must also be in names: {sorted(unknown)}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    if not names:
        return []
    timeout_ms = int(timeout * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="streamrec-admin",
        bootstrap_timeout_ms=timeout_ms, request_timeout_ms=timeout_ms,
    )
    try:
        wanted = {
            name: {
                "num_partitions": partitions,
                "replication_factor": 1,
                "configs": {"cleanup.policy": "compact"} if name in compact else {},
            }
            for name in names
        }
        response = admin.create_topics(wanted, timeout_ms=timeout_ms, raise_errors=False)
        created = []
        for topic in response["topics"]:
            error = for_code(topic["error_code"])
            if error is TopicAlreadyExistsError:
                continue
            if topic["error_code"] != 0:
                why = f"{error.__name__} {topic.get('error_message') or ''}".strip()
                raise BrokerError(f"cannot create topic {topic['name']!r}: {why}")
            created.append(topic["name"])
        admin.wait_for_topics(names, timeout_ms=timeout_ms)
        return created
    finally:
        admin.close()


class LocalKafka:
    """One single-node Kafka (broker + KRaft controller) on `host:port`, run as a child JVM.

    `home` holds the jar cache (default `streamrec_home()`); `state_dir` holds this broker's config,
    data, logs and pid file (default `<home>/broker-<port>`). Stopping and starting again keeps the
    data: the same state dir, cluster id and port. `die_with_parent=True` (tests) has Linux send the
    broker SIGTERM when this Python process dies, so a killed test run leaves no JVM behind (only for
    starts from the main thread: Linux ties the signal to the thread that started the process).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        home: str | Path | None = None,
        heap: str = "512m",
        partitions: int = 1,
        state_dir: str | Path | None = None,
        die_with_parent: bool = False,
    ) -> None:
        self.host = host
        self.port = int(port)
        self.home = Path(home).expanduser() if home is not None else streamrec_home()
        self.heap = heap
        self.partitions = partitions
        self.state_dir = Path(state_dir) if state_dir is not None else self.home / f"broker-{self.port}"
        self.die_with_parent = die_with_parent
        self.version = kafka_version()
        self._proc: subprocess.Popen | None = None

    # -- paths -------------------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / f"kafka-{self.version}" / "libs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    # -- jars ----------------------------------------------------------------------------------------
    def fetch(self, quiet: bool = True) -> Path:
        """Copy the broker's jars into the cache with Maven, unless a complete copy is there already."""
        stamp = self.libs / ".complete"
        pom_hash = hashlib.sha256(POM.read_bytes()).hexdigest()
        if stamp.is_file() and stamp.read_text().strip() == pom_hash:
            return self.libs
        with file_lock(self.libs.parent / ".fetch.lock"):
            if stamp.is_file() and stamp.read_text().strip() == pom_hash:  # another process just did it
                return self.libs
            mvn = require_tool("mvn", MVN_HINT)
            staging = self.libs.parent / f"libs.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            if not quiet:
                print(f"fetching Apache Kafka {self.version} jars into {self.libs} ...", file=sys.stderr)
            done = subprocess.run(
                [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}"],
                capture_output=True, text=True,
            )
            jars = list(staging.glob("kafka_2.13-*.jar")) if staging.is_dir() else []
            if done.returncode != 0 or not jars:
                shutil.rmtree(staging, ignore_errors=True)
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise BrokerError(f"Maven could not fetch the Kafka {self.version} jars:\n{tail}")
            shutil.rmtree(self.libs, ignore_errors=True)
            staging.rename(self.libs)
            stamp.write_text(pom_hash + "\n")
        return self.libs

    # -- process -------------------------------------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _owns(self, pid: int) -> bool:
        """Whether `pid` is a live `kafka.Kafka` JVM started on this state dir."""
        try:
            args = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return False
        return "kafka.Kafka" in args and str(self.config_file) in args and process_alive(pid)

    def is_running(self) -> bool:
        pid = self._pid()
        return pid is not None and self._owns(pid)

    def status(self) -> dict[str, Any]:
        pid = self._pid()
        running = pid is not None and self._owns(pid)
        return {
            "running": running,
            "pid": pid if running else None,
            "bootstrap": self.bootstrap,
            "version": self.version,
            "state_dir": str(self.state_dir),
            "log": str(self.log_dir / "server.log"),
        }

    def _controller_port(self) -> int:
        """The KRaft controller's loopback port, kept in the state dir so a restart reuses it."""
        saved = self.state_dir / "controller.port"
        try:
            port = int(saved.read_text())
        except (OSError, ValueError):
            port = 0
        if not port or port == self.port or port_open(self.host, port):
            port = free_port(self.host)
            while port == self.port:
                port = free_port(self.host)
            saved.write_text(f"{port}\n")
        return port

    def _write_config(self, controller_port: int) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        host, port = self.host, self.port
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{host}:{controller_port}",
            "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{host}:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.data_dir,
            "metadata.log.dir": self.data_dir,
            "num.partitions": self.partitions,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": 1,
            # 50 partitions each by default: pointless on one node and slow to create on first use.
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "group.initial.rebalance.delay.ms": 0,
            # After a crash the restarted broker waits for its old registration to expire (9 s by
            # default) before it is unfenced; a fast heartbeat keeps that wait short.
            "broker.heartbeat.interval.ms": 1000,
            "broker.session.timeout.ms": 4000,
            # A laptop-sized broker: few threads, shared cores.
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.hours": 168,
            "log.segment.bytes": 256 * 1024 * 1024,
        }
        self.config_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        log4j = {
            "log4j.rootLogger": "INFO, file",
            "log4j.appender.file": "org.apache.log4j.RollingFileAppender",
            "log4j.appender.file.File": self.log_dir / "server.log",
            "log4j.appender.file.MaxFileSize": "20MB",
            "log4j.appender.file.MaxBackupIndex": 2,
            "log4j.appender.file.layout": "org.apache.log4j.PatternLayout",
            "log4j.appender.file.layout.ConversionPattern": "[%d] %p %m (%c)%n",
            "log4j.logger.kafka.request.logger": "WARN",
            "log4j.logger.state.change.logger": "WARN",
            "log4j.logger.org.apache.kafka.clients": "WARN",
        }
        (self.state_dir / "log4j.properties").write_text("".join(f"{k}={v}\n" for k, v in log4j.items()))

    def _class_archive(self) -> Path:
        """Where the broker's class-data-sharing archive lives: per Kafka version and per JVM binary."""
        java = Path(require_tool("java", JAVA_HINT)).resolve()
        stat = java.stat()
        key = hashlib.sha256(f"{java}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return self.libs.parent / f"classes-{key}.jsa"

    def _class_sharing(self, dump: bool) -> list[str]:
        """JVM flags that map the classes a previous broker loaded instead of loading them again.

        Starting a JVM with Kafka's ~4000 classes is most of a warm `up`; an archive of them (written
        by the first broker that stops cleanly, `-XX:ArchiveClassesAtExit`) makes later starts about
        twice as fast. A stale or unreadable archive is ignored by the JVM (`-Xshare:auto`).
        """
        archive = self._class_archive()
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        if not dump:
            return []
        for stale in archive.parent.glob("classes-*.partial"):  # written by a broker nobody stopped
            if time.time() - stale.stat().st_mtime > 86400:
                stale.unlink(missing_ok=True)
        partial = archive.with_name(f"{archive.name}.{uuid.uuid4().hex[:8]}.partial")
        (self.state_dir / "classes.partial").write_text(f"{partial}\n")  # `down` publishes it
        return [f"-XX:ArchiveClassesAtExit={partial}"]

    def _publish_class_archive(self) -> None:
        """After a clean stop, move the archive the broker wrote at exit to where starts look for it."""
        note = self.state_dir / "classes.partial"
        try:
            partial = Path(note.read_text().strip())
        except OSError:
            return
        note.unlink(missing_ok=True)
        target = partial.with_name(partial.name.split(".")[0] + ".jsa")
        if partial.is_file() and partial.stat().st_size > 0 and not target.exists():
            partial.rename(target)
        partial.unlink(missing_ok=True)

    def _java(self, main: str, *args: str, dump_classes: bool = False) -> list[str]:
        java = require_tool("java", JAVA_HINT)
        return [
            java, f"-Xms{min_heap(self.heap)}", f"-Xmx{self.heap}",
            # Serial GC: a small heap on few shared cores; no JIT caps, they cost throughput.
            "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            "-XX:+IgnoreUnrecognizedVMOptions", *self._class_sharing(dump_classes),
            f"-Dlog4j.configuration=file:{self.state_dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp", str(self.libs / "*"), main, *args,
        ]

    def _format(self) -> None:
        """Format KRaft storage once, with a fresh cluster id kept in the data dir (meta.properties)."""
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = new_cluster_id()
        done = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_file)),
            capture_output=True, text=True, cwd=self.state_dir,
        )
        if done.returncode != 0:
            output = done.stdout + done.stderr
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed:\n{output}")
        (self.state_dir / "cluster.id").write_text(cluster_id + "\n")

    def up(self, timeout: float = 60.0) -> float:
        """Start the broker unless it runs; block until it answers. Returns the seconds this took."""
        start = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.state_dir / ".lock"):
            if not self.is_running():
                self._start()
            pid = self._pid()
        wait_ready(self.bootstrap, max(1.0, timeout - (time.monotonic() - start)),
                   alive=lambda: pid is not None and process_alive(pid))
        return time.monotonic() - start

    def _start(self) -> None:
        require_tool("java", JAVA_HINT)
        self.fetch()
        if not wait_port_closed(self.host, self.port, timeout=10.0):
            raise BrokerError(
                f"{self.bootstrap} is already taken by a process streamrec did not start; stop it or pick "
                f"another port with --bootstrap {self.host}:PORT"
            )
        self.pid_file.unlink(missing_ok=True)
        self._write_config(self._controller_port())
        self._format()
        out = open(self.log_dir / "stdout.log", "ab")  # JVM crashes and GC warnings land here
        try:
            # Own session: Ctrl-C in the shell that ran `streamrec kafka up` must not stop the broker.
            command = self._java("kafka.Kafka", str(self.config_file), dump_classes=True)
            # PDEATHSIG follows the *thread* that forks: only tie the broker to the main thread's life.
            tie = self.die_with_parent and threading.current_thread() is threading.main_thread()
            setpriv = shutil.which("setpriv") if tie else None
            if setpriv:  # util-linux sets PR_SET_PDEATHSIG, then execs java: same pid, no preexec_fn
                command = [setpriv, "--pdeathsig", "TERM", *command]
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=True,
            )
        finally:
            out.close()
        self.pid_file.write_text(f"{self._proc.pid}\n")
        # The command line reads empty while setpriv/the java launcher exec; wait it out under the
        # lock, so a concurrent `up` sees this broker instead of starting a second one.
        deadline = time.monotonic() + 10.0
        while not self._owns(self._proc.pid) and self._proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def down(self, timeout: float = 30.0) -> bool:
        """Stop the broker this state dir started (SIGTERM, then SIGKILL after `timeout` s).

        Returns whether a broker was running. Processes it did not start are never signalled.
        """
        with file_lock(self.state_dir / ".lock"):
            pid = self._pid()
            was_running = pid is not None and self._owns(pid)
            if was_running:
                if timeout > 0:
                    self._signal_and_wait(pid, signal.SIGTERM, timeout)
                if not process_alive(pid):  # a clean exit: the class archive is complete
                    self._publish_class_archive()
                else:
                    self._signal_and_wait(pid, signal.SIGKILL, 10.0)
                if process_alive(pid):
                    raise BrokerError(f"broker pid {pid} survived SIGKILL")
            self.pid_file.unlink(missing_ok=True)
            self._proc = None
        return was_running

    def kill(self) -> bool:
        """Crash the broker (SIGKILL, no clean shutdown), for fault tests; data stays for `up`."""
        return self.down(timeout=0.0)

    def restart(self, timeout: float = 60.0) -> float:
        """Stop, then start on the same port and data dir. Returns the seconds to ready."""
        self.down()
        return self.up(timeout)

    def _signal_and_wait(self, pid: int, sig: signal.Signals, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()  # reap our own child, else it lingers as a zombie
            # Not `_owns`: a dying JVM's main thread turns zombie (empty cmdline) while its other
            # threads still hold the port and the data dir lock.
            if not process_alive(pid) or time.monotonic() >= deadline:
                return
            time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs (exited-but-unreaped and exiting threads do not count)."""
    try:
        tasks = list((Path("/proc") / str(pid) / "task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X", "x"):
            return True
    return False


def wait_port_closed(host: str, port: int, timeout: float) -> bool:
    """Give a broker that is still going away a moment to release its port."""
    deadline = time.monotonic() + timeout
    while port_open(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def min_heap(heap: str) -> str:
    """Initial heap: a quarter of the maximum, at least 64m, so an idle broker stays small."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024}
    unit = heap[-1:].lower()
    if unit not in units or not heap[:-1].isdigit():
        raise BrokerError(f"heap must look like 512m or 1g, got {heap!r}")
    return f"{max(64, int(int(heap[:-1]) * units[unit] / 4))}m"


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID in URL-safe base64 without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# -- command line ------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch", "up", "down", "restart", "status"],
                        help="fetch the jars | start | stop | stop and start | report the local broker")
    parser.add_argument("--bootstrap", default=os.environ.get("STREAMREC_BOOTSTRAP", DEFAULT_BOOTSTRAP),
                        help="HOST:PORT the broker listens on (default: $STREAMREC_BOOTSTRAP or %(default)s)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of auto-created topics")
    parser.add_argument("--heap", default="512m", help="JVM maximum heap (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker")


def run(args: argparse.Namespace) -> int:
    try:
        host, port = parse_bootstrap(args.bootstrap)
        if args.partitions < 1:
            raise BrokerError(f"--partitions must be >= 1, got {args.partitions}")
        kafka = LocalKafka(host=host, port=port, heap=args.heap, partitions=args.partitions)
        if args.action == "fetch":
            kafka.fetch(quiet=False)  # silent when the jars are cached already
        elif args.action in ("up", "restart"):
            was_running = kafka.is_running()
            seconds = kafka.restart(args.timeout) if args.action == "restart" else kafka.up(args.timeout)
            verb = "already running" if was_running and args.action == "up" else f"ready in {seconds:.1f}s"
            print(f"Kafka {kafka.version} {verb} at {kafka.bootstrap} (pid {kafka.status()['pid']}, "
                  f"logs {kafka.log_dir})")
        elif args.action == "down":
            stopped = kafka.down()
            print(f"Kafka at {kafka.bootstrap} {'stopped' if stopped else 'was not running'}")
        else:
            st = kafka.status()
            if not st["running"]:
                print(f"not running ({st['bootstrap']}, state {st['state_dir']})")
                return NOT_RUNNING_EXIT
            print(f"running pid {st['pid']} bootstrap {st['bootstrap']} (Kafka {st['version']}, "
                  f"state {st['state_dir']})")
        return 0
    except BrokerError as exc:
        print(f"streamrec kafka: {exc}", file=sys.stderr)
        return 1
