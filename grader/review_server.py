"""`grader review --out DIR`: a local page to score free-response answers in the browser.

The standard library's ThreadingHTTPServer, bound to 127.0.0.1, on a random port, with a
random token that every request carries (`?token=` for the page, the `X-Grader-Token`
header for the API). The page is plain HTML and JavaScript served from
grader/review_static/ (no build step); it runs no student script (student text arrives
sanitized, and a Content-Security-Policy allows only the page's own script).

Every save goes straight into the gradebook (SQLite, one transaction per save, safe with
two tabs open and with a batch running); the outputs (grades.csv, feedback, report.html)
are rebuilt in the background a moment after the last save, and at once on "Export".
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .review_data import ReviewData, SaveRefused
from .spec import AssignmentSpec, as_now

log = logging.getLogger("grader")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
STATIC = {"/review.js": "application/javascript", "/review.css": "text/css"}
MAX_BODY = 256 * 1024  # one save: a comment of 10 000 characters fits many times over
EXPORT_DELAY = 2.0  # seconds after the last save before outputs are rebuilt


class Exporter:
    """Rebuilds the outputs from the gradebook, in one background thread, coalescing saves."""

    def __init__(self, spec: AssignmentSpec, gradebook: Path, out: Path) -> None:
        self.spec, self.gradebook, self.out = spec, gradebook, out
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one rebuild at a time
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="grader-export", daemon=True)
        self._thread.start()

    def soon(self) -> None:
        self._wake.set()

    def now(self) -> int:
        from .batch import rebuild_outputs

        with self._lock:
            self.spec = as_now(self.spec)  # edited while the page was open: as export would
            return len(rebuild_outputs(self.spec, self.gradebook, self.out))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop:
                return
            while self._wake.is_set():  # wait until saves pause
                self._wake.clear()
                self._wake.wait(EXPORT_DELAY)
                if self._stop:
                    return
            try:
                self.now()
            except Exception:  # never lose the server over an export; the next save retries
                log.exception("rebuilding the outputs failed")

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=60)


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: ReviewData, exporter: Exporter, port: int = 0) -> None:
        self.data = data
        self.exporter = exporter
        self.token = secrets.token_urlsafe(24)
        super().__init__(("127.0.0.1", port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/?token={self.token}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.exporter.close()


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # no request log on the terminal
        log.debug("review: " + format, *args)

    # ---------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8")

    def _authorised(self) -> bool:
        query = parse_qs(urlsplit(self.path).query)
        given = self.headers.get("X-Grader-Token") or (query.get("token") or [""])[0]
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    # ---------------------------------------------------------------- routes

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in STATIC:
            body = resources.files("grader").joinpath("review_static", path[1:]).read_bytes()
            self._send(200, body, STATIC[path] + "; charset=utf-8")
            return
        if not self._authorised():
            if path.startswith("/api/"):
                self._json(403, {"error": "forbidden: the token is missing or wrong"})
            else:
                self._send(403, b"forbidden: open the address grader review printed", "text/plain")
            return
        if path == "/":
            body = resources.files("grader").joinpath("review_static", "review.html").read_bytes()
            self._send(200, body, "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json(200, self.server.data.state())
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if not self._authorised():
            self._json(403, {"error": "forbidden"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            left = min(length, 16 * MAX_BODY)  # read what was sent (a reset loses the answer)
            while left > 0 and (chunk := self.rfile.read(min(left, 65536))):
                left -= len(chunk)
            self._json(413, {"error": f"request too large (over {MAX_BODY // 1024} KB)"})
            self.close_connection = True
            return
        raw = self.rfile.read(length)
        if path == "/api/score":
            try:
                data = json.loads(raw.decode("utf-8"))
                saved = self.server.data.save(data)
            except (UnicodeDecodeError, json.JSONDecodeError):
                self._json(400, {"error": "the request is not valid JSON"})
            except SaveRefused as exc:
                self._json(409 if "changed" in str(exc) else 400, {"error": str(exc)})
            else:
                self.server.exporter.soon()
                self._json(200, {"saved": saved})
        elif path == "/api/export":
            count = self.server.exporter.now()
            self._json(200, {"exported": count, "out": str(self.server.exporter.out)})
        else:
            self._json(404, {"error": "not found"})


def start(spec: AssignmentSpec, gradebook: Path, out: Path, port: int = 0) -> ReviewServer:
    """A running server (in a background thread); `close()` stops it."""
    from .review_data import check_gradebook

    check_gradebook(gradebook)
    server = ReviewServer(ReviewData(spec, gradebook), Exporter(spec, gradebook, out), port)
    threading.Thread(target=server.serve_forever, name="grader-review", daemon=True).start()
    return server
