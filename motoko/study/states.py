"""Run states and the rules about them: the one place every module asks.

A run goes ``CREATED → LAUNCHED → RUNNING → FINISHED | FAILED``, or ends
CANCELLED or LOST (its launcher stopped heart-beating). Workflows may set their
own states (``run.state = "FORWARDED"``): any string that is not one of
:data:`STATES` is a *user state*, entered from and left to any state, with no
meaning to motoko. The change itself happens in one function,
:meth:`Study.transition <motoko.study.container.Study.transition>`, which
checks :data:`TRANSITIONS` and keeps the state index exact; this module only
says what is allowed and what a state means, so launchers, handles, views and
the CLI agree on "active", "ended" and "done".
"""

from __future__ import annotations

import datetime as _dt
from typing import Protocol

CREATED = "CREATED"
LAUNCHED = "LAUNCHED"
RUNNING = "RUNNING"
FINISHED = "FINISHED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
LOST = "LOST"

#: The states motoko itself knows; any other string is a user state.
STATES = (CREATED, LAUNCHED, RUNNING, FINISHED, FAILED, CANCELLED, LOST)
#: States after which nothing executes any more.
TERMINAL = frozenset({FINISHED, FAILED, CANCELLED, LOST})
#: States in which a launcher owns the run (heartbeats, lost-run detection).
ACTIVE = frozenset({LAUNCHED, RUNNING})
#: States that make an awaiting RunList fail (unless a retry follows).
FAILURE = frozenset({FAILED, CANCELLED, LOST})
#: States that have not ended: waiting for a launcher, or owned by one.
UNFINISHED = frozenset({CREATED}) | ACTIVE

#: Allowed transitions between motoko's own states. User states may be
#: entered from, and left to, any state: workflows use them as markers
#: (``FINISHED → FORWARDED``), motoko attaches no meaning to them.
TRANSITIONS: dict[str, frozenset[str]] = {
    CREATED: frozenset({LAUNCHED, CANCELLED, FAILED}),
    LAUNCHED: frozenset({RUNNING, FINISHED, FAILED, CANCELLED, LOST, CREATED}),
    RUNNING: frozenset({FINISHED, FAILED, CANCELLED, LOST}),
    FINISHED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
    LOST: frozenset({FINISHED, FAILED}),
}


class HasState(Protocol):
    """What the rules below read of a run (a stored Run, or a run's handle)."""

    @property
    def state(self) -> str: ...
    @property
    def finished(self) -> _dt.datetime | None: ...


def is_user_state(state: str) -> bool:
    """Return whether ``state`` is a workflow's own marker rather than motoko's."""
    return state not in STATES


def allowed(old: str, new: str) -> bool:
    """Return whether a run may go from ``old`` to ``new``.

    User states may be entered from and left to any state; between motoko's
    own states only :data:`TRANSITIONS` are allowed (a requeue, LAUNCHED →
    CREATED, is how a retry or an unstarted claim gives a run back).
    """
    if is_user_state(old) or is_user_state(new):
        return True
    return new in TRANSITIONS[old]


def is_done(run: HasState) -> bool:
    """FINISHED, or a user state entered after the run finished (FINISHED → FORWARDED)."""
    state = run.state
    return state == FINISHED or (is_user_state(state) and run.finished is not None)


def is_ended(run: HasState) -> bool:
    """True once nothing more will happen to the run: done, FAILED, LOST or CANCELLED.

    A run that failed and will be retried is CREATED again (the retry happens
    in the same transaction), so it is not ended.
    """
    return run.state in TERMINAL or is_done(run)


__all__ = [
    "ACTIVE", "CANCELLED", "CREATED", "FAILED", "FAILURE", "FINISHED", "LAUNCHED", "LOST", "RUNNING",
    "STATES", "TERMINAL", "TRANSITIONS", "UNFINISHED", "HasState", "allowed", "is_done", "is_ended",
    "is_user_state",
]
