"""Sync waits under a running event loop (a notebook cell) against a plain script.

    python -m benchmarks.notebook_waits [--repeat 30] [--hops 10]

Under a running loop, ``rl.result()`` runs its wait in a helper thread with
a private loop; in a script it runs on a private loop in the calling thread.
Figures, each for both modes:

- ``call``: one ``rl.result()`` on runs already FINISHED (the fixed cost:
  a thread and a loop under a running loop).
- ``hop``: ``createTask`` of one trivial run → ``result()`` returning, minus
  the run's own process time as the launcher recorded it.
- ``interrupt`` (under a loop only): SIGINT sent → ``KeyboardInterrupt``
  caught in the waiting thread, with the wait's helper unwound.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import emit, summary, workflow


def under_loop(func: Callable[[], Any]) -> Any:
    """Call ``func`` from a coroutine of a running loop that keeps Python's SIGINT handler (a kernel's)."""
    loop = asyncio.new_event_loop()

    async def cell() -> Any:
        return func()

    try:
        return loop.run_until_complete(cell())
    finally:
        loop.close()


def measure(wf: Any, repeat: int, hops: int, run: Callable[[Callable[[], Any]], Any]) -> dict[str, Any]:
    done = wf.hop.createTask(i=list(range(5)))
    done.result(timeout=120)
    calls = []
    for _ in range(repeat):
        start = time.perf_counter()
        run(lambda: done.result(timeout=60))
        calls.append(time.perf_counter() - start)
    overheads: list[float] = []
    for _ in range(hops):
        start = time.perf_counter()
        rl = wf.hop.createTask(i=1000 + len(overheads) + int(time.time() * 1000) % 10**6)
        run(functools.partial(rl.result, timeout=120))
        wall = time.perf_counter() - start
        own = rl.run
        process = (own.finished - own.started).total_seconds() if own.started and own.finished else 0.0
        overheads.append(wall - process)
    return {"call_s": summary(calls), "hop_overhead_s": summary(overheads)}


def interrupts(wf: Any, repeat: int) -> dict[str, Any]:
    never = wf.hop.select("i = -1")  # matches nothing: waits until interrupted
    delays = []
    main = threading.get_ident()
    for _ in range(repeat):
        sent: list[float] = []

        def fire(sent: list[float] = sent) -> None:
            sent.append(time.perf_counter())
            signal.pthread_kill(main, signal.SIGINT)

        threading.Timer(0.3, fire).start()
        try:
            under_loop(lambda: never.result())
        except KeyboardInterrupt:
            delays.append(time.perf_counter() - sent[0])
    return {"interrupt_s": summary(delays)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--hops", type=int, default=10)
    args = parser.parse_args()
    from motoko.config import load_config
    from motoko.flow.workflow import Workflow
    from motoko.launch.service import EmbeddedLauncher

    with workflow({"hop": ("{i: int}", "#!/bin/bash\nexit 0\n", "")}, "poll: {initial: 1, factor: 2, maximum: 5}\n") as root:
        launcher = EmbeddedLauncher(load_config(root / "motoko.yaml")).start()
        wf = Workflow(root, run_name="bench")
        try:
            script = measure(wf, args.repeat, args.hops, lambda func: func())
            notebook = measure(wf, args.repeat, args.hops, under_loop)
            notebook.update(interrupts(wf, 5))
        finally:
            wf.close()
            launcher.stop()
    ratio = notebook["call_s"]["median"] / script["call_s"]["median"]
    emit({"benchmark": "notebook_waits", "script": script, "under_running_loop": notebook,
          "call_ratio_loop_over_script": ratio})


if __name__ == "__main__":
    main()
