"""Importing a verified download area into Orthanc (pull jobs and push commits).

Nothing is imported until every instance of the transfer is complete and its MD5
matches (reference §20.6): a failed transfer leaves no partial study. Instances that
Orthanc already stores with the same MD5 are not imported again, which makes a
retried commit, or a resumed one, harmless.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from .errors import IntegrityError
from .services import Services
from .staging import DownloadArea
from .workers import run_parallel

#: Instances above this size (bytes) are imported one at a time.
BIG_INSTANCE = 64 * 1024 * 1024


def check_complete(area: DownloadArea) -> None:
    """Verify what was never verified; raise naming what is missing or corrupted."""
    area.verify_unverified_complete()
    missing = sorted(set(area.instances) - area.verified)
    if missing:
        raise IntegrityError(
            f"{len(missing)} instance(s) are incomplete, nothing was imported "
            f"(first: {missing[0]})", instance=missing[0])


def import_area(services: Services, area: DownloadArea, *, check: Callable[[], None],
                on_imported: Callable[[str], None]) -> int:
    """Import every instance in ID order (on several threads where that helps).

    Returns how many were already stored (and so skipped).
    """
    check_complete(area)
    already: list[str] = []
    one_big_at_a_time = threading.Lock()

    def store(instance_id: str) -> list[str]:
        info = area.instances[instance_id]
        if services.stored_md5(instance_id) == info.md5:
            already.append(instance_id)
        else:
            # Orthanc holds about 3 times a file while storing it: large ones go one by
            # one, so that parallel imports do not multiply that (4 x 1 GB = 12 GB).
            with one_big_at_a_time if info.size > BIG_INSTANCE else contextlib.nullcontext():
                answer = services.importer.store_file(area.path(instance_id))
            if answer.get("ID") != instance_id:
                raise IntegrityError(
                    f"Orthanc stored instance {instance_id} under another ID: "
                    f"{answer.get('ID')}", instance=instance_id)
        on_imported(instance_id)
        return []

    run_parallel(sorted(area.instances), store, services.importer.threads, check, "TF-COMMIT")
    return len(already)
