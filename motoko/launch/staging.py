"""Run directories and safe templating: a parameter value is data, never code.

motoko 0.1.4 pasted parameter values into a run's files as raw text, so a job
parameter ``a; touch PWNED`` ran a shell command. Here every value reaches the
run as inert data, three ways:

* environment variables ``MOTOKO_PARAM_<name>`` (:func:`run_environment`);
* ``run.json`` in the run directory (written by :func:`stage`);
* ``__BLACKDYNAMITE__name__`` markers in the staged files, kept for
  BlackDynamite compatibility, replaced by :func:`render` with text that the
  file's language reads back as exactly the value:

  - **shell** files are scanned by a small lexer that knows quotes, ``$'...'``,
    command substitution, backticks, comments and here-documents; each marker
    gets the quoting its context needs. A marker whose context cannot hold a
    value safely (``${...}``, right after ``$`` or ``\\``, a here-document
    delimiter, nested backticks...) is refused rather than guessed at.
  - **python** files are tokenized; a marker used as a bare name becomes a
    literal (``repr`` of plain data), a marker inside a string or f-string
    only takes "plain" values.
  - **other** files only take plain values.

A value that cannot be placed safely raises :class:`UnsafeValueError` (a
:class:`~motoko.errors.StagingError`) naming the file, line, field and value.

What staging cannot prevent: a script that hands a value to something that
evaluates text (``eval``, ``bash -c``, ``source``, and bash arithmetic such as
``let``, ``declare -i`` or ``[[ a -eq b ]]``) evaluates it, exactly as it
would evaluate ``$MOTOKO_PARAM_x``. Staging guarantees the value arrives as
one literal word; what the script does with that word is the script's.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import re
import stat
import tokenize
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from motoko.errors import StagingError, did_you_mean

__all__ = [
    "KINDS",
    "MARKER_PREFIX",
    "TemplateCache",
    "UnsafeValueError",
    "file_kind",
    "render",
    "run_environment",
    "safe_join",
    "stage",
]

MARKER_PREFIX = "__BLACKDYNAMITE__"
KINDS = ("shell", "python", "other")
RUN_JSON = "run.json"

_MARKER_RE = re.compile(r"__BLACKDYNAMITE__([A-Za-z_][A-Za-z0-9_]*?)__")
_PLAIN_RE = re.compile(r"[A-Za-z0-9_.+\-:/@%, =]*")
_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CODING_RE = re.compile(r"^[ \t\f]*#.*?coding[:=]")
_SHELL_NAMES = ("sh", "bash", "zsh", "dash", "ksh")
_SHELL_SUFFIXES = (".sh", ".bash", ".zsh", ".ksh")
_MAX_DEPTH = 100


class UnsafeValueError(StagingError):
    """A value that cannot be placed at a marker without changing the file's meaning.

    Attributes:
        field: The marker's name (a job or run field).
        value: The offending value.
        source: The file being staged.
        line: 1-based line of the marker.
    """

    def __init__(self, field: str, value: Any, source: str, line: int, why: str, hint: str):
        self.field = field
        self.value = value
        self.source = source
        self.line = line
        self.why = why
        super().__init__(
            f"value {_short(value)} of {field!r} {why}", where=f"{source}:{line}", hint=hint
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error intact across processes (executors may pickle it).
        args = (self.field, self.value, self.source, self.line, self.why, self.hint or "")
        return (type(self), args)


def _short(value: Any, limit: int = 60) -> str:
    """Return ``repr(value)`` cut to ``limit`` characters, so huge values keep messages short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...'"


def _line_of(text: str, pos: int) -> int:
    """Return the 1-based line number of offset ``pos`` in ``text``."""
    return text.count("\n", 0, pos) + 1


# --------------------------------------------------------------------------- values


def _as_text(value: Any) -> str:
    """Return the one text form of a value used by shell and plain substitution.

    bool is lowercase like JSON (``true``), None is empty, lists and dicts are
    JSON: the same forms ``MOTOKO_PARAM_*`` variables carry, so a script sees
    one spelling whichever way it reads a value.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    if isinstance(value, str):
        return str.__str__(value)
    return str(value)


def _is_plain(text: str) -> bool:
    """Tell whether ``text`` means the same in any string, comment or config file."""
    return _PLAIN_RE.fullmatch(text) is not None


# --------------------------------------------------------------------------- file kinds


def file_kind(name: str, text: str) -> str:
    """Return how a staged file's markers are rendered: "shell", "python" or "other".

    The extension decides first (``.sh .bash .zsh .ksh``, ``.py``), then a
    ``#!`` line naming a shell or python (also through ``/usr/bin/env``).
    """
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in _SHELL_SUFFIXES:
        return "shell"
    if suffix == ".py":
        return "python"
    interpreter = _shebang_interpreter(text)
    if interpreter in _SHELL_NAMES:
        return "shell"
    if interpreter.startswith("python"):
        return "python"
    return "other"


def _shebang_interpreter(text: str) -> str:
    """Return the interpreter's base name from a ``#!`` line (``env`` looked through)."""
    if not text.startswith("#!"):
        return ""
    words = text[2:].split("\n", 1)[0].split()
    while words:
        base = PurePosixPath(words.pop(0)).name
        if base != "env" and not base.startswith("-") and "=" not in base:
            return base.rstrip("0123456789.")
    return ""


# --------------------------------------------------------------------------- render


