"""Buckets: how a transfer is cut into HTTP requests (reference §4.2, §4.4, §6).

A :class:`Bucket` is an ordered list of :class:`Chunk` (byte ranges of instances); its
payload is the concatenation of those ranges. :func:`plan_buckets` implements the
original planner: small instances grouped, large ones split into equal slices, pull
URLs kept short. Push descriptors (creation body of ``POST /transfers/push``) are
built and parsed here too, since they are lists of buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .encoding import Encoding
from .errors import BadRequest
from .protocol import (
    Compression,
    InstanceInfo,
    parse_decimal_string,
    parse_optional_boolean,
    parse_optional_seconds,
    parse_orthanc_id,
    sort_instances,
)

#: Pull URLs stop growing once they reach this length: 2000 characters minus one
#: 44-character Orthanc ID (reference §6).
MAX_PULL_URL_LENGTH = 2000 - 44


@dataclass(frozen=True)
class Chunk:
    instance_id: str
    offset: int
    size: int

    def to_wire(self) -> dict[str, str]:
        return {"ID": self.instance_id, "Offset": str(self.offset), "Size": str(self.size)}


@dataclass(frozen=True)
class Bucket:
    chunks: tuple[Chunk, ...]

    @property
    def size(self) -> int:
        return sum(chunk.size for chunk in self.chunks)

    @property
    def instance_ids(self) -> tuple[str, ...]:
        return tuple(chunk.instance_id for chunk in self.chunks)

    def pull_uri(self, compression: Compression | Encoding, level: int | None = None) -> str:
        """``/transfers/chunks/<id1>.<id2>...?offset=&size=&compression=`` (§4.4).

        ``level`` (an extension, for receivers of ours) is appended when given.
        """
        if not self.chunks:
            raise ValueError("an empty bucket has no pull URI")
        ids = ".".join(self.instance_ids)
        uri = (f"/transfers/chunks/{ids}?offset={self.chunks[0].offset}"
               f"&size={self.size}&compression={compression.value}")
        return uri if level is None else f"{uri}&level={level}"

    def to_wire(self) -> list[dict[str, str]]:
        return [chunk.to_wire() for chunk in self.chunks]


def split_instance(info: InstanceInfo, split_threshold: int) -> list[Bucket]:
    """``ceil(size / threshold)`` contiguous slices; the last one takes the remainder."""
    count = max(1, math.ceil(info.size / split_threshold))
    slice_size = info.size // count
    buckets = []
    for k in range(count):
        start = k * slice_size
        end = info.size if k == count - 1 else start + slice_size
        buckets.append(Bucket((Chunk(info.id, start, end - start),)))
    return buckets


def plan_buckets(instances: Sequence[InstanceInfo], bucket_size: int, *,
                 compression: Compression = Compression.NONE,
                 base_url: str | None = None) -> list[Bucket]:
    """The original planner (reference §6), in its order: whole/split, then groups.

    ``bucket_size`` is the grouping threshold G in bytes; instances of 2G or more are
    split. With ``base_url`` (pull mode) a group also closes once its full URL reaches
    :data:`MAX_PULL_URL_LENGTH`.
    """
    split_threshold = 2 * bucket_size
    large: list[Bucket] = []
    small: list[InstanceInfo] = []
    for info in sort_instances(instances):
        if info.size < bucket_size:
            small.append(info)
        elif info.size < split_threshold:
            large.append(Bucket((Chunk(info.id, 0, info.size),)))
        else:
            large.extend(split_instance(info, split_threshold))

    groups: list[Bucket] = []
    current: list[Chunk] = []
    for info in small:
        if info.size > 0:   # zero-size chunks are dropped, as the original does
            current.append(Chunk(info.id, 0, info.size))
        if current and _group_is_full(current, bucket_size, compression, base_url):
            groups.append(Bucket(tuple(current)))
            current = []
    if current:
        groups.append(Bucket(tuple(current)))
    return large + groups


def _group_is_full(chunks: list[Chunk], bucket_size: int, compression: Compression,
                   base_url: str | None) -> bool:
    bucket = Bucket(tuple(chunks))
    if bucket.size >= bucket_size:
        return True
    if base_url is None:
        return False
    return len(base_url.rstrip("/") + bucket.pull_uri(compression)) >= MAX_PULL_URL_LENGTH


@dataclass(frozen=True)
class PushPlan:
    """What a push sender declares when it opens a transaction (reference §3.7)."""

    instances: tuple[InstanceInfo, ...]
    buckets: tuple[Bucket, ...]
    compression: Compression
    #: Ours (original receivers ignore it): import each instance once it is verified.
    import_during_transfer: bool | None = None
    #: Ours: how long the sender waits for this receiver in an outage (seconds), so
    #: that the receiver keeps the idle transaction at least that long.
    outage_deadline: float | None = None

    @property
    def total_size(self) -> int:
        return sum(info.size for info in self.instances)

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Instances": [info.to_wire() for info in self.instances],
            "Buckets": [bucket.to_wire() for bucket in self.buckets],
            "Compression": self.compression.value,
        }
        if self.import_during_transfer is not None:
            body["ImportDuringTransfer"] = self.import_during_transfer
        if self.outage_deadline is not None:
            body["OutageDeadline"] = self.outage_deadline
        return body

    @classmethod
    def from_wire(cls, body: Any, max_instance_size: int) -> PushPlan:
        """Parse and check a creation body; every inconsistency is a 400 naming it.

        The original accepts inconsistent plans and fails later (§3.7); refusing them
        up front costs nothing on the wire and protects the staging disk.
        """
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with Instances, Buckets and "
                             "Compression")
        compression = Compression.parse(body.get("Compression"))
        raw_instances, raw_buckets = body.get("Instances"), body.get("Buckets")
        if not isinstance(raw_instances, list) or not isinstance(raw_buckets, list):
            raise BadRequest("'Instances' and 'Buckets' must be JSON arrays")
        instances = tuple(InstanceInfo.from_wire(item) for item in raw_instances)
        sizes = {info.id: info.size for info in instances}
        if len(sizes) != len(instances):
            raise BadRequest("'Instances' lists the same ID twice")
        for info in instances:
            if info.size > max_instance_size:
                raise BadRequest(f"instance {info.id} declares {info.size} bytes, more than "
                                 f"the limit of {max_instance_size} (Transfers.MaxInstanceSize)")
        buckets = tuple(_parse_bucket(raw, sizes, index) for index, raw in enumerate(raw_buckets))
        return cls(instances, buckets, compression,
                   parse_optional_boolean(body, "ImportDuringTransfer"),
                   parse_optional_seconds(body, "OutageDeadline"))


def _parse_bucket(raw: Any, sizes: dict[str, int], index: int) -> Bucket:
    where = f"Buckets[{index}]"
    if not isinstance(raw, list) or not raw:
        raise BadRequest(f"'{where}' must be a non-empty array of chunks")
    chunks = []
    for item in raw:
        if not isinstance(item, dict):
            raise BadRequest(f"each chunk of '{where}' must be an object with ID, Offset, Size")
        instance_id = parse_orthanc_id(item.get("ID"), f"{where}[].ID")
        offset = parse_decimal_string(item.get("Offset"), f"{where}[].Offset")
        size = parse_decimal_string(item.get("Size"), f"{where}[].Size")
        if instance_id not in sizes:
            raise BadRequest(f"'{where}' refers to instance {instance_id}, which is not in "
                             "'Instances'")
        if offset + size > sizes[instance_id]:
            raise BadRequest(f"'{where}' reads past the end of instance {instance_id}")
        chunks.append(Chunk(instance_id, offset, size))
    return Bucket(tuple(chunks))


def buckets_by_instance(buckets: Sequence[Bucket]) -> dict[str, list[int]]:
    """For each instance, the indexes of the buckets that carry some of its bytes."""
    owners: dict[str, list[int]] = {}
    for index, bucket in enumerate(buckets):
        for chunk in bucket.chunks:
            owners.setdefault(chunk.instance_id, []).append(index)
    return owners


def slices_first(buckets: Sequence[Bucket], indexes: Iterable[int]) -> list[int]:
    """``indexes`` with the slices of split instances first, the order kept otherwise.

    A split instance is complete only when its last slice lands. Sending its slices
    first completes it early, so that with ImportDuringTransfer Orthanc stores it while
    the small instances are still on the wire, instead of at the very end.
    """
    owners = buckets_by_instance(buckets)

    def is_slice(index: int) -> bool:
        chunks = buckets[index].chunks
        return len(chunks) == 1 and len(owners[chunks[0].instance_id]) > 1

    return sorted(indexes, key=lambda index: not is_slice(index))


def covers_every_byte(instances: Sequence[InstanceInfo], buckets: Sequence[Bucket]) -> list[str]:
    """IDs of the instances whose bytes the buckets do not cover exactly once."""
    ranges: dict[str, list[tuple[int, int]]] = {info.id: [] for info in instances}
    for bucket in buckets:
        for chunk in bucket.chunks:
            ranges[chunk.instance_id].append((chunk.offset, chunk.offset + chunk.size))
    broken = []
    for info in instances:
        position = 0
        for start, end in sorted(ranges[info.id]):
            if start != position:          # a gap, or bytes covered twice
                position = -1
                break
            position = end
        if position != info.size:
            broken.append(info.id)
    return broken
