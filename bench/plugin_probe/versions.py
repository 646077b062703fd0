"""What this platform is: OS, Orthanc, Python plugin, embedded interpreter, git HEAD.

Read from a running server (``/system``, ``/plugins/python``, the libpython mapped into
the process) and from files only, since the Debian 13 chroot has no git binary.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from typing import Any

import requests

from bench.topology import SETTINGS_LOG
from devkit.orthanc_server import REPO, OrthancServer

#: The first Python plugin that has the ``AllowThreads`` option.
ALLOW_THREADS_SINCE = (4, 3)


def os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key:
                values[key] = value.strip('"')
    return values


def _packed_ref(ref: str) -> str | None:
    for line in (REPO / ".git" / "packed-refs").read_text().splitlines():
        if line.endswith(" " + ref):
            return line.split()[0]
    return None


def git_head() -> str | None:
    """HEAD without the git binary (the Debian 13 chroot has none)."""
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head                                   # detached
        ref = head[5:]
        path = REPO / ".git" / ref
        return path.read_text().strip() if path.is_file() else _packed_ref(ref)
    except OSError:
        return None


def python_library(pid: int) -> str | None:
    """The libpython mapped by the process: the interpreter the plugin embeds."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                found = re.search(r"libpython(\d+\.\d+)\S*", line)
                if found:
                    return found.group(0)
    except OSError:
        pass
    return None


def platform_info(server: OrthancServer) -> dict[str, Any]:
    system = server.get_json("/system")
    python_plugin = server.get_json("/plugins/python")
    assert server.process is not None
    library = python_library(server.process.pid)
    embedded = re.search(r"\d+\.\d+", library) if library else None
    release = os_release()
    return {
        "os": release.get("PRETTY_NAME"),
        "os_version_id": release.get("VERSION_ID"),
        "orthanc_version": system.get("Version"),
        "orthanc_api_version": system.get("ApiVersion"),
        "python_plugin_version": python_plugin.get("Version"),
        "python_plugin": python_plugin,
        "embedded_python_library": library,
        "embedded_python_version": embedded.group(0) if embedded else None,
        "bench_python_version": sys.version.split()[0],
        "requests_version": requests.__version__,
        "nproc": os.cpu_count(),
        "kernel": os.uname().release,
        "git_head": git_head(),
    }


def plugin_has_allow_threads(version: str) -> bool:
    """Whether the Python plugin of this ``version`` ("4.0", "5.0") knows AllowThreads."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    return (parts[0], parts[1]) >= ALLOW_THREADS_SINCE


def plugin_settings(server: OrthancServer) -> dict[str, Any] | None:
    """The effective settings our plugin logged at start-up (the line ``bench.topology``
    reads too, there from a pair's source)."""
    for line in server.log_tail(100000).splitlines():
        if SETTINGS_LOG in line:
            with contextlib.suppress(ValueError):
                settings: dict[str, Any] = json.loads(line.split(SETTINGS_LOG, 1)[1])
                return settings
    return None
