"""Which encoding each bucket of a transfer uses, for the link measured so far.

A transfer asked with ``Compression: gzip`` towards a peer of ours means "compress when
it pays". A transfer moves at the pace of its slowest stage: the link, which carries
``link x ratio`` raw bytes per second once compressed, or the cores encoding them,
``speed x cores``. Each candidate's rate is the smaller of the two, plain data's is the
link; the fastest wins, and a costlier codec must beat a cheaper one by ``MARGIN``. So a
thin link gets the strongest codec its CPU keeps up with (shuffle-xz at 20 Mbit/s on 2
cores), a long fat one a fast one (shuffle-zstd), loopback plain data.

The link is measured per request (wire bytes / seconds between sending the request and
reading the whole answer, minus the source's encoding time in pull mode) and multiplied by
the ``Threads`` requests that share it. A request ends only when the peer has read its
body, so a proxy or a kernel buffer that swallows a PUT early cannot make the link look
faster than it is; the peer's own time counts as link time, which errs on the side of
compressing.

On a LAN that last error matters: a request's time there is mostly the peer's queue
(its cores, its GIL), so the link looks slower than the cores and the model compresses
where plain bytes would be faster. So where the round trip is LAN-like (under
``LAN_RTT``) the chooser also measures what each bucket cost end to end, raw bytes per
second from encoding to answer, for plain buckets and for compressed ones, sends every
``PROBE_EVERY``-th bucket the other way to keep both figures fresh, and follows the
faster once both are known. On a WAN a plain probe would cost too many bytes, and the
model is right there.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .encoding import Encoding, local_encodings, sample


@dataclass
class Codec:
    """An encoding at a level, with what it costs and saves (updated as it is used)."""

    encoding: Encoding
    level: int
    speed: float          # raw bytes per second on one core
    ratio: float          # raw bytes / encoded bytes on compressible data


def _priors(gzip_level: int) -> list[Codec]:
    """Measured on the benchmark's study, one core of the 2-core machine (bench.codecs),
    from the cheapest to the costliest."""
    return [
        Codec(Encoding.SHUFFLE_ZSTD, 1, 420e6, 3.10),
        Codec(Encoding.ZSTD, 1, 320e6, 2.25),
        Codec(Encoding.SHUFFLE_ZSTD, 3, 280e6, 3.12),
        Codec(Encoding.ZSTD, 3, 120e6, 2.50),
        Codec(Encoding.SHUFFLE_ZSTD, 9, 95e6, 3.15),
        Codec(Encoding.GZIP, gzip_level, 75e6 if gzip_level <= 1 else 20e6, 2.45),
        Codec(Encoding.SHUFFLE_XZ, 0, 22e6, 3.22),
        Codec(Encoding.XZ, 0, 22e6, 2.82),
        Codec(Encoding.SHUFFLE_XZ, 1, 13e6, 3.27),
    ]


class EncodingChooser:
    """Per transfer: which encoding and level the next bucket should use.

    One chooser is shared by the bucket threads of a job; ``_lock`` guards every estimate
    and counter it keeps (link, codec speeds and ratios, LAN bucket rates, probe count).
    It starts no thread.
    """

    #: Assumed rate of the whole link before any measurement (bytes/s): 80 Mbit/s, where
    #: the fast shuffle-zstd-1 wins, so that the first buckets cost little CPU on a LAN and
    #: are compressed on a WAN (a thin link switches to stronger codecs once measured).
    INITIAL_LINK = 10e6
    #: Weight of a new measurement in the running averages.
    SMOOTHING = 0.3
    #: Share of each core that encoding may take: the rest reads, hashes and serves HTTP.
    CPU_SHARE = 0.5
    #: How much faster a costlier codec must be to be preferred.
    MARGIN = 1.02
    #: Round trips below this are a LAN's: buckets are compared end to end.
    LAN_RTT = 0.005
    #: On a LAN, one bucket in this many is sent the other way (plain or compressed).
    PROBE_EVERY = 6

    def __init__(self, wanted: str, peer_encodings: frozenset[str], *, gzip_level: int,
                 threads: int, cores: int, rtt: float | None = None) -> None:
        self.adaptive = wanted == "gzip" and bool(peer_encodings)
        self._fixed = Encoding.GZIP if wanted == "gzip" else Encoding.NONE
        self._gzip_level = gzip_level
        usable = set(peer_encodings) & set(local_encodings())
        self._codecs = [c for c in _priors(gzip_level) if c.encoding.value in usable]
        self._requests = max(1, threads)
        self._cores = max(1, min(cores, threads)) * self.CPU_SHARE
        self._request_link = self.INITIAL_LINK / self._requests
        self._lan = rtt is not None and rtt < self.LAN_RTT
        self._choices = 0
        self._bucket_rates: dict[bool, float] = {}    # compressed? -> raw bytes/s, end to end
        self._lock = threading.Lock()

    def choose(self, data: bytes | None = None) -> tuple[Encoding, int]:
        """The encoding of the next bucket (``data``: its bytes, when the chooser has them;
        without them, in pull mode, the source drops what does not help)."""
        if not self.adaptive:
            return self._fixed, self._gzip_level
        judged = sample(data) if data is not None else None
        if judged is not None and not judged.compresses:
            return Encoding.NONE, 0
        with self._lock:
            candidates = [c for c in self._codecs if judged is None or judged.shuffle_helps
                          or not c.encoding.shuffled]
            link = self.link_rate
            best_rate, best = link, (Encoding.NONE, 0)
            for codec in candidates:
                rate = min(link * codec.ratio, codec.speed * self._cores)
                if rate > best_rate * self.MARGIN:
                    best_rate, best = rate, (codec.encoding, codec.level)
            if self._lan and candidates:
                cheapest = (candidates[0].encoding, candidates[0].level)
                best = self._lan_choice(best, cheapest if best[0] is Encoding.NONE else best)
        return best

    def _lan_choice(self, model: tuple[Encoding, int],
                    packed: tuple[Encoding, int]) -> tuple[Encoding, int]:
        """Plain or ``packed``: what buckets measured faster, or a probe of the other."""
        self._choices += 1
        rates = self._bucket_rates
        if len(rates) == 2:
            faster = packed if rates[True] > rates[False] else (Encoding.NONE, 0)
        else:
            faster = model
        if self._choices % self.PROBE_EVERY == 0:
            return (Encoding.NONE, 0) if faster[0] is not Encoding.NONE else packed
        return faster

    def observe_bucket(self, encoding: Encoding, raw: int, seconds: float) -> None:
        """A bucket of ``raw`` bytes took ``seconds`` from encoding to answer."""
        if not self._lan or raw < 64 * 1024 or seconds <= 0:
            return
        compressed = encoding is not Encoding.NONE
        with self._lock:
            old = self._bucket_rates.get(compressed)
            rate = raw / seconds
            self._bucket_rates[compressed] = rate if old is None else \
                old + self.SMOOTHING * (rate - old)

    def observe_network(self, wire_bytes: int, seconds: float) -> None:
        """One request moved ``wire_bytes`` in ``seconds`` of network time."""
        if wire_bytes < 64 * 1024 or seconds <= 0:
            return                      # too small to say anything about the link
        with self._lock:
            self._request_link += self.SMOOTHING * (wire_bytes / seconds - self._request_link)

    def observe_encoding(self, encoding: Encoding, level: int, raw: int, encoded: int,
                         seconds: float) -> None:
        """``seconds``: CPU time of the encoding (waits for a free core excluded)."""
        if encoding is Encoding.NONE or raw < 64 * 1024 or encoded <= 0:
            return
        with self._lock:
            for codec in self._codecs:
                if (codec.encoding, codec.level) == (encoding, level):
                    if seconds > 0:
                        codec.speed += self.SMOOTHING * (raw / seconds - codec.speed)
                    codec.ratio += self.SMOOTHING * (raw / encoded - codec.ratio)

    @property
    def link_rate(self) -> float:
        """Raw estimate of the whole link's rate, bytes/s."""
        return self._request_link * self._requests
