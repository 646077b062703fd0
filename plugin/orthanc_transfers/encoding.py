"""How each bucket is encoded on the wire, chosen bucket by bucket for the measured link.

Between two peers running this plugin (they announce ``Encodings`` in the lookup answer
and in the push creation answer), a transfer asked with ``Compression: gzip`` means
"compress when it pays": each bucket goes as zstd, gzip or plain, whichever moves its
bytes fastest given the link measured so far and the speed of each codec, and plain
whenever its data does not compress (JPEG, JPEG 2000...). The choice travels in the
``X-Transfers-Encoding`` header. With an original peer nothing changes: plain gzip, as
asked. ``Compression: none`` is never compressed.
"""

from __future__ import annotations

import enum
import importlib
import io
import os
import threading
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import IntegrityError

zstandard: Any                         # Debian: python3-zstandard; optional
try:
    zstandard = importlib.import_module("zstandard")
except ImportError:                    # pragma: no cover - depends on the machine
    zstandard = None

#: Header naming the encoding of a bucket body (requests and answers).
ENCODING_HEADER = "X-Transfers-Encoding"
#: Header of a chunk answer: seconds the source spent encoding it.
ENCODE_SECONDS_HEADER = "X-Transfers-Encode-Seconds"
#: Header of a chunk request: the source may send plain data that does not compress.
ADAPTIVE_HEADER = "X-Transfers-Adaptive"


class Encoding(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"

    @property
    def mime_type(self) -> str:
        return {"none": "application/octet-stream", "gzip": "application/gzip",
                "zstd": "application/zstd"}[self.value]


def local_encodings() -> tuple[str, ...]:
    """What this plugin can encode and decode, announced to peers."""
    return ("zstd", "gzip", "none") if zstandard is not None else ("gzip", "none")


#: Compressions running at once in this process: one per core. More only share the
#: cores, so that every bucket of a wave is ready late instead of the first ones early
#: (measured: 4 buckets at once on 2 cores were all ready after 64-100 ms, the first
#: one alone after 33 ms), and the link waits for the first bytes.
_ENCODERS = threading.BoundedSemaphore(os.cpu_count() or 1)


def encode(data: bytes, encoding: Encoding, level: int) -> bytes:
    if encoding is Encoding.NONE:
        return data
    if encoding is Encoding.ZSTD and zstandard is None:
        raise IntegrityError("zstd is not available on this Orthanc (python3-zstandard)")
    with _ENCODERS:
        if encoding is Encoding.ZSTD:
            return bytes(zstandard.ZstdCompressor(level=level).compress(data))
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)   # one single gzip member
        return compressor.compress(data) + compressor.flush()


def decode(payload: bytes, encoding: Encoding, expected_size: int) -> bytes:
    """Decode and insist on exactly ``expected_size`` bytes (a bomb stops one byte past)."""
    if encoding is Encoding.NONE:
        data = payload
    elif encoding is Encoding.ZSTD:
        if zstandard is None:
            raise IntegrityError("zstd is not available on this Orthanc (python3-zstandard)")
        data = _unzstd(payload, expected_size)
    else:
        data = _gunzip(payload, expected_size)
    if len(data) != expected_size:
        raise IntegrityError(
            f"Bucket has {len(data)} bytes after decoding, expected {expected_size}")
    return data


def _unzstd(payload: bytes, expected_size: int) -> bytes:
    # A stream read, never the one-shot API: that one allocates whatever size the frame
    # header declares (a 27-byte body can ask for a terabyte).
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload))
    parts: list[bytes] = []
    size = 0
    try:
        while size <= expected_size:          # one byte past the expected size is enough
            piece = reader.read(min(expected_size + 1 - size, 1 << 22))
            if not piece:
                break
            parts.append(piece)
            size += len(piece)
    except (zstandard.ZstdError, MemoryError) as e:
        raise IntegrityError(f"Corrupted zstd payload: {e}") from e
    return b"".join(parts)


def _gunzip(payload: bytes, expected_size: int) -> bytes:
    inflater = zlib.decompressobj(31)
    try:
        data = inflater.decompress(payload, expected_size + 1)
        # At the expected size the stream must end: else it is longer or truncated.
        if len(data) == expected_size and not inflater.eof and (
                inflater.decompress(inflater.unconsumed_tail, 1) or not inflater.eof):
            raise IntegrityError(
                f"Gzip payload does not end after the expected {expected_size} bytes")
    except zlib.error as e:
        raise IntegrityError(f"Corrupted gzip payload: {e}") from e
    if inflater.unused_data:
        # The original reads a single member; anything after it is not ours.
        raise IntegrityError("Unexpected data after the gzip member of a bucket")
    return data


