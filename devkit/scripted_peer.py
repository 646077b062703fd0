"""A scripted HTTP peer: plays a remote Orthanc as a test says, and records what it got.

In the manner of pynetdicom's ``parrot.py`` (a peer driven by a script) and requests'
``tests/testserver/server.py`` (a server thread used as a context manager, port 0, a
ready event): :class:`ScriptedPeer` listens on ``127.0.0.1`` on a free port, answers each
request with the first :class:`Rule` that matches it, and records every request as an
:class:`Exchange` for the test to assert on. A rule's :class:`Reply` is a status and a
body, or a fault (:class:`Fault`: reset the connection, close it without answering,
corrupt the body), possibly after a delay or once an event is set (``hold``).

A peer may *delegate* what no rule scripts: :func:`route_delegate` forwards requests to
the route handlers a ``TransfersApp`` registered on its host (``Host.register_route``),
so a real source or receiver of this plugin sits behind the socket and faults are
injected on top. :func:`dispatch` is that forwarding, usable without a socket.

What it is not: a full HTTP server (no TLS, no ``Expect: 100-continue``, no pipelining)
nor a model of a slow link (``wan_proxy.py`` is).
"""

from __future__ import annotations

import contextlib
import enum
import json
import re
import socket
import struct
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NoReturn

from orthanc_transfers.hostapi import Handler, Request, Response

#: How long ``start`` waits for the serving thread, and handlers for a silent client (s).
READY_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0


class Fault(enum.Enum):
    RESET = "reset"        # the connection is reset (RST) once the request is read
    CLOSE = "close"        # the connection is closed (FIN) without an answer
    CORRUPT = "corrupt"    # the answer goes out with one byte of its body flipped


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``status`` None: what the delegate answers (404 without one)."""

    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    fault: Fault | None = None
    delay: float = 0.0                       # seconds before answering
    hold: threading.Event | None = None      # answer only once this is set


def json_reply(value: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(value).encode(),
                 {"Content-Type": "application/json", **headers})


def error_reply(status: int, message: str, orthanc_status: int = 1) -> Reply:
    """An answer shaped like Orthanc's own error objects."""
    return json_reply({"HttpStatus": status, "Message": message, "Details": message,
                       "OrthancStatus": orthanc_status}, status)


