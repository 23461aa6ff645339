"""Read-only HTTP endpoints of the live service, on plain aiohttp or on a Faust app.

`register_routes(target, service)` adds:

- `GET /metrics`: Prometheus text format.
- `GET /health`: JSON with at least `status`, `events_applied`, `dlq`, `model_version`, `checkpoint`.
- `GET /recommendations/{user_id}?k=10`: fresh top-k (k in 1..100, user id 1..256 characters) as
  `{"user_id", "k", "known_user", "cold_start", "model_version", "items": [{"rank", "item_id",
  "score", "source"}]}`. Unknown users get 200 with the cold-start (popularity) list the learner
  returns for them and `"cold_start": true`, not a 404: a new visitor still needs something to see.
- `GET /dashboard` (HTML), `GET /dashboard/dashboard.js|dashboard.css`: the live page, no CDN.
- `GET /api/series?since=<unix time>`: the dashboard's time series as JSON.

Bad parameters get a 400 with `{"error": ..., "detail": ...}`; a failing service gets a 500 JSON
error, never a traceback. The endpoints are read-only and unauthenticated: the worker binds them to
127.0.0.1 by default (Faust's `web_bind`; docker-compose publishes the port on 127.0.0.1 only).

`target` is an `aiohttp.web.Application`, its router, or a Faust app (its aiohttp driver's
`web.web_app`); routes must be added before the server starts.

>>> from aiohttp import web
>>> from stream.metrics import SeriesRecorder, StreamMetrics
>>> class NoModel:
...     def recommend(self, user_ids, k=10):
...         return [[] for _ in user_ids]
>>> app = web.Application()
>>> register_routes(app, LiveService(NoModel(), StreamMetrics(), SeriesRecorder()))
>>> sorted({r.resource.canonical for r in app.router.routes()})[:3]
['/api/series', '/dashboard', '/dashboard/']
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from learners.base import Recommendation
from stream.metrics import METRICS_CONTENT_TYPE, SeriesRecorder, StreamMetrics

__all__ = ["K_MAX", "USER_ID_MAX", "BackgroundServer", "LiveService", "Service", "register_routes"]

log = logging.getLogger(__name__)

K_DEFAULT = 10
K_MAX = 100
USER_ID_MAX = 256
DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
DASHBOARD_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
# The dashboard loads only its own script, style and JSON: nothing from a CDN can run in it.
_DASHBOARD_CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'"


@runtime_checkable
class Service(Protocol):
    """What the endpoints read. Every method is synchronous, cheap and must not block on I/O: the
    views run on the worker's event loop (or on Faust's web thread with `web_in_thread=True`)."""

    def recommend(self, user_id: str, k: int) -> Sequence[Recommendation]: ...

    def known_user(self, user_id: str) -> bool | None:
        """True/False when the service knows, None when it cannot tell."""
        ...

    def model_version(self) -> int | None: ...

    def health(self) -> dict[str, Any]: ...

    def metrics_text(self) -> bytes: ...

    def series(self, since: float | None = None) -> dict[str, Any]: ...


class LiveService:
    """The `Service` of a worker: a recommender plus its `StreamMetrics` and `SeriesRecorder`.

    `recommender` may be replaced at any time (e.g. after a fine-tune); `known_user(user_id)` is an
    optional callable (for learners that can tell); `extra_health()` adds fields to `/health`.
    Call `note_checkpoint(path, offsets)` after each checkpoint so `/health` shows what a restart
    would resume from.
    """

    def __init__(self, recommender: Any, metrics: StreamMetrics, recorder: SeriesRecorder,
                 known_user: Callable[[str], bool] | None = None,
                 extra_health: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.recommender = recommender
        self.metrics = metrics
        self.recorder = recorder
        self._known_user = known_user
        self._extra_health = extra_health
        self.started_at = time.time()
        self._checkpoint: dict[str, Any] = {"path": None, "offsets": {}, "created": None}
        self._lock = threading.Lock()

    def recommend(self, user_id: str, k: int) -> Sequence[Recommendation]:
        return self.recommender.recommend([user_id], k)[0]

    def known_user(self, user_id: str) -> bool | None:
        return None if self._known_user is None else bool(self._known_user(user_id))

    def model_version(self) -> int | None:
        return self.metrics.current_model_version

    def note_checkpoint(self, path: str | Path | None, offsets: Mapping[Any, int],
                        created: float | None = None) -> None:
        """Offsets keyed "topic:partition" or (topic, partition)."""
        with self._lock:
            self._checkpoint = {"path": None if path is None else str(path),
                                "offsets": {_offset_key(k): int(v) for k, v in offsets.items()},
                                "created": time.time() if created is None else created}
        self.metrics.mark_checkpoint(self._checkpoint["created"])

    def health(self) -> dict[str, Any]:
        summary = self.metrics.summary()
        with self._lock:
            checkpoint = dict(self._checkpoint)
        out: dict[str, Any] = {
            "status": "ok",
            "uptime_s": round(time.time() - self.started_at, 3),
            **summary,
            "checkpoint": checkpoint,
        }
        if self._extra_health is not None:
            out.update(self._extra_health())
        return out

    def metrics_text(self) -> bytes:
        return self.metrics.text()

    def series(self, since: float | None = None) -> dict[str, Any]:
        out = self.recorder.snapshot(since)
        out["current"] = self.metrics.summary()
        return out


# -- helpers --------------------------------------------------------------------------------------
def _offset_key(key: Any) -> str:
    """The "topic:partition" form of a str key or a (topic, partition) tuple."""
    return f"{key[0]}:{key[1]}" if isinstance(key, tuple) else str(key)


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, allow_nan=False, default=_json_default, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json", headers=_SECURITY_HEADERS)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _finite(x: Any) -> Any:
    """Replace non-finite floats (which strict JSON cannot carry) by None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


