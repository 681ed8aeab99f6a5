"""``motoko plot`` and ``motoko init``: the scaffolded workflow runs, its quantities plot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import motoko
from views_support import artifact

from motoko import Workflow
from motoko.study.server import stop_server
from motoko.views.plot import PlotError, plot_data
from motoko.views.scaffold import ScaffoldError, files, scaffold

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """`motoko init demo` then `motoko run workflows/main.py` with four rates."""
    base = tmp_path_factory.mktemp("plot")
    init = motoko("init", "demo", cwd=base)
    assert init.returncode == 0, init.stderr
    root = base / "demo"
    with open(root / "motoko.yaml", "a") as config:
        config.write("poll: {initial: 0.05, factor: 2, maximum: 0.5}\n")
    done = motoko("run", "workflows/main.py", "-p", "rates=[0.5, 1, 2, 4]", cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "summary: {0.5: 0.3585, 1.0: 0.1216, 2.0: 0.0115, 4.0: 0.0}\n"
    yield root
    stop_server(root, grace=5)


def test_plot_one_line_per_run_labelled_by_the_rate(demo: Path):
    out = artifact("plot-amount.png")
    result = motoko("plot", "amount", "-o", str(out), cwd=demo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"plotted amount of 4 run(s) (4 line(s), x: step) to {out}\n"
    assert out.read_bytes().startswith(PNG)
    with Workflow(demo) as workflow:
        data = plot_data(workflow.decay.select(run_name=None).runs(), "amount")
    assert [s.label for s in data.series] == ["rate=0.5", "rate=1", "rate=2", "rate=4"]
    assert data.series[0].x == [float(i) for i in range(21)]
    assert data.series[0].y[0] == 1.0 and data.series[0].y[-1] == pytest.approx(0.95**20)


def test_plot_against_a_parameter_and_a_selection(demo: Path):
    out = artifact("plot-amount-vs-rate.png")
    result = motoko("plot", "amount", "rate < 3", "--x", "rate", "--title", "what is left", "-o", str(out), cwd=demo)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"plotted amount of 3 run(s) (1 line(s), x: rate) to {out}\n"
    with Workflow(demo) as workflow:
        data = plot_data(workflow.decay.select("rate < 3", run_name=None).runs(), "amount", "rate")
    (line,) = data.series
    assert line.x == [0.5, 1.0, 2.0] and line.y == pytest.approx([0.95**20, 0.9**20, 0.8**20])


def test_plot_svg_by_suffix_and_default_name(demo: Path, tmp_path: Path):
    out = tmp_path / "amount.svg"
    assert motoko("plot", "amount", "-s", "decay", "-o", str(out), cwd=demo).returncode == 0
    assert out.read_text().lstrip().startswith("<?xml")
    assert motoko("plot", "amount", "rate = 1", cwd=demo).returncode == 0
    assert (demo / "amount.png").read_bytes().startswith(PNG)


def test_plot_of_an_unknown_quantity_suggests_one(demo: Path):
    result = motoko("plot", "amont", cwd=demo)
    assert result.returncode == 2
    assert result.stderr == "motoko: error: no selected run has the quantity 'amont' (did you mean 'amount'?)\n"
    result = motoko("plot", "amount", "--x", "rat", cwd=demo)
    assert result.returncode == 2 and "did you mean 'rate'?" in result.stderr


def test_plot_error_for_an_empty_selection():
    with pytest.raises(PlotError) as caught:
        plot_data([], "amount")
    assert str(caught.value) == (
        "no selected run has the quantity 'amount' (no run matches) "
        "(check the study and the constraints with `motoko select`)"
    )
    assert isinstance(caught.value, ValueError)


# -- motoko init --------------------------------------------------------------------------------


def test_init_is_idempotent_and_never_overwrites(tmp_path: Path):
    first = motoko("init", "w", cwd=tmp_path)
    assert first.returncode == 0
    assert first.stdout.splitlines()[:2] == ["created motoko.yaml", "created studies/decay/bd.yaml"]
    assert os.access(tmp_path / "w" / "studies" / "decay" / "launch.sh", os.X_OK)
    second = motoko("init", "w", cwd=tmp_path)
    assert second.returncode == 0 and second.stdout == "w is already set up (nothing to do)\n"
    (tmp_path / "w" / "workflows" / "main.py").write_text("# mine\n")
    third = motoko("init", "w", cwd=tmp_path)
    assert third.returncode == 2
    assert third.stderr == (
        f"motoko: error: {tmp_path / 'w'} already has files that `motoko init` would overwrite: "
        "workflows/main.py (choose a new directory, or move these files away)\n"
    )


def test_init_with_another_study_name(tmp_path: Path):
    done = scaffold(tmp_path / "x", "heat")
    assert (tmp_path / "x" / "studies" / "heat" / "bd.yaml").read_text().splitlines()[1] == "study: heat"
    assert "workflow.heat.createTask" in (tmp_path / "x" / "workflows" / "main.py").read_text()
    assert len(done.created) == len(files("heat"))
    with pytest.raises(ScaffoldError) as caught:
        (tmp_path / "x" / "motoko.yaml").write_text("")
        scaffold(tmp_path / "x", "heat")
    assert caught.value.paths == [tmp_path / "x" / "motoko.yaml"] and isinstance(caught.value, FileExistsError)
    bad = motoko("init", "y", "--study", "my study", cwd=tmp_path)
    assert bad.returncode == 2 and "is not an identifier" in bad.stderr


# -- shell completion -------------------------------------------------------------------------


def test_completion_script_and_completions(demo: Path):
    script = motoko("completion", "bash", cwd=demo)
    assert script.returncode == 0 and "_MOTOKO_COMPLETE=bash_complete" in script.stdout
    assert "compdef" in motoko("completion", "zsh", cwd=demo).stdout
    env = {"_MOTOKO_COMPLETE": "bash_complete", "COMP_WORDS": "motoko sta", "COMP_CWORD": "1"}
    commands = motoko(cwd=demo, env=env)
    assert "plain,status" in commands.stdout.splitlines()
    env = {"_MOTOKO_COMPLETE": "bash_complete", "COMP_WORDS": "motoko plot amount --study de", "COMP_CWORD": "4"}
    studies = motoko(cwd=demo, env=env)
    assert studies.stdout.splitlines() == ["plain,decay"]
