"""motoko.launch.executors."""