def render(text: str, kind: str, values: Mapping[str, Any], *, source: str = "") -> str:
    """Replace every ``__BLACKDYNAMITE__name__`` marker of ``text`` by a safe form of its value.

    Args:
        text: The file's content.
        kind: "shell", "python" or "other" (see :func:`file_kind`).
        values: The run's values by name (job and run fields, ``id``...).
        source: The file's name, for messages.

    Returns:
        The rendered text; identical to ``text`` outside the markers.

    Raises:
        StagingError: A marker names no value (with did-you-mean), or a value
            cannot be placed at its marker without changing the file's meaning
            (:class:`UnsafeValueError`).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if MARKER_PREFIX not in text:
        return text
    source = source or "<text>"
    _check_names(text, values, source)
    try:
        spots, heredocs = _analyse(text, kind)
    except _Untokenizable as exc:
        raise StagingError(
            f"cannot tokenize this Python file to place markers safely: {exc.args[0]}",
            where=f"{source}:{exc.args[1]}",
            hint="fix the file's syntax",
        ) from None
    replacements = [(s.start, s.end, _replacement(kind, s, values, text, source)) for s in spots]
    rendered = _splice(text, replacements)
    for heredoc in heredocs:
        _check_heredoc(heredoc, text, replacements, spots, values, source)
    return rendered


@dataclass(frozen=True)
class _Spot:
    """A marker found in a file and the context it sits in.

    ``context`` is a shell frame kind, a python place ("name", "string",
    "comment"), "plain" for other files, or "refuse" with ``why`` set.
    ``unescaped`` lists the characters bash unescapes (after a backslash) in
    the backtick substitution around a shell marker, if any.
    """

    start: int
    end: int
    name: str
    context: str
    unescaped: str = ""
    why: str = ""
    in_heredoc: bool = False


def _check_names(text: str, values: Mapping[str, Any], source: str) -> None:
    """Refuse a marker that names no value, and refuse markers in the ``#!`` line."""
    first_line_end = text.find("\n") if text.startswith("#!") else 0
    if first_line_end < 0:
        first_line_end = len(text)
    for match in _MARKER_RE.finditer(text):
        name = match.group(1)
        if name in values and match.start() >= first_line_end:
            continue
        where = f"{source}:{_line_of(text, match.start())}"
        if name not in values:
            hint = did_you_mean(name, values)
            if hint.startswith("did you mean"):
                hint += " known names: " + ", ".join(sorted(map(str, values))[:20])
            raise StagingError(f"unknown marker {match.group(0)!r}", where=where, hint=hint)
        if match.start() < first_line_end:
            raise StagingError(
                f"marker {match.group(0)!r} in the #! line would let a value choose the interpreter",
                where=where,
                hint="move the marker out of the first line",
            )


@functools.lru_cache(maxsize=256)
def _analyse(text: str, kind: str) -> tuple[tuple[_Spot, ...], tuple[_Heredoc, ...]]:
    """Return every marker with its context, and a shell file's here-documents.

    Cached: 1000 runs staged from one template lex it once.
    """
    if kind == "shell":
        lexer = _ShellLexer(text)
        return _covered(text, lexer.run()), tuple(lexer.heredocs)
    if kind == "python":
        return _covered(text, _python_spots(text)), ()
    spots = [_Spot(m.start(), m.end(), m.group(1), "plain") for m in _MARKER_RE.finditer(text)]
    return tuple(spots), ()


def _covered(text: str, spots: list[_Spot]) -> tuple[_Spot, ...]:
    """Refuse every marker the analysis did not place: never leave one unexamined."""
    placed = {s.start for s in spots}
    why = "sits where the file's syntax could not be followed"
    missed = [
        _Spot(m.start(), m.end(), m.group(1), "refuse", why=why)
        for m in _MARKER_RE.finditer(text)
        if m.start() not in placed
    ]
    return tuple(sorted(spots + missed, key=lambda s: s.start))


def _splice(text: str, replacements: Sequence[tuple[int, int, str]]) -> str:
    """Return ``text`` with each ``(start, end, new)`` span (sorted, disjoint) replaced."""
    parts: list[str] = []
    last = 0
    for start, end, new in replacements:
        parts.append(text[last:start])
        parts.append(new)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def _replacement(kind: str, spot: _Spot, values: Mapping[str, Any], text: str, source: str) -> str:
    """Return the text that replaces one marker, or raise UnsafeValueError."""
    if spot.name not in values:
        raise StagingError(
            f"unknown marker {text[spot.start : spot.end]!r}",
            where=f"{source}:{_line_of(text, spot.start)}",
            hint=did_you_mean(spot.name, values),
        )
    value = values[spot.name]

    def refuse(why: str, hint: str) -> UnsafeValueError:
        return UnsafeValueError(spot.name, value, source, _line_of(text, spot.start), why, hint)

    if spot.context == "refuse":
        raise refuse(spot.why, _REFUSAL_HINTS[kind].replace("NAME", spot.name))
    if kind == "python":
        return _python_replacement(spot, value, refuse)
    if kind == "shell":
        return _shell_replacement(spot, value, refuse, text)
    text_value = _as_text(value)
    if not _is_plain(text_value):
        raise refuse(
            "cannot be placed safely in a file of unknown syntax",
            "only letters, digits, spaces and _.+-:/@%,= are substituted in such files; "
            "read the value from run.json or $MOTOKO_PARAM_" + spot.name + " instead",
        )
    return text_value


_REFUSAL_HINTS = {
    "shell": "use the marker as a plain word or inside double quotes, or read $MOTOKO_PARAM_NAME",
    "python": "use the marker as a bare name (x = __BLACKDYNAMITE__NAME__), or read run.json",
    "other": "read the value from run.json or $MOTOKO_PARAM_NAME",
}


