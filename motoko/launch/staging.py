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

This module stages run directories and dispatches rendering by file kind; the
languages live beside it: :mod:`~motoko.launch.markers` (marker syntax, value
text forms, :class:`UnsafeValueError`), :mod:`~motoko.launch.shell_lexer` and
:mod:`~motoko.launch.shell_template` (shell files), and
:mod:`~motoko.launch.python_template` (Python files).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from motoko.errors import StagingError, did_you_mean
from motoko.launch.markers import (
    MARKER_PREFIX,
    MARKER_RE,
    Spot,
    UnsafeValueError,
    as_text,
    is_plain,
    line_of,
)
from motoko.launch.python_template import Untokenizable, python_replacement, python_spots
from motoko.launch.run_dirs import RUN_JSON, StagedRun, safe_join
from motoko.launch.shell_lexer import Heredoc, ShellLexer
from motoko.launch.shell_template import check_heredoc, shell_replacement

__all__ = [
    "KINDS",
    "MARKER_PREFIX",
    "StagedRun",
    "TemplateCache",
    "UnsafeValueError",
    "file_kind",
    "plan_stage",
    "render",
    "run_environment",
    "run_json_text",
    "safe_join",
    "stage",
]

KINDS = ("shell", "python", "other")

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SHELL_NAMES = ("sh", "bash", "zsh", "dash", "ksh")
_SHELL_SUFFIXES = (".sh", ".bash", ".zsh", ".ksh")


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
    except Untokenizable as exc:
        raise StagingError(
            f"cannot tokenize this Python file to place markers safely: {exc.args[0]}",
            where=f"{source}:{exc.args[1]}",
            hint="fix the file's syntax",
        ) from None
    replacements = [(s.start, s.end, _replacement(kind, s, values, text, source)) for s in spots]
    rendered = _splice(text, replacements)
    for heredoc in heredocs:
        check_heredoc(heredoc, text, replacements, spots, values, source)
    return rendered


def _check_names(text: str, values: Mapping[str, Any], source: str) -> None:
    """Refuse a marker that names no value, and refuse markers in the ``#!`` line."""
    first_line_end = text.find("\n") if text.startswith("#!") else 0
    if first_line_end < 0:
        first_line_end = len(text)
    for match in MARKER_RE.finditer(text):
        name = match.group(1)
        if name in values and match.start() >= first_line_end:
            continue
        where = f"{source}:{line_of(text, match.start())}"
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
def _analyse(text: str, kind: str) -> tuple[tuple[Spot, ...], tuple[Heredoc, ...]]:
    """Return every marker with its context, and a shell file's here-documents.

    Cached: 1000 runs staged from one template lex it once.
    """
    if kind == "shell":
        lexer = ShellLexer(text)
        return _covered(text, lexer.run()), tuple(lexer.heredocs)
    if kind == "python":
        return _covered(text, python_spots(text)), ()
    spots = [Spot(m.start(), m.end(), m.group(1), "plain") for m in MARKER_RE.finditer(text)]
    return tuple(spots), ()


def _covered(text: str, spots: list[Spot]) -> tuple[Spot, ...]:
    """Refuse every marker the analysis did not place: never leave one unexamined."""
    placed = {s.start for s in spots}
    why = "sits where the file's syntax could not be followed"
    missed = [
        Spot(m.start(), m.end(), m.group(1), "refuse", why=why)
        for m in MARKER_RE.finditer(text)
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


def _replacement(kind: str, spot: Spot, values: Mapping[str, Any], text: str, source: str) -> str:
    """Return the text that replaces one marker, or raise UnsafeValueError."""
    if spot.name not in values:
        raise StagingError(
            f"unknown marker {text[spot.start : spot.end]!r}",
            where=f"{source}:{line_of(text, spot.start)}",
            hint=did_you_mean(spot.name, values),
        )
    value = values[spot.name]

    def refuse(why: str, hint: str) -> UnsafeValueError:
        return UnsafeValueError(spot.name, value, source, line_of(text, spot.start), why, hint)

    if spot.context == "refuse":
        raise refuse(spot.why, _REFUSAL_HINTS[kind].replace("NAME", spot.name))
    if kind == "python":
        return python_replacement(spot, value, refuse)
    if kind == "shell":
        return shell_replacement(spot, value, refuse, text)
    text_value = as_text(value)
    if not is_plain(text_value):
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


# --------------------------------------------------------------------------- paths


# --------------------------------------------------------------------------- template cache


@dataclass(frozen=True)
class _Template:
    """One study file as read: its identity, content, kind and permission bits."""

    key: tuple[int, int, int]
    content: str | bytes
    kind: str
    mode: int
    data: bytes = b""


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
        self._sources: dict[tuple[Path, str, str], Path] = {}

    def source(self, study_folder: Path, name: str, what: str) -> Path:
        """:func:`safe_join` of a study file, checked once per launcher, not once per run.

        The check follows symlinks on every path component, which costs a
        system call each: for thousands of runs of the same study it adds up.
        """
        key = (study_folder, name, what)
        path = self._sources.get(key)
        if path is None:
            path = self._sources[key] = safe_join(study_folder, name, what=what)
        return path

    def load(self, path: Path) -> tuple[str | bytes, str]:
        """Return ``(content, kind)``: text and its :func:`file_kind`, or bytes and "binary".

        A file that is not valid UTF-8 is binary: copied verbatim, markers ignored.
        """
        entry = self.entry(path)
        return entry.content, entry.kind

    def entry(self, path: Path) -> _Template:
        """Return the cached file, reading it only if it changed since last time."""
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a folder, a fifo...: no file to stage
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(path))
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
        entry = _Template(key, content, kind, stat.S_IMODE(st.st_mode), data)
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
    checked before anything is written, so a refusal writes nothing. In an
    existing directory each file is written to a temporary name then renamed,
    so a crash never leaves half a file where a process may read it; a
    directory this call creates is written in place, and an exec file no
    marker changed is linked to a shared copy (see
    :class:`~motoko.launch.run_dirs.StagedRun`). No fsync, for speed: power
    loss is not covered.

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
    return plan_stage(run_dir, study_folder, exec_file, config_files, values, run_json, cache=cache).write()


