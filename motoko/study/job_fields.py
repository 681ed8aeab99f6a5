"""How a job's parameters are read, shared by the stored job and the run side's copy.

A job is read as ``job.x``, ``job['x']``, ``job.get('x')`` and
``job.to_dict()`` whether it is the persistent :class:`~motoko.study.records.Job`
or the copy a run receives from its launcher
(:class:`~motoko.launch.run_side.ChannelJob`). Both read through this one
mixin, so a ``doIt.py`` behaves the same with or without a launcher channel.
The module imports nothing: the run side must stay light.
"""

from __future__ import annotations

from typing import Any


class JobFields:
    """Read access to ``id`` and ``params``, which the class using it sets."""

    id: Any
    params: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        # Only called for names normal lookup misses: ``id`` and ``params`` never
        # come here once set, and private names must fail at once (pickling,
        # persistence and copy probe them).
        if name.startswith("_") or name == "params":
            raise AttributeError(name)
        params = self.params
        if name in params:
            return params[name]
        raise AttributeError(f"job has no field {name!r} (fields: {', '.join(params)})")

    def __getitem__(self, name: str) -> Any:
        if name == "id":
            return self.id
        try:
            return self.params[name]
        except KeyError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        """Return a field's value, or ``default`` when the job has no such field."""
        try:
            return self[name]
        except KeyError:
            return default

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"id": ..., **params}``."""
        return {"id": self.id, **self.params}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"<Job {self.id} {fields}>"
