"""The words of a constraint string: ``x >= 2, name ~ 'a b'`` → tokens with their columns.

:mod:`motoko.study.query` parses constraint strings; this module cuts them
into tokens first: bare words (brackets nest, so ``tags = [1, 2]`` is one
word), quoted strings (a backslash escapes the quote or a backslash),
operators in their canonical spelling (``==`` is ``=``, ``<>`` is ``!=``) and
``( ) ,``. Every token keeps its column, so a syntax error can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from motoko.errors import QueryError
from motoko.study.constraints import OPERATORS

#: Every spelling of an operator → its canonical one.
SPELLINGS = {op: op for op in OPERATORS[:10]} | {"==": "=", "<>": "!="}
#: The hint of every message about an operator.
OPERATOR_HINT = "operators: < > <= >= = != ~ ~* !~ !~*, in (...), not in (...)"
_OP_CHARS = "<>=!~"
_WORD_STOP = "()," + _OP_CHARS


@dataclass(frozen=True)
class Token:
    """One word, string, operator or punctuation of a constraint, at its 1-based column."""

    kind: str  # "word", "string", "op", "(", ")", ",", "end"
    text: str  # for strings: unescaped; for operators: canonical spelling
    column: int


def _read_string(text: str, start: int) -> tuple[Token, int]:
    quote, i, parts = text[start], start + 1, []
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            parts.append(text[i + 1])
            i += 2
            continue
        if char == quote:
            return Token("string", "".join(parts), start + 1), i + 1
        parts.append(char)
        i += 1
    raise QueryError(
        f"unterminated string: no closing {quote}",
        text=text,
        column=start + 1,
        hint=f"close it with {quote}; write \\{quote} for a quote inside the value",
    )


def _read_operator(text: str, start: int) -> tuple[Token, int]:
    end = start
    while end < len(text) and text[end] in _OP_CHARS:
        end += 1
    if text[end - 1] == "~" and end < len(text) and text[end] == "*":
        end += 1
    spelled = text[start:end]
    if spelled not in SPELLINGS:
        raise QueryError(
            f"unknown operator {spelled!r}", text=text, column=start + 1, hint=OPERATOR_HINT
        )
    return Token("op", SPELLINGS[spelled], start + 1), end


def _read_word(text: str, start: int) -> tuple[Token, int]:
    # Brackets nest so that JSON literals (tags = [1, 2]) need no quotes.
    end, depth, opener = start, 0, start
    while end < len(text):
        char = text[end]
        if char in "[{":
            opener = end if depth == 0 else opener
            depth += 1
        elif char in "]}" and depth:
            depth -= 1
        elif not depth and (char.isspace() or char in _WORD_STOP):
            break
        end += 1
    if depth:
        raise QueryError(
            f"unclosed {text[opener]!r}",
            text=text,
            column=opener + 1,
            hint="close it, or quote the value",
        )
    return Token("word", text[start:end], start + 1), end


def tokenize(text: str) -> list[Token]:
    """Split a constraint into tokens, each with its 1-based column."""
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
            continue
        if char in "(),":
            token, i = Token(char, char, i + 1), i + 1
        elif char in "'\"":
            token, i = _read_string(text, i)
        elif char in _OP_CHARS:
            token, i = _read_operator(text, i)
        else:
            token, i = _read_word(text, i)
        tokens.append(token)
    tokens.append(Token("end", "", len(text) + 1))
    return tokens
