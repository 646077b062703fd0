"""A user-space TCP proxy that makes a loopback link behave like a WAN, and breaks it.

Linux netem is not available on these machines, so this proxy stands between two
Orthanc servers: it adds one-way delay, caps the bandwidth of each direction (shared by
all connections, as one link would), and counts the bytes. For fault tests it can
reset a share of connections, reset whichever connection carries the link past every few
megabytes (``reset_every``), stall all traffic, cut the link (every connection reset,
the peer unreachable until :meth:`WanProxy.restore`), or flip one byte.

What it does not model: packet loss and TCP's reaction to it (a reset is the blunt
substitute), queueing in routers beyond the bandwidth cap, jitter, and TCP slow start
over the emulated latency (the loopback socket underneath has none).
"""

from __future__ import annotations

import contextlib
import heapq
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class LinkProfile:
    """``delay`` is one-way, in seconds; ``bandwidth`` in bits per second (0 = none)."""

    name: str = "lan"
    delay: float = 0.0
    bandwidth: float = 0.0
    reset_rate: float = 0.0      # probability that a new connection is reset mid-way
    #: (min, max) bytes: the connection that carries the link's running byte count (both
    #: directions, every connection) past a threshold is reset; the next threshold is
    #: that many bytes further, drawn uniformly (seeded)
    reset_every: tuple[int, int] | None = None


PROFILES = {
    "lan": LinkProfile("lan"),
    "wan20": LinkProfile("wan20", delay=0.040, bandwidth=20e6),
    "wan100": LinkProfile("wan100", delay=0.100, bandwidth=100e6),
    "flaky": LinkProfile("flaky", delay=0.040, bandwidth=20e6, reset_rate=0.03),
}