# --------------------------------------------------------------------------- shell rendering

_Refuse = Callable[[str, str], UnsafeValueError]


def _sq_word(text: str) -> str:
    """Quote ``text`` as one single-quoted shell word: bash reads back exactly ``text``.

    Always quoted (unlike ``shlex.quote``), so that a value can never become
    an assignment (``A=b``), a reserved word (``if``) or an alias.
    """
    return "'" + text.replace("'", "'\\''") + "'"


def _escape(text: str, chars: str) -> str:
    """Backslash-escape each of ``chars`` in ``text``."""
    return "".join("\\" + c if c in chars else c for c in text)


def _shell_replacement(spot: _Spot, value: Any, refuse: _Refuse, script: str) -> str:
    """Return the replacement of a marker in a shell file, for its lexical context."""
    text = _as_text(value)
    if "\0" in text:
        raise refuse("contains a NUL byte, which a shell cannot hold", "remove the NUL byte")
    context = spot.context
    if context in ("code", "cmdsub", "backtick"):
        out = _sq_word(text)
    elif context == "dq":
        out = _escape(text, '\\$`"')
    elif context == "heredoc":
        out = _escape(text, "\\$`")
    elif context == "sq":
        out = text.replace("'", "'\\''")
    elif context == "ansi":
        out = _escape(text, "\\'")
    elif context == "heredoc_lit":
        out = text  # literal body; _check_heredoc refuses a line equal to the delimiter
    elif context == "comment":
        out = json.dumps(text).replace("`", "\\u0060")  # no newline can end the comment
    elif context in ("arith", "subscript"):
        out = _shell_integer(text, refuse)
    else:
        raise refuse(
            f"cannot be placed safely inside {_CONTEXT_NAMES.get(context, context)}",
            "assign the marker to a variable first (v=__BLACKDYNAMITE__"
            + spot.name
            + "__) and use the variable there",
        )
    # Bash unescapes \\ \$ \` (and \" within double quotes) in `...` before
    # parsing it; escaping them also hides a " from brace expansion of the
    # enclosing "...`...`" word, which misreads it.
    out = _escape(out, spot.unescaped)
    if spot.in_heredoc and _joins_lines(script, spot, out):
        raise refuse(
            "ends a line with a backslash, which bash removes inside a here-document",
            "use a quoted here-document delimiter (<<'EOF'), or read $MOTOKO_PARAM_" + spot.name,
        )
    return out


_CONTEXT_NAMES = {"param": "${...}"}
_CONTINUATION_RE = re.compile(r"(?<!\\)(?:\\\\)*\\\n")


def _joins_lines(script: str, spot: _Spot, out: str) -> bool:
    """Tell whether ``out`` at ``spot`` would make a backslash-newline line continuation.

    Bash joins such lines of an unquoted here-document body before parsing
    anything in it, even inside quotes of a ``$(...)``; the backslashes right
    around the marker count too. A marker right before a continuation is
    refused as well: the value's own trailing backslashes would change it.
    """
    before = spot.start
    while before > 0 and script[before - 1] == "\\":
        before -= 1
    after = spot.end
    while after < len(script) and script[after] == "\\":
        after += 1
    prefix, suffix = script[before : spot.start], script[spot.end : after + 1]
    # A backslash run right after the marker changes parity with the value's end.
    return any(
        _CONTINUATION_RE.search(prefix + middle + suffix) is not None
        for middle in (out, script[spot.start : spot.end])
    )


def _shell_integer(text: str, refuse: _Refuse) -> str:
    """Return an integer value for bash arithmetic, which would evaluate anything else."""
    if _INT_RE.fullmatch(text) is None:
        raise refuse(
            "is not an integer and bash evaluates $((...)), ((...)) and array subscripts "
            "as arithmetic (names in them are dereferenced and evaluated)",
            "only integers are accepted there; compare strings outside arithmetic",
        )
    return f"({text})" if text.startswith("-") else text


@dataclass(frozen=True)
class _Heredoc:
    """A here-document body in a template: ``[start, end)`` up to its delimiter line."""

    start: int
    end: int
    delim: str
    strip_tabs: bool
    in_comsub: bool

    def ended_by(self, line: str) -> bool:
        """Tell whether bash would end the body at ``line``.

        Bash reads the body as raw lines before parsing anything in it, and
        (5.2) inside ``$(...)`` a line merely starting with the delimiter ends it.
        """
        body = line.lstrip("\t") if self.strip_tabs else line
        return body == self.delim or (self.in_comsub and body.startswith(self.delim))


def _check_heredoc(
    heredoc: _Heredoc,
    text: str,
    replacements: Sequence[tuple[int, int, str]],
    spots: Sequence[_Spot],
    values: Mapping[str, Any],
    source: str,
) -> None:
    """Refuse a value that would end a here-document early, whatever its quoting.

    Renders the body alone and checks each of its lines against the
    delimiter: this is how bash finds the end, before it parses quotes or
    ``$(...)`` in the body.
    """
    pieces: list[str] = []
    owners: list[tuple[int, int, int]] = []  # rendered span of each replacement, its index
    last, length = heredoc.start, 0
    for index, (start, end, new) in enumerate(replacements):
        if not heredoc.start <= start < heredoc.end:
            continue
        pieces.append(text[last:start])
        length += start - last
        owners.append((length, length + len(new), index))
        pieces.append(new)
        length += len(new)
        last = end
    if not owners:
        return
    pieces.append(text[last : heredoc.end])
    line_start = 0
    for line in "".join(pieces).split("\n")[:-1]:
        line_end = line_start + len(line)
        if heredoc.ended_by(line):
            index = next(i for a, b, i in owners if a <= line_end and b >= line_start)
            spot = spots[index]
            raise UnsafeValueError(
                spot.name,
                values[spot.name],
                source,
                _line_of(text, spot.start),
                f"would end the here-document <<{heredoc.delim} early: a line would "
                "equal its delimiter",
                "use another delimiter, or read the value from $MOTOKO_PARAM_" + spot.name,
            )
        line_start = line_end + 1