def plan_stage(
    run_dir: Path,
    study_folder: Path,
    exec_file: str,
    config_files: Sequence[str],
    values: Mapping[str, Any],
    run_json: Mapping[str, Any],
    *,
    cache: TemplateCache | None = None,
) -> StagedRun:
    """Render and check what :func:`stage` writes, writing nothing (same arguments).

    Why apart: a launcher checks a run here, in its loop, and has the files
    written (:meth:`StagedRun.write`) by the thread that starts the run's
    process, where waiting on the file system holds nobody up.

    Raises:
        StagingError: A missing file, a path leaving the study folder, or an unsafe value.
    """
    cache = cache if cache is not None else TemplateCache()
    names = list(dict.fromkeys([exec_file, *config_files]))
    prepared = [_prepare(study_folder, name, name == exec_file, values, cache) for name in names]
    files = [(data, mode) for data, mode, _ in prepared]
    files.append((run_json_text(run_json), 0o644))
    names.append(RUN_JSON)
    return StagedRun(Path(run_dir), names, files, prepared[0][2])


#: Encodes run.json's values; ``default=str`` writes dates and the like as text.
_RUN_JSON_ENCODER = json.JSONEncoder(default=str)


def run_json_text(run_json: Mapping[str, Any]) -> bytes:
    """``run.json``'s bytes: an object with each top-level entry on a line of its own.

    Why not ``json.dumps(indent=...)``: an indent makes :mod:`json` encode in
    Python rather than C, five times slower, for every run a launcher
    starts; an entry per line keeps the file readable (``run``, ``job``).
    """
    if not run_json:
        return b"{}"
    encode = _RUN_JSON_ENCODER.encode
    entries = ",\n".join(f" {encode(str(key))}: {encode(value)}" for key, value in run_json.items())
    return ("{\n" + entries + "\n}").encode("utf-8")


def _prepare(
    study_folder: Path, name: str, is_exec: bool, values: Mapping[str, Any], cache: TemplateCache
) -> tuple[bytes, int, bool]:
    """Read and render one study file: ``(bytes to write, mode, whether no marker changed them)``."""
    what = "exec_file" if is_exec else "config file"
    if PurePosixPath(name).as_posix() == RUN_JSON:
        raise StagingError(
            f"{what} {name!r} is reserved: motoko writes run.json", hint="rename the file"
        )
    source = cache.source(study_folder, name, what)
    try:
        entry = cache.entry(source)  # one stat per run and file: the cache's
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        folder = Path(study_folder)
        present = [p.name for p in folder.iterdir()] if folder.is_dir() else []
        raise StagingError(
            f"{what} {name!r} not found in study folder {str(study_folder)!r}",
            hint=did_you_mean(name, present),
        ) from None
    except OSError as exc:
        raise StagingError(
            f"cannot read {what} {name!r} in study folder {str(study_folder)!r}: {exc.strerror}",
            hint="check the file's permissions",
        ) from exc
    mode = 0o755 if is_exec else (entry.mode | 0o600)
    if isinstance(entry.content, bytes):
        return entry.content, mode, True
    rendered = render(entry.content, entry.kind, values, source=name)
    if rendered is entry.content:
        return entry.data, mode, True
    try:
        return rendered.encode("utf-8"), mode, False
    except UnicodeEncodeError as exc:
        raise StagingError(
            f"{what} {name!r} cannot be written as UTF-8 after rendering ({exc.reason})",
            hint="a value contains an unpaired surrogate; fix the value",
        ) from None


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
        text = as_text(value)
        if "\0" in text:
            raise StagingError(
                f"value of {name!r} contains a NUL byte, which an environment variable cannot hold",
                hint="remove the NUL byte",
            )
        env["MOTOKO_PARAM_" + name] = text
    return env
