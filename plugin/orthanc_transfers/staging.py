"""The download area: where received buckets wait until the whole transfer is verified.

One directory per transfer under the staging directory, one file per instance (sparse,
sized as declared), and ``manifest.json`` listing the buckets written and the instances
whose MD5 matched. The manifest is rewritten atomically after each change, so after a
failure, a cancel or a restart the same transfer resumes without fetching again what is
already here. An instance is verified as soon as its last bucket lands; a mismatch
forgets that instance's buckets so they are fetched again (:meth:`DownloadArea.accept`,
the step that pull and the push receiver share).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .buckets import Bucket, Chunk, buckets_by_instance
from .errors import IntegrityError, RepeatedCorruption, StagingError, TransfersError
from .protocol import InstanceInfo

MANIFEST = "manifest.json"
PLAN = "plan.json"
#: Block size of MD5 computation: large enough that hashlib releases the GIL.
READ_BLOCK = 1 << 20
#: How many times one instance may fail its MD5 check, in a pull or a push receiver,
#: before the transfer gives up on it.
MAX_MD5_FAILURES = 3


def plan_signature(instances: Sequence[InstanceInfo], buckets: Sequence[Bucket]) -> str:
    """Identifies a plan: a manifest is reused only for exactly the same plan."""
    digest = hashlib.sha256()
    for info in instances:
        digest.update(f"{info.id}:{info.size}:{info.md5};".encode())
    for bucket in buckets:
        digest.update(repr(bucket.to_wire()).encode())
    return digest.hexdigest()


@dataclass
class Accepted:
    """What a bucket completed: instances verified, and instances whose MD5 failed
    (forgotten) with the buckets that must come again."""

    verified: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    again: list[int] = field(default_factory=list)


class DownloadArea:
    def __init__(self, directory: Path, instances: Sequence[InstanceInfo],
                 buckets: Sequence[Bucket]) -> None:
        self.directory = directory
        self.instances = {info.id: info for info in instances}
        self._order = {info.id: n for n, info in enumerate(instances)}
        self._ordered = [info.id for info in instances]
        self.buckets = list(buckets)
        self._owners = buckets_by_instance(self.buckets)
        self._signature = plan_signature(instances, buckets)
        self._done: set[int] = set()
        self._verified: set[str] = set()
        self._md5_failures: dict[str, int] = {}     # in memory: a new attempt starts over
        self._lock = threading.Lock()
        self._open()

    # -- opening, resuming, discarding ------------------------------------------------

    @classmethod
    def saved_plan(cls, directory: Path) -> tuple[list[InstanceInfo], list[Bucket]] | None:
        """The plan a previous attempt staged in ``directory``, if any."""
        try:
            plan = json.loads((directory / PLAN).read_text())
            instances = [InstanceInfo.from_wire(item) for item in plan["Instances"]]
            buckets = [Bucket(tuple(Chunk(c["ID"], int(c["Offset"]), int(c["Size"]))
                                    for c in raw)) for raw in plan["Buckets"]]
            return instances, buckets
        except (OSError, ValueError, KeyError, TypeError, TransfersError):
            return None

    def _open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            manifest = self._read_manifest()
            if manifest is not None and manifest.get("Signature") == self._signature:
                self._done = {i for i in manifest["Done"] if 0 <= i < len(self.buckets)}
                self._verified = {self._ordered[i] for i in manifest["Verified"]
                                  if 0 <= i < len(self._ordered)}
            else:
                self._done, self._verified = set(), set()
                self._write_plan()
            for info in self.instances.values():
                path = self.path(info.id)
                if not path.exists() or path.stat().st_size != info.size:
                    with open(path, "ab") as f:
                        f.truncate(info.size)      # sparse: no disk used until written
                    self._forget_instance(info.id)
            self._write_manifest()
        except OSError as e:
            raise StagingError(f"Cannot prepare the staging area {self.directory}: {e}") from e

    def _write_plan(self) -> None:
        plan = {"Instances": [self.instances[i].to_wire() for i in self._ordered],
                "Buckets": [bucket.to_wire() for bucket in self.buckets]}
        (self.directory / PLAN).write_text(json.dumps(plan))

    def _read_manifest(self) -> dict[str, Any] | None:
        try:
            value = json.loads((self.directory / MANIFEST).read_text())
            return value if isinstance(value, dict) else None
        except (OSError, ValueError):
            return None

    def flush(self) -> None:
        """Write the manifest now, with every verification made so far."""
        with self._lock:
            if self.directory.is_dir():
                self._write_manifest()

    def _write_manifest(self) -> None:
        path = self.directory / MANIFEST
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"Signature": self._signature,
                                         "Done": sorted(self._done),
                                         "Verified": sorted(self._order[i]
                                                            for i in self._verified)}))
        os.replace(temporary, path)

    def discard(self) -> None:
        self.discard_directory(self.directory)

    @staticmethod
    def discard_directory(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def path(self, instance_id: str) -> Path:
        return self.directory / f"{instance_id}.dcm"

    # -- progress ---------------------------------------------------------------------

    @property
    def total_size(self) -> int:
        return sum(info.size for info in self.instances.values())

    def pending_buckets(self) -> list[int]:
        with self._lock:
            return [i for i in range(len(self.buckets)) if i not in self._done]

    def count_pending(self) -> int:
        with self._lock:
            return len(self.buckets) - len(self._done)

    def is_done(self, index: int) -> bool:
        with self._lock:
            return index in self._done

    def done_bytes(self) -> int:
        with self._lock:
            return sum(self.buckets[i].size for i in self._done)

    @property
    def verified(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._verified)

    def all_verified(self) -> bool:
        with self._lock:
            return len(self._verified) == len(self.instances)

    # -- writing ----------------------------------------------------------------------

    def write_bucket(self, index: int, data: bytes) -> list[str]:
        """Write bucket ``index`` (already decoded); return the instances it completed."""
        bucket = self.buckets[index]
        if len(data) != bucket.size:
            raise IntegrityError(f"Bucket {index} has {len(data)} bytes, expected {bucket.size}")
        position = 0
        try:
            for chunk in bucket.chunks:
                fd = os.open(self.path(chunk.instance_id), os.O_WRONLY)
                try:
                    view = memoryview(data)[position: position + chunk.size]
                    written = 0
                    while written < chunk.size:
                        written += os.pwrite(fd, view[written:], chunk.offset + written)
                finally:
                    os.close(fd)
                position += chunk.size
        except OSError as e:
            raise StagingError(f"Cannot write bucket {index} to {self.directory}: {e}") from e
        with self._lock:
            self._done.add(index)
            complete = [i for i in dict.fromkeys(bucket.instance_ids)
                        if i not in self._verified
                        and all(b in self._done for b in self._owners[i])]
            self._write_manifest()
        return complete

    def accept(self, index: int, data: bytes) -> Accepted:
        """The one step for a bucket that arrived, downloaded by a pull or PUT to a push
        receiver: write it, then MD5-check every instance it completes. An instance that
        fails is forgotten (its buckets must come again); one that fails
        ``MAX_MD5_FAILURES`` times raises :class:`RepeatedCorruption`."""
        accepted = Accepted()
        for instance_id in self.write_bucket(index, data):
            try:
                self.verify(instance_id)
            except IntegrityError:
                with self._lock:
                    failures = self._md5_failures[instance_id] = \
                        self._md5_failures.get(instance_id, 0) + 1
                if failures >= MAX_MD5_FAILURES:
                    raise RepeatedCorruption(
                        f"Instance {instance_id} failed its MD5 check {failures} times",
                        instance=instance_id) from None
                accepted.corrupted.append(instance_id)
                accepted.again.extend(self.buckets_of(instance_id))
                continue
            accepted.verified.append(instance_id)
        return accepted

    def verify(self, instance_id: str) -> None:
        """Check the MD5 of a complete instance; on mismatch forget its buckets and raise."""
        info = self.instances[instance_id]
        digest = hashlib.md5()
        try:
            with open(self.path(instance_id), "rb") as f:
                while block := f.read(READ_BLOCK):
                    digest.update(block)
        except OSError as e:
            raise StagingError(f"Cannot read staged instance {instance_id}: {e}") from e
        with self._lock:
            if digest.hexdigest() == info.md5:
                # Recorded with the next bucket: one write per instance cost minutes with
                # 20,000 of them; an instance whose record is lost is checked again.
                self._verified.add(instance_id)
                return
            self._forget_instance(instance_id)
            self._write_manifest()          # forgetting must not be lost
        raise IntegrityError(f"Bad MD5 sum in a transferred DICOM instance: {instance_id}",
                             instance=instance_id)

    def verify_unverified_complete(self) -> list[str]:
        """Instances whose buckets are all here but that were never checked (zero-size...)."""
        with self._lock:
            candidates = [i for i in self.instances if i not in self._verified
                          and all(b in self._done for b in self._owners.get(i, []))]
        for instance_id in candidates:
            self.verify(instance_id)
        return candidates

    def _forget_instance(self, instance_id: str) -> None:
        self._verified.discard(instance_id)
        self._done.difference_update(self._owners.get(instance_id, []))

    def buckets_of(self, instance_id: str) -> list[int]:
        return list(self._owners.get(instance_id, []))

    def read(self, instance_id: str) -> bytes:
        try:
            return self.path(instance_id).read_bytes()
        except OSError as e:
            raise StagingError(f"Cannot read staged instance {instance_id}: {e}") from e
