"""The WAN proxy's faults of issue 17, on tiny local servers (no Orthanc): a link that
resets whichever connection carries it past every few bytes (``reset_every``), and a
cut link (``cut``/``restore``)."""

from __future__ import annotations

import contextlib
import http.server
import random
import socket
import socketserver
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from devkit.orthanc_server import wait_for
from devkit.wan_proxy import LinkProfile, WanProxy

pytestmark = pytest.mark.timeout(30)

LOW, HIGH = 100_000, 160_000
SEED = 7
MESSAGE = 10_000


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    accepted = 0                # connections that reached the target


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Server)
        self.server.accepted += 1
        with contextlib.suppress(OSError):
            while data := self.request.recv(65536):
                self.request.sendall(data)


class _Reply(socketserver.BaseRequestHandler):
    """Reads a whole message of ``MESSAGE`` bytes, then sends as many back: the two
    directions never carry bytes at the same time."""

    def handle(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                received = 0
                while received < MESSAGE:
                    data = self.request.recv(MESSAGE - received)
                    if not data:
                        return
                    received += len(data)
                self.request.sendall(b"r" * MESSAGE)


class _Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Server)
        self.server.accepted += 1
        with contextlib.suppress(OSError):
            while self.request.recv(65536):
                pass


@contextlib.contextmanager
def serving(handler: type[socketserver.BaseRequestHandler]) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def proxied(server: socketserver.TCPServer, profile: LinkProfile | None = None,
            seed: int = SEED) -> Iterator[WanProxy]:
    proxy = WanProxy(server.server_address[1], profile, seed=seed).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def connect(proxy: WanProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def expect_reset(client: socket.socket) -> None:
    """Wait for the proxy to reset ``client``: a reset, or an end of stream, must come."""
    with pytest.raises(OSError):
        if not client.recv(65536):
            raise ConnectionResetError("closed by the proxy")


def counted_resets(proxy: WanProxy, expected: int) -> None:
    wait_for(lambda: proxy.counters.resets == expected, 5, f"{expected} resets counted")


def thresholds(count: int) -> list[int]:
    """The gaps between two resets that a proxy seeded with ``SEED`` draws."""
    draw = random.Random(SEED)
    return [draw.randint(LOW, HIGH) for _ in range(count)]


def resetting() -> LinkProfile:
    return LinkProfile("resetting", reset_every=(LOW, HIGH))


def test_reset_every_resets_the_connection_at_each_drawn_threshold() -> None:
    """One direction: each connection carries exactly the drawn number of bytes, then
    is reset; the next connection starts the next gap."""
    payload = b"x" * 16384
    with serving(_Sink) as sink, proxied(sink, resetting()) as proxy:
        carried: list[int] = []
        for _ in range(4):
            before = proxy.counters.up
            with connect(proxy) as client:
                with contextlib.suppress(OSError):
                    for _ in range(100):               # 1.6 MB: far beyond HIGH
                        client.sendall(payload)
                expect_reset(client)
            counted_resets(proxy, len(carried) + 1)
            carried.append(proxy.counters.up - before)
        assert carried == thresholds(4)
        assert all(LOW <= gap <= HIGH for gap in carried)
        assert proxy.bytes_passed == sum(carried)
        assert proxy.counters.resets == proxy.counters.connections == 4
        wait_for(lambda: sink.accepted == 4, 5, "every connection to reach the target")


def test_reset_every_counts_both_directions() -> None:
    """Request, then answer: what goes up and what comes down both count."""
    message = b"y" * MESSAGE
    with serving(_Reply) as replier, proxied(replier, resetting()) as proxy:
        moved: list[tuple[int, int]] = []
        for _ in range(3):
            up, down = proxy.counters.up, proxy.counters.down
            with connect(proxy) as client, pytest.raises(OSError):
                for _ in range(100):
                    client.sendall(message)
                    received = 0
                    while received < len(message):
                        data = client.recv(65536)
                        if not data:
                            raise ConnectionResetError("closed by the proxy")
                        received += len(data)
            counted_resets(proxy, len(moved) + 1)
            moved.append((proxy.counters.up - up, proxy.counters.down - down))
        assert [u + d for u, d in moved] == thresholds(3)
        assert all(d > 0 and u > 0 for u, d in moved)    # both directions counted


def test_without_reset_every_nothing_is_reset() -> None:
    with serving(_Echo) as echo, proxied(echo) as proxy, connect(proxy) as client:
        for _ in range(50):
            client.sendall(b"z" * 20_000)
            received = 0
            while received < 20_000:
                received += len(client.recv(65536))
        assert proxy.counters.resets == 0
        assert proxy.bytes_passed == 2 * 50 * 20_000


def test_reset_every_must_be_a_range() -> None:
    with pytest.raises(ValueError, match="reset_every"):
        WanProxy(1, LinkProfile("bad", reset_every=(10, 5)))


def test_cut_resets_open_connections_and_refuses_new_ones_until_restore() -> None:
    with serving(_Echo) as echo, proxied(echo) as proxy:
        with connect(proxy) as open_one:
            open_one.sendall(b"hello")
            assert open_one.recv(100) == b"hello"
            proxy.cut()
            assert proxy.is_cut
            expect_reset(open_one)
        for _ in range(3):
            # Reset at once: connect() itself may already fail (EPIPE, ECONNRESET).
            with pytest.raises(OSError), connect(proxy) as client:
                with contextlib.suppress(OSError):
                    client.sendall(b"anyone?")
                if not client.recv(100):
                    raise ConnectionResetError("closed by the proxy")
            wait_for(lambda: proxy.counters.refused >= 1, 5, "the refusal counted")
        assert echo.accepted == 1                      # never connected to the target
        assert proxy.counters.refused == 3
        assert proxy.counters.connections == 1
        proxy.restore()
        assert not proxy.is_cut
        with connect(proxy) as client:
            client.sendall(b"back")
            assert client.recv(100) == b"back"
        assert echo.accepted == 2


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello over http"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_an_http_peer_behind_a_cut_link_looks_unreachable_then_answers() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with proxied(server) as proxy:
            url = proxy.url + "hello"
            proxy.cut()
            with pytest.raises(OSError):               # reset / remote disconnect
                urllib.request.urlopen(url, timeout=5).read()
            proxy.restore()
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.read() == b"hello over http"
    finally:
        server.shutdown()
        server.server_close()
