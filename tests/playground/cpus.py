"""Keep the browser and the vLLM servers on separate CPU cores while the browser tests run.

vLLM's CPU engine keeps the cores it runs on busy while it generates, and on our 2-core
machines a browser sharing them gets no CPU for seconds: with a 2,000-token answer streaming
into the page, its main thread and its stream reads stalled 2-3.5 s in most answers (Chromium
at nice -10 too), so no Stop could land mid-answer. With the server's processes on core 0 and
Chromium on core 1, the longest gap was 60 ms. vLLM itself binds its worker to the first cores
and leaves the last one to the other processes, so the browser gets the last core.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def browser_cpus() -> set[int]:
    """The CPU the browser runs on: the last one this process may use."""
    return {max(os.sched_getaffinity(0))}


@contextlib.contextmanager
def starting_on(cpus: set[int]) -> Iterator[None]:
    """Processes started meanwhile run on `cpus` (a child inherits its parent's affinity)."""
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


@contextlib.contextmanager
def kept_off(pid: int, cpus: set[int]) -> Iterator[None]:
    """Every thread of process `pid` and of its descendants stays off `cpus` meanwhile.

    Threads that have no other CPU keep theirs; threads started meanwhile inherit the
    narrower set from the thread that starts them and keep it.
    """
    saved: dict[int, set[int]] = {}
    for tid in _threads(_descendants(pid)):
        with contextlib.suppress(OSError):  # the thread may have ended since it was listed
            allowed = os.sched_getaffinity(tid)
            if allowed - cpus:
                os.sched_setaffinity(tid, allowed - cpus)
                saved[tid] = allowed
    try:
        yield
    finally:
        for tid, allowed in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, allowed)


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    parent_of = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The name, in parentheses, may hold spaces: the fields after it are plain.
            parent_of[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree = [pid]
    for member in tree:  # grows while it is walked: children of children
        tree += [child for child, parent in parent_of.items() if parent == member]
    return tree


def _threads(pids: list[int]) -> Iterator[int]:
    for pid in pids:
        with contextlib.suppress(OSError):
            yield from (int(task.name) for task in Path(f"/proc/{pid}/task").iterdir())