# --------------------------------------------------------------------------- shell lexer

_CODE_KINDS = ("code", "cmdsub", "backtick")
_EXPANDING = ("code", "cmdsub", "backtick", "dq", "heredoc", "param", "arith", "subscript")
_WORD_BREAK = " \t\n;&|()<>"
_SUBSCRIPT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")
_KEYWORD_RE = re.compile(r"(case|esac)(?=[\s;&|()<>]|$)")


@dataclass
class _Frame:
    """One open lexical construct of a shell script.

    Attributes:
        kind: code, cmdsub, backtick, dq, sq, ansi, comment, param, arith,
            subscript, heredoc (expanded body) or heredoc_lit (literal body).
        depth: Open parentheses or braces inside this frame.
        delim: A here-document's delimiter.
        strip_tabs: ``<<-``: leading tabs are stripped before matching the delimiter.
        unsure: The lexer cannot be sure how bash reads this frame from here on;
            markers in it are refused.
        literal_sq: In ``${...}`` inside double quotes, ``'`` is an ordinary character.
        cases: Open ``case`` statements (their ``)`` do not close a ``$(``).
        first_spot: Index of the first marker found in a here-document body.
        body_start: Where a here-document body starts.
    """

    kind: str
    depth: int = 0
    delim: str = ""
    strip_tabs: bool = False
    unsure: bool = False
    literal_sq: bool = False
    cases: int = 0
    first_spot: int = 0
    body_start: int = 0


