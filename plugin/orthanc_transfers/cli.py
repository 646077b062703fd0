"""``orthanc-transfers``: the command-line client of the transfers accelerator.

A plain REST client (``requests`` and the standard library; it never imports
``orthanc``) for any machine that reaches an Orthanc with the plugin, e.g.
``orthanc-transfers --url https://pacs:8042 send --peer remote --wait <study id>``.
Exit codes: 0 success, 1 the watched job failed, 2 usage, connection or HTTP error
(one line on stderr, with the ``Message`` of Orthanc's JSON error when there is one).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TextIO
from urllib.parse import quote

import requests

TRANSFER_TYPES = ("PullTransfer", "PushTransfer", "PullTransferTracking")
LEVELS = ("Patient", "Study", "Series", "Instance")
ACTIONS = ("pause", "resume", "cancel", "resubmit")
EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2
#: Seconds between two plain progress lines when the display is not a terminal.
LINE_EVERY = 5.0


class CliError(Exception):
    """A usage, connection or HTTP error: reported as one line, exit code 2."""


def http_error_message(method: str, path: str, response: requests.Response) -> str:
    """One line for a failed request, with Orthanc's JSON ``Message`` when present."""
    line = f"HTTP {response.status_code} {response.reason or ''}".rstrip() + f" on {method} {path}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("Message"):
        details = body.get("Details")
        details = f" ({details})" if details and details != body["Message"] else ""
        line += f": {body['Message']}{details}"
    if response.status_code == 401:
        line += ": check --user/--password (or ORTHANC_USER/ORTHANC_PASSWORD)"
    return line


def _root_cause(error: BaseException) -> str:
    """``Connection refused`` rather than urllib3's nested representation."""
    found = re.search(r"\[(?:Errno -?\d+|SSL: \w+)\] ([^'\"]+?)(?: \(_ssl\.c:\d+\))?['\")]",
                      str(error))
    return found.group(1) if found else str(error)


class Client:
    """The REST routes the CLI uses, over one ``requests.Session``."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None,
                 verify: bool | str = True, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.verify = verify     # per request: REQUESTS_CA_BUNDLE would override session.verify
        self.session = requests.Session()
        self.session.auth = auth

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.session.request(method, self.url + path, json=body,
                                            timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as e:
            raise CliError(f"TLS error with {self.url}: {_root_cause(e)} "
                           "(see --ca-cert, --insecure)") from e
        except requests.Timeout as e:
            raise CliError(f"no answer from {self.url} within {self.timeout:g} s "
                           "(see --timeout)") from e
        except requests.ConnectionError as e:
            raise CliError(f"cannot connect to {self.url}: {_root_cause(e)}") from e
        except requests.RequestException as e:
            raise CliError(f"{method} {self.url}{path} failed: {e}") from e
        if response.status_code >= 400:
            raise CliError(http_error_message(method, path, response))
        if not response.content.strip():
            return {}
        try:
            return response.json()
        except ValueError as e:
            raise CliError(f"{method} {path} did not answer JSON: is {self.url} an Orthanc?") from e

    def peers(self) -> Any:
        return self.request("GET", "/transfers/peers")

    def transfer(self, kind: str, body: dict[str, Any]) -> Any:
        """``POST /transfers/send`` or ``/transfers/pull``."""
        return self.request("POST", f"/transfers/{kind}", body)

    def jobs(self) -> list[dict[str, Any]]:
        jobs = self.request("GET", "/jobs?expand")
        return [job for job in jobs if isinstance(job, dict)] if isinstance(jobs, list) else []

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.request("GET", f"/jobs/{quote(job_id, safe='')}")
        if not isinstance(job, dict) or "State" not in job:
            raise CliError(f"/jobs/{job_id} answered something that is not a job")
        return job

    def action(self, job_id: str, action: str) -> Any:
        return self.request("POST", f"/jobs/{quote(job_id, safe='')}/{action}", {})


# -- rendering ----------------------------------------------------------------------------

def job_content(job: dict[str, Any]) -> dict[str, Any]:
    """``Content``, completed with the remote job's for ``PullTransferTracking``."""
    content = job.get("Content")
    content = content if isinstance(content, dict) else {}
    remote = content.get("RemoteContent")
    return {**remote, **content} if isinstance(remote, dict) else content


def _number(value: Any) -> float | None:
    try:
        return None if value is None or isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        return None


def render_progress(job: dict[str, Any], width: int = 30) -> str:
    """``[#####-----]  50% Running Transfer 20 MB, 8 MB on the wire, 2.5 MB/s`` (gzip:
    fewer bytes cross the network than the total)."""
    percent = max(0, min(100, int(_number(job.get("Progress")) or 0)))
    filled = width * percent // 100
    parts = [f"[{'#' * filled}{'-' * (width - filled)}] {percent:3d}%", str(job.get("State"))]
    content = job_content(job)
    if content.get("Phase"):
        parts.append(str(content["Phase"]))
    total = _number(content.get("TotalSizeMB"))
    done = _number(content.get("DownloadedSizeMB", content.get("UploadedSizeMB")))
    speed = _number(content.get("NetworkSpeedKBs"))
    figures = [f"{total:g} MB" if total is not None else "",
               f"{done:g} MB on the wire" if done is not None else "",
               "" if speed is None else
               f"{speed / 1024:.1f} MB/s" if speed >= 1024 else f"{speed:.0f} KB/s"]
    figures = [figure for figure in figures if figure]
    waiting = render_waiting(content.get("Waiting"))
    return " ".join([*parts, ", ".join(figures)] if figures else parts) + waiting


