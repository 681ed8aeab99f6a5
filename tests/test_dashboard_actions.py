"""Acting from the dashboard: cancel a run or a selection, retry failed runs.

Actions need the token ``motoko ui`` prints in its address (the Jupyter way)
and are accepted from this machine only. Tested end to end in a real
headless Chromium (with the token, and without it: refused, nothing
changed) and at the HTTP level (wrong token, bad bodies, a non-loopback
client). A real launcher daemon executes the runs; a gate file decides
whether ``calc`` runs fail, so a retry can succeed.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import motoko, write_config, write_study
from test_ui_browser import browser, chromium  # noqa: F401 (fixtures)
from views_support import artifact

from motoko.study.server import ensure_server, stop_server

DOIT = """\
import os
import time

from motoko import current_run

run, job = current_run()
run.set_progress(0.25)
if job.x > 1.5 and os.path.exists({fail!r}):
    raise ValueError(f"x was {{job.x}}")
time.sleep(job.sleep)
run.y = 2 * job.x
run.set_progress(1.0)
"""

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
lost_after: 5
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

WORKFLOW = """\
from motoko import step


@step
async def prepare(workflow):
    return [0.5]


@step
async def calc(workflow, prepare):
    return await workflow.calc.createTask(x=prepare, sleep=[0.0])
