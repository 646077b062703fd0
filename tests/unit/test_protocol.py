"""Wire formats shared with the original plugin (reference §3.1, §3.5, §3.6, §4, §16.1)."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from typing import Any

import pytest
from orthanc_transfers.encoding import Encoding, local_encodings
from orthanc_transfers.errors import BadRequest, IntegrityError
from orthanc_transfers.protocol import (
    MAX_CHUNK_ARGUMENT,
    Compression,
    InstanceInfo,
    ResourceRef,
    TransferQuery,
    decode_payload,
    encode_payload,
    lookup_answer,
    parse_chunk_request,
    parse_decimal_string,
    parse_md5,
    parse_orthanc_id,
    parse_resources,
    round_kb,
    round_mb,
    slice_concatenation,
    sort_instances,
)

ID = "0a1b2c3d-4e5f6071-8293a4b5-c6d7e8f9-0a1b2c3d"
MD5 = hashlib.md5(b"x").hexdigest()
DATA = bytes(range(256)) * 40 + b"tail"


# -- Compression --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "member"), [("gzip", Compression.GZIP),
                                              ("none", Compression.NONE)])
def test_compression_parse_round_trip(text: str, member: Compression) -> None:
    assert Compression.parse(text) is member
    assert member.value == text


@pytest.mark.parametrize("value", ["None", "GZIP", "Gzip", "", "deflate", None, 1, True])
def test_compression_parse_rejects(value: Any) -> None:
    with pytest.raises(BadRequest, match="Compression"):
        Compression.parse(value)


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("data", [b"", b"a", DATA])
def test_payload_round_trip(compression: Compression, data: bytes) -> None:
    payload = encode_payload(data, compression)
    assert decode_payload(payload, compression, len(data)) == data


def test_gzip_payload_is_one_single_member() -> None:
    payload = encode_payload(DATA, Compression.GZIP)
    assert payload[:2] == b"\x1f\x8b"
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(payload) == DATA
    assert inflater.eof and inflater.unused_data == b""
    assert gzip.decompress(payload) == DATA
    # ISIZE trailer: what the original receiver sizes its buffer from (§4.3).
    assert int.from_bytes(payload[-4:], "little") == len(DATA)


def test_gzip_payload_compresses() -> None:
    assert len(encode_payload(b"\0" * 100_000, Compression.GZIP)) < 1000


GZ = encode_payload(DATA, Compression.GZIP)
BAD_PAYLOADS = {
    "plain too short": (DATA[:-1], Compression.NONE),
    "plain too long": (DATA + b"!", Compression.NONE),
    "gzip of fewer bytes": (encode_payload(DATA[:-1], Compression.GZIP), Compression.GZIP),
    "gzip of more bytes": (encode_payload(DATA + b"!", Compression.GZIP), Compression.GZIP),
    "truncated trailer": (GZ[:-4], Compression.GZIP),
    "truncated deflate": (GZ[: len(GZ) // 2], Compression.GZIP),
    "not gzip": (DATA, Compression.GZIP),
    "trailing garbage": (GZ + b"garbage", Compression.GZIP),
    "second member": (GZ + gzip.compress(b"more"), Compression.GZIP),
}


@pytest.mark.parametrize(("payload", "compression"), BAD_PAYLOADS.values(),
                         ids=BAD_PAYLOADS.keys())
def test_decode_payload_rejects(payload: bytes, compression: Compression) -> None:
    with pytest.raises(IntegrityError):
        decode_payload(payload, compression, len(DATA))


def test_decode_payload_stops_inflating_a_gzip_bomb() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    payload = b"".join(bomb.compress(chunk) for _ in range(100)) + bomb.flush()
    assert len(payload) < 200_000
    with pytest.raises(IntegrityError) as caught:
        decode_payload(payload, Compression.GZIP, 1000)
    # Only one byte past the expected size was inflated, not 100 MB.
    assert "1001" in str(caught.value)


# -- §3.6 slicing ---------------------------------------------------------------------------

SIZES = [10, 20, 30]


@pytest.mark.parametrize(("offset", "size", "pieces"), [
    (0, 0, [(0, 0, 10), (1, 0, 20), (2, 0, 30)]),         # size 0 = to the end
    (0, 60, [(0, 0, 10), (1, 0, 20), (2, 0, 30)]),
    (0, 10, [(0, 0, 10)]),
    (5, 5, [(0, 5, 10)]),
    (5, 32, [(0, 5, 10), (1, 0, 20), (2, 0, 7)]),         # crossing boundaries
    (10, 20, [(1, 0, 20)]),                               # skips a whole instance
    (12, 3, [(1, 2, 5)]),                                 # offset inside the first kept
    (35, 0, [(2, 5, 30)]),
    (55, 100, [(2, 25, 30)]),                             # past the end: shorter
    (60, 0, []),                                          # offset past everything
    (1000, 5, []),
])
def test_slice_concatenation(offset: int, size: int, pieces: list[tuple[int, int, int]]) -> None:
    assert slice_concatenation(SIZES, offset, size) == pieces
    whole = b"".join(bytes([n]) * length for n, length in enumerate(SIZES))
    sliced = b"".join(whole[sum(SIZES[:i]) + s: sum(SIZES[:i]) + e] for i, s, e in pieces)
    assert sliced == whole[offset: offset + size if size else None]


def test_slice_concatenation_skips_empty_instances() -> None:
    assert slice_concatenation([0, 4, 0, 4], 2, 4) == [(1, 2, 4), (3, 0, 2)]


# -- chunk requests -------------------------------------------------------------------------

def test_parse_chunk_request() -> None:
    request = parse_chunk_request(f"{ID}.d1.d2", {"offset": "5", "size": "32",
                                                 "compression": "gzip", "other": "x"})
    assert request.instance_ids == (ID, "d1", "d2")
    assert (request.offset, request.size) == (5, 32)
    assert request.encoding is Encoding.GZIP and request.level is None


def test_parse_chunk_request_extensions_of_our_receivers() -> None:
    request = parse_chunk_request("d1", {"compression": "none", "level": "3"})
    assert (request.encoding, request.level) == (Encoding.NONE, 3)
    assert parse_chunk_request("d1", {"compression": "xz", "level": "0"}).level == 0
    with pytest.raises(BadRequest):
        parse_chunk_request("d1", {"level": "20"})
    with pytest.raises(BadRequest):
        parse_chunk_request("d1", {"level": "x"})


def test_parse_chunk_request_defaults() -> None:
    request = parse_chunk_request("d1", {})
    assert (request.offset, request.size, request.encoding) == (0, 0, Encoding.NONE)


def test_parse_chunk_request_accepts_largest_argument() -> None:
    assert parse_chunk_request("d1", {"offset": str(MAX_CHUNK_ARGUMENT)}).offset == 2**31 - 1


@pytest.mark.parametrize(("ids", "args"), [
    ("d1", {"offset": "-1"}),
    ("d1", {"size": "-5"}),
    ("d1", {"offset": "1.5"}),
    ("d1", {"offset": "abc"}),
    ("d1", {"size": ""}),
    ("d1", {"size": "²"}),
    ("d1", {"offset": str(2**31)}),
    ("d1", {"size": " 5"}),
    ("d1", {"compression": "GZIP"}),
    ("d1", {"compression": "None"}),
    ("../x", {}),
    ("ABC", {}),
    ("d1..d2", {}),
    ("", {}),
    ("d1.d2/..", {}),
])
def test_parse_chunk_request_rejects(ids: str, args: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        parse_chunk_request(ids, args)


# -- field parsers ----------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc\n", "ABC", "a b", "", "x", "a/b", "../a", 12, None])
def test_parse_orthanc_id_rejects(value: Any) -> None:
    with pytest.raises(BadRequest, match="field"):
        parse_orthanc_id(value, "field")


@pytest.mark.parametrize("value", [MD5 + "\n", MD5.upper(), MD5[:-1], None, 5])
def test_parse_md5_rejects(value: Any) -> None:
    with pytest.raises(BadRequest):
        parse_md5(value, "MD5")


@pytest.mark.parametrize("value", ["12\n", "-1", "1.0", "", " 1", 12, None, "1e3"])
def test_parse_decimal_string_rejects(value: Any) -> None:
    with pytest.raises(BadRequest):
        parse_decimal_string(value, "Size")


def test_parse_decimal_string() -> None:
    assert parse_decimal_string("0", "Size") == 0
    assert parse_decimal_string("4294967296", "Size") == 2**32


# -- Resources -------------------------------------------------------------------------------

@pytest.mark.parametrize(("level", "folder"), [
    ("Patient", "patients"), ("patients", "patients"), ("PATIENT", "patients"),
    ("Study", "studies"), ("Studies", "studies"), ("series", "series"),
    ("Instance", "instances"), ("Instances", "instances"), ("Image", "instances"),
    ("images", "instances"),
])
def test_parse_resources_levels(level: str, folder: str) -> None:
    assert parse_resources([{"Level": level, "ID": ID}]) == [ResourceRef(folder, ID)]


@pytest.mark.parametrize("value", [
    [], {}, None, "Study", [{"Level": "Visit", "ID": ID}], [{"Level": None, "ID": ID}],
    [{"ID": ID}], [{"Level": "Study", "ID": "../x"}], [{"Level": "Study"}], [ID],
])
def test_parse_resources_rejects(value: Any) -> None:
    with pytest.raises(BadRequest, match="Resources"):
        parse_resources(value)


def test_resource_ref_to_wire() -> None:
    assert ResourceRef("studies", ID).to_wire() == {"Level": "Study", "ID": ID}


# -- lookup and conversions ------------------------------------------------------------------

def test_instance_info_wire_round_trip() -> None:
    item = InstanceInfo(ID, 1234, MD5)
    assert item.to_wire() == {"ID": ID, "Size": "1234", "MD5": MD5}
    assert InstanceInfo.from_wire(item.to_wire()) == item


def test_sort_instances_deduplicates_and_sorts() -> None:
    items = [InstanceInfo("b", 1, MD5), InstanceInfo("a", 2, MD5), InstanceInfo("b", 1, MD5)]
    assert [i.id for i in sort_instances(items)] == ["a", "b"]


def test_lookup_answer_shape() -> None:
    instances = [InstanceInfo("a1", 1024 * 1024, MD5), InstanceInfo("b2", 600 * 1024, MD5)]
    answer = lookup_answer(instances, "origin")
    assert answer == {
        "Instances": [{"ID": "a1", "Size": "1048576", "MD5": MD5},
                      {"ID": "b2", "Size": "614400", "MD5": MD5}],
        "Originator": "origin",
        "CountInstances": 2,
        "TotalSize": "1662976",
        "TotalSizeMB": 2,
        "Encodings": list(local_encodings()),    # extension, ignored by original peers
    }


def test_lookup_answer_empty() -> None:
    answer = lookup_answer([], "origin")
    assert (answer["Instances"], answer["TotalSize"], answer["TotalSizeMB"]) == ([], "0", 0)


@pytest.mark.parametrize(("size", "kb"), [(2048, 2), (1000, 1), (500, 0), (0, 0)])
def test_round_kb(size: int, kb: int) -> None:
    assert round_kb(size) == kb
    assert round_mb(size * 1024) == kb


# -- TransferQuery ---------------------------------------------------------------------------

def query_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Resources": [{"Level": "Study", "ID": ID}], "Peer": "remote",
                            "Compression": "gzip"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def test_transfer_query_from_wire_defaults() -> None:
    query = TransferQuery.from_wire(query_body())
    assert query.resources == (ResourceRef("studies", ID),)
    assert query.raw_resources == ({"Level": "Study", "ID": ID},)
    assert (query.peer, query.compression, query.priority) == ("remote", Compression.GZIP, 0)
    assert query.originator is None and query.sender_transfer_id is None


def test_transfer_query_import_during_transfer_is_forwarded_only_when_given() -> None:
    assert TransferQuery.from_wire(query_body()).import_during_transfer is None
    assert "ImportDuringTransfer" not in TransferQuery.from_wire(query_body()).to_wire()
    for value in (True, False):
        query = TransferQuery.from_wire(query_body(ImportDuringTransfer=value))
        assert query.import_during_transfer is value
        assert query.to_wire()["ImportDuringTransfer"] is value


def test_transfer_query_skip_stored_instances_is_forwarded_only_when_given() -> None:
    assert "SkipStoredInstances" not in TransferQuery.from_wire(query_body()).to_wire()
    for value in (True, False):
        query = TransferQuery.from_wire(query_body(SkipStoredInstances=value))
        assert query.skip_stored_instances is value
        assert query.to_wire()["SkipStoredInstances"] is value


def test_transfer_query_round_trip() -> None:
    body = query_body(Priority=-10, Originator="o-1", SenderTransferID="t-1",
                      Resources=[{"Level": "series", "ID": ID}])
    query = TransferQuery.from_wire(body)
    assert query.to_wire() == body
    assert TransferQuery.from_wire(query.to_wire()) == query


BAD_QUERIES = {
    "not an object": [query_body()],
    "missing Peer": query_body(Peer=...),
    "empty Peer": query_body(Peer=""),
    "Peer not a string": query_body(Peer=3),
    "missing Resources": query_body(Resources=...),
    "Resources not a list": query_body(Resources={"Level": "Study", "ID": ID}),
    "missing Compression": query_body(Compression=...),
    "bad Compression": query_body(Compression="None"),
    "Priority as string": query_body(Priority="1"),
    "Priority as float": query_body(Priority=1.5),
    "Priority as bool": query_body(Priority=True),
    "Priority null": query_body(Priority=None),
    "Originator not a string": query_body(Originator=5),
    "Originator null": query_body(Originator=None),
    "SenderTransferID not a string": query_body(SenderTransferID=["x"]),
    "ImportDuringTransfer not a boolean": query_body(ImportDuringTransfer="yes"),
    "SkipStoredInstances not a boolean": query_body(SkipStoredInstances=1),
    "ImportDuringTransfer null": query_body(ImportDuringTransfer=None),
}


@pytest.mark.parametrize("body", BAD_QUERIES.values(), ids=BAD_QUERIES.keys())
def test_transfer_query_rejects(body: Any) -> None:
    with pytest.raises(BadRequest):
        TransferQuery.from_wire(body)
