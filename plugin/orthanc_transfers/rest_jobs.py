"""``/jobs`` as Orthanc shows it, with transfer jobs listed beside the core's own.

The plugin cannot create native jobs (python-plugin-notes §2), so these routes override
the core's: transfer jobs are answered from our engine, every other job is delegated
to the core untouched (``Host.rest_get`` skips plugins, so there is no recursion).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .engine import JobEngine
from .hostapi import Host, Request, Response
from .jobs import JobEvent
from .routing import Route


@dataclass(frozen=True)
class JobsApi:
    """What the ``/jobs`` routes use: the core's jobs (through the host) and ours."""
    host: Host
    engine: JobEngine


def get_jobs(api: JobsApi, request: Request) -> Response:
    expand = "expand" in request.args
    core = json.loads(api.host.rest_get("/jobs?expand" if expand else "/jobs"))
    ours = api.engine.jobs()
    if expand:
        return Response.json(core + [job.to_orthanc() for job in ours])
    return Response.json(core + [job.id for job in ours])


def get_job(api: JobsApi, request: Request) -> Response:
    job_id = request.groups[0]
    if api.engine.has(job_id):
        return Response.json(api.engine.get(job_id).to_orthanc())
    return Response(body=api.host.rest_get(f"/jobs/{job_id}"))


def post_job_action(api: JobsApi, request: Request) -> Response:
    job_id, action = request.groups
    if not api.engine.has(job_id):
        return Response(body=api.host.rest_post(f"/jobs/{job_id}/{action}", request.body))
    api.engine.act(job_id, JobEvent(action))
    return Response.json({})


def routes(api: JobsApi) -> list[Route[Any]]:
    return [
        Route("/jobs", api, {"GET": get_jobs}),
        # Job IDs are UUIDs; anything else (including non-UTF-8 bytes, which the Python
        # plugin cannot decode) is left to the core, and forwarded URIs cannot carry a "?".
        Route("/jobs/([0-9a-f-]+)", api, {"GET": get_job}),
        Route("/jobs/([0-9a-f-]+)/(pause|resume|cancel|resubmit)", api,
              {"POST": post_job_action}),
    ]
