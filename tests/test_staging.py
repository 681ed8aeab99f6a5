"""Staging run directories: hostile values must stay inert data, executed for real.

Every hostile value is staged into real shell and Python files which are then
run with bash and the Python interpreter; the test asserts that nothing was
executed (no PWNED file anywhere) and that the script read back exactly the
value, or that staging refused with a StagingError where refusal is the
documented answer (a value that would end a here-document early).
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from motoko.errors import MotokoError, StagingError
from motoko.launch.staging import (
    TemplateCache,
    UnsafeValueError,
    file_kind,
    render,
    run_environment,
    run_json_text,
    safe_join,
    stage,
)

M = "__BLACKDYNAMITE__x__"

HOSTILE: list[str] = [
    "a; touch PWNED",
    "$(touch PWNED)",
    "`touch PWNED`",
    "'; touch PWNED; '",
    '"; touch PWNED; "',
    "a\ntouch PWNED",
    "\\",
    "${HOME}",
    "$HOME",
    "*",
    "~",
    "!",
    "a'b\"c",
    "héllo wörld ☃ 日本語 🎉 \u2028 \u00a0",
    "EOF\ntouch PWNED\nEOF",
    "__import__('os').system('touch PWNED')",
    '"""; import os; os.system("touch PWNED"); """',
    "{0}",
    "../../etc/passwd",
    "-n",
    "",
    ("ab'\"$`\\ (){};|&<>*?~!#\n" * 800) + "$(touch PWNED)",
    "\\$(touch PWNED)",
    "a\\",
    "\\'",
    "$'\\x27; touch PWNED; \\x27'",
    "\ttab\r\nCRLF\r",
    "<<EOF",
    "# not a comment",
    "a && touch PWNED || touch PWNED",
    "; ) touch PWNED ( ",
    "\\\ntouch PWNED",
    "${IFS}",
    "x=1 touch PWNED",
    "{a,b}",
    "[[ -n x ]] && touch PWNED",
    "\x1b[31mred\x07",
    "  leading and trailing  ",
    "\n\ntrailing newlines\n\n",
    "EOF",
    "\tEND",
    "END\n$(touch PWNED)",
    "'\"'\"'",
    "}; touch PWNED; {",
    "$((1+1))",
    "if",
    "PATH=/nonexistent",
    "a[$(touch PWNED)]",
    '"{,}',
    "EOF)",
    "EOFtouch PWNED)",
]


def _ids(values: list[Any]) -> list[str]:
    return [f"{i}-{repr(v)[:25]}" for i, v in enumerate(values)]


def _no_pwned(root: Path) -> None:
    found = [str(p) for p in root.rglob("PWNED*")]
    assert not found, f"a value was executed: {found}"


def _bash(run_dir: Path, script: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(run_dir)}
    return subprocess.run(
        ["bash", str(script)], cwd=run_dir, capture_output=True, text=True, timeout=30, env=env
    )


def _study(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    study = tmp_path / "study"
    study.mkdir(exist_ok=True)
    for name, content in files.items():
        path = study / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return study


def _stage_one(tmp_path: Path, name: str, text: str, value: Any) -> Path:
    study = _study(tmp_path, {name: text})
    return stage(tmp_path / "runs" / "1", study, name, [], {"x": value}, {"id": 1})


# ----------------------------------------------------------------------------- shell corpus

ALL_CONTEXTS = f"""#!/bin/bash
set -u
mkdir -p out
printf '%s' {M} > out/bare
printf '%s' "{M}" > out/dq
printf '%s' 'pre:{M}:post' > out/sq
printf '%s' $'{M}' > out/ansi
printf '%s' "$(printf '%s' {M})" > out/cmdsub
printf '%s' "$(printf '%s' "{M}")" > out/cmdsub_dq
printf '%s' "`printf '%s' {M}`" > out/backtick
v={M}
printf '%s' "$v" > out/assign
# a comment: {M} ) ` '
cat > out/heredoc <<EOF
{M}
EOF
cat > out/heredoc_quoted <<'EOF'
{M}
EOF
cat > out/heredoc_tabs <<-"END"
\t{M}
\tEND
printf '%s' "$(cat <<EOF
{M}
EOF
)" > out/heredoc_in_cmdsub
echo {M} > out/echo  # no equality: echo reads options
echo "$(echo "{M}")" > out/echo_dq
"""


def _expected(value: str) -> dict[str, str]:
    return {
        "bare": value,
        "dq": value,
        "sq": f"pre:{value}:post",
        "ansi": value,
        "cmdsub": value.rstrip("\n"),
        "cmdsub_dq": value.rstrip("\n"),
        "backtick": value.rstrip("\n"),
        "assign": value,
        "heredoc": value + "\n",
        "heredoc_quoted": value + "\n",
        "heredoc_in_cmdsub": value.rstrip("\n"),
    }


def _ends_heredoc(value: str) -> bool:
    # Inside $(...), bash 5.2 ends a here-document at a line merely starting with
    # its delimiter, and runs the rest of that line.
    lines = value.split("\n")
    return any(line.startswith("EOF") or line.lstrip("\t") == "END" for line in lines)


@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_shell_every_context_is_inert(tmp_path: Path, value: str) -> None:
    try:
        script = _stage_one(tmp_path, "launch.sh", ALL_CONTEXTS, value)
    except StagingError as exc:
        assert _ends_heredoc(value), f"unexpected refusal: {exc}"
        assert "here-document" in str(exc)
        assert "launch.sh:" in str(exc)
        assert not (tmp_path / "runs").exists(), "a refusal must write nothing"
        return
    assert not _ends_heredoc(value), "a value ending a here-document was accepted"
    result = _bash(script.parent, script)
    _no_pwned(tmp_path)
    assert result.returncode == 0, result.stderr
    out = script.parent / "out"
    for name, expected in _expected(value).items():
        assert (out / name).read_bytes().decode() == expected, name


SHELL_CONTEXTS: dict[str, tuple[str, str]] = {
    # name: (script line(s), how the output relates to the value)
    "bare": (f"printf '%s' {M} > out", "exact"),
    "dq": (f'printf "%s" "<{M}>" > out', "angle"),
    "sq": (f"printf '%s' '<{M}>' > out", "angle"),
    "ansi": (f"printf '%s' $'<{M}>' > out", "angle"),
    "cmdsub": (f"printf '%s' \"$(printf '%s' {M})\" > out", "rstrip"),
    "cmdsub_in_dq": (f"printf '%s' \"<$(printf '%s' \"{M}\")>\" > out", "cmdsub_angle"),
    "backtick": (f"printf '%s' \"`printf '%s' {M}`\" > out", "rstrip"),
    "backtick_with_dq": (f"v=`printf '%s' \"<{M}>\"`; printf '%s' \"$v\" > out", "angle"),
    "assign": (f"v={M}; printf '%s' \"$v\" > out", "exact"),
    "array": (f"a=({M} x); printf '%s' \"${{a[0]}}\" > out", "exact"),
    "case": (f"case {M} in *) printf '%s' {M} > out;; esac", "exact"),
    "comment": (f"# {M}\ntrue > out", "none"),
    "comment_in_cmdsub": (f"v=$(echo hi # {M} )\n)\ntrue > out", "none"),
    "heredoc": (f"cat > out <<EOF\n{M}\nEOF", "newline"),
    "heredoc_quoted": (f"cat > out <<'EOF'\n{M}\nEOF", "newline"),
    "heredoc_in_cmdsub": (f'v="$(cat <<EOF\n{M}\nEOF\n)"\nprintf %s "$v" > out', "rstrip"),
    "heredoc_cmdsub": (f"cat > out <<EOF\n$(printf '%s' {M})\nEOF", "rstrip_newline"),
    "heredoc_string": (f"cat > out <<<{M}", "newline"),
    "procsub": (f"cat <(printf '%s' {M}) > out", "exact"),
    "heredoc_in_procsub": (f"cat > out < <(cat <<'EOF'\n{M}\nEOF\n)", "newline"),
}


def _shell_expected(how: str, value: str) -> str | None:
    return {
        "exact": value,
        "angle": f"<{value}>",
        "rstrip": value.rstrip("\n"),
        "cmdsub_angle": f"<{value.rstrip(chr(10))}>",
        "newline": value + "\n",
        "rstrip_newline": value.rstrip("\n") + "\n",
        "none": None,
    }[how]


def _may_refuse(context: str, value: str) -> bool:
    """Where a refusal is the documented answer: a value that could end a here-document
    early, or a backslash-newline that bash would remove inside one."""
    if not context.startswith("heredoc") or context == "heredoc_string":
        return False
    lines = value.split("\n")
    in_comsub = context in ("heredoc_in_cmdsub", "heredoc_in_procsub")
    if in_comsub and any(line.startswith("EOF") for line in lines):
        return True
    return "EOF" in lines or (context == "heredoc_cmdsub" and "\\\n" in value)


@pytest.mark.parametrize("context", sorted(SHELL_CONTEXTS))
@pytest.mark.parametrize("value", HOSTILE, ids=_ids(HOSTILE))
def test_shell_context_is_inert(tmp_path: Path, context: str, value: str) -> None:
    line, how = SHELL_CONTEXTS[context]
    try:
        script = _stage_one(tmp_path, "launch.sh", "#!/bin/bash\n" + line + "\n", value)
    except StagingError as exc:
        assert _may_refuse(context, value), f"unexpected refusal: {exc}"
        return
    result = _bash(script.parent, script)
    _no_pwned(tmp_path)
    assert result.returncode == 0, result.stderr
    expected = _shell_expected(how, value)
    if expected is not None:
        assert (script.parent / "out").read_bytes().decode() == expected


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ([1, "a b"], '[1, "a b"]'),
        ({"k": "$(touch PWNED)"}, '{"k": "$(touch PWNED)"}'),
    ],
)
def test_shell_non_string_values(tmp_path: Path, value: Any, text: str) -> None:
    script = _stage_one(tmp_path, "run.sh", f"printf '%s' {M} > out\n", value)
    assert _bash(script.parent, script).returncode == 0
    _no_pwned(tmp_path)
    assert (script.parent / "out").read_text() == text


def test_shell_nul_is_refused() -> None:
    with pytest.raises(UnsafeValueError, match="NUL"):
        render(f"echo {M}\n", "shell", {"x": "a\0b"}, source="launch.sh")


# ----------------------------------------------------------------------------- refused shell contexts


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (f'echo "${{y:-{M}}}"', r"\$\{\.\.\.\}"),
        (f"echo ${{y:-{M}}}", r"\$\{\.\.\.\}"),
        (f"echo ${M}", "follows a \\$"),
        (f'echo "${M}"', "follows a \\$"),
        (f"echo \\{M}", "backslash"),
        (f'echo "\\{M}"', "backslash"),
        (f"cat <<{M}\nx\n{M}\n", "here-document delimiter"),
        (f"echo `echo \\`echo {M}\\``", "cannot be sure|nested"),
        (f"echo $(case a in a) echo {M};; esac)", "cannot be sure"),
        (f"echo $(( {M} + 1 ))", "not an integer"),
        (f"(( {M} > 1 ))", "not an integer"),
        (f"a[{M}]=1", "not an integer"),
        (f'echo "`echo \\"{M}\\"`"', "cannot be sure"),
    ],
)
def test_shell_unsafe_contexts_refuse(template: str, reason: str) -> None:
    with pytest.raises(StagingError, match=reason):
        render(template + "\n", "shell", {"x": "MOTOKO_PARAM_y"}, source="launch.sh")


@pytest.mark.parametrize("inner", [f"$(printf %s {M})", f"$(printf %s '{M}')"])
def test_shell_backslash_newline_in_heredoc_refused(inner: str) -> None:
    # bash joins backslash-newline lines of an unquoted here-document before
    # parsing the body, even inside quotes of a $(...): the value would change.
    with pytest.raises(UnsafeValueError, match="backslash"):
        render(f"cat <<EOF\n{inner}\nEOF\n", "shell", {"x": "a\\\nb"}, source="launch.sh")


def test_shell_marker_before_continuation_in_heredoc_refused() -> None:
    text = f"cat <<EOF\n$(printf %s {M}\\\n)\nEOF\n"
    with pytest.raises(UnsafeValueError, match="backslash"):
        render(text, "shell", {"x": "a"}, source="launch.sh")


def test_unsafe_value_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(UnsafeValueError) as info:
        render(f"x = '{M}'\n", "python", {"x": "a'b"}, source="doIt.py")
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.field == "x" and copy.line == 1


def test_shell_backslash_newline_in_heredoc_backticks_is_exact(tmp_path: Path) -> None:
    # Inside backticks the backslash is doubled, which also protects it from the join.
    script = _stage_one(tmp_path, "launch.sh", f"cat > out <<EOF\n`echo {M}`\nEOF\n", "a\\\nb")
    assert _bash(script.parent, script).returncode == 0
    assert (script.parent / "out").read_text() == "a\\\nb\n"


def test_shell_arithmetic_takes_integers(tmp_path: Path) -> None:
    text = f'printf "%s %s" $(( {M} * 2 )) "$(( 3 - {M} ))" > out\na[{M} + 9]=1\n'
    script = _stage_one(tmp_path, "launch.sh", text, -4)
    assert _bash(script.parent, script).returncode == 0
    assert (script.parent / "out").read_text() == "-8 7"


def test_shell_marker_in_shebang_refused() -> None:
    with pytest.raises(StagingError, match="#! line"):
        render(f"#!/bin/{M}\necho hi\n", "shell", {"x": "bash"}, source="launch.sh")


def test_shell_text_outside_markers_is_untouched() -> None:
    text = "#!/bin/bash\n# $(keep) `this` 'as' \"is\"\r\necho $HOME ${x:-y}\n"
    assert render(text, "shell", {}, source="launch.sh") == text
    rendered = render(text + f"echo {M}\n", "shell", {"x": "v"}, source="launch.sh")
    assert rendered == text + "echo 'v'\n"


# ----------------------------------------------------------------------------- python corpus

PY_VALUES: list[Any] = [
    *HOSTILE,
    0,
    -3,
    10**30,
    1.5,
    -0.0,
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
    [1, "a'b", [None, 2.5], {"k": "v"}],
    {"a": 1, "b": ["$(x)", False], "c": {"d": None}},
]

PY_SCRIPT = f"""import json
x = {M}
y = [{M}, -{M} if isinstance({M}, (int, float)) and not isinstance({M}, bool) else 0]
# comment: {M}
with open("out.json", "w", encoding="utf-8") as handle:
    json.dump({{"x": x, "y0": y[0]}}, handle)
