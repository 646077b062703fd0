"""Container health check: Orthanc answers, its database too, and this plugin is loaded.

Run by the ``HEALTHCHECK`` of ``docker/Dockerfile`` inside the container. It reads the
configuration that the image's start-up scripts generate (``/tmp/orthanc.json``) for the
HTTP port, HTTPS and the credentials (the first of ``RegisteredUsers`` when
``AuthenticationEnabled``), then asks:

* ``GET /changes?last``: Orthanc and its database answer (what the image's own probe
  checks);
* ``GET /plugins/transfers``: the transfers plugin is loaded (a Python script that failed
  to import would leave Orthanc up without it).

Exit code 0 when healthy, 1 otherwise (with the reason on standard output). Standard
library only: it runs with the image's ``python3``.
"""

from __future__ import annotations

import argparse
import base64
import json
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/tmp/orthanc.json")   # the image's CMD: the generated configuration
DEFAULT_PORT = 8042
PLUGIN_ID = "transfers"


class Unhealthy(Exception):
    """One check failed; the message says which and why."""


def load_configuration(path: Path) -> dict[str, Any]:
    """The generated configuration, or an empty one if it cannot be read."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def base_url(config: dict[str, Any], host: str = "127.0.0.1") -> str:
    scheme = "https" if config.get("SslEnabled") else "http"
    port = config.get("HttpPort", DEFAULT_PORT)
    return f"{scheme}://{host}:{port}"


def credentials(config: dict[str, Any]) -> tuple[str, str] | None:
    """The first registered user when authentication is on (the image's default)."""
    if not config.get("AuthenticationEnabled", True):
        return None
    users = config.get("RegisteredUsers")
    if isinstance(users, dict):
        for user, password in users.items():
            return str(user), str(password)
    return None


def get_json(url: str, auth: tuple[str, str] | None, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context()
    context.check_hostname = False                 # the certificate names the public host
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise Unhealthy(f"GET {url} answered HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise Unhealthy(f"GET {url} failed: {e}") from None
    except ValueError:
        raise Unhealthy(f"GET {url} did not answer JSON") from None


def check(config: dict[str, Any], timeout: float) -> str:
    """Run both checks; returns a one-line summary or raises :class:`Unhealthy`."""
    url = base_url(config)
    auth = credentials(config)
    get_json(f"{url}/changes?last", auth, timeout)
    plugin = get_json(f"{url}/plugins/{PLUGIN_ID}", auth, timeout)
    if not isinstance(plugin, dict) or plugin.get("ID") != PLUGIN_ID:
        raise Unhealthy(f"/plugins/{PLUGIN_ID} does not describe the transfers plugin: "
                        f"{plugin!r}")
    return f"healthy: Orthanc at {url}, transfers plugin {plugin.get('Version', '?')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"Orthanc configuration to read (default: {DEFAULT_CONFIG})")
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds per request")
    args = parser.parse_args(argv)
    try:
        print(check(load_configuration(args.config), args.timeout))
    except Unhealthy as e:
        print(f"unhealthy: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