@dataclass
class _ShellLexer:
    """A small bash lexer: just enough to know which quoting a marker sits in.

    It walks the script once, keeping a stack of open constructs
    (:class:`_Frame`). Where bash's reading is ambiguous to such a small
    lexer, the frame is marked ``unsure`` and markers in it are refused: a
    refusal is an inconvenience, a wrong guess is an injection.
    """

    text: str
    pos: int = 0
    stack: list[_Frame] = field(default_factory=lambda: [_Frame("code")])
    pending: list[tuple[str, bool, bool]] = field(default_factory=list)
    spots: list[_Spot] = field(default_factory=list)
    heredocs: list[_Heredoc] = field(default_factory=list)
    pending_from: int = 0

    def run(self) -> list[_Spot]:
        """Lex the whole script; return its markers with their contexts."""
        handlers: dict[str, Callable[[str], None]] = {
            "code": self._code, "cmdsub": self._code, "backtick": self._code,
            "dq": self._dq, "sq": self._sq, "ansi": self._ansi, "comment": self._comment,
            "param": self._param, "arith": self._arith, "subscript": self._subscript,
            "heredoc": self._heredoc, "heredoc_lit": self._heredoc_lit,
        }  # fmt: skip
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "_" and self.text.startswith(MARKER_PREFIX, self.pos) and self._marker():
                continue
            if c == "`" and self._backtick():
                continue
            if c == "\\" and self._backtick_escape():
                continue
            if c == "\n":
                self._newline()
                continue
            handlers[self.stack[-1].kind](c)
        self._unterminated()
        return self.spots

    def _unterminated(self) -> None:
        """Refuse markers after a here-document that never ends.

        Bash would run to the end of the file too, but an unterminated body
        more likely means this lexer misread the delimiter: do not guess.
        """
        opened = [f.first_spot for f in self.stack if f.kind in ("heredoc", "heredoc_lit")]
        if self.pending:
            opened.append(self.pending_from)
        if not opened:
            return
        why = "sits after a here-document whose end was not found"
        for index in range(min(opened), len(self.spots)):
            spot = self.spots[index]
            self.spots[index] = _Spot(spot.start, spot.end, spot.name, "refuse", why=why)

    # -- markers -------------------------------------------------------------

    def _marker(self, why: str = "") -> bool:
        """Record a marker at ``pos`` with the current context; False if it is no marker."""
        match = _MARKER_RE.match(self.text, self.pos)
        if match is None:
            return False
        top = self.stack[-1]
        context = top.kind
        if why:
            context = "refuse"
        elif any(f.unsure for f in self.stack):
            context, why = "refuse", "sits where this lexer cannot be sure how bash reads it"
        ticks = [i for i, f in enumerate(self.stack) if f.kind == "backtick"]
        if len(ticks) > 1 and not why:
            context, why = "refuse", "sits in nested backticks"
        unescaped = ""
        if ticks:
            in_dq = any(f.kind == "dq" for f in self.stack[: ticks[0]])
            unescaped = '\\$`"' if in_dq else "\\$`"
        in_heredoc = any(f.kind == "heredoc" for f in self.stack)
        spot = _Spot(
            match.start(), match.end(), match.group(1), context, unescaped, why, in_heredoc
        )
        self.spots.append(spot)
        self.pos = match.end()
        return True

    def _after(self, offset: int, why: str) -> bool:
        """Refuse a marker right after a character (``$``, ``\\``) that would change it."""
        start = self.pos
        self.pos += offset
        if self.text.startswith(MARKER_PREFIX, self.pos) and self._marker(why):
            return True
        self.pos = start
        return False

    # -- generic characters --------------------------------------------------

    def _in_backtick(self) -> bool:
        return any(f.kind == "backtick" for f in self.stack)

    def _backtick(self) -> bool:
        """Open or close a backtick substitution; bash ends it at any unescaped backtick."""
        if self._in_backtick():
            while self.stack[-1].kind != "backtick":
                self.stack.pop()
            self.stack.pop()
            self.pos += 1
            return True
        if self.stack[-1].kind in _EXPANDING:
            self.stack.append(_Frame("backtick"))
            self.pos += 1
            return True
        return False

    def _backtick_escape(self) -> bool:
        """Handle a backslash inside backticks, where bash gives it a meaning of its own.

        Bash unescapes ``\\$ \\` \\\\`` (and ``\\"`` within double quotes)
        before parsing the body: too subtle for this lexer, so it gives up on
        the rest of that body. A backslash right before a marker would pair with
        the replacement's first character, in any quoting: refused.
        """
        if not self._in_backtick():
            return False
        if self._after(1, "follows a backslash inside backticks, which would pair with it"):
            return True
        nxt = self.text[self.pos + 1 : self.pos + 2]
        tick = max(i for i, f in enumerate(self.stack) if f.kind == "backtick")
        in_dq = any(f.kind == "dq" for f in self.stack[:tick])
        if nxt not in ("$", "`", "\\") and not (nxt == '"' and in_dq):
            return False
        if self.stack[-1].kind not in ("sq", "comment"):
            self.stack[-1].unsure = True
            next(f for f in reversed(self.stack) if f.kind == "backtick").unsure = True
        self.pos += 2
        return True

    def _backslash(self) -> None:
        """A backslash quotes the next character; a marker there would lose its quoting.

        Skipping the escaped character also makes a backslash-newline a line
        continuation: no comment end, no here-document line for bash either.
        """
        if self._after(
            1, "follows a backslash, which would escape the replacement's first character"
        ):
            return
        self.pos += 2

    def _dollar(self, ansi: bool) -> None:
        """Handle ``$``: ``$'``, ``$"``, ``${``, ``$((``, ``$(``, or a refused ``$marker``."""
        rest = self.text[self.pos + 1 : self.pos + 3]
        if rest.startswith("'") and ansi:
            self._push("ansi", 2)
        elif rest.startswith('"') and ansi:
            self._push("dq", 2)
        elif rest.startswith("{"):
            literal = self.stack[-1].kind in ("dq", "heredoc") or self.stack[-1].literal_sq
            self.stack.append(_Frame("param", literal_sq=literal))
            self.pos += 2
        elif rest == "((":
            self._push("arith", 3)
        elif rest.startswith("("):
            self._push("cmdsub", 2)
        elif not self._after(1, "follows a $, which would make bash expand the replacement"):
            self.pos += 1

    def _push(self, kind: str, width: int) -> None:
        self.stack.append(_Frame(kind))
        self.pos += width

    def _pop(self, width: int = 1) -> None:
        self.stack.pop()
        self.pos += width

    # -- newlines and here-documents ------------------------------------------

    def _heredoc_frame(self) -> int | None:
        """Return the stack index of the innermost here-document body, if any."""
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index].kind in ("heredoc", "heredoc_lit"):
                return index
        return None

    def _newline(self) -> None:
        """A newline ends comments, and starts pending here-document bodies."""
        if self.stack[-1].kind == "comment":
            self.stack.pop()
        self.pos += 1
        if self._heredoc_frame() is not None:
            self._line_start()
        elif self.pending and self.stack[-1].kind in _CODE_KINDS:
            self._start_heredoc()

    def _start_heredoc(self) -> None:
        delim, strip_tabs, quoted = self.pending.pop(0)
        kind = "heredoc_lit" if quoted else "heredoc"
        frame = _Frame(kind, delim=delim, strip_tabs=strip_tabs)
        frame.first_spot, frame.body_start = len(self.spots), self.pos
        self.stack.append(frame)
        self._line_start()

    def _line_start(self) -> None:
        """At a body line's start: a line equal to the delimiter ends the here-document.

        Bash reads here-document bodies line by line before expanding them, so
        this holds whatever is open inside the body.
        """
        index = self._heredoc_frame()
        if index is None:
            return
        frame = self.stack[index]
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        line = self.text[self.pos : end]
        in_comsub = any(f.kind == "cmdsub" for f in self.stack[:index])
        heredoc = _Heredoc(frame.body_start, self.pos, frame.delim, frame.strip_tabs, in_comsub)
        if not heredoc.ended_by(line):
            return
        self.heredocs.append(heredoc)
        del self.stack[index:]
        body = line.lstrip("\t") if frame.strip_tabs else line
        if body != frame.delim:
            # Inside $(...), bash parses the rest of such a line as code: odd
            # enough that this lexer stops trusting itself.
            self.pos += len(line) - len(body) + len(frame.delim)
            self.stack[0].unsure = True
            return
        self.pos = min(end + 1, len(self.text))
        if self.pending and self.stack[-1].kind in _CODE_KINDS:
            self._start_heredoc()

    def _heredoc_operator(self) -> None:
        """Read ``<<WORD``, ``<<-WORD``, ``<<'WORD'``...: the body starts at the next newline."""
        start = self.pos
        pos = start + 2
        strip_tabs = self.text.startswith("-", pos)
        pos += strip_tabs
        while pos < len(self.text) and self.text[pos] in " \t":
            pos += 1
        word, quoted, pos = _heredoc_word(self.text, pos)
        for match in _MARKER_RE.finditer(self.text, start, pos):
            why = "is in a here-document delimiter"
            self.spots.append(_Spot(match.start(), match.end(), match.group(1), "refuse", why=why))
        raw = self.text[start:pos]
        self.pos = pos
        if not word or "$" in raw or "`" in raw or self._heredoc_frame() is not None:
            self.stack[0].unsure = True  # malformed, expanded-looking or nested: give up
        if self._in_backtick():
            # Bash cuts a backtick body at its first backtick before reading
            # any here-document in it: give up rather than guess.
            self.stack[0].unsure = True
            return
        if not self.pending:
            self.pending_from = len(self.spots)
        self.pending.append((word, strip_tabs, quoted))

    # -- frames ----------------------------------------------------------------

    def _at_word_start(self) -> bool:
        return self.pos == 0 or self.text[self.pos - 1] in _WORD_BREAK

    def _code(self, c: str) -> None:
        """Outside quotes (also inside ``$(...)`` and backticks)."""
        frame = self.stack[-1]
        if c == "\\":
            self._backslash()
        elif c == "'":
            self._push("sq", 1)
        elif c == '"':
            self._push("dq", 1)
        elif c == "$":
            self._dollar(ansi=True)
        elif c == "#" and self._at_word_start():
            self._push("comment", 1)
        elif c == "(" and self._at_word_start() and self.text.startswith("((", self.pos):
            self._push("arith", 2)
        elif c == "(":
            frame.depth += 1
            self.pos += 1
        elif c == ")":
            self._close_paren(frame)
        elif c == "<" and self.text.startswith("<<<", self.pos):
            self.pos += 3
        elif c in "<>" and self.text.startswith("(", self.pos + 1):
            self._push("cmdsub", 2)  # process substitution: bash reads it like $(...)
        elif c == "<" and self.text.startswith("<<", self.pos):
            self._heredoc_operator()
        elif self._at_word_start() and self._word(frame):
            return
        else:
            self.pos += 1

    def _word(self, frame: _Frame) -> bool:
        """Notice ``case``/``esac`` inside ``$(...)`` and ``name[`` subscripts at a word start."""
        keyword = _KEYWORD_RE.match(self.text, self.pos)
        if keyword and frame.kind == "cmdsub":
            # A case pattern's ")" would look like the end of "$(": count them, trust less.
            frame.unsure = True
            frame.cases += 1 if keyword.group(1) == "case" else -1 if frame.cases else 0
            self.pos = keyword.end()
            return True
        subscript = _SUBSCRIPT_RE.match(self.text, self.pos)
        if subscript and MARKER_PREFIX not in subscript.group(0):
            self.pos = subscript.end()
            self.stack.append(_Frame("subscript"))
            return True
        return False

    def _close_paren(self, frame: _Frame) -> None:
        if frame.depth > 0:
            frame.depth -= 1
        elif frame.kind == "cmdsub" and not frame.cases:
            self.stack.pop()
        self.pos += 1

    def _dq(self, c: str) -> None:
        """Inside ``"..."``: only ``\\ $ ` "`` are special."""
        if c == "\\":
            self._backslash()
        elif c == '"':
            self._pop()
        elif c == "$":
            self._dollar(ansi=False)
        else:
            self.pos += 1

    def _sq(self, c: str) -> None:
        """Inside ``'...'``: nothing is special but the closing quote."""
        if c == "'":
            self._pop()
        else:
            self.pos += 1

    def _ansi(self, c: str) -> None:
        """Inside ``$'...'``: backslash escapes, ``'`` closes."""
        if c == "\\":
            self._backslash()
        elif c == "'":
            self._pop()
        else:
            self.pos += 1

    def _comment(self, c: str) -> None:
        self.pos += 1  # the newline ending it is handled by _newline

    def _param(self, c: str) -> None:
        """Inside ``${...}``: quotes nest (except ``'`` within double quotes), braces count."""
        frame = self.stack[-1]
        if c == "}" and frame.depth == 0:
            self._pop()
        elif c in "{}":
            frame.depth += 1 if c == "{" else -1
            self.pos += 1
        else:
            self._nested(c, sq=not frame.literal_sq)

    def _arith(self, c: str) -> None:
        """Inside ``$((...))`` or ``((...))``: parentheses count, ``))`` closes."""
        frame = self.stack[-1]
        if c == "(":
            frame.depth += 1
            self.pos += 1
        elif c == ")" and frame.depth > 0:
            frame.depth -= 1
            self.pos += 1
        elif c == ")":
            if not self.text.startswith("))", self.pos):
                self.stack[0].unsure = True  # "$((a) )" and the like: bash guesses, so do we
            self._pop(2)
        else:
            self._nested(c, sq=True)

    def _subscript(self, c: str) -> None:
        """Inside ``name[...]``: an arithmetic subscript, ``]`` closes."""
        frame = self.stack[-1]
        if c == "]" and frame.depth == 0:
            self._pop()
        elif c in "[]":
            frame.depth += 1 if c == "[" else -1
            self.pos += 1
        else:
            self._nested(c, sq=True)

    def _nested(self, c: str, *, sq: bool) -> None:
        """Quotes and expansions inside ``${...}``, arithmetic and subscripts."""
        if c == "\\":
            self._backslash()
        elif c == "'" and sq:
            self._push("sq", 1)
        elif c == '"':
            self._push("dq", 1)
        elif c == "$":
            self._dollar(ansi=sq)
        else:
            self.pos += 1

    def _heredoc(self, c: str) -> None:
        """In an unquoted-delimiter body: expanded like double quotes, but ``"`` is plain."""
        if c == "\\":
            self._backslash()
        elif c == "$":
            self._dollar(ansi=False)
        else:
            self.pos += 1

    def _heredoc_lit(self, c: str) -> None:
        self.pos += 1  # a quoted-delimiter body is literal