"""


@pytest.mark.parametrize("value", PY_VALUES, ids=_ids(PY_VALUES))
def test_python_bare_name_is_the_value(tmp_path: Path, value: Any) -> None:
    script = _stage_one(tmp_path, "doIt.py", PY_SCRIPT, value)
    result = subprocess.run(
        [sys.executable, script.name], cwd=script.parent, capture_output=True, text=True, timeout=60
    )
    _no_pwned(tmp_path)
    assert result.returncode == 0, result.stderr
    out = json.loads((script.parent / "out.json").read_text(encoding="utf-8"))
    expected = json.loads(json.dumps({"x": value, "y0": value}))
    assert out == expected


PLAIN = ["abc", "", "a b", "1.5e-3", "user@host:/path/x_y-z", "50%", "a=b,c+d"]
NOT_PLAIN = [
    v for v in HOSTILE if v not in PLAIN and not set(v) <= set("abcdefghijklmnopqrstuvwxyz")
]


@pytest.mark.parametrize(
    "template",
    [
        f'x = "{M}"',
        f"x = '''{M}'''",
        f'x = f"{{1}}{M}"',
        f'x = b"{M}"',
        f'x = r"{M}"',
        f'"""doc {M}"""',
    ],
)
@pytest.mark.parametrize("value", NOT_PLAIN[:12], ids=_ids(NOT_PLAIN[:12]))
def test_python_string_refuses_hostile_values(template: str, value: str) -> None:
    with pytest.raises(UnsafeValueError, match="inside a Python string literal") as info:
        render(template + "\n", "python", {"x": value}, source="doIt.py")
    assert "bare name" in str(info.value)
    assert info.value.field == "x" and info.value.value == value and info.value.line == 1


@pytest.mark.parametrize("value", PLAIN)
def test_python_string_takes_plain_values(tmp_path: Path, value: str) -> None:
    text = f'x = "{M}"\ny = f"<{M}>"\nopen("out", "w").write(x + "|" + y)\n'
    script = _stage_one(tmp_path, "doIt.py", text, value)
    subprocess.run([sys.executable, script.name], cwd=script.parent, check=True, timeout=60)
    assert (script.parent / "out").read_text() == f"{value}|<{value}>"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (f'x = f"{{{M}}}"', "f-string"),
        (f'x = f"{{a + {M}:>{{w}}}}"', "f-string"),
        (f"x = {M}_suffix", "longer Python name"),
        (f"# -*- coding: {M} -*-\nx = 1", "encoding"),
    ],
)
def test_python_unsafe_places_refuse(template: str, reason: str) -> None:
    with pytest.raises(StagingError, match=reason):
        render(template + "\n", "python", {"x": "os"}, source="doIt.py")


def test_python_comment_takes_any_value_inertly(tmp_path: Path) -> None:
    text = f"x = 1  # {M}\nopen('out', 'w').write(str(x))\n"
    script = _stage_one(tmp_path, "doIt.py", text, "\nimport os; os.system('touch PWNED')")
    subprocess.run([sys.executable, script.name], cwd=script.parent, check=True, timeout=60)
    _no_pwned(tmp_path)
    assert (script.parent / "out").read_text() == "1"


def test_python_non_data_value_refused() -> None:
    with pytest.raises(UnsafeValueError, match="Python literal"):
        render(f"x = {M}\n", "python", {"x": datetime.date(2020, 1, 1)}, source="doIt.py")


def test_python_rest_of_file_is_byte_identical() -> None:
    text = f"x = {M}   # keep  spacing\r\ny = (\n  1,\t2)\n\x0cz = '{M}'\n"
    out = render(text, "python", {"x": "v"}, source="doIt.py")
    assert out == "x = 'v'   # keep  spacing\r\ny = (\n  1,\t2)\n\x0cz = 'v'\n"


def test_python_untokenizable_file_is_reported() -> None:
    with pytest.raises(StagingError, match=r"doIt.py:\d+.*tokenize"):
        render(f'x = {M}\ny = """never closed\n', "python", {"x": 1}, source="doIt.py")


