"""motoko.study."""
