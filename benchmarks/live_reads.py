"""The cost of live reads: ``rl.run.state`` with and without commits in between.

    python -m benchmarks.live_reads [--reads 2000] [--runs 100]

Live reads sync the workflow's connection only when the change feed reported
a commit since the last one. Figures (microseconds per read, median of
``--reads``):

* ``idle``: ``rl.run.state`` when nothing was committed (the common case);
* ``after_commit``: the read right after another client committed (one
  server round trip plus the invalidated objects' reload);
* ``refresh_each_read``: the old way to be fresh, ``wf.refresh()`` then the
  read, for reference;
* ``iterate_100_runs_idle``: iterating a RunList of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import emit, summary, workflow


def per_read(func, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        func()
        samples.append((time.perf_counter() - start) * 1e6)
    return summary(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    from motoko.flow.workflow import Workflow
    from motoko.study.database import StudyDB

    with workflow({"calc": ("{x: float}", "#!/bin/bash\ntrue\n", "")}) as root:
        wf = Workflow(root / "motoko.yaml", run_name="bench")
        try:
            rl = wf.calc.createTask(x=1.0)
            many = wf.calc.createTask(x=[float(i) for i in range(args.runs)])
            db = wf.db_for("calc")
            idle = per_read(lambda: rl.run.state, args.reads)
            iterate = per_read(lambda: [r.state for r, _ in many], max(10, args.reads // 20))
            def refreshed() -> str:
                wf.refresh()
                return rl.run.state

            refresh = per_read(refreshed, args.reads // 4)
            other = StudyDB(wf.address_of("calc"))
            samples = []
            try:
                for i in range(args.reads // 4):
                    seen = db.feed.commits_seen
                    def tick(i: int = i) -> None:
                        other.run("calc", rl.ids[0]).tick = i

                    other.transact(tick)
                    deadline = time.monotonic() + 5
                    while db.feed.commits_seen == seen and time.monotonic() < deadline:
                        time.sleep(0.0005)
                    start = time.perf_counter()
                    tick = rl.run.tick
                    samples.append((time.perf_counter() - start) * 1e6)
                    assert tick == i, (tick, i)  # the read saw the commit
            finally:
                other.close()
        finally:
            wf.close()
    emit({
        "benchmark": "live_reads",
        "unit": "microseconds per read",
        "idle": idle,
        "after_commit": summary(samples),
        "refresh_each_read": refresh,
        f"iterate_{args.runs}_runs_idle": iterate,
    })


if __name__ == "__main__":
    main()
