"""The local job that follows a pull-mode send (``PullTransferTracking``).

``/transfers/send`` to a peer with ``RemoteSelf`` makes the *peer* pull (reference §5.2);
the original leaves the sender blind. This job polls the remote job and mirrors its
progress and outcome in our own ``/jobs``, so the sender sees it in Orthanc Explorer.
Pausing or cancelling it pauses or cancels the remote job; resuming or resubmitting it
does the same there.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .errors import Cancelled, Interrupted, Paused, PeerError, PeerProtocolError, TransfersError
from .jobs import RunContext
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

    def content(self) -> dict[str, Any]:
        keys = ("Peer", "RemoteJob", "URL", "Resources", "Compression")
        content: dict[str, Any] = {k: self.request[k] for k in keys if k in self.request}
        if self.remote:
            content["RemoteState"] = self.remote.get("State")
            content["RemoteContent"] = self.remote.get("Content", {})
            if self.remote.get("State") == "Failure":
                content["RemoteError"] = self.remote.get("ErrorDescription")
        return content

    def progress(self) -> float:
        return float(self.remote.get("Progress", 0)) / 100.0 if self.remote else 0.0

    def discard(self) -> None:
        pass

    def run(self, context: RunContext) -> None:
        client = self._services.client(self.request["Peer"])
        path = f"/jobs/{self.request['RemoteJob']}"
        first = True
        try:
            while True:
                context.check()
                try:
                    remote = client.get_json(path)
                except PeerError:
                    context.wait(POLL_INTERVAL * 4)   # the peer may come back
                    continue
                if not isinstance(remote, dict) or "State" not in remote:
                    raise PeerProtocolError(f"Peer answered {path} without a job State",
                                            peer=client.peer.name, uri=path)
                self.remote = remote
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
