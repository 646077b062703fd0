"""Hostile input for the plugin's routes: hypothesis strategies and payload encoders.

Random bytes rarely get past a route's first check, so most strategies start from
something valid and break one thing: :func:`near_valid` changes one field of a JSON
template, :func:`near_valid_query` one query argument, and :func:`route_specs` gives a
near-valid template for every route. The hostile lists gather what parsers get wrong
(path traversal, NUL bytes, non-ASCII digits, integers past 64 bits, huge strings).
The encoders build bucket payloads, decompression bombs included, and :func:`decode`
checks chunk answers with decoders independent of the plugin where one exists.
"""

from __future__ import annotations

import copy
import json
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st

from .calls import q

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
#: Default ``Transfers.MaxInstanceSize`` (4096 MiB).
MAX_INSTANCE_SIZE = 4096 * MiB
MAX_CHUNK_ARGUMENT = 2**31 - 1
ENCODING_HEADER = "X-Transfers-Encoding"
#: Every encoding a plugin of ours may announce.
OUR_ENCODINGS = ("none", "gzip", "zstd", "xz", "shuffle-zstd", "shuffle-xz")

# -- JSON bodies and query strings ------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
HOSTILE_TEXT: list[str] = [
    "", " ", "..", "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e", "%2e%2e%2f",
    "..\\..\\windows\\win.ini", "/etc/passwd", "\x00", "a\x00b", "\r\n", "\t1", "é",
    "ünïcødé", "\u202e\u0663", "²", "\uff11", "٣", "\U0001f4a9", "-1", "+1", " 1", "1 ", "0x10",
    "1e3", "1.5", "NaN", "Infinity", "null", "true", "0" * 40, "2147483647", "2147483648",
    "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "-9223372036854775809", "99999999999999999999", "9" * 5000, "x" * 5000, "x" * 100_000,
    "<script>alert(1)</script>", "'; DROP TABLE resources; --", "{}", "[]", "gzip ",
    "GZIP", "zstd", "none", "Study", "Instance",
]
#: Short enough to be a path segment or a query value (Orthanc caps a request line).
HOSTILE_SEGMENTS = [t for t in HOSTILE_TEXT if len(t) <= 5000]
HOSTILE_NUMBERS: list[Any] = [
    0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30,
    -(10**30), 10**4000, 1.5, -0.0, 1e308, float("inf"), float("-inf"), float("nan"),
]
HOSTILE_VALUES: list[Any] = [*HOSTILE_TEXT, *HOSTILE_NUMBERS, None, True, False, [], {},
                             [None], {"": None}, [[[[[]]]]]]
KEYS = ["Resources", "Peer", "Compression", "Priority", "SenderTransferID", "Originator",
        "Level", "ID", "Instances", "Buckets", "Size", "MD5", "Offset", "__proto__"]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.integers(min_value=-(2**80), max_value=2**80), st.floats(),
                         TEXT, st.sampled_from(HOSTILE_VALUES))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), TEXT), children, max_size=4)),
    max_leaves=12)
