"""Load demo DICOM into an Orthanc server: the ``demo-loader`` service of the compose file.

Standard library only (it runs with the ``python3`` of the Orthanc image, nothing to
install). It waits until ``GET /system`` answers, then uploads:

* a generated study (by default 20 small CT-like slices in one series and one 10 MiB
  multi-frame instance in another, so the transfer shows both buckets of grouped small
  instances and a large instance cut into slices): synthetic pixels, a made-up patient
  ``Transfers^Demo``, UIDs derived from ``--seed`` so a second run stores nothing new;
* every file under ``--dir`` too, if given (files Orthanc refuses are reported, not
  fatal).

It prints the Orthanc IDs of the studies and the commands that move them.

Usage: ``python3 load_demo.py --url http://localhost:8042 --user admin --password ...``
(each option also reads an environment variable: ``ORTHANC_URL``, ``ORTHANC_USER``,
``ORTHANC_PASSWORD``, ``DEMO_DICOM_DIR``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"
IMPLEMENTATION_CLASS_UID = "2.25.83313915133311497327066474367371236096"
UID_NAMESPACE = uuid.UUID("6f1f8b8e-2b7e-4f55-9a57-0d1c5e3b7a10")
# VRs whose length is written on 4 bytes after 2 reserved bytes (PS3.5 7.1.2)
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


# -- a minimal DICOM Part 10 writer (explicit VR little endian) ------------------------


def uid(seed: str, *parts: object) -> str:
    """A deterministic UID under the 2.25 root (PS3.5 B.2): same inputs, same UID."""
    return "2.25." + str(uuid.uuid5(UID_NAMESPACE, "/".join(map(str, (seed, *parts)))).int)


def _pad(vr: str, value: bytes) -> bytes:
    if len(value) % 2 == 0:
        return value
    return value + (b"\0" if vr in {"UI", "OB"} else b" ")


def element(group: int, elem: int, vr: str, value: str | int | bytes) -> bytes:
    """One data element; strings are ASCII, ``US`` and ``UL`` integers, others bytes."""
    if isinstance(value, int):
        raw = struct.pack("<H" if vr == "US" else "<I", value)
    elif isinstance(value, str):
        raw = value.encode("ascii")
    else:
        raw = value
    raw = _pad(vr, raw)
    header = struct.pack("<HH", group, elem) + vr.encode("ascii")
    if vr in LONG_VRS:
        return header + struct.pack("<HI", 0, len(raw)) + raw
    return header + struct.pack("<H", len(raw)) + raw


Element = tuple[int, int, str, str | int | bytes]   # group, element, VR, value


def part10(sop_class: str, sop_instance: str, dataset: list[Element]) -> bytes:
    """Preamble, ``DICM``, file meta information, then the dataset in tag order."""
    meta = b"".join([
        element(0x0002, 0x0001, "OB", b"\0\1"),
        element(0x0002, 0x0002, "UI", sop_class),
        element(0x0002, 0x0003, "UI", sop_instance),
        element(0x0002, 0x0010, "UI", EXPLICIT_VR_LITTLE_ENDIAN),
        element(0x0002, 0x0012, "UI", IMPLEMENTATION_CLASS_UID),
    ])
    group_length = element(0x0002, 0x0000, "UL", len(meta))
    body = b"".join(element(*e) for e in sorted(dataset, key=lambda e: (e[0], e[1])))
    return b"\0" * 128 + b"DICM" + group_length + meta + body


def pixels(rows: int, columns: int, frames: int, offset: int) -> bytes:
    """16-bit unsigned pixels: a gradient (compressible), different for each instance."""
    row = b"".join(struct.pack("<H", (offset * 37 + x * 16) % 4096) for x in range(columns))
    frame = b"".join(row[(y % columns) * 2:] + row[:(y % columns) * 2] for y in range(rows))
    return frame * frames


@dataclass
class Instance:
    data: bytes
    description: str


@dataclass
class Study:
    seed: str
    study_uid: str = field(init=False)

    def __post_init__(self) -> None:
        self.study_uid = uid(self.seed, "study")

    def instance(self, series: int, number: int, *, rows: int, columns: int,
                 frames: int = 1) -> Instance:
        multiframe = frames > 1
        sop_class = MULTIFRAME_WORD_SC_STORAGE if multiframe else CT_IMAGE_STORAGE
        sop_instance = uid(self.seed, "instance", series, number)
        modality = "OT" if multiframe else "CT"
        description = "multi-frame" if multiframe else "slices"
        dataset: list[Element] = [
            (0x0008, 0x0016, "UI", sop_class),
            (0x0008, 0x0018, "UI", sop_instance),
            (0x0008, 0x0020, "DA", "20240101"),
            (0x0008, 0x0030, "TM", "120000"),
            (0x0008, 0x0060, "CS", modality),
            (0x0008, 0x1030, "LO", "Transfers accelerator demo"),
            (0x0008, 0x103E, "LO", f"Demo {description}"),
            (0x0010, 0x0010, "PN", "Transfers^Demo"),
            (0x0010, 0x0020, "LO", f"DEMO-{self.seed}"[:64]),
            (0x0020, 0x000D, "UI", self.study_uid),
            (0x0020, 0x000E, "UI", uid(self.seed, "series", series)),
            (0x0020, 0x0010, "SH", "1"),
            (0x0020, 0x0011, "IS", str(series)),
            (0x0020, 0x0013, "IS", str(number)),
            (0x0028, 0x0002, "US", 1),
            (0x0028, 0x0004, "CS", "MONOCHROME2"),
            (0x0028, 0x0010, "US", rows),
            (0x0028, 0x0011, "US", columns),
            (0x0028, 0x0100, "US", 16),
            (0x0028, 0x0101, "US", 12),
            (0x0028, 0x0102, "US", 11),
            (0x0028, 0x0103, "US", 0),
            (0x7FE0, 0x0010, "OW", pixels(rows, columns, frames, number + 100 * series)),
        ]
        if multiframe:
            dataset.append((0x0028, 0x0008, "IS", str(frames)))
        return Instance(part10(sop_class, sop_instance, dataset),
                        f"series {series} {description} #{number}")


def demo_study(seed: str = "demo", slices: int = 20, large_mb: float = 10.0) -> list[Instance]:
    """``slices`` 256x256 CT slices, plus one multi-frame instance of about ``large_mb``."""
    study = Study(seed)
    instances = [study.instance(1, n, rows=256, columns=256) for n in range(1, slices + 1)]
    frame_bytes = 512 * 512 * 2
    frames = int(large_mb * 1024 * 1024) // frame_bytes
    if frames >= 1:
        instances.append(study.instance(2, 1, rows=512, columns=512, frames=frames))
    return instances


# -- Orthanc REST ----------------------------------------------------------------------


class OrthancError(RuntimeError):
    pass


@dataclass
class Orthanc:
    url: str
    user: str | None = None
    password: str | None = None
    timeout: float = 60.0

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> Any:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body,
                                         method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read() or b"null")

    def wait_until_up(self, timeout: float) -> dict[str, Any]:
        """Poll ``/system``; a 401 fails at once (wrong credentials will not heal)."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            try:
                system: dict[str, Any] = self.request("GET", "/system")
                return system
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise OrthancError(f"{self.url} refused the credentials (HTTP {e.code})"
                                       ) from None
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError, ValueError) as e:
                last = str(e)
            time.sleep(1.0)
        raise OrthancError(f"{self.url}/system did not answer within {timeout:.0f} s: {last}")

    def upload(self, data: bytes) -> dict[str, Any]:
        answer: dict[str, Any] = self.request("POST", "/instances", data, "application/dicom")
        return answer