@dataclass
class Exchange:
    """A request as received, and how it was answered (``status`` None: no answer)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]                  # lower-case names
    body: bytes
    status: int | None = None
    answer: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    def answer_json(self) -> Any:
        return json.loads(self.answer)


@dataclass
class Rule:
    """``method`` and ``path`` (a regex matched against the whole path, query apart).

    Matching requests take ``replies`` in order, the last one repeating; once ``times``
    requests matched, the rule no longer matches (the next rule or the delegate answers).
    ``when`` narrows the match further (e.g. on the query).
    """

    method: str
    path: str
    replies: Sequence[Reply] = (Reply(),)
    times: int | None = None
    when: Callable[[Exchange], bool] | None = None
    matched: int = 0

    def matches(self, exchange: Exchange) -> bool:
        return (self.times is None or self.matched < self.times) \
            and self.method == exchange.method and bool(re.fullmatch(self.path, exchange.path)) \
            and (self.when is None or self.when(exchange))

    def take(self) -> Reply:
        reply = self.replies[min(self.matched, len(self.replies) - 1)]
        self.matched += 1
        return reply


def once(method: str, path: str, reply: Reply, **options: Any) -> Rule:
    """``reply`` to the first matching request only; the others go on as usual."""
    return Rule(method, path, (reply,), times=1, **options)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


Delegate = Callable[[Exchange], Answer]


def dispatch(routes: Mapping[str, Handler], method: str, path: str, *,
             args: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             body: bytes = b"") -> Response:
    """Call the first route whose regex matches the whole path, as Orthanc does; 404 JSON
    when none does. ``args`` reach the handler on GET only, as Orthanc passes them."""
    for regex, handler in routes.items():
        match = re.fullmatch(regex, path)
        if match is not None:
            return handler(Request(method=method, uri=path, groups=match.groups(),
                                   args=dict(args or {}) if method == "GET" else {},
                                   headers={k.lower(): v for k, v in (headers or {}).items()},
                                   body=body))
    return Response.json({"HttpStatus": 404, "Message": "Unknown resource",
                          "Uri": path}, status=404)


def route_delegate(routes: Mapping[str, Handler]) -> Delegate:
    """Answer through the route handlers registered on a host (a real app behind)."""

    def forward(exchange: Exchange) -> Answer:
        response = dispatch(routes, exchange.method, exchange.path, args=exchange.query,
                            headers=exchange.headers, body=exchange.body)
        body = response.body.encode() if isinstance(response.body, str) else response.body
        headers = dict(response.headers)
        if response.status == 405:
            headers["Allow"] = response.allowed_method
        else:
            headers["Content-Type"] = response.content_type
        return Answer(response.status, bytes(body), headers)

    return forward


class ScriptedPeer:
    """An HTTP server on ``127.0.0.1``, port 0, answering as ``rules`` say.

    ``with ScriptedPeer(rules) as url:`` starts it and yields its base URL; leaving the
    block stops it and joins every thread it started (connections still open are shut).
    """

    def __init__(self, rules: Iterable[Rule] = (), delegate: Delegate | None = None) -> None:
        self.rules: list[Rule] = list(rules)
        self.delegate = delegate
        self.errors: list[str] = []           # tracebacks of the handlers, for debugging
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def forwarding_to(cls, routes: Mapping[str, Handler],
                      rules: Iterable[Rule] = ()) -> ScriptedPeer:
        """A peer that behaves as the app whose routes these are, with ``rules`` first."""
        return cls(rules, route_delegate(routes))

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        self._closing.clear()
        self._server = _Server(self)
        ready = threading.Event()

        def serve() -> None:
            ready.set()
            assert self._server is not None
            self._server.serve_forever(poll_interval=0.05)

        self._thread = threading.Thread(target=serve, name="scripted-peer", daemon=True)
        self._thread.start()
        if not ready.wait(READY_TIMEOUT):
            raise RuntimeError("the scripted peer did not start")
        return self.url

    def close(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._closing.set()                   # wake held and delayed answers
        self._server.shutdown()
        self._server.hang_up_all()
        self._server.server_close()           # joins the connection threads
        self._thread.join(READY_TIMEOUT)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the scripted peer is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    # -- script and record ------------------------------------------------------------

    def add(self, *rules: Rule) -> None:
        """Rules that take precedence over those already there."""
        with self._lock:
            self.rules[:0] = rules

    @property
    def requests(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def requests_to(self, method: str, path: str) -> list[Exchange]:
        """The requests received with ``method`` on a path that ``path`` (regex) matches."""
        return [e for e in self.requests
                if e.method == method and re.fullmatch(path, e.path)]

    def clear(self) -> None:
        with self._lock:
            self._exchanges.clear()

    def respond(self, exchange: Exchange) -> tuple[Fault | None, Answer | None]:
        """Record ``exchange`` and decide: a fault, or the answer to send."""
        with self._lock:
            self._exchanges.append(exchange)
            rule = next((r for r in self.rules if r.matches(exchange)), None)
            reply = rule.take() if rule is not None else Reply()
        if reply.hold is not None:
            while not reply.hold.wait(0.02) and not self._closing.is_set():
                pass
        if reply.delay:
            self._closing.wait(reply.delay)
        if self._closing.is_set():            # stopping: held answers are never sent
            return Fault.CLOSE, None
        if reply.fault in (Fault.RESET, Fault.CLOSE):
            return reply.fault, None
        answer = self._answer(reply, exchange)
        if reply.fault is Fault.CORRUPT:
            answer = Answer(answer.status, _flip_a_byte(answer.body), answer.headers)
        exchange.status, exchange.answer = answer.status, answer.body
        return reply.fault, answer

    def _answer(self, reply: Reply, exchange: Exchange) -> Answer:
        if reply.status is not None:
            return Answer(reply.status, reply.body, reply.headers)
        if self.delegate is None:
            return _not_found(exchange.path)
        answer = self.delegate(exchange)
        return Answer(answer.status, answer.body, {**answer.headers, **reply.headers})


def _not_found(path: str) -> Answer:
    body = json.dumps({"HttpStatus": 404, "Message": "Unknown resource", "Uri": path})
    return Answer(404, body.encode(), {"Content-Type": "application/json"})


def _flip_a_byte(body: bytes) -> bytes:
    if not body:
        return b"\x00"
    middle = len(body) // 2
    return body[:middle] + bytes((body[middle] ^ 0xFF,)) + body[middle + 1:]


class _HangUp(Exception):
    """Raised by a handler that dropped its connection on purpose."""


class _Server(ThreadingHTTPServer):
    daemon_threads = False        # so that server_close() joins every connection thread
    block_on_close = True

    def __init__(self, peer: ScriptedPeer) -> None:
        self.peer = peer
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        with self._open_lock:
            self._open.add(connection)
        return connection, address

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def hang_up_all(self) -> None:
        """End the keep-alive connections, whose threads wait for a next request."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.peer.errors.append(traceback.format_exc())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"              # keep-alive, as Orthanc's server
    timeout = IDLE_TIMEOUT
    server: _Server

    def handle(self) -> None:
        with contextlib.suppress(_HangUp, ConnectionError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass                                    # the test records exchanges instead

    def _serve(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        exchange = Exchange(self.command, urllib.parse.unquote(target.path),
                            dict(urllib.parse.parse_qsl(target.query)),
                            {k.lower(): v for k, v in self.headers.items()}, self._body())
        fault, answer = self.server.peer.respond(exchange)
        if answer is None:
            self._hang_up(fault)
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _hang_up(self, fault: Fault | None) -> NoReturn:
        if fault is Fault.RESET:   # linger 0: the last close (in finish()) sends RST, not FIN
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise _HangUp(fault)
