"""motoko in a notebook: real Jupyter kernels (ipykernel, run by nbclient) drive real runs.

A kernel runs an asyncio loop in its main thread; motoko's synchronous waits
must block the cell there (not refuse), stop on the kernel's interrupt, and
the handles must show themselves as HTML tables. Each test writes a
notebook, executes it in a fresh kernel whose working directory is the
workflow's, and checks what the cells printed and displayed. The runs are
executed by a real launcher of the test process, on the test's ZEO server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import write_config, write_study
from nbclient import NotebookClient

from motoko.study.display import runs_html
from motoko.study.server import stop_server

FAST = """\
poll: {initial: 0.05, factor: 2, maximum: 0.5}
launcher: {executor: local, max_parallel: 4, poll: 0.5, heartbeat: 0.5, cancel_grace: 1}
"""

# calc: y = 2x after `sleep` seconds, in three printed and reported steps.
CALC_DOIT = """\
import time

from motoko import current_run

run, job = current_run()
print(f"start x={job.x}", flush=True)
for i in range(3):
    time.sleep(job.sleep / 3)
    run.set_progress((i + 1) / 3)
    print(f"step {i}", flush=True)
run.y = 2 * job.x
run.push_quantity(run.y, step=0, name="energy")
"""

SETUP = 'from motoko import RunList, Workflow\nwf = Workflow("motoko.yaml", run_name="nb")'


@pytest.fixture
def wfdir(workdir: Path) -> Path:
    write_study(workdir, "calc", "{x: float, sleep: float, label: str}", CALC_DOIT,
                extra="job_space: {sleep: 0.0, label: plain}\n")
    write_config(workdir, ["calc"], FAST)
    return workdir


class Recorder(NotebookClient):
    """An nbclient that also records the in-place display updates (``update_display_data``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.updates: list[str] = []

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        if msg["header"]["msg_type"] == "update_display_data":
            self.updates.append(msg["content"]["data"].get("text/html", ""))
        super()._update_display_id(display_id, msg)


def execute(cwd: Path, cells: list[str], *, interrupt_after: dict[int, int] | None = None) -> tuple[Any, Recorder]:
    """Execute ``cells`` as a notebook in a fresh kernel in ``cwd``.

    ``interrupt_after`` maps a cell's index to seconds after which the
    kernel is interrupted (that cell may then raise).
    """
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    interrupt_after = interrupt_after or {}
    for index in interrupt_after:
        nb.cells[index].metadata["tags"] = ["raises-exception"]

    def timeout(cell: Any) -> int:
        index = nb.cells.index(cell)
        return interrupt_after.get(index, 300)

    client = Recorder(nb, kernel_name="python3", timeout_func=timeout, interrupt_on_timeout=True,
                      resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb, client


def text(cell: Any) -> str:
    """Everything a cell printed (streams)."""
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def html_of(cell: Any) -> str:
    """The HTML a cell displayed or returned (the last one)."""
    found = [o.data["text/html"] for o in cell.outputs if "text/html" in o.get("data", {})]
    assert found, cell.outputs
    return found[-1]


def states(html: str) -> list[str]:
    """The state badges of an HTML table, in row order."""
    return re.findall(r'class="motoko-state"[^>]*>(\w+)<', html)


def test_every_sync_call_blocks_the_cell_and_works(wfdir, launcher):
    nb, _ = execute(wfdir, [
        SETUP,
        'rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)\n'
        'print("result", rl.result(timeout=60) is rl, rl.status())',
        'print("completed", sorted(job.x for _, job in rl.as_completed(timeout=60)))',
        'print("tail", list(rl[0][0].tail(follow=True)))',
        'print("selection", len(wf.calc.select("state = FINISHED").result(timeout=60)),\n'
        '      len(wf.calc.select().all("state = FINISHED").result(timeout=60)))',
        'rl.save("handle.json")\nagain = RunList.open("handle.json")\n'
        'print("reopened", again.result(timeout=60).ids)\nagain.close()',
        'slow = wf.calc.createTask(x=3.0, sleep=60.0)\n'
        'wf.calc.select("x = 3").all("state = RUNNING").result(timeout=60)\n'
        'print("cancel", slow.cancel(wait_timeout=30))',
        'other = wf.calc.createTask(x=4.0, sleep=60.0).run\n'
        'wf.calc.select("x = 4").all("state = RUNNING").result(timeout=60)\n'
        'print("run cancel", other.cancel(wait_timeout=30), other.state)',
        'with_bar = wf.calc.createTask(x=[5.0, 6.0], sleep=0.3)\n'
        'print("bar", with_bar.result(timeout=60, progress=True).status())',
    ])
    printed = [text(cell) for cell in nb.cells]
    assert printed[1] == "result True {'FINISHED': 2}\n"
    assert printed[2] == "completed [1.0, 2.0]\n"
    assert printed[3] == "tail ['start x=1.0', 'step 0', 'step 1', 'step 2']\n"
    assert printed[4] == "selection 2 2\n"
    assert printed[5] == "reopened [1, 2]\n"
    assert printed[6] == "cancel {3: True}\n"
    assert printed[7] == "run cancel True CANCELLED\n"
    assert printed[8] == "bar {'FINISHED': 2}\n"
    # progress=True in a kernel with ipywidgets: a widget, not text on stderr
    widgets = [o for o in nb.cells[8].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widgets) == 1 and "calc" in widgets[0].data["text/plain"]


def test_progress_is_text_in_a_kernel_without_ipywidgets(wfdir, launcher):
    nb, _ = execute(wfdir, [
        'import sys\nsys.modules["ipywidgets"] = None  # as if it were not installed\n' + SETUP,
        'rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)\nprint("bar", rl.result(timeout=60, progress=True).status())',
    ])
    outputs = nb.cells[1].outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "calc: 100%|" in stderr and "2/2 finished (100%)" in stderr
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert stdout == "bar {'FINISHED': 2}\n" and "Warning" not in stderr


def test_a_motoko_014_orchestrator_executes_from_a_cell(wfdir, launcher):
    write_config(wfdir, ["calc"], FAST + "orchestrator: orch.main\n")
    (wfdir / "orch.py").write_text(
        "async def main(workflow, **params):\n"
        "    runs = await workflow.calc.createTask(x=[params['x']])\n"
        "    workflow.vars.y = runs[0][0].y\n"
    )
    nb, _ = execute(wfdir, [SETUP, 'wf.execute(x=4.0)\nprint("y", wf.vars.y)'])
    assert text(nb.cells[1]) == "y 8.0\n"


def test_handles_show_html_tables_with_escaped_values(wfdir, launcher):
    nb, _ = execute(wfdir, [
        SETUP,
        'rl = wf.calc.createTask(x=[1.0, 2.0], sleep=0.3)\nrl.result(timeout=60)',
        'rl',
        'rl[0][0]',
        'wf.calc',
        'wf.calc.select("x > 1.5")',
        'bad = wf.calc.createTask(x=3.0, label="<script>alert(1)</script>")\nbad.result(timeout=60)',
        'many = wf.calc.createTask(x=[float(i) for i in range(10, 35)])\nmany',
        'print(repr(rl), repr(wf.calc.select("x > 1.5")), repr(rl[0][0]))',
    ])
    table = html_of(nb.cells[2])
    assert "<b>RunList calc: 2 runs (2 FINISHED)</b>" in table
    assert states(table) == ["FINISHED", "FINISHED"]
    header = re.findall(r"<th>([^<]*)</th>", table)
    assert header[:4] == ["id", "state", "progress", "status"] and {"x", "label", "y", "q.energy"} <= set(header)
    assert "<td>4.0</td>" in table and "100%" in table  # y of x=2, each run's set_progress(1.0)

    run = html_of(nb.cells[3])
    assert "<b>run calc.1</b>" in run and states(run) == ["FINISHED"]
    assert "<pre>start x=1.0\nstep 0\nstep 1\nstep 2</pre>" in run  # the last lines of stdout
    assert "<td>energy</td><td>1</td><td>2.0</td>" in run  # quantity, steps, last value

    assert "<b>study calc (run name &#x27;nb&#x27;): 2 runs (2 FINISHED)</b>" in html_of(nb.cells[4])
    selection = html_of(nb.cells[5])
    assert "selection of calc: x &gt; 1.5" in selection and len(states(selection)) == 1

    escaped = html_of(nb.cells[6])
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in escaped and "<script>" not in escaped

    capped = html_of(nb.cells[7])
    assert len(states(capped)) == 20 and "… 5 more" in capped and "25 runs" in capped
    assert text(nb.cells[8]) == "<RunList calc [1, 2]> <TaskSelection calc ['x > 1.5', \"run_name = 'nb'\"]> <Run calc.1 FINISHED>\n"


def test_a_kernel_interrupt_stops_a_wait_and_the_kernel_stays_usable(wfdir, launcher):
    nb, _ = execute(wfdir, [
        SETUP,
        'never = wf.calc.createTask(x=8.0, sleep=600.0)\nnever.result()',
        'print("alive", never.status() in ({"LAUNCHED": 1}, {"RUNNING": 1}, {"CREATED": 1}))\n'
        'print("cancel", never.cancel(wait_timeout=60))',
        'for run, job in wf.calc.createTask(x=9.0, sleep=600.0).as_completed():\n    pass',
        'print("again", wf.calc.select("x = 9").cancel(wait_timeout=60))',
        'tailed = wf.calc.createTask(x=10.0, sleep=600.0)\nfor line in tailed.run.tail(follow=True):\n    pass',
        'tailed.watch()',
        'print("still", tailed.cancel(wait_timeout=60))',
    ], interrupt_after={1: 3, 3: 3, 5: 3, 6: 3})
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert [e.ename for e in errors] == ["KeyboardInterrupt"]
    assert text(nb.cells[2]) == "alive True\ncancel {1: True}\n"
    assert [o.ename for o in nb.cells[3].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert text(nb.cells[4]) == "again {2: True}\n"
    for index in (5, 6):  # following a run's stdout, watching the table
        assert [o.ename for o in nb.cells[index].outputs if o.output_type == "error"] == ["KeyboardInterrupt"]
    assert text(nb.cells[7]) == "still {3: True}\n"


def test_watch_refreshes_the_table_until_every_run_ended(wfdir, launcher):
    nb, client = execute(wfdir, [
        SETUP,
        'w = wf.calc.createTask(x=[1.0, 2.0], sleep=3.0)\nprint("watched", w.watch(timeout=120))',
        'print("done", w.status())',
    ])
    assert text(nb.cells[1]) == "watched True\n"
    assert text(nb.cells[2]) == "done {'FINISHED': 2}\n"
    final = html_of(nb.cells[1])  # the displayed table, as last updated in place
    assert states(final) == ["FINISHED", "FINISHED"]
    seen = [tuple(states(html)) for html in client.updates]
    assert seen[-1] == ("FINISHED", "FINISHED")
    assert any("RUNNING" in s for s in seen)  # it was updated while the runs ran
    assert len(set(client.updates)) == len(client.updates)  # only changes are sent


def test_watch_without_ipython_says_what_to_install(wfdir):
    # A script with IPython unimportable: the watch is refused before any wait.
    script = (
        "import sys\nsys.modules['IPython'] = None\n"
        "from motoko import Workflow\nfrom motoko.errors import HandleError\n"
        "wf = Workflow('motoko.yaml', run_name='nb')\nrl = wf.calc.createTask(x=1.0)\n"
        "try:\n    rl.watch()\nexcept HandleError as error:\n    print(error)\nwf.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=wfdir, capture_output=True, text=True, timeout=120)
    assert done.stdout == (
        "rl.watch() shows a live table in a notebook and needs IPython, which is not installed "
        "(pip install ipykernel (or ipython), or wait with rl.result(progress=True))\n"
    ), done.stderr


def test_html_of_no_runs_is_an_empty_table():
    html = runs_html("RunList calc", [])
    assert "<b>RunList calc: 0 runs</b>" in html and states(html) == []


# -- docs/notebooks.md -------------------------------------------------------------------------------

TOUR = Path(__file__).resolve().parent.parent / "docs" / "notebooks.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def shell(lines: str, cwd: Path, env: dict[str, str]) -> Path:
    """Run each line of a bash block in ``cwd`` (``cd`` moves it); return the directory reached."""
    for line in lines.splitlines():
        if line.startswith("cd "):
            cwd = (cwd / line[3:].strip()).resolve()
            continue
        done = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{line!r} failed:\n{done.stderr}"
    return cwd


def test_the_notebook_tour_runs(tmp_path: Path):
    blocks = [(m.group(1), m.group(2)) for m in BLOCK.finditer(TOUR.read_text())]
    first = next(i for i, (language, _) in enumerate(blocks) if language == "python")
    cells = [code for language, code in blocks if language == "python"]
    before = [code for language, code in blocks[:first] if language == "bash"]
    after = [code for language, code in blocks[first:] if language == "bash"]
    assert len(before) == 1 and len(after) == 1 and len(cells) == 8
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "motoko").write_text(f'#!/bin/sh\nexec {sys.executable} -m motoko.cli.main "$@"\n')
    (bin_dir / "motoko").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    demo = tmp_path / "demo"
    try:
        cwd = shell(before[0], tmp_path, env)
        assert cwd == demo
        nb, client = execute(demo, cells)
        shell(after[0], demo, env)
    finally:
        subprocess.run([str(bin_dir / "motoko"), "launcher", "stop"], cwd=demo, env=env, capture_output=True, timeout=120)
        stop_server(demo, grace=5)
    assert states(html_of(nb.cells[0])) == ["FINISHED", "FINISHED"]
    assert sorted(text(nb.cells[1]).splitlines()) == ["rate 0.1: FINISHED, final amount 0.8179",
                                                     "rate 0.2: FINISHED, final amount 0.6676"]
    assert re.findall(r"<th>([^<]*)</th>", html_of(nb.cells[2]))[1:5] == ["id", "rate", "final", "q.amount"]
    assert states(html_of(nb.cells[3])) == ["FINISHED"] * 3  # the watched table, as last updated
    assert client.updates, "the watch never refreshed its table"
    assert "'FINISHED': 2" in str(nb.cells[4].outputs[-1].data["text/plain"])
    assert "<b>run decay.3</b>" in html_of(nb.cells[5])
    assert "<b>study decay (run name &#x27;tour&#x27;): 7 runs (7 FINISHED)</b>" in html_of(nb.cells[6])
    assert states(html_of(nb.cells[7])) == ["FINISHED"]


def test_a_cell_is_escaped_and_cut():
    from motoko.study.display import CELL_LIMIT, cell, progress_bar, state_badge

    long = "<b>" * 40
    shown = cell(long)
    assert shown.startswith("&lt;b&gt;") and shown.endswith("…") and "<" not in shown
    assert len(cell("x" * 200)) == CELL_LIMIT
    assert cell(None) == "" and cell(4.0) == "4.0" and cell(3.656158440062973e-05) == "3.65616e-05"
    assert cell({"a": "<i>"}) == "{&#x27;a&#x27;: &#x27;&lt;i&gt;&#x27;}"
    assert state_badge("<FORWARDED>") == '<span class="motoko-state" style="background:#616161">&lt;FORWARDED&gt;</span>'
    assert progress_bar(None) == "" and progress_bar(0.5).endswith(" 50%")
