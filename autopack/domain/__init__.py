"""Pure domain rules, no I/O: what the engine and the store agree on."""
