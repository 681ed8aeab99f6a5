"""motoko side by side with motoko 0.1.4, Snakemake and the machine's limits.

    python -m benchmarks.compare [--quick] [--cache DIR] [--only NAME ...]

Installs motoko 0.1.4 + BlackDynamite 1.3.9 and Snakemake into virtual
environments under ``--cache`` (default ``~/.cache/motoko-bench``; reused when
present), then runs the same work with each tool, on the same machine, in the
same run (machines here are noisy: the ratios of one run are what count):

1. ``pipeline``: the example mult → add → norm → mult, wall time from start
   to the final result. Ours: ``motoko run workflows/pipeline.py`` in a fresh
   copy (server start included). 0.1.4: ``compare_files/motoko014/pipeline.py``
   (a 0.1.4 orchestrator) with BlackDynamite run scripts, its set-up
   (``motoko create`` + ``motoko launcher``) timed apart. Snakemake:
   ``compare_files/snakemake/pipeline.smk`` with small Python scripts.
2. ``fan_out``: N trivial runs, runs/s, 2 at a time where the tool allows it;
   ``xargs -P2`` running the same ``launch.sh`` is the physical reference.
3. ``hop``: a chain of 10 dependent single-run steps; per hop =
   (last hop's end - first hop's end) / (hops - 1). The floor, measured in
   the same run, is one ZEO commit reaching another client.
4. ``db_scale``: insert N runs and select from a fresh connection, ours up to
   100k (``benchmarks/db_scale.py``), BlackDynamite's API at 1k and 10k.
5. ``channel``: what a run's writes cost (``benchmarks/channel.py``, ours
   only): Python runs using the run-side API against bare Python runs under
   the same launcher, the API's import above bare Python, and one writer's
   commit rate while 200 runs execute against its rate alone, with the run
   processes connected to the database meanwhile.

Every external step has a timeout and runs in its own directory; whatever it
leaves running is stopped by process id afterwards. A tool that fails records
its error in the JSON and the comparison goes on. Prints the JSON result,
writes it to ``benchmarks/results/compare-<date>.json`` and the Markdown
table next to it (``.md``).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import KEEP_TREES, bytecode_environment, machine, summary

REPO = Path(__file__).resolve().parents[1]
#: Where, in the comparison's directory, motoko's bytecode is cached for its processes.
BYTECODE = "motoko-bytecode"
FILES = Path(__file__).resolve().parent / "compare_files"
RESULTS = REPO / "benchmarks" / "results"
TRIVIAL_LAUNCH = FILES / "trivial" / "launch.sh"
PARALLEL = 2
HOPS = 10
# Pinned so that a figure can be traced to what produced it.
VENVS = {
    "motoko014": ["motoko==0.1.4", "blackdynamite==1.3.9"],
    "snakemake": ["snakemake==9.27.1"],
}
EXPECTED_PIPELINE = [[18.038928, 6.006484495942697], [217.89364799999998, 20.875519059415026]]


class StepFailed(RuntimeError):
    """An external step exited non-zero, timed out, or printed no result."""


@dataclass
class Plan:
    """What to measure, and how often; ``--quick`` trims the expensive parts."""

    quick: bool
    fan_sizes: list[int] = field(default_factory=lambda: [100, 1000])
    old_fan_sizes: list[int] = field(default_factory=lambda: [100, 1000])
    our_db_sizes: list[int] = field(default_factory=lambda: [1000, 10_000, 100_000])
    old_db_sizes: list[int] = field(default_factory=lambda: [1000, 10_000])
    repeat: int = 3
    old_repeat: int = 3
    big_repeat: int = 3
    channel: dict[str, Any] = field(default_factory=dict)  # benchmarks.channel.measured's arguments
    skipped: list[str] = field(default_factory=list)
    # --quick must end within 15 minutes venvs included: past this many seconds
    # from the start, motoko 0.1.4 steps whose estimate would overrun are skipped.
    budget_s: float | None = None

    @classmethod
    def make(cls, quick: bool) -> Plan:
        plan = cls(quick=quick)
        if quick:
            plan.old_fan_sizes = [100]
            plan.old_db_sizes = [1000]
            plan.old_repeat = 1
            plan.big_repeat = 1
            plan.budget_s = 840
            plan.channel = {"runs": 40, "repeat": 2, "database_concurrent": 32}
            plan.skipped = [
                "motoko 0.1.4 fan-out at N=1000 (~25 min: its launcher runs one run at a time, "
                "~1.4 s each under load)",
                "BlackDynamite insert at N=10k (~300 s, quadratic)",
                "repeats of the 0.1.4 fan-out, hop chain and 1k insert (1 each); its 3 pipeline repeats share one set-up",
                "repeats of N=1000 fan-outs (Snakemake, motoko, xargs) and of the 100k database (1 each)",
            ]
        return plan


# ---------------------------------------------------------------- processes


def run_step(cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run cmd in its own session; (seconds, stdout). Raises StepFailed.

    On timeout the whole process group is killed, so that nothing it spawned
    in the foreground survives the step.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise StepFailed(f"{' '.join(cmd[:4])} timed out after {timeout:.0f} s") from None
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (err or out).strip().splitlines()[-6:]
        raise StepFailed(f"{' '.join(cmd[:4])} exited {proc.returncode}: " + " | ".join(tail))
    return seconds, out


def reap(directory: Path) -> list[int]:
    """Kill (by pid) every process of ours whose cwd or command line is under directory.

    ZEO servers, zdaemon and launch daemons started by a step are detached
    from it; this is the safety net after each step's own stop command.
    """
    killed, mine, marker = [], os.getpid(), str(directory)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == marker or cwd.startswith(marker + "/") or marker + "/" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


@contextlib.contextmanager
def sandbox(root: Path, name: str) -> Iterator[Path]:
    """A fresh directory for one step; processes left in it are stopped on exit."""
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    try:
        yield directory
    finally:
        reap(directory)
        if not os.environ.get(KEEP_TREES):  # else deleted with root, at the end
            shutil.rmtree(directory, ignore_errors=True)


def attempt(func: Callable[[], Any]) -> Any:
    """func's result, or {"error": ...}: one tool failing never ends the comparison."""
    try:
        return func()
    except Exception as exc:  # recorded in the JSON for the reader
        message = f"{type(exc).__name__}: {exc}"
        print(f"compare: {message}", file=sys.stderr)
        if not isinstance(exc, StepFailed):
            traceback.print_exc(file=sys.stderr)
        return {"error": message}


