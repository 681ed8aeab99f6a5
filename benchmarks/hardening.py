"""Issue 17: what refusing hostile input costs, next to what accepting it used to cost.

Prints JSON: seconds and peak Python memory (tracemalloc) to refuse a 10^10
job space and a YAML alias bomb, and the time of a catastrophic regex on
RE2 (used by constraints) and on Python's ``re`` (backtracking; run on a
shorter text so that it ends). No server needed.
"""

from __future__ import annotations

import re
import time
import tracemalloc
from typing import Any

import yaml

from benchmarks.common import emit, machine
from motoko.errors import MotokoError, ParameterError
from motoko.study.constraints import compile_pattern
from motoko.study.schema import parse_schema
from motoko.study.space import expand
from motoko.yamldoc import load_bounded

BOMB = "[&a [x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], " \
    "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], " \
    "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g], &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]]"


def measured(func: Any, memory: bool = True) -> dict[str, Any]:
    """Seconds (and, with ``memory``, peak traced MiB: tracemalloc slows the code down)."""
    if memory:
        tracemalloc.start()
    start = time.perf_counter()
    outcome = "accepted"
    try:
        func()
    except MotokoError as exc:
        outcome = f"refused: {type(exc).__name__}"
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"seconds": round(seconds, 6), "outcome": outcome}
    if memory:
        result["peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 3)
        tracemalloc.stop()
    return result


def main() -> None:
    schema = parse_schema("study: s\njob: {" + ", ".join(f"f{i}: int" for i in range(10)) + "}\n")
    sweep = {f"f{i}": list(range(10)) for i in range(10)}
    near_limit = {f"f{i}": list(range(10)) if i < 5 else 0 for i in range(10)}  # 10^5 jobs: accepted
    evil = "a" * 30 + "!"
    re2_pattern = compile_pattern("(a+)+$", False)
    short = "a" * 20 + "!"
    emit({
        "benchmark": "hardening",
        "machine": machine(),
        "space_10e10_refused": measured(lambda: expand(schema, sweep)),
        "space_10e5_expanded": measured(lambda: expand(schema, near_limit), memory=False),
        "alias_bomb_refused": measured(lambda: load_bounded(BOMB, "-p x", ParameterError)),
        "alias_bomb_composed_by_pyyaml_only": measured(lambda: yaml.compose(BOMB)),
        "regex_re2_(a+)+$_31_chars_s": measured(lambda: re2_pattern.search(evil))["seconds"],
        "regex_python_re_(a+)+$_21_chars_s": measured(lambda: re.compile("(a+)+$").search(short))["seconds"],
    })


if __name__ == "__main__":
    main()
