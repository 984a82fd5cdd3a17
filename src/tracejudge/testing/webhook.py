"""A webhook receiver on loopback for the alert tests: records every POST, can fail or hold requests on demand.

>>> with WebhookReceiver() as r:
...     r.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """``received``: (path, body) accepted; ``rejected``: paths answered with an error.

    ``fail_first``: paths answering 500 once; ``down``: paths answering 503 while listed (the set can change
    at any time); ``hold``: paths whose requests wait for ``release`` (an event, not a sleep), with ``holding``
    set once one waits.
    """

    def __init__(self, fail_first: tuple[str, ...] = ()) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.rejected: list[str] = []
        self.failures_left = {p: 1 for p in fail_first}
        self.down: set[str] = set()
        self.hold: set[str] = set()
        self.holding = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path in outer.hold:
                    outer.holding.set()
                    outer.release.wait(60)
                if outer.failures_left.get(self.path) or self.path in outer.down:
                    if outer.failures_left.get(self.path):
                        outer.failures_left[self.path] -= 1
                    outer.rejected.append(self.path)
                    self.send_response(500 if self.path not in outer.down else 503)
                    self.end_headers()
                    return
                outer.received.append((self.path, body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.received if p == path]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
