"""What finding outdated runs costs: fingerprints per createTask, the pre-pass of `motoko run`.

A study ``a`` of A runs, each the parent of B runs of study ``b``, all
FINISHED in one run name. Figures: the study fingerprint cold and cached
(paid once per createTask call), and :func:`find_outdated` (what `motoko run`
does before creating anything) when nothing changed and when a's doIt.py
changed, which makes every run outdated (A directly, A·B as descendants).

    python benchmarks/outdated.py [--parents 1000] [--children 10]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import emit, summary, timed, workflow  # noqa: E402
from motoko.flow.outdated import find_outdated  # noqa: E402
from motoko.flow.workflow import Workflow  # noqa: E402
from motoko.study import fingerprint  # noqa: E402
from motoko.study.records import FINISHED, LAUNCHED  # noqa: E402

DOIT = "from motoko import current_run\nrun, job = current_run()\nrun.y = job.x\n"


def finish_all(wf: Workflow, name: str) -> None:
    db = wf.db_for(name)

    def change() -> None:
        study = db.study(name)
        for run in list(study.ids_in_state("CREATED").values()):
            study.transition(run, LAUNCHED)
            study.transition(run, FINISHED, exit_code=0)

    db.transact(change, what="finish")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parents", type=int, default=1000)
    parser.add_argument("--children", type=int, default=10)
    args = parser.parse_args()
    studies = {"a": ("{x: float}", "#!/bin/bash\n", DOIT), "b": ("{x: float}", "#!/bin/bash\n", DOIT)}
    with workflow(studies) as root, Workflow(root, run_name="bench") as wf:
        schema = wf.a.schema
        cold = []
        for _ in range(20):
            fingerprint._cache.clear()
            cold.append(timed(lambda: fingerprint.study_fingerprint(schema))[0])
        warm = [timed(lambda: fingerprint.study_fingerprint(schema))[0] for _ in range(200)]
        parents = wf.a.createTask(x=[float(i) for i in range(args.parents)])
        finish_all(wf, "a")
        create_children, _ = timed(
            lambda: [
                wf.b.createTask(x=[float(i * args.children + j) for j in range(args.children)], parents=[run])
                for i, (run, _) in enumerate(parents)
            ]
        )
        finish_all(wf, "b")
        total = args.parents * (1 + args.children)
        unchanged = [timed(lambda: find_outdated(wf))[0] for _ in range(3)]
        doit = root / "studies" / "a" / "doIt.py"
        doit.write_text(DOIT.replace("job.x", "2 * job.x"))
        os.utime(doit, ns=(1, 1))
        changed = []
        for _ in range(3):
            seconds, report = timed(lambda: find_outdated(wf))
            changed.append(seconds)
        emit({
            "benchmark": "outdated",
            "runs": total,
            "fingerprint_cold_ms": summary([1000 * s for s in cold]),
            "fingerprint_cached_us": summary([1e6 * s for s in warm]),
            "create_task_calls": args.parents,
            "create_task_ms_per_call": 1000 * create_children / args.parents,
            "find_outdated_unchanged_s": summary(unchanged),
            "find_outdated_all_outdated_s": summary(changed),
            "outdated_found": report.total,
            "find_outdated_us_per_run": 1e6 * min(changed) / total,
        })


if __name__ == "__main__":
    main()