class BadRequest(ValueError):
    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def _bad(error: str, detail: str) -> web.Response:
    return _json({"error": error, "detail": detail}, status=400)


def parse_k(raw: str | None) -> int:
    if raw is None or raw == "":
        return K_DEFAULT
    if not re.fullmatch(r"\s*\d{1,4}\s*", raw):
        raise BadRequest("invalid_k", f"k must be an integer in 1..{K_MAX}, got {raw[:20]!r}")
    k = int(raw)
    if not 1 <= k <= K_MAX:
        raise BadRequest("invalid_k", f"k must be an integer in 1..{K_MAX}, got {k}")
    return k


def parse_user_id(raw: str) -> str:
    if not raw:
        raise BadRequest("invalid_user_id", "user id must not be empty")
    if len(raw) > USER_ID_MAX:
        raise BadRequest("invalid_user_id", f"user id is {len(raw)} characters long, at most {USER_ID_MAX}")
    if _CONTROL_CHARS.search(raw):
        raise BadRequest("invalid_user_id", "user id must not contain control characters")
    return raw


def parse_since(raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        since = float(raw)
    except ValueError:
        raise BadRequest("invalid_since", f"since must be a unix time in seconds, got {raw[:30]!r}") from None
    if not math.isfinite(since):
        raise BadRequest("invalid_since", "since must be finite")
    return since


def _recommendations_body(service: Service, user_id: str, k: int) -> dict[str, Any]:
    recs = list(service.recommend(user_id, k))[:k]
    known = service.known_user(user_id)
    # Without an answer from the service, a list made only of popularity is the cold-start fallback.
    cold = (not known) if known is not None else all(r.source == "popularity" for r in recs)
    items = [{"rank": i + 1, "item_id": str(r.item_id), "score": _finite(float(r.score)),
              "source": str(r.source)} for i, r in enumerate(recs)]
    return {"user_id": user_id, "k": k, "known_user": known, "cold_start": bool(cold),
            "model_version": service.model_version(), "items": items}


# -- routes ---------------------------------------------------------------------------------------
def _router_of(target: Any) -> web.UrlDispatcher:
    if isinstance(target, web.Application):
        return target.router
    if isinstance(target, web.UrlDispatcher):
        return target
    web_app = getattr(target, "web_app", None)  # faust.web.drivers.aiohttp.Web
    if web_app is None and hasattr(target, "web") and hasattr(target, "agent"):  # a faust.App
        web_app = getattr(target.web, "web_app", None)
    if isinstance(web_app, web.Application):
        return web_app.router
    raise TypeError(f"register_routes needs an aiohttp Application/router or a Faust app with the aiohttp "
                    f"web driver, got {type(target).__name__}")


def register_routes(target: Any, service: Service) -> None:
    """Add the read-only endpoints for `service` to `target` (see the module docstring)."""
    router = _router_of(target)
    assets = {name: (DASHBOARD_DIR / name).read_bytes() for name in DASHBOARD_FILES}
    index_html = (DASHBOARD_DIR / "index.html").read_bytes()

    def guarded(handler: Callable[[web.Request], web.Response]) -> Callable[[web.Request], Any]:
        async def view(request: web.Request) -> web.Response:
            try:
                # Off the event loop: a view may wait for the learner's lock (a batch, a checkpoint),
                # and the loop also carries the Kafka heartbeats and the producer's acks.
                return await asyncio.to_thread(handler, request)
            except BadRequest as exc:
                return _bad(exc.error, exc.detail)
            except Exception:  # the service failed: log it, answer a clean 500
                log.exception("HTTP %s %s failed", request.method, request.path)
                return _json({"error": "internal", "detail": "the service failed to answer; see worker log"},
                             status=500)
        view.__name__ = handler.__name__
        return view

    def metrics(request: web.Request) -> web.Response:
        return web.Response(body=service.metrics_text(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE, **_SECURITY_HEADERS})

    def health(request: web.Request) -> web.Response:
        body = _finite(service.health())
        return _json(body, status=503 if body.get("status") == "unavailable" else 200)

    def recommendations(request: web.Request) -> web.Response:
        user_id = parse_user_id(request.match_info["user_id"])
        k = parse_k(request.query.get("k"))
        return _json(_recommendations_body(service, user_id, k))

    def series(request: web.Request) -> web.Response:
        return _json(_finite(service.series(parse_since(request.query.get("since")))))

    def dashboard(request: web.Request) -> web.Response:
        return web.Response(body=index_html, content_type="text/html", charset="utf-8",
                            headers={**_SECURITY_HEADERS, "Content-Security-Policy": _DASHBOARD_CSP})

    def asset(name: str) -> Callable[[web.Request], web.Response]:
        def serve_asset(request: web.Request) -> web.Response:
            return web.Response(body=assets[name], content_type=DASHBOARD_FILES[name], charset="utf-8",
                                headers=_SECURITY_HEADERS)
        serve_asset.__name__ = f"asset_{name.replace('.', '_')}"
        return serve_asset

    router.add_get("/metrics", guarded(metrics))
    router.add_get("/health", guarded(health))
    router.add_get("/recommendations/{user_id}", guarded(recommendations))
    router.add_get("/api/series", guarded(series))
    router.add_get("/dashboard", guarded(dashboard))
    router.add_get("/dashboard/", guarded(dashboard))
    for name in DASHBOARD_FILES:
        router.add_get(f"/dashboard/{name}", guarded(asset(name)))


class BackgroundServer:
    """The endpoints on their own event-loop thread, without Faust (tests, offline replays).

    >>> # with BackgroundServer(service) as server: urllib.request.urlopen(server.url + "/health")
    """

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> BackgroundServer:
        loop = asyncio.new_event_loop()
        app = web.Application()
        register_routes(app, self.service)
        runner = web.AppRunner(app, access_log=None)

        async def start_site() -> int:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
            return int(runner.addresses[0][1])

        self._thread = threading.Thread(target=loop.run_forever, name="streamrec-http", daemon=True)
        self._thread.start()
        self._loop, self._runner = loop, runner
        self.port = asyncio.run_coroutine_threadsafe(start_site(), loop).result(timeout=10)
        self.url = f"http://{self.host}:{self.port}"
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._runner = self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