def _heredoc_word(text: str, pos: int) -> tuple[str, bool, int]:
    """Read a here-document delimiter word at ``pos``: (word without quotes, quoted?, end)."""
    word: list[str] = []
    quoted = False
    while pos < len(text) and text[pos] not in _WORD_BREAK:
        c = text[pos]
        if c in "'\"":
            close = text.find(c, pos + 1)
            close = len(text) if close < 0 else close
            word.append(text[pos + 1 : close])
            quoted, pos = True, close + 1
        elif c == "\\":
            word.append(text[pos + 1 : pos + 2])
            quoted, pos = True, pos + 2
        else:
            word.append(c)
            pos += 1
    return "".join(word), quoted, pos


# --------------------------------------------------------------------------- python


class _Untokenizable(Exception):
    """Python source that ``tokenize`` rejects: (message, line); render names the file."""


def _python_spots(text: str) -> list[_Spot]:
    """Find markers in Python source with the token each one sits in."""
    starts = [0]
    for line in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(line) + 1)

    def offset(point: tuple[int, int]) -> int:
        return starts[point[0] - 1] + point[1]

    spots: list[_Spot] = []
    try:
        for start, end, kind in _python_regions(text, offset):
            spots.extend(_region_spots(text, start, end, kind))
    except SyntaxError as exc:  # IndentationError from tokenize
        raise _Untokenizable(exc.msg, exc.lineno or 0) from None
    except tokenize.TokenError as exc:
        raise _Untokenizable(exc.args[0], exc.args[1][0]) from None
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


