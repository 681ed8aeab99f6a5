"""``motoko ui`` end to end in a real headless Chromium, driving a running workflow.

The page is opened before the workflow starts; everything it shows afterwards
arrives through the server-sent events fed by the database's change feed (no
reload). The example's ``norm`` runs wait for a gate file, so the test sees
them RUNNING in the DAG and the activity list, then FINISHED. Screenshots go
to ``test-artifacts/`` for a person to look at.

Chromium comes from Debian (``apt-get install chromium``; installed by the
fixture when missing) and is driven by Playwright's Python package, which
talks to it over CDP; Playwright's own browser download is not used.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from views_support import artifact, copy_example, ensure_program

from motoko.study.server import stop_server

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]

GATED_NORM = '''
"""norm, held until the test opens the gate: squared and plain L2 distance."""
import math
import os
import time

from motoko import current_run

run, job = current_run()
run.set_status("waiting for the gate")
run.set_progress(0.5)
deadline = time.time() + 60
while not os.path.exists({gate!r}) and time.time() < deadline:
    time.sleep(0.05)
squared = sum((a - b) ** 2 for a, b in zip(job.x, job.target, strict=True))
run.y = [squared, math.sqrt(squared)]
run.push_quantity(squared, step=0, name="squared")
run.push_quantity(math.sqrt(squared), step=0, name="l2")
print("norm done:", squared)
'''


@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_program("chromium", "chromium")


@pytest.fixture
def browser(chromium: str) -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs playwright's Python package: pip install playwright")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield instance
        instance.close()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    root = copy_example(tmp_path / "example")
    gate = tmp_path / "gate"
    (root / "studies" / "norm" / "doIt.py").write_text(GATED_NORM.format(gate=str(gate)))
    yield root, gate
    stop_server(root, grace=5)


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "motoko.cli.main", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_dashboard_follows_a_running_workflow(browser, gated: tuple[Path, Path]):
    root, gate = gated
    ui = start(["ui", "--port", "0", "--exit-after", "120"], root)
    run = None
    try:
        assert ui.stderr is not None
        first = ui.stderr.readline()
        if first.startswith("motoko: started the database server"):
            first = ui.stderr.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+/)", first)
        assert match, first
        page = browser.new_page(viewport={"width": 1440, "height": 1000})  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(match.group(1))
        page.wait_for_selector("#live[data-state=live]")
        page.wait_for_selector(".card[data-study=mult]")
        assert page.inner_text(".card[data-study=mult] .counts") == "no run yet"

        run = start(["run", "workflows/pipeline.py"], root)
        # Live: mult and add finish, norm's runs execute and wait at the gate.
        page.wait_for_selector("#dags g.node[data-node=norm][data-state=RUNNING]", timeout=30_000)
        page.wait_for_selector("#dags g.node[data-node=add][data-state=FINISHED]")
        page.wait_for_function("document.querySelectorAll('#running li[data-id]').length === 2")
        page.wait_for_function("document.querySelector('#running').innerText.includes('waiting for the gate')")
        assert page.get_attribute("#provenance g.node[data-node='norm.1']", "data-state") == "RUNNING"
        assert page.get_attribute("#dags g.node[data-node=remult]", "data-state") == "PENDING"
        page.screenshot(path=str(artifact("ui-running.png")), full_page=True)

        gate.touch()
        page.wait_for_selector("#dags g.node[data-node=remult][data-state=FINISHED]", timeout=30_000)
        assert run.wait(30) == 0, run.stderr.read() if run.stderr else ""
        page.wait_for_function("document.querySelector('.card[data-study=mult] .counts').innerText === '4 finished'")
        assert page.inner_text("#running") == "nothing is running"

        # The run table: a constraint, then a state chip, then a bad constraint.
        page.click("#study-tabs button[data-study=mult]")
        page.fill("#constraints", "a > 0")
        page.press("#constraints", "Enter")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 3")
        assert page.inner_text("#runs-foot") == "3 runs in mult matching a > 0"
        assert [c.strip() for c in page.locator("#runs thead th").all_inner_texts()][:4] == ["id", "state", "a", "x"]
        page.click("#state-chips button[data-state=FAILED]")
        page.wait_for_selector("#runs tbody td.empty")
        page.click("#state-chips button[data-state=FAILED]")
        page.fill("#constraints", "a >")
        page.press("#constraints", "Enter")
        page.wait_for_selector("#filter-error:not([hidden])")
        assert "column 4" in page.inner_text("#filter-error")
        page.fill("#constraints", "")
        page.press("#constraints", "Enter")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr[data-id]').length === 4")

        # Run details: from the table, then through the provenance graph.
        page.click("#runs tbody tr[data-id='1']")
        page.wait_for_selector("#drawer:not([hidden])")
        assert page.inner_text("#run-title").startswith("mult.1")
        page.wait_for_selector(".chart[data-quantity=y] svg polyline")
        page.click("#provenance g.node[data-node='norm.1']")
        page.wait_for_function("document.querySelector('#run-title').innerText.startsWith('norm.1')")
        page.wait_for_selector(".chart[data-quantity=l2] .value")  # one value: shown, not plotted
        assert page.inner_text(".chart[data-quantity=l2] .value") == "3.00324 at step 0"
        assert "norm done:" in page.inner_text("pre.log[data-log=stdout]")
        assert page.inner_text("#run-body a.run-link") == "add.1"
        page.screenshot(path=str(artifact("ui-dashboard.png")), full_page=True)
        page.click("#run-body a.run-link")
        page.wait_for_function("document.querySelector('#run-title').innerText.startsWith('add.1')")
        # The one 400 answered the malformed constraint; nothing else went wrong.
        assert [e for e in errors if "400 (Bad Request)" not in e] == []
        assert len(errors) == 1
    finally:
        for process in (run, ui):
            if process is not None and process.poll() is None:
                process.kill()
