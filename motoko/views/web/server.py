"""The dashboard's HTTP server: static page, JSON API, server-sent events.

The standard library's ``ThreadingHTTPServer`` is enough for a page that a
few people open on their own machine, and adds no dependency. A ZODB
connection is not thread-safe, so each request borrows a *reader* (a
Workflow with its own connections) from a small pool: a slow request holds
one reader, never the whole dashboard. Each request begins a fresh
transaction, so it sees every commit made before it.

Requests whose ``Host`` header names neither the address the dashboard was
bound to, nor ``localhost``, nor an IP literal are refused (421): a web page
on another site cannot reach the dashboard through DNS rebinding.

``GET /events`` is a server-sent-events stream: a ``change`` event follows
every burst of commits (each stream waits on the change feed with its own
:class:`~motoko.study.feed.ThreadWaiter`, which wakes it within milliseconds
of a commit), and a comment every few seconds keeps proxies and the
browser's connection alive. The page re-reads what it shows on each
``change``; the event's ``version`` counts the commits the stream has seen.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from motoko.errors import MotokoError
from motoko.study.feed import ThreadWaiter
from motoko.study.values import jsonable
from motoko.views.web import actions, api

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
#: Seconds between keep-alive comments on an idle event stream.
KEEPALIVE = 10.0
#: Seconds to gather a burst of commits into one ``change`` event.
SETTLE = 0.1
#: Most readers (Workflows with their own connections) serving requests at once.
MAX_READERS = 4
#: The header an action carries the dashboard's token in.
TOKEN_HEADER = "X-Motoko-Token"
#: Bytes of an action's JSON body accepted.
MAX_BODY = 64 * 1024
#: POST path → the action it runs (see :mod:`motoko.views.web.actions`).
ACTIONS = {"/api/cancel": actions.cancel_runs, "/api/retry": actions.retry_runs}


class Dashboard:
    """A running dashboard over one Workflow.

    Args:
        workflow: An open Workflow; the dashboard reads it, and changes it
            only for an action (cancel, retry) that carries the token.
        host: Address to listen on (loopback by default: the data is yours).
        port: TCP port; 0 picks a free one (see :attr:`url`).
        token: The secret an action (cancel, retry) must carry; a random one
            by default. Reading needs none; see :attr:`token_url`.
    """

    def __init__(self, workflow: Any, host: str = "127.0.0.1", port: int = 8765, token: str | None = None):
        self.workflow = workflow
        self.host = host
        self.token = token or secrets.token_urlsafe(24)
        self.lock = threading.Lock()
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._idle.put(workflow)
        self._readers: list[Any] = []  # opened here (closed here); the given workflow is the caller's
        self.stopping = False
        self._streams: set[ThreadWaiter] = set()  # the event streams' waiters, woken on shutdown
        self.steps = api.StepGraphs()
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self._feeds = [db.feed for db in workflow.databases]

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8765/``."""
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    @property
    def token_url(self) -> str:
        """The page's address with its token (``...?token=...``): the page then may act."""
        return f"{self.url}?token={self.token}"

    def changes(self) -> ThreadWaiter:
        """A waiter for one event stream: woken by every commit, and by :meth:`shutdown`.

        The stream gives it back with :meth:`end_stream`.
        """
        waiter = ThreadWaiter(self._feeds)
        with self.lock:
            self._streams.add(waiter)
        if self.stopping:  # shut down meanwhile: do not let the stream wait
            waiter.kick()
        return waiter

    def end_stream(self, waiter: ThreadWaiter) -> None:
        """Stop listening for a stream that ended (idempotent)."""
        waiter.close()
        with self.lock:
            self._streams.discard(waiter)

    def read(self, what: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Call ``what(reader, ...)`` in a fresh transaction, on a reader no other request uses.

        Up to :data:`MAX_READERS` requests read at once; a further one waits
        for the first reader to come back.
        """
        reader = self._borrow()
        try:
            for db in reader.databases:
                db.begin()
            return what(reader, *args, **kw)
        finally:
            self._idle.put(reader)

    def _borrow(self) -> Any:
        with contextlib.suppress(queue.Empty):
            return self._idle.get_nowait()
        with self.lock:
            if len(self._readers) + 1 < MAX_READERS:
                reader = type(self.workflow)(self.workflow.config.path, run_name=self.workflow.run_name, create=False)
                self._readers.append(reader)
                return reader
        return self._idle.get()

    def allows_host(self, header: str | None) -> bool:
        """Whether a request's ``Host`` header may reach this dashboard (DNS-rebinding guard).

        Accepted: the host it was bound to, ``localhost``, and IP literals
        (a rebinding attack needs a DNS name it controls). A missing header is
        refused: every browser sends one.
        """
        if not header:
            return False
        name = header.strip().lower()
        if name.startswith("["):
            name = name[1:].partition("]")[0]
        elif name.count(":") == 1:
            name = name.partition(":")[0]
        name = name.rstrip(".")
        if name in ("localhost", self.host.lower().strip("[]").rstrip(".")):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def serve_forever(self, exit_after: float | None = None) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C), or for ``exit_after`` seconds."""
        timer = None
        if exit_after is not None:
            timer = threading.Timer(exit_after, self.shutdown)
            timer.daemon = True
            timer.start()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            if timer is not None:
                timer.cancel()

    def start(self) -> Dashboard:
        """Serve from a background thread (for tests and embedding); return self."""
        threading.Thread(target=self.serve_forever, name="motoko-ui", daemon=True).start()
        return self

    def shutdown(self) -> None:
        """Stop serving and listening (idempotent); event streams end."""
        if self.stopping:
            return
        self.stopping = True
        with self.lock:
            streams = list(self._streams)
        for waiter in streams:
            waiter.kick()
        threading.Thread(target=self.server.shutdown, daemon=True).start()

    def close(self) -> None:
        """Shut down, release the listening socket and close the readers opened here."""
        self.shutdown()
        self.server.server_close()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                reader.close()
        self._readers.clear()


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "motoko-ui"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    # -- routing -------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self.dashboard.allows_host(self.headers.get("Host")):
            self._error(HTTPStatus.MISDIRECTED_REQUEST, "unknown Host: open the dashboard at the address it printed")
            return
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        path = parts.path
        try:
            if path in ("/", "/index.html"):
                self._file(STATIC / "index.html")
            elif path.startswith("/static/"):
                self._static(path[len("/static/"):])
            elif path == "/events":
                self._events()
            elif path.startswith("/api/"):
                self._json(self._api(path[len("/api/"):], query))
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no page {path}")
        except MotokoError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # the page shows it; the server keeps serving
            log.exception("dashboard request %s failed", self.path)
            self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    # -- actions (POST, token and loopback only) -----------------------------------------

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        try:
            body = self._body()
            refusal = self._refusal()
            if refusal is not None:
                self._json({"error": refusal}, HTTPStatus.FORBIDDEN)
                return
            act = ACTIONS.get(path)
            if act is None:
                self._json({"error": f"no action {path}"}, HTTPStatus.NOT_FOUND)
                return
            ids, constraints = body.get("ids"), str(body.get("q") or "")
            result = self.dashboard.read(act, str(body.get("study") or ""), ids, constraints)
            log.info("dashboard action %s on %s: %s", path, body.get("study"), result["message"])
            self._json(result)
        except MotokoError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:
            log.exception("dashboard action %s failed", self.path)
            self._json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise MotokoError(f"request body of {length} bytes is too large", hint=f"at most {MAX_BODY}")
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise MotokoError("the request body is not JSON", hint='send {"study": ..., "ids": [...]}') from None
        if not isinstance(data, dict):
            raise MotokoError("the request body is not a JSON object", hint='send {"study": ..., "ids": [...]}')
        return data

    def _refusal(self) -> str | None:
        """Why this request may not act, or None: it must come from this machine with the token."""
        try:
            loopback = ipaddress.ip_address(self.client_address[0].split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return "actions are accepted from this machine only (the dashboard listens beyond loopback)"
        # A header, not a cookie or a form field: another site's page cannot send it.
        given = self.headers.get(TOKEN_HEADER) or ""
        if not given:
            return "this action needs the dashboard's token: open the address with ?token=... that `motoko ui` printed"
        if not hmac.compare_digest(given.encode(), self.dashboard.token.encode()):
            return "wrong token: open the address with ?token=... that `motoko ui` printed"
        return None

    def _api(self, name: str, query: dict[str, list[str]]) -> Any:
        read = self.dashboard.read
        arg = api.parse_query
        if name == "overview":
            return read(api.overview)
        if name == "runs":
            limit = min(1000, int(arg(query, "limit", "200") or 200))
            offset = int(arg(query, "offset", "0") or 0)
            return read(api.runs_table, arg(query, "study"), arg(query, "q"), limit=limit, offset=offset)
        if name == "run":
            return read(api.run_details, arg(query, "study"), int(arg(query, "id", "0") or 0))
        if name == "dag":
            return read(api.dag, self.dashboard.steps, arg(query, "run_name") or None)
        raise MotokoError(f"unknown API endpoint {name!r}", hint="see motoko/views/web/api.py")

    # -- responses -----------------------------------------------------------------------

    def _send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        # jsonable: strict JSON (no NaN/Infinity) in UTF-8, whatever runs stored.
        self._send(json.dumps(jsonable(data), allow_nan=False).encode(), "application/json", status)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(message.encode(), "text/plain; charset=utf-8", status)

    def _file(self, path: Path) -> None:
        self._send(path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))

    def _static(self, name: str) -> None:
        path = (STATIC / name).resolve()
        if STATIC.resolve() not in path.parents or not path.is_file():
            self._error(HTTPStatus.NOT_FOUND, f"no file {name}")
            return
        self._file(path)

    def _events(self) -> None:
        dashboard = self.dashboard
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        waiter = dashboard.changes()
        try:
            self._event("hello", waiter.commits)
            while not dashboard.stopping:
                changed = waiter.wait(KEEPALIVE, settle=SETTLE)
                if dashboard.stopping:
                    break
                if not changed:
                    self.wfile.write(b": keep-alive\n\n")
                    self.wfile.flush()
                    continue
                self._event("change", waiter.commits)
        finally:
            dashboard.end_stream(waiter)

    def _event(self, name: str, version: int) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps({'version': version})}\n\n".encode())
        self.wfile.flush()
