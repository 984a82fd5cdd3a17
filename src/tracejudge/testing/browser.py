"""A headless Chromium driven over the DevTools protocol (for the dashboard's browser test and screenshot).

Debian's ``chromium`` (``scripts/ensure-chromium.sh`` installs it); the protocol over a websocket with aiohttp
(which MLflow already brings). Only what the test needs: open a page, evaluate JavaScript, take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

BINARIES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """``with Chromium() as page: page.open(url); page.evaluate("1+1")``."""

    def __init__(self, binary: str | None = None, *, width: int = 1440, height: int = 1000) -> None:
        self.binary = binary or find_chromium()
        if not self.binary:
            raise FileNotFoundError("no chromium binary (install Debian's chromium: scripts/ensure-chromium.sh)")
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="tj-chromium-")
        self.proc = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline() if self.proc.stderr else ""
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
            elif not line and self.proc.poll() is not None:
                break
        if port is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.port = port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        self.loop.run_until_complete(self._connect(pages[0]["webSocketDebuggerUrl"]))
        self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)
        return self

    async def _connect(self, url: str) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)

    async def _send(self, method: str, params: dict[str, Any]) -> Any:
        call_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def send(self, method: str, **params: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(self._send(method, params), 60))

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (promises awaited); returns the value, or raises with the JS error."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def open(self, url: str, *, until: str = "document.readyState === 'complete'", timeout: float = 30) -> None:
        """Navigate and wait until the JavaScript condition is true."""
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate(f"Boolean({until})"):
                    return
            except RuntimeError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"page {url} did not satisfy {until!r} within {timeout} s")

    def screenshot(self, path: str, *, full_page: bool = True) -> None:
        """A PNG of the page (the whole height when ``full_page``)."""
        if full_page:
            height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
            self.send("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1, mobile=False)
            time.sleep(0.3)
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=full_page)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.loop.run_until_complete(self.ws.close())
                self.loop.run_until_complete(self.session.close())
        except Exception:
            pass
        if getattr(self, "proc", None) is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(getattr(self, "profile", ""), ignore_errors=True)
        self.loop.close()

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["Chromium", "find_chromium"]
