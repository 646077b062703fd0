"""The Lua and Python examples of the README, run as a user would: real servers, a
study stored on one, and the example forwarding it to the other once stable."""

from __future__ import annotations

from typing import Any

import pytest

from devkit.orthanc_server import PLUGIN_SCRIPT, REPO, wait_for

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize("language", ["lua", "python"])
def test_example_forwards_stable_studies(make_cluster: Any, study_files: list[bytes],
                                         language: str) -> None:
    if language == "lua":
        source_config = {"LuaScripts": [str(EXAMPLES / "forward-stable-studies.lua")]}
    else:
        source_config = {"PythonScript": str(EXAMPLES / "forward_stable_studies.py")}
    a, b = make_cluster(
        ["a", "b"], per_server={"a": {**source_config, "TransfersForwardPeer": "b"}},
        env={"ORTHANC_TRANSFERS_PATH": str(PLUGIN_SCRIPT.parent)})
    a.upload(study_files[:8])
    # StableAge is 2 s in the test servers; then the example sends the study.
    wait_for(lambda: len(b.get_json("/instances")) == 8, 60, "the study to reach b")
    jobs = [j for j in a.get_json("/jobs?expand") if j["Type"] == "PushTransfer"]
    assert len(jobs) == 1
    assert a.wait_job(jobs[0]["ID"])["State"] == "Success"
    assert b.instance_md5s() == a.instance_md5s()
    assert "Transfers accelerator: study" in a.log_path.read_text()
