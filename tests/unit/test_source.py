"""The source side against FakeHost (reference §3.1, §3.6, §10, §20.4)."""

from __future__ import annotations

import hashlib
import threading

import pytest
from fake_host import FakeHost
from orthanc_transfers.errors import UnknownResource
from orthanc_transfers.hostapi import Host
from orthanc_transfers.protocol import InstanceInfo, ResourceRef
from orthanc_transfers.source import FileCache, InstanceSource

pytestmark = pytest.mark.timeout(30)


def content(seed: int, size: int) -> bytes:
    return bytes((seed * 13 + n * 5) % 256 for n in range(size))


FILES = {"0c": content(1, 7), "0a": content(2, 0), "0b": content(3, 12), "0d": content(4, 5)}


def make_host() -> FakeHost:
    host = FakeHost()
    host.add_study("5a", {"5e1": {"0c": FILES["0c"], "0a": FILES["0a"]},
                          "5e2": {"0b": FILES["0b"]}})
    host.add_study("5b", {"5e3": {"0d": FILES["0d"]}})
    host.patients["9a"] = ["5a", "5b"]
    return host


@pytest.fixture
def host() -> FakeHost:
    return make_host()


@pytest.fixture
def source(host: FakeHost) -> InstanceSource:
    typed: Host = host
    return InstanceSource(typed, cache_size=1 << 20)


@pytest.mark.parametrize(("resources", "expected"), [
    ([ResourceRef("studies", "5a")], ["0a", "0b", "0c"]),
    ([ResourceRef("series", "5e1")], ["0a", "0c"]),
    ([ResourceRef("patients", "9a")], ["0a", "0b", "0c", "0d"]),
    ([ResourceRef("instances", "0d")], ["0d"]),
    ([ResourceRef("instances", "0c"), ResourceRef("studies", "5a"),
      ResourceRef("series", "5e2")], ["0a", "0b", "0c"]),
    ([], []),
])
def test_expand_deduplicates_and_sorts(source: InstanceSource, resources: list[ResourceRef],
                                       expected: list[str]) -> None:
    assert source.expand(resources) == expected


@pytest.mark.parametrize("resource", [ResourceRef("studies", "ff"),
                                      ResourceRef("patients", "ff"),
                                      ResourceRef("series", "ff"),
                                      ResourceRef("instances", "ff")])
def test_expand_unknown_resource(source: InstanceSource, resource: ResourceRef) -> None:
    with pytest.raises(UnknownResource, match="ff"):
        source.expand([resource])


def test_describe_uses_stored_size_and_md5(source: InstanceSource, host: FakeHost) -> None:
    info = source.describe("0b")
    assert info == InstanceInfo("0b", 12, hashlib.md5(FILES["0b"]).hexdigest())
    assert host.dicom_reads == {}


def test_describe_falls_back_to_reading(source: InstanceSource, host: FakeHost) -> None:
    host.store_md5 = False
    assert source.describe("0c") == InstanceInfo("0c", 7, hashlib.md5(FILES["0c"]).hexdigest())
    assert host.dicom_reads == {"0c": 1}


def test_describe_all_is_sorted(source: InstanceSource) -> None:
    infos = source.describe_all(["0d", "0a", "0c", "0a"])
    assert [i.id for i in infos] == ["0a", "0c", "0d"]
    assert infos[0].size == 0


def test_describe_unknown_instance(source: InstanceSource) -> None:
    with pytest.raises(UnknownResource):
        source.describe("ff")


ORDER = ["0a", "0b", "0c", "0d"]
WHOLE = b"".join(FILES[i] for i in ORDER)


@pytest.mark.parametrize(("offset", "size"), [
    (0, 0), (0, len(WHOLE)), (3, 4), (11, 3), (12, 0), (12, 7), (18, 6), (23, 100),
    (len(WHOLE), 0), (len(WHOLE) + 5, 2),
])
@pytest.mark.parametrize("cache_size", [1 << 20, 1])
def test_read_range_matches_the_concatenation(host: FakeHost, offset: int, size: int,
                                              cache_size: int) -> None:
    source = InstanceSource(host, cache_size)
    expected = WHOLE[offset: offset + size if size else None]
    assert source.read_range(ORDER, offset, size) == expected
    assert source.read_range(ORDER, offset, size) == expected     # hit or miss alike


def test_read_range_reads_each_file_once_with_a_large_cache(source: InstanceSource,
                                                            host: FakeHost) -> None:
    for offset in range(0, len(WHOLE), 3):
        source.read_range(ORDER, offset, 3)
    assert host.dicom_reads == {"0b": 1, "0c": 1, "0d": 1}


def test_concurrent_reads_load_an_instance_once(host: FakeHost) -> None:
    source = InstanceSource(host, cache_size=1 << 20)
    host.hold = threading.Event()
    barrier = threading.Barrier(9)
    results: list[bytes] = []

    def reader() -> None:
        barrier.wait(10)
        results.append(source.read("0b"))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait(10)
    assert host.loading.wait(10)
    host.hold.set()
    for thread in threads:
        thread.join(10)
    assert results == [FILES["0b"]] * 8
    assert host.dicom_reads == {"0b": 1}


def test_failed_load_is_not_cached_and_does_not_block(source: InstanceSource,
                                                      host: FakeHost) -> None:
    for _ in range(2):
        with pytest.raises(UnknownResource):
            source.read("ff")
    assert host.dicom_reads == {"ff": 2}
    assert source.cache.used == 0


# -- FileCache --------------------------------------------------------------------------

def test_file_cache_evicts_least_recently_used_by_bytes() -> None:
    cache = FileCache(10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"             # a is now the most recent
    cache.put("c", b"cccc")                      # 12 > 10: b goes
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == (b"aaaa", b"cccc")
    assert cache.used == 8
    assert (cache.hits, cache.misses) == (3, 3)


def test_file_cache_keeps_a_file_larger_than_capacity_alone() -> None:
    cache = FileCache(10)
    cache.put("a", b"aaaa")
    cache.put("big", b"x" * 25)
    assert cache.get("big") == b"x" * 25
    assert cache.get("a") is None
    assert cache.used == 25
    cache.put("small", b"s")
    assert (cache.get("big"), cache.used) == (None, 1)


def test_file_cache_put_twice_and_clear() -> None:
    cache = FileCache(10)
    cache.put("a", b"aaaa")
    cache.put("a", b"aaaa")
    assert cache.used == 4
    cache.clear()
    assert (cache.used, cache.get("a")) == (0, None)


def test_prefetch_reads_split_instances_first_within_the_budget(
        host: FakeHost, source: InstanceSource) -> None:
    infos = source.describe_all(["0a", "0b", "0c", "0d"])     # sizes 0, 12, 7, 5
    order: list[str] = []
    original = host.get_dicom

    def recording(instance_id: str) -> bytes:
        order.append(instance_id)
        return original(instance_id)

    host.get_dicom = recording          # type: ignore[method-assign]
    source.prefetch(infos, budget=20, split_size=10).join(5)
    # 0b (12 bytes, "split") first, then the others in ID order until 20 bytes
    assert order == ["0b", "0a", "0c"]
    assert source.cache.get("0b") == FILES["0b"] and source.cache.get("0d") is None


def test_prefetch_skips_an_instance_deleted_since_the_lookup(
        host: FakeHost, source: InstanceSource) -> None:
    infos = source.describe_all(["0c", "0d"])
    del host.instances["0c"]
    source.prefetch(infos, budget=100, split_size=100).join(5)
    assert source.cache.get("0d") == FILES["0d"]
