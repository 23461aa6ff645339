"""Drive headless Chromium over the DevTools protocol (aiohttp's websocket client; no extra packages).

Reusable by any test that needs a real browser on a page served by the worker. From another tests/
folder, import it by path (tests/ folders are not packages):

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
    from chromium import Chromium, check_dashboard, find_chromium

    report = check_dashboard("http://127.0.0.1:6066", "out/dashboard-kafka.png")  # asserts growth

    with Chromium() as browser:  # or step by step
        browser.open("http://127.0.0.1:6066/dashboard")
        browser.wait_for("window.streamrec && streamrec.polls > 2")
        points = browser.eval_js("streamrec.points")
        browser.screenshot("out/dashboard.png")

One-shot helpers: `screenshot(url, path, wait="expr")`, `eval_js(url, "expr", wait="expr")`.
`find_chromium()` is None when no browser is installed (tests skip then).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, `$CHROMIUM` first; None when there is none."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page, driven synchronously from the calling thread."""

    def __init__(self, binary: str | None = None, width: int = 1400, height: int = 1000,
                 timeout: float = 30.0) -> None:
        self.binary = binary or find_chromium()
        self.width = width
        self.height = height
        self.timeout = timeout
        self.console: list[str] = []  # console.* messages of the page
        self.exceptions: list[str] = []  # uncaught JS exceptions of the page
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._loads = 0

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> Chromium:
        if self.binary is None:
            raise BrowserError("no chromium binary found (apt-get install chromium, or set $CHROMIUM)")
        self._profile = tempfile.mkdtemp(prefix="streamrec-chromium-")
        self._proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace")[-2000:] if self._proc.stderr else ""
                self._cleanup_files()
                raise BrowserError(f"chromium exited with {self._proc.returncode}: {err}")
            if time.monotonic() > deadline:
                self.close()
                raise BrowserError("chromium did not open its DevTools port in time")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cdp", daemon=True)
        self._thread.start()
        self._run(self._connect(f"ws://127.0.0.1:{port}{path}"))
        return self

    def close(self) -> None:
        if getattr(self, "_loop", None) is not None:
            try:
                self._run(self._disconnect(), timeout=5)
            except Exception:  # the browser may already be gone; the process is killed below anyway
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
            self._loop = None
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stderr:
            proc.stderr.close()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        if getattr(self, "_profile", None):
            # Chromium's helper processes may still flush into the profile just after the main exits.
            for _ in range(20):
                shutil.rmtree(self._profile, ignore_errors=True)
                if not Path(self._profile).exists():
                    break
                time.sleep(0.1)
            self._profile = None

    def __enter__(self) -> Chromium:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- page API -----------------------------------------------------------------------------------
    def open(self, url: str, timeout: float | None = None) -> None:
        """Navigate and wait for the load event."""
        before = self._loads
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._loads == before:
            if time.monotonic() > deadline:
                raise BrowserError(f"{url} did not finish loading")
            time.sleep(0.02)

    def eval_js(self, expression: str) -> Any:
        """Value of a JS expression (promises awaited), as JSON-able Python."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error in {expression!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float | None = None, interval: float = 0.1) -> Any:
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.eval_js(expression)
            except BrowserError as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise BrowserError(f"timed out waiting for {expression!r}; last value {last!r}")

    def screenshot(self, path: str | Path) -> Path:
        """PNG of the viewport, written to `path` (parents created)."""
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> dict:
        """One DevTools command on the page session."""
        return self._run(self._send(method, params or {}, self._session), timeout=timeout)

    # -- protocol -----------------------------------------------------------------------------------
    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout or self.timeout)

    async def _connect(self, ws_url: str) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(ws_url, max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())
        target = await self._send("Target.createTarget", {"url": "about:blank"}, None)
        attached = await self._send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, None)
        self._session = attached["sessionId"]
        for method in ("Page.enable", "Runtime.enable"):
            await self._send(method, {}, self._session)
        metrics = {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False}
        await self._send("Emulation.setDeviceMetricsOverride", metrics, self._session)

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self._send("Browser.close", {}, None), 3)
        except Exception:  # closing races the socket shutting down
            pass
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()

    async def _send(self, method: str, params: dict, session: str | None) -> dict:
        msg_id = next(self._ids)
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps(message))
        return await future

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(BrowserError(f"{data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Page.loadEventFired":
                self._loads += 1
            elif method == "Runtime.consoleAPICalled":
                args = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.console.append(f"{params.get('type')}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                self.exceptions.append(text)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("DevTools connection closed"))


def screenshot(url: str, path: str | Path, wait: str | None = None, timeout: float = 30.0) -> Path:
    """Open `url`, wait until the JS expression `wait` is truthy (if given), save a PNG at `path`."""
    with Chromium(timeout=timeout) as browser:
        browser.open(url)
        if wait:
            browser.wait_for(wait)
        return browser.screenshot(path)


def eval_js(url: str, expression: str, wait: str | None = None, timeout: float = 30.0) -> Any:
    """Open `url`, wait for `wait` (if given), return the value of `expression`."""
    with Chromium(timeout=timeout) as browser:
        browser.open(url)
        if wait:
            browser.wait_for(wait)
        return browser.eval_js(expression)


_TILES_JS = ("Object.fromEntries([...document.querySelectorAll('.tile')].map("
             "t => [t.querySelector('.label').textContent, t.querySelector('.value').textContent]))")
_DATA_POINTS_JS = ("Object.fromEntries([...document.querySelectorAll('figure.chart')].map("
                   "f => [f.id, Number(f.dataset.points)]))")


def coloured_pixels(browser: Chromium, chart_id: str, css_var: str, tolerance: int = 40) -> int:
    """Pixels of the chart's canvas within `tolerance` of the colour in CSS variable `css_var`:
    proof that a line was really drawn, not just counted."""
    return browser.eval_js(f"""(() => {{
        const hex = getComputedStyle(document.documentElement).getPropertyValue('{css_var}').trim();
        const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
        const canvas = document.querySelector('#{chart_id} canvas');
        const px = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4) {{
            if (Math.abs(px[i] - want[0]) + Math.abs(px[i + 1] - want[1]) + Math.abs(px[i + 2] - want[2])
                <= {tolerance} && px[i + 3] > 200) n++;
        }}
        return n;
    }})()""")


def check_dashboard(base_url: str, png_path: str | Path, min_points: int = 3, grow_timeout: float = 30.0,
                    finetunes: bool = False) -> dict[str, Any]:
    """Open `<base_url>/dashboard`, assert that its charts are drawn and grow while the service runs,
    save a screenshot at `png_path`; return what was seen (points before/after, tile texts, pixels).

    `finetunes=True` also waits for at least one fine-tune marker.
    """
    with Chromium(timeout=grow_timeout) as browser:
        browser.open(base_url.rstrip("/") + "/dashboard")
        browser.wait_for(f"window.streamrec && streamrec.points.quality >= {min_points} "
                         f"&& streamrec.points.throughput >= {min_points}")
        before = browser.eval_js("streamrec.points")
        browser.wait_for(f"streamrec.points.quality > {before['quality']} "
                         f"&& streamrec.points.throughput > {before['throughput']} "
                         f"&& streamrec.points.lag > {before['lag']}")
        if finetunes:
            browser.wait_for("streamrec.points.finetunes >= 1")
        after = browser.eval_js("streamrec.points")
        report = {
            "before": before,
            "after": after,
            "data_points": browser.eval_js(_DATA_POINTS_JS),
            "tiles": browser.eval_js(_TILES_JS),
            "status": browser.eval_js("document.getElementById('status').textContent"),
            "pixels": {name: coloured_pixels(browser, f"chart-{chart}", var) for name, chart, var in (
                ("hr_at_10", "quality", "--hr"), ("auc", "quality", "--auc"),
                ("events_per_s", "throughput", "--rate"), ("lag", "lag", "--lag"))},
            "polls": browser.eval_js("streamrec.polls"),
            "errors": browser.eval_js("streamrec.errors"),
            "exceptions": list(browser.exceptions),
            "console": list(browser.console),
            "screenshot": str(browser.screenshot(png_path)),
        }
    return report
