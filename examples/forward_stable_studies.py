"""Forwards every stable study to a peer through the transfers accelerator.

Use this file as Orthanc's ``PythonScript`` instead of ``plugin/transfers.py`` (the
Python plugin runs a single script): it loads the accelerator, then adds its own
listener. Configuration::

    "PythonScript": "examples/forward_stable_studies.py",
    "TransfersForwardPeer": "<a name of OrthancPeers>"

and the environment variable ``ORTHANC_TRANSFERS_PATH`` (default
``/usr/share/orthanc-transfers``) naming the folder that holds ``transfers.py``.
"""

import json
import os
import sys

import orthanc

sys.path.insert(0, os.environ.get("ORTHANC_TRANSFERS_PATH", "/usr/share/orthanc-transfers"))
import transfers  # loads the accelerator: routes, jobs, Explorer button

PEER = json.loads(orthanc.GetConfiguration()).get("TransfersForwardPeer", "remote")


def forward_stable_study(change: int, level: int, resource: str) -> None:
    if change != orthanc.ChangeType.STABLE_STUDY:
        return
    body = json.dumps({"Resources": [{"Level": "Study", "ID": resource}],
                       "Peer": PEER, "Compression": "gzip"})
    # AfterPlugins: /transfers/send is a route of this very plugin.
    answer = json.loads(orthanc.RestApiPostAfterPlugins("/transfers/send", body))
    orthanc.LogWarning(f"Transfers accelerator: study {resource} sent to {PEER} by job "
                       f"{answer.get('ID') or answer.get('RemoteJob')}")


transfers.host.add_change_listener(forward_stable_study)
