"""Cooperative cancelling: ask first, then TERM, then KILL.

A cancel sets the run's stop request (``run.should_stop()`` turns True inside
it). A run that polls it saves its state and exits on its own; only a run
still executing ``cancel_grace`` seconds later is terminated through its
executor (TERM, or the scheduler's equivalent, then KILL after another
``cancel_grace``). Sending TERM at once, as motoko did before, killed the very
runs that were about to save their work.
"""

from __future__ import annotations

import asyncio
import logging

from motoko.launch.executors.base import Executor

log = logging.getLogger(__name__)

#: Seconds between two looks at whether a run asked to stop has ended.
LOOK_INTERVAL = 0.05


async def stop_cooperatively(executor: Executor, key: tuple[str, int], grace: float) -> bool:
    """Give the run ``grace`` seconds to end on its own, then have the executor cancel it.

    The executor reports the run's outcome either way; this only decides
    whether signals are needed. Returns True when the run ended on its own.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while key in executor.running and loop.time() < deadline:
        await asyncio.sleep(min(LOOK_INTERVAL, max(0.0, deadline - loop.time())))
    if key not in executor.running:
        return True
    log.info("run %s.%s did not stop within %g s of the request: terminating it", key[0], key[1], grace)
    await executor.cancel(key, grace)
    return False