MISSING = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position of a JSON document (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _mutate(template: Any, path: tuple[Any, ...], value: Any) -> Any:
    document = copy.deepcopy(template)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if value is MISSING:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def near_valid(template: Any) -> st.SearchStrategy[Any]:
    """The template with one field removed, or replaced by a hostile or random value."""
    positions = _paths(template)
    replacement = st.one_of(st.sampled_from(HOSTILE_VALUES), json_scalars, json_values,
                            st.just(MISSING))
    return st.tuples(st.sampled_from(positions), replacement).map(
        lambda change: _mutate(template, *change))


def dumps(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, drawn with the given weights."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy)


def bodies(template: Any | None) -> st.SearchStrategy[bytes]:
    """Request bodies: junk, any JSON, and (given a template) mostly near-valid JSON."""
    choices: list[tuple[int, st.SearchStrategy[bytes]]] = [
        (2, st.binary(max_size=300)),
        (2, st.tuples(json_values, st.booleans()).map(lambda v: dumps(*v))),
        (1, st.sampled_from([b"", b"{", b"[", b"\xff\xfe", b"\x00", b"null", b"[]", b"{}",
                             b"NaN", b"1e999999", b"9" * 5000, b'"\\ud800"',
                             b'{"a":1,"a":2}']))]
    if template is not None:
        choices += [(4, near_valid(template).map(dumps)), (1, st.just(dumps(template)))]
    return weighted(*choices)


def query_args(keys: list[str]) -> st.SearchStrategy[dict[str, str]]:
    values = st.one_of(st.sampled_from(HOSTILE_SEGMENTS), st.integers().map(str), TEXT)
    return st.dictionaries(st.one_of(st.sampled_from(keys), TEXT), values, max_size=3)


def near_valid_query(valid: dict[str, str]) -> st.SearchStrategy[dict[str, str]]:
    """Valid arguments with one of them replaced by a hostile or random value."""
    values = st.one_of(st.sampled_from(HOSTILE_SEGMENTS), st.integers().map(str), TEXT)
    return st.tuples(st.sampled_from(sorted(valid)), values).map(
        lambda change: {**valid, change[0]: change[1]})


def encode_query(args: dict[str, str]) -> str:
    return "?" + "&".join(f"{q(k)}={q(v)}" for k, v in args.items()) if args else ""


# -- routes, path segments and numbers --------------------------------------------------

NONEXISTENT = "0123abcd-0123abcd-0123abcd-0123abcd-0123abcd"
VALID_CHUNK_ARGS = {"offset": "0", "size": "100", "compression": "none", "level": "1"}


@dataclass(frozen=True)
class RouteSpec:
    method: str
    template: str                        # {placeholders} are drawn per example
    body: Any | None = None              # near-valid JSON template of the body
    binary_ok: bool = False              # 2xx answers need not be JSON


def route_specs(instance_id: str) -> list[RouteSpec]:
    """Every route of the plugin; ``instance_id`` is a real instance, for the lookup."""
    transfer = {"Resources": [{"Level": "Study", "ID": NONEXISTENT}], "Peer": "b",
                "Compression": "gzip", "Priority": 0, "SenderTransferID": "fuzz",
                "Originator": "fuzz"}
    push = {"Instances": [{"ID": "0123abcd", "Size": "16", "MD5": "0" * 32}],
            "Buckets": [[{"ID": "0123abcd", "Offset": "0", "Size": "16"}]],
            "Compression": "none"}
    return [
        RouteSpec("POST", "/transfers/send", transfer),
        RouteSpec("POST", "/transfers/pull", transfer),
        RouteSpec("POST", "/transfers/lookup", [{"Level": "Instance", "ID": instance_id}]),
        RouteSpec("GET", "/transfers/chunks/{ids}", binary_ok=True),
        RouteSpec("GET", "/transfers/peers"),
        RouteSpec("POST", "/transfers/push", push),
        RouteSpec("GET", "/transfers/push/{tx}"),
        RouteSpec("DELETE", "/transfers/push/{fresh_tx}"),
        RouteSpec("PUT", "/transfers/push/{tx}/{n}"),
        RouteSpec("POST", "/transfers/push/{tx}/commit"),
        RouteSpec("GET", "/jobs"),
        RouteSpec("GET", "/jobs/{job}"),
        RouteSpec("POST", "/jobs/{job}/{action}"),
    ]


def segments() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_SEGMENTS), TEXT, st.uuids().map(str),
                     st.text("0123456789abcdef-.", min_size=1, max_size=60))


def plugin_reaches(segment: str) -> bool:
    """Whether Orthanc hands this decoded path segment to the route as it is."""
    return "/" not in segment and "\\" not in segment and "\x00" not in segment \
        and segment.strip(". ") != ""


def unknown_ids() -> st.SearchStrategy[str]:
    """Escaped path segments: IDs of every shape that no job or transaction has."""
    texts = st.one_of(
        st.uuids().map(str),
        st.text("0123456789abcdef-", min_size=1, max_size=80),
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
        st.sampled_from([*HOSTILE_SEGMENTS, "?", "?expand", "a?b", "#", "a#b", "%", "%zz",
                         "%2e%2e", "%00", "%2F", ";", "*", "~", "a b"]),
    ).filter(plugin_reaches).map(q)
    # Bytes that are not UTF-8 (e.g. %FF): a path Orthanc decodes but Python cannot.
    raw = st.binary(min_size=1, max_size=6).filter(
        lambda b: plugin_reaches(b.decode("latin-1"))).map(
        lambda b: urllib.parse.quote_from_bytes(b, safe=""))
    return st.one_of(texts, raw)


