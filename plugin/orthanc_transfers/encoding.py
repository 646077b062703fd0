"""The encodings of a bucket on the wire: encode, decode strictly, judge a bucket's data.

Original peers know ``gzip`` and ``none``. Between two peers running this plugin (they
announce ``Encodings`` in the lookup answer and in the push creation answer) a transfer
asked with ``Compression: gzip`` may use any encoding both announce, chosen bucket by
bucket (:mod:`.chooser`) and named in the ``X-Transfers-Encoding`` header.

``shuffle-zstd`` and ``shuffle-xz`` compress after a byte shuffle of 16-bit samples (all
low bytes, then all high bytes), as Blosc does: CT and MR pixel data are 16-bit words
whose high bytes vary little, and the compressor finds far more repetition once they are
side by side (``bench.codecs``, the benchmark's study: 3.1x for shuffle-zstd and 3.2x for
shuffle-xz, against 2.5x for gzip-6). Their payload is one byte giving the sample size
(2), then the compressed shuffled bytes. A bucket may start anywhere in a file: where it
starts mid-sample, the first plane holds the high bytes and the second the low bytes,
which compresses just as well (both planes are still clean), so no alignment travels.
Whether the shuffle helps is judged on a sample of each bucket (text, 8-bit and RGB
data do better without it), and so is whether the data compresses at all (JPEG does not).

Every decoder stops one byte past the size it expects, so a small payload cannot make
the receiver allocate what its header claims (a "bomb").
"""

from __future__ import annotations

import enum
import importlib
import io
import lzma
import time
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import IntegrityError, UnsupportedEncoding

zstandard: Any                         # Debian: python3-zstandard; optional
try:
    zstandard = importlib.import_module("zstandard")
except ImportError:                    # pragma: no cover - depends on the machine
    zstandard = None

#: Header naming the encoding of a bucket body (requests and answers).
ENCODING_HEADER = "X-Transfers-Encoding"
#: Header of a chunk answer: CPU seconds the source spent encoding it.
ENCODE_SECONDS_HEADER = "X-Transfers-Encode-Seconds"
#: Header of a chunk answer and of a bucket PUT's answer: seconds the peer spent on the
#: request once it had it (reading, encoding / decoding, writing, hashing). A sender
#: takes them out of the request's time, so that what remains is the link's.
SERVER_SECONDS_HEADER = "X-Transfers-Server-Seconds"


def server_seconds_header(received: float) -> dict[str, str]:
    """The header saying the time spent since ``received`` (a ``perf_counter`` reading)."""
    return {SERVER_SECONDS_HEADER: f"{time.perf_counter() - received:.6f}"}
#: Header of a chunk request: the source may send plain data that does not compress.
ADAPTIVE_HEADER = "X-Transfers-Adaptive"
#: Bytes per sample of the shuffle: CT, MR, CR... store 16-bit words.
SAMPLE_SIZE = 2
#: Memory an xz payload may ask of its decoder (preset 9 needs 65 MiB; we send 0-1).
XZ_MEMORY_LIMIT = 80 * 1024 * 1024