class TokenBucket:
    """Shared bandwidth of one direction: callers wait until their bytes may pass."""

    def __init__(self, bits_per_second: float) -> None:
        self.rate = bits_per_second / 8.0
        self._next_free = time.monotonic()
        self._lock = threading.Lock()

    def take(self, size: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            start = max(self._next_free, time.monotonic())
            self._next_free = start + size / self.rate
            wait = self._next_free - time.monotonic()
        if wait > 0:
            time.sleep(wait)


@dataclass
class Counters:
    up: int = 0                 # client -> server bytes
    down: int = 0               # server -> client bytes
    connections: int = 0
    resets: int = 0
    refused: int = 0            # connections reset on arrival while the link was cut
    lock: threading.Lock = field(default_factory=threading.Lock)


class WanProxy:
    def __init__(self, target_port: int, profile: LinkProfile | None = None, *,
                 seed: int = 0, target_host: str = "127.0.0.1",
                 tls: ssl.SSLContext | None = None) -> None:
        self.target = (target_host, target_port)
        self._tls = tls         # terminate TLS here, as a reverse proxy in front of Orthanc
        self.profile = profile or PROFILES["lan"]
        self.counters = Counters()
        self._random = random.Random(seed)
        self._buckets = {"up": TokenBucket(self.profile.bandwidth),
                         "down": TokenBucket(self.profile.bandwidth)}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._running = True
        self._flowing = threading.Event()
        self._flowing.set()
        self._corruptions: dict[str, int] = {}     # direction -> bytes before the flip
        self._forced_resets: list[int] = []       # byte offsets for the next connections
        self._cut = False                          # cut(): every connection reset at once
        self._passed = 0                           # bytes forwarded, for reset_every
        self._next_reset: int | None = None        # value of _passed that resets
        if self.profile.reset_every is not None:
            low, high = self.profile.reset_every
            if not 0 < low <= high:
                raise ValueError(f"reset_every must be 0 < min <= max, got {low, high}")
            self._next_reset = self._random.randint(low, high)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="wan-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}/"

    def start(self) -> WanProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()

    # -- faults -----------------------------------------------------------------------

    def stall(self) -> None:
        """Hold every byte until :meth:`release` (a link that goes silent)."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def corrupt_once(self, direction: str, after_bytes: int) -> None:
        """Flip one byte of ``direction`` ("up"/"down") once ``after_bytes`` more passed."""
        with self._lock:
            self._corruptions[direction] = after_bytes

    def reset_next(self, connections: int, after_bytes: int) -> None:
        """Reset each of the next ``connections`` new connections after ``after_bytes``."""
        with self._lock:
            self._forced_resets.extend([after_bytes] * connections)

    def reset_all(self) -> None:
        """Reset every open connection now."""
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._abort(sock)

    def cut(self) -> None:
        """Cut the link: reset every open connection now and, until :meth:`restore`,
        every new one as soon as it is accepted, without connecting to the target (the
        client sees a reset or a remote disconnect: the peer looks unreachable)."""
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._abort(sock)

    def restore(self) -> None:
        """Let new connections through again after :meth:`cut`."""
        with self._lock:
            self._cut = False

    @property
    def is_cut(self) -> bool:
        with self._lock:
            return self._cut

    @property
    def bytes_passed(self) -> int:
        """Bytes forwarded so far, both directions, every connection: what ``reset_every``
        counts (a chunk is counted when the proxy takes it to send)."""
        with self._lock:
            return self._passed

    # -- plumbing ---------------------------------------------------------------------

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.is_cut:
                self._refuse(client)
                continue
            try:
                if self._tls is not None:
                    client.settimeout(10)
                    client = self._tls.wrap_socket(client, server_side=True)
                    client.settimeout(None)
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                cut = self._cut           # cut() while this one was connecting
                if not cut:
                    self._sockets.update((client, server))
            if cut:
                self._refuse(client, server)
                continue
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.counters.lock:
                self.counters.connections += 1
            reset_after = None
            with self._lock:      # the pumps draw from _random too (reset_every)
                if self.profile.reset_rate and self._random.random() < self.profile.reset_rate:
                    reset_after = self._random.randint(1, 2 * 1024 * 1024)
                if self._forced_resets:
                    reset_after = self._forced_resets.pop(0)
            pumps_left = [2]
            for source, sink, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(target=self._pump,
                                 args=(source, sink, direction, reset_after, pumps_left),
                                 daemon=True, name=f"wan-{direction}").start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str,
              reset_after: int | None, pumps_left: list[int]) -> None:
        """Read, delay by the one-way latency, pace by the bandwidth, write."""
        delayed: list[tuple[float, int, bytes]] = []
        arrived = threading.Condition()
        done = threading.Event()
        sequence = 0

        def writer() -> None:
            passed = 0
            while True:
                with arrived:
                    while not delayed and not done.is_set():
                        arrived.wait(0.5)
                    if not delayed:
                        break
                    due, _, data = heapq.heappop(delayed)
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                self._flowing.wait()
                self._buckets[direction].take(len(data))
                data = self._maybe_corrupt(direction, data)
                passed += len(data)
                if reset_after is not None and passed > reset_after:
                    with self.counters.lock:
                        self.counters.resets += 1
                    self._reset(source, sink)
                    return
                if sink.fileno() < 0:
                    break             # reset already (the other direction, cut()...)
                allowed, reset_now = self._take_budget(len(data))
                if reset_now:
                    # reset_every: what fits under the threshold goes, then the reset.
                    if allowed:
                        with contextlib.suppress(OSError):
                            sink.sendall(data[:allowed])
                            self._count(direction, allowed)
                    with self.counters.lock:
                        self.counters.resets += 1
                    self._reset(source, sink)
                    return
                try:
                    sink.sendall(data)
                except OSError:
                    break
                self._count(direction, len(data))
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)     # pass the half-close on
            with self._lock:
                pumps_left[0] -= 1
                last = pumps_left[0] == 0
            if last:
                self._reset(source, sink, linger=False)

        thread = threading.Thread(target=writer, daemon=True, name=f"wan-{direction}-w")
        thread.start()
        try:
            while True:
                data = source.recv(CHUNK)
                if not data:
                    break
                with arrived:
                    sequence += 1
                    heapq.heappush(delayed, (time.monotonic() + self.profile.delay, sequence,
                                             data))
                    arrived.notify()
        except OSError:
            pass
        done.set()
        with arrived:
            arrived.notify()
        thread.join()

    def _refuse(self, *sockets: socket.socket) -> None:
        """The link is cut: reset a connection just accepted (and the target's side)."""
        with self.counters.lock:
            self.counters.refused += 1
        for sock in sockets:
            self._abort(sock)

    def _take_budget(self, size: int) -> tuple[int, bool]:
        """``reset_every``: how many of ``size`` bytes may pass, and whether the
        connection is reset once they have (the running count reached a threshold)."""
        with self._lock:
            if self._next_reset is None or self.profile.reset_every is None:
                self._passed += size
                return size, False
            room = self._next_reset - self._passed
            if size < room:
                self._passed += size
                return size, False
            self._passed = self._next_reset
            self._next_reset += self._random.randint(*self.profile.reset_every)
            return room, True

    def _count(self, direction: str, size: int) -> None:
        with self.counters.lock:
            if direction == "up":
                self.counters.up += size
            else:
                self.counters.down += size

    def _maybe_corrupt(self, direction: str, data: bytes) -> bytes:
        with self._lock:
            remaining = self._corruptions.get(direction)
            if remaining is None:
                return data
            if remaining >= len(data):
                self._corruptions[direction] = remaining - len(data)
                return data
            del self._corruptions[direction]
        flipped = bytearray(data)
        flipped[remaining] ^= 0xFF
        return bytes(flipped)

    @staticmethod
    def _abort(sock: socket.socket) -> None:
        """Reset a connection, waking up the threads blocked on it (close alone does not)."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _reset(self, a: socket.socket, b: socket.socket, linger: bool = True) -> None:
        """Close both ends; with ``linger`` the peers see a TCP reset."""
        for sock in (a, b):
            if linger:
                self._abort(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        with self._lock:
            self._sockets.discard(a)
            self._sockets.discard(b)