def bad_numbers() -> st.SearchStrategy[str]:
    """Query values that are not a plain integer in ``0..MAX_CHUNK_ARGUMENT``."""
    return st.one_of(
        st.integers(MAX_CHUNK_ARGUMENT + 1, 2**64 + 10).map(str),
        st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64]).map(str),
        st.integers(-(2**63) - 10, -1).map(str),
        st.integers(0, MAX_CHUNK_ARGUMENT).flatmap(lambda n: st.sampled_from([
            f"+{n}", f" {n}", f"{n} ", f"\t{n}", f"0x{n:x}", f"{n}.0", f"{n}e0", f"-{n}",
            f"{n}\x00", f"{n:_}" if n >= 1000 else f"{n}a"])),
        st.sampled_from(["", "-0", "٣", "²", "\uff11", "\U0001d7d7", "9" * 5000,
                         "0" * 5000 + "1", "nan", "inf", "1_000", "0b1", "0o7", "١٢", "½"]),
    )


#: Instance sizes a push creation may declare, around ``MAX_INSTANCE_SIZE`` and 64 bits.
declared_sizes = st.one_of(
    st.integers(0, MAX_INSTANCE_SIZE),
    st.sampled_from([0, 1, MAX_INSTANCE_SIZE - 1, MAX_INSTANCE_SIZE, MAX_INSTANCE_SIZE + 1,
                     2**32 + 1, 2**63 - 1, 2**63, 2**64, 10**19 - 1]),
    st.integers(MAX_INSTANCE_SIZE + 1, 10**19 - 1),
)

# -- payloads ------------------------------------------------------------------------------
# zstandard is optional on both sides: without it, a test that needs it is skipped.


def encode(data: bytes, encoding: str | None, compression: str) -> bytes:
    """``data`` as a bucket PUT sends it: in ``encoding`` (the header), else in the
    transaction's ``compression``."""
    if (encoding or compression) == "gzip":
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
        return compressor.compress(data) + compressor.flush()
    if encoding == "zstd":
        zstandard = pytest.importorskip("zstandard")
        encoded: bytes = zstandard.ZstdCompressor(level=1).compress(data)
        return encoded
    return data


def decode(payload: bytes, encoding: str, expected_size: int) -> bytes:
    """Independent decoders for what the original knows; ours for our extensions."""
    if encoding == "gzip":
        return zlib.decompress(payload, 31)
    if encoding == "zstd":
        zstandard = pytest.importorskip("zstandard")
        data: bytes = zstandard.ZstdDecompressor().decompress(payload, max_output_size=64 * MiB)
        return data
    if encoding == "none":
        return payload
    # Imported only when needed: hypothesis mixes the literals of every non-test module
    # loaded into what it draws, so loading the plugin up front would change the
    # examples of every property.
    from orthanc_transfers.encoding import Encoding
    from orthanc_transfers.encoding import decode as plugin_decode
    from orthanc_transfers.errors import IntegrityError
    try:
        return plugin_decode(payload, Encoding(encoding), expected_size)
    except IntegrityError as e:
        raise ValueError(str(e)) from e


def gzip_zeros(count: int) -> bytes:
    """``count`` zero bytes (a multiple of 1 MiB) as one gzip member: a bomb."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * MiB
    parts = [compressor.compress(block) for _ in range(count // MiB)]
    return b"".join(parts) + compressor.flush()


def zstd_zeros(count: int, pledge: bool) -> bytes:
    """``count`` zero bytes (a multiple of 1 MiB) as a zstd frame: a bomb, whose size is
    in the frame header if ``pledge``, so that a decoder may trust it up front."""
    zstandard = pytest.importorskip("zstandard")
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=pledge)
    stream = compressor.compressobj(size=count if pledge else -1)
    block = b"\0" * MiB
    parts = [stream.compress(block) for _ in range(count // MiB)]
    data: bytes = b"".join(parts) + stream.flush()
    return data


def zstd_forged_content_size(content_size: int) -> bytes:
    """A tiny zstd frame whose header claims ``content_size`` bytes."""
    zstandard = pytest.importorskip("zstandard")
    frame: bytes = zstandard.ZstdCompressor(write_content_size=True).compress(b"x" * 10)
    assert frame[4] == 0x20                   # single segment, 1-byte content size
    return frame[:4] + bytes([0xE0]) + content_size.to_bytes(8, "little") + frame[6:]
