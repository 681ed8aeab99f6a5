"""``motoko graph``: the runs' provenance and the step DAG with states; png output."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pytest
from conftest import motoko
from views_support import artifact, copy_example, ensure_program

from motoko import Workflow
from motoko.study.server import stop_server
from motoko.views import provenance
from motoko.views.provenance import GraphRenderError, render_png, run_graph, summarise

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    root = copy_example(tmp_path_factory.mktemp("graph") / "example")
    done = motoko("run", "workflows/pipeline.py", cwd=root)
    assert done.returncode == 0, done.stderr
    yield root
    stop_server(root, grace=5)


def test_provenance_of_the_pipeline_as_text(pipeline: Path):
    result = motoko("graph", "--runs", cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "mult.1  FINISHED\n"
        "mult.2  FINISHED\n"
        "add.1   FINISHED   ← mult.1\n"
        "add.2   FINISHED   ← mult.2\n"
        "norm.1  FINISHED   ← add.1\n"
        "norm.2  FINISHED   ← add.2\n"
        "mult.3  FINISHED   ← norm.1\n"
        "mult.4  FINISHED   ← norm.2\n"
    )


def test_provenance_selection_keeps_the_ancestors(pipeline: Path):
    result = motoko("graph", "--runs", "--study", "norm", "--where", "id = 2", "--format", "mermaid", cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:4] == [
        "graph LR",
        '    n_mult_2["mult.2<br/>FINISHED"]:::finished',
        '    n_add_2["add.2<br/>FINISHED"]:::finished',
        '    n_norm_2["norm.2<br/>FINISHED"]:::finished',
    ]
    assert "    n_add_2 --> n_norm_2" in result.stdout
    assert result.stdout.rstrip().endswith("classDef finished fill:#d3f5dc,stroke:#2b9348,color:#1d2330")


def test_step_dag_coloured_by_state(pipeline: Path):
    text = motoko("graph", "workflows/pipeline.py", "--states", cwd=pipeline)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "mult (2 runs)    FINISHED",
        "add (2 runs)     FINISHED   ← mult",
        "norm (2 runs)    FINISHED   ← add",
        "remult (2 runs)  FINISHED   ← norm",
    ]
    dot = motoko("graph", "workflows/pipeline.py", "--states", "--format", "dot", cwd=pipeline)
    assert '"mult" [label="mult (2 runs)\\nFINISHED", fillcolor="#d3f5dc", color="#2b9348"];' in dot.stdout
    assert '    "norm" -> "remult";' in dot.stdout


def test_png_by_the_cli_is_an_image(pipeline: Path):
    ensure_program("dot", "graphviz")
    out = artifact("graph-runs.png")
    result = motoko("graph", "--runs", "--format", "png", "-o", str(out), cwd=pipeline)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"wrote {out} (8 nodes, drawn with graphviz)\n"
    assert out.read_bytes().startswith(PNG)
    steps = artifact("graph-steps.png")
    result = motoko("graph", "workflows/pipeline.py", "--states", "--format", "png", "-o", str(steps), cwd=pipeline)
    assert result.returncode == 0 and steps.read_bytes().startswith(PNG)


def test_png_with_matplotlib_when_graphviz_is_absent(pipeline: Path):
    with Workflow(pipeline) as workflow:
        graph = run_graph(workflow)
    out = artifact("graph-runs-matplotlib.png")
    assert render_png(graph, out, engine="matplotlib", title="runs") == "matplotlib"
    assert out.read_bytes().startswith(PNG)


def test_png_needs_an_output_file_and_a_source(pipeline: Path):
    result = motoko("graph", "--runs", "--format", "png", cwd=pipeline)
    assert result.returncode == 2 and "give -o FILE.png" in result.stderr
    result = motoko("graph", cwd=pipeline)
    assert result.returncode == 2 and "give a workflow FILE, or --runs" in result.stderr


def test_nothing_to_draw_is_a_clear_error(tmp_path: Path):
    with pytest.raises(GraphRenderError) as caught:
        render_png(nx.DiGraph(), tmp_path / "x.png")
    assert str(caught.value) == "there is nothing to draw: the graph has no node (check the constraints)"
    assert isinstance(caught.value, RuntimeError)


def test_summarise_picks_the_state_a_person_looks_for():
    assert summarise({}) == "PENDING"
    assert summarise({"FINISHED": 3, "FAILED": 1, "RUNNING": 2}) == "FAILED"
    assert summarise({"FINISHED": 3, "LAUNCHED": 1}) == "RUNNING"
    assert summarise({"FINISHED": 3, "CREATED": 1}) == "CREATED"
    assert summarise({"FINISHED": 3}) == "FINISHED"
    assert summarise({"FORWARDED": 2}) == "FORWARDED"
    assert summarise({"FINISHED": 1, "FORWARDED": 2}) == "FINISHED"
    assert summarise({"CANCELLED": 2}) == "CANCELLED"


def test_layout_puts_generations_left_to_right():
    graph = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    positions = provenance.layered_positions(graph)
    assert positions["a"][0] == 0 and positions["b"][0] == positions["c"][0] == 1 and positions["d"][0] == 2
    assert positions["b"][1] > positions["c"][1]
