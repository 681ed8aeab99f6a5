"""What the first-hour displays cost: a progress redraw, the no-launcher check, an idle stop.

    python -m benchmarks.first_hour [--runs 2000] [--repeat 20] [--idle 1.0]

* ``progress_read``: one read of ``motoko run``'s progress display (every
  study's runs of the run name, their counts and own progress), with
  ``--runs`` runs in one run name: what each redraw costs.
* ``unserved_check``: one "no launcher alive?" check (the launchers'
  records, and the CREATED index of the study), as ``motoko status`` does.
* ``status_collect``: ``motoko status``'s whole read, for reference.
* ``idle_stop``: seconds from the last client leaving to the server process
  gone, with ``server_idle_stop = --idle``, minus the idle period itself.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import emit, summary, workflow

DOIT = "from motoko import current_run\nrun, job = current_run()\n"
LAUNCH = "#!/bin/sh\ntrue\n"


def measure_reads(runs: int, repeat: int) -> dict[str, Any]:
    from motoko.cli.progress import read_studies
    from motoko.flow.launcher_watch import watch_for
    from motoko.flow.workflow import Workflow
    from motoko.views.status import collect_status

    with workflow({"calc": ("{x: float}", LAUNCH, DOIT)}) as root, Workflow(root / "motoko.yaml", run_name="bench") as wf:
        wf.calc.createTask(x=[float(i) for i in range(runs)])  # CREATED: no launcher
        out: dict[str, Any] = {}
        for name, call in (
            ("progress_read", lambda: read_studies(wf)),
            ("unserved_check", lambda: watch_for(wf).check()),
            ("status_collect", lambda: collect_status(wf)),
        ):
            times = []
            for _ in range(repeat):
                wf.refresh()
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            out[name] = {"seconds": summary(times), "runs": runs}
        found = watch_for(wf).check()
        out["unserved_check"]["says"] = str(found)
        return out


def measure_idle_stop(idle: float) -> dict[str, Any]:
    from motoko.flow.workflow import Workflow
    from motoko.study.server import pid_alive, server_status

    with workflow({"calc": ("{x: float}", LAUNCH, DOIT)}, config=f"server_idle_stop: {idle}\n") as root:
        with Workflow(root / "motoko.yaml", run_name="bench") as wf:
            wf.calc.createTask(x=[1.0])
            pid = server_status(root).pid
        left = time.perf_counter()  # the only client closed its connection
        while pid is not None and pid_alive(pid):
            time.sleep(0.01)
        gone = time.perf_counter() - left
        return {"idle_setting": idle, "seconds_to_exit": gone, "beyond_idle": gone - idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--idle", type=float, default=1.0)
    args = parser.parse_args()
    result = {"benchmark": "first_hour", **measure_reads(args.runs, args.repeat), "idle_stop": measure_idle_stop(args.idle)}
    emit(result)


if __name__ == "__main__":
    main()
