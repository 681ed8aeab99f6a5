"""Quantities as plots: one line per run, labelled by what varies.

``motoko plot energy --study S "a > 0" -o energy.png`` draws, for each
selected run that pushed ``energy``, its values against the step. Labels name
only the job parameters that differ between the plotted runs (``a=0.5``), so
a legend stays short. The x axis can be another quantity (matched step by
step) or a job or run field (one point per run: the quantity's last value,
with one line per combination of the other varying parameters). A quantity
pushed once per run against one varying numeric parameter is plotted against
that parameter by default, since a single point per line says nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motoko.errors import (
    PlotError,  # noqa: F401 (defined there, importable from here)
    did_you_mean,
)
from motoko.study.records import Run

#: Legend entries shown before "… and N more".
MAX_LEGEND = 16


@dataclass
class Series:
    """One line of a plot."""

    label: str
    x: list[float]
    y: list[float]
    runs: list[str] = field(default_factory=list)


@dataclass
class PlotData:
    """What a plot shows: its series and axis names."""

    quantity: str
    xlabel: str
    ylabel: str
    series: list[Series]
    title: str = ""


def _steps(run: Run, name: str) -> list[tuple[int, Any]]:
    quantities = run._quantities
    if quantities is None or name not in quantities:
        return []
    return list(quantities[name].steps.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        text = "[" + ", ".join(_fmt(v) for v in value) + "]"
        return text if len(text) <= 28 else text[:27] + "…"
    if isinstance(value, dict):
        text = json.dumps(value)
        return text if len(text) <= 28 else text[:27] + "…"
    return str(value)


def varying(runs: Sequence[Run]) -> list[str]:
    """The job parameters whose value differs between ``runs``, in schema order."""
    if not runs:
        return []
    names: list[str] = []
    for run in runs:
        names += [n for n in run.job.params if n not in names]
    out = []
    for name in names:
        values = {json.dumps(run.job.params.get(name), sort_keys=True, default=str) for run in runs}
        if len(values) > 1:
            out.append(name)
    return out


def label_of(run: Run, names: Sequence[str], with_study: bool = False) -> str:
    """``a=0.5, b=2`` for the given parameters; ``study.id`` if there are none."""
    text = ", ".join(f"{n}={_fmt(run.job.params.get(n))}" for n in names)
    if not text:
        return f"{run.study}.{run.id}"
    return f"{run.study}: {text}" if with_study else text


def _field_value(run: Run, name: str) -> Any:
    bare = name.split(".", 1)[1] if name.startswith(("jobs.", "runs.")) else name
    if not name.startswith("runs.") and bare in run.job.params:
        return run.job.params[bare]
    return getattr(run, bare, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_data(runs: Sequence[Run], quantity: str, x: str | None = None) -> PlotData:
    """Compute the series of a plot of ``quantity`` over ``runs``.

    Args:
        x: ``step`` (default), another quantity's name, or a job/run field;
            None chooses ``step`` unless every run pushed one scalar value and
            exactly one numeric job parameter varies (then that parameter).

    Raises:
        PlotError: when no run pushed ``quantity``, naming those that exist,
            or for an x that is neither a quantity nor a field.
    """
    having = [r for r in runs if _steps(r, quantity)]
    if not having:
        known = sorted({q for r in runs for q in r.list_quantities()})
        raise PlotError(
            f"no selected run has the quantity {quantity!r}" + ("" if runs else " (no run matches)"),
            hint=did_you_mean(quantity, known) if runs else "check the study and the constraints with `motoko select`",
        )
    names = varying(having)
    with_study = len({r.study for r in having}) > 1
    vector = any(isinstance(v, list) and len(v) > 1 for r in having for _, v in _steps(r, quantity))
    if x is None:
        single = all(len(_steps(r, quantity)) == 1 for r in having)
        numeric = [n for n in names if all(_number(r.job.params.get(n)) is not None for r in having)]
        x = numeric[0] if single and not vector and len(numeric) == 1 and len(having) > 1 else "step"
    title = f"{quantity} — {', '.join(sorted({r.study for r in having}))} ({len(having)} runs)"
    if vector and x == "step":
        series = [Series(label_of(r, names, with_study), *_components(_steps(r, quantity)[-1][1]), [f"{r.study}.{r.id}"]) for r in having]
        return PlotData(quantity, "component", f"{quantity} (last step)", series, title)
    if x == "step":
        series = []
        for r in having:
            points = [(float(s), _number(v)) for s, v in _steps(r, quantity)]
            kept = [(a, b) for a, b in points if b is not None]
            series.append(Series(label_of(r, names, with_study), [a for a, _ in kept], [b for _, b in kept], [f"{r.study}.{r.id}"]))
        return PlotData(quantity, "step", quantity, series, title)
    if any(_steps(r, x) for r in having):
        return PlotData(quantity, x, quantity, [_against_quantity(r, quantity, x, names, with_study) for r in having], title)
    return _against_field(having, quantity, x, names, title)


def _components(value: Any) -> tuple[list[float], list[float]]:
    values = value if isinstance(value, list) else [value]
    pairs = [(float(i), _number(v)) for i, v in enumerate(values)]
    return [a for a, b in pairs if b is not None], [b for _, b in pairs if b is not None]


def _against_quantity(run: Run, quantity: str, x: str, names: Sequence[str], with_study: bool) -> Series:
    xs = dict(_steps(run, x))
    points = [(_number(xs.get(s)), _number(v)) for s, v in _steps(run, quantity)]
    kept = sorted((a, b) for a, b in points if a is not None and b is not None)
    return Series(label_of(run, names, with_study), [a for a, _ in kept], [b for _, b in kept], [f"{run.study}.{run.id}"])


def _against_field(runs: Sequence[Run], quantity: str, x: str, names: Sequence[str], title: str) -> PlotData:
    bare = x.split(".", 1)[1] if x.startswith(("jobs.", "runs.")) else x
    known = {n for r in runs for n in r.job.params} | {"id", "job_id", "progress", "attempt", "exit_code", "nproc"}
    if all(_field_value(r, x) is None for r in runs) and bare not in known:
        raise PlotError(
            f"cannot plot against {x!r}: it is neither a quantity nor a field of the runs",
            hint=did_you_mean(bare, known | {"step"} | {q for r in runs for q in r.list_quantities()}),
        )
    others = [n for n in names if n != bare]
    groups: dict[str, Series] = {}
    for run in runs:
        xv = _number(_field_value(run, x))
        yv = _number(_steps(run, quantity)[-1][1])
        if xv is None or yv is None:
            continue
        label = label_of(run, others) if others else quantity
        group = groups.setdefault(label, Series(label, [], []))
        group.x.append(xv)
        group.y.append(yv)
        group.runs.append(f"{run.study}.{run.id}")
    for group in groups.values():
        order = sorted(range(len(group.x)), key=group.x.__getitem__)
        group.x = [group.x[i] for i in order]
        group.y = [group.y[i] for i in order]
    return PlotData(quantity, bare, f"{quantity} (last step)", list(groups.values()), title)


def draw(data: PlotData, path: Path | str, *, title: str | None = None, size: tuple[float, float] = (8.0, 4.8)) -> None:
    """Draw ``data`` with matplotlib to ``path`` (PNG, SVG or PDF by its suffix).

    Raises:
        PlotError: when matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError:
        raise PlotError("plots need matplotlib, which is not installed", hint="pip install matplotlib") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(data.series) > MAX_LEGEND
    figure, axes = plt.subplots(figsize=size, dpi=120)
    cmap = plt.get_cmap("viridis" if len(data.series) > 10 else "tab10")
    for i, series in enumerate(data.series):
        colour = cmap(i / max(1, len(data.series) - 1)) if len(data.series) > 10 else cmap(i % 10)
        marker = "o" if len(series.x) <= 25 else None
        axes.plot(series.x, series.y, marker=marker, markersize=4, linewidth=1.8, color=colour,
                  label=series.label if i < MAX_LEGEND else None)
    axes.set_xlabel(data.xlabel)
    axes.set_ylabel(data.ylabel)
    axes.set_title(title or data.title, loc="left", fontsize=11)
    axes.grid(True, alpha=0.3)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    if data.xlabel in ("step", "component") and all(float(v).is_integer() for s in data.series for v in s.x):
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(data.series) > 1 or (data.series and data.series[0].label != data.quantity):
        handles, labels = axes.get_legend_handles_labels()
        if many:
            handles.append(plt.Line2D([], [], linestyle="none"))
            labels.append(f"… and {len(data.series) - MAX_LEGEND} more")
        outside = len(labels) > 6
        axes.legend(handles, labels, fontsize=8, frameon=False,
                    **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if outside else {"loc": "best"}))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_runs(runs: Sequence[Run], quantity: str, path: Path | str, *, x: str | None = None, title: str | None = None) -> PlotData:
    """Compute and draw a plot of ``quantity`` over ``runs`` to ``path``; return its data."""
    data = plot_data(runs, quantity, x)
    draw(data, path, title=title)
    return data
