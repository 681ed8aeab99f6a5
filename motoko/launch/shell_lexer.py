"""The shell-script lexer: which quoting each marker of a shell file sits in.

Bash's grammar is far too large to parse here; this lexer follows just the
constructs that change how a word is read (quotes, ``$'...'``, ``${...}``,
arithmetic, command substitution, backticks, comments and here-documents).
Where it cannot be sure how bash reads a marker, it marks it refused: the
renderer (:mod:`motoko.launch.shell_template`) never guesses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from motoko.launch.markers import MARKER_PREFIX, MARKER_RE, Spot

__all__ = ["Heredoc", "ShellLexer"]

_CODE_KINDS = ("code", "cmdsub", "backtick")
_EXPANDING = ("code", "cmdsub", "backtick", "dq", "heredoc", "param", "arith", "subscript")
_WORD_BREAK = " \t\n;&|()<>"
_SUBSCRIPT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")
_KEYWORD_RE = re.compile(r"(case|esac)(?=[\s;&|()<>]|$)")


@dataclass(frozen=True)
class Heredoc:
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
class ShellLexer:
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
    spots: list[Spot] = field(default_factory=list)
    heredocs: list[Heredoc] = field(default_factory=list)
    pending_from: int = 0

    def run(self) -> list[Spot]:
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
            self.spots[index] = Spot(spot.start, spot.end, spot.name, "refuse", why=why)

    # -- markers -------------------------------------------------------------

    def _marker(self, why: str = "") -> bool:
        """Record a marker at ``pos`` with the current context; False if it is no marker."""
        match = MARKER_RE.match(self.text, self.pos)
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
        spot = Spot(match.start(), match.end(), match.group(1), context, unescaped, why, in_heredoc)
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
        heredoc = Heredoc(frame.body_start, self.pos, frame.delim, frame.strip_tabs, in_comsub)
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
        for match in MARKER_RE.finditer(self.text, start, pos):
            why = "is in a here-document delimiter"
            self.spots.append(Spot(match.start(), match.end(), match.group(1), "refuse", why=why))
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
