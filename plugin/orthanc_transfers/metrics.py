"""Counters of the plugin, published through Orthanc's metrics (``/tools/metrics``).

Names follow the original plugin where it has one (reference §13); the others are
prefixed the same way. Publishing is a notification: a failure is swallowed, never
allowed to break a transfer.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

PREFIX = "orthanc_transfers_"


class Metrics:
    def __init__(self, publish: Callable[[str, float], None]) -> None:
        self._publish = publish
        self._values: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, amount: float = 1) -> None:
        with self._lock:
            value = self._values[name] = self._values.get(name, 0) + amount
        self._send(name, value)

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = value
        self._send(name, value)

    def value(self, name: str) -> float:
        with self._lock:
            return self._values.get(name, 0)

    def _send(self, name: str, value: float) -> None:
        # A notification: metrics must never break a transfer.
        with contextlib.suppress(Exception):
            self._publish(PREFIX + name, value)
