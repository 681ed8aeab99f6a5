"""Rendering markers in Python files, found with :mod:`tokenize`.

A marker used as a bare name becomes a literal (the builtin ``repr`` of plain
data); a marker inside a string or f-string only takes "plain" values, and
one inside an f-string's ``{expression}``, a longer name or the encoding
declaration is refused.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from collections.abc import Callable
from typing import Any

from motoko.launch.markers import MARKER_PREFIX, MARKER_RE, Refuse, Spot, as_text, is_plain

__all__ = ["Untokenizable", "python_replacement", "python_spots"]

_CODING_RE = re.compile(r"^[ \t\f]*#.*?coding[:=]")
_MAX_DEPTH = 100


class Untokenizable(Exception):
    """Python source that ``tokenize`` rejects: (message, line); render names the file."""


def python_spots(text: str) -> list[Spot]:
    """Find markers in Python source with the token each one sits in."""
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def offset(point: tuple[int, int]) -> int:
        return starts[point[0] - 1] + point[1]

    spots: list[Spot] = []
    try:
        for start, end, kind in _python_regions(text, offset):
            spots.extend(_region_spots(text, start, end, kind))
    except SyntaxError as exc:  # IndentationError from tokenize
        raise Untokenizable(exc.msg, exc.lineno or 0) from None
    except tokenize.TokenError as exc:
        raise Untokenizable(exc.args[0], exc.args[1][0]) from None
    return spots


def _python_regions(
    text: str, offset: Callable[[tuple[int, int]], int]
) -> list[tuple[int, int, str]]:
    """Return ``(start, end, kind)`` of NAME, STRING (f-strings whole) and COMMENT tokens."""
    fstring_start = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12
    fstring_end = getattr(tokenize, "FSTRING_END", None)
    regions: list[tuple[int, int, str]] = []
    depth, opened = 0, 0
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == fstring_start:
            opened = offset(tok.start) if depth == 0 else opened
            depth += 1
        elif tok.type == fstring_end:
            depth -= 1
            if depth == 0:
                regions.append((opened, offset(tok.end), "string"))
        elif depth == 0 and tok.type in (tokenize.NAME, tokenize.STRING, tokenize.COMMENT):
            kind = {tokenize.NAME: "name", tokenize.STRING: "string"}.get(tok.type, "comment")
            if kind == "comment" and tok.start[0] <= 2 and _CODING_RE.match(tok.line):
                kind = "coding"
            regions.append((offset(tok.start), offset(tok.end), kind))
    return regions


def _region_spots(text: str, start: int, end: int, kind: str) -> list[Spot]:
    """Classify the markers of one token: a whole name, part of a name, string, comment."""
    token = text[start:end]
    if MARKER_PREFIX not in token:
        return []
    expression_spans = _fstring_expressions(token) if kind == "string" else []
    spots = []
    for match in MARKER_RE.finditer(token):
        context, why = kind, ""
        if kind == "name" and match.group(0) != token:
            context, why = "refuse", "is part of a longer Python name"
        elif kind == "coding":
            context, why = "refuse", "is in the encoding declaration"
        elif any(a <= match.start() < b for a, b in expression_spans):
            context, why = "refuse", "is inside an f-string's {expression}"
        spots.append(
            Spot(start + match.start(), start + match.end(), match.group(1), context, why=why)
        )
    return spots


def _fstring_expressions(token: str) -> list[tuple[int, int]]:
    """Return the spans of ``{...}`` expressions in an f-string token (empty if not an f-string)."""
    quote_at = min(i for i in (token.find("'"), token.find('"')) if i >= 0)
    if "f" not in token[:quote_at].lower():
        return []
    spans, depth, start, pos, inner_quote = [], 0, 0, quote_at, ""
    while pos < len(token):
        c = token[pos]
        if depth and inner_quote:
            inner_quote = "" if c == inner_quote else inner_quote
            pos += 2 if c == "\\" else 1
            continue
        if depth == 0 and token.startswith(("{{", "}}"), pos):
            pos += 2
            continue
        if c == "{":
            start = pos if depth == 0 else start
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, pos + 1))
        elif depth and c in "'\"":
            inner_quote = c
        pos += 1
    if depth:
        spans.append((start, len(token)))
    return spans


def python_replacement(spot: Spot, value: Any, refuse: Refuse) -> str:
    """Return a marker's replacement in Python source: a literal for a name, plain text in strings."""
    if spot.context == "name":
        try:
            return _py_literal(value, 0)
        except TypeError as exc:
            raise refuse(
                f"cannot be written as a Python literal ({exc})",
                "only str, int, float, bool, None, and lists/dicts of them are",
            ) from None
    text = as_text(value)
    if is_plain(text):
        return text
    if spot.context == "comment":
        return str.__repr__(text)  # a comment cannot execute; repr keeps newlines out of it
    raise refuse(
        "can't be placed safely inside a Python string literal",
        "use the marker outside quotes, as a bare name (x = __BLACKDYNAMITE__"
        + spot.name
        + "__), or read run.json / job."
        + spot.name
        + " instead",
    )


def _py_literal(value: Any, depth: int) -> str:
    """Return Python source evaluating to ``value``; only plain data, checked recursively.

    The builtin types' own ``__repr__`` is called, so a subclass (numpy
    scalars, str subclasses) cannot substitute its own text.
    """
    if depth > _MAX_DEPTH:
        raise TypeError("nested too deeply")
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        text = int.__repr__(value)
        return f"({text})" if value < 0 else text
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '(-float("inf"))'
        text = float.__repr__(value)
        return f"({text})" if text.startswith("-") else text
    if isinstance(value, str):
        return str.__repr__(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py_literal(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        items = (
            f"{_py_literal(k, depth + 1)}: {_py_literal(v, depth + 1)}" for k, v in value.items()
        )
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"{type(value).__name__} is not plain data")
