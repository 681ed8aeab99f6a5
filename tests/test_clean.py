"""``motoko clean`` deletes only this project's run directories (real server, real runs, real CLI).

An imported run's ``run_path`` points into the exporting project; a symlinked
run directory points anywhere. Neither is ever deleted: the clean refuses,
naming the directory, and writes nothing; ``--keep-outside`` deletes the
records only.
"""

from __future__ import annotations

from pathlib import Path

from conftest import motoko
from views_support import copy_example

from motoko.errors import CleanRefused
from motoko.study.server import stop_server


def test_a_clean_after_an_import_never_deletes_the_exporting_project(example: Path, tmp_path: Path):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    theirs = example / "studies" / "add" / "BD-add-runs" / "run-1"
    assert (theirs / "stdout").is_file()
    dump = tmp_path / "add.json"
    assert motoko("export", "--format", "motoko", "-s", "add", "-o", str(dump), cwd=example).returncode == 0
    ours = copy_example(tmp_path / "ours")
    try:
        assert motoko("import", str(dump), cwd=ours).returncode == 0
        dry = motoko("clean", "id = 1", "--study", "add", cwd=ours)
        assert dry.returncode == 2 and dry.stdout == ""
        tree = ours / "studies" / "add" / "BD-add-runs"
        assert dry.stderr == (
            f"motoko: error: refusing to delete {theirs} of run add.1: it is outside this project's run "
            f"directory {tree} (it may belong to another project (motoko import); add --keep-outside to delete "
            "only the run records and leave such directories alone)\n"
        )
        refused = motoko("clean", "--study", "add", "--delete", "--yes", cwd=ours)
        assert refused.returncode == 2 and "refusing to delete" in refused.stderr
        assert "(1 more run(s) like it)" in refused.stderr  # both imported runs point there
        listing = motoko("select", "--study", "add", "--format", "csv", "--fields", "id", cwd=ours).stdout.split()
        assert listing == ["study,id", "add,1", "add,2"]  # nothing was written
        assert (theirs / "stdout").is_file()

        plan = motoko("clean", "id = 1", "--study", "add", "--keep-outside", cwd=ours)
        assert plan.returncode == 0
        assert plan.stdout.splitlines() == [
            "add: 1 run(s): 1",
            f"  keep {theirs} (run 1: it is outside this project's run directory {tree})",
            "nothing deleted (add --delete to delete them)",
        ]
        done = motoko("clean", "id = 1", "--study", "add", "--keep-outside", "--delete", "-y", cwd=ours)
        assert done.returncode == 0 and "deleted 1 run(s)" in done.stdout
        assert (theirs / "stdout").is_file()  # the exporting project's results survive
        listing = motoko("select", "--study", "add", "--format", "csv", "--fields", "id", cwd=ours).stdout.split()
        assert listing == ["study,id", "add,2"]
    finally:
        stop_server(ours, grace=5)


def test_a_symlinked_run_directory_is_refused_and_its_target_survives(example: Path, tmp_path: Path):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    tree = example / "studies" / "mult" / "BD-mult-runs"
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    run_dir = tree / "run-1"
    import shutil

    shutil.rmtree(run_dir)
    run_dir.symlink_to(precious)
    result = motoko("clean", "id = 1", "--study", "mult", "--delete", "--yes", cwd=example)
    assert result.returncode == 2
    assert result.stderr.startswith(f"motoko: error: refusing to delete {run_dir} of run mult.1: it is a symlink to {precious}")
    assert (precious / "data").read_text() == "keep me" and run_dir.is_symlink()


def test_the_dry_run_lists_the_directories_it_would_delete(example: Path):
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    tree = example / "studies" / "add" / "BD-add-runs"
    dry = motoko("clean", "--study", "add", cwd=example)
    assert dry.returncode == 0
    assert dry.stdout.splitlines() == [
        "add: 2 run(s): 1, 2",
        f"  delete {tree / 'run-1'}",
        f"  delete {tree / 'run-2'}",
        "nothing deleted (add --delete to delete them)",
    ]
    assert (tree / "run-1").is_dir() and (tree / "run-2").is_dir()


def test_the_files_runs_shared_go_with_the_last_run_linking_them(example: Path):
    """Exec files and fences are hard links to shared files beside the runs: clean leaves none behind."""
    assert motoko("run", "workflows/pipeline.py", cwd=example).returncode == 0
    tree = example / "studies" / "add" / "BD-add-runs"

    def linked() -> list[str]:
        return sorted(p.name for p in tree.iterdir() if p.name.startswith((".motoko-attempt.", ".motoko-exec.")))

    shared = linked()
    assert any(name.startswith(".motoko-attempt.") for name in shared), shared
    assert any(name.startswith(".motoko-exec.") for name in shared), shared
    (log,) = tree.glob(".motoko-exits.*")  # the exit log of `motoko run`'s launcher
    assert list(tree.glob(".motoko-spare.*")) == [], "a launcher removes its spare directories as it stops"
    stale = tree / f".motoko-spare.{log.name.removeprefix('.motoko-exits.')}.7"
    stale.mkdir()  # as a launcher killed -9 leaves them
    one = motoko("clean", "--study", "add", "--delete", "--yes", "id = 1", cwd=example)
    assert one.returncode == 0, one.stderr
    assert linked() == shared  # run 2 links them
    assert list(tree.glob(".motoko-exits.*")) == [], "its launcher stopped and no run is active: its log goes"
    assert not stale.exists(), "and its spare directories"
    assert (tree / "run-2" / "launch.sh").read_bytes()  # and still reads them
    rest = motoko("clean", "--study", "add", "--delete", "--yes", cwd=example)
    assert rest.returncode == 0, rest.stderr
    assert list(tree.iterdir()) == []


def test_clean_refused_message():
    error = CleanRefused("calc", 14, Path("/elsewhere/run-14"), "it is outside this project's run directory /p/BD", 3)
    assert isinstance(error, ValueError) and error.count == 3 and error.path == Path("/elsewhere/run-14")
    assert str(error) == (
        "refusing to delete /elsewhere/run-14 of run calc.14: it is outside this project's run directory /p/BD "
        "(2 more run(s) like it) (it may belong to another project (motoko import); add --keep-outside to "
        "delete only the run records and leave such directories alone)"
    )
