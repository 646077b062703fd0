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

from .concurrency import BIG_INSTANCE, WorkPool, run_parallel
from .errors import IntegrityError
from .services import Services
from .staging import DownloadArea


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
    with services.throttles.big_imports if big else contextlib.nullcontext():
        answer = services.host.store_file(area.path(instance_id))
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
    run_parallel(todo, store, services.host.import_route().threads, check, "TF-COMMIT")
    return len(already)


class ImportStream:
    """Imports instances as they are verified, on a :class:`WorkPool` as wide as the
    host's import route, owned by the transfer that submits to it.

    ``submit`` never blocks the transfer; ``finish`` waits and raises the first
    failure; ``abort`` drops what has not started (an import that started completes:
    Orthanc stores an instance whole or not at all).
    """

    def __init__(self, services: Services, area: DownloadArea, *,
                 check: Callable[[], None], on_imported: Callable[[str], None]) -> None:
        self._services = services
        self._area = area
        self._on_imported = on_imported
        self._pool: WorkPool[str] = WorkPool(self._store, services.host.import_route().threads,
                                             name="TF-IMPORT", check=check)
        self._lock = threading.Lock()
        self.imported: set[str] = set()

    def submit(self, instance_id: str) -> None:
        self._pool.submit((instance_id,))

    def _store(self, instance_id: str) -> list[str]:
        store_instance(self._services, self._area, instance_id)
        with self._lock:
            self.imported.add(instance_id)
        self._on_imported(instance_id)
        return []

    def raise_if_failed(self) -> None:
        """Raise the first import failure now, so that the transfer stops early."""
        error = self._pool.first_error()
        if error is not None:
            raise error

    def finish(self) -> None:
        """Wait for every submitted import; raise the first error."""
        self._pool.drain()

    def abort(self) -> None:
        self._pool.cancel()
        with contextlib.suppress(BaseException):   # the transfer's own error is the one
            self._pool.drain()
