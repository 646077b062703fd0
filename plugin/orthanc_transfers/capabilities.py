"""What the running Orthanc and Python plugin allow, for the start-up log.

Each fact below was measured on the versions it names (README, "Platforms"); a version
in between that was not measured is said to be so rather than guessed. Detection is by
feature where the plugin exposes one (``StartStreamAnswer``), by version only for
behaviour that no attribute reveals (request bodies kept in memory).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    """The running versions, as the adapter reads them once Orthanc has started."""
    orthanc: str = ""               # "1.12.7"
    python_plugin: str = ""         # "5.0"
    python: str = ""                # "3.13.5"
    stream_answers: bool = False    # RestOutput.StartStreamAnswer exists (plugin 5.0+)
    allow_threads: bool = False     # "Python": {"AllowThreads": true} is configured


def version_of(text: str) -> tuple[int, int] | None:
    """``"4.0"`` → (4, 0); ``"mainline"`` or "" → None."""
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def keeps_request_bodies(platform: Platform) -> bool | None:
    """Does the plugin never free the body of a POST/PUT to a Python route?
    Measured: yes on 4.0, no on 5.0; None where not measured (4.1 to 4.3)."""
    version = version_of(platform.python_plugin)
    if version is None:
        return None
    if version <= (4, 0):
        return True
    return False if version >= (5, 0) else None


def releases_gil(platform: Platform) -> bool:
    """Do calls into Orthanc let other Python threads run (AllowThreads, plugin 4.3+)?"""
    version = version_of(platform.python_plugin)
    return platform.allow_threads and version is not None and version >= (4, 3)


def platform_report(platform: Platform) -> list[str]:
    """One line per fact that changes what the plugin does or what users should know."""
    plugin = version_of(platform.python_plugin)
    lines = [f"Orthanc {platform.orthanc or '?'}, Python plugin {platform.python_plugin or '?'},"
             f" Python {platform.python or '?'}"]
    kept = keeps_request_bodies(platform)
    if kept:
        lines.append("WARNING: this Python plugin never frees the bodies of PUT/POST requests "
                     "to Python routes, so a push receiver keeps what it receives in memory "
                     "until Orthanc restarts; prefer pull mode (RemoteSelf) towards this "
                     "Orthanc, or orthanc-python 5.0 or later")
    elif kept is None:
        lines.append("request bodies of Python routes: not measured on this plugin version "
                     "(plugin 4.0 keeps them in memory, 5.0 frees them)")
    else:
        lines.append("request bodies of Python routes are freed after each request")
    if releases_gil(platform):
        lines.append("AllowThreads: on")
    elif plugin is not None and plugin >= (4, 3):
        lines.append('AllowThreads: off; "Python": {"AllowThreads": true} imports about 1.9 '
                     "times as fast and keeps Python routes responsive (README, Platforms)")
    else:
        lines.append("AllowThreads: not available (plugin 4.3 or later): every call into "
                     "Orthanc holds the GIL")
    lines.append("stream answers: " + (
        "available; buckets are still sent whole, since Orthanc closes the connection after "
        "each stream answer" if platform.stream_answers else "not available (plugin 5.0)"))
    return lines


#: Threads importing at once where Orthanc takes imports in parallel (at least;
#: ``CommitThreadsCount`` may ask for more).
PARALLEL_IMPORTS = 4


def imports_through_http(requested: bool | None, http_usable: bool, releases_gil: bool) -> bool:
    """Post imports to this Orthanc's own ``/instances`` over loopback?

    Without AllowThreads every ``RestApiPost`` holds the GIL, so imports from several
    threads run one at a time (python-plugin-notes §3-4) while Orthanc's HTTP server has
    no such limit: 1.5 times as fast. With AllowThreads ``RestApiPost`` runs in parallel
    and is faster still (350 against 300 instances/s, bench/plugin_probe.py), so "auto"
    (``requested`` None) then leaves HTTP. ``http_usable``: the HTTP server is on and is
    not HTTPS (whose server crashes Orthanc 1.10.1 on Debian 12).
    """
    if requested is False or not http_usable:
        return False
    return requested is True or not releases_gil


def import_threads(commit_threads: int, through_http: bool, releases_gil: bool) -> int:
    """Imports to run at once: parallel only where Orthanc can take them in parallel."""
    return max(commit_threads, PARALLEL_IMPORTS) if through_http or releases_gil \
        else commit_threads
