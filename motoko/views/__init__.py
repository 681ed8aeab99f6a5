"""Views of the work: status, provenance graphs, export, plots, the dashboard.

Each module is one view and imports its heavy dependencies (pandas,
matplotlib, pyarrow) only when called, so that importing :mod:`motoko` inside
a run stays cheap:

- :mod:`motoko.views.status`: counts by state, running runs, latest failures.
- :mod:`motoko.views.provenance`: the runs' provenance graph, step states,
  rendering as text, Mermaid, DOT or PNG.
- :mod:`motoko.views.export`: ``to_dataframe``, CSV/JSON/Parquet export, and
  the lossless ``motoko`` format with its import.
- :mod:`motoko.views.plot`: quantities as line plots (matplotlib).
- :mod:`motoko.views.web`: the local web dashboard (``motoko ui``).
- :mod:`motoko.views.scaffold`: ``motoko init``.
"""