def render_waiting(waiting: Any) -> str:
    """`` - waiting for peer b, next try in 40 s`` while a job rides out an outage."""
    if not isinstance(waiting, dict):
        return ""
    next_try = _number(waiting.get("NextTryInSeconds"))
    text = f" - waiting for peer {waiting.get('Peer')}"
    return text + (f", next try in {next_try:.0f} s" if next_try is not None else "")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(headers)] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def job_row(job: dict[str, Any]) -> list[Any]:
    content = job_content(job)
    return [job.get("ID"), job.get("Type"), job.get("State"), f"{job.get('Progress', 0)}%",
            content.get("Peer"), content.get("TotalSizeMB")]


def failure_lines(job: dict[str, Any]) -> list[str]:
    lines = [f"job {job.get('ID')} failed: {job.get('ErrorDescription') or 'unknown error'}"]
    if job.get("ErrorDetails"):
        lines.append(f"  details: {job['ErrorDetails']}")
    content = job_content(job)
    reason = content.get("FailureReason")
    if isinstance(reason, dict) and reason:
        lines.append("  reason: " + ", ".join(f"{k}={v}" for k, v in reason.items()))
    if content.get("RemoteError"):
        lines.append(f"  remote: {content['RemoteError']}")
    return lines


# -- watching -----------------------------------------------------------------------------

