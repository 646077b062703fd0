"""Assembly: build the services, the job engine and the routes over a :class:`Host`.

:func:`install` is all that ``plugin/transfers.py`` calls. Workers start on
``ORTHANC_STARTED`` (the database is not usable while the script is imported) and stop
on ``ORTHANC_STOPPED``, which ``/tools/reset`` also sends. Every piece of state has one
owner: settings, originator, metrics, peers and the instance source are in
:class:`Services`; the app adds what only it assembles (engine, receiver, announcements)
and hands each route the narrow part it needs (``rest.routes``).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from .capabilities import platform_report
from .concurrency import Throttles
from .config import parse_transfers_config, peer_problems
from .engine import JobEngine, JobStore
from .errors import BadRequest
from .hostapi import Host, ImportSettings
from .httpclient import HttpPools
from .jobs import JobEvent, JobRecord, JobState, Work
from .metrics import Metrics
from .pull import PULL_JOB_TYPE, PullWork
from .push import PUSH_JOB_TYPE, PushWork
from .push_receiver import PushReceiver
from .rest import SourceApi, register_routes, routes
from .rest_jobs import JobsApi
from .rest_transfers import ReceivingApi, StartingApi
from .routing import Route
from .services import Services
from .source import Announcements, InstanceSource
from .tracking import TRACKING_JOB_TYPE, TrackingWork


class TransfersApp:
    def __init__(self, host: Host) -> None:
        self.host = host
        config = parse_transfers_config(host.configuration())
        self.services = Services(
            host=host, config=config,
            originator=str(uuid.uuid4()),       # new at every start (reference §1)
            connections=HttpPools(config.threads * 2 + 2),
            source=InstanceSource(host, config.cache_size), metrics=Metrics(host.set_metric),
            throttles=Throttles.create(chunk_slots=config.threads))
        host.configure_imports(ImportSettings(through_http=config.import_through_http,
                                              commit_threads=config.commit_threads_count,
                                              timeout=config.http_timeout))
        self.push_receiver = PushReceiver(self.services)
        self.announcements = Announcements(config.push_transaction_timeout)
        self.engine = JobEngine(
            JobStore(self.services.staging_root / "jobs"), self._make_work,
            concurrent_jobs=config.concurrent_jobs,
            history_size=config.jobs_history_size, log_error=host.log_error)
        self.engine.listeners.append(self._count_jobs)

    def routes(self) -> list[Route[Any]]:
        """Every route, each with the narrow part of the app its handlers use."""
        services = self.services
        return routes(SourceApi(services, self.announcements), JobsApi(self.host, self.engine),
                      StartingApi(services, self.engine),
                      ReceivingApi(self.push_receiver, services.config.max_instance_size))

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
        self.host.log_warning("Transfers accelerator started, originator "
                              f"{self.services.originator}")
        for problem in peer_problems(self.host.configuration()):
            self.host.log_warning(f"Transfers: {problem}")
        for line in [*platform_report(self.host.platform()),
                     self.host.import_route().describe()]:
            self.host.log_warning(f"Transfers: {line}")

    def _count_jobs(self, job: JobRecord, event: JobEvent) -> None:
        """Metrics of the jobs (a notification: never raises into the engine)."""
        metrics = self.services.metrics
        if event is JobEvent.SUCCEED:
            metrics.add("jobs_succeeded_count")
        elif event is JobEvent.FAIL:
            metrics.add("jobs_failed_count")
        states = [j.state for j in self.engine.jobs()]
        metrics.set("jobs_running", states.count(JobState.RUNNING))
        metrics.set("jobs_pending", states.count(JobState.PENDING))

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
        self.services.source.cache.clear()


EXPLORER_JS = Path(__file__).with_name("explorer.js")


def install(host: Host) -> TransfersApp:
    app = TransfersApp(host)
    host.log_warning("Transfers accelerator settings: "
                     + json.dumps(app.services.config.describe()))
    app.engine.load()             # saved jobs are listed as soon as HTTP answers
    register_routes(host.register_route, app.routes(), host.log_error)
    host.extend_explorer(EXPLORER_JS.read_text())
    host.on_started(app.start)
    host.on_stopped(app.stop)
    return app
