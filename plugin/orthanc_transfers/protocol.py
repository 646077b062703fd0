"""The wire format shared with the original C++ plugin (reference §3-§4).

What lives here: instance descriptors, resource lists, compression of bucket payloads,
the slicing rule of ``/transfers/chunks``, pull URIs, and the bodies of lookup and push
creation, each with a strict parser that raises :class:`BadRequest` naming the field.
Sizes and offsets travel as JSON *strings*; MD5s as 32 lowercase hex digits.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .encoding import Encoding, decode, encode, local_encodings
from .errors import BadRequest, PeerProtocolError

#: Orthanc identifiers are SHA-1 based: hex digits and dashes (e.g. 8-8-8-8-8).
_ORTHANC_ID = re.compile(r"[0-9a-f]{1,64}(-[0-9a-f]{1,64}){0,8}")
_MD5 = re.compile(r"[0-9a-f]{32}")
_DECIMAL = re.compile(r"[0-9]{1,19}")
_HEADER_VALUE = re.compile(r"[!-~][ -~]{0,255}")

#: Levels accepted in ``Resources`` (case-insensitive), mapped to Orthanc's REST folder.
LEVELS = {
    "patient": "patients", "patients": "patients",
    "study": "studies", "studies": "studies",
    "series": "series",
    "instance": "instances", "instances": "instances", "image": "instances", "images": "instances",
}
#: zlib level of gzip payloads. The original uses 6 (reference §4.3); the level is not
#: part of the wire format, and on CT data level 1 gives 97 % of level 6's reduction
#: at 5 times its speed (bench: ratio 2.47 vs 2.55, 83 vs 14 MB/s on one core).
GZIP_LEVEL = 1
#: Largest value of ``offset``/``size`` in a chunk request (a signed 32-bit integer).
MAX_CHUNK_ARGUMENT = 2**31 - 1
#: Ours, on a push commit: seconds the receiver may wait for buckets still in flight.
COMMIT_WAIT_HEADER = "X-Transfers-Commit-Wait"
#: The longest such wait (seconds): what a receiver grants at most, and what a sender
#: asks for when Orthanc's HttpTimeout is 0 (no timeout).
MAX_COMMIT_WAIT = 600.0


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"

    @classmethod
    def parse(cls, value: Any, field: str = "Compression") -> Compression:
        """Exactly ``"gzip"`` or ``"none"``, case-sensitive like the original."""
        for member in cls:
            if value == member.value:
                return member
        raise BadRequest(f"'{field}' must be \"gzip\" or \"none\", got {value!r}")

    @property
    def mime_type(self) -> str:
        return "application/gzip" if self is Compression.GZIP else "application/octet-stream"


def encode_payload(data: bytes, compression: Compression, level: int = GZIP_LEVEL) -> bytes:
    """The bytes of a bucket as sent: plain, or one single gzip member (RFC 1952)."""
    return encode(data, Encoding(compression.value), level)


def decode_payload(payload: bytes, compression: Compression, expected_size: int) -> bytes:
    """Inflate if needed and insist on exactly ``expected_size`` bytes (bomb-safe)."""
    return decode(payload, Encoding(compression.value), expected_size)


@dataclass(frozen=True)
class InstanceInfo:
    """An instance descriptor: Orthanc ID, file size in bytes, MD5 of the file."""

    id: str
    size: int
    md5: str

    def to_wire(self) -> dict[str, str]:
        return {"ID": self.id, "Size": str(self.size), "MD5": self.md5}

    @classmethod
    def from_wire(cls, item: Any, where: str = "Instances") -> InstanceInfo:
        if not isinstance(item, dict):
            raise BadRequest(f"each item of '{where}' must be an object with ID, Size and MD5")
        return cls(id=parse_orthanc_id(item.get("ID"), f"{where}[].ID"),
                   size=parse_decimal_string(item.get("Size"), f"{where}[].Size"),
                   md5=parse_md5(item.get("MD5"), f"{where}[].MD5"))


@dataclass(frozen=True)
class ResourceRef:
    """One ``{"Level": ..., "ID": ...}`` item of a transfer query."""

    level: str           # the REST folder: patients, studies, series or instances
    id: str

    def to_wire(self) -> dict[str, str]:
        return {"Level": _WIRE_LEVEL[self.level], "ID": self.id}


_WIRE_LEVEL = {"patients": "Patient", "studies": "Study", "series": "Series",
               "instances": "Instance"}


def parse_orthanc_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _ORTHANC_ID.fullmatch(value):
        raise BadRequest(f"'{field}' must be an Orthanc identifier (hex digits and dashes), "
                         f"got {value!r}")
    return value


def parse_md5(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _MD5.fullmatch(value):
        raise BadRequest(f"'{field}' must be 32 lowercase hexadecimal digits, got {value!r}")
    return value


def parse_decimal_string(value: Any, field: str) -> int:
    """A non-negative integer written as a JSON string, as the original sends sizes."""
    if not isinstance(value, str) or not _DECIMAL.fullmatch(value):
        raise BadRequest(f"'{field}' must be a string holding a non-negative integer, "
                         f"got {value!r}")
    return int(value)


def parse_optional_boolean(body: dict[str, Any], field: str) -> bool | None:
    """An optional true/false field of a JSON body: None when absent, 400 otherwise."""
    value = body.get(field)
    if field in body and not isinstance(value, bool):
        raise BadRequest(f"'{field}' must be true or false, got {value!r}")
    return value


def parse_optional_seconds(body: dict[str, Any], field: str) -> float | None:
    """An optional duration field (seconds, a number ≥ 0): None when absent, 400 otherwise."""
    value = body.get(field)
    if field not in body:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value < float("inf"):
        raise BadRequest(f"'{field}' must be a number of seconds (0 or more), got {value!r}")
    return float(value)


def parse_resources(value: Any, field: str = "Resources") -> list[ResourceRef]:
    """A non-empty list of ``{"Level", "ID"}``; levels as Orthanc names them."""
    if not isinstance(value, list):
        raise BadRequest(f"'{field}' must be a JSON array of {{\"Level\", \"ID\"}} objects")
    if not value:
        raise BadRequest(f"'{field}' must not be empty")
    resources = []
    for item in value:
        if not isinstance(item, dict):
            raise BadRequest(f"each item of '{field}' must be an object with Level and ID")
        level = item.get("Level")
        if not isinstance(level, str) or level.lower() not in LEVELS:
            raise BadRequest(f"'{field}[].Level' must be Patient, Study, Series or Instance, "
                             f"got {level!r}")
        resources.append(ResourceRef(LEVELS[level.lower()],
                                     parse_orthanc_id(item.get("ID"), f"{field}[].ID")))
    return resources


def sort_instances(instances: Iterable[InstanceInfo]) -> list[InstanceInfo]:
    """De-duplicated and sorted by ID (byte order), as the original lists them."""
    unique = {info.id: info for info in instances}
    return [unique[key] for key in sorted(unique)]


def lookup_answer(instances: Sequence[InstanceInfo], originator: str) -> dict[str, Any]:
    """The body of ``POST /transfers/lookup`` (reference §3.5)."""
    total = sum(info.size for info in instances)
    return {
        "Instances": [info.to_wire() for info in instances],
        "Originator": originator,
        "CountInstances": len(instances),
        "TotalSize": str(total),
        "TotalSizeMB": round_mb(total),
        # Extension: what this plugin decodes, so that a receiver of ours may adapt.
        "Encodings": list(local_encodings()),
    }


def round_mb(size: int) -> int:
    """Bytes to MiB, rounded to nearest (reference §16.1: conversions round)."""
    return (size + 512 * 1024) // (1024 * 1024)


def round_kb(size: int) -> int:
    return (size + 512) // 1024


@dataclass(frozen=True)
class ChunkRequest:
    """A parsed ``GET /transfers/chunks/<ids>?offset=&size=&compression=``."""

    instance_ids: tuple[str, ...]
    offset: int
    size: int            # 0 = to the end of the last instance
    encoding: Encoding   # "gzip"/"none" from any receiver; "zstd" from ours only
    level: int | None = None


def parse_chunk_request(ids_path: str, args: dict[str, str]) -> ChunkRequest:
    ids = tuple(ids_path.split("."))
    for instance_id in ids:
        parse_orthanc_id(instance_id, "instance ID in the chunk path")
    return ChunkRequest(
        instance_ids=ids,
        offset=_chunk_argument(args, "offset"),
        size=_chunk_argument(args, "size"),
        encoding=_chunk_encoding(args.get("compression", "none")),
        level=_chunk_level(args.get("level")),
    )


def _chunk_encoding(value: str) -> Encoding:
    if value not in local_encodings():
        raise BadRequest(f"'compression' must be one of {', '.join(local_encodings())}, "
                         f"got {value!r}")
    return Encoding(value)


def _chunk_level(value: str | None) -> int | None:
    if value is None:
        return None
    if not _ASCII_NUMBER.fullmatch(value) or not 0 <= int(value) <= 19:
        raise BadRequest(f"'level' must be an integer from 0 to 19, got {value!r}")
    return int(value)


_ASCII_NUMBER = re.compile(r"[0-9]{1,10}")


def _chunk_argument(args: dict[str, str], name: str) -> int:
    text = args.get(name, "0")
    if not _ASCII_NUMBER.fullmatch(text) or int(text) > MAX_CHUNK_ARGUMENT:
        raise BadRequest(f"'{name}' must be an integer between 0 and {MAX_CHUNK_ARGUMENT}, "
                         f"got {text!r}")
    return int(text)


def slice_concatenation(sizes: Sequence[int], offset: int,
                        size: int) -> list[tuple[int, int, int]]:
    """Which bytes of which instances a chunk request covers (reference §3.6).

    Returns ``(index, start, end)`` triples over the listed instances: skip whole
    instances while ``offset`` is at least their size, then copy from ``offset`` in the
    first kept instance, then whole instances, until ``size`` bytes (0 = all) or the end.
    """
    pieces: list[tuple[int, int, int]] = []
    remaining = size if size > 0 else None
    for index, length in enumerate(sizes):
        if offset >= length:
            offset -= length
            continue
        end = length if remaining is None else min(length, offset + remaining)
        pieces.append((index, offset, end))
        if remaining is not None:
            remaining -= end - offset
            if remaining == 0:
                break
        offset = 0
    return pieces


@dataclass(frozen=True)
class TransferQuery:
    """The body of ``/transfers/send`` and ``/transfers/pull`` (reference §3.1)."""

    resources: tuple[ResourceRef, ...]
    raw_resources: tuple[Any, ...]        # as given: copied verbatim into job Content
    peer: str
    compression: Compression
    priority: int = 0
    originator: str | None = None
    sender_transfer_id: str | None = None
    #: Ours: import each instance once verified (None: Transfers.ImportDuringTransfer).
    import_during_transfer: bool | None = None
    #: Ours: a pull does not download what this Orthanc stores with the same MD5
    #: (None: Transfers.SkipStoredInstances).
    skip_stored_instances: bool | None = None
    #: Ours: seconds the job waits for an unreachable peer (None: Transfers.OutageDeadline).
    outage_deadline: float | None = None

    @classmethod
    def from_wire(cls, body: Any) -> TransferQuery:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with Resources, Peer and Compression")
        peer = body.get("Peer")
        if not isinstance(peer, str) or not peer:
            raise BadRequest("'Peer' must be a non-empty string naming a peer of OrthancPeers")
        priority = body.get("Priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise BadRequest(f"'Priority' must be an integer, got {priority!r}")
        for key in ("Originator", "SenderTransferID"):
            if key in body and not isinstance(body[key], str):
                raise BadRequest(f"'{key}' must be a string, got {body[key]!r}")
        # Sent as the sender-transfer-id header: printable ASCII only.
        if "SenderTransferID" in body and not _HEADER_VALUE.fullmatch(body["SenderTransferID"]):
            raise BadRequest("'SenderTransferID' must be 1 to 256 printable ASCII characters")
        return cls(resources=tuple(parse_resources(body.get("Resources"))),
                   raw_resources=tuple(body["Resources"]),
                   peer=peer,
                   compression=Compression.parse(body.get("Compression")),
                   priority=priority,
                   originator=body.get("Originator"),
                   sender_transfer_id=body.get("SenderTransferID"),
                   import_during_transfer=parse_optional_boolean(body, "ImportDuringTransfer"),
                   skip_stored_instances=parse_optional_boolean(body, "SkipStoredInstances"),
                   outage_deadline=parse_optional_seconds(body, "OutageDeadline"))

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Resources": list(self.raw_resources), "Peer": self.peer,
                                "Compression": self.compression.value,
                                "Priority": self.priority}
        if self.originator is not None:
            body["Originator"] = self.originator
        if self.sender_transfer_id is not None:
            body["SenderTransferID"] = self.sender_transfer_id
        if self.import_during_transfer is not None:
            body["ImportDuringTransfer"] = self.import_during_transfer
        if self.skip_stored_instances is not None:
            body["SkipStoredInstances"] = self.skip_stored_instances
        if self.outage_deadline is not None:
            body["OutageDeadline"] = self.outage_deadline
        return body


# -- answers of peers: checked here, so that a job's phases receive usable values ---------


def require_fields(answer: Any, fields: dict[str, type], *, peer: str, uri: str,
                   what: str) -> dict[str, Any]:
    """``answer`` as an object whose ``fields`` have the given types, or the
    :class:`PeerProtocolError` that names what is missing (``what``: which answer)."""
    if not isinstance(answer, dict) or not all(isinstance(answer.get(key), kind)
                                               for key, kind in fields.items()):
        raise PeerProtocolError(f"Bad network protocol from peer {peer}: {what} without "
                                f"{' and '.join(fields)}", peer=peer, uri=uri)
    return answer


def peer_encodings(answer: dict[str, Any]) -> frozenset[str]:
    """The encodings a peer of ours announces (``Encodings`` of a lookup answer or of a
    push transaction); original peers announce none, and are sent only what they know."""
    value = answer.get("Encodings")
    if not isinstance(value, list):
        return frozenset()
    return frozenset(e for e in value if isinstance(e, str))
