"""Build step: make sure the image's own C++ transfers plugin can never be loaded.

The ``orthancteam/orthanc`` image decides at every start-up which plugins to load: a
plugin is enabled by its ``*_PLUGIN_ENABLED`` variable **or as soon as its configuration
section is present**. The C++ transfers accelerator (``libOrthancTransfers.so``) reads
the same ``Transfers`` section as this plugin, so our ``/etc/orthanc/transfers.json``
alone would enable it, and both would register the same routes.

This script, run once by ``docker/Dockerfile``:

* removes the ``Transfers`` entry from the start-up scripts' plugin table
  (``/startup/plugins-def*.json``), so neither a ``Transfers`` section nor
  ``TRANSFERS_PLUGIN_ENABLED`` can enable the C++ plugin any more;
* deletes ``libOrthancTransfers.so`` from the image, so nothing can load it by hand.

It fails the build when the image no longer has the layout it expects (no plugin
table), rather than leaving a doubt about which plugin answers ``/transfers/*``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PLUGIN_TABLE_GLOB = "startup/plugins-def*.json"
CPP_PLUGIN_ENTRY = "Transfers"
CPP_PLUGIN_LIBRARY = "libOrthancTransfers.so"
# plugins-available is where the image keeps every library; plugins-disabled is its
# older name (a symbolic link to it in recent images); plugins is what Orthanc loads;
# /run/orthanc/plugins is used by read-only containers.
LIBRARY_DIRECTORIES = (
    "usr/share/orthanc/plugins-available",
    "usr/share/orthanc/plugins-disabled",
    "usr/share/orthanc/plugins",
    "run/orthanc/plugins",
)


class LayoutError(RuntimeError):
    """The image does not look like the orthancteam/orthanc layout this script knows."""


def remove_plugin_entry(table: Path) -> bool:
    """Drop the C++ transfers entry from one plugin table; True if it was there."""
    plugins = json.loads(table.read_text())
    if not isinstance(plugins, dict):
        raise LayoutError(f"{table} is not a JSON object")
    if CPP_PLUGIN_ENTRY not in plugins:
        return False
    del plugins[CPP_PLUGIN_ENTRY]
    table.write_text(json.dumps(plugins, indent=2) + "\n")
    return True


def remove_libraries(root: Path) -> list[Path]:
    """Delete every copy of the C++ library; returns the paths removed."""
    removed = []
    for directory in LIBRARY_DIRECTORIES:
        library = root / directory / CPP_PLUGIN_LIBRARY
        if library.is_file() or library.is_symlink():
            library.unlink()
            removed.append(library)
    return removed


def disable(root: Path) -> list[str]:
    """Disable the C++ plugin in the image rooted at ``root``; returns what was done."""
    tables = sorted(root.glob(PLUGIN_TABLE_GLOB))
    if not tables:
        raise LayoutError(f"no {PLUGIN_TABLE_GLOB} under {root}: unknown image layout")
    done = [f"removed the {CPP_PLUGIN_ENTRY!r} entry from {table}"
            for table in tables if remove_plugin_entry(table)]
    done += [f"deleted {library}" for library in remove_libraries(root)]
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="root of the image's file system (default: /)")
    args = parser.parse_args(argv)
    try:
        done = disable(args.root)
    except (LayoutError, OSError, ValueError) as e:
        print(f"disable_cpp_transfers: {e}", file=sys.stderr)
        return 1
    for line in done or ["the C++ transfers plugin was already absent"]:
        print(f"disable_cpp_transfers: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