#: Bytes of a bucket tried before compressing it whole.
SAMPLE = 64 * 1024
#: Below this sample ratio, compressing costs more CPU than it saves bytes.
MIN_RATIO = 1.1


def compresses(data: bytes) -> bool:
    """Whether a bucket is worth compressing, judged on a sample from its middle."""
    if len(data) <= SAMPLE:
        sample = data
    else:
        middle = len(data) // 2
        sample = data[middle - SAMPLE // 2: middle + SAMPLE // 2]
    return bool(sample) and len(sample) >= MIN_RATIO * len(zlib.compress(sample, 1))


@dataclass
class Codec:
    """An encoding at a level, with what it costs and saves (updated as it is used)."""

    encoding: Encoding
    level: int
    speed: float          # raw bytes per second on one core
    ratio: float          # raw bytes / encoded bytes on compressible data


#: Priors measured on this project's CT data (bench: one core of the 2-core machine).
def _codecs(gzip_level: int) -> list[Codec]:
    codecs = [Codec(Encoding.GZIP, gzip_level, 75e6 if gzip_level <= 1 else 20e6, 2.45)]
    if zstandard is not None:
        codecs += [Codec(Encoding.ZSTD, 1, 320e6, 2.25), Codec(Encoding.ZSTD, 3, 120e6, 2.5)]
    return codecs


class EncodingChooser:
    """Per transfer: which encoding the next bucket should use.

    For each candidate the time to move one raw byte is ``1/speed + 1/(ratio * link)``
    (plain: ``1/link``), where ``link`` is the measured wire rate of one request and
    ``speed`` is shared by the threads on the machine's cores. The smallest wins. Until
    the link is measured it is assumed slow, so the first buckets are compressed.
    """

    #: Assumed wire rate of one request before any measurement (bytes/s).
    INITIAL_LINK = 1e6
    #: Weight of a new measurement in the running averages.
    SMOOTHING = 0.3

    def __init__(self, wanted: str, peer_encodings: frozenset[str], *, gzip_level: int,
                 threads: int, cores: int) -> None:
        self.adaptive = wanted == "gzip" and bool(peer_encodings)
        self._fixed = Encoding.GZIP if wanted == "gzip" else Encoding.NONE
        self._gzip_level = gzip_level
        usable = set(peer_encodings) & set(local_encodings())
        self._codecs = [c for c in _codecs(gzip_level) if c.encoding.value in usable]
        self._cpu_share = min(1.0, cores / max(1, threads))
        self._link = self.INITIAL_LINK
        self._lock = threading.Lock()

    def choose(self, data: bytes | None = None) -> tuple[Encoding, int]:
        """The encoding of the next bucket (``data``: its bytes, when the chooser has them)."""
        if not self.adaptive:
            return self._fixed, self._gzip_level
        if data is not None and not compresses(data):
            return Encoding.NONE, 0
        with self._lock:
            best: tuple[float, Encoding, int] = (1.0 / self._link, Encoding.NONE, 0)
            for codec in self._codecs:
                cost = 1.0 / (codec.speed * self._cpu_share) + 1.0 / (codec.ratio * self._link)
                best = min(best, (cost, codec.encoding, codec.level), key=lambda x: x[0])
        return best[1], best[2]

    def observe_network(self, wire_bytes: int, seconds: float) -> None:
        """One request moved ``wire_bytes`` in ``seconds`` of network time."""
        if wire_bytes < 64 * 1024 or seconds <= 0:
            return                      # too small to say anything about the link
        with self._lock:
            self._link += self.SMOOTHING * (wire_bytes / seconds - self._link)

    def observe_encoding(self, encoding: Encoding, level: int, raw: int, encoded: int,
                         seconds: float) -> None:
        if encoding is Encoding.NONE or raw < 64 * 1024 or encoded <= 0:
            return
        with self._lock:
            for codec in self._codecs:
                if (codec.encoding, codec.level) == (encoding, level):
                    if seconds > 0:
                        observed = raw / seconds / self._cpu_share
                        codec.speed += self.SMOOTHING * (observed - codec.speed)
                    codec.ratio += self.SMOOTHING * (raw / encoded - codec.ratio)

    @property
    def link_rate(self) -> float:
        return self._link
