"""Retries that fix the cause: a study's ``retry`` rules scale a run's resources.

A run killed at its time limit will be killed again if retried unchanged. A
study may therefore say, per reason of failure, how a retry changes the
run's SLURM resources, with an optional cap::

    retries: 2
    retry:
      TIMEOUT: {time: x2, max_time: "08:00:00"}
      OUT_OF_MEMORY: {mem: x1.5, max_mem: 16G}

A run that FAILED for one of these reasons is retried (while ``retries``
allow, whether or not FAILED is in ``retry_on``), and the retry's own
``slurm_options`` get the scaled value (``--time=...``, ``--mem=...``),
which comes after the study's options and so wins. The ended attempt's
options stay in ``run.history``. Pure computation: nothing here touches a
process or the database.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from motoko.errors import ParameterError, UnknownNameError

#: Reasons of failure a rule may name (SLURM's job states).
REASONS = ("TIMEOUT", "OUT_OF_MEMORY")
#: Resources a rule may scale, and the sbatch options that set them.
RESOURCES = {"time": ("--time", "-t"), "mem": ("--mem",)}
#: The cap of each resource.
CAPS = {"max_time": "time", "max_mem": "mem"}

_FACTOR = re.compile(r"x(\d+(?:\.\d+)?)\Z")
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\Z")
_MEM = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)B?\Z", re.IGNORECASE)
_MEM_UNITS = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_rules(value: Any, where: Callable[..., str]) -> dict[str, dict[str, str]]:
    """Validate bd.yaml's ``retry`` mapping; return it with every value as text.

    Raises:
        UnknownNameError: for an unknown reason, resource or cap.
        ParameterError: for a factor that is not ``xN`` (N > 1) or a cap
            that is not a SLURM time or memory size.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ParameterError(
            f"'retry' expects a mapping of failure reasons, got {value!r}", field="retry", value=value,
            where=where("retry"), hint="e.g. retry: {TIMEOUT: {time: x2}}",
        )
    rules: dict[str, dict[str, str]] = {}
    for reason, rule in value.items():
        if str(reason) not in REASONS:
            raise UnknownNameError("retry reason", str(reason), REASONS, where=where("retry", reason))
        if not isinstance(rule, Mapping) or not rule:
            raise ParameterError(
                f"'retry' {reason} expects a mapping of resources, got {rule!r}", field="retry", value=rule,
                where=where("retry", reason), hint="e.g. TIMEOUT: {time: x2, max_time: '08:00:00'}",
            )
        rules[str(reason)] = {str(k): _checked(str(reason), str(k), v, where) for k, v in rule.items()}
    return rules


def _checked(reason: str, name: str, value: Any, where: Callable[..., str]) -> str:
    text = str(value).strip()
    at = where("retry", reason, name)
    if name in RESOURCES:
        match = _FACTOR.match(text)
        if match is None or float(match.group(1)) <= 1:
            raise ParameterError(
                f"'retry' {reason} {name} expects a factor like x2, got {value!r}", field="retry", value=value,
                where=at, hint="write xN with N above 1, e.g. x1.5",
            )
    elif name in CAPS:
        parse = parse_time if CAPS[name] == "time" else parse_mem
        if parse(text) is None:
            example = "'08:00:00' or '1-00:00:00'" if CAPS[name] == "time" else "16G or 4000M"
            raise ParameterError(
                f"'retry' {reason} {name} expects a SLURM {CAPS[name]}, got {value!r}", field="retry", value=value,
                where=at, hint=f"write it as sbatch takes it, e.g. {example}",
            )
    else:
        raise UnknownNameError("retry setting", name, [*RESOURCES, *CAPS], where=at)
    return text


def scaled_options(options: Sequence[str], rule: Mapping[str, str]) -> list[str]:
    """The sbatch options a retry adds, scaling the last value of each resource in ``options``.

    A resource that ``options`` does not set cannot be scaled; its cap, when
    given, is used instead. Values never exceed their cap.
    """
    added = []
    for resource, flags in RESOURCES.items():
        factor = rule.get(resource)
        if factor is None:
            continue
        parse, show = (parse_time, format_time) if resource == "time" else (parse_mem, format_mem)
        cap_text = rule.get(f"max_{resource}")
        cap = parse(cap_text) if cap_text else None
        current = _last_value(options, flags)
        amount = parse(current) if current is not None else None
        if amount is None:
            if cap is None:
                continue
            new = cap
        else:
            new = math.ceil(amount * float(factor[1:]))
            if cap is not None:
                new = min(new, max(cap, amount))
        added.append(f"{flags[0]}={show(new)}")
    return added


def _last_value(options: Sequence[str], flags: Sequence[str]) -> str | None:
    value = None
    items = list(options)
    for i, option in enumerate(items):
        for flag in flags:
            if option.startswith(flag + "="):
                value = option[len(flag) + 1 :]
            elif option == flag and i + 1 < len(items):
                value = items[i + 1]
    return value


def parse_time(text: str) -> int | None:
    """Seconds of a SLURM time ("90" minutes, "1:30:00", "2-00:00:00"); None if unreadable."""
    match = _TIME.match(text.strip())
    if match is None:
        return None
    days, a, b, c = match.groups()
    day = int(days or 0) * 86400
    if days is not None:  # days-hours[:minutes[:seconds]]
        return day + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    if b is None:  # minutes
        return int(a) * 60
    if c is None:  # minutes:seconds
        return int(a) * 60 + int(b)
    return int(a) * 3600 + int(b) * 60 + int(c)


def format_time(seconds: int) -> str:
    """A SLURM time: ``D-HH:MM:SS`` from a day on, else ``HH:MM:SS``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def parse_mem(text: str) -> int | None:
    """Megabytes of a SLURM memory size ("4000", "4G", "512M"); None if unreadable."""
    match = _MEM.match(text.strip())
    if match is None:
        return None
    return math.ceil(float(match.group(1)) * _MEM_UNITS[match.group(2).upper()])


def format_mem(megabytes: int) -> str:
    """A SLURM memory size in megabytes (``4096M``)."""
    return f"{int(megabytes)}M"
