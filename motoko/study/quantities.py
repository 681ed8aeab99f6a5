"""The quantities a run pushes: named series of values, one per step.

A run (or the workflow watching it) pushes scalar or vector values of a
quantity at a step (``run.push_quantity(energy, step, "energy")``); reading
one back gives a DataFrame. Each quantity is its own persistent
:class:`Quantity`, so two quantities pushed at once by different writers never
conflict, and the run itself does not grow with every step.
:class:`RunQuantities` gives :class:`~motoko.study.records.Run` these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import persistent
from BTrees.IOBTree import IOBTree
from BTrees.OOBTree import OOBTree

from motoko.errors import UnknownNameError

if TYPE_CHECKING:
    import pandas


class Quantity(persistent.Persistent):
    """The values a run pushed for one named quantity, keyed by step."""

    def __init__(self, name: str):
        self.name = name
        self.steps: IOBTree = IOBTree()


class RunQuantities:
    """The quantity methods of a run (a mixin of :class:`~motoko.study.records.Run`).

    Its names are motoko's own: a study field may not take them
    (:data:`motoko.study.records.MOTOKO_ATTRIBUTES`).
    """

    _quantities: OOBTree | None = None

    if TYPE_CHECKING:

        def _changed(self) -> None: ...
        def _see_commits(self) -> None: ...

    def push_quantity(self, values: Any, step: int, name: str) -> None:
        """Store a scalar or vector value of quantity ``name`` at ``step``.

        Pushing the same step twice replaces the earlier value.
        """
        if self._quantities is None:
            self._quantities = OOBTree()
        quantities = self._quantities
        quantity = quantities.get(name)
        if quantity is None:
            quantity = quantities[name] = Quantity(name)
        quantity.steps[int(step)] = _plain(values)
        self._changed()

    def get_quantity(self, name: str) -> pandas.DataFrame:
        """Return a DataFrame: column ``step``, then the value column(s).

        Live: on a workflow's connection it first sees what was committed since.

        Raises:
            UnknownNameError: listing the quantities this run has.
        """
        import pandas as pd

        self._see_commits()

        quantities = self._quantities
        if quantities is None or name not in quantities:
            raise UnknownNameError("quantity", name, self.list_quantities())
        rows = list(quantities[name].steps.items())
        if rows and isinstance(rows[0][1], list):
            width = max(len(v) for _, v in rows)
            columns = [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]
            data = [[s, *v] for s, v in rows]
            return pd.DataFrame(data, columns=["step", *columns])
        return pd.DataFrame(rows, columns=["step", name])

    def list_quantities(self) -> list[str]:
        """Return the names of the quantities this run pushed."""
        return list(self._quantities.keys()) if self._quantities is not None else []

    # motoko 0.1.4 / BlackDynamite spellings
    def pushScalarQuantity(self, value: Any, step: int, name: str, *_: Any) -> None:  # noqa: N802
        """Alias of :meth:`push_quantity` (BlackDynamite)."""
        self.push_quantity(value, step, name)

    def pushVectorQuantity(self, value: Any, step: int, name: str, *_: Any) -> None:  # noqa: N802
        """Alias of :meth:`push_quantity` (BlackDynamite)."""
        self.push_quantity(value, step, name)

    def pushQuantity(self, value: Any, step: int, name: str, *_: Any) -> None:  # noqa: N802
        """Alias of :meth:`push_quantity` (BlackDynamite)."""
        self.push_quantity(value, step, name)

    def getQuantity(self, name: str) -> pandas.DataFrame:  # noqa: N802
        """Alias of :meth:`get_quantity` (BlackDynamite)."""
        return self.get_quantity(name)

    def getQuantities(self) -> list[str]:  # noqa: N802
        """Alias of :meth:`list_quantities` (BlackDynamite)."""
        return self.list_quantities()


def _plain(values: Any) -> Any:
    """Turn numpy scalars/arrays and tuples into floats and lists for storage."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, list | tuple):
        return [_plain(v) for v in values]
    if isinstance(values, bool | int | float | str) or values is None:
        return values
    try:
        return float(values)
    except (TypeError, ValueError):
        return values
