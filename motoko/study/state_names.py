"""Misspelt states in constraints: ``state = FINISHD`` is legal and matches nothing.

A state is a free string (workflows may set their own, ``FORWARDED``), so the
constraint language cannot refuse an unknown one. What it can do is notice a
state that no run is in and that is close to one that exists (the built-in
states, and the states runs of the study are in), and say so: a warning with
a did-you-mean, never an error. Reading only: the state index is consulted,
nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from motoko.errors import suggest
from motoko.study.constraints import Query
from motoko.study.planner import compile_for
from motoko.study.records import STATES

if TYPE_CHECKING:
    from motoko.study.database import Study

#: Operators whose values name states literally (a regex is not a state name).
_LITERAL_OPERATORS = frozenset({"=", "!=", "in", "not in"})


@dataclass(frozen=True)
class StateTypo:
    """A state named in a constraint that no run is in, and the known ones close to it."""

    state: str
    close: tuple[str, ...]

    def __str__(self) -> str:
        options = " or ".join(repr(c) for c in self.close)
        return f"no run is in state {self.state!r} (did you mean {options}?)"


def named_states(query: Query) -> list[str]:
    """The state names ``query`` compares ``state`` with literally (=, !=, in, not in)."""
    names: list[str] = []
    for leaf in query.comparisons():
        if leaf.field.name != "state" or leaf.field.table != "runs":
            continue
        if leaf.op not in _LITERAL_OPERATORS:
            continue
        values = leaf.value if isinstance(leaf.value, tuple) else (leaf.value,)
        names += [str(v) for v in values if isinstance(v, str)]
    return list(dict.fromkeys(names))


def state_typos(studies: Iterable[Study], constraints: Any) -> list[StateTypo]:
    """The states of ``constraints`` that no run of ``studies`` is in and that look misspelt.

    A state counts as known when it is built in or when a run of any of the
    studies is in it; an unknown state is reported only when it is close to a
    known one (``FINISHD``), so a workflow's own state no run has reached yet
    (``FORWARDED``) is not flagged unless it resembles another.
    """
    studies = list(studies)
    named = [state for study in studies for state in named_states(compile_for(study, constraints))]
    unknown = [state for state in dict.fromkeys(named) if state not in STATES]
    if not unknown:
        # Only a state that is not built in can be a typo: the state index
        # (big in a big study, ~30 ms at 100,000 runs) is not read otherwise.
        return []
    present: set[str] = set()
    for study in studies:
        present |= {state for state, runs in study.by_state.items() if runs}
    known = sorted(set(STATES) | present)
    typos = []
    for state in unknown:
        if state in present:
            continue
        close = suggest(state, known) or suggest(state.upper(), known)
        if close:
            typos.append(StateTypo(state, tuple(close)))
    return typos
