"""BlackDynamite 1.3.9 study database scale; run inside the motoko-0.1.4 venv.

    python bd_scale.py insert DIR N CHUNK     (creates the study in DIR, prints JSON)
    python bd_scale.py select DIR N           (fresh process: cold, then warm)

The counterpart of ``benchmarks/db_scale.py`` for BlackDynamite, through its
own API: jobs via ``Base.createParameterSpace`` (what ``canYouDigIt jobs
create`` does, each job checked against the existing ones before insertion),
one run per job via ``Run.attachToJob`` (what ``canYouDigIt runs create``
does), in chunks so that the per-chunk times show how insertion grows with N.
Then 1 % of the runs are marked FINISHED, and ``select`` times the same
queries as ours: ``state = FINISHED`` and a 1 % range of the job parameter.
Prints one JSON object on the last line of stdout.
"""

import json
import os
import sys
import time

BD_YAML = """study: scale
job:
  x: float
run:
  run_name: str
"""


def connect(directory):
    import BlackDynamite as BD

    os.chdir(directory)
    return BD.Base(study="scale", host="zeo://" + directory)


def insert(directory, n, chunk):
    import transaction
    from BlackDynamite.scripts import createDB

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "bd.yaml"), "w") as out:
        out.write(BD_YAML)
    os.chdir(directory)
    start = time.perf_counter()
    createDB.main(["--truerun", "--study", "scale", "--yes"])
    base = connect(directory)
    create_s = time.perf_counter() - start
    chunks = []
    all_start = time.perf_counter()
    for first in range(0, n, chunk):
        values = [float(i) for i in range(first, min(n, first + chunk))]
        start = time.perf_counter()
        job = base.Job()
        job["x"] = values
        first_id = base.jobs_counter
        base.createParameterSpace(job, params={"yes": True})
        for job_id in range(first_id, base.jobs_counter):
            run = base.Run()
            run["run_name"] = "bench"
            run["machine_name"] = "localhost"
            run["nproc"] = 1
            run.attachToJob(base.jobs[job_id])
        transaction.commit()
        chunks.append(time.perf_counter() - start)
    insert_s = time.perf_counter() - all_start
    start = time.perf_counter()
    runs = base._get_runs()
    for run_id in range(1, n + 1, 100):
        runs[run_id]["state"] = "FINISHED"
    transaction.commit()
    finish_s = time.perf_counter() - start
    return {
        "n": n,
        "create_study_s": create_s,
        "insert_s": insert_s,
        "insert_runs_per_s": n / insert_s,
        "chunk_s": chunks,
        "chunk_ratio_last_to_first": chunks[-1] / chunks[0],
        "transition_1pct_s": finish_s,
        "runs_in_db": len(list(runs.keys())),
    }


def select(directory, n):
    import BlackDynamite as BD

    base = connect(directory)
    selector = BD.RunSelector(base)
    result = {"n": n}
    queries = {"select_state": ["state = FINISHED"], "select_job_range": [f"x > {n * 0.2}", f"x < {n * 0.21}"]}
    for key, constraints in queries.items():
        start = time.perf_counter()
        count = len(selector.selectRuns(list(constraints), quiet=True))
        cold = time.perf_counter() - start
        warm = []
        for _ in range(3):
            start = time.perf_counter()
            selector.selectRuns(list(constraints), quiet=True)
            warm.append(time.perf_counter() - start)
        result[key] = {"query": ", ".join(constraints), "matches": count, "cold_s": cold, "warm_s": min(warm)}
    return result


def main(argv):
    action, directory, n = argv[0], os.path.abspath(argv[1]), int(argv[2])
    result = insert(directory, n, int(argv[3])) if action == "insert" else select(directory, n)
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip BlackDynamite's atexit hooks; the server is stopped by the caller


if __name__ == "__main__":
    main(sys.argv[1:])
