"""Importing verified instances into Orthanc (pull jobs and push commits).

By default nothing is imported until every instance of the transfer is complete and
its MD5 matches (reference §20.6): a failed transfer leaves no partial study. With
``ImportDuringTransfer`` an :class:`ImportStream` imports each instance as soon as it
is verified, while the rest is still on the wire; the end of the transfer then only
waits for the last few. Either way a stored instance is always whole and verified, and
instances that Orthanc already stores with the same MD5 are not imported again, which
makes a retried commit, or a resumed one, harmless.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor

from .errors import Cancelled, IntegrityError
from .services import Services
from .staging import DownloadArea
from .workers import run_parallel

#: Instances above this size (bytes) are imported one at a time.
BIG_INSTANCE = 64 * 1024 * 1024
# Orthanc holds about 3 times a file while storing it: large ones go one by one, so
# that parallel imports do not multiply that (4 x 1 GB = 12 GB).
_ONE_BIG_AT_A_TIME = threading.Lock()


def check_complete(area: DownloadArea) -> None:
    """Verify what was never verified; raise naming what is missing or corrupted."""
    area.verify_unverified_complete()
    missing = sorted(set(area.instances) - area.verified)
    if missing:
        raise IntegrityError(
            f"{len(missing)} instance(s) are incomplete, none of them was imported "
            f"(first: {missing[0]})", instance=missing[0])


def store_instance(services: Services, area: DownloadArea, instance_id: str) -> bool:
    """Store one verified instance unless Orthanc has it; True if it was stored already."""
    info = area.instances[instance_id]
    if services.stored_md5(instance_id) == info.md5:
        return True
    big = info.size > BIG_INSTANCE
    with _ONE_BIG_AT_A_TIME if big else contextlib.nullcontext():
        answer = services.importer.store_file(area.path(instance_id))
    if answer.get("ID") != instance_id:
        raise IntegrityError(f"Orthanc stored instance {instance_id} under another ID: "
                             f"{answer.get('ID')}", instance=instance_id)
    return False


def import_area(services: Services, area: DownloadArea, *, check: Callable[[], None],
                on_imported: Callable[[str], None],
                imported: Collection[str] = ()) -> int:
    """Import every instance not in ``imported``, in ID order, on several threads where
    that helps. Returns how many were already stored (and so skipped)."""
    check_complete(area)
    already: list[str] = []

    def store(instance_id: str) -> list[str]:
        if store_instance(services, area, instance_id):
            already.append(instance_id)
        on_imported(instance_id)
        return []

    todo = sorted(set(area.instances) - set(imported))
    run_parallel(todo, store, services.importer.threads, check, "TF-COMMIT")
    return len(already)


class ImportStream:
    """Imports instances as they are verified, on the importer's threads.

    ``submit`` never blocks the transfer; ``finish`` waits and raises the first
    failure; ``abort`` drops what has not started (an import that started completes:
    Orthanc stores an instance whole or not at all).
    """

    def __init__(self, services: Services, area: DownloadArea, *,
                 check: Callable[[], None], on_imported: Callable[[str], None]) -> None:
        self._services = services
        self._area = area
        self._check = check
        self._on_imported = on_imported
        self._pool = ThreadPoolExecutor(services.importer.threads,
                                        thread_name_prefix="TF-IMPORT")
        self._futures: list[Future[None]] = []
        self._lock = threading.Lock()
        self._aborted = False
        self._error: BaseException | None = None
        self.imported: set[str] = set()

    def submit(self, instance_id: str) -> None:
        with self._lock:
            if not self._aborted:
                self._futures.append(self._pool.submit(self._store, instance_id))

    def _store(self, instance_id: str) -> None:
        if self._aborted:
            raise Cancelled("import stream aborted")
        try:
            self._check()
            store_instance(self._services, self._area, instance_id)
        except BaseException as e:
            with self._lock:
                self._error = self._error or e
            raise
        with self._lock:
            self.imported.add(instance_id)
        self._on_imported(instance_id)

    def raise_if_failed(self) -> None:
        """Raise the first import failure now, so that the transfer stops early."""
        with self._lock:
            error = self._error
        if error is not None:
            raise error

    def finish(self) -> None:
        """Wait for every submitted import; raise the first error."""
        try:
            for future in list(self._futures):
                future.result()
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            futures = list(self._futures)
        for future in futures:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
