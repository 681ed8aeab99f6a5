"""A live table in a notebook cell: ``rl.watch()``.

The table is shown once with an IPython display id, then replaced in place
each time the change feed reports a commit that changes it (through
:func:`~motoko.flow.waiting.wait_until`, the one change-feed wait loop), and
the watch returns once every run has ended. The synchronous form blocks the
cell like ``rl.result()`` (refused, like it, inside motoko's own loops); the
display handle is made by the calling thread, so the table appears in the
calling cell even when the wait runs in a helper thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from motoko.errors import HandleError, WaitTimeout
from motoko.flow.session import Session
from motoko.flow.waiting import is_ended, refuse_in_loop, run_blocking, wait_until
from motoko.study.display import runs_html

if TYPE_CHECKING:
    from motoko.study.records import Run

#: Builds the table now: ``(every run ended, its HTML)``.
Render = Callable[[], tuple[bool, str]]


def show(html: str) -> Callable[[str], None]:
    """Display ``html`` with a display id; return the function that replaces it in place.

    Raises:
        HandleError: when IPython is not installed (a watch needs a notebook).
    """
    try:
        from IPython.display import HTML, display
    except ImportError:
        raise HandleError(
            "rl.watch() shows a live table in a notebook and needs IPython, which is not installed",
            hint="pip install ipykernel (or ipython), or wait with rl.result(progress=True)",
        ) from None
    handle = display(HTML(html), display_id=True)

    def update(new: str) -> None:
        handle.update(HTML(new))

    return update


async def watch_until_ended(
    workflow: Session, render: Render, update: Callable[[str], None], timeout: float | None
) -> bool:
    """Call ``update`` with the new table on every change until every run ended.

    Returns:
        True once every run ended; False when ``timeout`` passed first.
    """
    last = ""

    def check() -> tuple[bool, None]:
        nonlocal last
        ended, html = render()
        if html != last:
            update(html)
            last = html
        return ended, None

    try:
        await wait_until(workflow, check, timeout=timeout)
    except WaitTimeout:
        return False
    return True


class Displayed:
    """Notebook display and live watching for a handle on runs (RunList, TaskSelection).

    A handle provides ``workflow``, :meth:`_display_title` and
    :meth:`_display_runs` (the runs now, read in the current transaction).
    """

    workflow: Session

    def _display_title(self) -> str:
        raise NotImplementedError

    def _display_runs(self) -> list[Run]:
        raise NotImplementedError

    def _render(self) -> tuple[bool, str]:
        runs = self._display_runs()
        return all(is_ended(r) for r in runs), runs_html(self._display_title(), runs)

    def _repr_html_(self) -> str:
        """The table of the runs, as of now (what ``display(rl)`` shows)."""
        self.workflow.refresh()
        return self._render()[1]

    def watch(self, timeout: float | None = None) -> bool:
        """Show the table in the cell and keep it current until every run ended.

        Blocks the cell like ``rl.result()``; the table is replaced in place
        within milliseconds of each commit that changes it. Ctrl-C (the
        kernel's interrupt) stops watching.

        Returns:
            True once every run ended (FINISHED, FAILED, LOST or CANCELLED);
            False when ``timeout`` seconds passed first.

        Raises:
            HandleError: IPython is not installed.
            EventLoopError: inside a workflow step, an event action or a
                launcher; ``await rl.watch_async()`` there.
        """
        refuse_in_loop("rl.watch()", "await rl.watch_async()")
        self.workflow.refresh()
        update = show(self._render()[1])
        return run_blocking(lambda: watch_until_ended(self.workflow, self._render, update, timeout))

    async def watch_async(self, timeout: float | None = None) -> bool:
        """:meth:`watch` for async code: refreshing the table does not block the event loop."""
        self.workflow.refresh()
        update = show(self._render()[1])
        return await watch_until_ended(self.workflow, self._render, update, timeout)