def files_under(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=env("ORTHANC_URL", "http://localhost:8042"))
    parser.add_argument("--user", default=env("ORTHANC_USER"))
    parser.add_argument("--password", default=env("ORTHANC_PASSWORD"))
    parser.add_argument("--dir", type=Path, default=env("DEMO_DICOM_DIR"),
                        help="also upload every file under this directory")
    parser.add_argument("--slices", type=int, default=20, help="small instances (default 20)")
    parser.add_argument("--large-mb", type=float, default=10.0,
                        help="size of the multi-frame instance in MiB, 0 for none")
    parser.add_argument("--seed", default="demo", help="another seed makes another study")
    parser.add_argument("--wait", type=float, default=180.0,
                        help="seconds to wait for /system (default 180)")
    args = parser.parse_args(argv)

    orthanc = Orthanc(args.url, args.user, args.password)
    try:
        system = orthanc.wait_until_up(args.wait)
        print(f"{args.url}: Orthanc {system.get('Version', '?')} ({system.get('Name', '?')})")
        studies: dict[str, int] = {}
        total = 0
        sources: list[tuple[str, bytes]] = [
            (i.description, i.data) for i in demo_study(args.seed, args.slices, args.large_mb)]
        if args.dir is not None:
            sources += [(str(p), p.read_bytes()) for p in files_under(args.dir)]
        for name, data in sources:
            try:
                answer = orthanc.upload(data)
            except urllib.error.HTTPError as e:
                print(f"  refused by Orthanc (HTTP {e.code}): {name}")
                continue
            studies[answer["ParentStudy"]] = studies.get(answer["ParentStudy"], 0) + 1
            total += len(data)
    except (OrthancError, urllib.error.URLError, OSError) as e:
        print(f"load_demo: {e}", file=sys.stderr)
        return 1

    print(f"uploaded {sum(studies.values())} instances, {total / 2**20:.1f} MiB")
    for study, count in studies.items():
        print(f"  study {study}: {count} instances")
    if studies:
        study = next(iter(studies))
        body = json.dumps({"Resources": [{"Level": "Study", "ID": study}],
                           "Peer": "orthanc-b", "Compression": "gzip"})
        print("push it from orthanc-a to orthanc-b (from the Docker host; the Docker "
              "section of README.md has the pull-mode way back):")
        print(f"  curl -u admin:<orthanc-a admin password> "
              f"http://localhost:8042/transfers/send -d '{body}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
