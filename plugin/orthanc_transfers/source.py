"""The source side: which instances a query means, their descriptors, their bytes.

Serves ``/transfers/lookup``, ``/transfers/chunks`` and the push sender. Size and MD5
come from what Orthanc already stores for the ``dicom`` attachment, so a lookup reads
no file (reference §20.4); only when Orthanc has no MD5 (``StoreMD5ForAttachments``
off) is the file read and hashed. Whole files are kept in an LRU cache of ``CacheSize``
bytes, concurrent loads of one instance are merged, and after a lookup the files asked
for first are read in the background while the answer crosses the link.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from .concurrency import Background
from .errors import Forbidden, TransfersError, UnknownResource
from .hostapi import Host
from .protocol import InstanceInfo, ResourceRef, slice_concatenation, sort_instances

_CHILDREN = {"patients": ("Studies", "studies"), "studies": ("Series", "series"),
             "series": ("Instances", "instances")}


class InstanceSource:
    def __init__(self, host: Host, cache_size: int) -> None:
        self._host = host
        self._cache = FileCache(cache_size)
        self._loading: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    # -- which instances -------------------------------------------------------------

    def expand(self, resources: Iterable[ResourceRef]) -> list[str]:
        """Every instance ID below the resources, de-duplicated and sorted."""
        found: set[str] = set()
        for resource in resources:
            found.update(self._instances_below(resource.level, resource.id))
        return sorted(found)

    def _instances_below(self, level: str, resource_id: str) -> list[str]:
        if level == "instances":
            self.size_of(resource_id)          # raises UnknownResource when absent
            return [resource_id]
        key, child_level = _CHILDREN[level]
        try:
            children = json.loads(self._host.rest_get(f"/{level}/{resource_id}"))[key]
        except UnknownResource:
            raise UnknownResource(f"Unknown resource: {level}/{resource_id}") from None
        ids: list[str] = []
        for child in children:
            ids.extend(self._instances_below(child_level, child))
        return ids

    # -- descriptors -----------------------------------------------------------------

    def size_of(self, instance_id: str) -> int:
        cached = self._cache.get(instance_id)
        if cached is not None:
            return len(cached)
        try:
            return int(self._host.rest_get(f"/instances/{instance_id}/attachments/dicom/size"))
        except UnknownResource:
            raise UnknownResource(f"Unknown instance: {instance_id}") from None

    def describe(self, instance_id: str) -> InstanceInfo:
        size = self.size_of(instance_id)
        try:
            md5 = self._host.rest_get(f"/instances/{instance_id}/attachments/dicom/md5")
            return InstanceInfo(instance_id, size, md5.decode().strip().lower())
        except TransfersError:
            # No MD5 stored by Orthanc: the only way is to read the file.
            data = self.read(instance_id)
            return InstanceInfo(instance_id, len(data), hashlib.md5(data).hexdigest())

    def describe_all(self, instance_ids: Iterable[str]) -> list[InstanceInfo]:
        return sort_instances(self.describe(i) for i in instance_ids)

    # -- bytes -----------------------------------------------------------------------

    def read(self, instance_id: str) -> bytes:
        """The whole file, through the cache; one load at a time per instance."""
        while True:
            data = self._cache.get(instance_id)
            if data is not None:
                return data
            with self._lock:
                loading = self._loading.get(instance_id)
                if loading is None:
                    loading = self._loading[instance_id] = threading.Event()
                    owner = True
                else:
                    owner = False
            if not owner:
                loading.wait()
                continue      # the owner cached it, or failed: look again
            try:
                data = self._host.get_dicom(instance_id)
                self._cache.put(instance_id, data)
                return data
            finally:
                with self._lock:
                    del self._loading[instance_id]
                loading.set()

    def prefetch(self, instances: Sequence[InstanceInfo], budget: int,
                 split_size: int) -> Background:
        """Load into the cache, in the background, the files the receiver asks for first.

        A lookup answer is followed, one round trip later, by the first chunk requests:
        reading meanwhile takes the file reads out of the first buckets' latency. Our
        receivers fetch the instances they split (``split_size`` or more) first, then
        the others in ID order; ``budget`` bytes at most, so the cache keeps its files.
        """
        first = [i for i in instances if i.size >= split_size] + \
            [i for i in instances if i.size < split_size]

        def load() -> None:
            loaded = 0
            for info in first:
                if loaded + info.size > budget:
                    return
                try:
                    self.read(info.id)
                except TransfersError:      # deleted since the lookup: the chunk says so
                    continue
                loaded += info.size

        return Background(load, "TF-PREFETCH").start()

    def read_range(self, instance_ids: Sequence[str], offset: int, size: int) -> bytes:
        """The bytes a chunk request asks for (slicing of reference §3.6)."""
        sizes = [self.size_of(i) for i in instance_ids]
        parts = []
        for index, start, end in slice_concatenation(sizes, offset, size):
            data = self.read(instance_ids[index])
            parts.append(data if (start, end) == (0, len(data)) else data[start:end])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def cache(self) -> FileCache:
        return self._cache


class Announcements:
    """Instances announced by a lookup, which alone may be read through the chunks route
    when ``RestrictChunksToTransfers`` is on. An announcement lasts ``ttl`` seconds after
    its last use, so a long transfer keeps its instances readable."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def announce(self, instance_ids: Iterable[str]) -> None:
        deadline = time.monotonic() + self._ttl
        with self._lock:
            for instance_id in instance_ids:
                self._expiry[instance_id] = deadline
            if len(self._expiry) > 100_000:
                now = time.monotonic()
                self._expiry = {k: v for k, v in self._expiry.items() if v > now}

    def check(self, instance_ids: Iterable[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for instance_id in instance_ids:
                if self._expiry.get(instance_id, 0.0) < now:
                    raise Forbidden(f"Instance {instance_id} was not announced by a lookup of "
                                    "an ongoing transfer (Transfers.RestrictChunksToTransfers)")
                self._expiry[instance_id] = now + self._ttl


class FileCache:
    """LRU of whole files bounded in bytes; one file larger than the bound still fits alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
                self.hits += 1
            return data

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            if key in self._files:
                return
            self.misses += 1
            while self._files and self.used + len(data) > self.capacity:
                _, evicted = self._files.popitem(last=False)
                self.used -= len(evicted)
            self._files[key] = data
            self.used += len(data)

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self.used = 0