# ----------------------------------------------------------------------------- other files


def test_other_takes_plain_values() -> None:
    text = f"mesh = {M}\nname={M}.msh\n"
    assert render(text, "other", {"x": "fine-1.0"}, source="in.cfg") == (
        "mesh = fine-1.0\nname=fine-1.0.msh\n"
    )


@pytest.mark.parametrize("value", ["a\nb", "$(x)", "a'b", "{0}", "é"])
def test_other_refuses_non_plain(value: str) -> None:
    with pytest.raises(UnsafeValueError) as info:
        render(f"first\nmesh = {M}\n", "other", {"x": value}, source="in.cfg")
    message = str(info.value)
    assert "in.cfg:2" in message and "'x'" in message and repr(value) in message
    assert "unknown syntax" in message


# ----------------------------------------------------------------------------- markers


def test_unknown_marker_names_file_line_and_suggestion() -> None:
    text = "#!/bin/bash\necho ok\necho __BLACKDYNAMITE__compiller__\n"
    with pytest.raises(StagingError) as info:
        render(text, "shell", {"compiler": "gcc", "x": 1, "id": 3}, source="launch.sh")
    message = str(info.value)
    assert "launch.sh:3" in message
    assert "__BLACKDYNAMITE__compiller__" in message
    assert "did you mean 'compiler'?" in message
    assert "known names: compiler, id, x" in message


