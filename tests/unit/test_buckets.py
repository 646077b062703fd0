"""Bucket planning and push descriptors (reference §4.2, §4.4, §6, §16.1)."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from orthanc_transfers.buckets import (
    MAX_PULL_URL_LENGTH,
    Bucket,
    Chunk,
    PushPlan,
    buckets_by_instance,
    covers_every_byte,
    plan_buckets,
    slices_first,
    split_instance,
)
from orthanc_transfers.errors import BadRequest
from orthanc_transfers.protocol import Compression, InstanceInfo

MD5 = "0123456789abcdef0123456789abcdef"
KIB, MIB = 1024, 1024 * 1024
G = 4096 * KIB                       # default BucketSize in bytes
BASE_URL = "http://127.0.0.1:8042/"


def info(instance_id: str, size: int) -> InstanceInfo:
    return InstanceInfo(instance_id, size, MD5)


def orthanc_id(n: int) -> str:
    """A 44-character Orthanc-shaped identifier (8-8-8-8-8 hex digits)."""
    return "-".join([f"{n:08x}"] * 5)


def full_url(base_url: str, bucket: Bucket, compression: Compression) -> str:
    return base_url.rstrip("/") + bucket.pull_uri(compression)


def ids_of(buckets: list[Bucket]) -> list[list[str]]:
    return [list(bucket.instance_ids) for bucket in buckets]


# -- TransferBucket.Basic ---------------------------------------------------------------

D123 = Bucket((Chunk("d1", 0, 10), Chunk("d2", 0, 20), Chunk("d3", 0, 30)))


@pytest.mark.parametrize(("bucket", "compression", "uri"), [
    (D123, Compression.NONE, "/transfers/chunks/d1.d2.d3?offset=0&size=60&compression=none"),
    (D123, Compression.GZIP, "/transfers/chunks/d1.d2.d3?offset=0&size=60&compression=gzip"),
    (Bucket((Chunk("d1", 5, 5), Chunk("d2", 0, 20), Chunk("d3", 0, 7))), Compression.NONE,
     "/transfers/chunks/d1.d2.d3?offset=5&size=32&compression=none"),
    (Bucket((Chunk("d1", 3, 4),)), Compression.NONE,
     "/transfers/chunks/d1?offset=3&size=4&compression=none"),
])
def test_pull_uri(bucket: Bucket, compression: Compression, uri: str) -> None:
    assert bucket.pull_uri(compression) == uri


def test_bucket_totals_and_accessors() -> None:
    assert D123.size == 60
    assert D123.instance_ids == ("d1", "d2", "d3")
    assert D123.to_wire()[1] == {"ID": "d2", "Offset": "0", "Size": "20"}


def test_empty_bucket_has_no_pull_uri() -> None:
    with pytest.raises(ValueError):
        Bucket(()).pull_uri(Compression.NONE)


def test_bucket_serialization_round_trip_keeps_pull_uri() -> None:
    instances = (info("d1", 10), info("d2", 20), info("d3", 30))
    plan = PushPlan(instances, (D123,), Compression.NONE)
    parsed = PushPlan.from_wire(plan.to_wire(), max_instance_size=MIB)
    assert parsed.buckets[0].pull_uri(Compression.NONE) == D123.pull_uri(Compression.NONE)


def test_push_plan_carries_import_during_transfer_only_when_set() -> None:
    instances = (info("d1", 10), info("d2", 20), info("d3", 30))
    assert "ImportDuringTransfer" not in PushPlan(instances, (D123,), Compression.NONE).to_wire()
    plan = PushPlan(instances, (D123,), Compression.NONE, True)
    wire = plan.to_wire()
    assert wire["ImportDuringTransfer"] is True
    assert PushPlan.from_wire(wire, max_instance_size=MIB) == plan
    with pytest.raises(BadRequest, match="ImportDuringTransfer"):
        PushPlan.from_wire({**wire, "ImportDuringTransfer": "yes"}, max_instance_size=MIB)


def test_slices_first_moves_split_instances_ahead_keeping_the_order() -> None:
    instances = [info("a1", 10), info("b2", 45), info("c3", 10), info("d4", 25)]
    buckets = plan_buckets(instances, 10)      # b2 and d4 are split
    order = slices_first(buckets, range(len(buckets)))
    ids = [buckets[i].chunks[0].instance_id for i in order]
    split = [i for i in ids if i in ("b2", "d4")]
    assert ids[:len(split)] == split and ids[len(split):] == ["a1", "c3"]
    assert order[:len(split)] == sorted(order[:len(split)])
    assert slices_first(buckets, [len(buckets) - 1, 0]) == [len(buckets) - 1, 0]


# -- TransferScheduler ------------------------------------------------------------------

def test_scheduler_empty() -> None:
    assert plan_buckets([], G) == []
    assert PushPlan((), (), Compression.NONE).to_wire() == {
        "Instances": [], "Buckets": [], "Compression": "none"}


def test_scheduler_basic_three_single_buckets_in_id_order() -> None:
    instances = [info("d3", 10), info("d1", 10), info("d2", 10)]
    buckets = plan_buckets(instances, 10)
    assert ids_of(buckets) == [["d1"], ["d2"], ["d3"]]
    plan = PushPlan(tuple(sorted(instances, key=lambda i: i.id)), tuple(buckets),
                    Compression.GZIP)
    wire = plan.to_wire()
    assert wire["Compression"] == "gzip"
    assert wire["Instances"] == [{"ID": f"d{n}", "Size": "10", "MD5": MD5} for n in (1, 2, 3)]
    assert PushPlan.from_wire(wire, max_instance_size=100) == plan


@pytest.mark.parametrize(("threshold", "groups"), [
    (20, [["d1", "d2"], ["d3"]]),
    (21, [["d1", "d2", "d3"]]),
])
def test_scheduler_grouping(threshold: int, groups: list[list[str]]) -> None:
    instances = [info("d1", 10), info("d2", 10), info("d3", 10)]
    assert ids_of(plan_buckets(instances, threshold)) == groups


def test_scheduler_grouping_long_base_url_leaves_each_instance_alone() -> None:
    instances = [info("d1", 10), info("d2", 10), info("d3", 10)]
    base_url = "http://" + "x" * (2048 - len("http://"))
    assert len(base_url) == 2048
    buckets = plan_buckets(instances, 21, base_url=base_url)
    assert ids_of(buckets) == [["d1"], ["d2"], ["d3"]]


SPLIT_CASES = [(size, threshold) for size in range(1, 20) for threshold in range(1, 20)]


@pytest.mark.parametrize(("size", "threshold"), SPLIT_CASES)
def test_scheduler_splitting(size: int, threshold: int) -> None:
    buckets = split_instance(InstanceInfo("d1", size, MD5), threshold)
    count = math.ceil(size / threshold)
    assert len(buckets) == count
    chunks = [bucket.chunks[0] for bucket in buckets]
    assert all(len(bucket.chunks) == 1 and c.instance_id == "d1"
               for bucket, c in zip(buckets, chunks, strict=True))
    position = 0
    for chunk in chunks:                       # contiguous, from 0 to the end
        assert chunk.offset == position
        position += chunk.size
    assert position == size
    slice_size = size // count
    assert [c.size for c in chunks[:-1]] == [slice_size] * (count - 1)
    assert chunks[-1].size == size - slice_size * (count - 1)


# -- §6 worked examples with the default BucketSize ---------------------------------------

@pytest.mark.parametrize(("file_size", "group"), [(512_000, 9), (100 * KIB, 41)])
def test_small_files_are_grouped_by_size(file_size: int, group: int) -> None:
    instances = [info(orthanc_id(n), file_size) for n in range(100)]
    buckets = plan_buckets(instances, G)
    assert [len(b.chunks) for b in buckets[:-1]] == [group] * (len(buckets) - 1)
    assert len(buckets[-1].chunks) == 100 - group * (len(buckets) - 1)
    assert all(b.size >= G for b in buckets[:-1])
    assert covers_every_byte(instances, buckets) == []


def test_ten_kib_files_in_pull_mode_are_capped_by_url_length() -> None:
    instances = [info(orthanc_id(n), 10 * KIB) for n in range(100)]
    buckets = plan_buckets(instances, G, compression=Compression.GZIP, base_url=BASE_URL)
    assert [len(b.chunks) for b in buckets] == [42, 42, 16]
    urls = [full_url(BASE_URL, b, Compression.GZIP) for b in buckets]
    assert all(len(url) < 2000 for url in urls)
    for bucket in buckets[:-1]:
        # The size never closes these groups; the URL cap does, one instance too late.
        assert bucket.size < G
        assert len(full_url(BASE_URL, bucket, Compression.GZIP)) >= MAX_PULL_URL_LENGTH
        shorter = Bucket(bucket.chunks[:-1])
        assert len(full_url(BASE_URL, shorter, Compression.GZIP)) < MAX_PULL_URL_LENGTH


def test_ten_kib_files_in_push_mode_are_grouped_by_size_only() -> None:
    instances = [info(orthanc_id(n), 10 * KIB) for n in range(500)]
    buckets = plan_buckets(instances, G)
    assert [len(b.chunks) for b in buckets] == [410, 90]


@pytest.mark.parametrize(("file_size", "slices"), [
    (6 * MIB, [6 * MIB]),
    (2 * G - 1, [2 * G - 1]),
    (2 * G, [2 * G]),                 # ceil(S / S) = 1 slice
    (2 * G + 1, [G, G + 1]),
    (20 * MIB, [6_990_506, 6_990_506, 6_990_508]),
])
def test_large_file_slices(file_size: int, slices: list[int]) -> None:
    buckets = plan_buckets([info("d1", file_size)], G)
    assert [b.size for b in buckets] == slices


def test_hundred_mib_file_gives_thirteen_slices() -> None:
    buckets = plan_buckets([info("d1", 100 * MIB)], G)
    assert len(buckets) == 13
    assert sum(b.size for b in buckets) == 100 * MIB
    assert {b.size for b in buckets[:-1]} == {100 * MIB // 13}


def test_order_is_whole_and_split_buckets_first_then_groups() -> None:
    instances = [info("a1", 100), info("b2", 20 * MIB), info("c3", 200),
                 info("d4", 5 * MIB), info("e5", 300)]
    buckets = plan_buckets(instances, G)
    assert ids_of(buckets) == [["b2"], ["b2"], ["b2"], ["d4"], ["a1", "c3", "e5"]]


def test_zero_size_instances_are_left_out_of_groups() -> None:
    buckets = plan_buckets([info("a1", 0), info("b2", 10), info("c3", 0)], G)
    assert ids_of(buckets) == [["b2"]]


def test_duplicate_instances_are_planned_once() -> None:
    buckets = plan_buckets([info("a1", 10), info("a1", 10)], G)
    assert ids_of(buckets) == [["a1"]]


def test_buckets_by_instance() -> None:
    buckets = [Bucket((Chunk("a", 0, 5),)), Bucket((Chunk("a", 5, 5), Chunk("b", 0, 3)))]
    assert buckets_by_instance(buckets) == {"a": [0, 1], "b": [1]}


# -- covers_every_byte --------------------------------------------------------------------

@pytest.mark.parametrize(("chunks", "broken"), [
    ([("a", 0, 10), ("b", 0, 4)], []),
    ([("a", 5, 5), ("a", 0, 5), ("b", 0, 4)], []),
    ([("a", 0, 4), ("a", 5, 5), ("b", 0, 4)], ["a"]),            # gap
    ([("a", 0, 9), ("b", 0, 4)], ["a"]),                         # short
    ([("a", 0, 10)], ["b"]),                                     # missing
    ([("a", 0, 6), ("a", 4, 6), ("b", 0, 4)], ["a"]),            # overlap
    ([("a", 0, 10), ("a", 0, 10), ("b", 0, 4)], ["a"]),          # twice
    ([("a", 0, 10), ("a", 5, 5), ("b", 0, 4)], ["a"]),           # tail twice
], ids=["exact", "unordered", "gap", "short", "missing", "overlap", "twice", "tail-twice"])
def test_covers_every_byte_exactly_once(chunks: list[tuple[str, int, int]],
                                        broken: list[str]) -> None:
    instances = [info("a", 10), info("b", 4)]
    buckets = [Bucket((Chunk(*c),)) for c in chunks]
    assert covers_every_byte(instances, buckets) == broken


# -- PushPlan.from_wire -------------------------------------------------------------------

def valid_body() -> dict[str, Any]:
    return {
        "Instances": [{"ID": "a1", "Size": "10", "MD5": MD5},
                      {"ID": "b2", "Size": "4", "MD5": MD5}],
        "Buckets": [[{"ID": "a1", "Offset": "0", "Size": "10"},
                     {"ID": "b2", "Offset": "0", "Size": "4"}]],
        "Compression": "gzip",
    }


def test_push_plan_from_wire_round_trip() -> None:
    plan = PushPlan.from_wire(valid_body(), max_instance_size=100)
    assert plan.compression is Compression.GZIP
    assert plan.total_size == 14
    assert plan.buckets == (Bucket((Chunk("a1", 0, 10), Chunk("b2", 0, 4))),)
    assert plan.to_wire() == valid_body()


def mutate(path: list[Any], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(valid_body())
    target: Any = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


BAD_BODIES = {
    "not an object": [valid_body()],
    "instance size as number": mutate(["Instances", 0, "Size"], 10),
    "chunk offset as number": mutate(["Buckets", 0, 0, "Offset"], 0),
    "chunk size as number": mutate(["Buckets", 0, 0, "Size"], 10),
    "negative size": mutate(["Instances", 0, "Size"], "-1"),
    "uppercase md5": mutate(["Instances", 0, "MD5"], MD5.upper()),
    "unknown instance in bucket": mutate(["Buckets", 0, 1, "ID"], "c3"),
    "chunk past end": mutate(["Buckets", 0, 1, "Size"], "5"),
    "offset past end": mutate(["Buckets", 0, 1, "Offset"], "1"),
    "duplicate IDs": mutate(["Instances", 1, "ID"], "a1"),
    "size over limit": mutate(["Instances", 0, "Size"], "101"),
    "bad compression": mutate(["Compression"], "GZIP"),
    "missing compression": {k: v for k, v in valid_body().items() if k != "Compression"},
    "instances not a list": mutate(["Instances"], {}),
    "buckets not a list": mutate(["Buckets"], "x"),
    "empty bucket": mutate(["Buckets", 0], []),
    "chunk not an object": mutate(["Buckets", 0, 0], "a1"),
    "bad instance ID": mutate(["Instances", 0, "ID"], "../a1"),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_push_plan_from_wire_rejects(body: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        PushPlan.from_wire(body, max_instance_size=100)
    assert caught.value.http_status == 400
