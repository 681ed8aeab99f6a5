"""What a run was made from: a fingerprint of its study's input files.

When a run is created (and again when it is requeued for a new attempt), it
records the content hashes of its study's ``exec_file``, of every
``config_files`` entry and of ``bd.yaml``, plus the motoko version. Comparing
a finished run's fingerprint with the study's current one tells whether the
code that produced it changed since (see :mod:`motoko.flow.outdated`).

``bd.yaml`` is hashed *normalised*: parsed, then written as canonical JSON, so
editing a comment or re-indenting it does not make every run outdated. The
motoko version is recorded for the reader, but does not take part in the
digest: upgrading motoko does not invalidate results.

Hashing is pure (no database) and cached per process by file path, size and
modification time, so a workflow calling ``createTask`` thousands of times
reads each study file once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from motoko import __version__
from motoko.study.schema import StudySchema

#: The hash of a file that does not exist (a config file deleted since).
MISSING = "missing"

# path → ((size, mtime_ns, inode), hash). Per process; a file whose size or
# modification time changed is hashed again.
_cache: dict[str, tuple[tuple[int, int, int], str]] = {}


def file_hash(path: Path, *, normalise_yaml: bool = False) -> str:
    """The ``sha256:…`` of a file's content (of its sorted files for a folder).

    With ``normalise_yaml``, the file is parsed as YAML and hashed as canonical
    JSON, so comments and layout do not count; a file that is not valid YAML
    is hashed as bytes. A missing file hashes to :data:`MISSING`.
    """
    try:
        info = path.stat()
    except OSError:
        return MISSING
    if path.is_dir():
        return _folder_hash(path)
    key = str(path) + ("\x00yaml" if normalise_yaml else "")
    signature = (info.st_size, info.st_mtime_ns, info.st_ino)
    cached = _cache.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        data = path.read_bytes()
    except OSError:
        return MISSING
    if normalise_yaml:
        with contextlib.suppress(yaml.YAMLError):  # not YAML: its bytes are what counts
            data = json.dumps(yaml.safe_load(data), sort_keys=True, default=str, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _cache[key] = (signature, digest)
    return digest


def _folder_hash(folder: Path) -> str:
    """A config "file" may be a folder: hash its files' names and contents, sorted."""
    combined = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            combined.update(str(path.relative_to(folder)).encode() + b"\x00")
            combined.update(file_hash(path).encode() + b"\x00")
    return "sha256:" + combined.hexdigest()


def study_files(schema: StudySchema) -> dict[str, str]:
    """Content hash of each input file of the study: bd.yaml, exec_file, config_files.

    Keys are names relative to the study folder. Empty for a schema not read
    from disk (nothing to compare against).
    """
    folder = schema.folder
    if folder is None:
        return {}
    bd = Path(schema.source) if schema.source else folder / "bd.yaml"
    out = {"bd.yaml": file_hash(bd, normalise_yaml=True)}
    for name in [schema.exec_file, *schema.config_files]:
        out[name] = file_hash(folder / name)
    return out


def digest(files: Mapping[str, str]) -> str:
    """One hash for a set of file hashes (what "the study's inputs" are)."""
    text = json.dumps(dict(files), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def study_fingerprint(schema: StudySchema) -> dict[str, Any] | None:
    """The fingerprint a run of this study records: files, their digest, motoko's version.

    None for a schema not read from disk.
    """
    files = study_files(schema)
    if not files:
        return None
    return {"files": files, "digest": digest(files), "motoko": __version__}


def changed_files(recorded: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> list[str]:
    """Names of the files whose hash differs between two fingerprints, sorted.

    Empty when either fingerprint is unknown (a run created by an older
    motoko, or a study not read from disk): nothing proves it changed.
    """
    if not recorded or not current:
        return []
    old, new = recorded.get("files") or {}, current.get("files") or {}
    return sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


__all__ = ["MISSING", "changed_files", "digest", "file_hash", "study_files", "study_fingerprint"]