"""


@pytest.fixture
def acting(tmp_path: Path) -> Iterator[Path]:
    """A workflow with runs FINISHED, FAILED (x > 1.5 while the gate exists) and RUNNING (long sleeps)."""
    root = tmp_path / "wf"
    root.mkdir()
    fail = tmp_path / "fail"
    fail.touch()
    write_study(root, "calc", "{x: float, sleep: float}", DOIT.format(fail=str(fail)), extra="job_space: {sleep: 0.0}\n")
    write_config(root, ["calc"], FAST)
    (root / "workflows").mkdir()
    (root / "workflows" / "norun.py").write_text(WORKFLOW)
    ensure_server(root)
    try:
        # A step that creates no run (`prepare`), then one that does.
        assert motoko("run", "workflows/norun.py", cwd=root).returncode == 0
        from motoko.flow.workflow import Workflow

        with Workflow(root / "motoko.yaml", run_name="manual") as workflow:
            workflow.calc.createTask(x=[2.0, 3.0, 4.0])  # fail while the gate exists
            workflow.calc.createTask(x=[0.1, 0.2], sleep=[120.0])  # still running when acted upon
        assert motoko("launcher", "start", "--detach", cwd=root).returncode == 0
        yield root
    finally:
        motoko("cancel", "--yes", "--wait", "20", cwd=root)  # the long runs: the launcher then stops at once
        motoko("launcher", "stop", "--timeout", "20", cwd=root)
        stop_server(root, grace=5)


def states(root: Path) -> dict[int, str]:
    out = motoko("select", "--format", "json", "--fields", "id,state", cwd=root)
    assert out.returncode == 0, out.stderr
    return {row["id"]: row["state"] for row in json.loads(out.stdout)}


def wait_states(root: Path, wanted: dict[int, str], timeout: float = 60.0) -> dict[int, str]:
    deadline = time.monotonic() + timeout
    seen = states(root)
    while any(seen.get(i) != s for i, s in wanted.items()) and time.monotonic() < deadline:
        time.sleep(0.3)
        seen = states(root)
    return seen


def start_ui(root: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    ui = subprocess.Popen([sys.executable, "-m", "motoko.cli.main", "ui", "--port", "0", "--exit-after", "150", *extra],
                          cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert ui.stderr is not None
    line = ui.stderr.readline()
    while line.startswith("motoko ui: warning"):
        line = ui.stderr.readline()
    match = re.fullmatch(r"motoko ui: serving (http://[^ ]+/\?token=[A-Za-z0-9_-]{32}) \(Ctrl-C to stop\)\n", line)
    assert match, line
    return ui, match.group(1)


def stop_ui(ui: subprocess.Popen[str]) -> None:
    if ui.poll() is None:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(15)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait()


def test_dashboard_actions_need_the_token_then_cancel_and_retry(browser, acting: Path):  # noqa: F811
    root = acting
    assert wait_states(root, {2: "FAILED", 3: "FAILED", 4: "FAILED", 5: "RUNNING", 6: "RUNNING"}) == {
        1: "FINISHED", 2: "FAILED", 3: "FAILED", 4: "FAILED", 5: "RUNNING", 6: "RUNNING"}
    ui, token_url = start_ui(root)
    base = token_url.split("?")[0]
    try:
        # -- without the token: the page reads, and every action is refused ------------------------
        page = browser.new_page(viewport={"width": 1440, "height": 1100})  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(base)
        page.wait_for_selector("#live[data-state=live]")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 6")
        assert page.inner_text("#action-msg").startswith("read-only: open the address with ?token=")
        # The step that created no run shows as done, not PENDING.
        page.wait_for_selector("#dags g.node[data-node=prepare][data-state=FINISHED]")
        assert "prepare (no runs)" in (page.text_content("#dags g.node[data-node=prepare]") or "")
        page.click("#cancel-selection")
        page.wait_for_selector("#action-msg.error")
        assert page.inner_text("#action-msg") == (
            "this action needs the dashboard's token: open the address with ?token=... that `motoko ui` printed")
        page.click("#runs tbody tr[data-id='5']")
        page.wait_for_function("document.querySelector('#run-title').innerText.startsWith('calc.5')")
        page.click("#cancel-run")
        page.wait_for_function("document.querySelector('#action-msg').innerText.includes('needs the dashboard')")
        wrong = page.evaluate("""async () => {
            const r = await fetch('/api/retry', {method: 'POST', headers: {'X-Motoko-Token': 'guess'}, body: '{"study": "calc"}'});
            return [r.status, (await r.json()).error];
        }""")
        assert wrong == [403, "wrong token: open the address with ?token=... that `motoko ui` printed"]
        assert states(root) == {1: "FINISHED", 2: "FAILED", 3: "FAILED", 4: "FAILED", 5: "RUNNING", 6: "RUNNING"}
        page.close()

        # -- with the token -------------------------------------------------------------------
        page = browser.new_page(viewport={"width": 1440, "height": 1100})  # type: ignore[attr-defined]
        page.on("dialog", lambda dialog: dialog.accept())
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(token_url)
        page.wait_for_selector("#live[data-state=live]")
        assert page.url == base  # the token left the address bar (kept for the tab)
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 6")
        # One run, from its details.
        page.click("#runs tbody tr[data-id='5']")
        page.wait_for_function("document.querySelector('#run-title').innerText.startsWith('calc.5')")
        assert page.is_visible("#cancel-run") and not page.is_visible("#retry-run")
        page.click("#cancel-run")
        page.wait_for_function("document.querySelector('#action-msg').innerText === 'cancel requested for 1 run in calc'")
        page.wait_for_selector("#runs tbody tr[data-id='5'] .pill:text('CANCELLED')", timeout=30_000)
        page.click("#drawer-close")
        # A selection: the table's filter.
        page.fill("#constraints", "x < 1, state = RUNNING")
        page.press("#constraints", "Enter")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 1")
        page.click("#cancel-selection")
        page.wait_for_function("document.querySelector('#action-msg').innerText === 'cancel requested for 1 run in calc'")
        assert wait_states(root, {5: "CANCELLED", 6: "CANCELLED"})[6] == "CANCELLED"
        # Retry the failed runs, the cause fixed meanwhile.
        (root.parent / "fail").unlink()
        page.fill("#constraints", "")
        page.press("#constraints", "Enter")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 6")
        page.click("#retry-failed")
        page.wait_for_function("document.querySelector('#action-msg').innerText === '3 runs queued again in calc'")
        page.wait_for_function(
            "[...document.querySelectorAll('#runs tbody tr[data-id] .pill')].filter(p => p.innerText === 'FINISHED').length === 4",
            timeout=60_000,
        )
        page.click("#runs tbody tr[data-id='6']")
        page.wait_for_function("document.querySelector('#run-title').innerText.startsWith('calc.6')")
        assert page.is_visible("#retry-run") and not page.is_visible("#cancel-run")
        page.screenshot(path=str(artifact("dashboard-actions.png")))  # docs/dashboard-actions.png is one
        assert states(root) == {1: "FINISHED", 2: "FINISHED", 3: "FINISHED", 4: "FINISHED", 5: "CANCELLED", 6: "CANCELLED"}
        assert errors == []
    finally:
        stop_ui(ui)


def test_the_runs_table_never_shows_an_older_filter(browser, acting: Path):  # noqa: F811
    root = acting
    wait_states(root, {2: "FAILED", 3: "FAILED", 4: "FAILED", 5: "RUNNING", 6: "RUNNING"})
    ui, token_url = start_ui(root)
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
        page.goto(token_url)
        page.wait_for_selector("#live[data-state=live]")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 6")
        held = []

        def hold(route) -> None:  # type: ignore[no-untyped-def]
            # The answer to the older filter ("x > 2.5") is held back until the newer one was shown.
            if "x%20%3E%202.5" in route.request.url and not held:
                held.append(route)
            else:
                route.continue_()

        page.route("**/api/runs?*", hold)
        # Every rendering of the table, in order (a stale one may be overwritten by the next refresh).
        page.evaluate("""() => {
            window.renders = [];
            new MutationObserver(() => window.renders.push(
                [...document.querySelectorAll('#runs tbody tr[data-id]')].map(r => Number(r.dataset.id)).sort().join(',')
            )).observe(document.querySelector('#runs tbody'), {childList: true});
        }""")
        page.fill("#constraints", "x > 2.5")
        page.press("#constraints", "Enter")
        page.wait_for_function("() => true")
        deadline = time.monotonic() + 10
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(50)
        assert held
        page.fill("#constraints", "x < 1")
        page.press("#constraints", "Enter")
        page.wait_for_function("document.querySelector('#runs-foot').innerText.endsWith('matching x < 1')")
        assert page.locator("#runs tbody tr[data-id]").count() == 3
        with page.expect_response(lambda r: "x%20%3E%202.5" in r.url):
            held[0].continue_()  # the stale answer arrives last
        page.wait_for_timeout(500)
        assert page.inner_text("#runs-foot").endswith("matching x < 1")
        renders = page.evaluate("window.renders")
        newest = renders.index("1,5,6")
        assert "3,4" not in renders[newest:], renders  # the older filter's rows never came back
    finally:
        stop_ui(ui)


# -- the HTTP level -----------------------------------------------------------------------------


def post(url: str, body: object, token: str | None) -> tuple[int, dict[str, object]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Motoko-Token"] = token
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_actions_refuse_bad_requests_and_change_nothing(acting: Path):
    root = acting
    settled = {1: "FINISHED", 2: "FAILED", 3: "FAILED", 4: "FAILED", 5: "RUNNING", 6: "RUNNING"}
    before = wait_states(root, settled)
    assert before == settled  # nothing moves any more by itself (the long runs sleep 120 s)
    ui, token_url = start_ui(root)
    base, token = token_url.split("/?token=")
    try:
        assert post(f"{base}/api/cancel", {"study": "calc"}, None) == (403, {
            "error": "this action needs the dashboard's token: open the address with ?token=... that `motoko ui` printed"})
        assert post(f"{base}/api/cancel", {"study": "calc"}, "x" * 32)[0] == 403
        assert post(f"{base}/api/cancel", {"study": "clac"}, token) == (400, {
            "error": "unknown study 'clac' (did you mean 'calc'?)"})
        assert post(f"{base}/api/retry", {"study": "calc", "ids": [99]}, token) == (400, {
            "error": "no run with id 99 in study 'calc' (list existing runs with `motoko runs list --study calc`)"})
        assert post(f"{base}/api/retry", {"study": "calc", "ids": "1"}, token)[1] == {
            "error": "ids must be a list of run ids, got '1' (e.g. [1, 2])"}
        status, body = post(f"{base}/api/cancel", {"study": "calc", "q": "x >"}, token)
        assert status == 400 and str(body["error"]).startswith("constraint 'x >', column 4: ")
        assert post(f"{base}/api/delete", {"study": "calc"}, token) == (404, {"error": "no action /api/delete"})
        assert states(root) == before
        # Retrying a run that did not fail does nothing, and says so.
        assert post(f"{base}/api/retry", {"study": "calc", "ids": [1]}, token) == (200, {
            "study": "calc", "ids": [], "message": "no failed run to retry in calc"})
    finally:
        stop_ui(ui)


def non_loopback_address() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_actions_are_refused_from_another_machine(acting: Path):
    address = non_loopback_address()
    if address is None:
        pytest.fail("this test needs a network interface besides loopback")
    ui, token_url = start_ui(acting, "--host", "0.0.0.0")
    token = token_url.split("?token=")[1]
    try:
        port = token_url.split(":")[2].split("/")[0]
        status, body = post(f"http://{address}:{port}/api/cancel", {"study": "calc"}, token)
        assert (status, body) == (403, {
            "error": "actions are accepted from this machine only (the dashboard listens beyond loopback)"})
    finally:
        stop_ui(ui)