class Encoding(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    SHUFFLE_ZSTD = "shuffle-zstd"
    SHUFFLE_XZ = "shuffle-xz"

    @property
    def mime_type(self) -> str:
        return {Encoding.GZIP: "application/gzip", Encoding.ZSTD: "application/zstd",
                Encoding.XZ: "application/x-xz"}.get(self, "application/octet-stream")

    @property
    def shuffled(self) -> bool:
        return self.value.startswith("shuffle-")

    @property
    def compressor(self) -> Encoding:
        """The compression without the shuffle."""
        return Encoding(self.value.removeprefix("shuffle-"))


def local_encodings() -> tuple[str, ...]:
    """What this plugin can encode and decode, announced to peers."""
    if zstandard is None:
        return ("shuffle-xz", "xz", "gzip", "none")
    return ("shuffle-zstd", "zstd", "shuffle-xz", "xz", "gzip", "none")


def encode(data: bytes, encoding: Encoding, level: int) -> bytes:
    """``level``: zlib's or zstd's level; xz takes it as its preset (at most 9).
    Callers on shared threads take ``Throttles.encoders`` around it."""
    if encoding is Encoding.NONE:
        return data
    compressor = encoding.compressor
    if compressor is Encoding.ZSTD and zstandard is None:
        raise UnsupportedEncoding(encoding.value)
    raw = shuffle(data) if encoding.shuffled else data
    if compressor is Encoding.ZSTD:
        packed = bytes(zstandard.ZstdCompressor(level=level).compress(raw))
    elif compressor is Encoding.XZ:
        packed = lzma.compress(raw, preset=min(level, 9))
    else:
        deflater = zlib.compressobj(level, zlib.DEFLATED, 31)   # one single gzip member
        packed = deflater.compress(raw) + deflater.flush()
    return bytes((SAMPLE_SIZE,)) + packed if encoding.shuffled else packed


def decode(payload: bytes, encoding: Encoding, expected_size: int) -> bytes:
    """Decode and insist on exactly ``expected_size`` bytes (a bomb stops one byte past)."""
    if encoding is Encoding.NONE:
        data = payload
    elif encoding.compressor is Encoding.ZSTD and zstandard is None:
        raise UnsupportedEncoding(encoding.value)
    elif encoding.shuffled:
        if not payload or payload[0] != SAMPLE_SIZE:
            raise IntegrityError(f"Corrupted {encoding.value} payload: its first byte is not "
                                 f"the sample size {SAMPLE_SIZE}")
        data = unshuffle(_DECODERS[encoding.compressor](payload[1:], expected_size))
    else:
        data = _DECODERS[encoding](payload, expected_size)
    if len(data) != expected_size:
        raise IntegrityError(
            f"Bucket has {len(data)} bytes after decoding, expected {expected_size}")
    return data


def shuffle(data: bytes) -> bytes:
    """Low bytes of the 16-bit samples, then their high bytes, then an odd last byte."""
    even = len(data) & ~1
    return data[0:even:2] + data[1:even:2] + data[even:]


def unshuffle(shuffled: bytes) -> bytes:
    half = len(shuffled) // 2
    data = bytearray(len(shuffled))
    data[0:2 * half:2] = shuffled[:half]
    data[1:2 * half:2] = shuffled[half:2 * half]
    data[2 * half:] = shuffled[2 * half:]
    return bytes(data)


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


def _unxz(payload: bytes, expected_size: int) -> bytes:
    inflater = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)
    try:
        data = inflater.decompress(payload, expected_size + 1)
    except (lzma.LZMAError, MemoryError) as e:
        raise IntegrityError(f"Corrupted xz payload: {e}") from e
    if len(data) == expected_size and not inflater.eof:
        raise IntegrityError(f"Xz payload does not end after the expected {expected_size} "
                             "bytes")
    if inflater.unused_data:
        raise IntegrityError("Unexpected data after the xz stream of a bucket")
    return data


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


_DECODERS = {Encoding.GZIP: _gunzip, Encoding.ZSTD: _unzstd, Encoding.XZ: _unxz}

#: Bytes of a bucket tried before compressing it whole.
SAMPLE = 64 * 1024
#: Below this sample ratio, compressing costs more CPU than it saves bytes.
MIN_RATIO = 1.1
#: The shuffle is used when it makes the sample this much smaller than without it.
SHUFFLE_GAIN = 1.03


@dataclass(frozen=True)
class Sample:
    """What a sample from the middle of a bucket says about compressing the bucket."""

    compresses: bool
    shuffle_helps: bool


def sample(data: bytes) -> Sample:
    """Compress 64 KiB from the middle of ``data`` (fast levels) with and without the
    shuffle: about 0.3 ms, against 10 ms or more for a 4 MiB bucket."""
    start = max(0, len(data) // 2 - SAMPLE // 2)
    piece = data[start:start + SAMPLE]
    if not piece:
        return Sample(False, False)
    if zstandard is not None:
        quick = zstandard.ZstdCompressor(level=1).compress
    else:
        def quick(raw: bytes) -> bytes:
            return zlib.compress(raw, 1)
    plain, shuffled = len(quick(piece)), len(quick(shuffle(piece)))
    return Sample(len(piece) >= MIN_RATIO * min(plain, shuffled),
                  plain >= SHUFFLE_GAIN * shuffled)


def adapt(asked: Encoding, data: bytes) -> Encoding:
    """What to send instead of ``asked`` for a receiver of ours that accepts adaptation:
    plain for data that does not compress, no shuffle where the shuffle does not help."""
    if asked is Encoding.NONE:
        return asked
    judged = sample(data)
    if not judged.compresses:
        return Encoding.NONE
    if asked.shuffled and not judged.shuffle_helps:
        return asked.compressor
    return asked
