"""Importing a verified download area into Orthanc (pull jobs and push commits).

Nothing is imported until every instance of the transfer is complete and its MD5
matches (reference §20.6): a failed transfer leaves no partial study. Instances that
Orthanc already stores with the same MD5 are not imported again, which makes a
retried commit, or a resumed one, harmless.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import IntegrityError
from .services import Services
from .staging import DownloadArea
from .workers import run_parallel


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

    def store(instance_id: str) -> list[str]:
        info = area.instances[instance_id]
        if services.stored_md5(instance_id) == info.md5:
            already.append(instance_id)
        else:
            answer = services.importer.store_file(area.path(instance_id))
            if answer.get("ID") != instance_id:
                raise IntegrityError(
                    f"Orthanc stored instance {instance_id} under another ID: "
                    f"{answer.get('ID')}", instance=instance_id)
        on_imported(instance_id)
        return []

    run_parallel(sorted(area.instances), store, services.importer.threads, check, "TF-COMMIT")
    return len(already)