def watch(client: Client, job_id: str, display: TextIO, *, interval: float = 0.5,
          line_every: float = LINE_EVERY, tty: bool | None = None,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Poll the job until Success or Failure: a bar redrawn in place on a terminal,
    otherwise a line when something changed, at most every ``line_every`` s, and the last."""
    tty = display.isatty() if tty is None else tty
    printed, printed_at, width = "", float("-inf"), 0
    while True:
        job = client.job(job_id)
        line, final = render_progress(job), job.get("State") in ("Success", "Failure")
        if tty:
            display.write("\r" + line.ljust(width) + ("\n" if final else ""))
            width = len(line)
        elif line != printed and (final or time.monotonic() - printed_at >= line_every):
            display.write(f"{job_id} {line}\n")
            printed, printed_at = line, time.monotonic()
        display.flush()
        if final:
            return job
        sleep(interval)


def watch_and_finish(client: Client, job_id: str, args: argparse.Namespace) -> int:
    """Watch; with ``--json`` the progress goes to stderr and stdout gets the final job."""
    job = watch(client, job_id, sys.stderr if args.json else sys.stdout, interval=args.interval)
    if args.json:
        print(json.dumps(job, indent=2))
    if job.get("State") == "Success":
        return EXIT_OK
    for line in failure_lines(job):
        print(line, file=sys.stderr)
    return EXIT_JOB_FAILED


# -- commands -----------------------------------------------------------------------------

def cmd_peers(client: Client, args: argparse.Namespace) -> int:
    peers = client.peers()
    if args.json:
        print(json.dumps(peers, indent=2))
    elif isinstance(peers, dict) and peers:
        print(render_table(["PEER", "STATUS"], sorted(peers.items())))
    else:
        print("no peers declared")
    return EXIT_OK


def transfer_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"Resources": [{"Level": args.level, "ID": i} for i in args.ids],
                            "Peer": args.peer, "Compression": args.compression}
    if args.priority is not None:
        body["Priority"] = args.priority
    if args.outage_deadline is not None:
        body["OutageDeadline"] = args.outage_deadline
    return body


def tracking_job(client: Client, remote_job: str) -> str | None:
    """The local ``PullTransferTracking`` job that mirrors ``remote_job``."""
    return next((str(job["ID"]) for job in client.jobs()
                 if job.get("Type") == "PullTransferTracking"
                 and job_content(job).get("RemoteJob") == remote_job), None)


def cmd_transfer(client: Client, args: argparse.Namespace) -> int:
    answer = client.transfer(args.command, transfer_body(args))
    if not isinstance(answer, dict):
        raise CliError(f"unexpected answer to /transfers/{args.command}: {answer!r}")
    if "RemoteJob" in answer:                 # pull-mode send: the peer pulls from us
        remote = str(answer["RemoteJob"])
        job_id = tracking_job(client, remote)
        message = f"peer {answer.get('Peer')} pulls: remote job {remote} ({answer.get('URL')})"
        if job_id is None and args.wait:
            raise CliError(f"{message}: no local tracking job to watch, and the remote URL "
                           f"needs the credentials of peer {answer.get('Peer')}: run "
                           f"'orthanc-transfers --url <peer url> watch {remote}'")
        message += f", tracked here by job {job_id}" if job_id else ""
    else:
        job_id = str(answer.get("ID"))
        message = f"job {job_id} ({client.url}{answer.get('Path', '/jobs/' + job_id)})"
    if args.json and not args.wait:
        print(json.dumps(answer, indent=2))
    elif not args.json:
        print(message)
    return watch_and_finish(client, job_id, args) if args.wait and job_id else EXIT_OK


def cmd_jobs(client: Client, args: argparse.Namespace) -> int:
    jobs = [job for job in client.jobs() if args.all or job.get("Type") in TRANSFER_TYPES]
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif jobs:
        print(render_table(["ID", "TYPE", "STATE", "PROGRESS", "PEER", "TOTAL_MB"],
                           [job_row(job) for job in jobs]))
    else:
        print("no jobs" if args.all else "no transfer jobs")
    return EXIT_OK


def cmd_watch(client: Client, args: argparse.Namespace) -> int:
    return watch_and_finish(client, args.job, args)


def cmd_action(client: Client, args: argparse.Namespace) -> int:
    client.action(args.job, args.command)
    print(json.dumps({"ID": args.job, "Action": args.command}) if args.json
          else f"job {args.job}: {args.command} accepted")
    return EXIT_OK


# -- arguments ----------------------------------------------------------------------------

def add_global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Accepted before and after the command; after it (``defaults=False``) they default
    to ``SUPPRESS``, so they do not overwrite what was given before the command."""
    group, env = parser.add_argument_group("global options"), os.environ.get

    def add(name: str, default: Any, help_: str, **kwargs: Any) -> None:
        group.add_argument(name, default=default if defaults else argparse.SUPPRESS,
                           help=help_, **kwargs)

    add("--url", env("ORTHANC_URL", "http://localhost:8042"),
        "Orthanc's URL (env ORTHANC_URL, or http://localhost:8042)")
    add("--user", env("ORTHANC_USER"), "HTTP user (env ORTHANC_USER)")
    add("--password", env("ORTHANC_PASSWORD"), "env ORTHANC_PASSWORD; asked if missing")
    add("--insecure", False, "do not verify the server's TLS certificate", action="store_true")
    add("--ca-cert", None, "CA bundle that verifies the server's certificate", metavar="PATH")
    add("--timeout", 60.0, "seconds per HTTP request (default 60)", type=float)
    add("--json", False, "machine-readable JSON on stdout, nothing else", action="store_true")
    add("--interval", 0.5, "seconds between polls of --wait and watch (default 0.5)",
        type=float, metavar="SECONDS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orthanc-transfers",
                                     description="Client of the Orthanc transfers accelerator.")
    add_global_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        add_global_options(sub, defaults=False)
        sub.set_defaults(handler=handler)
        return sub

    command("peers", cmd_peers, "list the peers and whether the accelerator answers there")
    for name, what in (("send", "send resources to a peer (push, or pull mode)"),
                       ("pull", "pull resources from a peer into this server")):
        sub = command(name, cmd_transfer, what)
        sub.add_argument("--peer", required=True, help="peer name (OrthancPeers)")
        sub.add_argument("--compression", choices=("gzip", "none"), default="gzip",
                         help="default gzip")
        sub.add_argument("--priority", type=int, help="job priority (integer)")
        sub.add_argument("--outage-deadline", type=float, metavar="SECONDS",
                         help="how long the job waits for an unreachable peer "
                              "(default: the server's Transfers.OutageDeadline)")
        sub.add_argument("--level", choices=LEVELS, default="Study",
                         help="level of the IDs (default Study)")
        sub.add_argument("--wait", action="store_true", help="watch the job until it ends")
        sub.add_argument("ids", nargs="+", metavar="ID", help="Orthanc resource IDs")
    command("jobs", cmd_jobs, "list the transfer jobs").add_argument(
        "--all", action="store_true", help="include Orthanc's own jobs")
    command("watch", cmd_watch, "show a job's progress until it ends").add_argument("job")
    for action in ACTIONS:
        command(action, cmd_action, f"{action} a job").add_argument("job")
    return parser


def make_client(args: argparse.Namespace) -> Client:
    auth = None
    if args.user:
        password = args.password
        if password is None:        # asked on a terminal, as curl does
            password = getpass.getpass(f"Password for {args.user}: ") if sys.stdin.isatty() else ""
        auth = (args.user, password)
    verify: bool | str = True
    if args.insecure:
        verify = False
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    elif args.ca_cert:
        if not os.path.isfile(args.ca_cert):
            raise CliError(f"--ca-cert {args.ca_cert}: no such file")
        verify = args.ca_cert
    return Client(args.url, auth, verify, args.timeout)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:                   # --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        handler: Callable[[Client, argparse.Namespace], int] = args.handler
        return handler(make_client(args), args)
    except CliError as e:
        print(f"orthanc-transfers: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted (the job, if any, goes on on the server)", file=sys.stderr)
        return 130
    except Exception as e:                    # a bug or a very odd answer: still one line
        print(f"orthanc-transfers: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