def test_unknown_marker_lists_known_names_when_nothing_is_close() -> None:
    with pytest.raises(StagingError, match="possible: id, run_id"):
        render("__BLACKDYNAMITE__zzz__\n", "other", {"id": 1, "run_id": 1}, source="a.txt")


def test_id_markers(tmp_path: Path) -> None:
    text = "echo __BLACKDYNAMITE__id__ __BLACKDYNAMITE__run_id__ __BLACKDYNAMITE__job_id__ > out\n"
    study = _study(tmp_path, {"launch.sh": text})
    values = {"id": 7, "run_id": 7, "job_id": 3}
    script = stage(tmp_path / "r", study, "launch.sh", [], values, {})
    assert _bash(script.parent, script).returncode == 0
    assert (script.parent / "out").read_text() == "7 7 3\n"


def test_unsafe_value_error_is_useful() -> None:
    with pytest.raises(UnsafeValueError) as info:
        render(f"a\nb\nx = '{M}'\n", "python", {"x": "a'b"}, source="doIt.py")
    err = info.value
    assert isinstance(err, StagingError) and isinstance(err, MotokoError)
    assert isinstance(err, ValueError)
    assert (err.field, err.value, err.source, err.line) == ("x", "a'b", "doIt.py", 3)
    assert str(err).startswith("doIt.py:3: value \"a'b\" of 'x'")
    assert err.hint and "run.json" in err.hint


