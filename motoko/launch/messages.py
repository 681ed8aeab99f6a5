"""The run channel's messages: what a run and its launcher say to each other.

Both ends import this module, so it stays light (``json`` and motoko's
errors, nothing of the database): a run pays for it at import.

Every message is one JSON object on one line (UTF-8, ``\\n``-terminated),
with an ``op`` naming what it is:

run → launcher
    ``hello`` (study, run, attempt, pid): the first message; the launcher
    answers ``welcome`` with the run and its job, or ``error``.
    ``set`` (name, value): a free attribute or run field.
    ``state`` (value): ``run.state = ...``.
    ``call`` (method, args): one of :data:`WRITE_METHODS`.
    ``flush`` (id, commit): answered by ``ack`` with the same id, at once, or
    with ``commit`` once the launcher committed everything sent before.

launcher → run
    ``welcome``, ``ack``, ``stop`` (reason, message: cancel requested or
    attempt superseded), ``refused`` (message: a write the database refused),
    ``error`` (message: the launcher could not read a message).
"""

from __future__ import annotations

import json
import math
from typing import Any

from motoko.errors import RunWriteRefused
from motoko.study.states import FAILED, FINISHED, LAUNCHED, RUNNING

#: The environment variable naming the launcher's channel (a unix socket).
ENV_CHANNEL = "MOTOKO_CHANNEL"
#: Longest message either end accepts (bytes, newline included).
MAX_MESSAGE = 1 << 20

#: Run methods a run may call through the channel (their BlackDynamite
#: spellings included); the launcher applies them to the stored run.
WRITE_METHODS = frozenset({
    "push_quantity", "pushScalarQuantity", "pushVectorQuantity", "pushQuantity",
    "set_progress", "set_status", "set_output", "set_metadata",
    "start", "finish", "fail",
})
#: Every ``op`` a run may send.
RUN_OPS = frozenset({"hello", "set", "state", "call", "flush"})


def encode(message: dict[str, Any], *, what: str = "message") -> bytes:
    """One message as a JSON line.

    Values are turned into JSON the way quantities are stored (numpy arrays
    and tuples as lists, numpy scalars as numbers).

    Raises:
        RunWriteRefused: a value JSON cannot carry, or a message longer than
            :data:`MAX_MESSAGE`, naming ``what`` was being sent.
    """
    try:
        line = json.dumps(message, separators=(",", ":"), default=_plain).encode() + b"\n"
    except (TypeError, ValueError) as exc:
        raise RunWriteRefused(
            f"{what}: {exc}",
            hint="a run sends numbers, strings, booleans, None, lists and dicts of them (numpy arrays are fine)",
        ) from None
    if len(line) > MAX_MESSAGE:
        raise RunWriteRefused(
            f"{what}: {len(line)} bytes is more than a message may hold ({MAX_MESSAGE} bytes)",
            hint="write large data to a file in the run directory and store its name",
        )
    return line


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into a message with a known ``op``.

    Raises:
        ValueError: saying what is wrong with the line (the launcher reports
            it to the run in one line and keeps the channel open).
    """
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unparseable message ({exc}): {_excerpt(line)}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ValueError(f"a message must be a JSON object with an 'op': {_excerpt(line)}")
    return message


def check_write(message: dict[str, Any]) -> None:
    """Refuse a write whose shape is wrong before it is queued.

    Raises:
        ValueError: naming the problem (unknown op or method, private name).
    """
    op = message["op"]
    if op not in RUN_OPS or op == "hello":
        raise ValueError(f"unknown message op {op!r} (known: {', '.join(sorted(RUN_OPS - {'hello'}))})")
    if op == "set":
        name = message.get("name")
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"run attribute name {name!r} is not a public Python name")
        if name == "state":
            raise ValueError("set the state with the 'state' op")
    elif op == "state" and not isinstance(message.get("value"), str):
        raise ValueError(f"a state is a string, got {message.get('value')!r}")
    elif op == "call":
        if message.get("method") not in WRITE_METHODS:
            raise ValueError(f"unknown run method {message.get('method')!r}")
        if not isinstance(message.get("args", []), list):
            raise ValueError("a call's args must be a list")


def check_progress(fraction: Any) -> float:
    """The run side's early check of ``set_progress`` (the database checks again).

    Raises:
        RunWriteRefused: outside 0.0–1.0.
    """
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise RunWriteRefused(
            f"progress must be between 0.0 and 1.0, got {fraction!r}",
            hint="pass the finished fraction, e.g. run.set_progress(0.5)",
        )
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, set | frozenset):
        raise TypeError(f"a {type(value).__name__} cannot be sent (use a list)")
    raise TypeError(f"a {type(value).__name__} cannot be sent ({_excerpt(repr(value).encode())})")


def _excerpt(line: bytes, size: int = 60) -> str:
    text = line.decode("utf-8", errors="replace").strip()
    return repr(text if len(text) <= size else text[:size] + "…")


def apply_write(run: Any, message: dict[str, Any], field_types: dict[str, str]) -> None:
    """Apply one run write to the stored run: by its launcher, or by the run itself when its launcher went.

    Must run inside a transaction on the run's database; the caller checks the attempt.
    """

    op = message["op"]
    if op == "set":
        name, value = message["name"], message.get("value")
        if name in field_types:
            # Here, not at the top: the run side imports this module and must stay light
            # (the field types pull dataclasses and inspect in: ~5 ms of every Python run).
            from motoko.study.fields import field_type

            value = field_type(field_types[name]).coerce(value, field=name)
        setattr(run, name, value)
    elif op == "state":
        run.state = message["value"]
    else:
        method, args = message["method"], message.get("args", [])
        if method == "start":
            if run.state == LAUNCHED:
                run.state = RUNNING
        elif method == "finish":
            run.state = FINISHED
        elif method == "fail":
            run.error = str(args[0]) if args else "failed"
            run.state = FAILED
        else:
            getattr(run, method)(*args)
