"""motoko.cli."""
