"""Assembly: build the services, the job engine and the routes over a :class:`Host`.

:func:`install` is all that ``plugin/transfers.py`` calls. Workers start on
``ORTHANC_STARTED`` (the database is not usable while the script is imported) and stop
on ``ORTHANC_STOPPED``, which ``/tools/reset`` also sends.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from .capabilities import platform_report, releases_gil
from .concurrency import Throttles
from .config import PeerConfig, parse_transfers_config, peer_problems
from .engine import JobEngine, JobStore
from .errors import BadRequest
from .hostapi import Host
from .httpclient import HttpPools
from .importer import LocalImporter
from .jobs import JobEvent, JobRecord, JobState, Work
from .metrics import Metrics
from .peers import PeerClient
from .pull import PULL_JOB_TYPE, PullWork
from .push import PUSH_JOB_TYPE, PushWork
from .push_receiver import PushReceiver
from .rest import register_routes
from .services import Services
from .source import Announcements, InstanceSource
from .tracking import TRACKING_JOB_TYPE, TrackingWork


class TransfersApp:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.config = parse_transfers_config(host.configuration())
        self.originator = str(uuid.uuid4())     # new at every start (reference §1)
        self.metrics = Metrics(host.set_metric)
        self.services = Services(
            host=host, config=self.config, originator=self.originator,
            connections=HttpPools(self.config.threads * 2 + 2),
            source=InstanceSource(host, self.config.cache_size), metrics=self.metrics,
            importer=LocalImporter(host, host.configuration(),
                                   enabled=self.config.import_through_http,
                                   threads=self.config.commit_threads_count,
                                   timeout=self.config.http_timeout),
            throttles=Throttles.create(chunk_slots=self.config.threads))
        self.push_receiver = PushReceiver(self.services)
        self.announcements = Announcements(self.config.push_transaction_timeout)
        self.engine = JobEngine(
            JobStore(self.services.staging_root / "jobs"), self._make_work,
            concurrent_jobs=self.config.concurrent_jobs,
            history_size=self.config.jobs_history_size, log_error=host.log_error)
        self.engine.listeners.append(self._count_jobs)

    @property
    def source(self) -> InstanceSource:
        return self.services.source

    def client(self, peer: PeerConfig) -> PeerClient:
        return self.services.client(peer)

    def _make_work(self, job_type: str, request: dict[str, Any], job_id: str) -> Work:
        if job_type == PULL_JOB_TYPE:
            return PullWork(self.services, job_id, request)
        if job_type == PUSH_JOB_TYPE:
            return PushWork(self.services, job_id, request)
        if job_type == TRACKING_JOB_TYPE:
            return TrackingWork(self.services, job_id, request)
        raise BadRequest(f"Unknown transfer job type: {job_type}")

    def start(self) -> None:
        self.services.staging_root.mkdir(parents=True, exist_ok=True)
        self.push_receiver.restore()
        self.engine.start()
        self._remove_orphan_staging()
        self.host.log_warning(f"Transfers accelerator started, originator {self.originator}")
        for problem in peer_problems(self.host.configuration()):
            self.host.log_warning(f"Transfers: {problem}")
        platform = self.host.platform()
        for line in [*platform_report(platform),
                     self.services.importer.adapt(releases_gil(platform))]:
            self.host.log_warning(f"Transfers: {line}")

    def _count_jobs(self, job: JobRecord, event: JobEvent) -> None:
        """Metrics of the jobs (a notification: never raises into the engine)."""
        if event is JobEvent.SUCCEED:
            self.metrics.add("jobs_succeeded_count")
        elif event is JobEvent.FAIL:
            self.metrics.add("jobs_failed_count")
        states = [j.state for j in self.engine.jobs()]
        self.metrics.set("jobs_running", states.count(JobState.RUNNING))
        self.metrics.set("jobs_pending", states.count(JobState.PENDING))

    def _remove_orphan_staging(self) -> None:
        """Staging of jobs that are no longer listed (left behind by a crash)."""
        known = {job.id for job in self.engine.jobs()}
        for kind in ("pull", "send"):
            folder = self.services.staging_root / kind
            for directory in folder.iterdir() if folder.is_dir() else ():
                if directory.name not in known:
                    shutil.rmtree(directory, ignore_errors=True)

    def stop(self) -> None:
        self.engine.stop()
        self.push_receiver.flush()
        self.services.connections.close()
        self.services.importer.close()
        self.services.source.cache.clear()


EXPLORER_JS = Path(__file__).with_name("explorer.js")


def install(host: Host) -> TransfersApp:
    app = TransfersApp(host)
    host.log_warning("Transfers accelerator settings: " + json.dumps(app.config.describe()))
    app.engine.load()             # saved jobs are listed as soon as HTTP answers
    register_routes(app)
    host.extend_explorer(EXPLORER_JS.read_text())
    host.on_started(app.start)
    host.on_stopped(app.stop)
    return app
