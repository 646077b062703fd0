"""Importing verified instances: at the end (default) or while the transfer goes on."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest
from fake_host import FakeHost
from orthanc_transfers.buckets import Bucket, Chunk
from orthanc_transfers.concurrency import Throttles
from orthanc_transfers.config import TransfersConfig
from orthanc_transfers.errors import BadRequest, Cancelled, IntegrityError
from orthanc_transfers.httpclient import HttpPools
from orthanc_transfers.importing import ImportStream, import_area
from orthanc_transfers.metrics import Metrics
from orthanc_transfers.protocol import InstanceInfo
from orthanc_transfers.services import Services
from orthanc_transfers.source import InstanceSource
from orthanc_transfers.staging import DownloadArea

FILES = [f"DICM file number {n}".encode() * (n + 1) for n in range(4)]


def instance_id(data: bytes) -> str:
    """FakeHost.store_dicom answers the SHA-1 of the bytes as the instance ID."""
    return hashlib.sha1(data).hexdigest()


IDS = [instance_id(data) for data in FILES]


class FailingHost(FakeHost):
    def __init__(self, refuse: bytes | None = None, gate: threading.Event | None = None):
        super().__init__()
        self.refuse = refuse
        self.gate = gate

    def store_dicom(self, dicom: bytes) -> dict[str, Any]:
        if self.gate is not None:
            assert self.gate.wait(5)
        if dicom == self.refuse:
            raise BadRequest("Orthanc refused a transferred file")
        return super().store_dicom(dicom)


def make_services(host: FakeHost) -> Services:
    return Services(host=host, config=TransfersConfig(), originator="test",
                    connections=HttpPools(2), source=InstanceSource(host, 1 << 20),
                    metrics=Metrics(host.set_metric),
                    throttles=Throttles.create(chunk_slots=2))


def staged_area(tmp_path: Path) -> DownloadArea:
    """Every file staged and verified, one bucket each."""
    infos = [InstanceInfo(i, len(data), hashlib.md5(data).hexdigest())
             for i, data in zip(IDS, FILES, strict=True)]
    buckets = [Bucket((Chunk(info.id, 0, info.size),)) for info in infos]
    area = DownloadArea(tmp_path / "area", infos, buckets)
    for index, data in enumerate(FILES):
        for completed in area.write_bucket(index, data):
            area.verify(completed)
    return area


def test_import_area_stores_every_instance_once(tmp_path: Path) -> None:
    host = FakeHost()
    area = staged_area(tmp_path)
    imported: list[str] = []
    already = import_area(make_services(host), area, check=lambda: None,
                          on_imported=imported.append)
    assert already == 0
    assert sorted(imported) == sorted(IDS) and sorted(host.stored) == sorted(FILES)


def test_import_area_skips_what_the_stream_imported_and_what_orthanc_has(tmp_path: Path) -> None:
    host = FakeHost()
    host.instances[IDS[3]] = FILES[3]                   # stored before, same MD5
    area = staged_area(tmp_path)
    already = import_area(make_services(host), area, check=lambda: None,
                          on_imported=lambda _: None, imported={IDS[0], IDS[1]})
    assert already == 1 and host.stored == [FILES[2]]


def test_import_area_refuses_an_incomplete_area(tmp_path: Path) -> None:
    host = FakeHost()
    infos = [InstanceInfo(IDS[0], len(FILES[0]), hashlib.md5(FILES[0]).hexdigest())]
    area = DownloadArea(tmp_path / "area", infos, [Bucket((Chunk(IDS[0], 0, len(FILES[0])),))])
    with pytest.raises(IntegrityError, match="incomplete"):
        import_area(make_services(host), area, check=lambda: None, on_imported=lambda _: None)
    assert host.stored == []


def test_stream_imports_what_is_submitted_then_the_rest_at_the_end(tmp_path: Path) -> None:
    host = FakeHost()
    services = make_services(host)
    area = staged_area(tmp_path)
    seen: list[str] = []
    stream = ImportStream(services, area, check=lambda: None, on_imported=seen.append)
    stream.submit(IDS[2])
    stream.submit(IDS[0])
    stream.finish()
    assert stream.imported == {IDS[0], IDS[2]} and sorted(seen) == sorted(stream.imported)
    assert sorted(host.stored) == sorted([FILES[0], FILES[2]])
    import_area(services, area, check=lambda: None, on_imported=seen.append,
                imported=stream.imported)
    assert sorted(host.stored) == sorted(FILES) and sorted(seen) == sorted(IDS)


def test_stream_raises_the_first_failure_and_drops_the_queue(tmp_path: Path) -> None:
    gate = threading.Event()
    host = FailingHost(refuse=FILES[0], gate=gate)
    stream = ImportStream(make_services(host), staged_area(tmp_path), check=lambda: None,
                          on_imported=lambda _: None)
    for identifier in IDS:
        stream.submit(identifier)
    gate.set()
    with pytest.raises(BadRequest):
        stream.finish()
    with pytest.raises(BadRequest):
        stream.raise_if_failed()
    assert FILES[0] not in host.stored and IDS[0] not in stream.imported
    stream.submit(IDS[0])                  # after a failure, nothing more is taken
    assert IDS[0] not in stream.imported


def test_abort_lets_a_started_import_finish_and_drops_the_others(tmp_path: Path) -> None:
    gate = threading.Event()
    host = FailingHost(gate=gate)
    services = make_services(host)       # two import threads
    stream = ImportStream(services, staged_area(tmp_path), check=lambda: None,
                          on_imported=lambda _: None)
    for identifier in IDS:
        stream.submit(identifier)
    aborting = threading.Thread(target=stream.abort)
    aborting.start()
    gate.set()
    aborting.join(5)
    assert not aborting.is_alive()
    # the two that had started are whole in Orthanc; the queued ones never went
    assert len(host.stored) == len(stream.imported) <= 2
    assert all(data in FILES for data in host.stored)


def test_a_cancelled_job_stops_the_stream(tmp_path: Path) -> None:
    def cancelled() -> None:
        raise Cancelled("cancelled by the user")

    host = FakeHost()
    stream = ImportStream(make_services(host), staged_area(tmp_path), check=cancelled,
                          on_imported=lambda _: None)
    stream.submit(IDS[0])
    with pytest.raises(Cancelled):
        stream.finish()
    assert host.stored == []