def median_of(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Summary of samples[*][key], with the samples kept for the reader."""
    return {**summary([s[key] for s in samples]), "samples": samples}


# ---------------------------------------------------------------- environments


def venv_env(venv: Path) -> dict[str, str]:
    """The environment of a tool's venv: its bin first in PATH (their launchers call their CLIs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def ensure_venv(cache: Path, name: str, timeout: float = 600) -> dict[str, Any]:
    """Create cache/venv-NAME with VENVS[name] pinned, or reuse it when it already has them."""
    venv = cache / f"venv-{'0.1.4' if name == 'motoko014' else name}"
    python = venv / "bin" / "python"
    wanted = VENVS[name]
    start = time.perf_counter()
    created = False
    if not _has_packages(python, wanted):
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        run_step([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, timeout=120)
        run_step([str(python), "-m", "pip", "install", "-q", *wanted], cwd=venv.parent, timeout=timeout)
        created = True
    return {"path": str(venv), "created": created, "seconds": time.perf_counter() - start, "packages": wanted}


def _has_packages(python: Path, wanted: list[str]) -> bool:
    if not python.exists():
        return False
    try:
        _, out = run_step([str(python), "-m", "pip", "freeze"], cwd=python.parent, timeout=60)
    except StepFailed:
        return False
    have = {line.strip().lower() for line in out.splitlines()}
    return all(w.lower() in have for w in wanted)


def versions(venvs: dict[str, Any]) -> dict[str, Any]:
    """Versions of everything compared, as the tools report them."""
    import importlib.metadata

    found: dict[str, Any] = {"motoko": importlib.metadata.version("motoko"), "python": sys.version.split()[0]}
    with contextlib.suppress(Exception):
        found["xargs"] = subprocess.run(["xargs", "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
    for name, info in venvs.items():
        if "error" in info:
            continue
        python = Path(info["path"]) / "bin" / "python"
        with contextlib.suppress(Exception):
            out = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, timeout=60).stdout
            keep = ("motoko", "blackdynamite", "zodb", "zeo", "snakemake")
            found[name] = sorted(line for line in out.splitlines() if line.lower().split("==")[0] in keep)
    return found


# ---------------------------------------------------------------- ours


def ours(root: Path, name: str, function: str, kwargs: dict[str, Any], timeout: float) -> Any:
    """Call benchmarks.FUNCTION(**kwargs) in a child process (timeout, own temp dir); its JSON result."""
    module, func = function.rsplit(".", 1)
    code = (
        "import json, sys, importlib\n"
        f"result = getattr(importlib.import_module({module!r}), {func!r})(**json.loads(sys.argv[1]))\n"
        "sys.stdout.write('\\n' + json.dumps(result, default=str) + '\\n')\n"
    )
    with sandbox(root, name) as directory:
        env = {**_our_environment(root), "TMPDIR": str(directory)}
        _, out = run_step([sys.executable, "-c", code, json.dumps(kwargs)], cwd=REPO, timeout=timeout, env=env)
    return _last_json(out)


def _our_environment(root: Path) -> dict[str, str]:
    """motoko's processes load its bytecode, as from an installed package (see :func:`compare`)."""
    env = dict(os.environ)
    if (root / BYTECODE).is_dir():
        env["PYTHONPYCACHEPREFIX"] = str(root / BYTECODE)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _last_json(out: str) -> Any:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    if not lines:
        raise StepFailed("no result printed")
    return json.loads(lines[-1])


def ours_pipeline(root: Path, repeat: int) -> dict[str, Any]:
    """``motoko run workflows/pipeline.py`` in a fresh copy of the example, server start included."""
    samples = []
    for _ in range(repeat):
        with sandbox(root, "ours-pipeline") as directory:
            shutil.copy(REPO / "motoko.yaml", directory)
            shutil.copytree(REPO / "studies", directory / "studies")
            shutil.copytree(REPO / "workflows", directory / "workflows")
            cli = [sys.executable, "-m", "motoko.cli.main"]
            try:
                wall, out = run_step([*cli, "run", "workflows/pipeline.py"], cwd=directory, timeout=120, env=_our_environment(root))
            finally:
                with contextlib.suppress(StepFailed):
                    run_step([*cli, "server", "stop"], cwd=directory, timeout=60, env=_our_environment(root))
        line = next((x for x in out.splitlines() if x.startswith("remult:")), "remult: null")
        samples.append({"wall_s": wall, "result": ast.literal_eval(line.split(":", 1)[1].strip())})
    return {**median_of(samples, "wall_s"), "same_result": all(_same(s["result"]) for s in samples)}


def chain_once(hops: int) -> dict[str, Any]:
    """Ours: benchmarks.latency's chain of steps, with each hop split into phases.

    Per hop = (last hop's end - first hop's end) / (hops - 1). The phases
    come from the run's own time stamps: createTask → created (validation,
    space expansion), → launched (insert commit, the launcher woken by the
    invalidation, claim commit), → started (staged, process spawned), →
    finished (the process), → await resolved (settle commit, invalidation,
    the awaiting step woken), → next hop's createTask (the DAG scheduling the
    next step). A short run is marked RUNNING in its settle's commit: its
    "process" phase then reads ~0 and "stage_spawn" holds the process too.
    """
    from benchmarks.common import workflow
    from benchmarks.latency import chain_file
    from motoko.flow.runner import run_file
    from motoko.flow.workflow import Workflow

    poll = "poll: {initial: 1, factor: 2, maximum: 5}\n"  # as benchmarks/latency.py
    with workflow({"hop": ("{i: int}", "#!/bin/bash\nexit 0\n", "")}, poll) as root:
        path = root / "chain.py"
        path.write_text(chain_file(hops))
        start = time.perf_counter()
        outcome = run_file(path)
        wall = time.perf_counter() - start
        offset = time.time() - time.perf_counter()  # perf_counter → epoch seconds
        times = sys.modules["motoko_workflow_chain"].TIMES
        wf = Workflow(root, run_name=outcome.run_name)
        stamps = {run.id: (run.created, run.launched, run.started, run.finished) for run, _ in wf.hop.select()}
        wf.close()
    phases: dict[str, list[float]] = {k: [] for k in ("create", "commit_wake_claim", "stage_spawn", "process", "settle_wake", "next_step")}
    for i, (begin, end, rid) in enumerate(times):
        created, launched, started, finished = (t.timestamp() for t in stamps[rid] if t is not None)  # every hop ran
        marks = [begin + offset, created, launched, started, finished, end + offset]
        if i + 1 < len(times):
            marks.append(times[i + 1][0] + offset)
        for name, a, b in zip(phases, marks, marks[1:], strict=False):
            phases[name].append(b - a)
    return {
        "hops": hops,
        "wall_s": wall,
        "per_hop_s": (times[-1][1] - times[0][1]) / (hops - 1),
        "phases_median_s": {name: statistics.median(values) for name, values in phases.items()},
    }


def _same(result: Any) -> bool:
    try:
        return all(abs(a - b) < 1e-9 for got, want in zip(result, EXPECTED_PIPELINE, strict=True) for a, b in zip(got, want, strict=True))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------- motoko 0.1.4


class Old:
    """A motoko 0.1.4 workflow directory: studies, motoko.yaml, one orchestrator."""

    def __init__(self, directory: Path, venv: Path, studies: list[str], orchestrator: str) -> None:
        self.directory, self.env = directory, venv_env(venv)
        for study in studies:
            shutil.copytree(FILES / "motoko014" / study, directory / study)
        shutil.copy(FILES / "motoko014" / f"{orchestrator}.py", directory)
        managers = "".join(f"  {s}:\n" for s in studies)
        (directory / "motoko.yaml").write_text(f"task_managers:\n{managers}orchestrator: {orchestrator}.main\n")

    def motoko(self, *args: str, timeout: float) -> float:
        seconds, _ = run_step(["motoko", *args], cwd=self.directory, timeout=timeout, env=self.env)
        return seconds

    def set_up(self) -> dict[str, float]:
        """0.1.4's set-up: reset and create the studies (a ZEO server each), start the launch daemons."""
        create = self.motoko("create", ".", "--validated", timeout=180)
        launcher = self.motoko("launcher", timeout=120)
        return {"create_s": create, "launcher_s": launcher, "setup_s": create + launcher}

    def orchestrate(self, run_name: str, *args: str, timeout: float) -> tuple[float, dict[str, Any]]:
        """``motoko orchestrator start``; (process wall, the result.json it wrote)."""
        result = self.directory / "result.json"
        result.unlink(missing_ok=True)
        wall = self.motoko("orchestrator", "start", "--run_name", run_name, *args, timeout=timeout)
        if not result.exists():
            raise StepFailed(f"orchestrator {run_name} wrote no result (see {self.directory})")
        return wall, json.loads(result.read_text())

    def tear_down(self) -> float:
        """Stop its servers and daemons by process id (``motoko kill`` takes ~10 s); seconds."""
        start = time.perf_counter()
        # Twice: a zdaemon killed after its child may have restarted it in between.
        while reap(self.directory):
            time.sleep(0.2)
        return time.perf_counter() - start


@contextlib.contextmanager
def old_workflow(root: Path, venv: Path, name: str, studies: list[str], orchestrator: str) -> Iterator[Old]:
    with sandbox(root, name) as directory:
        old = Old(directory, venv, studies, orchestrator)
        try:
            yield old
        finally:
            old.tear_down()


def old_pipeline(root: Path, venv: Path, repeat: int, fresh: bool) -> dict[str, Any]:
    """0.1.4's pipeline; set-up and orchestrator timed apart.

    With ``fresh``, every repeat has its own new workflow (as ours does);
    otherwise one set-up serves every repeat under a new run name (as a 0.1.4
    user would do; its database then holds the earlier repeats' 8 runs each).
    """
    samples: list[dict[str, Any]] = []
    while len(samples) < repeat:
        with old_workflow(root, venv, "old-pipeline", ["mult", "add", "norm"], "pipeline") as old:
            setup = old.set_up()
            for _ in range(1 if fresh else repeat):
                wall, result = old.orchestrate(f"pipeline{len(samples)}", timeout=600)
                samples.append({**setup, "wall_s": wall, "result_s": result["end"] - result["start"], "result": result["result"]})
    return {
        **median_of(samples, "wall_s"),
        "setup_s": summary([s["setup_s"] for s in (samples if fresh else samples[:1])]),
        "fresh_setup_each_repeat": fresh,
        "same_result": all(_same(s["result"]) for s in samples),
    }


def old_fan_out(root: Path, venv: Path, n: int, repeat: int) -> dict[str, Any]:
    """0.1.4: createTask(i=range(n)) awaited; runs/s from createTask to all FINISHED."""
    samples = []
    with old_workflow(root, venv, f"old-fan-{n}", ["trivial"], "fan_out") as old:
        setup = old.set_up()
        for i in range(repeat):
            wall, result = old.orchestrate(f"fan{n}-{i}", "--nruns", str(n), timeout=max(600, 3 * n))
            span = result["end"] - result["start"]
            samples.append({"runs": n, "wall_s": span, "insert_s": result["inserted"] - result["start"], "runs_per_s": n / span, "process_s": wall})
    return {**median_of(samples, "runs_per_s"), "setup": setup, "parallel": 1}


def old_chain(root: Path, venv: Path, hops: int, repeat: int) -> dict[str, Any]:
    """0.1.4: hops dependent createTask/await; the per-hop period."""
    samples = []
    with old_workflow(root, venv, "old-chain", ["trivial"], "chain") as old:
        setup = old.set_up()
        for i in range(repeat):
            _, result = old.orchestrate(f"chain{i}", "--hops", str(hops), timeout=60 + 30 * hops)
            times = result["times"]
            samples.append({"per_hop_s": (times[-1][1] - times[0][1]) / (hops - 1), "times": times})
    return {**median_of(samples, "per_hop_s"), "setup": setup}


def old_db(root: Path, venv: Path, n: int, repeat: int) -> dict[str, Any]:
    """BlackDynamite's API at N runs: insert (chunks of N/4), then select from a fresh process."""
    script = str(FILES / "motoko014" / "bd_scale.py")
    python = str(venv / "bin" / "python")
    samples = []
    for _ in range(repeat):
        with sandbox(root, f"old-db-{n}") as directory:
            study = directory / "study"
            try:
                _, out = run_step([python, script, "insert", str(study), str(n), str(max(1, n // 4))], cwd=directory, timeout=max(300, n * 0.2), env=venv_env(venv))
                sample = _last_json(out)
                _, out = run_step([python, script, "select", str(study), str(n)], cwd=directory, timeout=300, env=venv_env(venv))
                sample.update(_last_json(out))
            finally:
                with contextlib.suppress(StepFailed):
                    run_step(["canYouDigIt", "server", "stop"], cwd=study, timeout=60, env=venv_env(venv))
        samples.append(sample)
    return _db_summary(samples)


def _db_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    keep = {k: v for k, v in samples[0].items() if k not in ("insert_s", "select_state", "select_job_range")}
    return {
        **keep,
        "insert_s": summary([s["insert_s"] for s in samples]),
        "select_state_cold_s": summary([s["select_state"]["cold_s"] for s in samples]),
        "select_state_warm_s": summary([s["select_state"]["warm_s"] for s in samples]),
        "select_range_cold_s": summary([s["select_job_range"]["cold_s"] for s in samples]),
        "samples": samples,
    }


# ---------------------------------------------------------------- Snakemake


def snakemake(venv: Path, snakefile: str, directory: Path, config: dict[str, Any], timeout: float) -> float:
    cmd = ["snakemake", "all", "--snakefile", str(FILES / "snakemake" / snakefile), "--directory", str(directory), "--cores", str(PARALLEL)]
    if config:
        cmd += ["--config", *(f"{k}={v}" for k, v in config.items())]
    seconds, _ = run_step([*cmd, "--quiet"], cwd=directory, timeout=timeout, env=venv_env(venv))
    return seconds


def smk_pipeline(root: Path, venv: Path, repeat: int) -> dict[str, Any]:
    samples = []
    for _ in range(repeat):
        with sandbox(root, "smk-pipeline") as directory:
            wall = snakemake(venv, "pipeline.smk", directory, {}, timeout=300)
            result = [json.loads((directory / "remult" / f"{b}.json").read_text())["y"] for b in range(2)]
        samples.append({"wall_s": wall, "result": result})
    return {**median_of(samples, "wall_s"), "same_result": all(_same(s["result"]) for s in samples)}


def smk_fan_out(root: Path, venv: Path, n: int, repeat: int) -> dict[str, Any]:
    """Snakemake -j2 running the trivial launch.sh n times; process wall (its start-up included)."""
    samples = []
    for _ in range(repeat):
        with sandbox(root, f"smk-fan-{n}") as directory:
            wall = snakemake(venv, "fan_out.smk", directory, {"nruns": n, "launch": TRIVIAL_LAUNCH}, timeout=max(300, n))
            done = len(list((directory / "done").iterdir()))
        samples.append({"runs": n, "finished": done, "wall_s": wall, "runs_per_s": n / wall})
    return {**median_of(samples, "runs_per_s"), "parallel": PARALLEL}


def smk_chain(root: Path, venv: Path, hops: int, repeat: int) -> dict[str, Any]:
    samples = []
    for _ in range(repeat):
        with sandbox(root, "smk-chain") as directory:
            wall = snakemake(venv, "chain.smk", directory, {"hops": hops, "launch": TRIVIAL_LAUNCH}, timeout=300)
            ends = [float((directory / "hop" / str(i)).read_text()) for i in range(hops)]
        samples.append({"per_hop_s": (ends[-1] - ends[0]) / (hops - 1), "wall_s": wall})
    return median_of(samples, "per_hop_s")


# ---------------------------------------------------------------- the comparison


@dataclass
class Tools:
    """Where each tool lives for this comparison (None: its venv could not be made)."""

    root: Path
    plan: Plan
    old: Path | None
    smk: Path | None
    began: float = field(default_factory=time.perf_counter)

    def old_tool(self, func: Callable[[Path], Any], estimate_s: float) -> Any:
        """func in 0.1.4's venv, unless the --quick time budget cannot afford estimate_s more."""
        if self.plan.budget_s is not None:
            left = self.plan.budget_s - (time.perf_counter() - self.began)
            if estimate_s > left:
                return {"skipped": f"time budget: {left:.0f} s left of {self.plan.budget_s:.0f}, needs ~{estimate_s:.0f}"}
        return self._in(self.old, func)

    def smk_tool(self, func: Callable[[Path], Any]) -> Any:
        return self._in(self.smk, func)

    @staticmethod
    def _in(venv: Path | None, func: Callable[[Path], Any]) -> Any:
        if venv is None:
            return {"error": "its virtual environment could not be created (see venvs)"}
        return attempt(lambda: func(venv))


def pipeline_section(t: Tools) -> dict[str, Any]:
    r = t.plan.repeat
    return _section({
        "motoko": attempt(lambda: ours_pipeline(t.root, r)),
        "motoko014": t.old_tool(lambda v: old_pipeline(t.root, v, r, fresh=not t.plan.quick), estimate_s=150),
        "snakemake": t.smk_tool(lambda v: smk_pipeline(t.root, v, r)),
    })


def fan_out_section(t: Tools, n: int) -> dict[str, Any]:
    rep = t.plan.repeat if n <= 100 else t.plan.big_repeat
    common = {"n": n, "parallel": PARALLEL}
    trivial = {**common, "launch": TRIVIAL_LAUNCH.read_text()}
    timeout = max(300, n)
    old: Any = {"skipped": "--quick"}
    if n in t.plan.old_fan_sizes:
        old_rep = t.plan.old_repeat if n <= 100 else 1  # N=1000 takes 0.1.4 ~25 min
        old = t.old_tool(lambda v: old_fan_out(t.root, v, n, old_rep), estimate_s=30 + 1.5 * n * old_rep)
    turns = taking_turns(t.root, {
        "motoko": (f"ours-fan-{n}", "benchmarks.throughput.motoko_runs", trivial),
        "xargs": (f"xargs-{n}", "benchmarks.throughput.xargs_runs", common),
    }, rep, timeout, first=t.plan.fan_sizes.index(n) if n in t.plan.fan_sizes else 0)
    return _section({
        "motoko": turns["motoko"],
        "motoko014": old,
        "snakemake": t.smk_tool(lambda v: smk_fan_out(t.root, v, n, rep)),
        "xargs": turns["xargs"],
    })


def taking_turns(
    root: Path, calls: dict[str, tuple[str, str, dict[str, Any]]], repeat: int, timeout: float, first: int = 0
) -> dict[str, Any]:
    """median_of runs/s of each call (name -> (sandbox, function, kwargs)), the calls taking turns at going first.

    Why in turn: on this project's VM a new inode costs what the machine
    deleted in the seconds before (docs/performance.md). Measured one after
    the other, the first call always paid for the clean-up before it
    (motoko's fan-out, 0.19-0.24 of xargs after the hop section, against
    0.32-0.34 on tmpfs). ``first`` shifts the turns: successive sections
    of one repeat each start with a different call.
    """
    samples: dict[str, list[Any]] = {name: [] for name in calls}
    failed: dict[str, Any] = {}
    for index in range(repeat):
        order = list(calls) if (index + first) % 2 == 0 else list(reversed(calls))
        for name in order:
            if name in failed:
                continue
            sandbox_name, function, kwargs = calls[name]
            result = attempt(lambda: ours(root, sandbox_name, function, kwargs, timeout))  # noqa: B023 (called at once)
            if isinstance(result, dict) and "error" in result:
                failed[name] = result
            else:
                samples[name].append(result)
    return {name: failed.get(name) or median_of(samples[name], "runs_per_s") for name in calls}


def hop_section(t: Tools) -> dict[str, Any]:
    """Our chain and Snakemake's, one repeat each in turn; then 0.1.4's and the commit floor.

    Why in turn: on this project's VM a new inode costs what the machine
    deleted in the seconds before (docs/performance.md). Measured one tool
    after the other, ours came right after the fan-out section's clean-up
    and paid for it: 11.9 ms against Snakemake's 9.6 ms at 09:31, when the
    hop measured alone gave 7.8 against 9.8 four minutes later.
    """
    mine: list[Any] = []
    theirs: list[Any] = []
    for _ in range(t.plan.repeat):
        mine.append(attempt(lambda: ours(t.root, "ours-chain", "benchmarks.compare.chain_once", {"hops": HOPS}, 300)))
        if t.smk is not None:
            theirs.append(attempt(functools.partial(_one_chain, t.root, t.smk)))
    return _section({
        "motoko": attempt(lambda: median_of(mine, "per_hop_s")),
        "motoko014": t.old_tool(lambda v: old_chain(t.root, v, HOPS, t.plan.old_repeat), estimate_s=30 + 8 * HOPS * t.plan.old_repeat),
        "snakemake": t.smk_tool(lambda _: median_of(theirs, "per_hop_s")),
        "floor": attempt(lambda: ours(t.root, "ours-floor", "benchmarks.latency.commit_floor", {"repeat": 50}, timeout=120)),
    })


def _one_chain(root: Path, venv: Path) -> Any:
    return smk_chain(root, venv, HOPS, 1)["samples"][0]


def _our_db(root: Path, n: int, rep: int, kwargs: dict[str, Any]) -> Any:
    return _db_summary([ours(root, f"ours-db-{n}", "benchmarks.db_scale.measure", kwargs, timeout=900) for _ in range(rep)])


def _old_db_of(root: Path, n: int, rep: int, venv: Path) -> Any:
    return old_db(root, venv, n, rep)


def db_section(t: Tools) -> dict[str, Any]:
    section: dict[str, Any] = {"load_before": os.getloadavg(), "motoko": {}, "motoko014": {}}
    for n in t.plan.our_db_sizes:
        rep = t.plan.repeat if n <= 10_000 else t.plan.big_repeat
        kwargs = {"n": n, "chunk": max(1, n // 4)}
        section["motoko"][str(n)] = attempt(functools.partial(_our_db, t.root, n, rep, kwargs))
    for n in t.plan.old_db_sizes:
        rep = t.plan.old_repeat if n <= 1000 else 1
        section["motoko014"][str(n)] = t.old_tool(functools.partial(_old_db_of, t.root, n, rep), estimate_s=rep * n * 0.03)
    section["load_after"] = os.getloadavg()
    return section


def compare(plan: Plan, cache: Path, root: Path, only: set[str]) -> dict[str, Any]:
    """Every workload with every tool; the JSON result."""
    began = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "compare", "quick": plan.quick, "parallel": PARALLEL, "machine_start": machine()}
    result["plan"] = dict(vars(plan))
    # Our processes load motoko's bytecode as from an installed package (the
    # other tools' venvs have theirs): in this project's sessions
    # (PYTHONDONTWRITEBYTECODE, an editable install) each one compiled the
    # modules it imports, 60 ms of a 100-run fan-out.
    result["bytecode"] = attempt(lambda: bool(bytecode_environment(root / BYTECODE)))
    venvs = {name: attempt(functools.partial(ensure_venv, cache, name)) for name in VENVS}
    result["venvs"], result["versions"] = venvs, versions(venvs)
    paths = {name: None if "error" in info else Path(info["path"]) for name, info in venvs.items()}
    tools = Tools(root, plan, paths["motoko014"], paths["snakemake"], began)
    if not only or "pipeline" in only:
        result["pipeline"] = pipeline_section(tools)
    if not only or "fan_out" in only:
        result["fan_out"] = {str(n): fan_out_section(tools, n) for n in plan.fan_sizes}
    if not only or "hop" in only:
        result["hop"] = hop_section(tools)
    if not only or "db_scale" in only:
        result["db_scale"] = db_section(tools)
    if not only or "channel" in only:
        result["channel"] = _section(attempt(functools.partial(ours, root, "ours-channel", "benchmarks.channel.measured", plan.channel, 1800)))
    result["machine_end"] = machine()
    result["elapsed_s"] = time.perf_counter() - began
    return result


def _section(figures: dict[str, Any]) -> dict[str, Any]:
    return {"load_after": os.getloadavg(), **figures}


# ---------------------------------------------------------------- the table


def _fig(entry: Any, key: str = "median") -> float | None:
    if not isinstance(entry, dict) or "error" in entry or "skipped" in entry:
        return None
    value = entry.get(key)
    if isinstance(value, dict):
        value = value.get("median")
    return value if isinstance(value, int | float) else None


def _cell(entry: Any, unit: str, key: str = "median", digits: int = 2) -> str:
    if isinstance(entry, dict) and "error" in entry:
        return "failed (see JSON)"
    if isinstance(entry, dict) and "skipped" in entry:
        return "skipped (--quick)" if entry["skipped"] == "--quick" else "skipped (time budget)"
    value = _fig(entry, key)
    if value is None:
        return "—"
    text = f"{value:.{digits}f} {unit}".strip()
    spread = entry if key == "median" else entry.get(key)
    if isinstance(spread, dict) and spread.get("n", 1) > 1:
        text += f" ({spread['min']:.{digits}f}–{spread['max']:.{digits}f}, n={spread['n']})"
    return text


def _ratio(ours_value: float | None, other: float | None, higher_is_better: bool) -> str:
    """How many times better motoko is than the other figure (×N; below 1: worse)."""
    if not ours_value or not other:
        return "—"
    ratio = ours_value / other if higher_is_better else other / ours_value
    return f"×{ratio:.2f}" if ratio < 10 else f"×{ratio:.0f}"


def _of_reference(ours_value: float | None, reference: float | None, higher_is_better: bool) -> str:
    """motoko's figure as a multiple of the physical reference (rate: a fraction; time: ×)."""
    if not ours_value or not reference:
        return "—"
    if higher_is_better:
        return f"{ours_value / reference:.2f} of xargs' rate"
    return f"{ours_value / reference:.0f}× the floor"


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table (ratios: how many times better motoko is)."""
    head = (
        "| workload | motoko | motoko 0.1.4 | Snakemake | reference | motoko vs 0.1.4 | motoko vs Snakemake | motoko vs reference |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    pipe = result.get("pipeline")
    if pipe:
        old = pipe["motoko014"]
        old_cell = _cell(old, "s")
        if _fig(old, "setup_s") is not None:
            old_cell += f" + {_fig(old, 'setup_s'):.1f} s set-up"
        o, m, s = _fig(pipe["motoko"]), _fig(old), _fig(pipe["snakemake"])
        rows.append(["example pipeline, wall (lower is better)", _cell(pipe["motoko"], "s"), old_cell, _cell(pipe["snakemake"], "s"), "—", _ratio(o, m, False), _ratio(o, s, False), "—"])
    for n, fan in (result.get("fan_out") or {}).items():
        o, m, s, x = (_fig(fan[k]) for k in ("motoko", "motoko014", "snakemake", "xargs"))
        cells = [_cell(fan[k], "runs/s", digits=1) for k in ("motoko", "motoko014", "snakemake")]
        rows.append([f"fan-out N={n}, runs/s (higher is better)", *cells, "xargs -P2: " + _cell(fan["xargs"], "runs/s", digits=1), _ratio(o, m, True), _ratio(o, s, True), _of_reference(o, x, True)])
    hop = result.get("hop")
    if hop:
        o, m, s = _fig(hop["motoko"]), _fig(hop["motoko014"]), _fig(hop["snakemake"])
        floor = _fig(hop["floor"])
        cells = [_cell(hop[k], "s", digits=3) for k in ("motoko", "motoko014", "snakemake")]
        rows.append([f"hop latency, s per hop ({HOPS} dependent runs)", *cells, "ZEO commit → other client: " + _cell(hop["floor"], "s", digits=4), _ratio(o, m, False), _ratio(o, s, False), _of_reference(o, floor, False)])
    db = result.get("db_scale")
    if db:
        for n in sorted({*db["motoko"], *db["motoko014"]}, key=int):
            ours_db, old_db_ = db["motoko"].get(n), db["motoko014"].get(n, {"skipped": "--quick"} if result["quick"] else None)
            rows.append([f"insert {int(n):,} runs, s", _cell(ours_db, "s", "insert_s"), _cell(old_db_, "s", "insert_s"), "—", "—", _ratio(_fig(ours_db, "insert_s"), _fig(old_db_, "insert_s"), False), "—", "—"])
            rows.append([f"select state = FINISHED in {int(n):,}, cold, s", _cell(ours_db, "s", "select_state_cold_s", 3), _cell(old_db_, "s", "select_state_cold_s", 3), "—", "—", _ratio(_fig(ours_db, "select_state_cold_s"), _fig(old_db_, "select_state_cold_s"), False), "—", "—"])
    rows += _channel_rows(result.get("channel"))
    body = "".join("| " + " | ".join(row) + " |\n" for row in rows)
    return head + body + _footer(result)


def _channel_rows(channel: Any) -> list[list[str]]:
    """The run channel's figures: ours only, against their references (issue 14's targets)."""
    if not channel:
        return []
    if "error" in channel:
        return [["run channel (benchmarks.channel)", "failed (see JSON)", "—", "—", "—", "—", "—", "—"]]
    rates = channel["python_runs"]["runs_per_s"]
    api, bare = rates["api_channel"]["median"], rates["bare"]["median"]
    imported = channel["import"]
    rate = channel["commit_rate"]["channel"]
    alone = statistics.median(rate["writer_commits_per_s_alone"])
    busy = statistics.median(rate["writer_commits_per_s_with_runs"])
    return [
        ["Python runs using the run-side API, runs/s", f"{api:.1f}", "—", "—", f"bare Python runs: {bare:.1f}", "—", "—", f"{api / bare:.2f} of bare runs"],
        ["import of the run-side API above bare Python, ms", f"{1000 * imported['run_api_above_bare_s']:.1f}", "—", "—",
         f"database client: {1000 * imported['database_client_above_bare_s']:.0f}", "—", "—", "—"],
        [f"one writer's commits/s while {rate['concurrent_runs']} runs execute", f"{busy:.0f}", "—", "—", f"alone: {alone:.0f}", "—", "—",
         f"{rate['ratio']:.2f} of its rate alone (median of {rate['rounds']} rounds); {rate['run_processes_connected']} run processes connected"],
    ]


def _footer(result: dict[str, Any]) -> str:
    start, end = result["machine_start"], result["machine_end"]
    lines = [
        "",
        f"Medians (min–max, n repeats). {start['cores']} cores, load average {start['loadavg'][0]:.2f} at start, "
        f"{end['loadavg'][0]:.2f} at end; {start['time']}; {'--quick' if result['quick'] else 'full'} run in {result['elapsed_s']:.0f} s.",
        f"Versions: {json.dumps(result['versions'])}.",
    ]
    for section in ("pipeline",):
        for tool, entry in (result.get(section) or {}).items():
            if isinstance(entry, dict) and entry.get("same_result") is False:
                lines.append(f"Warning: {tool}'s pipeline result differs from the expected values.")
    lines.append(
        "motoko 0.1.4 executes runs one at a time (BlackDynamite's bash launcher; a second launch "
        f"daemon on a study executes runs twice); motoko, Snakemake and xargs run {PARALLEL} at a time. "
        "Ratios: how many times better motoko is (below 1: worse)."
    )
    if result["plan"]["skipped"]:
        lines.append("Skipped or trimmed by --quick: " + "; ".join(result["plan"]["skipped"]) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats of the slow tools (< 15 min)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "motoko-bench", help="where the venvs live")
    parser.add_argument("--only", nargs="+", default=[], choices=["pipeline", "fan_out", "hop", "db_scale", "channel"])
    args = parser.parse_args()
    plan = Plan.make(args.quick)
    # Every tool's trees are deleted at the end, all at once: see benchmarks.common.scratch.
    os.environ[KEEP_TREES] = "1"
    with tempfile.TemporaryDirectory(prefix="motoko-compare-") as tmp:
        result = compare(plan, args.cache, Path(tmp), set(args.only))
    table = markdown(result)
    result["table"] = table
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    stem.with_suffix(".md").write_text(table)
    json.dump(result, sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
    print(f"\n{table}\nwritten: {stem}.json, {stem}.md", file=sys.stderr)


if __name__ == "__main__":
    main()