def test_long_value_is_shortened_in_messages() -> None:
    with pytest.raises(UnsafeValueError) as info:
        render(f"{M}\n", "other", {"x": "'" * 100_000}, source="a.txt")
    assert len(str(info.value)) < 600


# ----------------------------------------------------------------------------- file kinds


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("launch.sh", "", "shell"),
        ("x.BASH", "", "shell"),
        ("x.zsh", "", "shell"),
        ("x.ksh", "", "shell"),
        ("launch", "#!/bin/sh\n", "shell"),
        ("launch", "#!/usr/bin/env bash\n", "shell"),
        ("launch", "#! /bin/dash -e\n", "shell"),
        ("launch", "#!/usr/bin/env -S zsh -f\n", "shell"),
        ("doIt.py", "", "python"),
        ("doIt", "#!/usr/bin/env python3\n", "python"),
        ("doIt", "#!/usr/bin/python3.11 -u\n", "python"),
        ("doIt.py", "#!/bin/bash\n", "python"),
        ("input.cfg", "", "other"),
        ("run", "#!/usr/bin/perl\n", "other"),
        ("notes", "# just text", "other"),
    ],
)
def test_file_kind(name: str, text: str, kind: str) -> None:
    assert file_kind(name, text) == kind


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a/../../b", "'..'"),
        ("a/..", "'..'"),
        ("", "empty"),
        ("a\0b", "NUL"),
        (".", "folder itself"),
    ],
)
def test_safe_join_refuses(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(StagingError, match=reason) as info:
        safe_join(tmp_path, name, what="config file")
    assert "config file" in str(info.value)


def test_safe_join_refuses_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "base" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StagingError, match="outside"):
        safe_join(tmp_path / "base", "link/x.txt", what="exec_file")