def _region_spots(text: str, start: int, end: int, kind: str) -> list[_Spot]:
    """Classify the markers of one token: a whole name, part of a name, string, comment."""
    token = text[start:end]
    if MARKER_PREFIX not in token:
        return []
    expression_spans = _fstring_expressions(token) if kind == "string" else []
    spots = []
    for match in _MARKER_RE.finditer(token):
        context, why = kind, ""
        if kind == "name" and match.group(0) != token:
            context, why = "refuse", "is part of a longer Python name"
        elif kind == "coding":
            context, why = "refuse", "is in the encoding declaration"
        elif any(a <= match.start() < b for a, b in expression_spans):
            context, why = "refuse", "is inside an f-string's {expression}"
        spots.append(
            _Spot(start + match.start(), start + match.end(), match.group(1), context, why=why)
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


def _python_replacement(spot: _Spot, value: Any, refuse: _Refuse) -> str:
    """Return a marker's replacement in Python source: a literal for a name, plain text in strings."""
    if spot.context == "name":
        try:
            return _py_literal(value, 0)
        except TypeError as exc:
            raise refuse(
                f"cannot be written as a Python literal ({exc})",
                "only str, int, float, bool, None, and lists/dicts of them are",
            ) from None
    text = _as_text(value)
    if _is_plain(text):
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


# --------------------------------------------------------------------------- paths


def safe_join(base: Path, name: str, *, what: str) -> Path:
    """Return ``base / name`` for a name from configuration, refusing anything that leaves ``base``.

    Refused: empty names, NUL bytes, absolute paths, any ``..`` component, and
    names whose resolved path (symlinks followed) is not strictly inside
    ``base``. ``base`` itself need not exist yet.

    Raises:
        StagingError: Naming ``what`` (e.g. "exec_file") and the value.
    """

    def refuse(why: str) -> StagingError:
        return StagingError(
            f"{what} {name!r} {why}", hint="use a relative path to a file inside " + str(base)
        )

    if not isinstance(name, str) or not name.strip():
        raise refuse("is empty")
    if "\0" in name:
        raise refuse("contains a NUL byte")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise refuse("is an absolute path")
    if ".." in path.parts:
        raise refuse("contains a '..' component")
    if not path.parts:
        raise refuse("names the folder itself, not a file")
    root = Path(base).resolve()
    target = (root / path).resolve()
    if target == root or not target.is_relative_to(root):
        raise refuse(f"resolves to {str(target)!r}, outside {str(root)!r} (through a symlink)")
    return Path(base).joinpath(*path.parts)


# --------------------------------------------------------------------------- template cache


@dataclass(frozen=True)
class _Template:
    """One study file as read: its identity, content, kind and permission bits."""

    key: tuple[int, int, int]
    content: str | bytes
    kind: str
    mode: int


class TemplateCache:
    """Study files read once, so that staging 1000 runs does not re-read them.

    An entry is keyed by the path and the file's (mtime_ns, size, inode): an
    edited or replaced file is read again. A change within the file system's
    time granularity that keeps size and inode would go unnoticed.

    Attributes:
        reads: How many times a file was actually read (for tests and benchmarks).
    """

    def __init__(self) -> None:
        self._entries: dict[Path, _Template] = {}
        self.reads = 0

    def load(self, path: Path) -> tuple[str | bytes, str]:
        """Return ``(content, kind)``: text and its :func:`file_kind`, or bytes and "binary".

        A file that is not valid UTF-8 is binary: copied verbatim, markers ignored.
        """
        entry = self.entry(path)
        return entry.content, entry.kind

    def entry(self, path: Path) -> _Template:
        """Return the cached file, reading it only if it changed since last time."""
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._entries.get(path)
        if cached is not None and cached.key == key:
            return cached
        data = Path(path).read_bytes()
        self.reads += 1
        content: str | bytes
        try:
            content = data.decode("utf-8")
            kind = file_kind(Path(path).name, content)
        except UnicodeDecodeError:
            content, kind = data, "binary"
        entry = _Template(key, content, kind, stat.S_IMODE(st.st_mode))
        self._entries[path] = entry
        return entry


# --------------------------------------------------------------------------- stage


def stage(
    run_dir: Path,
    study_folder: Path,
    exec_file: str,
    config_files: Sequence[str],
    values: Mapping[str, Any],
    run_json: Mapping[str, Any],
    *,
    cache: TemplateCache | None = None,
) -> Path:
    """Prepare a run directory: rendered copies of the study's files, and ``run.json``.

    Idempotent: staging again rewrites the same files with the same content
    (other files in the directory are left alone). Everything is rendered and
    checked before anything is written, so a refusal writes nothing; each file
    is written to a temporary name then renamed, so a crash never leaves half
    a file (power loss is not covered: no fsync, for speed).

    Args:
        run_dir: The run's directory; created with its parents if missing.
        study_folder: Where ``exec_file`` and ``config_files`` are read from.
        exec_file: The script to execute (staged with mode 0o755).
        config_files: Further files to copy (their permission bits kept).
        values: The values for ``__BLACKDYNAMITE__name__`` markers.
        run_json: Written to ``run.json`` as JSON (``default=str``).
        cache: A :class:`TemplateCache` shared across runs, or None.

    Returns:
        The staged exec file's path.

    Raises:
        StagingError: A missing file, a path leaving the study folder or the
            run directory, a symlink in the way, or an unsafe value.
    """
    cache = cache if cache is not None else TemplateCache()
    names = list(dict.fromkeys([exec_file, *config_files]))
    files = [_prepare(study_folder, name, name == exec_file, values, cache) for name in names]
    files.append((json.dumps(dict(run_json), indent=1, default=str).encode("utf-8"), 0o644))
    names.append(RUN_JSON)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        targets = [_destination(run_dir, name) for name in names]
        for target, (data, mode) in zip(targets, files, strict=True):
            _write_atomic(target, data, mode)
    except OSError as exc:
        raise StagingError(
            f"cannot write the run directory {str(run_dir)!r}: {exc.strerror or exc}",
            where=exc.filename and str(exc.filename),
            hint="check the directory's permissions and free space",
        ) from exc
    return targets[0]


def _prepare(
    study_folder: Path, name: str, is_exec: bool, values: Mapping[str, Any], cache: TemplateCache
) -> tuple[bytes, int]:
    """Read and render one study file: ``(bytes to write, mode)``."""
    what = "exec_file" if is_exec else "config file"
    if PurePosixPath(name).as_posix() == RUN_JSON:
        raise StagingError(
            f"{what} {name!r} is reserved: motoko writes run.json", hint="rename the file"
        )
    source = safe_join(study_folder, name, what=what)
    if not source.is_file():
        folder = Path(study_folder)
        present = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        raise StagingError(
            f"{what} {name!r} not found in study folder {str(study_folder)!r}",
            hint=did_you_mean(name, present),
        )
    try:
        entry = cache.entry(source)
    except OSError as exc:
        raise StagingError(
            f"cannot read {what} {name!r} in study folder {str(study_folder)!r}: {exc.strerror}",
            hint="check the file's permissions",
        ) from exc
    mode = 0o755 if is_exec else (entry.mode | 0o600)
    if isinstance(entry.content, bytes):
        return entry.content, mode
    rendered = render(entry.content, entry.kind, values, source=name)
    try:
        return rendered.encode("utf-8"), mode
    except UnicodeEncodeError as exc:
        raise StagingError(
            f"{what} {name!r} cannot be written as UTF-8 after rendering ({exc.reason})",
            hint="a value contains an unpaired surrogate; fix the value",
        ) from None


def _destination(run_dir: Path, name: str) -> Path:
    """Return where ``name`` goes in the run directory, refusing symlinks in the way."""
    target = safe_join(run_dir, name, what="destination")
    if target.is_symlink():
        raise StagingError(
            f"destination {str(target)!r} is a symlink; refusing to write through it",
            hint="remove the symlink from the run directory",
        )
    return target


def _write_atomic(target: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new temporary file beside ``target``, then rename it over ``target``.

    The temporary file is created exclusively and without following symlinks,
    and rename replaces a path rather than writing through it.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            os.fchmod(handle.fileno(), mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- environment


def run_environment(values: Mapping[str, Any], base: Mapping[str, str]) -> dict[str, str]:
    """Return ``base`` plus ``MOTOKO_PARAM_<name>`` for each value: the safest way to pass values.

    Text forms are those of markers: str as is, bool ``true``/``false``, None
    empty, lists and dicts as JSON. Names that are not valid environment
    identifiers are skipped (the value is still in ``run.json``).

    Raises:
        StagingError: A value contains a NUL byte, which no environment can hold.
    """
    env = dict(base)
    for name, value in values.items():
        if not isinstance(name, str) or _ENV_NAME_RE.fullmatch(name) is None:
            continue
        text = _as_text(value)
        if "\0" in text:
            raise StagingError(
                f"value of {name!r} contains a NUL byte, which an environment variable cannot hold",
                hint="remove the NUL byte",
            )
        env["MOTOKO_PARAM_" + name] = text
    return env
