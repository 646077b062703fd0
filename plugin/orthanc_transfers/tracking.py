"""The local job that follows a pull-mode send (``PullTransferTracking``).

``/transfers/send`` to a peer with ``RemoteSelf`` makes the *peer* pull (reference §5.2);
the original leaves the sender blind. This job polls the remote job and mirrors its
progress and outcome in our own ``/jobs``, so the sender sees it in Orthanc Explorer.
Pausing or cancelling it pauses or cancels the remote job; resuming or resubmitting it
does the same there.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from .errors import (
    Cancelled,
    Interrupted,
    Paused,
    PeerError,
    PeerProtocolError,
    PeerUnreachable,
    TransfersError,
)
from .jobs import RunContext
from .outage import OutageLog, OutagePolicy, is_outage, wait_before_probe
from .peers import PeerClient
from .services import Services

TRACKING_JOB_TYPE = "PullTransferTracking"
#: Seconds between two polls of the remote job.
POLL_INTERVAL = 0.5


class TrackingWork:
    def __init__(self, services: Services, job_id: str, request: dict[str, Any]) -> None:
        self._services = services
        self.job_id = job_id
        self.request = request
        self.remote: dict[str, Any] = {}
        self.outages = OutageLog()

    def content(self) -> dict[str, Any]:
        keys = ("Peer", "RemoteJob", "URL", "Resources", "Compression")
        content: dict[str, Any] = {k: self.request[k] for k in keys if k in self.request}
        if self.remote:
            content["RemoteState"] = self.remote.get("State")
            content["RemoteContent"] = self.remote.get("Content", {})
            if self.remote.get("State") == "Failure":
                content["RemoteError"] = self.remote.get("ErrorDescription")
        content.update(self.outages.content(self._policy(), time.monotonic()))
        return content

    def progress(self) -> float:
        return float(self.remote.get("Progress", 0)) / 100.0 if self.remote else 0.0

    def discard(self) -> None:
        pass

    def run(self, context: RunContext) -> None:
        client = self._services.client(self.request["Peer"])
        path = f"/jobs/{self.request['RemoteJob']}"
        self.outages = OutageLog()
        first = True
        try:
            while True:
                context.check()
                remote = self._poll(client, path, context)
                if remote is None:
                    continue
                state = remote["State"]
                if first and state in ("Paused", "Failure"):
                    action = "resume" if state == "Paused" else "resubmit"
                    client.send("POST", f"{path}/{action}", body=b"")
                elif state == "Success":
                    return
                elif state == "Failure" and not first:
                    raise TransfersError(f"The remote pull job failed on {client.peer.name}: "
                                         f"{remote.get('ErrorDescription', '')}",
                                         str(remote.get("ErrorDetails", "")))
                first = False
                context.changed()
                context.wait(POLL_INTERVAL)
        except (Paused, Cancelled) as stop:
            if not isinstance(stop, Interrupted):
                action = "pause" if isinstance(stop, Paused) else "cancel"
                with contextlib.suppress(PeerError):
                    client.send("POST", f"{path}/{action}", body=b"")
            raise

    def _poll(self, client: PeerClient, path: str, context: RunContext) -> dict[str, Any] | None:
        """The remote job, or None after a wait for a peer that did not answer."""
        try:
            remote = client.get_json(path)
        except PeerError as e:
            if not is_outage(e):
                raise        # the job is gone (404), or we may not see it (401, 403)
            self._wait(client, e, context)
            return None
        if not isinstance(remote, dict) or "State" not in remote:
            raise PeerProtocolError(f"Peer answered {path} without a job State",
                                    peer=client.peer.name, uri=path)
        self.outages.end()
        self.remote = remote
        return remote

    def _wait(self, client: PeerClient, error: PeerError, context: RunContext) -> None:
        """The remote job goes on by itself: wait, then poll again, until the deadline."""
        policy = self._policy()
        outage, new = self.outages.begin(client.peer.name, str(error), time.monotonic())
        if new:
            self._services.metrics.add("outages_count")
        with context.waiting():
            if not wait_before_probe(self.outages, outage, policy, context,
                                     self._services.metrics):
                raise PeerUnreachable(
                    f"Lost contact with peer {client.peer.name} for longer than the outage "
                    f"deadline ({policy.deadline:g} s); its pull job may still run: "
                    f"{self.request.get('URL', '')}", peer=client.peer.name,
                    uri=error.uri) from error

    def _policy(self) -> OutagePolicy:
        requested = self.request.get("OutageDeadline")
        return OutagePolicy(self._services.config.outage_deadline_of(
            float(requested) if isinstance(requested, (int, float)) else None))