def test_safe_join_accepts_inside(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a/./b.txt", what="f") == tmp_path / "a" / "b.txt"


@pytest.mark.parametrize(
    ("exec_file", "config"),
    [
        ("../x", []),
        ("/etc/passwd", []),
        ("launch.sh", ["a/../../b"]),
        ("launch.sh", ["/etc/hostname"]),
    ],
)
def test_stage_refuses_traversal_and_writes_nothing(
    tmp_path: Path, exec_file: str, config: list[str]
) -> None:
    study = _study(tmp_path, {"launch.sh": "echo hi\n"})
    (tmp_path / "x").write_text("secret")
    run_dir = tmp_path / "runs" / "1"
    with pytest.raises(StagingError):
        stage(run_dir, study, exec_file, config, {}, {})
    assert not run_dir.exists()


def test_stage_refuses_symlinked_run_subdir(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": "echo hi\n", "sub/in.cfg": "data\n"})
    run_dir = tmp_path / "run"
    outside = tmp_path / "outside"
    run_dir.mkdir()
    outside.mkdir()
    (run_dir / "sub").symlink_to(outside)
    with pytest.raises(StagingError, match="outside"):
        stage(run_dir, study, "launch.sh", ["sub/in.cfg"], {}, {})
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("points_inside", [True, False])
def test_stage_refuses_symlinked_destination(tmp_path: Path, points_inside: bool) -> None:
    study = _study(tmp_path, {"launch.sh": "echo hi\n", "in.cfg": "new\n"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = (run_dir if points_inside else tmp_path) / "victim.txt"
    victim.write_text("untouched")
    (run_dir / "in.cfg").symlink_to(victim)
    with pytest.raises(StagingError, match="symlink"):
        stage(run_dir, study, "launch.sh", ["in.cfg"], {}, {})
    assert victim.read_text() == "untouched"
    assert not (run_dir / "launch.sh").exists(), "nothing is written before all checks pass"


def test_stage_refuses_source_symlink_out_of_study(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": "echo hi\n"})
    (tmp_path / "secret").write_text("s")
    (study / "in.cfg").symlink_to(tmp_path / "secret")
    with pytest.raises(StagingError, match="outside"):
        stage(tmp_path / "run", study, "launch.sh", ["in.cfg"], {}, {})


def test_stage_missing_file_names_it_and_the_study(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": "echo hi\n", "doIt.py": ""})
    with pytest.raises(StagingError) as info:
        stage(tmp_path / "run", study, "launch.sh", ["doit.py"], {}, {})
    message = str(info.value)
    assert "'doit.py' not found" in message and str(study) in message
    assert "did you mean 'doIt.py'?" in message


def test_stage_refuses_reserved_run_json(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": "", "run.json": "{}"})
    with pytest.raises(StagingError, match="reserved"):
        stage(tmp_path / "run", study, "launch.sh", ["run.json"], {}, {})


def test_stage_refusal_in_a_later_file_writes_nothing(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": f"echo {M}\n", "in.cfg": f"v = {M}\n"})
    run_dir = tmp_path / "run"
    with pytest.raises(UnsafeValueError, match="in.cfg:1"):
        stage(run_dir, study, "launch.sh", ["in.cfg"], {"x": "a;b"}, {})
    assert not run_dir.exists()


# ----------------------------------------------------------------------------- stage


def test_stage_copies_renders_and_keeps_exec_bit(tmp_path: Path) -> None:
    binary = b"\x89PNG\r\n\x1a\n\xff\xfe" + M.encode() + b"\x00\x80"
    study = _study(
        tmp_path,
        {
            "launch.sh": f"#!/bin/bash\necho {M} > out\n",
            "doIt.py": f"x = {M}\n",
            "mesh/in.bin": binary,
        },
    )
    os.chmod(study / "launch.sh", 0o600)
    os.chmod(study / "doIt.py", 0o640)
    run_dir = tmp_path / "deep" / "runs" / "5"
    exec_path = stage(
        run_dir, study, "launch.sh", ["doIt.py", "mesh/in.bin"], {"x": "v w"}, {"id": 5}
    )
    assert exec_path == run_dir / "launch.sh"
    assert stat.S_IMODE(exec_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((run_dir / "doIt.py").stat().st_mode) == 0o640
    assert (run_dir / "doIt.py").read_text() == "x = 'v w'\n"
    assert (run_dir / "mesh" / "in.bin").read_bytes() == binary
    assert subprocess.run([str(exec_path)], cwd=run_dir, timeout=30).returncode == 0
    assert (run_dir / "out").read_text() == "v w\n"


def test_stage_twice_is_idempotent(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": f"echo {M}\n", "in.cfg": f"v = {M}\n"})
    run_dir = tmp_path / "run"
    cache = TemplateCache()
    args = (run_dir, study, "launch.sh", ["in.cfg", "in.cfg"], {"x": 1}, {"id": 1})
    stage(*args, cache=cache)
    (run_dir / "output.dat").write_text("result")
    first = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    stage(*args, cache=cache)
    second = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert first == second
    assert sorted(second) == ["in.cfg", "launch.sh", "output.dat", "run.json"]
    assert cache.reads == 2


def test_stage_replaces_a_changed_template(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": "echo one\n"})
    run_dir = tmp_path / "run"
    cache = TemplateCache()
    stage(run_dir, study, "launch.sh", [], {}, {}, cache=cache)
    (study / "launch.sh").write_text("echo two, longer\n")
    stage(run_dir, study, "launch.sh", [], {}, {}, cache=cache)
    assert (run_dir / "launch.sh").read_text() == "echo two, longer\n"


def test_run_json_content(tmp_path: Path) -> None:
    study = _study(tmp_path, {"launch.sh": ""})
    when = datetime.datetime(2024, 1, 2, 3, 4, 5)
    run_json = {"id": 3, "job": {"x": [1.5, "$(touch PWNED)"]}, "when": when, "ok": True}
    stage(tmp_path / "run", study, "launch.sh", [], {}, run_json)
    text = (tmp_path / "run" / "run.json").read_text()
    assert json.loads(text) == json.loads(json.dumps(run_json, default=str))
    assert json.loads(text)["when"] == "2024-01-02 03:04:05"
    # Readable: one top-level entry per line.
    assert text.splitlines()[1:3] == [' "id": 3,', ' "job": {"x": [1.5, "$(touch PWNED)"]},']


def test_run_json_of_nothing_is_an_empty_object() -> None:
    assert json.loads(run_json_text({})) == {}


# ----------------------------------------------------------------------------- run_environment


def test_run_environment() -> None:
    base = {"MOTOKO_RUN_ID": "4", "PATH": "/bin"}
    values = {
        "s": "a; $(touch PWNED)",
        "i": 3,
        "f": 0.25,
        "b": True,
        "n": None,
        "l": [1, "x"],
        "d": {"k": False},
        "bad-name": 1,
        "1st": 2,
        "ünï": 3,
    }
    env = run_environment(values, base)
    assert base == {"MOTOKO_RUN_ID": "4", "PATH": "/bin"}, "base is not modified"
    params = {k: v for k, v in env.items() if k.startswith("MOTOKO_PARAM_")}
    assert params == {
        "MOTOKO_PARAM_s": "a; $(touch PWNED)",
        "MOTOKO_PARAM_i": "3",
        "MOTOKO_PARAM_f": "0.25",
        "MOTOKO_PARAM_b": "true",
        "MOTOKO_PARAM_n": "",
        "MOTOKO_PARAM_l": '[1, "x"]',
        "MOTOKO_PARAM_d": '{"k": false}',
    }
    assert env["MOTOKO_RUN_ID"] == "4"


def test_run_environment_reaches_a_script_inertly(tmp_path: Path) -> None:
    env = run_environment({"x": "$(touch PWNED)`touch PWNED`"}, {"PATH": os.environ["PATH"]})
    out = subprocess.run(
        ["bash", "-c", 'printf %s "$MOTOKO_PARAM_x"'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout == "$(touch PWNED)`touch PWNED`"
    _no_pwned(tmp_path)


def test_run_environment_refuses_nul() -> None:
    with pytest.raises(StagingError, match="NUL"):
        run_environment({"x": "a\0b"}, {})


# ----------------------------------------------------------------------------- template cache


def test_template_cache_reads_once_and_notices_changes(tmp_path: Path) -> None:
    path = tmp_path / "launch.sh"
    path.write_text("echo a\n")
    cache = TemplateCache()
    for _ in range(1000):
        assert cache.load(path) == ("echo a\n", "shell")
    assert cache.reads == 1
    before = path.stat()
    path.write_text("echo b\n")  # same size: only the mtime tells
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert cache.load(path) == ("echo b\n", "shell")
    assert cache.reads == 2
    assert cache.load(path)[0] == "echo b\n"
    assert cache.reads == 2


def test_template_cache_binary(tmp_path: Path) -> None:
    path = tmp_path / "data.py"
    path.write_bytes(b"\xff\xfe" + M.encode())
    content, kind = TemplateCache().load(path)
    assert content == b"\xff\xfe" + M.encode() and kind == "binary"


def test_render_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        render("x", "perl", {})
