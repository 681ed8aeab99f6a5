"""Issue 17, items 7-8: regular expressions in linear time; a dashboard that cannot be frozen or rebound.

Real ZEO server, real runs, real HTTP requests to a real dashboard.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from pathlib import Path

import pytest
from conftest import write_config, write_study
from hardened_support import bounded_motoko, one_line_error

from motoko.flow.workflow import Workflow
from motoko.views.web import Dashboard

EVIL = "a" * 40 + "!"  # '(a+)+$' backtracks 2^40 times on it in Python's re
CATASTROPHIC = "t ~ '(a+)+$'"


@pytest.fixture(scope="module")
def wfdir(tmp_path_factory: pytest.TempPathFactory):
    """A workflow with two FINISHED runs, one holding a string that defeats backtracking regexes."""
    root = tmp_path_factory.mktemp("hardened_ui") / "wf"
    root.mkdir()
    write_study(root, "s", "{t: str}", "from motoko import current_run\nrun, job = current_run()\n")
    write_config(root, ["s"])
    (root / "wf.py").write_text("from motoko import step\n\n\n@step\nasync def first(workflow):\n"
                                f"    return len(await workflow.s.createTask(t=['plain', {EVIL!r}]))\n")
    done = bounded_motoko("run", "wf.py", cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    yield root
    from motoko.study.server import stop_server

    stop_server(root, grace=5)


@pytest.fixture
def dashboard(wfdir: Path):
    workflow = Workflow(wfdir / "motoko.yaml", create=False)
    board = Dashboard(workflow, port=0).start()
    yield board
    board.close()
    workflow.close()


def _get(board: Dashboard, path: str, host: str | None = None, timeout: float = 30) -> tuple[int, bytes]:
    port = board.server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", host if host is not None else f"127.0.0.1:{port}")
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


# -- item 7 ------------------------------------------------------------------------------


def test_a_catastrophic_regex_selects_in_linear_time(wfdir):
    done = bounded_motoko("select", "--format", "json", "--fields", "id,t", CATASTROPHIC, cwd=wfdir, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    done = bounded_motoko("select", "--format", "json", "--fields", "id,t", "t ~* '^(A+)+!$'", cwd=wfdir, timeout=60)
    assert [row["t"] for row in json.loads(done.stdout)] == [EVIL]


@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)b", "(?<!a)b"])
def test_regex_syntax_re2_cannot_run_in_linear_time_is_refused_in_one_line(wfdir, pattern):
    done = bounded_motoko("select", f"t ~ '{pattern}'", cwd=wfdir, timeout=60)
    one_line_error(done, "invalid regular expression for 't'", "RE2 syntax: no backreferences or lookaround")


def test_the_dashboard_filter_with_a_catastrophic_regex_answers(dashboard):
    status, body = _get(dashboard, "/api/runs?" + urllib.parse.urlencode({"study": "s", "q": CATASTROPHIC}))
    assert status == 200, body
    assert json.loads(body)["total"] == 0


def test_a_slow_request_does_not_freeze_the_others(dashboard):
    """One request holds a reader for as long as it likes; another request still answers."""
    holding, release = threading.Event(), threading.Event()

    def slow(reader):
        holding.set()
        release.wait(60)
        return reader.run_name

    slow_request = threading.Thread(target=dashboard.read, args=(slow,))
    slow_request.start()
    try:
        assert holding.wait(30)
        status, body = _get(dashboard, "/api/runs?study=s", timeout=30)
        assert status == 200 and json.loads(body)["total"] == 2
        status, body = _get(dashboard, "/api/overview", timeout=30)
        assert status == 200, body
    finally:
        release.set()
        slow_request.join(30)


# -- item 8 ------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.com", "evil.com:80", "localhost.evil.com", "127.0.0.1.evil.com", ""])
def test_a_request_for_another_host_is_refused(dashboard, host):
    """DNS rebinding: a page of evil.com resolving to 127.0.0.1 gets nothing (item 8)."""
    for path in ("/", "/api/overview", "/api/run?study=s&id=1", "/events"):
        status, body = _get(dashboard, path, host=host)
        assert status == 421, (path, status)
        assert b"unknown Host" in body and b"plain" not in body


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}"])
def test_the_bound_names_are_accepted(dashboard, host):
    status, body = _get(dashboard, "/api/overview", host=host.format(port=dashboard.server.server_address[1]))
    assert status == 200, body


# -- the event stream ------------------------------------------------------------------


def _next_event(reply: http.client.HTTPResponse) -> tuple[str, dict[str, int]]:
    """Read the next server-sent event (keep-alive comments skipped): ``(name, data)``."""
    name, data = "", ""
    while True:
        line = reply.readline().decode()
        assert line, "the stream ended"
        if line.startswith("event: "):
            name = line[len("event: "):].strip()
        elif line.startswith("data: "):
            data = line[len("data: "):].strip()
        elif line == "\n" and name:
            return name, json.loads(data)


def test_the_event_stream_wakes_on_a_commit_and_ends_at_shutdown(dashboard):
    """Each /events stream waits on the change feed: a commit elsewhere is a ``change``; shutdown ends it."""
    from motoko.study.database import StudyDB

    port = dashboard.server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/events")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.getheader("Content-Type") == "text/event-stream"
        assert _next_event(reply) == ("hello", {"version": 0})
        with StudyDB(dashboard.workflow.address_of("s")) as other:
            other.transact(lambda: setattr(other.run("s", 1), "tag", "seen by the dashboard"))
        name, data = _next_event(reply)
        assert name == "change" and data["version"] >= 1
        dashboard.shutdown()
        rest = reply.read()  # returns: the stream ends instead of waiting on (timeout: 30 s)
        assert rest == b"" or rest.startswith(b"event: change"), rest
    finally:
        conn.close()
    assert dashboard._streams == set(), "the stream's waiter stopped listening"
