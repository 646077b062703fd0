"""Speed and ratio of the bucket codecs on the benchmark study: ``python3 -m bench.codecs``.

The study is cut into buckets of ``--bucket-kb`` KiB (as the plugin sends them) and each
codec compresses and decompresses every bucket on one thread. Speeds are raw MB per CPU
second of this process (``time.process_time``), so they hold even on a busy machine. The
last columns give the cores a sender needs to keep a link full: link rate x ratio / speed.
``shuffle-*`` rows include the byte shuffle (and unshuffle) of the plugin's encodings.
"""

from __future__ import annotations

import argparse
import lzma
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .study import SIZES, build_study

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugin"))
# The plugin's own shuffle, so that the figures are those of the code that runs.
from orthanc_transfers.encoding import shuffle, unshuffle

LINKS_MBIT = (20, 100, 1000)

Codec = tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]


def _gzip(level: int) -> Codec:
    def compress(data: bytes) -> bytes:
        c = zlib.compressobj(level, zlib.DEFLATED, 31)
        return c.compress(data) + c.flush()
    return f"gzip-{level}", compress, lambda d: zlib.decompress(d, 31)


def _shuffled(codec: Codec) -> Codec:
    """The codec after the plugin's own byte shuffle, timed together."""
    name, compress, decompress = codec
    return (f"shuffle-{name}", lambda d: compress(shuffle(d)),
            lambda d: unshuffle(decompress(d)))


def _xz(preset: int) -> Codec:
    return f"xz-{preset}", lambda d: lzma.compress(d, preset=preset), lzma.decompress


def codecs() -> list[Codec]:
    result = [_gzip(level) for level in (1, 3, 6, 9)]
    result += [codec for preset in (0, 1) for codec in (_xz(preset), _shuffled(_xz(preset)))]
    try:
        import zstandard
    except ImportError:
        return result
    zstd: Any = zstandard
    for level in (1, 3, 9):
        compressor, decompressor = zstd.ZstdCompressor(level=level), zstd.ZstdDecompressor()
        plain = (f"zstd-{level}", compressor.compress, decompressor.decompress)
        result += [plain, _shuffled(plain)]
    return result


def _cpu(action: Callable[[bytes], bytes], items: list[bytes]) -> tuple[float, list[bytes]]:
    """CPU seconds to apply ``action`` to every item, and the results."""
    started = time.process_time()
    results = [action(item) for item in items]
    return time.process_time() - started, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.codecs", description=__doc__)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--bucket-kb", type=int, default=4096)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    study = build_study(*SIZES[args.size], label=args.size)
    blob = b"".join(study.files)
    step = args.bucket_kb * 1024
    buckets = [blob[i:i + step] for i in range(0, len(blob), step)]
    print(f"{study.describe()}; {len(buckets)} buckets of {args.bucket_kb} KiB\n")
    links = " | ".join(f"cores for {m} Mbit/s" for m in LINKS_MBIT)
    print(f"| codec | ratio | compress MB/s/core | decompress MB/s/core | {links} |")
    print("|" + "---|" * (4 + len(LINKS_MBIT)))
    for name, compress, decompress in codecs():
        seconds, packed = _cpu(compress, buckets)
        back_seconds, _ = _cpu(decompress, packed)
        ratio = len(blob) / sum(len(p) for p in packed)
        speed, back = len(blob) / 1e6 / seconds, len(blob) / 1e6 / back_seconds
        cores = " | ".join(f"{m / 8 * ratio / speed:.2f}" for m in LINKS_MBIT)
        print(f"| {name} | {ratio:.2f} | {speed:.0f} | {back:.0f} | {cores} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
