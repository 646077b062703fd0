"""A small pool that runs the buckets of one job on ``Threads`` threads.

Unlike ``ThreadPoolExecutor`` it stops taking work at the first error or stop request
(in-flight items finish, queued ones are left for a resume), and an item may hand back
more items (an instance whose MD5 failed gives back its buckets).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def run_parallel(items: Iterable[T], work: Callable[[T], Iterable[T]], threads: int,
                 check: Callable[[], None], name: str) -> None:
    """Run ``work`` on every item; raise the first error once every thread is done."""
    queue: deque[T] = deque(items)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def next_item() -> tuple[bool, T | None]:
        with lock:
            if errors or not queue:
                return False, None
            return True, queue.popleft()

    def loop() -> None:
        while True:
            try:
                check()
                found, item = next_item()
                if not found:
                    return
                more = list(work(item))        # type: ignore[arg-type]
                if more:
                    with lock:
                        queue.extend(more)
            except BaseException as e:
                with lock:
                    errors.append(e)
                return

    count = max(1, min(threads, len(queue)))
    pool = [threading.Thread(target=loop, name=f"{name}-{n}", daemon=True) for n in range(count)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
