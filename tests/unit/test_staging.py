"""The receiver's download area (reference §9, §16.1 DownloadArea.Basic, §20.1, §20.5)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from orthanc_transfers.buckets import Bucket, Chunk
from orthanc_transfers.errors import IntegrityError, RepeatedCorruption
from orthanc_transfers.protocol import Compression, InstanceInfo, decode_payload, encode_payload
from orthanc_transfers.staging import MAX_MD5_FAILURES, DownloadArea


def content(seed: int, size: int) -> bytes:
    return bytes((seed * 31 + n * 7) % 256 for n in range(size))


FILES = {"a1": content(1, 10), "b2": content(2, 6), "c3": content(3, 20)}
INSTANCES = [InstanceInfo(i, len(d), hashlib.md5(d).hexdigest()) for i, d in FILES.items()]
BUCKETS = [
    Bucket((Chunk("a1", 0, 10), Chunk("b2", 0, 6))),      # 0: spans two instances
    Bucket((Chunk("c3", 0, 10),)),                        # 1: first slice
    Bucket((Chunk("c3", 10, 10),)),                       # 2: starts at an offset
]


def payload(index: int) -> bytes:
    return b"".join(FILES[c.instance_id][c.offset: c.offset + c.size]
                    for c in BUCKETS[index].chunks)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "transfer-1"


@pytest.fixture
def area(directory: Path) -> DownloadArea:
    return DownloadArea(directory, INSTANCES, BUCKETS)


def test_new_area_has_sparse_files_of_declared_sizes(area: DownloadArea) -> None:
    for info in INSTANCES:
        assert area.path(info.id).stat().st_size == info.size
    assert area.pending_buckets() == [0, 1, 2]
    assert area.done_bytes() == 0
    assert not area.all_verified()


def test_md5_check_fails_before_data_is_written(area: DownloadArea) -> None:
    with pytest.raises(IntegrityError):
        area.verify("a1")


def test_bucket_spanning_two_instances(area: DownloadArea) -> None:
    assert area.write_bucket(0, payload(0)) == ["a1", "b2"]
    area.verify("a1")
    area.verify("b2")
    assert area.verified == {"a1", "b2"}
    assert area.read("a1") == FILES["a1"]
    assert area.read("b2") == FILES["b2"]


def test_split_instance_completes_with_its_last_bucket(area: DownloadArea) -> None:
    assert area.write_bucket(2, payload(2)) == []      # the second half first
    assert area.write_bucket(2, payload(2)) == []      # rewriting is harmless
    assert area.write_bucket(1, payload(1)) == ["c3"]
    area.verify("c3")
    assert area.read("c3") == FILES["c3"]
    assert area.pending_buckets() == [0]
    assert area.done_bytes() == 20


def test_all_buckets_with_gzip_payloads(area: DownloadArea) -> None:
    completed: list[str] = []
    for index, bucket in enumerate(BUCKETS):
        wire = encode_payload(payload(index), Compression.GZIP)
        completed += area.write_bucket(index, decode_payload(wire, Compression.GZIP,
                                                             bucket.size))
    assert completed == ["a1", "b2", "c3"]
    for instance_id in completed:
        area.verify(instance_id)
    assert area.all_verified()
    assert area.pending_buckets() == []


def test_verified_instance_is_not_reported_complete_again(area: DownloadArea) -> None:
    area.write_bucket(0, payload(0))
    area.verify("a1")
    assert area.write_bucket(0, payload(0)) == ["b2"]


@pytest.mark.parametrize("length", [0, 15, 17])
def test_wrong_length_write_is_refused(area: DownloadArea, length: int) -> None:
    with pytest.raises(IntegrityError):
        area.write_bucket(0, b"x" * length)
    assert area.pending_buckets() == [0, 1, 2]


def test_corrupted_instance_is_forgotten_and_refetched(area: DownloadArea) -> None:
    area.write_bucket(0, payload(0))
    area.write_bucket(1, bytes(10))                  # right length, wrong bytes
    assert area.write_bucket(2, payload(2)) == ["c3"]
    with pytest.raises(IntegrityError) as caught:
        area.verify("c3")
    assert caught.value.instance == "c3"
    assert area.pending_buckets() == [1, 2]          # only that instance's buckets
    assert "c3" not in area.verified
    area.write_bucket(1, payload(1))
    assert area.write_bucket(2, payload(2)) == ["c3"]
    area.verify("c3")


def test_resume_with_the_same_plan_keeps_progress(area: DownloadArea,
                                                  directory: Path) -> None:
    area.write_bucket(0, payload(0))
    area.verify("a1")
    area.verify("b2")
    area.write_bucket(1, payload(1))
    resumed = DownloadArea(directory, INSTANCES, BUCKETS)
    assert resumed.pending_buckets() == [2]
    assert resumed.is_done(0) and resumed.is_done(1)
    assert resumed.verified == {"a1", "b2"}
    assert resumed.write_bucket(2, payload(2)) == ["c3"]
    resumed.verify("c3")
    assert resumed.all_verified()


def test_resume_with_another_plan_starts_over(area: DownloadArea, directory: Path) -> None:
    area.write_bucket(0, payload(0))
    area.verify("a1")
    other = [Bucket((Chunk("a1", 0, 10),)), Bucket((Chunk("b2", 0, 6),)),
             Bucket((Chunk("c3", 0, 20),))]
    restarted = DownloadArea(directory, INSTANCES, other)
    assert restarted.pending_buckets() == [0, 1, 2]
    assert restarted.verified == frozenset()
    assert DownloadArea.saved_plan(directory) == (INSTANCES, other)


def test_resume_after_a_staged_file_vanished(area: DownloadArea, directory: Path) -> None:
    area.write_bucket(0, payload(0))
    area.verify("a1")
    area.verify("b2")
    area.path("b2").unlink()
    resumed = DownloadArea(directory, INSTANCES, BUCKETS)
    assert resumed.pending_buckets() == [0, 1, 2]
    assert "b2" not in resumed.verified


def test_saved_plan(area: DownloadArea, directory: Path, tmp_path: Path) -> None:
    assert DownloadArea.saved_plan(directory) == (INSTANCES, BUCKETS)
    assert DownloadArea.saved_plan(tmp_path / "nothing-here") is None
    (directory / "plan.json").write_text("{broken")
    assert DownloadArea.saved_plan(directory) is None


def test_discard_removes_the_directory(area: DownloadArea, directory: Path) -> None:
    area.write_bucket(0, payload(0))
    area.discard()
    assert not directory.exists()


def test_zero_size_instance_is_verified_without_buckets(tmp_path: Path) -> None:
    empty = InstanceInfo("e0", 0, hashlib.md5(b"").hexdigest())
    area = DownloadArea(tmp_path / "t", [*INSTANCES, empty], BUCKETS)
    assert area.verify_unverified_complete() == ["e0"]
    assert area.verified == {"e0"}
    assert area.total_size == 36


def test_accept_verifies_or_forgets_and_gives_up_after_the_cap(area: DownloadArea) -> None:
    """The step pull and the push receiver share: verified instances come back ready to
    import; a damaged one is forgotten with its buckets; the third failure is final."""
    accepted = area.accept(0, payload(0))
    assert accepted.verified == ["a1", "b2"] and not accepted.corrupted
    area.accept(1, payload(1))
    damaged = bytes(10)
    for _ in range(MAX_MD5_FAILURES - 1):
        accepted = area.accept(2, damaged)
        assert accepted.corrupted == ["c3"] and accepted.again == [1, 2]
        assert accepted.verified == [] and area.pending_buckets() == [1, 2]
        area.accept(1, payload(1))
    with pytest.raises(RepeatedCorruption) as failure:
        area.accept(2, damaged)
    assert failure.value.instance == "c3" and failure.value.http_status == 409
