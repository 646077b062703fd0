"""``PythonScript`` for benchmark experiments only: the plugin with another zlib level.

The plugin compresses buckets at zlib level 6 (``orthanc_transfers.protocol.GZIP_LEVEL``,
like the original). To measure what another level would give without touching the
plugin, the benchmark can load this script instead of ``plugin/transfers.py``: it reads
``"TransfersBench": {"GzipLevel": N}`` from the Orthanc configuration, rebinds
``encode_payload`` where the push sender and the chunk server use it, then runs the
plugin's own script unchanged. Anything unexpected stops Orthanc from loading the plugin.
"""

from __future__ import annotations

import importlib
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import orthanc

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "plugin"
sys.path.insert(0, str(PLUGIN_DIR))


def _patch(level: int) -> None:
    protocol = importlib.import_module("orthanc_transfers.protocol")
    original = protocol.encode_payload

    def encode_payload(data: bytes, compression: Any, level_: int = level) -> bytes:
        result: bytes = original(data, compression, level_)
        return result

    for name in ("orthanc_transfers.rest", "orthanc_transfers.push"):
        module = importlib.import_module(name)
        if getattr(module, "encode_payload", None) is not original:
            raise RuntimeError(f"{name} no longer uses protocol.encode_payload: update the shim")
        module.encode_payload = encode_payload   # type: ignore[attr-defined]


_settings = json.loads(orthanc.GetConfiguration()).get("TransfersBench", {})
if "GzipLevel" in _settings:
    _patch(int(_settings["GzipLevel"]))
    orthanc.LogWarning(f"bench shim: buckets compressed at zlib level {_settings['GzipLevel']}")
runpy.run_path(str(PLUGIN_DIR / "transfers.py"), run_name="transfers")
