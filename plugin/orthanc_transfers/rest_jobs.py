"""``/jobs`` as Orthanc shows it, with transfer jobs listed beside the core's own.

The plugin cannot create native jobs (python-plugin-notes §2), so these routes override
the core's: transfer jobs are answered from our engine, every other job is delegated
to the core untouched (``Host.rest_get`` skips plugins, so there is no recursion).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .hostapi import Request, Response
from .jobs import JobEvent
from .routing import Route

if TYPE_CHECKING:
    from .app import TransfersApp


def get_jobs(app: TransfersApp, request: Request) -> Response:
    expand = "expand" in request.args
    core = json.loads(app.host.rest_get("/jobs?expand" if expand else "/jobs"))
    ours = app.engine.jobs()
    if expand:
        return Response.json(core + [job.to_orthanc() for job in ours])
    return Response.json(core + [job.id for job in ours])


def get_job(app: TransfersApp, request: Request) -> Response:
    job_id = request.groups[0]
    if app.engine.has(job_id):
        return Response.json(app.engine.get(job_id).to_orthanc())
    return Response(body=app.host.rest_get(f"/jobs/{job_id}"))


def post_job_action(app: TransfersApp, request: Request) -> Response:
    job_id, action = request.groups
    if not app.engine.has(job_id):
        return Response(body=app.host.rest_post(f"/jobs/{job_id}/{action}", request.body))
    app.engine.act(job_id, JobEvent(action))
    return Response.json({})


ROUTES = [
    Route("/jobs", {"GET": get_jobs}),
    # Job IDs are UUIDs; anything else (including non-UTF-8 bytes, which the Python
    # plugin cannot decode) is left to the core, and forwarded URIs cannot carry a "?".
    Route("/jobs/([0-9a-f-]+)", {"GET": get_job}),
    Route("/jobs/([0-9a-f-]+)/(pause|resume|cancel|resubmit)", {"POST": post_job_action}),
]
