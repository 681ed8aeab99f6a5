"""motoko.flow."""
